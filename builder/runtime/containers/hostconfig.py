"""``HostConfig``: what a container is given of the host (mounts, published ports, its network
attachment, restart policy, resources, privileges, name resolution), as one typed value.

It is built once, from either side: the CLI's flags (``create.host_config_of``) or the Engine
API's JSON (``serve.createbody.host_config``); each value checks itself in its constructor (as
docker-py's ``HostConfig`` does), so a ``HostConfig`` that exists is a valid one. The container
record stores it (``Container.host_config``) in Docker's JSON shape (``to_json``); ``from_json``
reads that back, records of earlier versions included (``--mount`` texts, ``PublishSpecs``).

They are ``builder.base.values.frozen`` values, not dataclasses: ``ps`` reads every record's, and a
``@dataclass`` costs ~1 ms a class at import (``replace`` from ``builder.base.values`` copies one).
The values are read by field (``hc.resources.memory``); a read-only ``Mapping`` view of the JSON
form (``hc.get("NetworkMode")``) remains for code that has not moved to the fields yet.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Iterator, Mapping

from builder.base.errors import ContainerError
from builder.base.values import JSONValue, field, frozen, json_object
from builder.runtime.containers.options import (
    DEFAULT_SHM_SIZE,
    ULIMITS,
    RestartPolicy,
    flag_error,
    valid_device_mode,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from builder.runtime.volume.specs import MountSpec

MIN_MEMORY = 6 * 1024 * 1024
_CPUSET = r"^\d+(-\d+)?(,\d+(-\d+)?)*$"
_PORT = r"^(\d+)/(tcp|udp|sctp)$"
MOUNT_TYPES = ("volume", "bind", "tmpfs")
PROPAGATIONS = ("", "private", "rprivate", "shared", "rshared", "slave", "rslave")


@frozen
class PortBinding:
    """One published port as asked: ``80/tcp`` on the host's *host_ip*:*host_port* (``""``:
    any address, a free port)."""

    port: str
    host_ip: str = ""
    host_port: str = ""

    def __post_init__(self) -> None:
        m = re.match(_PORT, self.port)
        if not m or not 0 < int(m.group(1)) < 65536:
            raise ContainerError.invalid(f"invalid port {self.port!r}: PORT/tcp or PORT/udp")
        hp = self.host_port
        if hp and not (hp.isdigit() and 0 <= int(hp) < 65536):
            raise ContainerError.invalid(f"invalid host port {hp!r} for {self.port}")

    @property
    def container_port(self) -> int:
        return int(self.port.partition("/")[0])

    @property
    def protocol(self) -> str:
        return self.port.partition("/")[2]


def port_bindings_json(bindings: Iterable[PortBinding]) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for b in bindings:
        out.setdefault(b.port, []).append({"HostIp": b.host_ip, "HostPort": b.host_port})
    return out


def port_bindings_from_json(d: Mapping[str, Any] | None) -> tuple[PortBinding, ...]:
    """``PortBindings`` (``{"80/tcp": [{"HostIp": …, "HostPort": …}]}``; a port with no list
    is published on a free port)."""
    out: list[PortBinding] = []
    for key, bindings in (d or {}).items():
        port = key if "/" in key else f"{key}/tcp"
        for b in bindings or [{}]:
            out.append(PortBinding(port, str((b or {}).get("HostIp") or ""), str((b or {}).get("HostPort") or "")))
    return tuple(out)


@frozen
class Mount:
    """One ``HostConfig.Mounts`` entry (``--mount``): a volume, bind or tmpfs at *target*."""

    type: str
    target: str
    source: str = ""
    read_only: bool = False
    propagation: str = ""
    nocopy: bool = False
    tmpfs_size: int = 0
    tmpfs_mode: int = 0

    def __post_init__(self) -> None:
        what = f"invalid mount config for type {self.type!r}"
        if self.type not in MOUNT_TYPES:
            raise ContainerError.invalid(f"invalid mount config: mount type unknown: {self.type!r}")
        if not self.target:
            raise ContainerError.invalid("invalid mount config: Target must not be empty")
        if not self.target.startswith("/"):
            raise ContainerError.invalid(f"{what}: invalid mount path: '{self.target}' mount path must be absolute")
        if self.propagation not in PROPAGATIONS:
            raise ContainerError.invalid(f"{what}: invalid propagation mode {self.propagation!r}")
        if self.type == "bind":
            if not self.source:
                raise ContainerError.invalid(f"{what}: field Source must not be empty")
            if self.nocopy or self.tmpfs_size or self.tmpfs_mode:
                raise ContainerError.invalid(f"{what}: volume and tmpfs options do not apply to bind mounts")
        elif self.propagation:
            raise ContainerError.invalid(f"{what}: field BindOptions must not be specified")
        if self.type == "tmpfs" and (self.source or self.nocopy):
            raise ContainerError.invalid(f"{what}: field Source must not be specified")
        if self.type == "volume" and (self.tmpfs_size or self.tmpfs_mode):
            raise ContainerError.invalid(f"{what}: field TmpfsOptions must not be specified")

    def spec(self) -> MountSpec:
        """What ``builder.runtime.volume`` prepares for it."""
        from builder.runtime.volume.specs import MountSpec

        if self.type == "bind":
            return MountSpec("bind", self.target, os.path.normpath(self.source), self.read_only,
                             self.propagation or "rprivate", origin="--mount")
        if self.type == "volume":
            return MountSpec("volume", self.target, self.source, self.read_only, nocopy=self.nocopy, origin="--mount")
        opts = ([f"size={self.tmpfs_size}"] if self.tmpfs_size else []) + \
               ([f"mode={self.tmpfs_mode:o}"] if self.tmpfs_mode else [])
        return MountSpec("tmpfs", self.target, "", self.read_only, tmpfs_options=tuple(opts), origin="--mount")

    @classmethod
    def from_spec(cls, s: MountSpec) -> Mount:
        """A parsed ``--mount`` text."""
        size = mode = 0
        for o in s.tmpfs_options:
            k, _, v = o.partition("=")
            if k == "size":
                size = int(v)
            elif k == "mode":
                mode = int(v, 8)
        return cls(s.type, s.destination, s.source, s.read_only,
                   s.propagation if s.type == "bind" else "", s.nocopy, size, mode)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"Type": self.type, "Source": self.source, "Target": self.target}
        if self.read_only:
            d["ReadOnly"] = True
        if self.propagation:
            d["BindOptions"] = {"Propagation": self.propagation}
        if self.nocopy:
            d["VolumeOptions"] = {"NoCopy": True}
        if self.tmpfs_size or self.tmpfs_mode:
            d["TmpfsOptions"] = {k: v for k, v in (("SizeBytes", self.tmpfs_size), ("Mode", self.tmpfs_mode)) if v}
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | str) -> Mount:
        """The API's object; a record of an earlier version kept the ``--mount`` text."""
        if isinstance(d, str):
            from builder.runtime.volume.specs import parse_mount

            return cls.from_spec(parse_mount(d))
        if not isinstance(d, Mapping):
            raise ContainerError.invalid("invalid mount config: an object is expected")
        bind = d.get("BindOptions") or {}
        vol = d.get("VolumeOptions") or {}
        tmpfs = d.get("TmpfsOptions") or {}
        try:
            return cls(str(d.get("Type") or "volume"), str(d.get("Target") or ""), str(d.get("Source") or ""),
                       bool(d.get("ReadOnly")), str(bind.get("Propagation") or ""), bool(vol.get("NoCopy")),
                       int(tmpfs.get("SizeBytes") or 0), int(tmpfs.get("Mode") or 0))
        except (TypeError, ValueError, AttributeError) as e:
            raise ContainerError.invalid(f"invalid mount config: {e}") from None


@frozen
class Ulimit:
    """``--ulimit name=soft:hard`` (-1: unlimited)."""

    name: str
    soft: int
    hard: int

    def __post_init__(self) -> None:
        text = f"{self.name}={self.soft}:{self.hard}"
        if self.name not in ULIMITS:
            raise flag_error(text, "--ulimit", f"invalid ulimit type: {self.name}")
        if self.soft < -1 or self.hard < -1:
            raise flag_error(text, "--ulimit", f"invalid ulimit value '{self.soft}:{self.hard}': -1 (unlimited) is the lowest")
        if self.hard != -1 and (self.soft == -1 or self.soft > self.hard):
            raise flag_error(text, "--ulimit",
                             f"ulimit soft limit must be less than or equal to hard limit: {self.soft} > {self.hard}")

    def to_json(self) -> dict[str, Any]:
        return {"Name": self.name, "Hard": self.hard, "Soft": self.soft}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Ulimit:
        return cls(str(d["Name"]), int(d["Soft"]), int(d["Hard"]))


@frozen
class Device:
    """``--device /dev/x[:/dev/y][:rwm]``: a host device node given to the container."""

    path_on_host: str
    path_in_container: str
    permissions: str = "rwm"

    def __post_init__(self) -> None:
        text = f"{self.path_on_host}:{self.path_in_container}:{self.permissions}"
        if not valid_device_mode(self.permissions):
            raise flag_error(text, "--device", f"bad mode specified: {self.permissions}")
        for p in (self.path_on_host, self.path_in_container):
            if not p.startswith("/"):
                raise flag_error(text, "--device", f"bad format for path: {p}")

    def to_json(self) -> dict[str, str]:
        return {"PathOnHost": self.path_on_host, "PathInContainer": self.path_in_container,
                "CgroupPermissions": self.permissions}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Device:
        src = str(d["PathOnHost"])
        return cls(src, str(d.get("PathInContainer") or src), str(d.get("CgroupPermissions") or "rwm"))


def cpuset_highest(text: str, *, what: str = "cpuset.cpus") -> int:
    """``0-2,4``, Docker's list syntax, checked: its highest CPU (-1 for ``""``)."""
    if not text:
        return -1
    if not re.match(_CPUSET, text):
        raise ContainerError.invalid(f"Invalid value {text} for {what}")
    highest = -1
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        if int(hi or lo) < int(lo):
            raise ContainerError.invalid(f"Invalid value {text} for {what}")
        highest = max(highest, int(hi or lo))
    return highest


@frozen
class Resources:
    """The cgroup limits and process limits: Docker's ``Resources`` part of ``HostConfig``.
    ``memory_swap`` is memory + swap (-1 unlimited), ``nano_cpus`` 1e9 per CPU, ``pids_limit``
    None for none."""

    memory: int = 0
    memory_swap: int = 0
    nano_cpus: int = 0
    cpu_shares: int = 0
    pids_limit: int | None = None
    cpuset_cpus: str = ""
    ulimits: tuple[Ulimit, ...] = ()
    devices: tuple[Device, ...] = ()

    def __post_init__(self) -> None:
        if self.memory and self.memory < MIN_MEMORY:
            raise ContainerError("Minimum memory limit allowed is 6MB")
        if self.memory_swap and not self.memory:
            raise ContainerError("You should always set the Memory limit when using Memoryswap limit, see usage")
        if self.memory_swap > 0 and self.memory_swap < self.memory:
            raise ContainerError("Minimum memoryswap limit should be larger than memory limit, see usage")
        if self.nano_cpus < 0:
            raise ContainerError.invalid(f"invalid NanoCpus {self.nano_cpus}: must not be negative")
        if self.cpu_shares < 0:
            raise ContainerError.invalid(f"invalid CPU shares {self.cpu_shares}: must not be negative")
        cpuset_highest(self.cpuset_cpus)

    def check_host(self) -> None:
        """What only this host can refuse (at create; a record read later is not refused): more
        CPUs than it has, a CPU it has not."""
        ncpu = os.cpu_count() or 1
        if self.nano_cpus > ncpu * 10**9:
            raise ContainerError(f"range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available")
        if cpuset_highest(self.cpuset_cpus) >= ncpu:
            raise ContainerError.invalid(f"Requested CPUs are not available - requested {self.cpuset_cpus}, "
                                         f"available: 0-{ncpu - 1}")


@frozen
class Endpoint:
    """The container's attachment to its own network (``--network-alias``, ``--ip``; the
    create body's ``NetworkingConfig`` entry for it)."""

    aliases: tuple[str, ...] = ()
    ipv4_address: str = ""

    def __post_init__(self) -> None:
        if self.ipv4_address:
            try:
                ipaddress.IPv4Address(self.ipv4_address)
            except ValueError:
                raise ContainerError.invalid(f"invalid IPv4 address: {self.ipv4_address}") from None


@frozen
class LogConfig:
    type: str = "json-file"
    config: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"Type": self.type, "Config": dict(self.config)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> LogConfig | None:
        if not d:
            return None
        return cls(str(d.get("Type") or "json-file"), {str(k): str(v) for k, v in (d.get("Config") or {}).items()})


#: the JSON keys the fields below hold; any other key of a record is kept in ``other``
FIELD_KEYS = frozenset({
    "AutoRemove", "RestartPolicy", "NetworkMode", "PortBindings", "PublishAllPorts", "Binds", "Mounts",
    "Tmpfs", "Memory", "MemorySwap", "NanoCpus", "CpuShares", "PidsLimit", "CpusetCpus", "Ulimits",
    "Devices", "ReadonlyRootfs", "CapAdd", "CapDrop", "Privileged", "SecurityOpt", "Init", "Runtime",
    "NetworkAliases", "IPAddress", "PublishSpecs", "ExtraHosts", "Dns", "DnsSearch", "DnsOptions",
    "Sysctls", "ShmSize", "GroupAdd", "PidMode", "UTSMode", "Links", "LinksRemoved", "VolumesFrom",
    "LogConfig", "ConsoleSize",
})
NAMESPACE_MODES = ("", "host")


@frozen
class HostConfig(Mapping[str, "Any"]):  # "Any" quoted: typing is not imported at run time
    """Docker's ``HostConfig`` as pybuild holds it (see the module's docstring)."""

    network_mode: str = "default"
    endpoint: Endpoint = field(default_factory=Endpoint)
    port_bindings: tuple[PortBinding, ...] = ()
    publish_all_ports: bool = False
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    auto_remove: bool = False
    binds: tuple[str, ...] = ()
    mounts: tuple[Mount, ...] = ()
    #: ``--tmpfs``: (path, mount options text)
    tmpfs: tuple[tuple[str, str], ...] = ()
    resources: Resources = field(default_factory=Resources)
    readonly_rootfs: bool = False
    privileged: bool = False
    init: bool = False
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    security_opt: tuple[str, ...] = ()
    runtime: str = "pybuild"
    extra_hosts: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    sysctls: tuple[tuple[str, str], ...] = ()
    shm_size: int = DEFAULT_SHM_SIZE
    group_add: tuple[str, ...] = ()
    pid_mode: str = ""
    uts_mode: str = ""
    #: ``--link``s as given (``name:alias``) and those ``DELETE /containers/{id}/{alias}?link=1`` dropped
    links: tuple[str, ...] = ()
    links_removed: tuple[str, ...] = ()
    volumes_from: tuple[str, ...] = ()
    log_config: LogConfig | None = None
    console_size: tuple[int, int] | None = None
    #: dockerd's other fields, as the API's client gave them (shown by inspect, not acted on):
    #: JSON, checked as such where it is read (``json_object``: the API body, the record file)
    other: Mapping[str, JSONValue] = field(default_factory=dict)
    #: the keys of the JSON it was read from: written back with those (and what changed), so
    #: that an earlier record is rewritten as it was
    shape: tuple[str, ...] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        net = self.network_mode
        if self.auto_remove and self.restart_policy.name != "no":
            raise ContainerError.conflict("Conflicting options: --restart and --rm")
        if net.startswith("container:"):
            if self.port_bindings or self.publish_all_ports:
                raise ContainerError.conflict("conflicting options: port publishing and the container type network mode")
            if self.dns or self.dns_search or self.dns_options:
                raise ContainerError.conflict("conflicting options: dns and the network mode")
            if self.extra_hosts:
                raise ContainerError.conflict("conflicting options: custom host-to-IP mapping and the network mode")
        if self.endpoint.aliases and net in ("default", "bridge", "host", "none"):
            raise ContainerError("network-scoped aliases are supported for user-defined networks only")
        if net == "host":
            for key, _ in self.sysctls:
                if key.startswith("net."):
                    raise ContainerError(f'sysctl "{key}" not allowed in host network namespace')
        for what, mode in (("pid", self.pid_mode), ("uts", self.uts_mode)):
            if mode not in NAMESPACE_MODES:
                raise ContainerError.invalid(f"invalid {what.upper()} mode: {mode}: only host or the default")
        seen: set[tuple[str, str, str]] = set()
        for b in self.port_bindings:
            if b.host_port and b.host_port != "0":
                k = (b.host_ip, b.host_port, b.protocol)
                if k in seen:
                    raise ContainerError.invalid(f"host port {b.host_port}/{b.protocol} is published twice")
                seen.add(k)

    # -- reading -------------------------------------------------------------------------------
    @property
    def network(self) -> str:
        """The network the container joins at start (``default`` is ``bridge``)."""
        return "bridge" if self.network_mode in ("default", "") else self.network_mode

    def to_json(self) -> dict[str, Any]:
        r = self.resources
        out: dict[str, Any] = {
            "AutoRemove": self.auto_remove,
            "RestartPolicy": self.restart_policy.to_json(),
            "NetworkMode": self.network_mode,
            "PortBindings": port_bindings_json(self.port_bindings),
            "PublishAllPorts": self.publish_all_ports,
            "Binds": list(self.binds),
            "Mounts": [m.to_json() for m in self.mounts],
            "Tmpfs": dict(self.tmpfs),
            "Memory": r.memory,
            "MemorySwap": r.memory_swap,
            "NanoCpus": r.nano_cpus,
            "CpuShares": r.cpu_shares,
            "PidsLimit": r.pids_limit,
            "ReadonlyRootfs": self.readonly_rootfs,
            "CapAdd": list(self.cap_add),
            "CapDrop": list(self.cap_drop),
            "Privileged": self.privileged,
            "SecurityOpt": list(self.security_opt) or None,
            "Init": self.init,
            "Runtime": self.runtime,
            "NetworkAliases": list(self.endpoint.aliases),
            "IPAddress": self.endpoint.ipv4_address,
            "ExtraHosts": list(self.extra_hosts) or None,
            "Dns": list(self.dns),
            "DnsSearch": list(self.dns_search),
            "DnsOptions": list(self.dns_options),
            "Ulimits": [u.to_json() for u in r.ulimits] or None,
            "ShmSize": self.shm_size,
            "Devices": [d.to_json() for d in r.devices],
        }
        for key, value in (("Sysctls", dict(self.sysctls)), ("CpusetCpus", r.cpuset_cpus),
                           ("GroupAdd", list(self.group_add)), ("PidMode", self.pid_mode),
                           ("UTSMode", self.uts_mode), ("Links", list(self.links)),
                           ("LinksRemoved", list(self.links_removed)), ("VolumesFrom", list(self.volumes_from))):
            if value:
                out[key] = value
        if self.log_config is not None:
            out["LogConfig"] = self.log_config.to_json()
        if self.console_size is not None:
            out["ConsoleSize"] = list(self.console_size)
        out.update((k, v) for k, v in self.other.items() if k not in out)
        if self.shape is None:
            return out
        zero = _zero_json()
        kept = {k: out[k] for k in self.shape if k in out}
        kept.update((k, v) for k, v in out.items() if k not in kept and zero.get(k, kept) != v)
        return kept

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> HostConfig:
        """A record's ``HostConfig`` (this version's or an earlier one's)."""
        if isinstance(d, HostConfig):
            return d
        ports = port_bindings_from_json(d.get("PortBindings"))
        if d.get("PublishSpecs"):  # earlier records: the -p texts (PortBindings kept one per port)
            from builder.network.model import parse_publish_all

            ports = tuple(PortBinding(m.key(), m.host_ip, str(m.host_port or ""))
                          for m in parse_publish_all(d["PublishSpecs"]))
        size = d.get("ConsoleSize")
        pids = d.get("PidsLimit")
        return cls(
            network_mode=str(d.get("NetworkMode") or "default"),
            endpoint=Endpoint(tuple(d.get("NetworkAliases") or ()), str(d.get("IPAddress") or "")),
            port_bindings=ports,
            publish_all_ports=bool(d.get("PublishAllPorts")),
            restart_policy=RestartPolicy.from_json(d.get("RestartPolicy")),
            auto_remove=bool(d.get("AutoRemove")),
            binds=tuple(str(b) for b in d.get("Binds") or ()),
            mounts=tuple(Mount.from_json(m) for m in d.get("Mounts") or ()),
            tmpfs=tuple((str(k), str(v or "")) for k, v in (d.get("Tmpfs") or {}).items()),
            resources=Resources(
                memory=int(d.get("Memory") or 0), memory_swap=int(d.get("MemorySwap") or 0),
                nano_cpus=int(d.get("NanoCpus") or 0), cpu_shares=int(d.get("CpuShares") or 0),
                pids_limit=None if pids is None else int(pids), cpuset_cpus=str(d.get("CpusetCpus") or ""),
                ulimits=tuple(Ulimit.from_json(u) for u in d.get("Ulimits") or ()),
                devices=tuple(Device.from_json(x) for x in d.get("Devices") or ()),
            ),
            readonly_rootfs=bool(d.get("ReadonlyRootfs")),
            privileged=bool(d.get("Privileged")),
            init=bool(d.get("Init")),
            cap_add=tuple(d.get("CapAdd") or ()),
            cap_drop=tuple(d.get("CapDrop") or ()),
            security_opt=tuple(d.get("SecurityOpt") or ()),
            runtime=str(d.get("Runtime") or "pybuild"),
            extra_hosts=tuple(d.get("ExtraHosts") or ()),
            dns=tuple(d.get("Dns") or ()),
            dns_search=tuple(d.get("DnsSearch") or ()),
            dns_options=tuple(d.get("DnsOptions") or ()),
            sysctls=tuple((str(k), str(v)) for k, v in (d.get("Sysctls") or {}).items()),
            shm_size=int(d.get("ShmSize") or DEFAULT_SHM_SIZE),
            group_add=tuple(str(g) for g in d.get("GroupAdd") or ()),
            pid_mode=str(d.get("PidMode") or ""),
            uts_mode=str(d.get("UTSMode") or ""),
            links=tuple(str(x) for x in d.get("Links") or ()),
            links_removed=tuple(str(x) for x in d.get("LinksRemoved") or ()),
            volumes_from=tuple(str(x) for x in d.get("VolumesFrom") or ()),
            log_config=LogConfig.from_json(d.get("LogConfig")),
            console_size=(int(size[0]), int(size[1])) if size else None,
            other=json_object({k: v for k, v in d.items() if k not in FIELD_KEYS}),
            shape=tuple(d),
        )

    # -- the read-only mapping view of the JSON form (for code not on the fields yet) ----------
    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_json())

    def __len__(self) -> int:
        return len(self.to_json())

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_json().get(key, default)

    __hash__ = None  # type: ignore[assignment]  # holds a mapping


_ZERO: list[dict[str, Any]] = []


def _zero_json() -> dict[str, Any]:
    if not _ZERO:
        _ZERO.append(HostConfig().to_json())
    return _ZERO[0]
