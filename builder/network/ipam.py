"""Address management: pick a subnet no route on the host uses, hand out and check addresses.

Pure functions over ``ipaddress`` values; the caller supplies the host's routes and the records.
"""

from __future__ import annotations

import bisect
import ipaddress
import itertools
from collections.abc import Iterable

from builder.base.errors import NetworkError

IPv4Net = ipaddress.IPv4Network

#: the default ``bridge`` network takes the first free /16 here (Docker uses 172.17.0.0/16,
#: which too often collides with VPNs and cloud ranges)
DEFAULT_POOL = [ipaddress.IPv4Network(f"10.{b}.0.0/16") for b in range(88, 96)]
#: user-defined networks take the first free /24 out of these /16s
USER_POOL = [ipaddress.IPv4Network(f"10.{b}.0.0/16") for b in range(89, 100)]


def choose_subnet(
    used: Iterable[IPv4Net], *, default_network: bool = False
) -> IPv4Net:
    """The first candidate that overlaps nothing in *used* (host routes + existing networks)."""
    # as integer ranges: ``ipaddress`` objects made ~6,000 candidates cost 40 ms a network;
    # the used ranges merged into disjoint ones, sorted: one bisect per candidate (each used
    # /16 on the host is 256 candidates to skip)
    los: list[int] = []
    his: list[int] = []
    for lo, hi in sorted((int(u.network_address), int(u.broadcast_address)) for u in used if u.prefixlen > 0):
        if his and lo <= his[-1] + 1:
            his[-1] = max(his[-1], hi)
        else:
            los.append(lo)
            his.append(hi)
    slices = ((int(pool.network_address) + (i << 8), 24) for pool in USER_POOL for i in range(256))
    # a default bridge whose /16s are all taken still gets a /24
    big = ((int(p.network_address), p.prefixlen) for p in DEFAULT_POOL)
    candidates: Iterable[tuple[int, int]] = itertools.chain(big, slices) if default_network else slices
    for start, prefixlen in candidates:
        end = start + (1 << (32 - prefixlen)) - 1
        i = bisect.bisect_right(los, end) - 1  # the last used range starting at or before *end*
        if i < 0 or his[i] < start:
            return ipaddress.IPv4Network((start, prefixlen))
    raise NetworkError("no free subnet left in the address pool: pass --subnet")


def parse_subnet(subnet: str, gateway: str | None) -> tuple[IPv4Net, ipaddress.IPv4Address]:
    """Validate ``--subnet`` (CIDR, IPv4) and ``--gateway`` (in the subnet; first host by default)."""
    try:
        net = ipaddress.ip_network(subnet, strict=True)
    except ValueError as e:
        raise NetworkError.invalid(f"invalid subnet {subnet!r}: {e}") from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise NetworkError.invalid(f"invalid subnet {subnet!r}: only IPv4 is supported")
    if net.prefixlen > 30:
        raise NetworkError.invalid(f"invalid subnet {subnet!r}: too small (at most /30)")
    if gateway:
        try:
            gw = ipaddress.ip_address(gateway)
        except ValueError:
            raise NetworkError.invalid(f"invalid gateway {gateway!r}") from None
        if not isinstance(gw, ipaddress.IPv4Address) or gw not in net:
            raise NetworkError(f"gateway {gateway} is not in subnet {subnet}")
        if gw in (net.network_address, net.broadcast_address):
            raise NetworkError(f"gateway {gateway} is not a usable address of {subnet}")
    else:
        gw = net.network_address + 1
    return net, gw


def allocate(
    subnet: IPv4Net, gateway: str, in_use: Iterable[str], requested: str | None = None
) -> ipaddress.IPv4Address:
    """The requested address (checked) or the lowest free host address of *subnet*."""
    taken = {ipaddress.IPv4Address(a) for a in in_use if a}
    if gateway:
        taken.add(ipaddress.IPv4Address(gateway))
    if requested:
        try:
            addr = ipaddress.ip_address(requested)
        except ValueError:
            raise NetworkError.invalid(f"invalid IP address {requested!r}") from None
        if addr not in subnet or addr in (subnet.network_address, subnet.broadcast_address):
            raise NetworkError(f"address {requested} is not a usable address of {subnet}")
        if addr in taken:
            raise NetworkError.conflict(f"address {requested} is already in use on {subnet}")
        assert isinstance(addr, ipaddress.IPv4Address)
        return addr
    for addr in subnet.hosts():
        if addr not in taken:
            return addr
    raise NetworkError(f"no free address left in {subnet}")


def parse_subnet6(subnet: str, gateway: str | None) -> tuple[ipaddress.IPv6Network, ipaddress.IPv6Address]:
    """An IPv6 ``--subnet`` (at most /126) and its gateway (first address after the network's
    by default, as dockerd)."""
    try:
        net = ipaddress.IPv6Network(subnet, strict=True)
    except ValueError as e:
        raise NetworkError.invalid(f"invalid subnet {subnet!r}: {e}") from None
    if net.prefixlen > 126:
        raise NetworkError.invalid(f"invalid subnet {subnet!r}: too small (at most /126)")
    try:
        gw = ipaddress.IPv6Address(gateway) if gateway else net.network_address + 1
    except ValueError:
        raise NetworkError.invalid(f"invalid gateway {gateway!r}") from None
    if gw not in net or gw == net.network_address:
        raise NetworkError(f"gateway {gateway} is not in subnet {subnet}")
    return net, gw


def allocate6(subnet: ipaddress.IPv6Network, gateway: str, in_use: Iterable[str]) -> ipaddress.IPv6Address:
    """The lowest free address of an IPv6 subnet (the gateway and the network address are taken)."""
    taken = {ipaddress.IPv6Address(a) for a in (*in_use, gateway) if a}
    addr = subnet.network_address + 1
    while addr in subnet:
        if addr not in taken:
            return addr
        addr += 1
    raise NetworkError(f"no free address left in {subnet}")


def mac_for(ip: ipaddress.IPv4Address) -> str:
    """Docker's rule: ``02:42`` then the four bytes of the IPv4 address (stable, unique per net)."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ip.packed)
