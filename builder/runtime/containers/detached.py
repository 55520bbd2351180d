"""A detached supervisor's process: ``spawn()`` double-forks it (new session, stdio on
/dev/null) and waits only for its "started" or "failed" word; ``Forked`` forks it before the
container is created (``run -d``), so that it loads its modules meanwhile.
"""

from __future__ import annotations

import _signal  # not signal (its enums, ~1 ms at import): numbers and handlers are enough
import contextlib
import json
import os
import sys

from builder.base.errors import ContainerError
from builder.base.state import StateRoot
from builder.runtime.containers.record import ContainerStore
from builder.runtime.containers.supervisor import PROXY_SIGNALS, Started, Supervisor

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def spawn(root: StateRoot, cid: str, *, attach_wait: int = 0) -> Started:
    """Start *cid* under a detached supervisor; return once it reports the first start (which
    waits first for *attach_wait* clients on the attach socket)."""
    # the sandbox's modules, imported before the fork: a long-lived parent (``pybuild serve``)
    # keeps them, and each container's supervisor no longer imports them again (~20 ms a start)
    import builder.core.sandbox.executor  # noqa: F401
    import builder.runtime.containers.attach  # noqa: F401

    return Forked(root).start(cid, attach_wait=attach_wait)


class Forked:
    """A detached supervisor forked before its container exists (``run -d``): while the caller
    creates the container, it imports the sandbox's modules and the attach server (~10 ms
    that a fork after the creation waited for) on the other CPU; ``start`` hands it the
    container's id and waits for its word, ``cancel`` (a creation that failed) ends it unused.

    It double-forks (new session, stdio on /dev/null once it has its container) and, until it
    has its id, keeps nothing of its caller's open but its stderr: a lock its caller takes and
    releases meanwhile is not held here, a ``$(pybuild run -d …)`` does not wait for it."""

    def __init__(self, root: StateRoot) -> None:
        self.root = root
        self._ready_r, ready_w = os.pipe()
        id_r, self._id_w = os.pipe()
        self._pid = os.fork()
        if self._pid == 0:  # pragma: no cover - runs in the child
            _forked_main(root, id_r, ready_w, ours=(self._ready_r, self._id_w))
        os.close(ready_w)
        os.close(id_r)

    def start(self, cid: str, *, attach_wait: int = 0) -> Started:
        """Hand the supervisor *cid* and return once it reports the first start."""
        with contextlib.suppress(OSError):  # it died: its word's pipe says so (EOF)
            os.write(self._id_w, f"{cid} {attach_wait}\n".encode())
        self._end()
        # read one line, not to EOF: a forked helper of the container may hold a copy of the
        # pipe's write end for as long as the container runs
        raw = _read_line(self._ready_r)
        os.close(self._ready_r)
        if not raw:
            raise ContainerError(f"the supervisor of container {cid[:12]} died before starting it "
                                 f"(see {ContainerStore(self.root).dir(cid) / 'supervisor.log'})")
        d = json.loads(raw)
        return Started(bool(d["ok"]), int(d.get("exit_code", 0)), str(d.get("error", "")))

    def cancel(self) -> None:
        """No container to supervise: the supervisor reads the end of its pipe and exits."""
        self._end()
        os.close(self._ready_r)

    def _end(self) -> None:
        os.close(self._id_w)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self._pid, 0)  # the first child, which exits once it forked


def _forked_main(root: StateRoot, id_r: int, ready_w: int, *, ours: tuple[int, ...]) -> None:  # pragma: no cover
    """The child of ``Forked``: a detached supervisor once it reads its container's id."""
    code = 1
    try:
        for fd in ours:
            os.close(fd)
        # forked from a process with an asyncio loop (pybuild serve): its signal wakeup
        # fd is a socket number that our own sockets will reuse once stdio is detached
        _signal.set_wakeup_fd(-1)
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        for lo, hi in _gaps(3, 65536, sorted((id_r, ready_w))):
            os.closerange(lo, hi)
        # what the supervisor needs, imported while the caller creates the container (a no-op
        # where the caller had them: ``spawn``): the sandbox, its seccomp program's cache, the
        # attach server, the image store (the spec's layers; the creation loads it after our
        # fork) and the event log
        import builder.base.events  # noqa: F401
        import builder.core.sandbox.executor  # noqa: F401
        import builder.core.sandbox.seccomp  # noqa: F401
        import builder.runtime.containers.attach  # noqa: F401
        import registry.store  # noqa: F401

        line = _read_line(id_r)
        os.close(id_r)
        if not line.endswith(b"\n"):  # cancelled, or the caller died before it created one
            code = 0
            return
        cid, _, wait = line.decode().strip().partition(" ")
        _detach_stdio(root, cid, keep=ready_w)
        code = _supervise_detached(root, cid, ready_w, int(wait or 0))
    except BaseException:  # noqa: B036 - the child must never return into the caller
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def _read_line(fd: int) -> bytes:
    """What a pipe gives up to its first newline (included), or to its end: its writer sends
    one line (``sandbox.stdio.read_line`` reads a byte at a time, for pipes that carry more; not
    imported here: a ``run -d``'s own process loads nothing of the sandbox)."""
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        line += chunk
    return line


def _gaps(lo: int, hi: int, keep: list[int]) -> list[tuple[int, int]]:
    """The ranges of ``[lo, hi)`` around the sorted fds *keep*."""
    out = []
    for fd in keep:
        if fd >= lo:
            out.append((lo, fd))
            lo = fd + 1
    out.append((lo, hi))
    return out


def _detach_stdio(root: StateRoot, cid: str, *, keep: int) -> None:
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    err = os.open(ContainerStore(root).dir(cid) / "supervisor.log",
                  os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(err, 2)
    # nothing of the CLI's may stay open here: a `$(pybuild run -d …)` waits for its pipe's EOF
    os.closerange(3, keep)
    os.closerange(keep + 1, 65536)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False, buffering=1)  # noqa: SIM115
    for s in PROXY_SIGNALS:
        _signal.signal(s, _signal.SIG_DFL)
    _signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)


def _supervise_detached(root: StateRoot, cid: str, w: int, attach_wait: int = 0) -> int:
    def ready(s: Started) -> None:
        nonlocal w
        # the CLI that spawned us may be gone (killed, Ctrl-C): the container is ours all the
        # same, so a pipe with no reader must neither kill us (SIGPIPE) nor raise
        old = _signal.signal(_signal.SIGPIPE, _signal.SIG_IGN)
        try:
            with contextlib.suppress(OSError):
                os.write(w, json.dumps({"ok": s.ok, "exit_code": s.exit_code, "error": s.error}).encode() + b"\n")
        finally:
            _signal.signal(_signal.SIGPIPE, old)
        os.close(w)
        w = -1

    # A stop signal sent to the supervisor itself (e.g. a host shutdown) ends the container
    # cleanly rather than orphaning it.
    sup = Supervisor(root, cid, attach_wait=attach_wait)

    def on_term(signum: int, frame: Any) -> None:
        # no file locks here (the main thread may hold one): a plain read of the state
        sup.terminating = True
        st = sup.cs.load_state(cid)
        if st.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(st.pid, _signal.SIGKILL)

    _signal.signal(_signal.SIGTERM, on_term)
    try:
        return sup.run(ready)
    finally:
        if w >= 0:
            os.close(w)
