"""A container's output for a caller: ``docker logs`` (tail, since/until, follow) and the output
of a detached container's current run (``start -a``, ``run`` with a restart policy)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from builder.base.errors import ContainerError
from builder.base.state import StateRoot
from builder.runtime.containers.lifecycle import get, refresh, store
from builder.runtime.containers.logfile import NO_READING, LogEntry, read_logs
from builder.runtime.containers.options import parse_timestamp_ns


def parse_tail(text: str | int | None) -> int | None:
    """``--tail``/``?tail=``: a line count, or None for every line (``all``, empty, negative)."""
    if text is None or text in ("all", ""):
        return None
    try:
        n = int(text)
    except ValueError:
        raise ContainerError.invalid(f"invalid --tail value {text!r}: a number or \"all\"") from None
    return None if n < 0 else n


def entries(root: StateRoot, ref: str, *, tail: str | int | None = None, since: str | None = None,
         until: str | None = None, follow: bool = False,
         stop: Callable[[], bool] | None = None) -> Iterator[LogEntry]:
    """``docker logs``: the container's json-file entries (``since``/``until`` as Docker takes
    them: RFC 3339, Unix seconds or a relative ``42m``); with *follow*, new ones until it stops
    (or *stop* says so). A bad container or value raises here, before the first entry is read."""
    c = get(root, ref)
    lc = c.host_config.log_config
    if lc is not None and lc.type == "none":
        raise ContainerError(NO_READING)
    n = parse_tail(tail)
    since_ns = parse_timestamp_ns(since) if since and since != "0" else 0
    until_ns = parse_timestamp_ns(until) if until and until != "0" else 0
    cs = store(root)

    def running() -> bool:
        if stop is not None and stop():
            return False
        try:
            return refresh(cs, cs.load(c.id)).state.running
        except ContainerError:
            return False

    return read_logs(cs.log_path(c.id), tail=n, since_ns=since_ns, until_ns=until_ns,
                     follow=follow, still_running=running)


def follow_run(root: StateRoot, cid: str, *, since_ns: int) -> Iterator[LogEntry]:
    """The log entries of *cid*'s current run from *since_ns*, until that run ends (a restart
    by its policy ends it too); then ``run_exit_code`` gives its status."""
    cs = store(root)
    runs = cs.load(cid).state.restart_count

    def running() -> bool:
        try:
            st = refresh(cs, cs.load(cid)).state
        except ContainerError:
            return False
        return st.status == "running" and st.restart_count == runs

    yield from read_logs(cs.log_path(cid), since_ns=since_ns, follow=True, still_running=running)
