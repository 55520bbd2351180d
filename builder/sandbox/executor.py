"""``Executor``: runs a ``Spec`` as PID 1 of fresh namespaces, supervises it, tears it down.

``run`` waits; ``start`` returns a ``Sandbox`` handle (pid, wait, kill, teardown) whose state
is persisted in its run dir so that another process can ``attach`` and tear it down.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from builder import rootfs as _rootfs
from builder import syscalls as sc
from builder.errors import CommandNotExecutable, CommandNotFound, SandboxError
from builder.sandbox import cgroups as _cg
from builder.sandbox.child import Plan, exec_process, open_console, setup_root
from builder.sandbox.spec import Process, Spec
from builder.state import StateRoot

#: where output goes: None (inherit ours), an fd, a file object, or a callback given each chunk
Output = None | int | IO[Any] | Callable[[bytes], None]
#: where input comes from: None (``/dev/null``), an fd, a file object, or bytes to feed
Input = None | int | IO[Any] | bytes

_NS_FLAGS = {
    "ipc": sc.CLONE_NEWIPC, "uts": sc.CLONE_NEWUTS, "net": sc.CLONE_NEWNET,
    "pid": sc.CLONE_NEWPID, "cgroup": sc.CLONE_NEWCGROUP,
}


@dataclass(frozen=True)
class Result:
    """How the process ended: ``exit_status`` is 128+n for a signal n (as a shell shows it)."""

    exit_status: int
    oom_killed: bool = False
    signal: int | None = None
    timed_out: bool = False


def _last_cap() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except OSError:
        return 40


def _pid_start(pid: int) -> int | None:
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


def _raise_child_error(data: bytes) -> None:
    try:
        info = json.loads(data.decode())
        kind, msg = info["kind"], info["msg"]
    except (ValueError, KeyError):
        kind, msg = "error", data.decode(errors="replace")
    if kind == "notfound":
        raise CommandNotFound(msg)
    if kind == "noexec":
        raise CommandNotExecutable(msg)
    raise SandboxError(msg)


def _report_and_exit(err_w: int, e: BaseException) -> None:
    kind = "notfound" if isinstance(e, CommandNotFound) else (
        "noexec" if isinstance(e, CommandNotExecutable) else "error")
    msg = str(e) if isinstance(e, SandboxError) else f"{type(e).__name__}: {e}"
    with contextlib.suppress(OSError):
        os.write(err_w, json.dumps({"kind": kind, "msg": msg}).encode())
    os._exit(127 if kind == "notfound" else 126 if kind == "noexec" else 125)


class _Stdio:
    """The child's fds 0/1/2 and what the parent pumps (callbacks, bytes to feed, a pty)."""

    def __init__(self, stdin: Input, stdout: Output, stderr: Output, *, terminal: bool) -> None:
        self.child: list[int] = []  # fds to dup2 onto 0, 1, 2 in the child
        self.close_in_parent: list[int] = []
        self.readers: dict[int, Callable[[bytes], None] | int] = {}  # parent fd → sink
        self.feed: tuple[int, bytes] | None = None  # parent fd, bytes to write
        self.relay_in: int | None = None  # parent reads this fd into the pty
        self.pty_master: int | None = None
        self.console_parent: socket.socket | None = None
        self.console_child: int | None = None
        self.console_size: tuple[int, int] | None = None
        self._sink_out: Callable[[bytes], None] | int = 1
        self._stdin: Input = None
        self.devnull: int | None = None
        if terminal:
            # The pty comes from the sandbox's own devpts (as runc's console socket): the child
            # opens it and sends the master over this socket pair (``receive_master``).
            parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            self.console_parent = parent_sock
            self.console_child = child_sock.detach()
            self.close_in_parent.append(self.console_child)
            self._sink_out = self._sink(stdout)
            self._stdin = stdin
            # the size of the caller's terminal from the start (as Docker's ConsoleSize)
            source = stdin if isinstance(stdin, int) and stdin >= 0 else (
                stdin.fileno() if stdin is not None and not isinstance(stdin, (bytes, int)) else 0)
            with contextlib.suppress(OSError):
                if os.isatty(source):
                    self.console_size = sc.real().get_winsize(source)
            return
        self.child = [self._in(stdin), self._out(stdout, 1), self._out(stderr, 2)]

    @staticmethod
    def _sink(out: Output) -> Callable[[bytes], None] | int:
        if out is None:
            return 1
        if isinstance(out, int):
            return out
        if callable(out) and not hasattr(out, "fileno"):
            return out
        return out.fileno()  # type: ignore[union-attr]

    def _in(self, stdin: Input) -> int:
        if stdin is None or (isinstance(stdin, int) and stdin < 0):
            self.devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            self.close_in_parent.append(self.devnull)
            return self.devnull
        if isinstance(stdin, bytes):
            r, w = os.pipe()
            self.close_in_parent.append(r)
            self.feed = (w, stdin)
            return r
        return stdin if isinstance(stdin, int) else stdin.fileno()

    def _out(self, out: Output, default: int) -> int:
        if out is None:
            return default
        if isinstance(out, int) and out < 0:  # subprocess.DEVNULL
            if self.devnull is None:
                self.devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                self.close_in_parent.append(self.devnull)
            return self.devnull
        if isinstance(out, int):
            return out
        if callable(out) and not hasattr(out, "fileno"):
            r, w = os.pipe()
            self.readers[r] = out
            self.close_in_parent.append(w)
            return w
        return out.fileno()  # type: ignore[union-attr]

    def receive_master(self) -> None:
        """Take the pty master the child sent (nothing if it died first)."""
        assert self.console_parent is not None
        try:
            _, fds, _, _ = socket.recv_fds(self.console_parent, 16, 1)
        finally:
            self.console_parent.close()
            self.console_parent = None
        if not fds:
            return
        master = fds[0]
        os.set_inheritable(master, False)
        self.pty_master = master
        self.readers[master] = self._sink_out
        stdin = self._stdin
        if isinstance(stdin, bytes):
            self.feed = (master, stdin)
        elif stdin is not None and not (isinstance(stdin, int) and stdin < 0):
            self.relay_in = stdin if isinstance(stdin, int) else stdin.fileno()

    def in_child(self) -> None:
        if not self.child:
            return  # a terminal: set up by ``child.open_console`` once /dev/pts exists
        # via high copies first: a plain dup2 chain breaks when sources and targets overlap
        import fcntl

        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in self.child]
        for target, fd in enumerate(high):
            os.dup2(fd, target)  # inheritable
            os.close(fd)

    def after_fork(self) -> None:
        for fd in self.close_in_parent:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.close_in_parent = []

    def parent_fds(self) -> list[int]:
        fds = list(self.readers)
        if self.feed is not None:
            fds.append(self.feed[0])
        return fds

    def close_all(self) -> None:
        if self.console_parent is not None:
            self.console_parent.close()
            self.console_parent = None
        for fd in [*self.close_in_parent, *self.parent_fds()]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.close_in_parent = []
        self.readers = {}
        self.feed = None


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
        stdio: _Stdio | None = None,
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
        self._start_time = _pid_start(pid)
        self._result: Result | None = None
        self._status_buf = b""
        self._timed_out = False
        self._torn_down = False
        self._helper_state: tuple[int | None, int | None] = (None, None)

    # -- persisted state ---------------------------------------------------------------------------
    def _save(self) -> None:
        state = {
            "id": self.id, "pid": self.pid, "start_time": self._start_time, "helper": self._helper,
            "helper_start": _pid_start(self._helper) if self._helper else None,
            "cgroup": self.cgroup.to_json() if self.cgroup else None,
            "mountpoints": self._mountpoints,
        }
        _write_state(self.run_dir, state)

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
        return sb

    # -- control -----------------------------------------------------------------------------------
    @property
    def pty_master(self) -> int | None:
        """The master side of the terminal of a ``terminal=True`` process (owned handles only)."""
        return self._stdio.pty_master if self._stdio is not None else None

    def resize(self, rows: int, cols: int) -> None:
        """Set the terminal's size (the process gets SIGWINCH)."""
        if self.pty_master is not None:
            sc.real().set_winsize(self.pty_master, rows, cols)

    def alive(self) -> bool:
        """Whether the init process still runs (a zombie or a reused pid does not count)."""
        return _pid_alive(self.pid, self._start_time)

    def kill(self, sig: int = signal.SIGTERM) -> None:
        """Send *sig* to the init process (no-op once it is gone)."""
        if self._result is not None or not self.alive():
            return
        try:
            fd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            return
        try:
            if _pid_start(self.pid) == self._start_time:
                signal.pidfd_send_signal(fd, sig)
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
            assert self._helper is not None
            _, hstatus = os.waitpid(self._helper, 0)
            self._helper = None
            status = self._parse_status()
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
        sel = selectors.DefaultSelector()
        stdio = self._stdio
        assert self._status_fd is not None
        sel.register(self._status_fd, selectors.EVENT_READ, "status")
        feed_data = b""
        if stdio is not None:
            for fd in stdio.readers:
                sel.register(fd, selectors.EVENT_READ, "out")
            if stdio.feed is not None:
                feed_data = stdio.feed[1]
                if feed_data:
                    sel.register(stdio.feed[0], selectors.EVENT_WRITE, "feed")
                else:
                    os.close(stdio.feed[0])
                    stdio.feed = None
            if stdio.relay_in is not None:
                sel.register(stdio.relay_in, selectors.EVENT_READ, "relay")
        deadline = None if timeout is None else time.monotonic() + timeout
        status_open = True
        try:
            drain_until: float | None = None
            while status_open or any(k.data == "out" for k in sel.get_map().values()):
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
                        self.kill(signal.SIGKILL)
                        wait_for = None
                for key, _ in sel.select(wait_for):
                    fd = key.fd
                    if key.data == "status":
                        chunk = os.read(fd, 4096)
                        if not chunk:
                            sel.unregister(fd)
                            status_open = False
                        self._status_buf += chunk
                    elif key.data == "out":
                        try:
                            chunk = os.read(fd, 65536)
                        except OSError:  # EIO on a pty master once the slave side is gone
                            chunk = b""
                        if not chunk:
                            sel.unregister(fd)
                            continue
                        assert stdio is not None
                        sink = stdio.readers[fd]
                        if isinstance(sink, int):
                            _write_all(sink, chunk)
                        else:
                            sink(chunk)
                    elif key.data == "feed":
                        try:
                            n = os.write(fd, feed_data[:65536])
                        except BrokenPipeError:
                            n = len(feed_data)
                        feed_data = feed_data[n:]
                        if not feed_data:
                            sel.unregister(fd)
                            assert stdio is not None
                            if stdio.pty_master is None or fd != stdio.pty_master:
                                os.close(fd)
                                stdio.feed = None
                    elif key.data == "relay":
                        assert stdio is not None and stdio.pty_master is not None
                        chunk = os.read(fd, 65536)
                        if not chunk:
                            sel.unregister(fd)
                            continue
                        _write_all(stdio.pty_master, chunk)
        finally:
            sel.close()

    def _wait_attached(self, timeout: float | None) -> Result:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.alive():
            if deadline is not None and time.monotonic() > deadline:
                self._timed_out = True
                self.kill(signal.SIGKILL)
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
        if self._helper is not None:
            self.kill(signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self._helper, 0)
            self._helper = None
        elif self.alive():
            self.kill(signal.SIGKILL)
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
        if self.cgroup is not None:
            self.cgroup.remove()
        _rootfs.remove_mountpoints(self._mountpoints)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self._torn_down = True


def _write_state(run_dir: Path, state: dict[str, Any]) -> None:
    """``state.json``, atomically: what ``attach``/``teardown_run_dir``/``reap_stale`` read."""
    tmp = run_dir / "state.json.tmp"
    tmp.write_text(json.dumps(state))
    os.rename(tmp, run_dir / "state.json")


def _supervise(child: int, status_w: int, exit_file: Path | None) -> None:  # pragma: no cover
    """The helper's life after forking the child: report its pid, wait, report its status, exit.

    It keeps no other fd: a pipe of another sandbox started meanwhile must not stay open here.
    """
    try:
        os.closerange(3, status_w)
        os.closerange(status_w + 1, 1 << 20)
        os.write(status_w, f"{child}\n".encode())
        while True:
            try:
                _, status = os.waitpid(child, 0)
                break
            except InterruptedError:
                continue
        if exit_file is not None:
            with contextlib.suppress(OSError):
                exit_file.write_text(str(status))
        os.write(status_w, f"{status}\n".encode())
    finally:
        os._exit(0)


def _close_other_fds(*keep: int | None) -> None:  # pragma: no cover - in the child
    low = 3
    for fd in sorted(k for k in keep if k is not None and k >= 3):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def teardown_run_dir(run_dir: str | os.PathLike[str]) -> None:
    """Tear down the sandbox whose run dir this is, from any process."""
    Sandbox.attach(run_dir).teardown()


class Executor:
    """Runs specs. *state*: the state root; per-sandbox scratch lives in ``<state>/run/<id>``."""

    def __init__(self, state: StateRoot | Path | str, *, syscalls: sc.Syscalls | None = None) -> None:
        self.state = state if isinstance(state, StateRoot) else StateRoot.open(state)
        self.sys = syscalls or sc.real()
        self._last_cap = _last_cap()

    def run(
        self,
        spec: Spec,
        *,
        stdout: Output = None,
        stderr: Output = None,
        stdin: Input = None,
        timeout: float | None = None,
    ) -> Result:
        """Run *spec* to its end; output goes to callbacks/files as it comes."""
        return self.start(spec, stdout=stdout, stderr=stderr, stdin=stdin).wait(timeout)

    # -- start ---------------------------------------------------------------------------------------
    def start(self, spec: Spec, *, stdout: Output = None, stderr: Output = None, stdin: Input = None) -> Sandbox:
        """Start *spec*; returns once the process has been exec'd (or raises, with nothing left)."""
        sid = spec.id or os.urandom(8).hex()
        reap_stale(self.state)
        run_dir = self.state.run / sid
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            run_dir.mkdir()
        except FileExistsError:
            raise SandboxError(f"sandbox {sid} already exists") from None
        cgroup = None
        stdio = None
        mountpoints: list[tuple[str, int, int]] = []
        try:
            cgroup = _cg.Cgroup.create(sid, spec.resources)
            _write_state(run_dir, {"id": sid, "pid": 0, "cgroup": cgroup.to_json()})
            rootfs_dir = run_dir / "rootfs"
            rootfs_dir.mkdir()
            targets = _mount_targets(spec)
            data = ""
            if spec.root.is_overlay:
                stub = run_dir / "stubs"
                stub.mkdir()
                made = _rootfs.make_stub_layer(spec.root, targets, stub)
                data = _rootfs.link_lowers(spec.root, run_dir, stub if made else None)
            else:
                assert spec.root.path is not None
                mountpoints = _rootfs.make_mountpoints(Path(spec.root.path), targets)
                _write_state(run_dir, {"id": sid, "pid": 0, "cgroup": cgroup.to_json(),
                                       "mountpoints": mountpoints})
            mask = run_dir / "mask"
            os.mknod(mask, stat.S_IFCHR | 0o000, 0)
            stdio = _Stdio(stdin, stdout, stderr, terminal=spec.process.terminal)
            plan = Plan(spec=spec, rootfs=str(rootfs_dir), run_dir=str(run_dir), overlay_data=data,
                        mask_node=str(mask), cgroup_layout=_cg.detect())
            sandbox = self._spawn(plan, cgroup, stdio, run_dir, sid, mountpoints)
        except BaseException:
            if stdio is not None:
                stdio.close_all()
            if cgroup is not None:
                cgroup.remove()
            _rootfs.remove_mountpoints(mountpoints)
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        return sandbox

    def _spawn(
        self, plan: Plan, cgroup: _cg.Cgroup, stdio: _Stdio, run_dir: Path, sid: str,
        mountpoints: list[tuple[str, int, int]],
    ) -> Sandbox:
        spec = plan.spec
        status_r, status_w = os.pipe()
        err_r, err_w = os.pipe()
        ns_fds: list[tuple[int, int]] = []
        unshare_flags = sc.CLONE_NEWNS
        try:
            for kind, flag in _NS_FLAGS.items():
                v = getattr(spec.namespaces, kind)
                if v == "new":
                    if kind != "cgroup":
                        unshare_flags |= flag
                elif v != "host":
                    try:
                        ns_fds.append((os.open(v, os.O_RDONLY | os.O_CLOEXEC), flag))
                    except OSError as e:
                        raise SandboxError(f"cannot open {kind} namespace {v}: {e.strerror}") from None
            parent_pid = os.getpid()
            helper = os.fork()
        except BaseException:
            for fd in (status_r, status_w, err_r, err_w, *(f for f, _ in ns_fds)):
                os.close(fd)
            raise
        if helper == 0:  # pragma: no cover - runs in the helper process
            self._helper_main(plan, cgroup, stdio, status_r, status_w, err_r, err_w, ns_fds,
                              unshare_flags, parent_pid)
        os.close(status_w)
        os.close(err_w)
        for fd, _ in ns_fds:
            os.close(fd)
        stdio.after_fork()
        sandbox: Sandbox | None = None
        try:
            pid_line = b""
            while not pid_line.endswith(b"\n"):
                chunk = os.read(status_r, 1)
                if not chunk:
                    break
                pid_line += chunk
            err = b""
            while True:
                chunk = os.read(err_r, 65536)
                if not chunk:
                    break
                err += chunk
            os.close(err_r)
            err_r = -1
            if not pid_line:
                raise SandboxError(err.decode(errors="replace") or "the sandbox helper died")
            if stdio.console_parent is not None:
                stdio.receive_master()
            sandbox = Sandbox(id=sid, pid=int(pid_line), run_dir=run_dir, cgroup=cgroup, helper=helper,
                              status_fd=status_r, stdio=stdio, mountpoints=mountpoints)
            sandbox._status_buf = pid_line
            if err:
                _raise_child_error(err)
            sandbox._save()
            return sandbox
        except BaseException:
            if err_r >= 0:
                os.close(err_r)
            if sandbox is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(helper, signal.SIGKILL)
                os.waitpid(helper, 0)
                os.close(status_r)
            else:  # the process failed to exec: the caller removes cgroup, mount points, run dir
                sandbox.kill(signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(helper, 0)
                os.close(status_r)
            raise

    def _helper_main(
        self, plan: Plan, cgroup: _cg.Cgroup, stdio: _Stdio, status_r: int, status_w: int,
        err_r: int, err_w: int, ns_fds: list[tuple[int, int]], unshare_flags: int, parent_pid: int,
    ) -> None:  # pragma: no cover - runs in the helper process
        try:
            os.close(status_r)
            os.close(err_r)
            self.sys.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent_pid:
                os._exit(1)
            for fd, flag in ns_fds:
                self.sys.setns(fd, flag)
            self.sys.unshare(unshare_flags)
            child = os.fork()
        except BaseException as e:
            _report_and_exit(err_w, e)
            raise  # unreachable
        if child == 0:
            self._init_main(plan, cgroup, stdio, err_w)
        _supervise(child, status_w, Path(plan.run_dir) / "exit")

    def _init_main(self, plan: Plan, cgroup: _cg.Cgroup, stdio: _Stdio, err_w: int) -> None:  # pragma: no cover
        spec = plan.spec
        try:
            self.sys.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
            for f in cgroup.procs_files:
                with open(f, "w") as fh:
                    fh.write("0")
            if spec.namespaces.cgroup == "new":
                self.sys.unshare(sc.CLONE_NEWCGROUP)
            stdio.in_child()
            _close_other_fds(err_w, stdio.console_child)
            if spec.namespaces.net == "new":
                self.sys.set_loopback_up()
            os.umask(0)
            setup_root(self.sys, plan)
            if spec.process.terminal:
                assert stdio.console_child is not None
                open_console(self.sys, stdio.console_child, stdio.console_size)
            exec_process(self.sys, spec.process, self._last_cap)
        except BaseException as e:
            _report_and_exit(err_w, e)
        os._exit(125)

    # -- exec ----------------------------------------------------------------------------------------
    def exec(
        self,
        target: Sandbox | int,
        process: Process,
        *,
        stdout: Output = None,
        stderr: Output = None,
        stdin: Input = None,
        timeout: float | None = None,
    ) -> Result:
        """Run *process* inside a running sandbox (its namespaces and cgroups), like ``docker exec``."""
        return self.exec_start(target, process, stdout=stdout, stderr=stderr, stdin=stdin).wait(timeout)

    def exec_start(
        self, target: Sandbox | int, process: Process, *, stdout: Output = None, stderr: Output = None,
        stdin: Input = None,
    ) -> Sandbox:
        """Start *process* in a running sandbox; the handle's ``wait`` gives its result."""
        pid = target.pid if isinstance(target, Sandbox) else int(target)
        if _pid_start(pid) is None:
            raise SandboxError(f"no running sandbox with init pid {pid}")
        cg_paths = _cg.cgroup_paths_of(pid)
        fds: list[tuple[int, int]] = []
        root_fd = -1
        try:
            for kind, flag in (("ipc", sc.CLONE_NEWIPC), ("uts", sc.CLONE_NEWUTS), ("net", sc.CLONE_NEWNET),
                               ("pid", sc.CLONE_NEWPID), ("cgroup", sc.CLONE_NEWCGROUP), ("mnt", sc.CLONE_NEWNS)):
                path = f"/proc/{pid}/ns/{kind}"
                if os.readlink(path) != os.readlink(f"/proc/self/ns/{kind}") or kind == "mnt":
                    fds.append((os.open(path, os.O_RDONLY | os.O_CLOEXEC), flag))
            root_fd = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            for fd, _ in fds:
                os.close(fd)
            if root_fd >= 0:
                os.close(root_fd)
            raise SandboxError(f"cannot join sandbox {pid}: {e.strerror}") from None
        stdio = _Stdio(stdin, stdout, stderr, terminal=process.terminal)
        status_r, status_w = os.pipe()
        err_r, err_w = os.pipe()
        parent_pid = os.getpid()
        helper = os.fork()
        if helper == 0:  # pragma: no cover - helper process
            try:
                os.close(status_r)
                os.close(err_r)
                self.sys.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
                if os.getppid() != parent_pid:
                    os._exit(1)
                for p in cg_paths:
                    with open(os.path.join(p, "cgroup.procs"), "w") as fh:
                        fh.write("0")
                for fd, flag in fds:
                    self.sys.setns(fd, flag)
                os.fchdir(root_fd)
                self.sys.chroot(".")
                child = os.fork()
            except BaseException as e:
                _report_and_exit(err_w, e)
                raise
            if child == 0:
                try:
                    self.sys.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
                    stdio.in_child()
                    _close_other_fds(err_w, stdio.console_child)
                    if process.terminal:
                        assert stdio.console_child is not None
                        open_console(self.sys, stdio.console_child, stdio.console_size, bind=False)
                    os.chdir("/")
                    exec_process(self.sys, process, self._last_cap)
                except BaseException as e:
                    _report_and_exit(err_w, e)
                os._exit(125)
            _supervise(child, status_w, None)
        os.close(status_w)
        os.close(err_w)
        os.close(root_fd)
        for fd, _ in fds:
            os.close(fd)
        stdio.after_fork()
        pid_line = b""
        while not pid_line.endswith(b"\n"):
            chunk = os.read(status_r, 1)
            if not chunk:
                break
            pid_line += chunk
        if stdio.console_parent is not None:
            stdio.receive_master()
        err = b""
        while True:
            chunk = os.read(err_r, 65536)
            if not chunk:
                break
            err += chunk
        os.close(err_r)
        if err or not pid_line:
            with contextlib.suppress(ProcessLookupError):
                os.kill(helper, signal.SIGKILL)
            os.waitpid(helper, 0)
            os.close(status_r)
            stdio.close_all()
            if not err:
                raise SandboxError("the exec helper died")
            _raise_child_error(err)
        proc = Sandbox(id=f"exec-{pid}", pid=int(pid_line), run_dir=Path("/nonexistent"), cgroup=None,
                       helper=helper, status_fd=status_r, stdio=stdio)
        proc._status_buf = pid_line
        proc._torn_down = False
        return _ExecHandle(proc)


class _ExecHandle(Sandbox):
    """An exec'd process: its teardown removes nothing but its own helper and pipes."""

    def __init__(self, inner: Sandbox) -> None:
        self.__dict__.update(inner.__dict__)

    def teardown(self) -> None:
        if self._torn_down:
            return
        if self._helper is not None:
            self.kill(signal.SIGKILL)
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


def _mount_targets(spec: Spec) -> list[tuple[str, bool]]:
    """Mount points the root must have: top-level ones (not inside an earlier non-bind mount)."""
    out: list[tuple[str, bool]] = []
    covered: list[str] = []
    for m in spec.mounts:
        d = m.destination.rstrip("/") or "/"
        if any(d == c or d.startswith(c + "/") for c in covered):
            continue
        is_file = m.type == "bind" and os.path.exists(m.source) and not os.path.isdir(m.source)
        out.append((d, is_file))
        if m.type != "bind":
            covered.append(d)
    return out


#: seconds output is still read after the process ended
_DRAIN_SECONDS = 2.0

#: seconds a run dir without a started process is left alone (another process may be starting it)
_STARTING_GRACE = 60.0


def reap_stale(state: StateRoot) -> list[str]:
    """Tear down sandboxes whose processes are all gone (their owner was killed); returns their ids."""
    gone: list[str] = []
    base = state.run
    if not base.is_dir():
        return gone
    for d in base.iterdir():
        if not (d / "state.json").exists():
            continue
        try:
            sb = Sandbox.attach(d)
        except SandboxError:
            continue
        helper, helper_start = sb._helper_state
        if sb.alive() or (helper is not None and _pid_alive(helper, helper_start, zombie_ok=True)):
            continue
        if sb.pid == 0:  # a start in progress (or one whose process was killed mid-way)
            with contextlib.suppress(OSError):
                if time.time() - (d / "state.json").stat().st_mtime < _STARTING_GRACE:
                    continue
        sb.teardown()
        gone.append(sb.id)
    _cg.remove_orphans(min_age=_STARTING_GRACE)
    return gone
