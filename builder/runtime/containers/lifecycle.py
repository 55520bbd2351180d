"""Container lifecycle verbs over the records: list (with repair), stop, kill, wait, rm, prune.

Nothing here keeps a process around: a running container is held by its supervisor; these
calls read its state, signal its pids and wait for the supervisor to record the outcome.
"""

from __future__ import annotations

import _signal  # not signal (its enums, ~1 ms): the numbers are enough
import contextlib
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from builder.base.errors import ContainerError
from builder.base.state import StateRoot
from builder.base.values import frozen, replace
from builder.network.records import EndpointRecord, endpoints_by_container
from builder.runtime.containers.options import (
    ZERO_TIME,
    parse_signal,
    parse_timestamp_ns,
    parse_timestamp_text,
)
from builder.runtime.containers.record import (
    EXIT_PREFIX,
    Container,
    ContainerStore,
    NoSuchContainer,
)
from builder.runtime.containers.recordparts import JoinedNetwork
from builder.runtime.containers.repair import (
    init_alive as init_alive,  # re-exported: callers ask lifecycle whether a container runs
)
from builder.runtime.containers.repair import (
    reap_supervisor,
    remove_locked,
    repair_locked,
    supervisor_alive,
    wait_gone,
)
from builder.runtime.containers.usage import (
    processes as processes,  # re-exported: their earlier home
)
from builder.runtime.containers.usage import sizes as sizes

DEFAULT_STOP_TIMEOUT = 10


def store(root: StateRoot) -> ContainerStore:
    return ContainerStore(root)


# -- the truth about a record ------------------------------------------------------------------
def refresh(cs: ContainerStore, c: Container) -> Container:
    """Make *c*'s state true: a record whose supervisor is gone (running, restarting, or a start
    it never finished) is repaired (its container killed if it outlived the supervisor, exit
    code kept, resources released); a removal whose remover was killed is finished."""
    st = c.state
    if st.status == "removing":
        return _finish_removal(cs, c)
    if not (st.running or st.starting) or supervisor_alive(st):
        return c
    try:
        with cs.lock(c.id):
            st = repair_locked(cs, c.with_state(cs.load_state(c.id)))
    except NoSuchContainer:
        return c.with_state(replace(st, status="removing"))
    c = c.with_state(st)
    if c.host_config.auto_remove and st.status == "exited":
        # --rm: what the dead supervisor would have done once the container ended
        with contextlib.suppress(OSError):
            (cs.root.containers / f"{EXIT_PREFIX}{c.id}").write_text(str(st.exit_code))
        destroy(cs.root, c, volumes=True)
        c = c.with_state(replace(st, status="removing"))
    return c


def _finish_removal(cs: ContainerStore, c: Container) -> Container:
    """A record in ``removing``: its remover holds the lock while it works; if we get the
    lock, the remover was killed, and we finish its removal."""
    try:
        with cs.lock(c.id, wait=False):
            c = cs.load(c.id)
            if c.state.status == "removing":
                _removed(cs, c, volumes=False)
    except (BlockingIOError, NoSuchContainer):
        pass
    return c


def get(root: StateRoot, ref: str) -> Container:
    cs = store(root)
    return refresh(cs, cs.find(ref))


# -- network endpoints, as the network records hold them now -----------------------------------
def network_endpoints(root: StateRoot) -> dict[str, dict[str, EndpointRecord]]:
    """container id -> network name -> endpoint, read from the network records through the
    network package's read API (so ``network connect``/``disconnect`` show at once; no netlink)."""
    return endpoints_by_container(root)


def endpoints_of(c: Container, table: Mapping[str, Mapping[str, EndpointRecord]]) -> dict[str, EndpointRecord]:
    """A running container's endpoints (the records' view, else what its start recorded); for
    a stopped one, the networks it will join, with nothing assigned but their aliases (as
    Docker shows them)."""
    if not c.state.running:
        primary = c.host_config.network
        if primary.startswith("container:"):
            return {}
        started = c.state.started_at != ZERO_TIME
        return {name: _stopped(c, name, primary, started) for name in [primary, *c.networks]}
    live = table.get(c.id)
    eps = dict(live) if live else dict(c.state.endpoints)
    return {name: _with_short_id(c, name, ep, True) for name, ep in eps.items()}


def _stopped(c: Container, name: str, primary: str, started: bool) -> EndpointRecord:
    """The endpoint of a stopped container on *name*: the aliases it keeps (given at create or
    connect)."""
    joined = c.networks.get(name)
    given = c.host_config.endpoint.aliases if name == primary else (joined.aliases if joined else None)
    return _with_short_id(c, name, EndpointRecord(aliases=tuple(given or ())), started)


def _with_short_id(c: Container, name: str, ep: EndpointRecord, joined: bool) -> EndpointRecord:
    """dockerd adds the short id to the aliases of an endpoint on a user-defined network once
    the container joined it (a start, or a connect)."""
    if not joined or name in ("bridge", "host", "none") or c.id[:12] in ep.aliases:
        return ep
    return replace(ep, aliases=(*ep.aliases, c.id[:12]))


def remember_networks(root: StateRoot, c: Container) -> Container:
    """Record in ``container.json`` the networks the container is on now (``network connect``
    adds some while it runs), so that its next start joins them again."""
    now = network_endpoints(root).get(c.id) or {}
    primary = c.host_config.network
    none = JoinedNetwork()
    wanted = {name: c.networks.get(name, none).given().merged(JoinedNetwork(aliases=ep.aliases))
              for name, ep in now.items() if name != primary}
    own = c.networks.get(primary, none)
    if own.links or own.driver_opts:  # what its create gave the primary endpoint (legacy links)
        wanted[primary] = JoinedNetwork(links=own.links or None, driver_opts=own.driver_opts or None)
    if not now or wanted == dict(c.networks):
        return c
    updated = replace(c, networks=wanted)
    ContainerStore(root).save_config(updated)
    return updated


# -- ps ----------------------------------------------------------------------------------------
STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")
#: filters relative to another container's creation
_RELATIVE = ("before", "since")


@frozen
class Filters:
    """``ps --filter``: several values of one key OR (labels AND), different keys AND (Docker's rule)."""

    items: Mapping[str, tuple[str, ...]]

    @classmethod
    def parse(cls, specs: Iterable[str]) -> Filters:
        out: dict[str, list[str]] = {}
        for spec in specs:
            key, sep, value = spec.partition("=")
            key = key.strip().lower()
            if not sep or not key:
                raise ContainerError.invalid(f"bad format of filter (expected name=value): {spec}")
            if key not in ("name", "status", "label", "id", "exited", "ancestor", "health", "until",
                           "volume", "network", "before", "since"):
                raise ContainerError.invalid(f"Invalid filter '{key}'")
            if key == "status" and value not in STATUSES:
                raise ContainerError.invalid(f"Invalid filter 'status={value}'")
            if key == "exited":
                try:
                    int(value)
                except ValueError:
                    # dockerd's own words: Go's strconv.Atoi error
                    raise ContainerError.invalid(f'strconv.Atoi: parsing "{value}": invalid syntax') from None
            if key == "until":
                value = str(parse_timestamp_ns(value))  # validated (and made absolute) once
            out.setdefault(key, []).append(value)
        return cls({k: tuple(v) for k, v in out.items()})

    def wants_all(self) -> bool:
        """A status/exited filter implies ``-a`` (Docker's behaviour)."""
        return "exited" in self.items or any(s != "running" for s in self.items.get("status", ()))

    def match(self, c: Container) -> bool:
        for key, values in self.items.items():
            if key in _RELATIVE:
                continue  # ``list_containers`` applies them: they name another record
            # labels AND (every one given must match, as dockerd's MatchKVList); the rest OR
            test = all if key == "label" else any
            if not test(_match_one(key, v, c) for v in values):
                return False
        return True


def _match_one(key: str, value: str, c: Container) -> bool:
    if key == "name":
        try:
            return re.search(value, c.name) is not None
        except re.error:
            return value in c.name
    if key == "status":
        if value == "paused" or (value == "running" and c.state.paused):
            return c.state.paused and c.state.status == "running"
        return c.state.status == value
    if key == "id":
        return c.id.startswith(value)
    if key == "exited":
        return c.state.status == "exited" and c.state.exit_code == int(value)
    if key == "label":
        k, sep, v = value.partition("=")
        return k in c.labels and (not sep or c.labels[k] == v)
    if key == "ancestor":
        return c.image == value or c.image_id.removeprefix("sha256:").startswith(value.removeprefix("sha256:"))
    if key == "until":
        return parse_timestamp_text(c.created) < int(value)
    if key == "volume":
        return any(value in (m.name, m.destination, m.source) for m in c.mounts)
    if key == "network":
        return value in (c.host_config.network_mode, c.host_config.network) or value in c.state.endpoints
    if key == "health":
        h = c.state.health
        return (h.status if h else "none") == value
    return False


def list_containers(root: StateRoot, *, all: bool = False, filters: Filters | None = None) -> list[Container]:
    """Newest first, as ``docker ps``; every running record checked against the process table."""
    cs = store(root)
    cs.sweep()
    filters = filters or Filters({})
    show_all = all or filters.wants_all()
    # ``before=``/``since=`` a container (name or ID; the last one given, as dockerd): only
    # those created before / after it, the named one left out
    bounds = {key: _created_of(cs, filters.items[key][-1]) for key in _RELATIVE if filters.items.get(key)}
    out = []
    for c in cs.all():
        c = refresh(cs, c)
        if c.state.status == "removing" and not cs.dir(c.id).exists():
            continue
        if not show_all and not c.state.running:
            continue
        if bounds and not _within(parse_timestamp_text(c.created), bounds):
            continue
        if filters.match(c):
            out.append(c)
    out.sort(key=lambda c: c.created, reverse=True)
    return out


def _created_of(cs: ContainerStore, ref: str) -> int:
    try:
        return parse_timestamp_text(cs.find(ref).created)
    except NoSuchContainer:
        raise NoSuchContainer(f"no such container {ref}") from None  # dockerd's words here


def _within(created: int, bounds: Mapping[str, int]) -> bool:
    return created < bounds.get("before", created + 1) and created > bounds.get("since", created - 1)


# -- events ------------------------------------------------------------------------------------
def emit(root: StateRoot, c: Container, action: str, **extra: str) -> None:
    """A container event in the root's event log (``GET /events``), from the CLI or the daemon."""
    attrs = {**{str(k): str(v) for k, v in c.labels.items()}, "image": c.image, "name": c.name, **extra}
    from builder.base import events  # ps emits none: its budget bars the event log

    events.emit(root, "container", action, c.id, attrs)


# -- signals -----------------------------------------------------------------------------------
def _mark_stopping(cs: ContainerStore, c: Container) -> Container:
    """Under the lock (a start in progress finishes first): the current record, marked
    ``stopped_by_user`` when it runs, so its restart policy does not bring it back."""
    with cs.lock(c.id):
        st = cs.load_state(c.id)
        if st.running:
            st = replace(st, stopped_by_user=True)
            cs.save_state(c.id, st)
    return c.with_state(st)


def kill(root: StateRoot, ref: str, sig: str | int = "KILL") -> Container:
    """``docker kill``: deliver a signal to the container's init; KILL/TERM-family kills count as
    a user stop (no restart), other signals are just forwarded."""
    num = parse_signal(sig)
    cs = store(root)
    c = refresh(cs, cs.find(ref))
    if c.state.starting:
        with cs.lock(c.id):  # a start in progress: signal what it started
            c = refresh(cs, cs.load(c.id))
    if c.state.status != "running" or not init_alive(c.state):
        raise ContainerError.conflict(f"Cannot kill container: {ref}: container {c.id} is not running")
    if num in (_signal.SIGKILL, _signal.SIGTERM, _signal.SIGINT, _signal.SIGQUIT, _signal.SIGHUP):
        c = _mark_stopping(cs, c)
        if not init_alive(c.state):
            return c
    try:
        os.kill(c.state.pid, num)
    except ProcessLookupError:
        pass
    emit(root, c, "kill", signal=str(int(num)))
    if c.state.paused and num in (_signal.SIGKILL, _signal.SIGTERM, _signal.SIGINT, _signal.SIGQUIT,
                                  _signal.SIGHUP):
        _thaw_for_stop(cs, c)
    return c


def stop(root: StateRoot, ref: str, *, timeout: int | None = None, sig: str | None = None) -> Container:
    """Send the stop signal, wait up to *timeout* seconds, then SIGKILL; returns the final record."""
    cs = store(root)
    c = _mark_stopping(cs, refresh(cs, cs.find(ref)))
    st = c.state
    if not st.running:
        return c
    if timeout is None:
        t = c.config.stop_timeout
        timeout = int(t) if t is not None else DEFAULT_STOP_TIMEOUT
    num = parse_signal(sig or c.config.stop_signal or "SIGTERM")
    if st.status == "running" and init_alive(st):
        with contextlib.suppress(ProcessLookupError):
            os.kill(st.pid, num)
        emit(root, c, "kill", signal=str(int(num)))
        if st.paused:
            _thaw_for_stop(cs, c)  # a frozen process handles no signal: thaw it, as Docker does
        # Docker: a negative timeout waits for as long as it takes
        if not wait_gone(st.pid, st.pid_start, timeout if timeout >= 0 else float("inf")):
            with contextlib.suppress(ProcessLookupError):
                os.kill(st.pid, _signal.SIGKILL)
            emit(root, c, "kill", signal=str(int(_signal.SIGKILL)))
            wait_gone(st.pid, st.pid_start, 10.0)
    done = wait_not_running(cs, c.id)
    emit(root, c, "stop")
    return done


def wait_not_running(cs: ContainerStore, cid: str, *, timeout: float | None = None,
                     poll: Callable[[], None] | None = None) -> Container:
    """Block until the supervisor has recorded that the container is no longer running (or the
    supervisor is gone, in which case the record is repaired)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.002
    last: Container | None = None
    while True:
        try:
            c = refresh(cs, cs.load(cid))
        except NoSuchContainer:
            if last is None:
                raise
            # an --rm container: its supervisor removed it once it ended
            return last.with_state(replace(last.state, status="exited", exit_code=_last_exit(cs.root, cid)))
        last = c
        if not c.state.running:
            return c
        if deadline is not None and time.monotonic() > deadline:
            return c
        time.sleep(delay)
        delay = min(delay * 1.5, 0.05)


def wait(root: StateRoot, ref: str, *, condition: str = "not-running") -> int:
    """``docker wait``: block until the container stops, return its exit code. With
    ``--rm`` the record disappears: the last exit code is then taken from the supervisor's
    farewell file."""
    cs = store(root)
    try:
        c = cs.find(ref)
    except NoSuchContainer:
        # an --rm container may be gone already: its supervisor left the exit code behind
        for p in root.containers.glob(f"{EXIT_PREFIX}{ref}*") if len(ref) >= 12 else ():
            return _last_exit(root, p.name.removeprefix(EXIT_PREFIX))
        raise
    cid = c.id
    if condition == "next-exit":
        # wait for a new FinishedAt, even if the container is stopped now
        before = c.state.finished_at
        while True:
            try:
                c = refresh(cs, cs.load(cid))
            except ContainerError:
                return _last_exit(root, cid)
            if c.state.finished_at != before and not c.state.running:
                return c.state.exit_code
            time.sleep(0.05)
    if condition == "removed":
        while cs.dir(cid).exists():
            with contextlib.suppress(ContainerError):
                refresh(cs, cs.load(cid))
            time.sleep(0.05)
        return _last_exit(root, cid)
    while True:
        try:
            c = wait_not_running(cs, cid, timeout=0.5)
        except ContainerError:
            return _last_exit(root, cid)
        if not c.state.running:
            return c.state.exit_code


def _last_exit(root: StateRoot, cid: str) -> int:
    p = root.containers / f"{EXIT_PREFIX}{cid}"
    try:
        return int(p.read_text().strip() or "0")
    except (OSError, ValueError):
        return 0


# -- rm / prune ---------------------------------------------------------------------------------
def remove(root: StateRoot, ref: str, *, force: bool = False, volumes: bool = False) -> Container:
    """``docker rm``: refuse a running container unless *force*. The whole removal holds the
    container's lock (a start in progress finishes first, then is killed): the record goes
    ``removing``, what runs is killed, everything the start made is torn down from the
    persisted state, then the record is deleted. A remover killed midway leaves ``removing``
    and an unheld lock: whoever takes the lock next finishes (``refresh``)."""
    cs = store(root)
    c = cs.find(ref)
    try:
        with cs.lock(c.id):
            c = cs.load(c.id)
            st = c.state
            if (st.running or st.starting) and supervisor_alive(st) and not force:
                raise ContainerError(
                    f"cannot remove container \"/{c.name}\": container is {st.status}: "
                    "stop the container before removing or force remove"
                )
            c = _removed(cs, c, volumes=volumes)
    except NoSuchContainer:  # removed by another `rm` while we waited for its lock
        raise NoSuchContainer(f"No such container: {ref}") from None
    # its supervisor records the `die` before it ends: Docker's order, kill, die, destroy
    reap_supervisor(c.state)
    emit(root, c, "destroy")
    return c


def _removed(cs: ContainerStore, c: Container, *, volumes: bool) -> Container:
    """``repair.remove_locked``, with the ``kill`` event when it has something to kill."""
    def killing(k: Container) -> None:
        emit(cs.root, k, "kill", signal=str(int(_signal.SIGKILL)))

    return remove_locked(cs, c, volumes=volumes, killing=killing)[0]


def destroy(root: StateRoot, c: Container, *, volumes: bool) -> None:
    """Remove a stopped container's record and everything it owns (container layer, anonymous
    volumes with *volumes*, its log)."""
    cs = store(root)
    try:
        with cs.lock(c.id):
            _removed(cs, cs.load(c.id), volumes=volumes)
    except NoSuchContainer:
        return  # removed meanwhile (an --rm supervisor and `rm -f` may race)
    emit(root, c, "destroy")


def prune(root: StateRoot, *, filters: Filters | None = None) -> list[str]:
    """``container prune``: remove every stopped container (matching *filters*); returns IDs."""
    removed = []
    store(root).sweep(exit_codes=True)
    for c in list_containers(root, all=True, filters=filters):
        if c.state.running:
            continue
        with contextlib.suppress(ContainerError):
            destroy(root, c, volumes=False)
            removed.append(c.id)
    return removed


def rename(root: StateRoot, ref: str, new_name: str) -> Container:
    cs = store(root)
    old = cs.find(ref).name
    c = cs.rename(ref, new_name)
    emit(root, c, "rename", oldName="/" + old)
    return c


# -- pause / unpause ----------------------------------------------------------------------------
def _freeze_file(c: Container) -> Path:
    """The ``cgroup.freeze`` of the container's cgroup v2 directory (its whole process tree)."""
    from builder.core.sandbox import cgroups

    layout = cgroups.detect()
    if layout.v2:
        for d in cgroups.cgroup_paths_of(c.state.pid, layout):
            if layout.in_v2(d) and os.path.exists(os.path.join(d, "cgroup.freeze")):
                return Path(d) / "cgroup.freeze"
    raise ContainerError(f"cannot pause container {c.id}: it has no cgroup v2 freezer (cgroup.freeze)")


def _set_frozen(c: Container, frozen: bool, *, timeout: float = 5.0) -> None:
    f = _freeze_file(c)
    f.write_text("1" if frozen else "0")
    want = f"frozen {int(frozen)}"
    deadline = time.monotonic() + timeout
    while want not in (f.parent / "cgroup.events").read_text().splitlines():
        if time.monotonic() > deadline:
            raise ContainerError(f"container {c.id} did not {'freeze' if frozen else 'thaw'} in {timeout:g}s")
        time.sleep(0.005)


def pause(root: StateRoot, ref: str) -> Container:
    """``docker pause``: freeze every process of the container (cgroup v2 ``cgroup.freeze``)."""
    cs = store(root)
    c = refresh(cs, cs.find(ref))
    if c.state.status != "running" or not init_alive(c.state):
        raise ContainerError.conflict(f"Container {c.id} is not running")
    if c.state.paused:
        raise ContainerError.conflict(f"Container {c.id} is already paused")
    with cs.lock(c.id):
        _set_frozen(c, True)
        st = replace(cs.load_state(c.id), paused=True)
        cs.save_state(c.id, st)
    emit(root, c, "pause")
    return c.with_state(st)


def unpause(root: StateRoot, ref: str) -> Container:
    cs = store(root)
    c = refresh(cs, cs.find(ref))
    if c.state.status != "running" or not c.state.paused:
        raise ContainerError(f"Container {c.id} is not paused")
    with cs.lock(c.id):
        _set_frozen(c, False)
        st = replace(cs.load_state(c.id), paused=False)
        cs.save_state(c.id, st)
    emit(root, c, "unpause")
    return c.with_state(st)


def _thaw_for_stop(cs: ContainerStore, c: Container) -> None:
    with contextlib.suppress(ContainerError, OSError):
        _set_frozen(c, False)
    with contextlib.suppress(ContainerError):
        cs.update_state(c.id, lambda s: replace(s, paused=False))


# -- attach to a detached run -------------------------------------------------------------------
def run_exit_code(root: StateRoot, cid: str) -> int:
    """The exit code of *cid*'s last run (from the supervisor's farewell file once an ``--rm``
    record is gone)."""
    cs = store(root)
    try:
        return refresh(cs, cs.load(cid)).state.exit_code
    except ContainerError:
        return _last_exit(root, cid)
