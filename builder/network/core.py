"""Network records and the attach/detach lifecycle that ties netns, links, rules and proxies.

Records are JSON under ``StateRoot.networks``, changed only under ``StateRoot.lock("networks")``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from builder.base.errors import NetworkError
from builder.base.filters import labels_match
from builder.base.state import StateRoot
from builder.base.values import replace
from builder.network import helpers, ipam, links, overlay, resolution, sweep
from builder.network.cluster import membership
from builder.network.model import (
    DRIVERS,
    PREDEFINED,
    PREDEFINED_DRIVERS,
    Endpoint,
    Network,
    PortMapping,
)
from builder.network.wire import dematerialise as _dematerialise
from builder.network.wire import materialise as _materialise
from builder.network.wire import unwire as _unwire
from builder.network.wire import veth_name as _veth_name  # noqa: F401 (tests name veths by it)
from builder.network.wire import wire as _wire

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
BRIDGE_NAME_OPT = "com.docker.network.bridge.name"



# -- paths --------------------------------------------------------------------------------------


def netns_path(state: StateRoot, container_id: str) -> Path:
    """The container's persistent network namespace file (what the sandbox ``setns``-es into)."""
    return state.run / "netns" / container_id


# -- records ------------------------------------------------------------------------------------


def _now() -> str:  # ``2024-05-01T12:00:00.123456Z``, in UTC (no ``datetime`` import)
    secs, us = divmod(time.time_ns() // 1000, 10**6)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{us:06d}Z"


def _write_json_atomic(path: Path, data: Mapping[str, object], *, durable: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def _record_path(state: StateRoot, network_id: str) -> Path:
    return state.networks / f"{network_id}.json"


def _save(state: StateRoot, net: Network, *, durable: bool = False) -> None:
    """Atomic always; fsync only for definitions: endpoints describe kernel objects that a
    crash of the machine takes with it anyway, and fsync costs ~10 ms per attach."""
    _write_json_atomic(_record_path(state, net.id), net.to_json(), durable=durable)


def _load_all(state: StateRoot) -> list[Network]:
    out = []
    if state.networks.is_dir():
        for p in sorted(state.networks.glob("*.json")):
            try:
                out.append(Network.from_json(json.loads(p.read_text())))
            except (OSError, ValueError, KeyError) as e:
                raise NetworkError(f"corrupt network record {p}: {e}") from e
    return out


def _new_id() -> str:
    return os.urandom(32).hex()


def _ensure_predefined(state: StateRoot, nets: list[Network]) -> list[Network]:
    """``bridge``, ``host`` and ``none`` exist in every state root, as in Docker."""
    have = {n.name for n in nets}
    added: list[Network] = []
    for name in PREDEFINED:
        if name in have:
            continue
        nid = _new_id()
        if name == "bridge":
            subnet = ipam.choose_subnet(_used_subnets(nets + added), default_network=True)
            net = Network(
                id=nid, name=name, driver="bridge", created=_now(), subnet=str(subnet),
                gateway=str(subnet.network_address + 1), bridge=f"pb-{nid[:12]}",
            )
        else:
            # dockerd's drivers of its predefined networks: host's is host, none's is null
            net = Network(id=nid, name=name, driver=PREDEFINED_DRIVERS[name], created=_now())
        _save(state, net)
        added.append(net)
    return nets + added


def _used_subnets(nets: Iterable[Network]) -> list[ipaddress.IPv4Network]:
    used = [ipaddress.IPv4Network(n.subnet) for n in nets if n.subnet]
    return used + links.host_routes()


@contextlib.contextmanager
def _locked(state: StateRoot) -> Iterator[list[Network]]:
    with state.lock("networks"):
        yield _ensure_predefined(state, _load_all(state))


def _find(nets: Sequence[Network], ref: str) -> Network:
    for n in nets:
        if ref in (n.name, n.id):
            return n
    matches = [n for n in nets if len(ref) >= 1 and n.id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise NetworkError(f"network {ref!r} is ambiguous ({len(matches)} matches)")
    raise NetworkError.not_found(f"network {ref} not found")


# -- networks -----------------------------------------------------------------------------------


def _sync(state: StateRoot, *, quiet: bool = True) -> None:
    """Overlay records follow the cluster store (only in a root that joined one)."""
    if overlay.joined(state):
        overlay.sync(state, lambda n: _save(state, n, durable=True), lambda: _load_all(state),
                     lambda n: _record_path(state, n.id).unlink(missing_ok=True), quiet=quiet)


def _sync_unless_known(state: StateRoot, ref: str) -> None:
    """Before an attach: the store is asked only for a network this root does not know (an
    overlay removed meanwhile is caught when its address is claimed)."""
    if overlay.joined(state):
        with _locked(state) as nets, contextlib.suppress(NetworkError):
            _find(nets, ref)
            return
        _sync(state)


def list_networks(state: StateRoot) -> list[Network]:
    _sync(state)
    with _locked(state) as nets:
        return sorted(nets, key=lambda n: n.name)


def leave_cluster(state: StateRoot, *, force: bool = False) -> None:
    """``cluster leave``: refused while this host's containers are on overlay networks (unless
    *force*), then ``membership.leave``."""
    if not force:
        with _locked(state) as nets:
            in_use = [n.name for n in nets if n.driver == "overlay" and n.containers]
        if in_use:
            raise NetworkError.conflict(f"containers of this host are on overlay network(s) {', '.join(in_use)}: "
                                        "remove them first (or leave with --force)")
    membership.leave(state, force=force)


NETWORK_FILTERS = ("name", "id", "driver", "label", "type")


def filter_networks(nets: Iterable[Network], filters: Mapping[str, Sequence[str]]) -> list[Network]:
    """``network ls --filter``: values of one key OR, keys AND (Docker's rule); ``name`` and
    ``id`` match a part/prefix, ``label`` is ``KEY`` or ``KEY=VALUE``, ``type`` is ``custom`` or
    ``builtin``. An unknown key or type is a ``NetworkError``."""
    for key, values in filters.items():
        if key not in NETWORK_FILTERS:
            raise NetworkError.invalid(f"Invalid filter '{key}'")
        for v in values if key == "type" else ():
            if v not in ("custom", "builtin"):
                raise NetworkError.invalid(f"Invalid filter 'type={v}'")

    def one(n: Network, key: str, v: str) -> bool:
        if key == "name":
            return v in n.name
        if key == "id":
            return n.id.startswith(v)
        if key == "driver":
            return n.driver == v
        if key == "type":
            return n.predefined == (v == "builtin")
        lk, sep, lv = v.partition("=")
        return lk in n.labels and (not sep or n.labels[lk] == lv)

    return [n for n in nets if all(any(one(n, k, v) for v in vs) for k, vs in filters.items() if vs)]


def get_network(state: StateRoot, ref: str) -> Network:
    """By name, full id or unique id prefix."""
    _sync(state)
    with _locked(state) as nets:
        return _find(nets, ref)


def create_network(
    state: StateRoot,
    name: str,
    *,
    driver: str = "bridge",
    subnet: str | None = None,
    gateway: str | None = None,
    options: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    internal: bool = False,
    attachable: bool = False,
    enable_ipv6: bool = False,
    subnet6: str | None = None,
    gateway6: str | None = None,
) -> Network:
    """``network create``: a bridge network is materialised (bridge + rules) right away; an
    overlay network is made in the cluster store (``overlay``), and on a host when it gets a
    container."""
    options = dict(options or {})
    if not name:  # as dockerd, any other name is taken: spaces, slashes, a leading dash
        raise NetworkError.invalid("invalid name: ")
    if driver in ("host", "null"):
        raise NetworkError(f'only one instance of "{driver}" network is allowed')
    if driver not in DRIVERS:
        raise NetworkError(f"unknown network driver {driver!r} (bridge, macvlan, overlay)")
    if gateway and not subnet:
        raise NetworkError("--gateway needs --subnet")
    if (enable_ipv6 or subnet6) and driver != "bridge":
        raise NetworkError(f"IPv6 is supported on bridge networks only, not {driver}")
    if enable_ipv6 != bool(subnet6):
        raise NetworkError.invalid("an IPv6 network needs --ipv6 and an IPv6 --subnet, together")
    net6, gw6 = ipam.parse_subnet6(subnet6, gateway6) if subnet6 else (None, None)
    if driver == "overlay":
        _sync(state, quiet=False)
        with _locked(state) as nets:
            if any(n.name == name for n in nets):
                raise NetworkError.conflict(f"network with name {name} already exists")
        net = overlay.create(state, name, subnet=subnet, gateway=gateway, options=options, labels=labels or {},
                             internal=internal, attachable=attachable, new_id=_new_id(), created=_now())
        with _locked(state):
            _save(state, net, durable=True)
        _event(state, net, "create")
        return net
    parent = ""
    if driver == "macvlan":
        parent = options.get("parent", "")
        if not parent:
            raise NetworkError("the macvlan driver needs -o parent=IFACE")
        if options.get("macvlan_mode", "bridge") != "bridge":
            raise NetworkError("only macvlan_mode=bridge is supported")
        if not links.link_exists(parent):
            raise NetworkError.not_found(f"macvlan parent interface {parent!r} not found")
    if driver == "bridge":
        sweep.sweep()  # what removed roots left holds subnets and bridge names
    with _locked(state) as nets:
        if any(n.name == name for n in nets):
            raise NetworkError.conflict(f"network with name {name} already exists")
        if subnet:
            net_, gw = ipam.parse_subnet(subnet, gateway)
            for n in nets:
                if n.subnet and ipaddress.IPv4Network(n.subnet).overlaps(net_):
                    raise NetworkError(f"subnet {net_} overlaps network {n.name} ({n.subnet})")
            if driver == "bridge":
                for r in links.host_routes():
                    if r.prefixlen > 0 and r.overlaps(net_):
                        raise NetworkError(f"subnet {net_} overlaps a host route ({r})")
        else:
            net_ = ipam.choose_subnet(_used_subnets(nets))
            gw = net_.network_address + 1
        nid = _new_id()
        bridge = ""
        if driver == "bridge":
            bridge = options.get(BRIDGE_NAME_OPT) or f"pb-{nid[:12]}"
            if len(bridge) > 15 or not re.match(r"^[a-zA-Z0-9_.-]+$", bridge):
                raise NetworkError.invalid(f"invalid bridge name {bridge!r}")
            if any(n.bridge == bridge for n in nets) or links.link_exists(bridge):
                raise NetworkError.conflict(f"bridge name {bridge} is already in use")
        for n in nets:
            if net6 is not None and n.subnet6 and ipaddress.IPv6Network(n.subnet6).overlaps(net6):
                raise NetworkError(f"subnet {net6} overlaps network {n.name} ({n.subnet6})")
        net = Network(
            id=nid, name=name, driver=driver, created=_now(), subnet=str(net_), gateway=str(gw),
            bridge=bridge, parent=parent, internal=internal, options=options,
            labels=dict(labels or {}), subnet6=str(net6 or ""), gateway6=str(gw6 or ""),
        )
        if driver == "bridge":
            try:
                _materialise(state, net)
            except BaseException:
                _dematerialise(net)
                raise
        _save(state, net, durable=True)
    _event(state, net, "create")
    return net


def remove_network(state: StateRoot, ref: str, *, _predefined: bool = False) -> Network:
    """``network rm``: refused for the predefined networks and for networks in use."""
    with _locked(state) as nets:
        net = _find(nets, ref)
        if net.predefined and not _predefined:
            raise NetworkError(f"{net.name} is a pre-defined network and cannot be removed")
        if net.containers:
            raise NetworkError.conflict(
                f"error while removing network: network {net.name} id {net.id[:12]} has active "
                f"endpoints ({len(net.containers)})"
            )
        if net.driver == "overlay" and not _predefined:
            overlay.remove(state, net)
        if net.dns_pid:
            helpers.stop(net.dns_pid, helpers.DNS, net.id)
        _dematerialise(net)
        _record_path(state, net.id).unlink(missing_ok=True)
    _event(state, net, "destroy")
    return net


def _event(state: StateRoot, net: Network, action: str, **extra: str) -> None:
    """A network event in the root's event log (``GET /events``), from the CLI or the daemon."""
    from builder.base import events

    events.emit(state, "network", action, net.id, {"name": net.name, "type": net.driver, **extra})


def prune_networks(state: StateRoot, *, label_filters: Sequence[str] = ()) -> list[str]:
    """``network prune``: remove user-defined networks with no containers; returns names."""
    removed = []
    for net in list_networks(state):
        if net.predefined or net.containers or not labels_match(net.labels, label_filters):
            continue
        with contextlib.suppress(NetworkError):
            remove_network(state, net.id)
            removed.append(net.name)
    return removed


# -- endpoints ----------------------------------------------------------------------------------


def endpoints(state: StateRoot, container_id: str) -> list[Endpoint]:
    """Every network the container is attached to, in attach order of the record files."""
    out = [ep for net in list_networks(state) if (ep := net.containers.get(container_id)) is not None]
    return sorted(out, key=lambda e: e.ifname)


def shared_netns(state: StateRoot, container_id: str) -> Path:
    """``--network container:<id>``: the netns path of a container that has one (after
    resolving the name, the caller joins it and reuses that container's hosts/resolv files)."""
    p = netns_path(state, container_id)
    if not links.is_netns(p):
        raise NetworkError.conflict(f"container {container_id[:12]} has no network namespace (not running?)")
    return p


def attach(
    state: StateRoot,
    container_id: str,
    network: str,
    *,
    name: str = "",
    aliases: Sequence[str] = (),
    ip: str | None = None,
    hostname: str = "",
    ports: Sequence[PortMapping] = (),
    extra_hosts: Sequence[str] = (),
    dns: Sequence[str] = (),
    dns_search: Sequence[str] = (),
    dns_options: Sequence[str] = (),
    mac: str | None = None,
) -> Endpoint:
    """Connect a container to a network, creating its netns file on first use.

    *mac* (``--mac-address``) is the interface's address instead of the one made from its IP.

    *extra_hosts* (``name:ip``, ``name:host-gateway``) and the *dns* settings go into the
    container's hosts and resolv.conf files; on a user-defined network the DNS servers become
    the upstreams of the network's DNS server for this container, as Docker's embedded DNS does.

    On failure nothing is left behind: sockets, proxy, rules, links and a netns made here go.
    """
    if mac and not MAC_RE.match(mac):  # dockerd's words (Go's net.ParseMAC)
        raise NetworkError(f"address {mac}: invalid MAC address")
    for a in aliases:
        if not NAME_RE.match(a):
            raise NetworkError.invalid(f"invalid network alias {a!r}")
    _sync_unless_known(state, network)
    with _locked(state) as nets, links.session():
        net = _find(nets, network)
        mine = [n for n in nets if container_id in n.containers]
        if net in mine:
            raise NetworkError.conflict(f"container {name or container_id[:12]} is already connected to network {net.name}")
        drivers = {n.driver for n in mine}
        if net.driver == "host" and mine:
            raise NetworkError("container cannot be connected to the host network and another one")
        if "host" in drivers:
            raise NetworkError(f"container uses the host network: cannot connect it to {net.name}")
        if "null" in drivers or (net.driver == "null" and mine):
            raise NetworkError("a container on network none cannot be connected to other networks")
        if ip and not net.user_defined:
            raise NetworkError("user specified IP address is supported on user defined networks only")
        if aliases and not net.user_defined:
            raise NetworkError("network-scoped aliases are supported for user-defined networks only")
        ep = Endpoint(
            container_id=container_id, network_id=net.id, network_name=net.name,
            driver=net.driver, netns=None, name=name, hostname=hostname or container_id[:12],
            aliases=tuple(aliases), hosts_path=resolution.hosts_path(state, container_id),
            resolv_path=resolution.resolv_path(state, container_id), dns=tuple(dns),
            dns_search=tuple(dns_search), dns_options=tuple(dns_options),
        )
        if net.driver == "bridge" and not net.user_defined and not net.containers:
            net = _refresh_default_subnet(state, nets, net)
        ep = replace(ep, extra_hosts=resolve_extra_hosts(extra_hosts, _host_gateway(nets, net)))
        if net.driver == "host":
            return _commit(state, nets, net, ep)
        ep = replace(ep, netns=netns_path(state, container_id))
        undo: list[Callable[[], None]] = []
        try:
            assert ep.netns is not None
            if not links.is_netns(ep.netns):
                links.create_netns(ep.netns)
                undo.append(lambda: links.remove_netns(netns_path(state, container_id)))
            if net.driver in ("bridge", "macvlan", "overlay"):
                ep = _wire(state, net, ep, ip, ports, undo, mac)
            if net.driver == "overlay":
                overlay.publish(state, net, ep)
                if not net.containers:  # first container here: the remote endpoints (VXLAN, DNS)
                    net = overlay.program(net, overlay.remote_endpoints(state, net))
            if net.driver in ("bridge", "overlay") and net.user_defined:
                before = net.dns_pid
                net = helpers.ensure_dns(state, net)
                if net.dns_pid and net.dns_pid != before:
                    started = net

                    def stop_dns() -> None:
                        helpers.stop(started.dns_pid, helpers.DNS, started.id)

                    undo.append(stop_dns)
            return _commit(state, nets, net, ep)
        except BaseException:
            for u in reversed(undo):
                with contextlib.suppress(Exception):
                    u()
            raise


def _host_gateway(nets: Sequence[Network], net: Network) -> str:
    """``host-gateway``: the host's address on a bridge network (its gateway); elsewhere the
    default bridge's gateway, the address Docker gives (docker0's)."""
    if net.driver == "bridge" and net.gateway:
        return net.gateway
    return next((n.gateway for n in nets if n.name == "bridge" and n.gateway), "")


def default_host_gateway(state: StateRoot) -> str:
    """``host-gateway`` for a container on no network (the default bridge's gateway)."""
    with _locked(state) as nets:
        return next((n.gateway for n in nets if n.name == "bridge" and n.gateway), "")


def resolve_extra_hosts(entries: Sequence[str], gateway: str) -> tuple[str, ...]:
    """``name:host-gateway`` → ``name:<gateway>``; other ``name:ip`` entries as they are."""
    out = []
    for e in entries:
        name, _, addr = e.partition(":")
        if addr == "host-gateway":
            if not gateway:
                raise NetworkError(f"--add-host {e}: no host gateway address is known")
            addr = gateway
        out.append(f"{name}:{addr}")
    return tuple(out)


def _refresh_default_subnet(state: StateRoot, nets: list[Network], net: Network) -> Network:
    """The default bridge is materialised lazily: if, by then, its subnet has been taken by a
    route (another tool, another state root), move it to a free one before first use."""
    if links.link_exists(net.bridge):
        return net
    sweep.sweep()  # the bridge is made now: what removed roots left goes first
    mine = ipaddress.IPv4Network(net.subnet)
    routes = links.host_routes()
    if not any(r.prefixlen > 0 and r.overlaps(mine) for r in routes):
        return net
    others = [ipaddress.IPv4Network(n.subnet) for n in nets if n.subnet and n.id != net.id]
    subnet = ipam.choose_subnet(routes + others, default_network=True)
    updated = replace(net, subnet=str(subnet), gateway=str(subnet.network_address + 1))
    _save(state, updated, durable=True)
    return updated


def _commit(state: StateRoot, nets: list[Network], net: Network, ep: Endpoint) -> Endpoint:
    containers = dict(net.containers)
    containers[ep.container_id] = ep
    updated = replace(net, containers=containers)
    _save(state, updated)
    nets = [updated if n.id == net.id else n for n in nets]
    resolution.sync_files(state, nets, net.id, also=ep.container_id)
    _event(state, net, "connect", container=ep.container_id)
    return ep


def _drop(state: StateRoot, nets: list[Network], net: Network, container_id: str) -> list[Network]:
    """The record without the container; the DNS server stops with the last container. The
    default bridge and its network rules stay up, as Docker's docker0 does (making and deleting
    them cost ~90 ms per container); ``reset`` removes them."""
    containers = {k: v for k, v in net.containers.items() if k != container_id}
    updated = replace(net, containers=containers)
    if not containers and net.dns_pid:
        helpers.stop(net.dns_pid, helpers.DNS, net.id)
        updated = replace(updated, dns_pid=0)
    if not containers and net.driver == "overlay":  # a host holds an overlay while it has containers
        _dematerialise(net)
        updated = replace(updated, remote={})
    _save(state, updated)
    return [updated if n.id == net.id else n for n in nets]


def detach(state: StateRoot, container_id: str, network: str) -> None:
    """Disconnect: the interface, addresses, rules and proxy for this network go; the netns stays."""
    with _locked(state) as nets, links.session():
        net = _find(nets, network)
        ep = net.containers.get(container_id)
        if ep is None:
            raise NetworkError(f"container {container_id[:12]} is not connected to network {net.name}")
        _unwire(net, ep, state)
        nets = _drop(state, nets, net, container_id)
        resolution.sync_files(state, nets, net.id, also=container_id)
    _event(state, net, "disconnect", container=container_id)


def release(state: StateRoot, container_id: str) -> None:
    """Undo everything networking did for a container: endpoints, netns file, hosts files."""
    with _locked(state) as nets, links.session():
        mine = [n for n in nets if container_id in n.containers]
        veths = [_unwire(n, n.containers[container_id], state, netns_going=True) for n in mine]
        # the veths go with the namespace: the records and files are done meanwhile
        with links.removing_netns(netns_path(state, container_id), veths=[v for v in veths if v]):
            for net in mine:
                nets = _drop(state, nets, net, container_id)
                resolution.sync_files(state, nets, net.id)
            d_ = resolution.files_dir(state, container_id)
            for p in (resolution.hosts_path(state, container_id), resolution.resolv_path(state, container_id)):
                p.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                d_.rmdir()


def reset(state: StateRoot) -> None:
    """Release every container and remove every network, predefined ones included, with
    their links, rules and helpers (tests, and ``builder.system.reset.reset``): the host is left as
    before the first use, and the root holds no network record."""
    cids = {cid for net in list_networks(state) for cid in net.containers}
    if (state.run / "netns").is_dir():  # containers detached from every network keep a netns
        cids.update(p.name for p in (state.run / "netns").iterdir())
    for cid in sorted(cids):
        release(state, cid)
    for net in list_networks(state):
        remove_network(state, net.id, _predefined=True)  # an overlay stays in the store
    if overlay.joined(state):  # the host leaves the cluster: its lease and keys go
        with contextlib.suppress(NetworkError):
            leave_cluster(state, force=True)
    # each removal above re-creates the predefined records it finds missing (unmaterialised):
    # drop them too, so that the root holds no network at all
    with state.lock("networks"):
        for net in _load_all(state):
            if net.predefined and not net.containers:
                _dematerialise(net)
                _record_path(state, net.id).unlink(missing_ok=True)


# -- name resolution ----------------------------------------------------------------------------


def hosts_entries(state: StateRoot, container_id: str) -> str:
    """``/etc/hosts`` for a container: itself, plus its peers by name and alias on user networks."""
    with _locked(state) as nets:
        return resolution.hosts_content(nets, container_id)


def resolv_conf(state: StateRoot, container_id: str) -> str:
    """``/etc/resolv.conf``: the host's, minus loopback nameservers off the host network
    (unreachable from a netns), falling back to public resolvers like Docker does."""
    with _locked(state) as nets:
        return resolution.resolv_for(nets, container_id)
