"""Spec → kernel calls, run inside the sandbox's fresh namespaces before ``execve``.

Every call goes through a ``Syscalls`` object (``builder.base.syscalls``), so that tests can run
these functions against ``FakeSyscalls`` and check the actions a spec produces.
"""

from __future__ import annotations

import _signal  # not signal (its enums, ~1 ms): the numbers are enough
import contextlib
import errno
import os
import resource
import stat
from pathlib import Path

from builder.base import syscalls as sc
from builder.base.errors import CommandNotExecutable, CommandNotFound, SandboxError
from builder.base.paths import resolve_parts
from builder.base.values import frozen
from builder.core.rootfs import mount_root
from builder.core.sandbox.cgroups import put
from builder.core.sandbox.spec import CAP_NUMBERS, DEFAULT_PATH, Device, Mount, Process, Spec
from builder.core.sandbox.stdio import read_to_eof
from builder.core.sandbox.users import User, resolve_user

TYPE_CHECKING = False
if TYPE_CHECKING:
    from builder.core.sandbox.cgroups import Layout

#: (name, major, minor) of the device nodes made in a tmpfs /dev
DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
           ("urandom", 1, 9), ("tty", 5, 0))
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
             ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"))


@frozen
class Plan:
    """What the child needs besides the spec, prepared by the parent."""

    spec: Spec
    rootfs: str  # the (empty) directory the root is mounted on
    run_dir: str
    overlay_data: str  # mount data for an overlay root, relative to run_dir
    mask_node: str  # a 0/0 char device (opening it fails, ENXIO): masks files if there is no /dev/null
    cgroup_layout: Layout | None = None
    seccomp_bpf: bytes | None = None  # the process's compiled seccomp filter
    #: a pipe's read end (-1: none): the helper writes ``+`` once it has moved this process into
    #: the sandbox's v2 cgroup, or why it could not (``join_cgroups``)
    cgroup_join: int = -1
    #: the v1 ``tasks`` files this process writes itself into (``join_cgroups``)
    cgroup_tasks: tuple[str, ...] = ()


def mount_flags(options: tuple[str, ...]) -> tuple[int, int, str]:
    """(flags, propagation flags, fs data) from OCI-style mount options."""
    flags = 0
    prop = 0
    data: list[str] = []
    for o in options:
        if o in sc.MOUNT_FLAGS:
            bit, clear = sc.MOUNT_FLAGS[o]
            flags = flags & ~bit if clear else flags | bit
        elif o in sc.PROPAGATION_FLAGS:
            prop |= sc.PROPAGATION_FLAGS[o]
        else:
            data.append(o)
    return flags, prop, ",".join(data)


def secure_join(root: str, path: str) -> str:
    """*path* inside *root*, following symlinks as if *root* were ``/`` (never out of it)."""
    return os.path.join(root, *resolve_parts(Path(root), path, error=SandboxError))


def _mkdirs(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


def _make_target(dest: str, *, is_file: bool) -> None:
    if os.path.lexists(dest):
        return
    _mkdirs(os.path.dirname(dest))
    if is_file:
        os.close(os.open(dest, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
    else:
        os.mkdir(dest, 0o755)


def do_mount(sys: sc.Syscalls | sc.FakeSyscalls, plan: Plan, m: Mount, *, real: bool = True) -> None:
    """Mount *m* under the new root (before ``pivot_root``)."""
    dest = secure_join(plan.rootfs, m.destination)
    flags, prop, data = mount_flags(m.options)
    if real and rootless() and data and m.type in ("devpts", "tmpfs", "mqueue"):
        data = _mapped_ids_only(data)
    if m.type == "bind":
        src_is_file = not os.path.isdir(m.source)
        if real:
            _make_target(dest, is_file=src_is_file)
        rec = sc.MS_REC if "bind" not in m.options else 0
        sys.mount(m.source, dest, None, sc.MS_BIND | rec)
        extra = flags & ~(sc.MS_BIND | sc.MS_REC)
        if extra:
            sys.mount(None, dest, None, sc.MS_REMOUNT | sc.MS_BIND | extra)
    elif m.type == "cgroup":
        if real:
            _make_target(dest, is_file=False)
        _mount_cgroups(sys, dest, flags, plan.cgroup_layout, real=real)
    else:
        if real:
            _make_target(dest, is_file=False)
        try:
            sys.mount(m.source or m.type, dest, m.type, flags, data or None)
        except PermissionError:
            # rootless in the host's network (pid, IPC) namespace: its sysfs (procfs, mqueue) is
            # not the user namespace's to mount; the host's is bound instead, as rootless runc
            # does (sysfs read-only)
            host = {"sysfs": "/sys", "proc": "/proc", "mqueue": "/dev/mqueue"}.get(m.type)
            if not (real and rootless() and host):
                raise
            if m.type == "mqueue" and not os.path.ismount(host):
                return  # the host has none to share (IPC stays the host's: no mqueue of its own)
            sys.mount(host, dest, None, sc.MS_BIND | sc.MS_REC)
            sys.mount(None, dest, None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_NOSUID | sc.MS_NODEV
                      | sc.MS_NOEXEC | (sc.MS_RDONLY if m.type == "sysfs" else 0))
        if m.type == "tmpfs" and m.destination == "/dev":
            _populate_dev(sys, dest, plan, real=real)
    if prop:
        sys.mount(None, dest, None, prop)


def _mount_cgroups(
    sys: sc.Syscalls | sc.FakeSyscalls, dest: str, flags: int, layout: Layout | None, *, real: bool
) -> None:
    """The sandbox's own cgroups (it has a cgroup namespace), read-only like Docker's."""
    if layout is None or (not layout.v1 and layout.v2 is None):
        return
    if not layout.v1:
        sys.mount("cgroup2", dest, "cgroup2", flags)
        return
    # the tmpfs holding the hierarchies stays writable, as runc leaves it (Docker shows it rw)
    sys.mount("tmpfs", dest, "tmpfs", flags & ~sc.MS_RDONLY, "mode=755")
    for point, options in sorted(layout.v1_options.items()):
        sub = os.path.join(dest, os.path.basename(point))
        if real:
            os.mkdir(sub, 0o555)
        sys.mount("cgroup", sub, "cgroup", flags, options)


def rootless() -> bool:
    """Whether this runs in the user namespace of ``builder.base.rootless`` (no device nodes to make:
    the host's are bound instead, as rootless runc does)."""
    return "_PYBUILD_ROOTLESS" in os.environ


def _bind_node(sys: sc.Syscalls | sc.FakeSyscalls, host: str, path: str) -> None:
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o666))
    sys.mount(host, path, None, sc.MS_BIND)


def _populate_dev(sys: sc.Syscalls | sc.FakeSyscalls, dev: str, plan: Plan, *, real: bool) -> None:
    for name, major, minor in DEVICES:
        path = os.path.join(dev, name)
        if real and rootless():
            _bind_node(sys, "/dev/" + name, path)
            continue
        sys.mknod(path, stat.S_IFCHR | 0o666, os.makedev(major, minor))
        if real:
            os.chmod(path, 0o666)
    for name, target in DEV_LINKS:
        sys.symlink(target, os.path.join(dev, name))


def apply_sysctls(sysctls: tuple[tuple[str, str], ...]) -> None:
    """Write each sysctl through ``/proc/sys`` while still on the host's ``/proc``: a net.* or
    IPC file there belongs to the namespaces of the writer, which are the sandbox's by now."""
    for key, value in sysctls:
        path = "/proc/sys/" + key.replace(".", "/")
        if key == "net.ipv4.ping_group_range" and "_PYBUILD_ROOTLESS" in os.environ:
            value = _mapped_group_range(value)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise SandboxError(f"sysctl {key}: the kernel has no such parameter in this namespace") from None
        except OSError as e:
            raise SandboxError(f"sysctl {key}: {e.strerror}") from None
        try:
            os.write(fd, value.encode())
        except OSError as e:
            raise SandboxError(f"sysctl {key}={value}: {e.strerror}") from None
        finally:
            os.close(fd)


def _mapped_ids_only(data: str) -> str:
    """Mount data without a ``uid=``/``gid=`` the user namespace does not map (devpts's gid=5
    without sub-ID ranges): the kernel refuses them."""
    def mapped(kind: str, ident: str) -> bool:
        with open(f"/proc/self/{kind}_map") as f:
            return any(int(p[0]) <= int(ident) < int(p[0]) + int(p[2])
                       for p in (line.split() for line in f) if len(p) == 3)

    keep = []
    for opt in data.split(","):
        key, _, value = opt.partition("=")
        if key in ("uid", "gid") and value.isdigit() and not mapped(key[0] + "id", value):
            continue
        keep.append(opt)
    return ",".join(keep)


def _mapped_group_range(value: str) -> str:
    """Rootless, the kernel takes only groups of the namespace's map: Docker's ``0 2147483647``
    becomes the mapped range."""
    with open("/proc/self/gid_map") as f:
        top = max((int(p[0]) + int(p[2]) - 1 for p in (line.split() for line in f) if len(p) == 3),
                  default=0)
    lo, _, hi = value.partition(" ")
    return f"{min(int(lo), top)} {min(int(hi or lo), top)}"


def make_device(sys: sc.Syscalls | sc.FakeSyscalls, plan: Plan, d: Device, *, real: bool = True) -> None:
    """``--device``: the node under the new root, with the host node's numbers, mode and owner."""
    dest = secure_join(plan.rootfs, d.path)
    if real:
        _mkdirs(os.path.dirname(dest))
        if os.path.lexists(dest):
            if os.path.isdir(dest) and not os.path.islink(dest):
                raise SandboxError(f"--device {d.path}: a directory is in the way in the container")
            os.unlink(dest)
    kind = stat.S_IFCHR if d.type == "c" else stat.S_IFBLK
    if real and rootless():
        _bind_node(sys, f"/dev/{'char' if d.type == 'c' else 'block'}/{d.major}:{d.minor}", dest)
        return
    sys.mknod(dest, kind | d.mode, os.makedev(d.major, d.minor))
    if real:
        os.chown(dest, d.uid, d.gid)
        os.chmod(dest, d.mode)


def join_cgroups(sys: sc.Syscalls | sc.FakeSyscalls, plan: Plan) -> None:
    """Join the sandbox's cgroups, then make its cgroup namespace (rooted there).

    v1: this process (one thread) writes ``0`` to each ``tasks`` file, a move of the writer
    itself, which the kernel makes without ``cgroup_threadgroup_rwsem``. v2: this process was
    born there (``clone3``; its helper's ``+`` is already written), or, where the kernel cannot,
    its helper moves it through ``cgroup.procs``, which takes that rwsem, whose writer sleeps for
    an RCU grace period (~10-17 ms), while this process mounts (the caller began the grace
    period already: ``cgroups.start_attach_grace``); this waits for the ``+`` only here, before
    anything needs the cgroups (the ``cgroup`` mount, ``pivot_root``, the program)."""
    for f in plan.cgroup_tasks:
        try:
            put(f, b"0")
        except OSError as e:
            raise SandboxError(f"cgroup: cannot join {os.path.dirname(f)}: {e.strerror}") from None
    if plan.cgroup_join >= 0:
        reply = read_to_eof(plan.cgroup_join)
        os.close(plan.cgroup_join)
        if reply != b"+":
            raise SandboxError(reply.decode(errors="replace")
                               or "cgroup: the sandbox's helper ended before it joined the cgroups")
    if plan.spec.namespaces.cgroup == "new":
        sys.unshare(sc.CLONE_NEWCGROUP)


def setup_root(sys: sc.Syscalls | sc.FakeSyscalls, plan: Plan, *, real: bool = True) -> None:
    """Mount the root and everything in it, mask paths, set the hostname, ``pivot_root``; the
    cgroups are joined (``join_cgroups``) before the first ``cgroup`` mount, or before ``pivot_root``."""
    spec = plan.spec
    if real:
        apply_sysctls(spec.sysctls)
    sys.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    mount_root(sys, spec.root, plan.rootfs, plan.run_dir, plan.overlay_data)  # type: ignore[arg-type]
    joined = False
    for m in spec.mounts:
        if m.type == "cgroup" and not joined:
            join_cgroups(sys, plan)
            joined = True
        do_mount(sys, plan, m, real=real)
    for d in spec.devices:
        make_device(sys, plan, d, real=real)
    # masked as runc masks them: a directory under an empty read-only tmpfs, a file under the
    # sandbox's own /dev/null (reads give nothing); plan.mask_node where it has no /dev/null
    dev_null = secure_join(plan.rootfs, "/dev/null")
    mask_file = dev_null if real and os.path.exists(dev_null) else plan.mask_node
    for p in spec.masked_paths:
        target = secure_join(plan.rootfs, p)
        if real and not os.path.lexists(target):
            continue
        if real and os.path.isdir(target):
            sys.mount("tmpfs", target, "tmpfs", sc.MS_RDONLY, None)
        else:
            sys.mount(mask_file, target, None, sc.MS_BIND)
    for p in spec.readonly_paths:
        target = secure_join(plan.rootfs, p)
        if real and not os.path.lexists(target):
            continue
        sys.mount(target, target, None, sc.MS_BIND | sc.MS_REC)
        sys.mount(None, target, None,
                  sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    if not joined:
        join_cgroups(sys, plan)
    if spec.hostname and spec.namespaces.uts != "host":
        sys.sethostname(spec.hostname)
    sys.chdir(plan.rootfs)
    sys.pivot_root(".", ".")
    sys.umount2(".", sc.MNT_DETACH)
    sys.chdir("/")
    if spec.root.readonly:
        ro = sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY
        sys.mount(None, "/", None, ro | (sc.MS_NODEV if spec.root.is_overlay else 0))


def open_console(
    sys: sc.Syscalls | sc.FakeSyscalls, sock_fd: int, size: tuple[int, int] | None, *, bind: bool = True
) -> None:
    """Inside the root: a pty from its own devpts, the master sent to the parent over *sock_fd*,
    the slave as controlling terminal and fds 0-2 (and bound onto ``/dev/console``)."""
    import socket

    master, slave_path = sys.open_pty("/dev/ptmx")
    try:
        if size is not None:
            sys.set_winsize(master, *size)
        with socket.socket(fileno=sock_fd) as s:
            socket.send_fds(s, [b"m"], [master])
    finally:
        os.close(master)
    slave = os.open(slave_path, os.O_RDWR)
    sys.set_controlling_tty(slave)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)
    if bind:
        _make_target("/dev/console", is_file=True)
        sys.mount(slave_path, "/dev/console", None, sc.MS_BIND)


def read_user(spec_user: str, *, primary_in_groups: bool = True,
              add_groups: tuple[str, ...] = ()) -> User:
    """Resolve *spec_user* from the files of the current root (we are inside it)."""

    def read(path: str) -> str | None:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return None

    return resolve_user(spec_user, read("/etc/passwd"), read("/etc/group"),
                        primary_in_groups=primary_in_groups, add_groups=add_groups)


def final_env(process: Process, user: User) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in process.env:
        k, sep, v = item.partition("=")
        if sep:
            env[k] = v
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOME", user.home)
    return env


def find_executable(arg0: str, env: dict[str, str]) -> str:
    """The path ``execve`` gets: *arg0* itself if it has a ``/``, else a ``$PATH`` search."""
    if "/" in arg0:
        if not os.path.lexists(arg0):
            raise CommandNotFound(f'exec: "{arg0}": stat {arg0}: no such file or directory')
        return arg0
    for d in env.get("PATH", DEFAULT_PATH).split(":"):
        cand = os.path.join(d or ".", arg0)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    raise CommandNotFound(f'exec: "{arg0}": executable file not found in $PATH')


def set_rlimits(process: Process) -> None:
    for r in process.rlimits:
        num = getattr(resource, r.type)
        _soft, hard = resource.getrlimit(num)
        if hard != resource.RLIM_INFINITY and (r.hard == resource.RLIM_INFINITY or r.hard > hard):
            raise SandboxError(
                f"rlimit {r.type}: {r.hard} is above the inherited hard limit {hard} (it can only be lowered)"
            )
        resource.setrlimit(num, (min(r.soft, r.hard) if r.soft >= 0 else r.hard, r.hard))


def drop_privileges(sys: sc.Syscalls | sc.FakeSyscalls, process: Process, user: User, last_cap: int) -> None:
    """Bounding set, ids, capability sets, no_new_privs: Docker's order (caps last)."""
    wanted = 0
    for c in process.capabilities:
        wanted |= 1 << CAP_NUMBERS[c]
    for cap in range(last_cap + 1):
        if not wanted & (1 << cap):
            try:
                sys.capbset_drop(cap)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
    sys.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL)
    if isinstance(sys, sc.Syscalls):
        _set_ids(user)
    if user.uid == 0:  # none inheritable, as Docker since 20.10.14 (CVE-2022-24769)
        sys.capset(sc.CapSets(wanted, wanted, 0))
    else:
        sys.capset(sc.CapSets(0, 0, 0))
    if process.no_new_privs:
        sys.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)


def _set_ids(user: User) -> None:
    """The process's groups and IDs. Rootless without sub-ID ranges (``setgroups`` denied, only
    0 mapped) the groups stay, and an ID the namespace lacks is said plainly."""
    try:
        if not (rootless() and _setgroups_denied()):
            os.setgroups(list(user.groups))
        os.setresgid(user.gid, user.gid, user.gid)
        os.setresuid(user.uid, user.uid, user.uid)
    except OSError as e:
        if not (rootless() and e.errno == errno.EINVAL):
            raise
        raise SandboxError(f"rootless: user {user.uid}:{user.gid} is outside this user's ID ranges "
                           "(add ranges to /etc/subuid and /etc/subgid)") from None


def _setgroups_denied() -> bool:
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() == "deny"
    except OSError:
        return False


def enter_cwd(cwd: str) -> None:
    try:
        os.chdir(cwd)
    except FileNotFoundError:
        # Docker creates a missing working directory
        _mkdirs(cwd)
        os.chdir(cwd)


def load_seccomp(sys: sc.Syscalls | sc.FakeSyscalls, program: bytes) -> None:
    try:
        sys.seccomp_filter(program)
    except OSError as e:
        raise SandboxError(f"cannot load the seccomp filter: {e.strerror}") from None


def confine(sys: sc.Syscalls | sc.FakeSyscalls, process: Process, user: User, last_cap: int,
            seccomp_bpf: bytes | None) -> None:
    """Drop privileges and load the seccomp filter, in runc's order: with no_new_privs the filter
    goes last, so that it sees only ``execve`` and the program; without it the kernel wants
    CAP_SYS_ADMIN, so it goes first, and the profile must allow what dropping privileges takes
    (capset, setresuid…, as Docker's does)."""
    if seccomp_bpf is not None and not process.no_new_privs:
        load_seccomp(sys, seccomp_bpf)
    drop_privileges(sys, process, user, last_cap)
    if seccomp_bpf is not None and process.no_new_privs:
        load_seccomp(sys, seccomp_bpf)


def default_signals(sys: sc.Syscalls | sc.FakeSyscalls) -> None:
    """Every signal back to its default action and none blocked, as runc starts a process:
    Python ignores SIGPIPE and SIGXFSZ (and a caller may ignore or block more), and an
    ignored signal stays ignored across ``execve``: ``yes | head`` would never end. The C
    library's own signals (32, 33) are reset by the raw call where a parent (GNU make)
    left them ignored."""
    for sig in range(1, _signal.NSIG):  # valid_signals() leaves out the C library's own
        if sig in (_signal.SIGKILL, _signal.SIGSTOP):
            continue
        try:
            _signal.signal(sig, _signal.SIG_DFL)
        except (OSError, ValueError):  # a signal the C library keeps for itself
            with contextlib.suppress(OSError):
                sys.default_if_ignored(sig)
    _signal.pthread_sigmask(_signal.SIG_SETMASK, ())


def exec_process(sys: sc.Syscalls, process: Process, last_cap: int, seccomp_bpf: bytes | None = None) -> None:
    """Resolve the user, set limits and privileges, load the seccomp filter, and ``execve``
    (does not return)."""
    user = read_user(process.user, primary_in_groups=process.primary_in_groups,
                     add_groups=process.add_groups)
    env = final_env(process, user)
    set_rlimits(process)
    enter_cwd(process.cwd)
    path = find_executable(process.args[0], env)
    os.umask(0o022)
    default_signals(sys)
    confine(sys, process, user, last_cap, seccomp_bpf)
    try:
        os.execve(path, list(process.args), env)
    except PermissionError as e:
        raise CommandNotExecutable(f'exec: "{process.args[0]}": permission denied') from e
    except FileNotFoundError as e:
        raise CommandNotFound(f'exec: "{process.args[0]}": no such file or directory') from e
    except OSError as e:
        raise CommandNotExecutable(f'exec: "{process.args[0]}": {e.strerror}') from e
