"""Kernel network objects: named netns files (``builder.base.syscalls``), and bridges, veth, macvlan,
addresses and routes through netlink (``rtnl``, our own few messages: pyroute2's import alone
cost ~70 ms). Bridges and host-side veths carry an alias naming their state root (``sweep``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from builder.base.errors import NetworkError
from builder.network.rtnl import RTMGRP_LINK, Netlink, write_sysctls

# netlink sockets kept open for the length of one ``session()``; per thread: the daemon
# (``pybuild serve``) runs network calls in several threads at once
_local = threading.local()


def _stack() -> list[dict[str, Netlink]]:
    stack: list[dict[str, Netlink]] | None = getattr(_local, "sessions", None)
    if stack is None:
        stack = _local.sessions = []
    return stack


@contextmanager
def session() -> Iterator[None]:
    """Reuse one netlink socket per namespace for every call inside the ``with`` body."""
    handles: dict[str, Netlink] = {}
    sessions = _stack()
    sessions.append(handles)
    try:
        yield
    finally:
        sessions.remove(handles)
        for h in handles.values():
            h.close()


def _open(netns: Path | None) -> Netlink:
    try:
        return Netlink(netns)
    except OSError as e:
        raise NetworkError(f"cannot open netlink{' in ' + str(netns) if netns else ''}: {e.strerror or e}") from e


@contextmanager
def _iproute(netns: Path | None = None) -> Iterator[Netlink]:
    sessions = _stack()
    if sessions:
        handles = sessions[-1]
        key = str(netns or "")
        if key not in handles:
            handles[key] = _open(netns)
        yield handles[key]
        return
    nl = _open(netns)
    try:
        yield nl
    finally:
        nl.close()


def _forget(netns: Path) -> None:
    for handles in _stack():
        h = handles.pop(str(netns), None)
        if h is not None:
            h.close()


def _netlink_error(what: str, e: Exception) -> NetworkError:
    return NetworkError(f"{what}: {getattr(e, 'strerror', None) or e}")


# -- named network namespaces -------------------------------------------------------------------


def is_netns(path: Path) -> bool:
    """True when *path* is a bind mount of a network namespace (an nsfs file)."""
    try:
        return os.stat(path).st_dev != os.stat(path.parent).st_dev
    except OSError:
        return False


def create_netns(path: Path) -> None:
    """A new network namespace kept alive by a bind mount on *path*, like ``ip netns add``,
    with ``lo`` up. A short-lived thread unshares its own network namespace (threads may;
    the rest of the process stays where it is) and bind-mounts it: no fork, no exec."""
    from builder.base import syscalls

    sc = syscalls.real()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not is_netns(path):
        path.unlink()  # a stale mount point: the namespace it held died with a reboot
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444)
    os.close(fd)
    failure: list[OSError] = []
    sessions = _stack()
    opened: list[Netlink] = []

    def work() -> None:
        try:
            sc.unshare(syscalls.CLONE_NEWNET)
            sc.set_loopback_up()
            sc.mount("/proc/thread-self/ns/net", str(path), None, syscalls.MS_BIND)
            if sessions:  # the session's socket in it, opened here: no second thread to join it
                opened.append(Netlink())
        except OSError as e:
            failure.append(e)

    t = threading.Thread(target=work, name="pybuild-netns")
    t.start()
    t.join()
    if failure:
        remove_netns(path)
        raise NetworkError(f"cannot create network namespace {path}: {failure[0]}")
    if opened:
        sessions[-1][str(path)] = opened[0]


#: how long ``removing_netns`` waits for the kernel to delete the veths of a namespace that
#: died (~2-6 ms here) before it deletes them itself (the namespace outlived its mount)
NETNS_DEATH_WAIT = 0.25


def remove_netns(path: Path) -> None:
    """Unmount and delete a netns file; the namespace dies with its last user."""
    with removing_netns(path):
        pass


@contextmanager
def removing_netns(path: Path, *, veths: Sequence[str] = ()) -> Iterator[None]:
    """Unmount and delete a netns file (the namespace dies with its last user), then run the
    ``with`` body while the kernel tears the namespace down.

    *veths*: host ends of veth pairs whose other end is inside. The kernel deletes them with
    the namespace, in its own batch, off our path: an ``RTM_DELLINK`` of each waits on RCU
    grace periods (~12-30 ms here). They are gone when the ``with`` ends (as ``ip link`` sees
    them: unlisted and announced deleted), as Docker's endpoint is when ``run --rm`` returns:
    the kernel's announcements are awaited (listening from before the unmount), and what is
    still there after ``NETNS_DEATH_WAIT`` (a process keeps the namespace) is deleted here."""
    from builder.base import syscalls

    _forget(path)
    watch = _watch_links() if veths and is_netns(path) else None
    try:
        # those there now are announced when they go (the namespace is still mounted); a
        # lookup after the unmount could miss one being deleted: unlisted, not yet announced
        left = _existing(set(veths)) if watch is not None else set(veths)
        if path.exists():
            if is_netns(path):
                with contextlib.suppress(OSError):
                    syscalls.real().umount2(str(path), syscalls.MNT_DETACH)
            path.unlink(missing_ok=True)
        yield
        if watch is not None:
            left = watch.await_deleted(left, NETNS_DEATH_WAIT)
    finally:
        if watch is not None:
            watch.close()
    for name in left:
        with contextlib.suppress(NetworkError):  # as a detach's: the records are written
            delete_link(name)


def _watch_links() -> Netlink | None:
    try:
        return Netlink(groups=RTMGRP_LINK)
    except OSError:  # then deleted one by one
        return None


def _existing(names: set[str]) -> set[str]:
    """Those of *names* there now."""
    with _iproute() as nl:
        return {n for n in names if nl.link(n) is not None}


# -- host-side objects --------------------------------------------------------------------------


def link_exists(ifname: str, netns: Path | None = None) -> bool:
    with _iproute(netns) as nl:
        return nl.link(ifname) is not None


def bridge_ready(name: str, gateway: str) -> bool:
    """The bridge exists, is up and holds the gateway address."""
    with _iproute() as nl:
        link = nl.link(name)
        if link is None or not link.up:
            return False
        return any(a == gateway for _, a, _ in nl.addrs(link.index))


def ensure_bridge(name: str, gateway: str, prefixlen: int, *, alias: str = "", gateway6: str = "",
                  prefixlen6: int = 0) -> None:
    """The bridge with the gateway address (and IPv6 gateway), up, carrying *alias*
    (idempotent: recreated after a reboot)."""
    with _iproute() as nl:
        try:
            link = nl.link(name)
            if link is None:
                nl.add_bridge(name)
                link = nl.link(name)
                assert link is not None
            if not any(a == gateway for _, a, _ in nl.addrs(link.index)):
                nl.add_addr(link.index, gateway, prefixlen)
            if gateway6:
                _add_addr6(nl, link.index, gateway6, prefixlen6)
            nl.set_link(link.index, up=True, alias=alias or None)
        except OSError as e:
            raise _netlink_error(f"cannot set up bridge {name}", e) from e


def _add_addr6(nl: Netlink, index: int, address: str, prefixlen: int) -> None:
    try:
        nl.add_addr6(index, address, prefixlen)
    except OSError as e:
        if e.errno != 17:  # EEXIST: there already
            raise


def delete_link(ifname: str, netns: Path | None = None) -> bool:
    with _iproute(netns) as nl:
        link = nl.link(ifname)
        if link is None:
            return False
        try:
            nl.del_link(link.index)
        except OSError as e:
            if e.errno == 19:  # ENODEV: deleted meanwhile (its peer or its namespace went)
                return False
            raise _netlink_error(f"cannot delete {ifname}", e) from e
        return True


def host_routes() -> list[ipaddress.IPv4Network]:
    """Every IPv4 destination the host routes or owns (to avoid picking a colliding subnet)."""
    nets: list[ipaddress.IPv4Network] = []
    with _iproute() as nl:
        for dst, dst_len, _ in nl.routes():
            if dst:
                nets.append(ipaddress.IPv4Network(f"{dst}/{dst_len}", strict=False))
        for _, addr, prefixlen in nl.addrs():
            nets.append(ipaddress.IPv4Network(f"{addr}/{prefixlen}", strict=False))
    return nets


def tagged_links(prefix: str) -> list[tuple[str, str]]:
    """``(name, alias)`` of the host's links whose alias starts with *prefix*."""
    with _iproute() as nl:
        return [(link.name, link.alias) for link in nl.links() if link.alias.startswith(prefix)]


def ensure_vxlan(name: str, *, vni: int, local: str, port: int, bridge: str, mtu: int, alias: str) -> None:
    """The VXLAN device of an overlay network, up in its bridge (idempotent)."""
    with _iproute() as nl:
        try:
            link = nl.link(name)
            if link is None:
                nl.add_vxlan(name, vni=vni, local=local, port=port)
                link = nl.link(name)
                assert link is not None
            br = nl.link(bridge)
            if br is None:
                raise NetworkError(f"cannot attach {name}: bridge {bridge} is gone")
            nl.set_link(link.index, master=br.index, mtu=mtu, up=True, alias=alias)
        except OSError as e:
            raise _netlink_error(f"cannot set up vxlan {name} (VNI {vni}, local {local})", e) from e


def set_remote(vxlan: str, ip: str, mac: str, dst: str, *, delete: bool = False) -> None:
    """Point *vxlan* at a remote endpoint: its MAC behind the VTEP *dst*, its IP at that MAC
    (or remove both). A missing device or entry is not an error when deleting."""
    with _iproute() as nl:
        link = nl.link(vxlan)
        if link is None:
            if delete:
                return
            raise NetworkError(f"vxlan {vxlan} is gone")
        for neigh in (False, True):
            try:
                if neigh:
                    nl.neigh(link.index, ip, mac, delete=delete)
                else:
                    nl.fdb(link.index, mac, dst, delete=delete)
            except OSError as e:
                if not delete or e.errno not in (2, 19):  # ENOENT, ENODEV
                    raise _netlink_error(f"cannot {'remove' if delete else 'add'} {ip} on {vxlan}", e) from e


# -- container-side -----------------------------------------------------------------------------


def free_ifname(netns: Path) -> str:
    """``eth0``, ``eth1``…: the next name unused in the namespace (Docker's order of connection)."""
    with _iproute(netns) as nl:
        names = {link.name for link in nl.links()}
    n = 0
    while f"eth{n}" in names:
        n += 1
    return f"eth{n}"


def add_veth(
    *, host_name: str, bridge: str, netns: Path, ifname: str, ip: str, prefixlen: int,
    gateway: str, mac: str, default_route: bool, alias: str = "", mtu: int | None = None,
    ip6: str = "", prefixlen6: int = 0, gateway6: str = "",
) -> None:
    """A veth pair: one end enslaved to *bridge* (carrying *alias*), the other *ifname* in
    *netns* with *ip* and *mac* (both ends with *mtu* if given: an overlay's 1450). The inside
    end is made in the namespace with its name, address and MTU (no rename after)."""
    with _iproute() as nl:
        fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            nl.add_veth(host_name, ifname, peer_netns_fd=fd, peer_mac=mac, peer_mtu=mtu)
        except OSError as e:
            raise _netlink_error(f"cannot create veth {host_name}", e) from e
        finally:
            os.close(fd)
        try:
            br = nl.link(bridge)
            if br is None:
                raise NetworkError(f"cannot attach veth {host_name}: bridge {bridge} is gone")
            nl.set_link(0, name=host_name, master=br.index, up=True, alias=alias or None, mtu=mtu)
            _configure_inside(netns, ifname, ifname, ip, prefixlen, gateway, mac, default_route, mtu,
                              ip6=ip6, prefixlen6=prefixlen6, gateway6=gateway6)
        except BaseException as e:
            with contextlib.suppress(OSError):
                delete_link(host_name)
            if isinstance(e, OSError):
                raise _netlink_error(f"cannot configure {ifname} in {netns}", e) from e
            raise


def add_macvlan(
    *, parent: str, netns: Path, ifname: str, ip: str, prefixlen: int, gateway: str,
    mac: str, default_route: bool, tmp_name: str,
) -> None:
    with _iproute() as nl:
        found = nl.link(parent)
        if found is None:
            raise NetworkError.not_found(f"macvlan parent interface {parent!r} not found")
        fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            nl.add_macvlan(tmp_name, parent=found.index, netns_fd=fd)
        except OSError as e:
            raise _netlink_error(f"cannot create macvlan on {parent}", e) from e
        finally:
            os.close(fd)
    try:
        _configure_inside(netns, tmp_name, ifname, ip, prefixlen, gateway, mac, default_route)
    except BaseException as e:
        delete_link(tmp_name, netns)
        if isinstance(e, OSError):
            raise _netlink_error(f"cannot configure {ifname} in {netns}", e) from e
        raise


def _configure_inside(
    netns: Path, tmp: str, ifname: str, ip: str, prefixlen: int, gateway: str, mac: str,
    default_route: bool, mtu: int | None = None, *, ip6: str = "", prefixlen6: int = 0, gateway6: str = "",
) -> None:
    with _iproute(netns) as nl:
        link = nl.link(tmp)
        if link is None:
            raise NetworkError(f"{tmp} did not reach {netns}")
        if tmp != ifname:  # made under a temporary name (a macvlan's, beside its parent)
            nl.set_link(link.index, name=ifname, mac=mac, mtu=mtu)
        nl.add_addr(link.index, ip, prefixlen)
        nl.set_link(link.index, up=True)
        if default_route and gateway and not any(not dst for dst, _, _ in nl.routes()):
            nl.add_default_route(gateway)
        if ip6:  # IPv6 on, whatever the host's defaults (as dockerd), before the address
            write_sysctls(netns, {f"net/ipv6/conf/{k}/disable_ipv6": "0" for k in ("all", "default")})
            _add_addr6(nl, link.index, ip6, prefixlen6)
            if default_route and gateway6:
                nl.add_default_route6(gateway6)


def remove_ifname_in(netns: Path, ifname: str) -> None:
    """Delete *ifname* inside *netns* (its veth peer on the host goes with it)."""
    if is_netns(netns):
        delete_link(ifname, netns)
