"""Parsers for container options: restart policies, signals, sizes, durations, env files, and the
name-resolution, ulimit, sysctl, shm and device flags (``device_nodes`` looks at the host);
``--security-opt`` is ``containers.security``'s.

Every parser raises ``ContainerError`` with a one-line message naming the bad value.
"""

from __future__ import annotations

import _signal  # not signal: its enums cost ~1 ms at import, and a listing names no signal
import contextlib
import ipaddress
import os
import re
import resource
import stat
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from builder.base.errors import ContainerError
from builder.base.units import parse_go_duration, parse_size, rfc3339_ns
from builder.base.values import frozen

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_SHM_SIZE = 64 * 1024 * 1024
#: the PATH a container gets when its image sets none (Docker's)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: ``--ulimit`` names → the kernel's resource names (go-units' table)
ULIMITS = {
    "as": "RLIMIT_AS", "core": "RLIMIT_CORE", "cpu": "RLIMIT_CPU", "data": "RLIMIT_DATA",
    "fsize": "RLIMIT_FSIZE", "locks": "RLIMIT_LOCKS", "memlock": "RLIMIT_MEMLOCK",
    "msgqueue": "RLIMIT_MSGQUEUE", "nice": "RLIMIT_NICE", "nofile": "RLIMIT_NOFILE",
    "nproc": "RLIMIT_NPROC", "rss": "RLIMIT_RSS", "rtprio": "RLIMIT_RTPRIO",
    "rttime": "RLIMIT_RTTIME", "sigpending": "RLIMIT_SIGPENDING", "stack": "RLIMIT_STACK",
}
_DEVICE_MODE = r"^[rwm]{1,3}$"  # patterns are compiled on first use (re's cache), not at import


RESTART_NAMES = ("no", "on-failure", "always", "unless-stopped")


@frozen
class RestartPolicy:
    """``--restart``: Docker's ``HostConfig.RestartPolicy``."""

    name: str = "no"
    maximum_retry_count: int = 0

    def __post_init__(self) -> None:
        if self.name not in RESTART_NAMES:
            raise ContainerError.invalid(f"invalid restart policy {self.name!r}: use no, on-failure[:N], "
                                         "always or unless-stopped")
        if self.maximum_retry_count < 0:
            raise ContainerError.invalid("invalid restart policy: retry count must not be negative")

    @classmethod
    def parse(cls, text: str) -> RestartPolicy:
        name, sep, count = text.partition(":")
        if name == "":
            name = "no"
        if name not in RESTART_NAMES:
            raise ContainerError.invalid(f"invalid restart policy {text!r}: use no, on-failure[:N], always or unless-stopped")
        if sep:
            if name != "on-failure":
                raise ContainerError.invalid(f"invalid restart policy {text!r}: maximum retry count only applies to on-failure")
            try:
                n = int(count)
            except ValueError:
                raise ContainerError.invalid(f"invalid restart policy {text!r}: bad retry count {count!r}") from None
            if n < 0:
                raise ContainerError.invalid(f"invalid restart policy {text!r}: retry count must not be negative")
            return cls(name, n)
        return cls(name, 0)

    def should_restart(self, *, exit_code: int, restarts: int, stopped_by_user: bool) -> bool:
        """Docker's rule, applied when the container's process ends."""
        if stopped_by_user or self.name == "no":
            return False
        if self.name == "on-failure":
            if exit_code == 0:
                return False
            return self.maximum_retry_count == 0 or restarts < self.maximum_retry_count
        return True

    def to_json(self) -> dict[str, Any]:
        return {"Name": self.name, "MaximumRetryCount": self.maximum_retry_count}

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> RestartPolicy:
        """The API's object (a retry count only counts for ``on-failure``, as dockerd keeps it)."""
        d = d or {}
        name = str(d.get("Name") or "no")
        return cls(name, int(d.get("MaximumRetryCount") or 0) if name == "on-failure" else 0)


def flag_error(value: str, flag: str, why: str) -> ContainerError:
    """Docker's CLI wording for a flag value it refuses."""
    return ContainerError.invalid(f'invalid argument "{value}" for "{flag}" flag: {why}')


def valid_device_mode(mode: str) -> bool:
    return bool(re.match(_DEVICE_MODE, mode)) and len(set(mode)) == len(mode)


def parse_signal(text: str | int) -> int:
    """``SIGTERM``, ``TERM``, ``term`` or ``15`` → 15."""
    if isinstance(text, int):
        value = text
    else:
        t = text.strip()
        if t.isdigit():
            value = int(t)
        else:
            name = t.upper()
            if not name.startswith("SIG"):
                name = "SIG" + name
            number = getattr(_signal, name, None)  # signal.Signals' members: SIG*, not SIG_*
            if name.startswith("SIG_") or not isinstance(number, int):
                raise ContainerError.invalid(f"invalid signal: {text}")
            return number
    if not 1 <= value < _signal.NSIG:
        raise ContainerError.invalid(f"invalid signal: {text}")
    return value


def parse_bytes(text: str, *, what: str = "memory") -> int:
    """``64m``, ``1g``, ``512k``, ``1024`` → bytes (binary units, as Docker's ``RAMInBytes``)."""
    size = parse_size(text)
    if size is None:
        raise ContainerError.invalid(f"invalid {what} size {text!r}: use a number with an optional unit b, k, m or g")
    return size


def parse_cpus(text: str) -> int:
    """``--cpus 1.5`` → NanoCpus (1.5e9)."""
    try:
        v = float(text)
    except ValueError:
        raise ContainerError.invalid(f"invalid --cpus value {text!r}: a decimal number of CPUs") from None
    if v < 0:
        raise ContainerError.invalid(f"invalid --cpus value {text!r}: must not be negative")
    return int(round(v * 1e9))


def parse_duration(text: str) -> int:
    """A Go duration (``1m30s``, ``500ms``, ``0``) → nanoseconds."""
    t = text.strip()
    try:
        if t.startswith(("-", "+")):
            raise ValueError(t)
        return parse_go_duration(t)
    except ValueError:
        raise ContainerError.invalid(f"invalid duration {text!r}: use e.g. 30s, 1m30s, 500ms") from None


def rfc3339nano(t: float | None = None, *, ns: int | None = None) -> str:
    """``2024-05-01T12:00:00.123456789Z`` (Docker's timestamp form) of *t* (Unix seconds) or
    *ns* (nanoseconds), now when neither is given."""
    if ns is None:
        ns = time.time_ns() if t is None else int(t * 10**9)
    secs, frac = divmod(ns, 10**9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


ZERO_TIME = "0001-01-01T00:00:00Z"

_TS = (
    r"^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}(?::\d{2})?)(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:?\d{2})?$"
)


def parse_timestamp_ns(text: str, *, now_ns: int | None = None) -> int:
    """``--since``/``--until``: RFC 3339 (date, time, fraction, zone), Unix seconds[.frac], or a
    duration relative to now (``10m``). Returns nanoseconds since the epoch."""
    import datetime as _dt  # run --rm and run -d parse no time: their budget bars datetime

    t = text.strip()
    now = now_ns if now_ns is not None else time.time_ns()
    if re.fullmatch(r"\d+(\.\d{1,9})?", t):
        secs, _, frac = t.partition(".")
        return int(secs) * 10**9 + int((frac or "0").ljust(9, "0"))
    m = re.match(_TS, t)
    if m:
        date, clock, frac, zone = m.groups()
        clock = clock or "00:00:00"
        if clock.count(":") == 1:
            clock += ":00"
        tz: _dt.tzinfo = _dt.UTC
        if zone and zone != "Z":
            z = zone.replace(":", "")
            sign = 1 if z[0] == "+" else -1
            tz = _dt.timezone(sign * _dt.timedelta(hours=int(z[1:3]), minutes=int(z[3:5])))
        elif zone is None and m.group(2) is not None:
            tz = _dt.datetime.now().astimezone().tzinfo or _dt.UTC  # Docker: local time
        base = _dt.datetime.fromisoformat(f"{date}T{clock}").replace(tzinfo=tz)
        return int(base.timestamp()) * 10**9 + int((frac or "0").ljust(9, "0"))
    try:
        return now - parse_duration(t)
    except ContainerError:
        raise ContainerError.invalid(f"invalid time {text!r}: use RFC 3339, a Unix timestamp, or a duration like 10m") from None


def parse_timestamp_text(text: str) -> int:
    """A stored RFC 3339 timestamp (ours: always UTC, ``Z``) → nanoseconds. The form
    ``rfc3339nano`` writes is read without ``datetime`` (``ps`` reads one per container)."""
    if not text or text.startswith("0001-"):
        return 0
    ns = rfc3339_ns(text) if text.endswith("Z") else None
    return parse_timestamp_ns(text) if ns is None else ns  # not a form we write: the full parser


def parse_env(items: Iterable[str], *, environ: Mapping[str, str]) -> list[str]:
    """``-e K=V`` as given; ``-e K`` takes K from the caller's environment (dropped if unset)."""
    out: list[str] = []
    for item in items:
        if not item or item.startswith("="):
            raise ContainerError.invalid(f"invalid environment variable: {item!r}")
        if "=" in item:
            out.append(item)
        elif item in environ:
            out.append(f"{item}={environ[item]}")
    return out


def read_env_file(path: str, *, environ: Mapping[str, str]) -> list[str]:
    """``--env-file``: ``K=V`` lines, ``#`` comments and blank lines skipped, bare ``K`` from the
    caller's environment; values are taken literally (no quotes removed), as Docker does."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ContainerError(f"open {path}: {e.strerror or e}") from None
    out: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        key, sep, _ = line.partition("=")
        if not key or any(c.isspace() for c in key):
            raise ContainerError.invalid(f"{path}:{lineno}: invalid variable name {key!r}")
        if sep:
            out.append(line)
        elif key in environ:
            out.append(f"{key}={environ[key]}")
    return out


def merge_env(image_env: Iterable[str], extra: Iterable[str]) -> list[str]:
    """The image's ENV overridden by ``-e`` entries, keeping the image's order first; an entry
    with no ``=`` (the API's ``Env: ["K"]``) unsets K, as dockerd's ``ReplaceOrAppendEnvValues``."""
    merged: dict[str, str] = {}
    for item in [*image_env, *extra]:
        k, eq, v = item.partition("=")
        if not eq:
            merged.pop(k, None)
            continue
        merged[k] = v
    return [f"{k}={v}" for k, v in merged.items()]


def parse_labels(items: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        k, _, v = item.partition("=")
        if not k:
            raise ContainerError.invalid(f"invalid label {item!r}: use KEY=VALUE")
        out[k] = v
    return out


CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)


def parse_caps(items: Iterable[str]) -> list[str]:
    """``--cap-add NET_ADMIN`` / ``cap_net_admin`` / ``ALL`` → canonical ``CAP_…`` names."""
    out: list[str] = []
    for item in items:
        name = item.strip().upper()
        if name == "ALL":
            out.append("ALL")
            continue
        name = name.removeprefix("CAP_")
        if name not in CAPABILITIES:
            raise ContainerError(f"unknown capability: {item!r}")
        out.append("CAP_" + name)
    return out


# -- name resolution, limits, kernel parameters, devices (run/create flags) ---------------------
def _ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        return None


HOST_GATEWAY = "host-gateway"


def parse_add_hosts(items: Iterable[str]) -> list[str]:
    """``--add-host name:ip`` (``name=ip`` too; ``host-gateway`` for the host's address) →
    Docker's ``ExtraHosts`` entries ``name:ip``."""
    out: list[str] = []
    for item in items:
        sep = ":" if ":" in item and ("=" not in item or item.index(":") < item.index("=")) else "="
        name, found, addr = item.partition(sep)
        if not found or not name or not addr or any(c.isspace() for c in name):
            raise flag_error(item, "--add-host", f'bad format for add-host: "{item}"')
        if addr != HOST_GATEWAY:
            ip = _ip(addr)
            if ip is None:
                raise flag_error(item, "--add-host", f'invalid IP address in add-host: "{addr}"')
            addr = ip
        out.append(f"{name}:{addr}")
    return out


def parse_dns(items: Iterable[str]) -> list[str]:
    """``--dns``: IP addresses only."""
    out = []
    for item in items:
        ip = _ip(item)
        if ip is None:
            raise flag_error(item, "--dns", f"{item} is not an ip address")
        out.append(ip)
    return out


_DOMAIN = (r"^(:?(?:[a-zA-Z0-9]|(?:[a-zA-Z0-9][a-zA-Z0-9\-]*[a-zA-Z0-9]))(:?\.(?:[a-zA-Z0-9]|"
           r"(?:[a-zA-Z0-9][a-zA-Z0-9\-]*[a-zA-Z0-9])))*)\.?\s*$")


def parse_dns_search(items: Iterable[str]) -> list[str]:
    """``--dns-search``: domain names (``.`` alone: no search domains, as Docker)."""
    out = []
    for item in items:
        if item == ".":
            out.append(item)
            continue
        if len(item) > 255 or not re.match(_DOMAIN, item.removesuffix(".")):
            raise flag_error(item, "--dns-search", f"{item} is not a valid domain")
        out.append(item)
    return out


def parse_dns_options(items: Iterable[str]) -> list[str]:
    """``--dns-option``: resolv.conf ``options`` words (``ndots:2``, ``rotate``…)."""
    out = []
    for item in items:
        if not item.strip() or any(c.isspace() for c in item.strip()):
            raise flag_error(item, "--dns-option", f'"{item}" is not a resolv.conf option')
        out.append(item.strip())
    return out


def parse_ulimits(items: Iterable[str]) -> list[tuple[str, int, int]]:
    """``--ulimit nofile=1024:2048`` → (name, soft, hard) (-1 is unlimited; one value sets
    both; ``hostconfig.Ulimit`` checks the rest). The last flag for a name wins, as in Docker."""
    out: dict[str, tuple[str, int, int]] = {}
    for item in items:
        name, sep, limits = item.partition("=")
        if not sep:
            raise flag_error(item, "--ulimit", f"invalid ulimit argument: {item}")
        if name not in ULIMITS:
            raise flag_error(item, "--ulimit", f"invalid ulimit type: {name}")
        parts = limits.split(":")
        if len(parts) > 2:
            raise flag_error(item, "--ulimit",
                             f"too many limit value arguments - {limits}, can only have up to two, `soft[:hard]`")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise flag_error(item, "--ulimit", f"invalid ulimit value {limits!r}: integers expected") from None
        if any(v < -1 for v in values):
            raise flag_error(item, "--ulimit", f"invalid ulimit value {limits!r}: -1 (unlimited) is the lowest")
        out[name] = (name, values[0], values[-1])
    return list(out.values())


def check_ulimits(ulimits: Iterable[tuple[str, int]]) -> None:
    """Refuse a hard limit above the one this process holds: raising it needs CAP_SYS_RESOURCE
    (which this process may not have, in a container or a restricted VM)."""
    have_cap = _has_cap(24)  # CAP_SYS_RESOURCE
    for name, hard in ulimits:
        _soft, held = resource.getrlimit(getattr(resource, ULIMITS[name]))
        if have_cap or held == resource.RLIM_INFINITY:
            continue
        if hard == -1 or hard > held:
            want = "unlimited" if hard == -1 else str(hard)
            raise ContainerError(
                f"--ulimit {name}: hard limit {want} is above the hard limit {held} this process holds; "
                "raising it needs CAP_SYS_RESOURCE, which pybuild does not have here"
            )


def _has_cap(bit: int) -> bool:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> bit & 1)
    except (OSError, ValueError):
        pass
    return False


#: Docker's namespaced sysctls: these names exactly, and these prefixes
IPC_SYSCTLS = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
               "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced")
SYSCTL_PREFIXES = ("net.", "fs.mqueue.")


def parse_sysctls(items: Iterable[str]) -> dict[str, str]:
    """``--sysctl key=value``: only the sysctls a container's own namespaces hold (Docker's list)."""
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise flag_error(item, "--sysctl", f"sysctl '{item}' is not whitelisted")
        pairs.append((key, value))
    return check_sysctls(pairs)


def check_sysctls(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The API's ``Sysctls`` (or the flags' pairs), checked as ``parse_sysctls`` says."""
    out: dict[str, str] = {}
    for key, value in pairs:
        item, key = f"{key}={value}", key.strip()
        if key not in IPC_SYSCTLS and not key.startswith(SYSCTL_PREFIXES):
            raise flag_error(item, "--sysctl", f"sysctl '{item}' is not whitelisted")
        if "/" in key or ".." in key or key.endswith("."):
            raise flag_error(item, "--sysctl", f"sysctl '{item}' is not a valid name")
        out[key] = value
    return out


def parse_devices(items: Iterable[str]) -> list[tuple[str, str, str]]:
    """``--device /dev/x[:/dev/y][:rwm]`` → Docker's ``Devices`` entries (syntax only; the host
    side is looked at by ``device_nodes``)."""
    out = []
    for item in items:
        parts = item.split(":")
        if len(parts) > 3 or not parts[0]:
            raise flag_error(item, "--device", f"invalid device specification: {item}")
        src, dst, perms = parts[0], "", "rwm"
        if len(parts) == 3:
            dst, perms = parts[1], parts[2]
        elif len(parts) == 2:
            if valid_device_mode(parts[1]):
                perms = parts[1]
            else:
                dst = parts[1]
        dst = dst or src
        if not valid_device_mode(perms):
            raise flag_error(item, "--device", f"bad mode specified: {perms}")
        for p in (src, dst):
            if not p.startswith("/"):
                raise flag_error(item, "--device", f"bad format for path: {p}")
        out.append((src, dst, perms))
    return out


@frozen
class DeviceNode:
    """A device node to make in a container: where, what (``c``/``b`` major:minor), its mode
    and owner as on the host, and the cgroup access it is given."""

    path: str
    type: str
    major: int
    minor: int
    mode: int
    uid: int
    gid: int
    permissions: str


def device_nodes(devices: Iterable[tuple[str, str, str]]) -> list[DeviceNode]:
    """The host's device nodes behind ``Devices`` (a directory gives every device under it)."""
    out: list[DeviceNode] = []
    for src, dst, perms in devices:
        try:
            st = os.stat(src)
        except OSError as e:
            # not strerror's "no such file or directory": through the API, the docker CLI would
            # take it for a missing image (404) or a missing command (exit 127)
            why = "it does not exist on this host" if isinstance(e, FileNotFoundError) else (e.strerror or str(e))
            raise ContainerError(f'error gathering device information while adding custom device "{src}": '
                                 f"{why}") from None
        found: list[tuple[str, os.stat_result]] = []
        if stat.S_ISDIR(st.st_mode):
            for dirpath, _dirs, files in os.walk(src):
                for f in sorted(files):
                    p = os.path.join(dirpath, f)
                    with contextlib.suppress(OSError):
                        s = os.lstat(p)
                        if stat.S_ISCHR(s.st_mode) or stat.S_ISBLK(s.st_mode):
                            found.append((dst + p[len(src):], s))
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            found.append((dst, st))
        else:
            raise ContainerError(f'error gathering device information while adding custom device "{src}": '
                                 "not a device node")
        for path, s in found:
            out.append(DeviceNode(path=path, type="c" if stat.S_ISCHR(s.st_mode) else "b",
                                  major=os.major(s.st_rdev), minor=os.minor(s.st_rdev),
                                  mode=stat.S_IMODE(s.st_mode), uid=s.st_uid, gid=s.st_gid, permissions=perms))
    return out


def parse_shm_size(text: str) -> int:
    """``--shm-size 128m`` → bytes (0: Docker's default of 64 MiB)."""
    size = parse_size(text)
    if size is None:
        raise flag_error(text, "--shm-size", f"invalid size: '{text}'")
    return size or DEFAULT_SHM_SIZE
