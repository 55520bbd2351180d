"""``Executor``: runs a ``Spec`` as PID 1 of fresh namespaces (``start``/``run``) or joins a running
one (``exec``); the handles, their state and teardown live in ``builder.core.sandbox.handle``.
"""

from __future__ import annotations

import _signal  # not signal (its enums, ~1 ms): the numbers are enough
import contextlib
import json
import os
import stat
from pathlib import Path

from builder.base import syscalls as sc
from builder.base.errors import CommandNotExecutable, CommandNotFound, SandboxError
from builder.base.paths import remove_tree
from builder.base.state import StateRoot
from builder.base.values import replace
from builder.core import rootfs as _rootfs
from builder.core.layers import view as _view  # noqa: F401  (imported here once: the stub layer of every sandbox's process reads through it)
from builder.core.sandbox import cgroups as _cg
from builder.core.sandbox import delegated, seccomp
from builder.core.sandbox import mountpoints as _mountpoints
from builder.core.sandbox.child import Plan, exec_process, join_cgroups, open_console, setup_root
from builder.core.sandbox.handle import (
    ExecHandle,
    Result,
    Sandbox,
    pid_start,
    reap_if_stale,
    reap_stale,
    reap_stale_now_and_then,
    teardown_run_dir,
    write_state,
)
from builder.core.sandbox.spec import (
    NO_NAMESPACES,
    Process,
    Spec,
    bare_chroot,
    chroot_isolation,
    namespaces_allowed,
)
from builder.core.sandbox.stdio import Input, Output, Stdio, read_line, read_to_eof

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: compatibility names for callers of this module
_Stdio = Stdio
__all__ = ["Executor", "Input", "Output", "Result", "Sandbox", "reap_stale", "teardown_run_dir"]

_NS_FLAGS = {
    "ipc": sc.CLONE_NEWIPC, "uts": sc.CLONE_NEWUTS, "net": sc.CLONE_NEWNET,
    "pid": sc.CLONE_NEWPID, "cgroup": sc.CLONE_NEWCGROUP,
}


def _last_cap() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except OSError:
        return 40


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
        os.close(status_w)  # EOF at once: the caller need not wait for this process's own exit
    finally:
        os._exit(0)


def _shield_helper() -> Any:
    """In a freshly forked helper: ignore SIGINT, so a terminal's Ctrl-C (sent to the whole
    process group) leaves the supervision of the sandbox to the caller's cancellation instead
    of killing the helper before it reports. Returns what the sandbox's process must get back
    (``_unshield_child``) until ``child.default_signals`` resets every signal before exec."""
    inherited = _signal.getsignal(_signal.SIGINT)
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    return _signal.SIG_IGN if inherited == _signal.SIG_IGN else _signal.SIG_DFL


def _unshield_child(disposition: Any) -> None:  # pragma: no cover - in the child
    _signal.signal(_signal.SIGINT, disposition)


def _move_into(cgroup: _cg.Cgroup, pid: int, join_w: int) -> None:  # pragma: no cover - in the helper
    """Move the sandbox's process *pid* into its v2 cgroup while it mounts its root (it waits in
    ``child.join_cgroups`` before anything needs it; its v1 cgroups it joins itself), then tell
    it so on *join_w*: ``+``, or the error it reports as its own."""
    reply = b"+"
    for f in cgroup.v2_procs_files:
        try:
            _cg.put(f, str(pid).encode())
        except OSError as e:
            reply = f"cgroup: cannot move the sandbox's process into {os.path.dirname(f)}: {e.strerror}".encode()
            break
    with contextlib.suppress(OSError):  # the process is gone (killed): nothing waits for the reply
        os.write(join_w, reply)
    os.close(join_w)


def _v2_dir_fd(v2_dir: str | None) -> int:
    """A sandbox's v2 cgroup directory, open for a process to be born in (``clone3``'s
    ``CLONE_INTO_CGROUP``); -1 where the kernel cannot, or the directory cannot be opened: the
    helper then moves the process there (``_move_into``), which reports what fails."""
    if v2_dir is None or not sc.clone_into_cgroup_works():
        return -1
    try:
        return os.open(v2_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return -1


def _close_open(*fds: int) -> None:
    for fd in fds:
        if fd >= 0:
            os.close(fd)


def _close_other_fds(*keep: int | None) -> None:  # pragma: no cover - in the child
    low = 3
    for fd in sorted(k for k in keep if k is not None and k >= 3):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)


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
    def start(self, spec: Spec, *, stdout: Output = None, stderr: Output = None, stdin: Input = None,
              console_size: tuple[int, int] | None = None) -> Sandbox:
        """Start *spec*; returns once the process has been exec'd (or raises, with nothing left).
        A terminal gets *console_size* (rows, cols), else the size of *stdin*'s terminal."""
        sid = spec.id or os.urandom(8).hex()
        if not namespaces_allowed():  # a container without privileges (issue 17)
            if not chroot_isolation():
                raise SandboxError(NO_NAMESPACES)
            if spec.root.is_overlay:
                raise SandboxError("--isolation chroot without CAP_SYS_ADMIN: the root is an overlay, "
                                   "which cannot be mounted here (PYBUILD_NO_OVERLAY=1 copies it)")
            # no seccomp filter without no_new_privs where CAP_SYS_ADMIN is missing
            spec = replace(spec, process=replace(spec.process, no_new_privs=True))
        reap_stale_now_and_then(self.state)
        run_dir = self.state.run / sid
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            run_dir.mkdir()
        except FileExistsError:
            # what a killed owner left under this id (a restart) goes now, whatever the sweep's time
            if not reap_if_stale(run_dir) or os.path.lexists(run_dir):
                raise SandboxError.conflict(f"sandbox {sid} already exists") from None
            run_dir.mkdir()
        cgroup = None
        stdio = None
        mountpoints: list[tuple[str, int, int]] = []
        try:
            if "_PYBUILD_ROOTLESS" in os.environ:  # builder.base.rootless: limits in a delegated v2 subtree
                cgroup = delegated.create(sid, spec.resources, _cg.detect())
            else:
                cgroup = _cg.Cgroup.create(sid, spec.resources, root=self.state.path)
                if not sc.clone_into_cgroup_works():  # else the process is born in its v2 cgroup
                    _cg.start_attach_grace(cgroup, _cg.detect())
            # who starts it: a sweep tears down at once what a killed starter left (no grace)
            starter = [os.getpid(), pid_start(os.getpid())]
            write_state(run_dir, {"id": sid, "pid": 0, "cgroup": cgroup.to_json(), "starter": starter})
            rootfs_dir = run_dir / "rootfs"
            rootfs_dir.mkdir()
            if not spec.root.is_overlay:  # an overlay's stub layer is made with the plan (overlay_lowers)
                assert spec.root.path is not None
                mountpoints = _mountpoints.make_mountpoints(Path(spec.root.path), mount_targets(spec))
                write_state(run_dir, {"id": sid, "pid": 0, "cgroup": cgroup.to_json(),
                                       "mountpoints": mountpoints, "starter": starter})
            mask = run_dir / "mask"
            os.mknod(mask, stat.S_IFCHR | 0o000, 0)
            stdio = Stdio(stdin, stdout, stderr, terminal=spec.process.terminal, console_size=console_size)
            # the seccomp program here, before the fork: a forked child pays a copy-on-write fault
            # for each page it touches, several times the work itself (~1 ms here, from the cache)
            plan = Plan(spec=spec, rootfs=str(rootfs_dir), run_dir=str(run_dir), overlay_data="",
                        mask_node=str(mask),
                        cgroup_layout=None if "_PYBUILD_ROOTLESS" in os.environ else _cg.detect(),
                        seccomp_bpf=self._seccomp(spec.process))
            sandbox = self._spawn(self._complete_plan(plan), cgroup, stdio, run_dir, sid, mountpoints)
        except BaseException:
            if stdio is not None:
                stdio.close_all()
            if cgroup is not None:
                cgroup.remove()
            _mountpoints.remove_mountpoints(mountpoints)
            remove_tree(run_dir)
            raise
        return sandbox

    def _spawn(
        self, plan: Plan, cgroup: _cg.Cgroup, stdio: Stdio, run_dir: Path, sid: str,
        mountpoints: list[tuple[str, int, int]],
    ) -> Sandbox:
        spec = plan.spec
        status_r, status_w = os.pipe()
        err_r, err_w = os.pipe()
        join_r, join_w = os.pipe() if cgroup.v2_procs_files else (-1, -1)
        plan = replace(plan, cgroup_join=join_r, cgroup_tasks=tuple(cgroup.v1_tasks_files))
        ns_fds: list[tuple[int, int]] = []
        unshare_flags = 0 if bare_chroot() else sc.CLONE_NEWNS
        files = cgroup.v2_procs_files
        born_in = _v2_dir_fd(os.path.dirname(files[0]) if len(files) == 1 else None)
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
            _close_open(join_r, join_w, born_in)
            raise
        if helper == 0:  # pragma: no cover - runs in the helper process
            self._helper_main(plan, cgroup, stdio, status_r, status_w, err_r, err_w, ns_fds,
                              unshare_flags, parent_pid, join_w, born_in)
        os.close(status_w)
        os.close(err_w)
        _close_open(join_r, join_w, born_in)
        for fd, _ in ns_fds:
            os.close(fd)
        stdio.after_fork()
        sandbox: Sandbox | None = None
        try:
            pid_line = read_line(status_r)
            err = read_to_eof(err_r)
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
                    os.kill(helper, _signal.SIGKILL)
                os.waitpid(helper, 0)
                os.close(status_r)
            else:  # the process failed to exec: the caller removes cgroup, mount points, run dir
                sandbox.kill(_signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(helper, 0)
                os.close(status_r)
            raise

    def _helper_main(
        self, plan: Plan, cgroup: _cg.Cgroup, stdio: Stdio, status_r: int, status_w: int,
        err_r: int, err_w: int, ns_fds: list[tuple[int, int]], unshare_flags: int, parent_pid: int,
        join_w: int, born_in: int,
    ) -> None:  # pragma: no cover - runs in the helper process
        """Enter the namespaces, fork the sandbox's process (born in its v2 cgroup where the
        kernel can: *born_in*, else moved there, ``_move_into``), report and wait for it."""
        born = False
        try:
            sigint = _shield_helper()
            os.close(status_r)
            os.close(err_r)
            self.sys.prctl(sc.PR_SET_PDEATHSIG, _signal.SIGKILL)
            if os.getppid() != parent_pid:
                os._exit(1)
            for fd, flag in ns_fds:
                self.sys.setns(fd, flag)
            self.sys.unshare(unshare_flags)
            child = -1
            if born_in >= 0:
                with contextlib.suppress(OSError):  # refused: forked and moved, as before 5.7
                    child = self.sys.fork_into_cgroup(born_in)
                    born = True
            if child < 0:
                child = os.fork()
        except BaseException as e:
            _report_and_exit(err_w, e)
            raise  # unreachable
        if child == 0:
            _unshield_child(sigint)
            if join_w >= 0:
                os.close(join_w)
            self._init_main(plan, stdio, err_w)
        if join_w >= 0:
            os.close(plan.cgroup_join)
            if born:
                with contextlib.suppress(OSError):
                    os.write(join_w, b"+")
                os.close(join_w)
            else:
                _move_into(cgroup, child, join_w)
        _supervise(child, status_w, Path(plan.run_dir) / "exit")

    def _init_main(self, plan: Plan, stdio: Stdio, err_w: int) -> None:  # pragma: no cover
        spec = plan.spec
        try:
            self.sys.prctl(sc.PR_SET_PDEATHSIG, _signal.SIGKILL)
            stdio.in_child()
            _close_other_fds(err_w, stdio.console_child, plan.cgroup_join)
            if spec.namespaces.net == "new":
                self.sys.set_loopback_up()
            os.umask(0)
            if not bare_chroot():
                setup_root(self.sys, plan)
            else:  # --isolation chroot without CAP_SYS_ADMIN: chrooted into the copied root, no mounts
                join_cgroups(self.sys, plan)
                assert spec.root.path is not None
                os.chdir(spec.root.path)
                self.sys.chroot(".")
                os.chdir("/")
            if spec.process.terminal:
                assert stdio.console_child is not None
                open_console(self.sys, stdio.console_child, stdio.console_size)
            exec_process(self.sys, spec.process, self._last_cap, plan.seccomp_bpf)
        except BaseException as e:
            _report_and_exit(err_w, e)
        os._exit(125)

    def _complete_plan(self, plan: Plan) -> Plan:
        """What the plan needs made on disk before the fork, by the starting process: an
        overlay root's stub layer and lower links. Not by the sandbox's process, which made them
        while its helper's move into its v2 cgroup slept (before ``clone3``): a forked child pays
        a copy-on-write fault for each page it touches (~1 ms more here)."""
        spec = plan.spec
        if not spec.root.is_overlay:
            return plan
        return replace(plan, overlay_data=overlay_lowers(spec, Path(plan.run_dir)))

    def _seccomp(self, process: Process) -> bytes | None:
        """The process's seccomp program, compiled (cached in the state root) before it is confined."""
        if process.seccomp is None:
            return None
        return seccomp.program(process.seccomp, process.capabilities, cache_dir=self.state.cache / "seccomp")

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
        stdin: Input = None, console_size: tuple[int, int] | None = None,
    ) -> Sandbox:
        """Start *process* in a running sandbox; the handle's ``wait`` gives its result. A
        terminal gets *console_size* (rows, cols), else the size of *stdin*'s terminal."""
        pid = target.pid if isinstance(target, Sandbox) else int(target)
        if pid_start(pid) is None:
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
        try:
            bpf = self._seccomp(process)
        except BaseException:
            for fd, _ in fds:
                os.close(fd)
            os.close(root_fd)
            raise
        stdio = Stdio(stdin, stdout, stderr, terminal=process.terminal, console_size=console_size)
        layout = _cg.detect()
        v2_dir = next((p for p in cg_paths if layout.in_v2(p)), None)
        born_in = _v2_dir_fd(v2_dir)
        status_r, status_w = os.pipe()
        err_r, err_w = os.pipe()
        parent_pid = os.getpid()
        helper = os.fork()
        if helper == 0:  # pragma: no cover - helper process
            cgroupns = -1
            try:
                sigint = _shield_helper()
                os.close(status_r)
                os.close(err_r)
                self.sys.prctl(sc.PR_SET_PDEATHSIG, _signal.SIGKILL)
                if os.getppid() != parent_pid:
                    os._exit(1)
                # v1: this helper (one thread) moves itself through `tasks`, which takes no
                # rwsem; v2: the process is born there (clone3), else the helper moves itself
                # through `cgroup.procs` (a grace period), from the caller's cgroup namespace
                for p in cg_paths:
                    if p != v2_dir:
                        _cg.put(os.path.join(p, "tasks"), b"0")
                procs = os.open(os.path.join(v2_dir, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC) if v2_dir else -1
                if procs >= 0 and born_in < 0:
                    os.write(procs, b"0")
                for fd, flag in fds:
                    if flag == sc.CLONE_NEWCGROUP and born_in >= 0:
                        cgroupns = fd  # joined by the process once born in its cgroup
                        continue
                    self.sys.setns(fd, flag)
                os.fchdir(root_fd)
                self.sys.chroot(".")
                child = -1
                if born_in >= 0:
                    try:
                        child = self.sys.fork_into_cgroup(born_in)
                    except OSError:  # refused: moved, as before 5.7
                        os.write(procs, b"0")
                        if cgroupns >= 0:
                            self.sys.setns(cgroupns, sc.CLONE_NEWCGROUP)
                            cgroupns = -1
                if child < 0:
                    child = os.fork()
            except BaseException as e:
                _report_and_exit(err_w, e)
                raise
            if child == 0:
                try:
                    if cgroupns >= 0:
                        self.sys.setns(cgroupns, sc.CLONE_NEWCGROUP)
                    _unshield_child(sigint)
                    self.sys.prctl(sc.PR_SET_PDEATHSIG, _signal.SIGKILL)
                    stdio.in_child()
                    _close_other_fds(err_w, stdio.console_child)
                    if process.terminal:
                        assert stdio.console_child is not None
                        open_console(self.sys, stdio.console_child, stdio.console_size, bind=False)
                    os.chdir("/")
                    exec_process(self.sys, process, self._last_cap, bpf)
                except BaseException as e:
                    _report_and_exit(err_w, e)
                os._exit(125)
            _supervise(child, status_w, None)
        os.close(status_w)
        os.close(err_w)
        os.close(root_fd)
        _close_open(born_in)
        for fd, _ in fds:
            os.close(fd)
        stdio.after_fork()
        pid_line = read_line(status_r)
        if stdio.console_parent is not None:
            stdio.receive_master()
        err = read_to_eof(err_r)
        os.close(err_r)
        if err or not pid_line:
            with contextlib.suppress(ProcessLookupError):
                os.kill(helper, _signal.SIGKILL)
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
        return ExecHandle(proc)


def overlay_lowers(spec: Spec, run_dir: Path) -> str:
    """The overlay root's mount data: its stub layer (``stubs/``: the mount points the image
    lacks, so none lands in the upper dir) on top of its layers, each by a short name in *run_dir*
    (an ``--rm`` container's by its own path where it can: ``rootfs.link_lowers``).
    Made by the process that starts the sandbox, before its fork (or by an OCI bundle's maker)."""
    stub = run_dir / "stubs"
    stub.mkdir()
    made = _mountpoints.make_stub_layer(spec.root, mount_targets(spec), stub)
    return _rootfs.link_lowers(spec.root, run_dir, stub if made else None, direct=spec.root.volatile)


def mount_targets(spec: Spec) -> list[tuple[str, bool]]:
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
