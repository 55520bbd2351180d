"""The network package's read API for container code: endpoints as typed values, read from the
network records (``<root>/networks/<id>.json``) without loading the code that makes them.

Light on purpose (``ps``, ``run --network none`` and ``rm`` load it): the standard library's
``json`` and ``os``, ``builder.base.state`` and frozen values only; no netlink, no ``dataclasses``,
no ``typing``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping

from builder.base.state import StateRoot
from builder.base.values import frozen, replace

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


@frozen
class PortBinding:
    """A published port as set up: the host side is always concrete."""

    container_port: int
    protocol: str
    host_ip: str
    host_port: int

    def to_json(self) -> dict[str, Any]:
        return {
            "ContainerPort": self.container_port,
            "Protocol": self.protocol,
            "HostIp": self.host_ip,
            "HostPort": self.host_port,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PortBinding:
        return cls(int(d["ContainerPort"]), str(d["Protocol"]), str(d["HostIp"]), int(d["HostPort"]))

    def __str__(self) -> str:
        ip = self.host_ip or "0.0.0.0"
        return f"{ip}:{self.host_port}->{self.container_port}/{self.protocol}"


#: JSON key -> field, in the order ``Endpoint.to_json`` writes them (``NetworkID`` last: the
#: container's state adds it)
_KEYS: tuple[tuple[str, str], ...] = (
    ("Name", "name"), ("Hostname", "hostname"), ("EndpointID", "endpoint_id"), ("Driver", "driver"),
    ("Netns", "netns"), ("Interface", "interface"), ("MacAddress", "mac"),
    ("IPv4Address", "ipv4_address"), ("IPv6Address", "ipv6_address"), ("Gateway", "gateway"),
    ("Aliases", "aliases"), ("Ports", "ports"), ("HostVeth", "host_veth"), ("ProxyPid", "proxy_pid"),
    ("HostsPath", "hosts_path"), ("ResolvConfPath", "resolv_path"), ("ExtraHosts", "extra_hosts"),
    ("DnsServers", "dns"), ("DnsSearch", "dns_search"), ("DnsOptions", "dns_options"),
    ("HostAddress", "host_addr"), ("IPv6Gateway", "gateway6"), ("NetworkID", "network_id"),
)
_FIELD = dict(_KEYS)
_LISTS = frozenset({"aliases", "extra_hosts", "dns", "dns_search", "dns_options"})


@frozen
class EndpointRecord:
    """A container's endpoint on one network as recorded: in the network record's
    ``Containers`` map and in the container's ``state.json`` (``State.endpoints``).

    ``keys`` are the JSON keys it was read with, in order (``None``: made in code, every key),
    and ``extra`` what it held beyond them or that does not read back as typed, so that
    ``to_json`` writes a record back byte for byte as it was read."""

    network_id: str = ""
    endpoint_id: str = ""
    name: str = ""
    hostname: str = ""
    driver: str = ""
    netns: str = ""
    interface: str = ""
    mac: str = ""
    #: ``ip/prefixlen``, or empty
    ipv4_address: str = ""
    ipv6_address: str = ""
    gateway: str = ""
    gateway6: str = ""
    aliases: tuple[str, ...] = ()
    ports: tuple[PortBinding, ...] = ()
    host_veth: str = ""
    proxy_pid: int = 0
    hosts_path: str = ""
    resolv_path: str = ""
    extra_hosts: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    #: a remote endpoint of an overlay network: the underlay address of its host
    host_addr: str = ""
    keys: tuple[str, ...] | None = None
    extra: tuple[tuple[str, Any], ...] = ()

    @property
    def ip(self) -> str:
        return self.ipv4_address.partition("/")[0]

    @property
    def prefixlen(self) -> int:
        return int(self.ipv4_address.partition("/")[2] or 0)

    @property
    def ip6(self) -> str:
        return self.ipv6_address.partition("/")[0]

    @property
    def prefixlen6(self) -> int:
        return int(self.ipv6_address.partition("/")[2] or 0)

    def _value(self, field: str) -> Any:
        value = getattr(self, field)
        if field == "ports":
            return [p.to_json() for p in value]
        return list(value) if field in _LISTS else value

    def to_json(self) -> dict[str, Any]:
        extra = dict(self.extra)
        keys = self.keys if self.keys is not None else [k for k, _ in _KEYS]
        return {k: extra[k] if k in extra else self._value(_FIELD[k]) for k in keys}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> EndpointRecord:
        typed: dict[str, Any] = {}
        extra: list[tuple[str, Any]] = []
        for key, value in d.items():
            field = _FIELD.get(key)
            if field is None:
                extra.append((key, value))
                continue
            try:
                typed[field] = _typed(field, value)
            except (TypeError, ValueError, KeyError):
                extra.append((key, value))
        rec = cls(**typed, keys=tuple(d))
        odd = [(k, v) for k, v in d.items() if k in _FIELD and _FIELD[k] in typed
               and rec._value(_FIELD[k]) != v]  # e.g. a null list: written back as read
        return replace(rec, extra=(*extra, *odd)) if extra or odd else rec


def _typed(field: str, value: Any) -> Any:
    if field == "ports":
        return tuple(PortBinding.from_json(p) for p in value)
    if field in _LISTS:
        if not isinstance(value, list):
            raise TypeError(field)
        return tuple(str(v) for v in value)
    if field == "proxy_pid":
        return int(value)
    if not isinstance(value, str):
        raise TypeError(field)
    return value


# -- reading the network records -------------------------------------------------------------
def _records(root: StateRoot) -> Iterable[Mapping[str, Any]]:
    if not root.networks.is_dir():
        return
    for name in sorted(os.listdir(root.networks)):
        if not name.endswith(".json"):
            continue
        try:
            with open(root.networks / name, "rb") as f:
                rec = json.loads(f.read())
        except (OSError, ValueError):
            continue  # a record being replaced, or not ours
        if isinstance(rec, dict):
            yield rec


def endpoints_by_container(root: StateRoot) -> dict[str, dict[str, EndpointRecord]]:
    """container id -> network name -> its endpoint, as the network records hold them now (so
    ``network connect``/``disconnect`` show at once); ``network_id`` is the record's."""
    out: dict[str, dict[str, EndpointRecord]] = {}
    for rec in _records(root):
        net_id, net_name = str(rec.get("Id", "")), str(rec.get("Name", ""))
        for cid, ep in (rec.get("Containers") or {}).items():
            e = EndpointRecord.from_json(ep)
            if "NetworkID" not in ep:
                e = replace(e, network_id=net_id)
            out.setdefault(cid, {})[net_name] = e
    return out


def mentions(root: StateRoot, cid: str) -> bool:
    """Whether any network state still names container *cid*: its netns file or hosts files,
    or an endpoint in a network record (cheap: no netlink, the records read as bytes)."""
    if (root.run / "netns" / cid).exists() or (root.run / "net" / cid).exists():
        return True
    if not root.networks.is_dir():
        return False
    needle = cid.encode()
    for name in os.listdir(root.networks):
        if name.endswith(".json"):
            try:
                with open(root.networks / name, "rb") as f:
                    if needle in f.read():
                        return True
            except OSError:
                continue
    return False
