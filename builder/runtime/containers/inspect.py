"""Docker's JSON shapes of a container: ``container inspect`` (``inspect_container``), the
``/containers/json`` summary (``summary``: ``Status`` text, ``Ports`` list) and published ports.

The CLI renders these; ``pybuild serve`` returns them as they are.
"""

from __future__ import annotations

import os
import pwd
import time
from collections.abc import Mapping

from builder.base.state import StateRoot
from builder.base.units import human_duration
from builder.network.records import EndpointRecord
from builder.runtime.containers import lifecycle, usage
from builder.runtime.containers.options import parse_timestamp_text
from builder.runtime.containers.record import Container, NoSuchContainer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: network name -> endpoint, as ``lifecycle.endpoints_of`` gives them
Endpoints = Mapping[str, EndpointRecord]


def endpoints(root: StateRoot, c: Container) -> dict[str, EndpointRecord]:
    """*c*'s network endpoints (network name -> endpoint)."""
    return lifecycle.endpoints_of(c, lifecycle.network_endpoints(root))


def _ago(ts: str) -> float:
    ns = parse_timestamp_text(ts)
    return max(time.time() - ns / 1e9, 0) if ns else 0.0


def status_text(c: Container) -> str:
    """The ``Status`` column: ``Up 3 minutes (healthy)``, ``Exited (0) 2 seconds ago``…"""
    st = c.state
    if st.status == "running" and st.paused:
        return f"Up {human_duration(_ago(st.started_at))} (Paused)"
    if st.status == "running":
        health = ""
        if st.health:
            health = f" ({st.health.status if st.health.status != 'starting' else 'health: starting'})"
        return f"Up {human_duration(_ago(st.started_at))}{health}"
    if st.status == "restarting":
        return f"Restarting ({st.exit_code}) {human_duration(_ago(st.finished_at))} ago"
    if st.status == "exited":
        if st.finished_at.startswith("0001"):
            return f"Exited ({st.exit_code})"
        return f"Exited ({st.exit_code}) {human_duration(_ago(st.finished_at))} ago"
    if st.status == "created":
        return "Created"
    if st.status == "removing":
        return "Removal In Progress"
    return st.status.capitalize()


def published_ports(c: Container, eps: Endpoints) -> list[dict[str, Any]]:
    """The host ports bound for a running container (``HostIp``, ``HostPort``, ``ContainerPort``,
    ``Protocol``); none once it stopped, as Docker releases them."""
    if c.state.status != "running":
        return []
    return [p.to_json() for ep in eps.values() for p in ep.ports]


def port_list(c: Container, eps: Endpoints) -> list[dict[str, Any]]:
    """``/containers/json`` ``Ports``: each published port (``IP``, ``PrivatePort``,
    ``PublicPort``, ``Type``), then each exposed port nothing publishes (``PrivatePort``,
    ``Type``). Empty unless the container runs: Docker shows no ports for a stopped one."""
    if c.state.status != "running":
        return []
    out: list[dict[str, Any]] = []
    seen = set()
    for p in published_ports(c, eps):
        out.append({"IP": p.get("HostIp") or "0.0.0.0", "PrivatePort": int(p["ContainerPort"]),
                    "PublicPort": int(p["HostPort"]), "Type": str(p["Protocol"])})
        seen.add(f"{p['ContainerPort']}/{p['Protocol']}")
    for k in sorted(c.config.exposed_ports or ()):
        key = k if "/" in k else f"{k}/tcp"
        if key not in seen:
            num, _, proto = key.partition("/")
            out.append({"PrivatePort": int(num), "Type": proto})
    return out


def summary(root: StateRoot, c: Container, *, table: Mapping[str, Endpoints] | None = None,
            size: bool = False) -> dict[str, Any]:
    """One ``/containers/json`` object (what ``ps`` lists). *table* is
    ``lifecycle.network_endpoints(root)``, read once for a whole listing."""
    eps = lifecycle.endpoints_of(c, table if table is not None else lifecycle.network_endpoints(root))
    out: dict[str, Any] = {
        "Id": c.id,
        "Names": ["/" + c.name],
        "Image": c.image,
        "ImageID": c.image_id,
        "Command": " ".join(c.command),
        "Created": parse_timestamp_text(c.created) // 1_000_000_000,
        "Ports": port_list(c, eps),
        "Labels": dict(c.labels),
        "State": c.state.status,
        "Status": status_text(c),
        "HostConfig": {"NetworkMode": c.host_config.network_mode},
        "NetworkSettings": {"Networks": network_settings(c, eps)["Networks"]},
        "Mounts": [m.to_json() for m in c.mounts],
    }
    if size:
        out["SizeRw"], out["SizeRootFs"] = usage.sizes(root, c)
    return out


def network_settings(c: Container, eps: Endpoints) -> dict[str, Any]:
    """``NetworkSettings`` of ``container inspect``: addresses only while running."""
    running = c.state.running
    nets: dict[str, Any] = {}
    ports: dict[str, Any] = {}
    # on the none network dockerd lists no port, exposed or bound (-p is kept in HostConfig only)
    for k in () if c.host_config.network_mode == "none" else c.config.exposed_ports or ():
        ports[k if "/" in k else f"{k}/tcp"] = None
    first_net: str | None = None
    for name, ep in eps.items():
        ipam = None
        if c.host_config.endpoint.ipv4_address and first_net is None:
            ipam = {"IPv4Address": c.host_config.endpoint.ipv4_address}  # the --ip given
        first_net = first_net or name
        # what a client gave (at create or connect) that the network does not use but
        # dockerd shows back
        joined = c.networks.get(name)
        nets[name] = {
            "IPAMConfig": ipam,
            "Links": list(joined.links) if joined and joined.links else None,
            "Aliases": list(ep.aliases) or None,
            "NetworkID": ep.network_id,
            "EndpointID": ep.endpoint_id if running else "",
            "Gateway": ep.gateway if running else "",
            "IPAddress": ep.ip if running else "",
            "IPPrefixLen": ep.prefixlen if running else 0,
            "IPv6Gateway": ep.gateway6 if running else "",
            "GlobalIPv6Address": ep.ip6 if running else "",
            "GlobalIPv6PrefixLen": ep.prefixlen6 if running else 0,
            "MacAddress": ep.mac if running else "",
            "DriverOpts": dict(joined.driver_opts) if joined and joined.driver_opts else None,
        }
        if running:
            for p in ep.ports:
                key = f"{p.container_port}/{p.protocol}"
                ports[key] = (ports.get(key) or []) + [
                    {"HostIp": p.host_ip or "0.0.0.0", "HostPort": str(p.host_port)}]
    first: dict[str, Any] = next(iter(nets.values()), {})
    # dockerd's keys in its order; the top-level addresses are those of the first network
    return {
        "Bridge": "",
        "SandboxID": c.id if running else "",
        "HairpinMode": False,
        "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0,
        "Ports": ports,
        "SandboxKey": c.state.sandbox.netns if running and c.state.sandbox else "",
        "SecondaryIPAddresses": None,
        "SecondaryIPv6Addresses": None,
        "EndpointID": first.get("EndpointID", ""),
        "Gateway": first.get("Gateway", ""),
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "IPAddress": first.get("IPAddress", ""),
        "IPPrefixLen": first.get("IPPrefixLen", 0),
        "IPv6Gateway": "",
        "MacAddress": first.get("MacAddress", ""),
        "Networks": nets,
    }


#: runc's masked and read-only paths, as dockerd lists them for an unprivileged container
MASKED_PATHS = ("/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                "/sys/firmware")
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

#: dockerd 20.10's ``HostConfig`` in its order, each field's value when nothing set it
#: (clients index these keys: ``KeyError: 'UTSMode'`` otherwise)
HOST_CONFIG_ZERO: tuple[tuple[str, Any], ...] = (
    ("Binds", None), ("ContainerIDFile", ""), ("LogConfig", {"Type": "json-file", "Config": {}}),
    ("NetworkMode", "default"), ("PortBindings", {}),
    ("RestartPolicy", {"Name": "no", "MaximumRetryCount": 0}), ("AutoRemove", False),
    ("VolumeDriver", ""), ("VolumesFrom", None), ("CapAdd", None), ("CapDrop", None),
    ("CgroupnsMode", "host"), ("Dns", []), ("DnsOptions", []), ("DnsSearch", []),
    ("ExtraHosts", None), ("GroupAdd", None), ("IpcMode", "private"), ("Cgroup", ""),
    ("Links", None), ("OomScoreAdj", 0), ("PidMode", ""), ("Privileged", False),
    ("PublishAllPorts", False), ("ReadonlyRootfs", False), ("SecurityOpt", None),
    ("UTSMode", ""), ("UsernsMode", ""), ("ShmSize", 67108864), ("Runtime", "runc"),
    ("ConsoleSize", [0, 0]), ("Isolation", ""), ("CpuShares", 0), ("Memory", 0),
    ("NanoCpus", 0), ("CgroupParent", ""), ("BlkioWeight", 0), ("BlkioWeightDevice", []),
    ("BlkioDeviceReadBps", []), ("BlkioDeviceWriteBps", []), ("BlkioDeviceReadIOps", []),
    ("BlkioDeviceWriteIOps", []), ("CpuPeriod", 0), ("CpuQuota", 0), ("CpuRealtimePeriod", 0),
    ("CpuRealtimeRuntime", 0), ("CpusetCpus", ""), ("CpusetMems", ""), ("Devices", []),
    ("DeviceCgroupRules", None), ("DeviceRequests", None), ("KernelMemory", 0),
    ("KernelMemoryTCP", 0), ("MemoryReservation", 0), ("MemorySwap", 0),
    ("MemorySwappiness", None), ("OomKillDisable", False), ("PidsLimit", None), ("Ulimits", None),
    ("CpuCount", 0), ("CpuPercent", 0), ("IOMaximumIOps", 0), ("IOMaximumBandwidth", 0),
    ("MaskedPaths", list(MASKED_PATHS)), ("ReadonlyPaths", list(READONLY_PATHS)),
)
#: record-only keys of our ``host_config`` (how ``runtime`` attaches the network), not Docker's
_PRIVATE_HOST_KEYS = frozenset({"NetworkAliases", "IPAddress", "PublishSpecs", "LinksRemoved"})


def link_alias(link: str) -> str:
    """The alias of a ``--link`` (``name:alias``, ``name``, or dockerd's ``/name:/self/alias``)."""
    child, _, alias = link.partition(":")
    return (alias or child).rsplit("/", 1)[-1]


def docker_links(links: Any, name: str) -> list[str] | None:
    """``HostConfig.Links`` as dockerd shows them: ``/name:/self/alias``."""
    if not links:
        return None
    out = []
    for link in links:
        child = str(link).partition(":")[0].lstrip("/")
        out.append(str(link) if str(link).startswith("/") else f"/{child}:/{name}/{link_alias(str(link))}")
    return out
#: the runtime name dockerd reports for what our own execution core runs
BUILTIN_RUNTIME = "runc"


def host_config(recorded: Mapping[str, Any]) -> dict[str, Any]:
    """``HostConfig`` as dockerd shows it: every field of its struct (zero when unset), then
    what else the record holds that Docker also names (``Init``, ``Mounts``, ``Tmpfs``…)."""
    out: dict[str, Any] = {}
    for key, zero in HOST_CONFIG_ZERO:
        value = recorded.get(key)
        out[key] = zero if value is None else value
    if out["Privileged"]:
        out["MaskedPaths"] = out["ReadonlyPaths"] = None
    if out["Runtime"] in ("pybuild", "", None):
        out["Runtime"] = BUILTIN_RUNTIME
    out.update((k, v) for k, v in recorded.items() if k not in out and k not in _PRIVATE_HOST_KEYS)
    return out


def inspect_container(root: StateRoot, c: Container, *, size: bool = False) -> dict[str, Any]:
    """Docker's ``container inspect`` object for a record (``SizeRw``/``SizeRootFs`` with *size*)."""
    d = c.to_json()
    out: dict[str, Any] = {
        "Id": d["Id"],
        "Created": d["Created"],
        "Path": d["Path"],
        "Args": d["Args"],
        "State": c.state.docker(),
        "Image": d["ImageID"],
        "ResolvConfPath": str(root.run / "net" / c.id / "resolv.conf"),
        "HostnamePath": "",
        "HostsPath": str(root.run / "net" / c.id / "hosts"),
        "LogPath": str(root.containers / c.id / f"{c.id}-json.log"),
        "Name": d["Name"],
        "RestartCount": c.state.restart_count,
        "Driver": "overlay2",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": None,
        "HostConfig": {**host_config(d["HostConfig"]),
                       "Links": docker_links(d["HostConfig"].get("Links"), c.name)},
        "GraphDriver": {"Data": None, "Name": "overlay2"},
        "Mounts": d["Mounts"],
        "Config": {**d["Config"], "OnBuild": d["Config"].get("OnBuild")},
        "NetworkSettings": network_settings(c, endpoints(root, c)),
    }
    if size:
        out["SizeRw"], out["SizeRootFs"] = usage.sizes(root, c)
    return out


def inspect(root: StateRoot, ref: str, *, size: bool = False) -> dict[str, Any]:
    """``container inspect REF``; ``NoSuchContainer`` if no container has that name or ID."""
    return inspect_container(root, lifecycle.get(root, ref), size=size)


def try_inspect(root: StateRoot, ref: str) -> dict[str, Any] | None:
    """The container *ref* for a top-level ``inspect`` that found no image, or None."""
    try:
        return inspect(root, ref)
    except NoSuchContainer:
        return None


# -- top ---------------------------------------------------------------------------------------
TOP_TITLES = ("UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD")


def top(c: Container) -> dict[str, Any]:
    """``/containers/{id}/top`` (what ``docker top`` prints): ``Titles`` and ``Processes``, one
    row of strings per process of the container, as ``ps -ef`` shows them."""
    procs = usage.processes(c)
    ticks = os.sysconf("SC_CLK_TCK")
    boot = _boot_time()
    rows = []
    for p in procs:
        stime = time.strftime("%H:%M", time.localtime(boot + p.stime / ticks))
        t = p.time
        rows.append([_user(p.uid), str(p.pid), str(p.ppid), "0", stime, p.tty,
                     f"{t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d}", p.cmd])
    return {"Titles": list(TOP_TITLES), "Processes": rows}


def _boot_time() -> float:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime"):
                return float(line.split()[1])
    return 0.0


def _user(uid: str) -> str:
    try:
        return pwd.getpwuid(int(uid)).pw_name
    except (KeyError, ValueError):
        return uid
