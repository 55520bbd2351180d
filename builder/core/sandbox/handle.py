"""``Sandbox``: the handle on a started sandbox (pid, wait, kill, teardown), its persisted state,
and the teardown of sandboxes whose owner is gone (``teardown_run_dir``, ``reap_stale``).
"""

from __future__ import annotations

import _signal  # not signal (its enums, ~1 ms): the numbers are enough
import contextlib
import json
import os
import select
import time
from pathlib import Path

from builder.base.errors import SandboxError
from builder.base.paths import remove_tree
from builder.base.state import StateRoot
from builder.base.values import frozen
from builder.core.sandbox import cgroups as _cg
from builder.core.sandbox import mountpoints as _mountpoints
from builder.core.sandbox.stdio import Stdio, write_all

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: seconds output is still read after the process ended
_DRAIN_SECONDS = 2.0

#: seconds a run dir without a started process is left alone (another process may be starting it)
_STARTING_GRACE = 60.0
#: seconds between two sweeps of a state root's stale sandboxes by its starts
#: (``reap_stale_now_and_then``), and the stamp file that keeps the time: in ``locks/``, which
#: a live root has once it made a cgroup and ``system reset`` keeps (``run/`` must stay empty)
SWEEP_EVERY = _STARTING_GRACE
SWEEP_STAMP = "locks/sandbox-sweep.stamp"


@frozen
class Result:
    """How the process ended: ``exit_status`` is 128+n for a signal n (as a shell shows it)."""

    exit_status: int
    oom_killed: bool = False
    signal: int | None = None
    timed_out: bool = False


def pid_start(pid: int) -> int | None:
    """The start time of *pid* (field 22 of its stat), to tell a reused pid apart."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)
    except OSError:  # it exited between open and read
        return None
    finally:
        os.close(fd)
    return int(data.rpartition(b")")[2].split()[19])


def _pid_alive(pid: int, start_time: int | None, *, zombie_ok: bool = False) -> bool:
    if start_time is None:
        return False
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        data = os.read(fd, 4096)
    except OSError:
        return False
    finally:
        os.close(fd)
    fields = data.rpartition(b")")[2].split()
    return int(fields[19]) == start_time and (zombie_ok or fields[0] != b"Z")


def _status_result(status: int, *, oom: bool, timed_out: bool) -> Result:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return Result(128 + sig, oom_killed=oom, signal=sig, timed_out=timed_out)
    return Result(os.waitstatus_to_exitcode(status), oom_killed=oom, timed_out=timed_out)


class Sandbox:
    """A started sandbox: ``pid`` is its init (host pid). Owned handles can ``wait``; attached ones
    (``Sandbox.attach(run_dir)``, from another process) can ``kill`` and ``teardown``.
    """

    def __init__(
        self,
        *,
        id: str,
        pid: int,
        run_dir: Path,
        cgroup: _cg.Cgroup | None,
        helper: int | None = None,
        status_fd: int | None = None,
        stdio: Stdio | None = None,
        mountpoints: list[tuple[str, int, int]] | None = None,
    ) -> None:
        self.id = id
        self.pid = pid
        self.run_dir = run_dir
        self.cgroup = cgroup
        self._helper = helper
        self._status_fd = status_fd
        self._stdio = stdio
        self._mountpoints = mountpoints or []
        self._start_time = pid_start(pid)
        self._result: Result | None = None
        self._status_buf = b""
        self._timed_out = False
        self._torn_down = False
        self._helper_state: tuple[int | None, int | None] = (None, None)
        #: the process starting it (pid, start time), recorded until the sandbox's process is
        self._starter: tuple[int, int] | None = None

    # -- persisted state ---------------------------------------------------------------------------
    def _save(self) -> None:
        state = {
            "id": self.id, "pid": self.pid, "start_time": self._start_time, "helper": self._helper,
            "helper_start": pid_start(self._helper) if self._helper else None,
            "cgroup": self.cgroup.to_json() if self.cgroup else None,
            "mountpoints": self._mountpoints,
        }
        write_state(self.run_dir, state)

    @classmethod
    def attach(cls, run_dir: str | os.PathLike[str]) -> Sandbox:
        """A handle on a sandbox started by another process (from its run dir)."""
        d = Path(run_dir)
        try:
            state = json.loads((d / "state.json").read_text())
        except (OSError, ValueError) as e:
            raise SandboxError(f"{d}: no sandbox state ({e})") from None
        sb = cls(
            id=state["id"], pid=state["pid"], run_dir=d,
            cgroup=_cg.Cgroup.from_json(state["cgroup"]) if state.get("cgroup") else None,
            mountpoints=[(str(x[0]), int(x[1]), int(x[2])) for x in state.get("mountpoints", [])],
        )
        sb._start_time = state.get("start_time")
        sb._helper_state = (state.get("helper"), state.get("helper_start"))
        starter = state.get("starter")
        sb._starter = (int(starter[0]), int(starter[1])) if starter else None
        return sb

    # -- control -----------------------------------------------------------------------------------
    @property
    def pty_master(self) -> int | None:
        """The master side of the terminal of a ``terminal=True`` process (owned handles only)."""
        return self._stdio.pty_master if self._stdio is not None else None

    def resize(self, rows: int, cols: int) -> None:
        """Set the terminal's size (the process gets SIGWINCH)."""
        if self.pty_master is not None:
            from builder.base import syscalls as sc  # ctypes: not for a removal's teardown

            sc.real().set_winsize(self.pty_master, rows, cols)

    def alive(self) -> bool:
        """Whether the init process still runs (a zombie or a reused pid does not count)."""
        return _pid_alive(self.pid, self._start_time)

    def kill(self, sig: int = _signal.SIGTERM) -> None:
        """Send *sig* to the init process (no-op once it is gone)."""
        if self._result is not None or not self.alive():
            return
        try:
            fd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            return
        try:
            if pid_start(self.pid) == self._start_time:
                _signal.pidfd_send_signal(fd, sig)
        except ProcessLookupError:
            pass
        finally:
            os.close(fd)

    def wait(self, timeout: float | None = None) -> Result:
        """Pump output, wait for the end, tear down; on *timeout* kill it (``timed_out`` set).

        Ctrl-C (KeyboardInterrupt) or any error while waiting kills and tears down, then re-raises.
        """
        if self._result is not None:
            return self._result
        if self._status_fd is None:
            return self._wait_attached(timeout)
        try:
            self._pump(timeout)
            status = self._parse_status()  # the helper is still exiting: ``teardown`` reaps it last
            oom = self.cgroup.oom_killed() if self.cgroup else False
            self._result = _status_result(status, oom=oom, timed_out=self._timed_out)
        except BaseException:
            self.teardown()
            raise
        self.teardown()
        return self._result

    def _parse_status(self) -> int:
        lines = self._status_buf.decode().split()
        if len(lines) < 2:
            raise SandboxError("the sandbox supervisor died before reporting an exit status")
        return int(lines[1])

    def _pump(self, timeout: float | None) -> None:
        # ``select.poll`` itself, not ``selectors`` (which costs a run's start-up ~1.5 ms, math
        # included): *roles* maps each polled fd to what it is
        poller = select.poll()
        roles: dict[int, str] = {}

        def watch(fd: int, role: str) -> None:
            if fd in roles:
                raise KeyError(f"{fd!r} (FD {fd}) is already registered")  # as ``selectors`` says
            poller.register(fd, select.POLLOUT if role == "feed" else select.POLLIN)
            roles[fd] = role

        def unwatch(fd: int) -> None:
            poller.unregister(fd)
            del roles[fd]

        stdio = self._stdio
        assert self._status_fd is not None
        watch(self._status_fd, "status")
        feed_data = b""
        if stdio is not None:
            for fd in stdio.readers:
                watch(fd, "out")
            if stdio.feed is not None:
                feed_data = stdio.feed[1]
                if feed_data:
                    watch(stdio.feed[0], "feed")
                else:
                    os.close(stdio.feed[0])
                    stdio.feed = None
            if stdio.relay_in is not None:
                watch(stdio.relay_in, "relay")
        deadline = None if timeout is None else time.monotonic() + timeout
        status_open = True
        drain_until: float | None = None
        while status_open or "out" in roles.values():
            wait_for = None
            if not status_open:
                # the process has ended: what still holds its output (processes that outlived
                # it outside a pid namespace) is killed; then a short drain, never a hang
                if drain_until is None:
                    drain_until = time.monotonic() + _DRAIN_SECONDS
                    if self.cgroup is not None:
                        self.cgroup.kill_all()
                wait_for = max(0.0, drain_until - time.monotonic())
                if wait_for == 0.0:
                    break
            elif deadline is not None and not self._timed_out:
                wait_for = max(0.0, deadline - time.monotonic())
                if wait_for == 0.0:
                    self._timed_out = True
                    self.kill(_signal.SIGKILL)
                    wait_for = None
            for fd, _ in poller.poll(None if wait_for is None else wait_for * 1000):
                role = roles[fd]
                if role == "status":
                    chunk = os.read(fd, 4096)
                    if not chunk:
                        unwatch(fd)
                        status_open = False
                    self._status_buf += chunk
                elif role == "out":
                    try:
                        chunk = os.read(fd, 65536)
                    except OSError:  # EIO on a pty master once the slave side is gone
                        chunk = b""
                    if not chunk:
                        unwatch(fd)
                        continue
                    assert stdio is not None
                    sink = stdio.readers[fd]
                    if isinstance(sink, int):
                        write_all(sink, chunk)
                    else:
                        sink(chunk)
                elif role == "feed":
                    try:
                        n = os.write(fd, feed_data[:65536])
                    except BrokenPipeError:
                        n = len(feed_data)
                    feed_data = feed_data[n:]
                    if not feed_data:
                        unwatch(fd)
                        assert stdio is not None
                        if stdio.pty_master is None or fd != stdio.pty_master:
                            os.close(fd)
                            stdio.feed = None
                elif role == "relay":
                    assert stdio is not None and stdio.pty_master is not None
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        unwatch(fd)
                        continue
                    write_all(stdio.pty_master, chunk)

    def _wait_attached(self, timeout: float | None) -> Result:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.alive():
            if deadline is not None and time.monotonic() > deadline:
                self._timed_out = True
                self.kill(_signal.SIGKILL)
                deadline = None
            time.sleep(0.01)
        exit_file = self.run_dir / "exit"
        for _ in range(100):
            if exit_file.exists() and exit_file.read_text().strip():
                break
            time.sleep(0.01)
        try:
            status = int(exit_file.read_text())
        except (OSError, ValueError):
            self.teardown()
            raise SandboxError(f"sandbox {self.id}: exit status unknown (its supervisor is gone)") from None
        oom = self.cgroup.oom_killed() if self.cgroup else False
        self._result = _status_result(status, oom=oom, timed_out=self._timed_out)
        self.teardown()
        return self._result

    def teardown(self) -> None:
        """Kill what is left, remove the cgroups, mount points and run dir (idempotent)."""
        if self._torn_down:
            return
        if self._helper is not None and self._result is None:  # not ended as its helper reported
            self.kill(_signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self._helper, 0)
            self._helper = None
        elif self._helper is None and self.alive():
            self.kill(_signal.SIGKILL)
            for _ in range(500):
                if not self.alive():
                    break
                time.sleep(0.002)
        if self._status_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._status_fd)
            self._status_fd = None
        if self._stdio is not None:
            self._stdio.close_all()
        try:
            if self.cgroup is not None:
                self.cgroup.remove()
            _mountpoints.remove_mountpoints(self._mountpoints)
            remove_tree(self.run_dir)
        finally:
            if self._helper is not None:  # it reported the end and has been exiting meanwhile
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(self._helper, 0)
                self._helper = None
        self._torn_down = True


def write_state(run_dir: Path, state: dict[str, Any]) -> None:
    """``state.json``, atomically: what ``attach``/``teardown_run_dir``/``reap_stale`` read."""
    tmp = run_dir / "state.json.tmp"
    tmp.write_text(json.dumps(state))
    os.rename(tmp, run_dir / "state.json")


def teardown_run_dir(run_dir: str | os.PathLike[str]) -> None:
    """Tear down the sandbox whose run dir this is, from any process."""
    Sandbox.attach(run_dir).teardown()


def teardown_id(state: StateRoot, sid: str) -> None:
    """Tear down sandbox *sid* from whatever its start got to make, from any process: its run
    dir's persisted state if there is one, else (a start killed before it wrote any) the
    ``pybuild/<sid>`` cgroups, emptied and removed, and the run dir."""
    run_dir = state.run / sid
    with contextlib.suppress(SandboxError):
        teardown_run_dir(run_dir)
    layout = _cg.detect()
    paths = [str(p) for m in {*layout.v1.values(), *([layout.v2] if layout.v2 else [])}
             if (p := Path(m) / _cg.PARENT / sid).is_dir()]
    if paths:
        v2 = next((p for p in paths if layout.in_v2(p)), None)
        _cg.Cgroup(id=sid, paths=paths, v2=v2).remove()
    remove_tree(run_dir)


class ExecHandle(Sandbox):
    """An exec'd process: its teardown removes nothing but its own helper and pipes."""

    def __init__(self, inner: Sandbox) -> None:
        self.__dict__.update(inner.__dict__)

    def teardown(self) -> None:
        if self._torn_down:
            return
        if self._helper is not None:
            self.kill(_signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self._helper, 0)
            self._helper = None
        if self._status_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._status_fd)
            self._status_fd = None
        if self._stdio is not None:
            self._stdio.close_all()
        self._torn_down = True


def reap_stale(state: StateRoot) -> list[str]:
    """Tear down sandboxes whose processes are all gone (their owner was killed); returns their ids."""
    gone: list[str] = []
    base = state.run
    if not base.is_dir():
        return gone
    for d in base.iterdir():
        if reap_if_stale(d):
            gone.append(d.name)
    _cg.remove_orphans(min_age=_STARTING_GRACE)
    return gone


def reap_if_stale(run_dir: Path) -> bool:
    """Tear down the sandbox of *run_dir* if its processes are all gone; whether it did."""
    if not (run_dir / "state.json").exists():
        return False
    try:
        sb = Sandbox.attach(run_dir)
    except SandboxError:
        return False
    helper, helper_start = sb._helper_state
    if sb.alive() or (helper is not None and _pid_alive(helper, helper_start, zombie_ok=True)):
        return False
    if sb.pid == 0:  # a start in progress (or one whose process was killed mid-way)
        if sb._starter is not None:  # its starter says which: alive, or killed (then at once)
            if _pid_alive(*sb._starter):
                return False
        else:
            with contextlib.suppress(OSError):
                if time.time() - (run_dir / "state.json").stat().st_mtime < _STARTING_GRACE:
                    return False
    sb.teardown()
    return True


def reap_stale_now_and_then(state: StateRoot) -> list[str]:
    """``reap_stale`` from a start, at most once every ``SWEEP_EVERY`` seconds per state root:
    the mtime of its ``SWEEP_STAMP`` says when the last sweep began. A start then costs one
    ``stat``, not a read of every running sandbox's state, its ``/proc`` entries and the
    ``cgroup.procs`` of each of its cgroups (dockerd's ``run`` costs the same with 0 or 100
    containers up); what a killed owner left waits at most that long for a start, or for
    ``system prune``/``check`` (which call ``reap_stale``). A start finds its own run dir's
    leftover at once (``reap_if_stale``)."""
    stamp = state.path / SWEEP_STAMP
    now = time.time()
    try:
        if now - os.stat(stamp).st_mtime < SWEEP_EVERY:
            return []
    except OSError:
        pass  # no stamp yet (or none readable): this start sweeps
    # first, so that starts meanwhile skip (two sweeps at once are safe, just wasted); no
    # ``locks/`` (a root that never made a cgroup): no stamp, every start sweeps
    with contextlib.suppress(OSError):
        os.close(os.open(stamp, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
        os.utime(stamp, (now, now))
    return reap_stale(state)
