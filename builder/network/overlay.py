"""Overlay networks: global records, addresses and endpoints in the cluster store (etcd), and on
each host a bridge per network joined to the other hosts by a kernel VXLAN device.

Key layout (every key under ``pybuild/``):

* ``hosts/<host>`` → ``{Id, Addr, Name}``, on the host's lease;
* ``networks/<name>`` → the network (Id, Subnet, Gateway, VNI, …); ``subnets/<cidr>`` and
  ``vnis/<vni>`` → its id: the three are created in one transaction that fails if any exists,
  so a name, a subnet or a VXLAN ID is never given twice;
* ``ips/<net>/<ip>`` → container id and ``endpoints/<net>/<container>`` → ``{Host, Addr, IP,
  MAC, Name, Aliases}``, both on the lease of the container's host: a host that dies frees them.

A host materialises a network (bridge ``pb-<id12>`` with the gateway address, VXLAN
``pbx<id12>`` on UDP 4789, MTU 1450, the bridge network's rules) while it has containers on it,
with a forwarding and a neighbour entry per remote endpoint; the agent keeps those in step.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
from collections.abc import Callable, Iterable, Mapping, Sequence

from builder.base.errors import NetworkError
from builder.base.state import StateRoot
from builder.base.values import replace
from builder.network import ipam, links, sweep
from builder.network.cluster import membership
from builder.network.cluster.membership import Membership
from builder.network.model import Endpoint, Network

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    from builder.network.cluster.etcd import Etcd, Event

    T = TypeVar("T")

PREFIX = "pybuild/"
NETS, SUBNETS, VNIS = PREFIX + "networks/", PREFIX + "subnets/", PREFIX + "vnis/"
EPS, IPS = PREFIX + "endpoints/", PREFIX + "ips/"
VXLAN_PORT, MTU, VNI_BASE = 4789, 1450, 4097
VNI_OPT = "com.docker.network.driver.overlay.vxlanid_list"
POOL = ipaddress.IPv4Network("10.0.0.0/8")


def joined(state: StateRoot) -> bool:
    return membership.joined(state)


def _session(state: StateRoot, *, connect: float | None = None) -> tuple[Membership, Etcd]:
    m = membership.require(state)
    return m, membership.client(m, connect=connect)


def vxlan_name(net: Network) -> str:
    return "pbx" + net.id[:12]


def vni(net: Network) -> int:
    return int(net.options.get(VNI_OPT, "0"))


def _to_store(net: Network) -> str:
    return json.dumps({"Id": net.id, "Name": net.name, "Created": net.created, "Subnet": net.subnet,
                       "Gateway": net.gateway, "Internal": net.internal, "Attachable": net.attachable,
                       "Options": dict(net.options), "Labels": dict(net.labels)})


def _from_store(d: Mapping[str, Any]) -> Network:
    nid = str(d["Id"])
    return Network(id=nid, name=str(d["Name"]), driver="overlay", created=str(d["Created"]),
                   subnet=str(d["Subnet"]), gateway=str(d["Gateway"]), bridge=f"pb-{nid[:12]}",
                   internal=bool(d.get("Internal")), attachable=bool(d.get("Attachable")),
                   options=dict(d.get("Options") or {}), labels=dict(d.get("Labels") or {}))


def _subnet_key(subnet: str) -> str:
    return SUBNETS + subnet.replace("/", "_")


# -- networks -----------------------------------------------------------------------------------


def create(state: StateRoot, name: str, *, subnet: str | None, gateway: str | None, options: Mapping[str, str],
           labels: Mapping[str, str], internal: bool, attachable: bool, new_id: str, created: str) -> Network:
    """The network in the store: name, subnet and VNI claimed in one transaction (retried when
    another host took the subnet or VNI meanwhile; refused when it took the name)."""
    _, etcd = _session(state)
    try:
        for _ in range(50):
            if etcd.get(NETS + name) is not None:
                raise NetworkError.conflict(f"network with name {name} already exists")
            used = [ipaddress.IPv4Network(kv.key[len(SUBNETS):].replace("_", "/")) for kv in etcd.range(SUBNETS)[0]]
            if subnet:
                net_, gw = ipam.parse_subnet(subnet, gateway)
                if clash := next((u for u in used if u.overlaps(net_)), None):
                    raise NetworkError.conflict(f"subnet {net_} overlaps an overlay network's ({clash})")
            else:
                free = next((s for s in POOL.subnets(new_prefix=24) if s.network_address.packed[2]
                             and not any(u.overlaps(s) for u in used)), None)
                if free is None:
                    raise NetworkError("no free subnet left in the overlay pool 10.0.0.0/8")
                net_, gw = free, free.network_address + 1
            vnis = {int(kv.key[len(VNIS):]) for kv in etcd.range(VNIS)[0]}
            v = next(i for i in range(VNI_BASE, 1 << 24) if i not in vnis)
            net = Network(id=new_id, name=name, driver="overlay", created=created, subnet=str(net_),
                          gateway=str(gw), bridge=f"pb-{new_id[:12]}", internal=internal, attachable=attachable,
                          options={**options, VNI_OPT: str(v)}, labels=dict(labels))
            if etcd.create({NETS + name: _to_store(net), _subnet_key(net.subnet): net.id, VNIS + str(v): net.id}):
                return net
        raise NetworkError("could not allocate an overlay network: the store kept changing")
    finally:
        etcd.close()


def sync(state: StateRoot, save: Callable[[Network], None], load: Callable[[], list[Network]],
         drop: Callable[[Network], None], *, quiet: bool = True) -> None:
    """The root's overlay records follow the store: new networks appear, removed ones go (a
    network this host still has containers on stays until they leave). With the store down the
    records stay as they were (*quiet*) or the error is raised."""
    from builder.network.cluster.etcd import ClusterError

    try:  # a listing does not wait long for a member that does not answer
        _, etcd = _session(state, connect=0.5 if quiet else None)
        try:
            kvs, _ = etcd.range(NETS)
        finally:
            etcd.close()
    except ClusterError:
        if quiet:
            return
        raise
    _apply_networks(state, {(n := _from_store(kv.json())).id: n for kv in kvs}, save, load, drop)


def _apply_networks(state: StateRoot, wanted: Mapping[str, Network], save: Callable[[Network], None],
                    load: Callable[[], list[Network]], drop: Callable[[Network], None]) -> None:
    with state.lock("networks"):
        local = {n.id: n for n in load() if n.driver == "overlay"}
        for nid, net in wanted.items():
            if nid not in local:
                save(net)
        for nid, net in local.items():
            if nid not in wanted and not net.containers:
                drop(net)


def remove(state: StateRoot, net: Network) -> None:
    """Delete the network from the store: refused while another host has endpoints on it."""
    _, etcd = _session(state)
    try:
        others = etcd.range(f"{EPS}{net.id}/")[0]
        if others:
            raise NetworkError.conflict(
                f"error while removing network: network {net.name} id {net.id[:12]} has active endpoints "
                f"({len(others)} on other hosts)")
        kv = etcd.get(NETS + net.name)
        if kv is not None and kv.json().get("Id") == net.id:
            etcd.delete_if(kv.key, kv.mod_revision, also=(_subnet_key(net.subnet), VNIS + str(vni(net))))
        etcd.delete(f"{IPS}{net.id}/", prefix=True)
    finally:
        etcd.close()


# -- endpoints ----------------------------------------------------------------------------------


def claim_ip(state: StateRoot, net: Network, container_id: str, wanted: str | None,
             undo: list[Callable[[], None]]) -> ipaddress.IPv4Address:
    """An address no container anywhere has: ``ips/<net>/<ip>`` created on this host's lease."""
    m, etcd = _session(state)
    try:
        kv = etcd.get(NETS + net.name)
        if kv is None or kv.json().get("Id") != net.id:
            raise NetworkError.not_found(f"network {net.name} not found (removed from the cluster)")
        subnet = ipaddress.IPv4Network(net.subnet)
        for _ in range(100):
            used = [kv.key.rpartition("/")[2] for kv in etcd.range(f"{IPS}{net.id}/")[0]]
            addr = ipam.allocate(subnet, net.gateway, used, wanted)
            key = f"{IPS}{net.id}/{addr}"
            if _leased(state, m, etcd, functools.partial(_create_one, etcd, key, container_id)):
                undo.append(functools.partial(_delete_quietly, state, key, container_id))
                return addr
            if wanted:
                raise NetworkError.conflict(f"Address already in use: {wanted}")
        raise NetworkError("could not allocate an overlay address: the store kept changing")
    finally:
        etcd.close()


def _create_one(etcd: Etcd, key: str, value: str, lease: int) -> bool:
    return etcd.create({key: value}, lease=lease)


def _leased(state: StateRoot, m: Membership, etcd: Etcd, op: Callable[[int], T]) -> T:
    """*op* with this host's lease; if the store let it expire (a stalled agent), renew it
    (``membership.renew``: the agent republishes the rest) and try once more."""
    from builder.network.cluster.etcd import ClusterError

    try:
        return op(m.lease)
    except ClusterError as e:
        if "lease not found" not in str(e):
            raise
    return op(membership.renew(state, m, etcd).lease)


def _delete_quietly(state: StateRoot, key: str, owner: str) -> None:
    """Delete *key* if *owner* still holds it; with the store down, leave it to the lease."""
    from builder.network.cluster.etcd import ClusterError

    with contextlib.suppress(ClusterError):
        _, etcd = _session(state)
        try:
            etcd.delete_if_value(key, owner)
        finally:
            etcd.close()


def _ep_value(m: Membership, ep: Endpoint) -> str:
    return json.dumps({"Host": m.host_id, "Addr": m.advertise, "IP": ep.ip, "MAC": ep.mac, "Name": ep.name,
                       "Hostname": ep.hostname, "Aliases": list(ep.aliases), "Prefix": ep.prefixlen})


def publish(state: StateRoot, net: Network, ep: Endpoint) -> None:
    m, etcd = _session(state)
    try:
        _leased(state, m, etcd, lambda lease: etcd.put(f"{EPS}{net.id}/{ep.container_id}", _ep_value(m, ep), lease=lease))
    finally:
        etcd.close()


def unpublish(state: StateRoot, net: Network, ep: Endpoint) -> None:
    """The endpoint's keys go (with the store down they stay until the agent, reconciling when
    the store is back, or the host's lease removes them)."""
    with contextlib.suppress(NetworkError):  # a root that left the cluster: the lease took them
        m = membership_of(state)
        _delete_quietly(state, f"{EPS}{net.id}/{ep.container_id}", _ep_value(m, ep))
        _delete_quietly(state, f"{IPS}{net.id}/{ep.ip}", ep.container_id)


def membership_of(state: StateRoot) -> Membership:
    return membership.require(state)


def materialise(state: StateRoot, net: Network) -> None:
    """The VXLAN device in the network's bridge (made by the caller); the remote endpoints
    are programmed by ``program``."""
    m = membership.require(state)
    links.ensure_vxlan(vxlan_name(net), vni=vni(net), local=m.advertise, port=VXLAN_PORT, bridge=net.bridge,
                       mtu=MTU, alias=sweep.tag(state.path, net.id))


def remote_endpoints(state: StateRoot, net: Network) -> dict[str, Endpoint]:
    """The network's endpoints on other hosts, from the store."""
    m, etcd = _session(state)
    try:
        kvs = etcd.range(f"{EPS}{net.id}/")[0]
    finally:
        etcd.close()
    return {cid: ep for kv in kvs if (r := parse_endpoint(net, kv.key, kv.value, m.host_id)) for cid, ep in [r]}


def parse_endpoint(net: Network, key: str, value: bytes, me: str) -> tuple[str, Endpoint] | None:
    d = json.loads(value)
    if d.get("Host") == me:
        return None
    cid = key.rpartition("/")[2]
    return cid, Endpoint(container_id=cid, network_id=net.id, network_name=net.name, driver="overlay", netns=None,
                         ip=str(d["IP"]), prefixlen=int(d.get("Prefix") or 0), mac=str(d["MAC"]),
                         name=str(d.get("Name", "")), hostname=str(d.get("Hostname", "")),
                         aliases=tuple(d.get("Aliases") or ()), host_addr=str(d["Addr"]))


def program(net: Network, want: Mapping[str, Endpoint]) -> Network:
    """The VXLAN entries (FDB + neighbour) for exactly *want*; the record with them as its remote
    endpoints. Nothing is programmed while the network has no bridge here."""
    vx = vxlan_name(net)
    if not links.link_exists(vx):
        return replace(net, remote=dict(want))
    for cid, ep in net.remote.items():
        if cid not in want or want[cid] != ep:
            links.set_remote(vx, ep.ip, ep.mac, ep.host_addr, delete=True)
    for cid, ep in want.items():
        if net.remote.get(cid) != ep:
            links.set_remote(vx, ep.ip, ep.mac, ep.host_addr)
    return replace(net, remote=dict(want))


def dematerialise(net: Network) -> None:
    links.delete_link(vxlan_name(net))


def event_networks(events: Iterable[Event]) -> set[str]:
    """Network ids whose endpoints changed in *events*."""
    out = set()
    for ev in events:
        if ev.kv.key.startswith(EPS):
            out.add(ev.kv.key[len(EPS):].partition("/")[0])
    return out


def republish(state: StateRoot, m: Membership, etcd: Etcd, local: Sequence[Network]) -> None:
    """After the store or the lease came back: this host's endpoints and addresses are in the
    store exactly as the local records have them."""
    mine = {}
    for net in local:
        for cid, ep in net.containers.items():
            mine[f"{EPS}{net.id}/{cid}"] = _ep_value(m, ep)
            mine[f"{IPS}{net.id}/{ep.ip}"] = cid
    kvs = etcd.range(EPS)[0] + etcd.range(IPS)[0]
    for kv in kvs:
        if kv.lease == m.lease and kv.key not in mine:
            etcd.delete(kv.key)
    have = {kv.key: (kv.value, kv.lease) for kv in kvs}
    for k, v in mine.items():
        if have.get(k) != (v.encode(), m.lease):
            etcd.put(k, v, lease=m.lease)
