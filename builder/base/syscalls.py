"""The only module that reaches libc (through ctypes): namespaces, mounts, pivot_root, capabilities.

``Syscalls`` is the real implementation; ``FakeSyscalls`` records every call so that the
spec → actions code of ``builder.core.sandbox`` can be tested without privileges.
"""

from __future__ import annotations

import _signal  # not signal (its enums): a number
import _thread  # not threading (~1.5 ms at start-up): one short-lived thread, below
import contextlib
import ctypes
import errno
import fcntl
import os
import struct
import sys
from collections.abc import Callable

from builder.base.values import frozen

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    T = TypeVar("T")

# -- constants (x86_64 / generic Linux ABI) ------------------------------------------------------
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24

MNT_FORCE = 1
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_SYS_PIVOT_ROOT = 155  # x86_64
_SYS_CAPGET = 125
_SYS_CAPSET = 126
_SYS_RT_SIGACTION = 13  # x86_64
_SYS_CLONE3 = 435  # the same number on every architecture (Linux 5.3)
CLONE_INTO_CGROUP = 0x200000000  # Linux 5.7
_INT_MAX = 0x7FFFFFFF
_SIG_IGN = 1

TIOCSCTTY = 0x540E
TIOCSPTLCK = 0x40045431
TIOCGPTN = 0x80045430
TIOCGWINSZ = 0x5413
TIOCSWINSZ = 0x5414
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_AF_INET = 2
_SOCK_DGRAM = 2  # (SOCK_CLOEXEC is O_CLOEXEC)

#: mount option words → (flag, clear?) as mount(8) understands them
MOUNT_FLAGS: dict[str, tuple[int, bool]] = {
    "ro": (MS_RDONLY, False),
    "rw": (MS_RDONLY, True),
    "nosuid": (MS_NOSUID, False),
    "suid": (MS_NOSUID, True),
    "nodev": (MS_NODEV, False),
    "dev": (MS_NODEV, True),
    "noexec": (MS_NOEXEC, False),
    "exec": (MS_NOEXEC, True),
    "sync": (MS_SYNCHRONOUS, False),
    "async": (MS_SYNCHRONOUS, True),
    "dirsync": (MS_DIRSYNC, False),
    "noatime": (MS_NOATIME, False),
    "atime": (MS_NOATIME, True),
    "nodiratime": (MS_NODIRATIME, False),
    "relatime": (MS_RELATIME, False),
    "strictatime": (MS_STRICTATIME, False),
    "bind": (MS_BIND, False),
    "rbind": (MS_BIND | MS_REC, False),
}

PROPAGATION_FLAGS: dict[str, int] = {
    "private": MS_PRIVATE,
    "rprivate": MS_PRIVATE | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
    "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC,
    "unbindable": MS_UNBINDABLE,
    "runbindable": MS_UNBINDABLE | MS_REC,
}


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


class _CloneArgs(ctypes.Structure):
    """``struct clone_args`` up to ``cgroup`` (``CLONE_ARGS_SIZE_VER2``, 88 bytes)."""

    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size", "tls",
        "set_tid", "set_tid_size", "cgroup")]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


@frozen
class CapSets:
    """Capability bit masks (bit n = capability number n)."""

    effective: int
    permitted: int
    inheritable: int


def _oserror(name: str, detail: str = "") -> OSError:
    err = ctypes.get_errno()
    what = f"{name}({detail})" if detail else name
    return OSError(err, f"{what}: {os.strerror(err)}")


class Syscalls:
    """The real kernel calls. Every method raises ``OSError`` with the call named in the message."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.mount.argtypes = [
            ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p,
        ]
        self._libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        self._libc.unshare.argtypes = [ctypes.c_int]
        self._libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
        self._libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        self._libc.prctl.argtypes = [
            ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
        ]
        self._libc.syscall.restype = ctypes.c_long
        self._gil_libc: Any = None

    # -- namespaces ----------------------------------------------------------------------------
    def unshare(self, flags: int) -> None:
        if self._libc.unshare(flags) != 0:
            raise _oserror("unshare", hex(flags))

    def setns(self, fd: int, nstype: int = 0) -> None:
        if self._libc.setns(fd, nstype) != 0:
            raise _oserror("setns", str(nstype))

    # -- mounts --------------------------------------------------------------------------------
    def mount(
        self, source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None
    ) -> None:
        enc = os.fsencode
        rc = self._libc.mount(
            enc(source) if source is not None else None,
            enc(target),
            enc(fstype) if fstype is not None else None,
            flags,
            enc(data) if data is not None else None,
        )
        if rc != 0:
            raise _oserror("mount", f"{fstype or source} on {target}")

    def umount2(self, target: str, flags: int = 0) -> None:
        if self._libc.umount2(os.fsencode(target), flags) != 0:
            raise _oserror("umount2", target)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        rc = self._libc.syscall(
            _SYS_PIVOT_ROOT, ctypes.c_char_p(os.fsencode(new_root)), ctypes.c_char_p(os.fsencode(put_old))
        )
        if rc != 0:
            raise _oserror("pivot_root", new_root)

    def sethostname(self, name: str) -> None:
        b = name.encode()
        if self._libc.sethostname(b, len(b)) != 0:
            raise _oserror("sethostname", name)

    # -- process attributes --------------------------------------------------------------------
    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
        rc = int(self._libc.prctl(option, arg2, arg3, arg4, arg5))
        if rc < 0:
            raise _oserror("prctl", str(option))
        return rc

    def default_if_ignored(self, sig: int) -> None:
        """Set *sig* back to its default action if it is ignored, through the raw
        ``rt_sigaction`` call: the C library refuses the signals it keeps for itself (32, 33),
        which a parent such as GNU make leaves ignored, and an ignored signal survives exec."""
        act = (ctypes.c_ulong * 4)()  # handler SIG_DFL, flags, restorer, mask: all zero
        old = (ctypes.c_ulong * 4)()
        if self._libc.syscall(_SYS_RT_SIGACTION, sig, None, ctypes.byref(old), 8) != 0:
            raise _oserror("rt_sigaction", str(sig))
        if old[0] == _SIG_IGN and self._libc.syscall(_SYS_RT_SIGACTION, sig, ctypes.byref(act), None, 8) != 0:
            raise _oserror("rt_sigaction", str(sig))

    def capget(self) -> CapSets:
        hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        if self._libc.syscall(_SYS_CAPGET, ctypes.byref(hdr), ctypes.byref(data)) != 0:
            raise _oserror("capget")
        return CapSets(
            effective=data[0].effective | data[1].effective << 32,
            permitted=data[0].permitted | data[1].permitted << 32,
            inheritable=data[0].inheritable | data[1].inheritable << 32,
        )

    def capset(self, caps: CapSets) -> None:
        hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        for i in (0, 1):
            shift = 32 * i
            data[i].effective = (caps.effective >> shift) & 0xFFFFFFFF
            data[i].permitted = (caps.permitted >> shift) & 0xFFFFFFFF
            data[i].inheritable = (caps.inheritable >> shift) & 0xFFFFFFFF
        if self._libc.syscall(_SYS_CAPSET, ctypes.byref(hdr), ctypes.byref(data)) != 0:
            raise _oserror("capset")

    def capbset_drop(self, cap: int) -> None:
        self.prctl(PR_CAPBSET_DROP, cap)

    def capbset_read(self, cap: int) -> bool:
        return self.prctl(PR_CAPBSET_READ, cap) == 1

    def seccomp_filter(self, program: bytes) -> None:
        """Install a classic-BPF seccomp filter (``struct sock_filter`` array) on this thread."""
        buf = ctypes.create_string_buffer(program, len(program))
        prog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
        rc = self._libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0)
        if rc != 0:
            raise _oserror("seccomp", f"{len(program) // 8} instructions")

    # -- processes -----------------------------------------------------------------------------
    def fork_into_cgroup(self, cgroup_fd: int) -> int:
        """``os.fork``, the child born in the cgroup v2 directory open as *cgroup_fd*
        (``clone3`` with ``CLONE_INTO_CGROUP``): no move through ``cgroup.procs``, whose lock
        makes its first writer sleep an RCU grace period (~10-17 ms) while it holds the
        ``cgroup_mutex`` every other cgroup write then waits for. Python's own fork bookkeeping
        (``PyOS_BeforeFork`` and the two ``AfterFork``) is made around the call as ``os.fork``
        makes it; the C library's ``fork`` handlers are not: call it only from a process with
        one thread (a sandbox's helper). ``OSError`` with no child made where the kernel or a
        seccomp filter refuses it (``ENOSYS``, ``EINVAL`` before 5.7, ``EBADF``…)."""
        sys.audit("os.fork")
        args = _CloneArgs(flags=CLONE_INTO_CGROUP, exit_signal=_signal.SIGCHLD, cgroup=cgroup_fd)
        api = ctypes.pythonapi  # a PyDLL: the calls below hold the GIL, as os.fork does
        api.PyOS_BeforeFork()
        pid = self._libc_gil().syscall(_SYS_CLONE3, ctypes.byref(args), ctypes.sizeof(args))
        if pid == 0:
            api.PyOS_AfterFork_Child()
            return 0
        err = ctypes.get_errno()
        api.PyOS_AfterFork_Parent()
        if pid < 0:
            raise OSError(err, f"clone3(CLONE_INTO_CGROUP): {os.strerror(err)}")
        return int(pid)

    def _libc_gil(self) -> Any:
        """libc through a ``PyDLL``: a call keeps the GIL (a ``CDLL`` call lets it go)."""
        if self._gil_libc is None:
            self._gil_libc = ctypes.PyDLL(None, use_errno=True)
            self._gil_libc.syscall.restype = ctypes.c_long
        return self._gil_libc

    # -- plain os wrappers, here so that the fake can record them ------------------------------
    def mknod(self, path: str, mode: int, device: int = 0) -> None:
        os.mknod(path, mode, device)

    def chdir(self, path: str) -> None:
        os.chdir(path)

    def chroot(self, path: str) -> None:
        os.chroot(path)

    def symlink(self, target: str, path: str) -> None:
        os.symlink(target, path)

    def set_loopback_up(self) -> None:
        """``ip link set lo up`` in the current network namespace, through an ioctl."""
        # the socket from libc, not ``socket`` nor ``_socket``: this runs in the container's
        # init before exec, where importing either is a cost of every start
        fd = self._libc.socket(_AF_INET, _SOCK_DGRAM | os.O_CLOEXEC, 0)
        if fd < 0:
            raise _oserror("socket", "AF_INET, SOCK_DGRAM")
        try:
            ifr = struct.pack("16sH14x", b"lo", 0)
            flags = struct.unpack("16sH14x", fcntl.ioctl(fd, SIOCGIFFLAGS, ifr))[1]
            fcntl.ioctl(fd, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))
        finally:
            os.close(fd)

    def set_controlling_tty(self, fd: int) -> None:
        os.setsid()
        fcntl.ioctl(fd, TIOCSCTTY, 0)

    def get_winsize(self, fd: int) -> tuple[int, int]:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, TIOCGWINSZ, b"\0" * 8))
        return rows, cols

    def open_pty(self, ptmx: str = "/dev/ptmx") -> tuple[int, str]:
        """A new pty from the devpts instance behind *ptmx*: (master fd, slave path)."""
        master = os.open(ptmx, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))  # unlockpt
            n = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0" * 4))[0]
        except OSError:
            os.close(master)
            raise
        return master, os.path.join(os.path.dirname(os.path.realpath(ptmx)), str(n))

    def set_winsize(self, fd: int, rows: int, cols: int) -> None:
        fcntl.ioctl(fd, TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class FakeSyscalls:
    """Records calls instead of making them: ``calls`` is a list of ``(name, args…)`` tuples;
    *fail* maps a call's name to the errno it raises."""

    def __init__(self, *, caps: CapSets | None = None, fail: dict[str, int] | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.caps = caps if caps is not None else CapSets((1 << 41) - 1, (1 << 41) - 1, 0)
        self.fail: dict[str, int] = fail if fail is not None else {}

    def _rec(self, name: str, *args: Any) -> None:
        self.calls.append((name, *args))
        if name in self.fail:
            raise OSError(self.fail[name], f"{name}: {os.strerror(self.fail[name])}")

    def unshare(self, flags: int) -> None:
        self._rec("unshare", flags)

    def setns(self, fd: int, nstype: int = 0) -> None:
        self._rec("setns", fd, nstype)

    def mount(
        self, source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None
    ) -> None:
        self._rec("mount", source, target, fstype, flags, data)

    def umount2(self, target: str, flags: int = 0) -> None:
        self._rec("umount2", target, flags)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        self._rec("pivot_root", new_root, put_old)

    def sethostname(self, name: str) -> None:
        self._rec("sethostname", name)

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
        self._rec("prctl", option, arg2)
        return 0

    def default_if_ignored(self, sig: int) -> None:
        self._rec("default_if_ignored", sig)

    def capget(self) -> CapSets:
        return self.caps

    def capset(self, caps: CapSets) -> None:
        self._rec("capset", caps)
        self.caps = caps

    def capbset_drop(self, cap: int) -> None:
        self._rec("capbset_drop", cap)

    def capbset_read(self, cap: int) -> bool:
        return True

    def seccomp_filter(self, program: bytes) -> None:
        self._rec("seccomp_filter", len(program))

    def mknod(self, path: str, mode: int, device: int = 0) -> None:
        self._rec("mknod", path, mode, device)

    def chdir(self, path: str) -> None:
        self._rec("chdir", path)

    def chroot(self, path: str) -> None:
        self._rec("chroot", path)

    def symlink(self, target: str, path: str) -> None:
        self._rec("symlink", target, path)

    def set_loopback_up(self) -> None:
        self._rec("set_loopback_up")

    def set_controlling_tty(self, fd: int) -> None:
        self._rec("set_controlling_tty", fd)

    def get_winsize(self, fd: int) -> tuple[int, int]:
        return 24, 80

    def open_pty(self, ptmx: str = "/dev/ptmx") -> tuple[int, str]:
        self._rec("open_pty", ptmx)
        return 99, "/dev/pts/0"

    def set_winsize(self, fd: int, rows: int, cols: int) -> None:
        self._rec("set_winsize", fd, rows, cols)


_REAL: Syscalls | None = None


def real() -> Syscalls:
    """The process-wide real implementation (libc is opened once)."""
    global _REAL
    if _REAL is None:
        _REAL = Syscalls()
    return _REAL


_CLONE_INTO_CGROUP: bool | None = None


def clone_into_cgroup_works() -> bool:
    """Whether this kernel, under this process's seccomp filter, has ``clone3`` with
    ``CLONE_INTO_CGROUP`` (``Syscalls.fork_into_cgroup``); asked once per process, by a call
    no kernel can grant: into the cgroup of an fd that cannot be open (``EBADF`` means yes;
    ``ENOSYS``: no ``clone3`` or a filter refusing it, as Docker's default profile does;
    ``EINVAL``: a kernel before 5.7)."""
    global _CLONE_INTO_CGROUP
    if _CLONE_INTO_CGROUP is None:
        args = _CloneArgs(flags=CLONE_INTO_CGROUP, exit_signal=_signal.SIGCHLD, cgroup=_INT_MAX)
        libc = real()._libc
        pid = libc.syscall(_SYS_CLONE3, ctypes.byref(args), ctypes.sizeof(args))
        if pid == 0:  # pragma: no cover - made a child after all: it must not run on
            os._exit(0)
        if pid > 0:  # pragma: no cover
            os.waitpid(pid, 0)
        _CLONE_INTO_CGROUP = pid < 0 and ctypes.get_errno() == errno.EBADF
    return _CLONE_INTO_CGROUP


#: the C library's own signals (SIGCANCEL, SIGSETXID): Python's ``signal`` module cannot set them
LIBC_SIGNALS = (32, 33)


def default_libc_signals() -> None:
    """The C library's own signals back to default where a parent (GNU make) left them
    ignored: for a process about to exec another runtime (runc, dockerd), which would pass
    the ignored signal on to what it starts. Safe as a ``preexec_fn``."""
    for sig in LIBC_SIGNALS:
        with contextlib.suppress(OSError):
            real().default_if_ignored(sig)


def private_mount_namespace(s: Syscalls | FakeSyscalls) -> None:
    """In a forked child: a mount namespace of its own whose mounts are all private, so what
    it mounts never reaches the host and goes away when the child exits."""
    s.unshare(CLONE_NEWNS)
    s.mount(None, "/", None, MS_REC | MS_PRIVATE)


def in_network_namespace(netns: str | os.PathLike[str], fn: Callable[[], T]) -> T:
    """``fn()`` in a short-lived thread that joins the network namespace *netns* names (the
    caller's threads stay where they are; a socket or a ``/proc/sys/net`` file opened there
    stays bound to that namespace). What it raises is raised here."""
    out: list[T] = []
    err: list[BaseException] = []
    done = _thread.allocate_lock()  # held until the thread's work is over
    done.acquire()

    def work() -> None:
        try:
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                real().setns(fd, CLONE_NEWNET)
            finally:
                os.close(fd)
            out.append(fn())
        except BaseException as e:  # noqa: BLE001 (re-raised in the caller)
            err.append(e)
        finally:
            done.release()

    _thread.start_new_thread(work, ())
    done.acquire()
    if err:
        raise err[0]
    return out[0]


def is_mount_error_unsupported(e: OSError) -> bool:
    """Whether a mount failure means "this filesystem cannot do that here" rather than a bug."""
    return e.errno in (errno.ENODEV, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EPERM)
