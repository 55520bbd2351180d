"""Rootless mode: an ordinary user's pybuild runs as root of a user namespace of the user's own.

The user's first command starts a *keeper*: a small process whose only job is to hold a user
namespace, mapped with ``newuidmap``/``newgidmap`` from ``/etc/subuid`` and ``/etc/subgid``
(ID 0 is the user, 1..N the user's range, as rootless Podman maps it). Every command joins it
(``enter``, from ``builder.cli.main``) before it does anything else, so the rest of pybuild runs
unchanged as "root": unpacked layers carry the image's owners (stored as the mapped host IDs),
the kernel's overlayfs mounts, and the sandboxes of detached containers live in the one
namespace later commands join (``exec``, ``stop``). The keeper also holds the user's network
namespace, where user-defined networks live (``builder.network.rootless``). ``system reset`` ends
the keeper, and that namespace's slirp4netns with it.

Without sub-ID ranges the namespace maps only the user (a one-line warning says how to add
ranges); an image file owned by another ID then fails to unpack with an error naming it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from builder.base import syscalls as sc
from builder.base.errors import SandboxError

#: set (to ``uid:gid`` of the host user) in a process that runs inside the keeper's namespace
ENV = "_PYBUILD_ROOTLESS"
#: the user's range needed for images with other owners than root (Podman's default size)
DEFAULT_RANGE = 65536
SUBUID = Path("/etc/subuid")
SUBGID = Path("/etc/subgid")


@dataclass(frozen=True)
class IdMap:
    """One line of a ``uid_map``: ``count`` IDs from ``inside`` map to host IDs from ``outside``."""

    inside: int
    outside: int
    count: int


def active() -> bool:
    """Whether this process is pybuild running rootless (inside the keeper's namespace)."""
    return ENV in os.environ


def host_ids() -> tuple[int, int]:
    """``(uid, gid)`` of the user on the host: what the namespace's root maps to."""
    v = os.environ.get(ENV)
    if v:
        uid, _, gid = v.partition(":")
        return int(uid), int(gid)
    return os.getuid(), os.getgid()


def home() -> Path:
    uid, _ = host_ids()
    env = os.environ.get("HOME")
    if env:
        return Path(env)
    return Path(pwd.getpwuid(uid).pw_dir)


def data_home() -> Path:
    """``$XDG_DATA_HOME/pybuild``, else ``~/.local/share/pybuild``: a rootless default root."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else home() / ".local" / "share"
    return base / "pybuild"


def runtime_dir() -> Path:
    """``$XDG_RUNTIME_DIR/pybuild``, else a private ``/tmp/pybuild-run-<uid>`` (mode 0700,
    refused when another user owns it or can enter it)."""
    uid, _ = host_ids()
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg) and os.path.isdir(xdg) and os.access(xdg, os.W_OK | os.X_OK):
        d = Path(xdg) / "pybuild"
        d.mkdir(mode=0o700, exist_ok=True)
        return d
    d = Path(f"/tmp/pybuild-run-{uid}")
    with contextlib.suppress(FileExistsError):
        d.mkdir(mode=0o700)
    st = os.lstat(d)
    own = 0 if active() else uid  # inside the namespace the user shows as 0
    if not os.path.isdir(d) or os.path.islink(d) or st.st_uid != own or st.st_mode & 0o077:
        raise SandboxError(f"rootless: {d} is not a private directory of uid {uid} "
                           "(set XDG_RUNTIME_DIR or remove it)")
    return d


def sub_ranges(path: Path, name: str, ident: int) -> list[IdMap]:
    """The ranges of *name* (or of its number *ident*) in ``/etc/subuid``-style *path*,
    numbered from 1 inside (0 is the user itself)."""
    out: list[IdMap] = []
    try:
        text = path.read_text()
    except OSError:
        return out
    inside = 1
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) != 3 or parts[0] not in (name, str(ident)):
            continue
        try:
            start, count = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if count > 0:
            out.append(IdMap(inside, start, count))
            inside += count
    return out


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def mappings() -> tuple[list[IdMap], list[IdMap]]:
    """The uid and gid maps of the keeper's namespace for this user."""
    uid, gid = host_ids()
    name = _user_name(uid)
    return ([IdMap(0, uid, 1), *sub_ranges(SUBUID, name, uid)],
            [IdMap(0, gid, 1), *sub_ranges(SUBGID, name, uid)])


def no_ranges_warning() -> str | None:
    """A one-line warning when the user has no sub-ID ranges (only its own ID maps)."""
    uids, gids = mappings()
    if len(uids) > 1 and len(gids) > 1:
        return None
    name = _user_name(host_ids()[0])
    return (f"WARNING: rootless: no sub-ID ranges for {name} in {SUBUID} and {SUBGID}: only "
            f"uid/gid 0 maps, images with other owners fail (add them: "
            f"usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {name})")


def _map_args(maps: list[IdMap]) -> list[str]:
    return [str(v) for m in maps for v in (m.inside, m.outside, m.count)]


def _write_maps(pid: int) -> None:
    uids, gids = mappings()
    if len(uids) > 1 and len(gids) > 1:
        for tool, maps in (("newuidmap", uids), ("newgidmap", gids)):
            r = subprocess.run([tool, str(pid), *_map_args(maps)], capture_output=True, text=True)
            if r.returncode != 0:
                raise SandboxError(f"rootless: {tool} failed: {r.stderr.strip() or r.returncode} "
                                   f"(check {SUBUID} and {SUBGID}, and that {tool} is setuid)")
        return
    # no ranges: the one mapping an unprivileged process may write itself
    Path(f"/proc/{pid}/uid_map").write_text(f"0 {uids[0].outside} 1\n")
    Path(f"/proc/{pid}/setgroups").write_text("deny\n")
    Path(f"/proc/{pid}/gid_map").write_text(f"0 {gids[0].outside} 1\n")


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]  # a dead keeper not yet reaped


def _keeper_main(ready_w: int, go_r: int) -> None:  # pragma: no cover - the keeper process
    try:
        os.setsid()
        sc.real().unshare(sc.CLONE_NEWUSER)
        os.write(ready_w, b"1")
        if os.read(go_r, 1) != b"1":
            os._exit(1)
        # mapped now, so root here: a mount namespace of the user's, which every command joins
        # (netns files and the mounts of detached containers' networks are seen by the next),
        # and the user's network namespace, where user-defined networks' bridges live
        # (builder.network.rootless; commands do not join it, a thread of theirs does)
        sc.real().unshare(sc.CLONE_NEWNS | sc.CLONE_NEWNET)
        os.write(ready_w, b"2")
        os.close(ready_w)
        os.closerange(0, 1 << 16)
        fd = os.open("/dev/null", os.O_RDWR)
        for i in (0, 1, 2):
            os.dup2(fd, i)
        os.chdir("/")
        for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_IGN)
        # named for `ps` (not the command line of the command that started it), then idle
        with contextlib.suppress(OSError):
            os.execv("/bin/sleep", ["pybuild-rootless-keeper", "infinity"])
        while True:
            signal.pause()
    finally:
        os._exit(0)


def _why_no_userns() -> str:
    """The sysctl that forbids user namespaces here, as ``name is value``."""
    for name in ("kernel.unprivileged_userns_clone", "user.max_user_namespaces"):
        with contextlib.suppress(OSError):
            if Path("/proc/sys", *name.split(".")).read_text().strip() == "0":
                return f"{name} is 0"
    return "the kernel refused it"


def _chroot_asked() -> bool:
    argv = sys.argv[1:]
    return (os.environ.get("PYBUILD_ISOLATION") == "chroot" or "--isolation=chroot" in argv
            or any(a == "--isolation" and b == "chroot" for a, b in zip(argv, argv[1:], strict=False)))


def no_userns_error() -> str:
    """One line for an ordinary user on a host that allows no user namespace (issue 17)."""
    why = _why_no_userns()
    if _chroot_asked():  # Buildah's chroot isolation still chroots: CAP_SYS_CHROOT
        return (f"rootless: --isolation chroot needs CAP_SYS_CHROOT, which an ordinary user has only "
                f"in a user namespace, and none can be made here ({why}): build as root")
    return (f"rootless: cannot create a user namespace ({why}; as root: sysctl -w "
            f"user.max_user_namespaces=15000 kernel.unprivileged_userns_clone=1): pybuild cannot run "
            f"as an ordinary user here")


def _start_keeper() -> int:
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the keeper
        os.close(ready_r)
        os.close(go_w)
        _keeper_main(ready_w, go_r)
    os.close(ready_w)
    os.close(go_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise SandboxError(no_userns_error())
        _write_maps(pid)
        os.write(go_w, b"1")
        if os.read(ready_r, 1) != b"2":
            raise SandboxError("rootless: the namespace keeper failed to make its mount namespace")
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    finally:
        os.close(ready_r)
        os.close(go_w)
    return pid


def keeper_pid() -> int | None:
    """The running keeper of this user, if any (its pid file checked against its start time)."""
    try:
        pid_s, start = (runtime_dir() / "keeper.pid").read_text().split()
        pid = int(pid_s)
    except (OSError, ValueError):
        return None
    return pid if _start_time(pid) == start else None


def enter() -> None:
    """Join (starting it when needed) this user's keeper namespace; a no-op for root and for a
    process already inside. Call before any thread starts (``setns`` of a user namespace)."""
    if os.geteuid() == 0 or active():
        return
    uid, gid = os.getuid(), os.getgid()
    rdir = runtime_dir()
    lock = os.open(rdir / "keeper.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pid = keeper_pid()
        if pid is None:
            warning = no_ranges_warning()
            if warning:
                print(warning, file=sys.stderr)
            pid = _start_keeper()
            start = _start_time(pid)
            (rdir / "keeper.pid").write_text(f"{pid} {start}\n")
            # reaped by init once we exit: the keeper is our child only until then
        fds = [os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC) for ns in ("user", "mnt")]
        cwd = os.getcwd()
        try:
            sc.real().setns(fds[0], sc.CLONE_NEWUSER)
            sc.real().setns(fds[1], sc.CLONE_NEWNS)  # leaves us at its root: back to where we were
        finally:
            for fd in fds:
                os.close(fd)
        with contextlib.suppress(OSError):
            os.chdir(cwd)
    finally:
        os.close(lock)
    os.environ[ENV] = f"{uid}:{gid}"


def _members(ns: str) -> list[int]:
    """Pids of the live processes in user namespace *ns* (``user:[inode]``) that we can see
    (a zombie no parent reaped yet holds nothing)."""
    out = []
    for e in os.scandir("/proc"):
        if e.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{e.name}/ns/user") == ns and _start_time(int(e.name)):
                    out.append(int(e.name))
    return out


def _serving(pid: int, members: list[int]) -> list[int]:
    """Those of *members* that are the slirp4netns of keeper *pid*'s network namespace."""
    mark = f"/proc/{pid}/ns/net".encode()
    out = []
    for m in members:
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{m}/cmdline").read_bytes().split(b"\0")
            if os.path.basename(argv[0]) == b"slirp4netns" and mark in argv:
                out.append(m)
    return out


def stop_keeper(*, only_idle: bool = True) -> bool:
    """End this user's keeper (``system reset``), and the slirp4netns of its network
    namespace, when no other process is in its namespace (*only_idle*: a container of another
    root still running keeps it), so nothing of the user's stays behind. True when it was ended."""
    pid = keeper_pid()
    if pid is None:
        return False
    try:
        members = _members(os.readlink(f"/proc/{pid}/ns/user"))
    except OSError:
        members = []
    serving = _serving(pid, members)
    if only_idle and set(members) - {pid, os.getpid(), *serving}:
        return False
    for p in [*serving, pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    with contextlib.suppress(OSError):
        (runtime_dir() / "keeper.pid").unlink()
    return True


def info_fields(driver: str, base: Mapping[str, object], sub: Path | None,
                have: list[str]) -> dict[str, object]:
    """What ``info`` says differently rootless: the overlay *driver* chosen at run time
    (``rootfs.overlay_driver``), the limits the delegated cgroup v2 subtree *sub* allows (its
    controllers *have*: ``sandbox.delegated.controllers``), ``rootless`` among the security
    options, and why when something is missing."""
    uids, gids = mappings()
    status = base.get("DriverStatus")
    warnings = [w for w in (no_ranges_warning(),) if w]
    if driver == "copy":
        warnings.append("WARNING: rootless: no overlay (neither the kernel's in a user namespace nor "
                        "fuse-overlayfs with a usable /dev/fuse): roots are copied")
    if not {"memory", "cpu", "pids"} <= set(have):
        where = f"{sub} has {' '.join(have) or 'no controllers'}" if sub else "none is delegated to this user"
        warnings.append(f"WARNING: rootless: resource limits need a delegated cgroup v2 subtree with "
                        f"the memory, cpu and pids controllers ({where}): the flags they need are refused")
    return {
        "Driver": {"overlay": "overlay", "copy": "vfs"}.get(driver, driver),
        "DriverStatus": [*(status if isinstance(status, list) else []),
                         ["Rootless Overlay", {"overlay": "kernel overlayfs (userxattr)"}.get(driver, driver)],
                         ["UID Map", " ".join(f"{m.inside}:{m.outside}:{m.count}" for m in uids)],
                         ["GID Map", " ".join(f"{m.inside}:{m.outside}:{m.count}" for m in gids)]],
        "CgroupDriver": "cgroupfs" if have else "none", "MemoryLimit": "memory" in have,
        "CpuCfsPeriod": "cpu" in have, "CpuCfsQuota": "cpu" in have, "CPUShares": "cpu" in have,
        "CPUSet": "cpuset" in have, "PidsLimit": "pids" in have,
        "SecurityOptions": ["name=cgroupns", "name=rootless"],
        "Warnings": warnings,
    }


def socket_path() -> Path:
    """``pybuild serve``'s default socket: ``$XDG_RUNTIME_DIR/pybuild.sock``, else in the
    private runtime directory."""
    rdir = runtime_dir()
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    return rdir.parent / "pybuild.sock" if xdg and rdir.parent == Path(xdg) else rdir / "pybuild.sock"
