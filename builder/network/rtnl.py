"""A small rtnetlink client: the few ``NETLINK_ROUTE`` messages bridge networks need (links:
bridge, veth, macvlan, vxlan, set master/up/name/address/alias/mtu, delete; IPv4 addresses and
routes; neighbour and bridge forwarding entries for overlay networks).

One raw ``AF_NETLINK`` socket per network namespace, requests answered in order (an ack or a
dump). It replaces pyroute2 on the hot path: importing that alone cost ~70 ms of every command
that touched a network. Errors are ``OSError`` with the kernel's errno.
"""

from __future__ import annotations

# the C module itself: socket.py's enum classes cost ~2 ms at import, and a raw netlink
# socket needs none of them
import _socket
import errno
import ipaddress
import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path

# message types, flags (linux/netlink.h, linux/rtnetlink.h)
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_GETADDR = 20, 22
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
RTM_NEWNEIGH, RTM_DELNEIGH = 28, 29
F_REQUEST, F_MULTI, F_ACK, F_DUMP = 0x1, 0x2, 0x4, 0x300
F_REPLACE, F_EXCL, F_CREATE = 0x100, 0x200, 0x400
RTMGRP_LINK = 1  # the multicast group of link changes (linux/rtnetlink.h)
# attributes
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_LINKINFO, IFLA_IFALIAS, IFLA_NET_NS_FD = 18, 20, 28
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFLA_MACVLAN_MODE, MACVLAN_MODE_BRIDGE = 1, 4
IFLA_VXLAN_ID, IFLA_VXLAN_LOCAL, IFLA_VXLAN_LEARNING, IFLA_VXLAN_PROXY, IFLA_VXLAN_PORT = 1, 4, 7, 11, 15
NDA_DST, NDA_LLADDR = 1, 2
NUD_PERMANENT, NTF_SELF = 0x80, 0x02
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_GATEWAY = 1, 5
IFF_UP = 1
RT_TABLE_MAIN, RTPROT_BOOT, RTN_UNICAST = 254, 3, 1

_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg: family, dst_len, src_len, tos, table, proto, scope, type, flags
_ATTR = struct.Struct("=HH")
_NDMSG = struct.Struct("=BxxxiHBB")  # ndmsg: family, index, state, flags, type


def attr(kind: int, data: bytes) -> bytes:
    """One rtattr, padded to 4 bytes."""
    n = _ATTR.size + len(data)
    return _ATTR.pack(n, kind) + data + b"\0" * (-n & 3)


def _str(s: str) -> bytes:
    return s.encode() + b"\0"


def _u32(v: int) -> bytes:
    return struct.pack("=I", v)


def parse_attrs(data: bytes, offset: int = 0) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while offset + _ATTR.size <= len(data):
        n, kind = _ATTR.unpack_from(data, offset)
        if n < _ATTR.size:
            break
        out[kind & 0x3FFF] = data[offset + _ATTR.size : offset + n]
        offset += (n + 3) & ~3
    return out


def _messages(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """The netlink messages of one datagram: ``(type, flags, seq, payload)``."""
    offset = 0
    while offset + _HDR.size <= len(data):
        n, mtype, mflags, mseq, _ = _HDR.unpack_from(data, offset)
        yield mtype, mflags, mseq, data[offset + _HDR.size : offset + n]
        offset += (n + 3) & ~3


def _text(b: bytes | None) -> str:
    return b.rstrip(b"\0").decode(errors="replace") if b else ""


class Link:
    """One link as the kernel reported it (a plain class: no dataclass is made at import on
    every network command's path)."""

    __slots__ = ("index", "name", "up", "master", "alias", "kind")

    def __init__(self, index: int, name: str, up: bool, master: int, alias: str, kind: str) -> None:
        self.index, self.name, self.up, self.master, self.alias, self.kind = index, name, up, master, alias, kind

    def __repr__(self) -> str:
        return f"Link({self.index}, {self.name!r}, up={self.up}, master={self.master}, kind={self.kind!r})"


def write_sysctls(netns: Path, values: dict[str, str]) -> None:
    """Write ``/proc/sys`` entries (``net/ipv6/conf/all/disable_ipv6`` …) of the network
    namespace *netns* names, from a short-lived thread that joins it (a net sysctl file is the
    namespace of the task that opens it)."""
    from builder.base import syscalls

    def work() -> None:
        for key, value in values.items():
            with open(f"/proc/sys/{key}", "w") as f:
                f.write(value)

    syscalls.in_network_namespace(netns, work)


class Netlink:
    """A ``NETLINK_ROUTE`` socket in this network namespace or the one *netns* names (opened
    from a short-lived thread that joins it: the socket stays bound to that namespace).
    *groups*: the multicast groups it listens to (``RTMGRP_LINK``: ``await_deleted``)."""

    def __init__(self, netns: Path | None = None, *, groups: int = 0) -> None:
        self._seq = 0

        def open_() -> _socket.socket:
            s = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, _socket.NETLINK_ROUTE)
            s.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, 1 << 20)
            s.bind((0, groups))
            return s

        if netns is None:
            self._sock = open_()
            return
        from builder.base import syscalls

        self._sock = syscalls.in_network_namespace(netns, open_)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -----------------------------------------------------------------------------
    def request(self, kind: int, body: bytes, *, flags: int = F_ACK) -> list[tuple[int, bytes]]:
        """Send one message; return the payloads answered (a dump's items; nothing for an ack)."""
        self._seq += 1
        seq = self._seq
        self._sock.send(_HDR.pack(_HDR.size + len(body), kind, F_REQUEST | flags, seq, 0) + body)
        out: list[tuple[int, bytes]] = []
        while True:
            for mtype, mflags, mseq, payload in _messages(self._sock.recv(1 << 20)):
                if mseq != seq:
                    continue  # an answer to an earlier request given up on
                if mtype == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", payload)[0]
                    if err:
                        raise OSError(err, os.strerror(err))
                    return out
                if mtype == NLMSG_DONE:
                    return out
                out.append((mtype, payload))
                if not mflags & F_MULTI and not flags & F_ACK:
                    return out

    # -- links ---------------------------------------------------------------------------------
    @staticmethod
    def _link(payload: bytes) -> Link:
        _, _, index, iflags, _ = _IFINFO.unpack_from(payload)
        a = parse_attrs(payload, _IFINFO.size)
        info = parse_attrs(a.get(IFLA_LINKINFO, b""))
        master = struct.unpack("=I", a[IFLA_MASTER])[0] if IFLA_MASTER in a else 0
        return Link(index, _text(a.get(IFLA_IFNAME)), bool(iflags & IFF_UP), master,
                    _text(a.get(IFLA_IFALIAS)), _text(info.get(IFLA_INFO_KIND)))

    def link(self, name: str) -> Link | None:
        """The link called *name*, or None."""
        body = _IFINFO.pack(0, 0, 0, 0, 0) + attr(IFLA_IFNAME, _str(name))
        try:
            got = self.request(RTM_GETLINK, body, flags=0)
        except OSError as e:
            if e.errno == 19:  # ENODEV
                return None
            raise
        return self._link(got[0][1]) if got else None

    def links(self) -> list[Link]:
        return [self._link(p) for _, p in self.request(RTM_GETLINK, _IFINFO.pack(0, 0, 0, 0, 0), flags=F_DUMP)]

    def _newlink(self, name: str, kind: str, data: bytes = b"", extra: bytes = b"") -> None:
        info = attr(IFLA_INFO_KIND, kind.encode()) + (attr(IFLA_INFO_DATA, data) if data else b"")
        body = _IFINFO.pack(0, 0, 0, 0, 0) + attr(IFLA_IFNAME, _str(name)) + extra + attr(IFLA_LINKINFO, info)
        self.request(RTM_NEWLINK, body, flags=F_ACK | F_CREATE | F_EXCL)

    def add_bridge(self, name: str) -> None:
        self._newlink(name, "bridge")

    def add_veth(self, name: str, peer: str, *, peer_netns_fd: int, peer_mac: str | None = None,
                 peer_mtu: int | None = None) -> None:
        """A veth pair, the *peer* end created straight in the namespace of *peer_netns_fd*
        (with its address and MTU if given)."""
        peer_msg = _IFINFO.pack(0, 0, 0, 0, 0) + attr(IFLA_IFNAME, _str(peer)) + attr(IFLA_NET_NS_FD, _u32(peer_netns_fd))
        if peer_mac is not None:
            peer_msg += attr(IFLA_ADDRESS, bytes.fromhex(peer_mac.replace(":", "")))
        if peer_mtu is not None:
            peer_msg += attr(IFLA_MTU, _u32(peer_mtu))
        self._newlink(name, "veth", attr(VETH_INFO_PEER, peer_msg))

    def add_macvlan(self, name: str, *, parent: int, netns_fd: int) -> None:
        extra = attr(IFLA_LINK, _u32(parent)) + attr(IFLA_NET_NS_FD, _u32(netns_fd))
        self._newlink(name, "macvlan", attr(IFLA_MACVLAN_MODE, _u32(MACVLAN_MODE_BRIDGE)), extra)

    def add_vxlan(self, name: str, *, vni: int, local: str, port: int) -> None:
        """A VXLAN device without learning, answering ARP from its neighbour table (``proxy``):
        forwarding and neighbour entries are written for each remote endpoint."""
        data = (attr(IFLA_VXLAN_ID, _u32(vni)) + attr(IFLA_VXLAN_LOCAL, _socket.inet_aton(local))
                + attr(IFLA_VXLAN_PORT, struct.pack("!H", port)) + attr(IFLA_VXLAN_LEARNING, b"\0")
                + attr(IFLA_VXLAN_PROXY, b"\1"))
        self._newlink(name, "vxlan", data)

    def neigh(self, index: int, ip: str, mac: str, *, delete: bool = False) -> None:
        """A permanent IPv4 neighbour entry on link *index* (``ip neigh replace … nud permanent``)."""
        body = _NDMSG.pack(_socket.AF_INET, index, NUD_PERMANENT, 0, 0)
        body += attr(NDA_DST, _socket.inet_aton(ip)) + attr(NDA_LLADDR, bytes.fromhex(mac.replace(":", "")))
        self.request(RTM_DELNEIGH if delete else RTM_NEWNEIGH, body,
                     flags=F_ACK if delete else F_ACK | F_CREATE | F_REPLACE)

    def fdb(self, index: int, mac: str, dst: str, *, delete: bool = False) -> None:
        """A forwarding entry of a VXLAN device: frames to *mac* go to the VTEP at *dst*
        (``bridge fdb replace MAC dev DEV dst DST self permanent``)."""
        body = _NDMSG.pack(7, index, NUD_PERMANENT, NTF_SELF, 0)  # AF_BRIDGE
        body += attr(NDA_LLADDR, bytes.fromhex(mac.replace(":", ""))) + attr(NDA_DST, _socket.inet_aton(dst))
        self.request(RTM_DELNEIGH if delete else RTM_NEWNEIGH, body,
                     flags=F_ACK if delete else F_ACK | F_CREATE | F_REPLACE)

    def set_link(
        self, index: int, *, up: bool | None = None, master: int | None = None, name: str | None = None,
        mac: str | None = None, alias: str | None = None, mtu: int | None = None,
    ) -> None:
        """Change a link in one message (what ``ip link set`` does with several options).
        *index* 0: the link called *name* (found by the kernel, not renamed)."""
        flags = change = 0
        if up is not None:
            flags, change = (IFF_UP if up else 0), IFF_UP
        body = _IFINFO.pack(0, 0, index, flags, change)
        if master is not None:
            body += attr(IFLA_MASTER, _u32(master))
        if name is not None:
            body += attr(IFLA_IFNAME, _str(name))
        if mac is not None:
            body += attr(IFLA_ADDRESS, bytes.fromhex(mac.replace(":", "")))
        if alias is not None:
            body += attr(IFLA_IFALIAS, alias.encode())
        if mtu is not None:
            body += attr(IFLA_MTU, _u32(mtu))
        self.request(RTM_NEWLINK, body)

    def del_link(self, index: int) -> None:
        self.request(RTM_DELLINK, _IFINFO.pack(0, 0, index, 0, 0))

    def await_deleted(self, names: set[str], timeout: float) -> set[str]:
        """On a socket listening to ``RTMGRP_LINK``: wait until the kernel has announced each
        link of *names* deleted, for at most *timeout* seconds; return those not announced
        (also after missed announcements: ``ENOBUFS``, the caller looks them up)."""
        left = set(names)
        deadline = time.monotonic() + timeout
        try:
            while left and (remaining := deadline - time.monotonic()) > 0:
                self._sock.settimeout(remaining)
                for mtype, _, _, payload in _messages(self._sock.recv(1 << 20)):
                    if mtype == RTM_DELLINK:
                        left.discard(self._link(payload).name)
        except TimeoutError:
            pass
        except OSError as e:
            if e.errno != errno.ENOBUFS:
                raise
        finally:
            self._sock.settimeout(None)
        return left

    # -- addresses and routes ------------------------------------------------------------------
    def addrs(self, index: int = 0) -> list[tuple[int, str, int]]:
        """IPv4 ``(link index, address, prefixlen)``, of one link or all."""
        out = []
        for _, p in self.request(RTM_GETADDR, _IFADDR.pack(_socket.AF_INET, 0, 0, 0, 0), flags=F_DUMP):
            _, prefixlen, _, _, idx = _IFADDR.unpack_from(p)
            a = parse_attrs(p, _IFADDR.size)
            raw = a.get(IFA_LOCAL) or a.get(IFA_ADDRESS)
            if raw and (not index or idx == index):
                out.append((idx, _socket.inet_ntoa(raw), prefixlen))
        return out

    def add_addr(self, index: int, address: str, prefixlen: int) -> None:
        net = ipaddress.IPv4Network(f"{address}/{prefixlen}", strict=False)
        packed = _socket.inet_aton(address)
        body = _IFADDR.pack(_socket.AF_INET, prefixlen, 0, 0, index) + attr(IFA_LOCAL, packed) + attr(IFA_ADDRESS, packed)
        if prefixlen < 31:
            body += attr(4, net.broadcast_address.packed)  # IFA_BROADCAST, as ``ip addr add … brd +``
        self.request(RTM_NEWADDR, body, flags=F_ACK | F_CREATE | F_EXCL)

    def add_addr6(self, index: int, address: str, prefixlen: int) -> None:
        """An IPv6 address, usable at once (no duplicate address detection: IFA_F_NODAD)."""
        packed = _socket.inet_pton(_socket.AF_INET6, address)
        body = _IFADDR.pack(_socket.AF_INET6, prefixlen, 0x02, 0, index) + attr(IFA_LOCAL, packed) + attr(IFA_ADDRESS, packed)
        self.request(RTM_NEWADDR, body, flags=F_ACK | F_CREATE | F_EXCL)

    def add_default_route6(self, gateway: str) -> None:
        body = _RTMSG.pack(_socket.AF_INET6, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, 0, RTN_UNICAST, 0)
        body += attr(RTA_GATEWAY, _socket.inet_pton(_socket.AF_INET6, gateway))
        self.request(RTM_NEWROUTE, body, flags=F_ACK | F_CREATE | F_EXCL)

    def routes(self) -> list[tuple[str, int, str]]:
        """IPv4 routes of the main table: ``(destination, prefix length, gateway)``; the default
        route has destination ``""``."""
        out = []
        body = _RTMSG.pack(_socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)
        for _, p in self.request(RTM_GETROUTE, body, flags=F_DUMP):
            _, dst_len, _, _, table, _, _, _, _ = _RTMSG.unpack_from(p)
            if table != RT_TABLE_MAIN:
                continue
            a = parse_attrs(p, _RTMSG.size)
            dst = _socket.inet_ntoa(a[RTA_DST]) if RTA_DST in a else ""
            gw = _socket.inet_ntoa(a[RTA_GATEWAY]) if RTA_GATEWAY in a else ""
            out.append((dst, dst_len, gw))
        return out

    def add_default_route(self, gateway: str) -> None:
        body = _RTMSG.pack(_socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, 0, RTN_UNICAST, 0)
        body += attr(RTA_GATEWAY, _socket.inet_aton(gateway))
        self.request(RTM_NEWROUTE, body, flags=F_ACK | F_CREATE | F_EXCL)
