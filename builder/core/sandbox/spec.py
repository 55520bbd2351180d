"""The declarative sandbox spec: frozen values for the process, mounts, namespaces, resources.

Nothing here acts: ``builder.core.sandbox.child`` turns a ``Spec`` into kernel calls, and
``builder.core.sandbox.oci`` writes it as an OCI runtime-spec ``config.json``. The values are
``builder.base.values.frozen`` ones, not dataclasses: every ``run`` and RUN step makes them, and
a ``@dataclass`` execs its generated methods at import (``dataclasses`` also loads ``inspect``);
``builder.base.values.replace`` copies one with fields changed.
"""

from __future__ import annotations

import os
import re

from builder.base.errors import SandboxError
from builder.base.values import field, frozen

TYPE_CHECKING = False
if TYPE_CHECKING:  # (rootfs and layers are not loaded by what only reads a spec or cgroups)
    from builder.core.rootfs import Root
    from builder.core.sandbox.seccomp import Profile, ProfileFile

#: Docker's default capability set; everything else is dropped from every set.
DEFAULT_CAPS: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)

CAP_NUMBERS: dict[str, int] = {
    name: i for i, name in enumerate((
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
        "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
        "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
        "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
        "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
        "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
        "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
        "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
        "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
    ))
}

#: runc's (and Docker's) default masked and read-only paths
MASKED_PATHS: tuple[str, ...] = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
)
READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

RLIMIT_NAMES = ("RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_CORE",
                "RLIMIT_RSS", "RLIMIT_NPROC", "RLIMIT_NOFILE", "RLIMIT_MEMLOCK", "RLIMIT_AS",
                "RLIMIT_LOCKS", "RLIMIT_SIGPENDING", "RLIMIT_MSGQUEUE", "RLIMIT_NICE",
                "RLIMIT_RTPRIO", "RLIMIT_RTTIME")


def normalise_cap(name: str) -> str:
    """``net_admin`` / ``NET_ADMIN`` / ``CAP_NET_ADMIN`` → ``CAP_NET_ADMIN`` (``ALL`` kept)."""
    n = name.strip().upper()
    if n == "ALL":
        return n
    if not n.startswith("CAP_"):
        n = "CAP_" + n
    if n not in CAP_NUMBERS:
        raise SandboxError(f"unknown capability {name!r}")
    return n


def capabilities(add: tuple[str, ...] = (), drop: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Docker's ``--cap-add``/``--cap-drop`` over the default set (``ALL`` allowed in both)."""
    adds = [normalise_cap(c) for c in add]
    drops = [normalise_cap(c) for c in drop]
    caps = set(DEFAULT_CAPS)
    if "ALL" in drops:
        caps = set()
    if "ALL" in adds:
        caps = set(CAP_NUMBERS)
    caps |= {c for c in adds if c != "ALL"}
    caps -= {c for c in drops if c != "ALL"}
    return tuple(sorted(caps, key=CAP_NUMBERS.__getitem__))


@frozen
class Rlimit:
    type: str  # "RLIMIT_NOFILE" …
    soft: int
    hard: int


@frozen
class Process:
    """What runs: args, env ("K=V"), cwd, user ("", "name", "uid", "uid:gid", "name:group").

    ``seccomp``: the profile filtering its syscalls (resolved against ``capabilities``), or
    ``None`` for none (unconfined); ``builder.core.sandbox.seccomp.default()`` is Docker's default
    (a ``ProfileFile``: parsed only if its program is not cached).
    ``primary_in_groups``: the primary group is among the supplementary ones, as in a
    ``docker run`` container; BuildKit's RUN steps have only the groups the user is a member of.
    """

    args: tuple[str, ...]
    env: tuple[str, ...] = (f"PATH={DEFAULT_PATH}",)
    cwd: str = "/"
    user: str = ""
    terminal: bool = False
    capabilities: tuple[str, ...] = DEFAULT_CAPS
    no_new_privs: bool = True
    rlimits: tuple[Rlimit, ...] = ()
    seccomp: Profile | ProfileFile | None = None
    primary_in_groups: bool = True
    #: ``--group-add``: more supplementary groups (names in the root's group file, or numbers)
    add_groups: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.args:
            raise SandboxError("no command given")
        if not self.cwd.startswith("/"):
            raise SandboxError(f"working directory {self.cwd!r} is not absolute")
        for r in self.rlimits:
            if r.type not in RLIMIT_NAMES:
                raise SandboxError(f"unknown rlimit {r.type!r}")
        for c in self.capabilities:
            if c not in CAP_NUMBERS:
                raise SandboxError(f"unknown capability {c!r}")


MOUNT_TYPES = ("bind", "tmpfs", "proc", "sysfs", "devpts", "mqueue", "cgroup")


@frozen
class Mount:
    """One mount inside the root: OCI style (``options`` mixes flags and fs data like ``size=``)."""

    destination: str
    type: str
    source: str = ""
    options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.type not in MOUNT_TYPES:
            raise SandboxError(f"unknown mount type {self.type!r} for {self.destination}")
        if not self.destination.startswith("/"):
            raise SandboxError(f"mount destination {self.destination!r} is not absolute")
        if self.type == "bind" and not self.source.startswith("/"):
            raise SandboxError(f"bind mount source {self.source!r} is not an absolute path")


@frozen
class Namespaces:
    """Each of "new", "host", or the path of a namespace file to join (``/proc/PID/ns/net``,
    a netns file the network code made). ``mount`` is always new; ``user`` stays the host's.
    """

    pid: str = "new"
    uts: str = "new"
    ipc: str = "new"
    net: str = "new"
    cgroup: str = "new"

    def __post_init__(self) -> None:
        for kind in ("pid", "uts", "ipc", "net", "cgroup"):
            v = getattr(self, kind)
            if v not in ("new", "host") and not v.startswith("/"):
                raise SandboxError(f"{kind} namespace must be new, host or a path, not {v!r}")


@frozen
class Resources:
    """cgroup limits: memory in bytes (swap: Docker's default of twice that), CPUs, CPU shares,
    pids; ``account``: join the memory, cpu, cpuacct and blkio hierarchies even when unlimited
    (a container's, so ``stats`` can read them and ``update`` limit them live, as Docker's)."""

    memory: int | None = None
    memory_swap: int | None = None
    cpus: float | None = None
    pids: int | None = None
    cpu_shares: int | None = None
    account: bool = False
    #: devices-cgroup rules allowed beyond the defaults (``c 10:229 rwm``), for ``--device``
    device_rules: tuple[str, ...] = ()
    #: ``--cpuset-cpus``: the CPUs its processes may run on (``0-1,3``; "" all)
    cpuset_cpus: str = ""

    def __post_init__(self) -> None:
        for rule in self.device_rules:
            if not re.match(_DEVICE_RULE, rule):
                raise SandboxError(f"bad device cgroup rule {rule!r}")
        if self.memory is not None and self.memory < 6 * 1024 * 1024:
            raise SandboxError("minimum memory limit is 6MB")
        if self.cpus is not None and self.cpus <= 0:
            raise SandboxError("cpus must be positive")
        if self.pids is not None and self.pids == 0:
            raise SandboxError("pids limit must not be 0")
        if self.cpu_shares is not None and self.cpu_shares < 0:
            raise SandboxError("cpu shares must not be negative")

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.memory, self.cpus, self.pids, self.cpu_shares))


_DEVICE_RULE = r"^[cba] (\d+|\*):(\d+|\*) [rwm]{1,3}$"  # compiled on first use (re's cache)


@frozen
class Device:
    """A device node made in the container (``--device``): path, ``c``/``b``, numbers, mode, owner."""

    path: str
    type: str
    major: int
    minor: int
    mode: int = 0o666
    uid: int = 0
    gid: int = 0

    def __post_init__(self) -> None:
        if not self.path.startswith("/") or self.path.rstrip("/") in ("", "/dev"):
            raise SandboxError(f"device path {self.path!r} is not an absolute file path")
        if self.type not in ("c", "b"):
            raise SandboxError(f"device type {self.type!r} is not c or b")


#: the sysctls a sandbox may set: those of its own network and IPC namespaces (Docker's list)
NAMESPACED_SYSCTLS = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                      "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced")


def _size(n: int) -> str:
    return f"size={n // 1024}k" if n % 1024 == 0 else f"size={n}"


def default_mounts(*, terminal: bool = False, shm_size: int = 64 * 1024 * 1024) -> tuple[Mount, ...]:
    """Docker's defaults: /proc, /dev (tmpfs), /dev/pts, /dev/shm, /dev/mqueue, /sys (ro), cgroups (ro)."""
    return (
        Mount("/proc", "proc", "proc", ("nosuid", "noexec", "nodev")),
        Mount("/dev", "tmpfs", "tmpfs", ("nosuid", "strictatime", "mode=755", "size=65536k")),
        Mount("/dev/pts", "devpts", "devpts",
              ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5")),
        Mount("/sys", "sysfs", "sysfs", ("nosuid", "noexec", "nodev", "ro")),
        Mount("/sys/fs/cgroup", "cgroup", "cgroup", ("nosuid", "noexec", "nodev", "relatime", "ro")),
        Mount("/dev/mqueue", "mqueue", "mqueue", ("nosuid", "noexec", "nodev")),
        Mount("/dev/shm", "tmpfs", "shm", ("nosuid", "noexec", "nodev", "mode=1777", _size(shm_size))),
    )


@frozen
class Spec:
    """A whole sandbox. ``mounts`` are applied in order after the root is mounted."""

    process: Process
    root: Root
    mounts: tuple[Mount, ...] = field(default_factory=default_mounts)
    namespaces: Namespaces = Namespaces()
    hostname: str = ""
    resources: Resources = Resources()
    masked_paths: tuple[str, ...] = MASKED_PATHS
    readonly_paths: tuple[str, ...] = READONLY_PATHS
    id: str = ""  # empty: the executor picks one
    #: (key, value) written under /proc/sys in the sandbox's namespaces before anything runs
    sysctls: tuple[tuple[str, str], ...] = ()
    devices: tuple[Device, ...] = ()

    def __post_init__(self) -> None:
        for key, _ in self.sysctls:
            if key not in NAMESPACED_SYSCTLS and not key.startswith(("net.", "fs.mqueue.")):
                raise SandboxError(f"sysctl {key!r} is not namespaced: a sandbox cannot set it")
            if key.startswith("net.") and self.namespaces.net == "host":
                raise SandboxError(f'sysctl "{key}" not allowed in host network namespace')
            if "/" in key or ".." in key:
                raise SandboxError(f"bad sysctl name {key!r}")


#: ``build --isolation chroot`` (as Buildah's ``BUILDAH_ISOLATION``): set in the environment
ISOLATION_ENV = "PYBUILD_ISOLATION"
CHROOT_WARNING = ("WARNING: --isolation chroot: RUN steps run chrooted into the stage's root "
                  "with only a mount namespace of their own: they share the host's network, "
                  "process, IPC and hostname namespaces and its cgroup (no limits); use it only "
                  "where user namespaces are not allowed")


def chroot_isolation() -> bool:
    """Whether RUN steps are isolated as Buildah's ``chroot`` (``build --isolation chroot``)."""
    return os.environ.get(ISOLATION_ENV) == "chroot"


BARE_CHROOT_WARNING = ("WARNING: --isolation chroot without CAP_SYS_ADMIN: RUN steps run only chrooted "
                       "into a copied root: no /proc, /dev or /sys mounted, the host's namespaces, "
                       "no cgroup (no limits), no_new_privs")
#: the capability every namespace and mount needs (``CAP_SYS_ADMIN``)
_CAP_SYS_ADMIN = 21
NO_NAMESPACES = ("cannot create namespaces or mounts: this process lacks CAP_SYS_ADMIN (a container "
                 "without privileges?); build with `pybuild build --isolation chroot`")


def namespaces_allowed() -> bool:
    """Whether this process may make namespaces and mounts (CAP_SYS_ADMIN in its effective set:
    root on a host, rootless pybuild inside its user namespace; not a container without
    privileges)."""
    try:
        with open("/proc/self/status") as f:
            caps = next(line for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration):
        return True
    return bool(int(caps.split()[1], 16) >> _CAP_SYS_ADMIN & 1)


def bare_chroot() -> bool:
    """``--isolation chroot`` where not even a mount namespace can be made: RUN is only
    chrooted into a copied root (no /proc, /dev or /sys mounted, no cgroup, no_new_privs)."""
    return chroot_isolation() and not namespaces_allowed()


def build_namespaces(network: str) -> Namespaces:
    """A RUN step's namespaces: new ones, as BuildKit's (the host's network for ``--network
    host``); with chroot isolation none but the mount namespace (Buildah's ``chroot``)."""
    if chroot_isolation():
        return Namespaces(pid="host", uts="host", ipc="host", net="host", cgroup="host")
    return Namespaces(net="host" if network == "host" else "new")
