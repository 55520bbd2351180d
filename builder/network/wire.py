"""Wiring one endpoint into the kernel and out again: a network's bridge, VXLAN device and
rules (materialise), the container's veth or macvlan, its address and published ports (wire),
and their removal. Called by ``core`` under the networks lock."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import threading
from collections.abc import Callable, Sequence

from builder.base.errors import NetworkError
from builder.base.state import StateRoot
from builder.base.values import replace
from builder.network import firewall, helpers, ipam, links, overlay, sweep
from builder.network.model import Endpoint, Network, PortMapping
from registry.digest import Digest


def materialise(state: StateRoot, net: Network) -> None:
    """The bridge (its alias naming the root: ``sweep``), its address and its rules
    (idempotent: after a reboot they come back)."""
    if "_PYBUILD_ROOTLESS" in os.environ:  # in the user's network namespace (builder.network.rootless)
        from builder.network import rootless as rootless_net

        if not rootless_net.in_user_netns():
            return rootless_net.materialise(net, lambda: materialise(state, net))
    prefixlen = ipaddress.IPv4Network(net.subnet).prefixlen
    if links.bridge_ready(net.bridge, net.gateway) and (
            net.driver != "overlay" or links.link_exists(overlay.vxlan_name(net))):
        return  # bridge and rules are made together; checking the rules costs 10 ms
    alias = sweep.tag(state.path, net.id)
    rules = firewall.network_rules(net.id, net.bridge, net.subnet, internal=net.internal)
    with firewall.locked():  # rules name the bridge: they may come first
        bridge_made = _beside(lambda: links.ensure_bridge(
            net.bridge, net.gateway, prefixlen, alias=alias, gateway6=net.gateway6, prefixlen6=_prefixlen6(net)))
        try:
            firewall.replace_tagged(firewall.network_tag(net.id), rules)
        except BaseException:
            with contextlib.suppress(Exception):
                bridge_made()
            raise
        try:
            bridge_made()
        except BaseException:
            firewall.remove_tagged(firewall.network_tag(net.id))  # made together, or neither
            raise
    if net.driver == "overlay":  # its VXLAN device
        overlay.materialise(state, net)


def _prefixlen6(net: Network) -> int:
    return ipaddress.IPv6Network(net.subnet6).prefixlen if net.subnet6 else 0


def dematerialise(net: Network) -> None:
    if net.driver not in ("bridge", "overlay"):  # no bridge made
        return
    if "_PYBUILD_ROOTLESS" in os.environ:  # in the user's network namespace (builder.network.rootless)
        from builder.network import rootless as rootless_net

        if not rootless_net.in_user_netns():
            return rootless_net.dematerialise(net, lambda: dematerialise(net))
    def unlink() -> None:
        if net.driver == "overlay":
            overlay.dematerialise(net)
        links.delete_link(net.bridge)

    with firewall.locked():
        unlinked = _beside(unlink)
        try:
            firewall.remove_tagged(firewall.network_tag(net.id))
        finally:
            unlinked()


def _beside(fn: Callable[[], object]) -> Callable[[], None]:
    """*fn* run in a thread (in this thread's network namespace) while the caller goes on: a
    bridge made or deleted waits ~10-40 ms in the kernel, the rules' iptables processes run
    meanwhile. The function returned joins it and raises what *fn* raised."""
    err: list[BaseException] = []

    def work() -> None:
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 (raised again by the join)
            err.append(e)

    t = threading.Thread(target=work, name="pybuild-netlink")
    t.start()

    def join() -> None:
        t.join()
        if err:
            raise err[0]

    return join


def veth_name(container_id: str, network_id: str) -> str:
    # ``Digest.of``: CPython's own SHA-256 for small data (hashlib loads OpenSSL: ~3 ms)
    return "pbv" + Digest.of(f"{container_id}/{network_id}".encode()).encoded[:12]


def wire(
    state: StateRoot, net: Network, ep: Endpoint, ip: str | None,
    ports: Sequence[PortMapping], undo: list[Callable[[], None]], given_mac: str | None = None,
) -> Endpoint:
    if "_PYBUILD_ROOTLESS" in os.environ:  # builder.network.rootless: slirp4netns, or the user's netns
        from builder.network import rootless as rootless_net

        if not net.user_defined:
            return rootless_net.wire(state, ep, ports, undo)
        if not rootless_net.in_user_netns():
            return rootless_net.wire_user(
                net, ports, lambda p, u: wire(state, net, ep, ip, p, u, given_mac), undo)
    netns = ep.netns
    assert netns is not None
    subnet = ipaddress.IPv4Network(net.subnet)
    if net.driver == "overlay":
        addr = overlay.claim_ip(state, net, ep.container_id, ip, undo)
    else:
        addr = ipam.allocate(subnet, net.gateway, [e.ip for e in net.containers.values()], ip)
    mac = given_mac.lower() if given_mac else ipam.mac_for(addr)
    ifname = links.free_ifname(netns)
    ep = replace(ep, ifname=ifname, ip=str(addr), prefixlen=subnet.prefixlen, gateway=net.gateway, mac=mac)
    first = ifname == "eth0"  # the first network gives the default route, as in Docker
    if net.driver == "macvlan":
        links.add_macvlan(
            parent=net.parent, netns=netns, ifname=ifname, ip=str(addr),
            prefixlen=subnet.prefixlen, gateway=net.gateway, mac=mac, default_route=first,
            tmp_name="pbm" + veth_name(ep.container_id, net.id)[3:],
        )
        undo.append(lambda: links.remove_ifname_in(netns, ifname))
        return ep
    # bind published ports first: "port already in use" must fail before anything is made
    socks = helpers.bind_ports(ports)

    def close_socks() -> None:
        for s, _ in socks:
            s.close()

    undo.append(close_socks)
    materialise(state, net)
    if net.driver == "overlay" and not net.containers:
        undo.append(lambda: dematerialise(net))
    veth = veth_name(ep.container_id, net.id)
    if net.subnet6:  # EnableIPv6: the lowest free address of the v6 subnet too
        ip6 = ipam.allocate6(ipaddress.IPv6Network(net.subnet6), net.gateway6,
                             [e.ip6 for e in net.containers.values()])
        ep = replace(ep, ip6=str(ip6), prefixlen6=_prefixlen6(net), gateway6=net.gateway6)
    links.add_veth(
        host_name=veth, bridge=net.bridge, netns=netns, ifname=ifname, ip=str(addr),
        prefixlen=subnet.prefixlen, gateway=net.gateway, mac=mac, default_route=first,
        alias=sweep.tag(state.path, net.id), mtu=overlay.MTU if net.driver == "overlay" else None,
        ip6=ep.ip6, prefixlen6=ep.prefixlen6, gateway6=net.gateway6,
    )
    undo.append(lambda: None if links.delete_link(veth) else None)
    ep = replace(ep, host_veth=veth)
    if socks:
        bindings = tuple(b for _, b in socks)
        with firewall.locked():
            firewall.add(
                firewall.port_rules(
                    net.id, ep.container_id, net.bridge, str(addr),
                    [(b.protocol, b.host_ip, b.host_port, b.container_port) for b in bindings],
                )
            )
        undo.append(lambda: remove_port_rules(net.id, ep.container_id))
        pid = helpers.start_proxy(ep.container_id, str(addr), socks)
        undo.append(lambda: helpers.stop_proxy(pid, ep.container_id))
        ep = replace(ep, ports=bindings, proxy_pid=pid)
    return ep


def unwire(net: Network, ep: Endpoint, state: StateRoot | None = None, *, netns_going: bool = False) -> str:
    """Undo *ep*'s wiring. *netns_going*: its namespace is removed next (``release``): a veth
    is left to go with it, and its host end's name returned (for ``links.removing_netns``)."""
    if "_PYBUILD_ROOTLESS" in os.environ:  # builder.network.rootless: slirp4netns, or the user's netns
        from builder.network import rootless as rootless_net

        if not net.user_defined:
            rootless_net.unwire(state, ep)
            return ""
        if not rootless_net.in_user_netns():
            rootless_net.unwire_user(ep, lambda: unwire(net, ep, state))
            return ""
    if net.driver == "overlay" and state is not None:
        overlay.unpublish(state, net, ep)
    if ep.proxy_pid:
        helpers.stop_proxy(ep.proxy_pid, ep.container_id)
    if ep.ports:
        rules = firewall.port_rules(
            net.id, ep.container_id, net.bridge, ep.ip,
            [(b.protocol, b.host_ip, b.host_port, b.container_port) for b in ep.ports],
        )
        with firewall.locked():
            firewall.remove_exact(rules, firewall.endpoint_tag(net.id, ep.container_id))
    if ep.host_veth and netns_going and ep.netns is not None and links.is_netns(ep.netns):
        return ep.host_veth
    gone = False
    if ep.host_veth:
        # from the host side: its peer in the container goes with it, and no netlink socket
        # has to be opened inside the namespace (that costs ~30 ms)
        with contextlib.suppress(NetworkError, OSError):
            gone = links.delete_link(ep.host_veth)
    if ep.netns is not None and ep.ifname and not gone:
        with contextlib.suppress(NetworkError, OSError):
            links.remove_ifname_in(ep.netns, ep.ifname)
    return ""


def remove_port_rules(network_id: str, container_id: str) -> None:
    with firewall.locked():
        firewall.remove_tagged(firewall.endpoint_tag(network_id, container_id))
