"""Network value types (networks, endpoints, published ports) and the pure ``-p`` spec parser.

Nothing here touches the kernel: records are frozen values with JSON forms (``@frozen``, not
``@dataclass``: the three made ~5 ms of every bridge ``run``'s imports).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from pathlib import Path

from builder.base.errors import NetworkError
from builder.base.values import field, frozen, replace
from builder.network.records import EndpointRecord
from builder.network.records import PortBinding as PortBinding  # its home before records

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PROTOCOLS = ("tcp", "udp")
#: drivers `network create -d` accepts (`overlay` needs the host to be in a cluster)
DRIVERS = ("bridge", "macvlan", "overlay")
PREDEFINED = ("bridge", "host", "none")
#: the driver dockerd names for each predefined network (``none``'s is ``null``)
PREDEFINED_DRIVERS = {"bridge": "bridge", "host": "host", "none": "null"}


@frozen
class PortMapping:
    """One parsed ``-p`` entry: host port 0 means "pick a free one"."""

    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""
    host_port: int = 0

    def key(self) -> str:
        return f"{self.container_port}/{self.protocol}"


@frozen
class Endpoint:
    """A container's presence on one network: what the sandbox and ``ps``/``inspect`` need.

    ``netns`` is the path the sandbox joins (``setns``); ``None`` means the host's namespace.
    """

    container_id: str
    network_id: str
    network_name: str
    driver: str
    netns: Path | None
    ifname: str = ""
    ip: str = ""
    prefixlen: int = 0
    gateway: str = ""
    mac: str = ""
    name: str = ""
    hostname: str = ""
    aliases: tuple[str, ...] = ()
    ports: tuple[PortBinding, ...] = ()
    host_veth: str = ""
    proxy_pid: int = 0
    hosts_path: Path | None = None
    resolv_path: Path | None = None
    #: the container's ``--add-host`` entries (``name:ip``, host-gateway resolved) and
    #: ``--dns``/``--dns-search``/``--dns-option``: its hosts and resolv.conf files, and the
    #: upstreams the network's DNS server uses for it
    extra_hosts: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    #: a remote endpoint of an overlay network: the underlay address of its host (its VTEP)
    host_addr: str = ""
    #: the endpoint's IPv6 address on a network with ``EnableIPv6``
    ip6: str = ""
    prefixlen6: int = 0
    gateway6: str = ""

    def to_json(self) -> dict[str, Any]:
        names = {k: list(v) for k, v in (("ExtraHosts", self.extra_hosts), ("DnsServers", self.dns),
                                         ("DnsSearch", self.dns_search), ("DnsOptions", self.dns_options)) if v}
        return {
            "Name": self.name,
            "Hostname": self.hostname,
            "EndpointID": f"{self.network_id[:12]}-{self.container_id[:12]}",
            "Driver": self.driver,
            "Netns": str(self.netns) if self.netns else "",
            "Interface": self.ifname,
            "MacAddress": self.mac,
            "IPv4Address": f"{self.ip}/{self.prefixlen}" if self.ip else "",
            "IPv6Address": f"{self.ip6}/{self.prefixlen6}" if self.ip6 else "",
            "Gateway": self.gateway,
            "Aliases": list(self.aliases),
            "Ports": [p.to_json() for p in self.ports],
            "HostVeth": self.host_veth,
            "ProxyPid": self.proxy_pid,
            "HostsPath": str(self.hosts_path) if self.hosts_path else "",
            "ResolvConfPath": str(self.resolv_path) if self.resolv_path else "",
            **names,
            **({"HostAddress": self.host_addr} if self.host_addr else {}),
            **({"IPv6Gateway": self.gateway6} if self.gateway6 else {}),
        }

    def record(self) -> EndpointRecord:
        """What the container's state keeps of this endpoint: its JSON, with ``NetworkID``."""
        return EndpointRecord.from_json({**self.to_json(), "NetworkID": self.network_id})

    @classmethod
    def from_json(cls, container_id: str, net: Network, d: Mapping[str, Any]) -> Endpoint:
        ip, _, plen = str(d.get("IPv4Address", "")).partition("/")
        ip6, _, plen6 = str(d.get("IPv6Address", "")).partition("/")
        return cls(
            container_id=container_id,
            network_id=net.id,
            network_name=net.name,
            driver=net.driver,
            netns=Path(d["Netns"]) if d.get("Netns") else None,
            ifname=str(d.get("Interface", "")),
            ip=ip,
            prefixlen=int(plen or 0),
            gateway=str(d.get("Gateway", "")),
            mac=str(d.get("MacAddress", "")),
            name=str(d.get("Name", "")),
            hostname=str(d.get("Hostname", "")),
            aliases=tuple(d.get("Aliases", ())),
            ports=tuple(PortBinding.from_json(p) for p in d.get("Ports", ())),
            host_veth=str(d.get("HostVeth", "")),
            proxy_pid=int(d.get("ProxyPid", 0)),
            hosts_path=Path(d["HostsPath"]) if d.get("HostsPath") else None,
            resolv_path=Path(d["ResolvConfPath"]) if d.get("ResolvConfPath") else None,
            extra_hosts=tuple(d.get("ExtraHosts") or ()),
            dns=tuple(d.get("DnsServers") or ()),
            dns_search=tuple(d.get("DnsSearch") or ()),
            dns_options=tuple(d.get("DnsOptions") or ()),
            host_addr=str(d.get("HostAddress", "")),
            ip6=ip6,
            prefixlen6=int(plen6 or 0),
            gateway6=str(d.get("IPv6Gateway", "")),
        )


@frozen
class Network:
    """A network record as stored in ``<root>/networks/<id>.json`` (Docker's inspect shape)."""

    id: str
    name: str
    driver: str
    created: str
    subnet: str = ""
    gateway: str = ""
    bridge: str = ""
    parent: str = ""
    internal: bool = False
    options: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    #: container id -> its endpoint on this network (the record's ``Containers``)
    containers: Mapping[str, Endpoint] = field(default_factory=dict)
    #: the embedded DNS server of a user-defined bridge network, while it has containers
    dns_pid: int = 0
    attachable: bool = False
    #: ``EnableIPv6``: the network's IPv6 subnet and gateway (bridge networks)
    subnet6: str = ""
    gateway6: str = ""
    #: an overlay network's endpoints on other hosts, as the store has them (the embedded DNS
    #: answers for them; the agent keeps this and the VXLAN entries in step with the store)
    remote: Mapping[str, Endpoint] = field(default_factory=dict)

    @property
    def scope(self) -> str:
        return "global" if self.driver == "overlay" else "local"

    @property
    def predefined(self) -> bool:
        return self.name in PREDEFINED

    @property
    def user_defined(self) -> bool:
        """Docker resolves container names only on user-defined networks."""
        return not self.predefined

    def endpoints(self) -> list[Endpoint]:
        return [ep for _, ep in sorted(self.containers.items())]

    def to_json(self) -> dict[str, Any]:
        ipam_config = [{"Subnet": self.subnet, "Gateway": self.gateway}] if self.subnet else []
        if self.subnet6:
            ipam_config.append({"Subnet": self.subnet6, "Gateway": self.gateway6})
        return {
            "Name": self.name,
            "Id": self.id,
            "Created": self.created,
            "Scope": self.scope,
            "Driver": self.driver,
            "EnableIPv6": bool(self.subnet6),
            "IPAM": {"Driver": "default", "Options": {}, "Config": ipam_config},
            "Internal": self.internal,
            "Attachable": self.attachable,
            "Ingress": False,
            "Bridge": self.bridge,
            "Parent": self.parent,
            "Containers": {k: ep.to_json() for k, ep in sorted(self.containers.items())},
            "Options": dict(self.options),
            "Labels": dict(self.labels),
            "DnsPid": self.dns_pid,
            **({"RemoteContainers": {k: ep.to_json() for k, ep in sorted(self.remote.items())}}
               if self.remote else {}),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Network:
        configs = (d.get("IPAM") or {}).get("Config") or []
        config = [c for c in configs if ":" not in str(c.get("Subnet", ""))] or [{}]
        config6 = [c for c in configs if ":" in str(c.get("Subnet", ""))] or [{}]
        net = cls(
            id=str(d["Id"]),
            name=str(d["Name"]),
            # a record written before none's driver was null (as dockerd names it)
            driver="null" if d["Name"] == "none" and d["Driver"] == "none" else str(d["Driver"]),
            created=str(d.get("Created", "")),
            subnet=str(config[0].get("Subnet", "")),
            gateway=str(config[0].get("Gateway", "")),
            bridge=str(d.get("Bridge", "")),
            parent=str(d.get("Parent", "")),
            internal=bool(d.get("Internal", False)),
            options=dict(d.get("Options") or {}),
            labels=dict(d.get("Labels") or {}),
            dns_pid=int(d.get("DnsPid") or 0),
            attachable=bool(d.get("Attachable", False)),
            subnet6=str(config6[0].get("Subnet", "")),
            gateway6=str(config6[0].get("Gateway", "")),
        )
        eps = {cid: Endpoint.from_json(cid, net, ep) for cid, ep in (d.get("Containers") or {}).items()}
        remote = {cid: Endpoint.from_json(cid, net, ep) for cid, ep in (d.get("RemoteContainers") or {}).items()}
        return replace(net, containers=eps, remote=remote) if eps or remote else net


# -- `-p` / `-P` ------------------------------------------------------------------------------


def _port_range(text: str, spec: str, what: str) -> tuple[int, int]:
    lo_s, sep, hi_s = text.partition("-")
    try:
        lo = int(lo_s)
        hi = int(hi_s) if sep else lo
    except ValueError:
        raise NetworkError.invalid(f"invalid {what} port {text!r} in publish spec {spec!r}") from None
    if not (1 <= lo <= 65535 and 1 <= hi <= 65535) or hi < lo:
        raise NetworkError.invalid(f"invalid {what} port range {text!r} in publish spec {spec!r}")
    return lo, hi


def parse_publish(spec: str) -> list[PortMapping]:
    """Parse one ``-p [ip:][hostPort:]containerPort[/proto]`` (ranges ``a-b`` allowed)."""
    if not spec or spec != spec.strip():
        raise NetworkError.invalid(f"invalid publish spec {spec!r}")
    rest, sep, proto = spec.rpartition("/")
    if not sep:
        rest, proto = spec, "tcp"
    proto = proto.lower()
    if proto not in PROTOCOLS:
        raise NetworkError.invalid(f"invalid protocol {proto!r} in publish spec {spec!r} (tcp or udp)")
    host_ip = ""
    if rest.startswith("["):
        raise NetworkError(f"IPv6 host address in publish spec {spec!r} is not supported")
    parts = rest.split(":")
    if len(parts) == 1:
        host_part, cont_part = "", parts[0]
    elif len(parts) == 2:
        host_part, cont_part = parts
    elif len(parts) == 3:
        host_ip, host_part, cont_part = parts
        try:
            addr = ipaddress.ip_address(host_ip)
        except ValueError:
            raise NetworkError.invalid(f"invalid host IP {host_ip!r} in publish spec {spec!r}") from None
        if addr.version != 4:
            raise NetworkError(f"IPv6 host address in publish spec {spec!r} is not supported")
    else:
        raise NetworkError.invalid(f"invalid publish spec {spec!r}: expected [ip:][hostPort:]containerPort[/proto]")
    if not cont_part:
        raise NetworkError(f"no container port in publish spec {spec!r}")
    c_lo, c_hi = _port_range(cont_part, spec, "container")
    count = c_hi - c_lo + 1
    if host_part:
        h_lo, h_hi = _port_range(host_part, spec, "host")
        if h_hi - h_lo + 1 != count:
            raise NetworkError(f"host and container port ranges differ in size in publish spec {spec!r}")
        hosts = list(range(h_lo, h_hi + 1))
    else:
        hosts = [0] * count
    return [
        PortMapping(container_port=c, protocol=proto, host_ip=host_ip, host_port=h)
        for c, h in zip(range(c_lo, c_hi + 1), hosts, strict=True)
    ]


def parse_publish_all(specs: Iterable[str]) -> list[PortMapping]:
    """Parse several ``-p`` specs; the same host ip/port/proto twice is an error."""
    out: list[PortMapping] = []
    seen: set[tuple[str, int, str]] = set()
    for spec in specs:
        for m in parse_publish(spec):
            if m.host_port:
                k = (m.host_ip, m.host_port, m.protocol)
                if k in seen:
                    raise NetworkError(f"host port {m.host_port}/{m.protocol} is published twice")
                seen.add(k)
            out.append(m)
    return out


def publish_exposed(exposed: Iterable[str]) -> list[PortMapping]:
    """``-P``: every image ``EXPOSE`` entry (``"80/tcp"``, ``"53/udp"``, ``"8080"``) to a random host port."""
    out: list[PortMapping] = []
    for entry in exposed:
        port, _, proto = entry.partition("/")
        proto = (proto or "tcp").lower()
        if proto not in PROTOCOLS:
            raise NetworkError.invalid(f"invalid exposed port {entry!r}")
        lo, hi = _port_range(port, entry, "exposed")
        out.extend(PortMapping(container_port=p, protocol=proto) for p in range(lo, hi + 1))
    return out
