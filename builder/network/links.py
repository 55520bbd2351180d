"""Kernel network objects: named netns files (``builder.syscalls``), and bridges, veth, macvlan,
addresses and routes through netlink (pyroute2, imported lazily: it costs ~0.1 s).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from builder.errors import NetworkError

# netlink sockets kept open for the length of one ``session()`` (opening one costs ~4 ms); per
# thread: the daemon (``pybuild serve``) runs network calls in several threads at once
_local = threading.local()


def _stack() -> list[dict[str, Any]]:
    stack: list[dict[str, Any]] | None = getattr(_local, "sessions", None)
    if stack is None:
        stack = _local.sessions = []
    return stack


@contextmanager
def session() -> Iterator[None]:
    """Reuse one netlink socket per namespace for every call inside the ``with`` body."""
    handles: dict[str, Any] = {}
    sessions = _stack()
    sessions.append(handles)
    try:
        yield
    finally:
        sessions.remove(handles)
        for h in handles.values():
            h.close()


def _open(netns: Path | None) -> Any:
    from pyroute2 import IPRoute

    try:
        return IPRoute(netns=str(netns)) if netns is not None else IPRoute()
    except OSError as e:
        raise NetworkError(f"cannot open netlink{' in ' + str(netns) if netns else ''}: {e}") from e


@contextmanager
def _iproute(netns: Path | None = None) -> Iterator[Any]:
    sessions = _stack()
    if sessions:
        handles = sessions[-1]
        key = str(netns or "")
        if key not in handles:
            handles[key] = _open(netns)
        yield handles[key]
        return
    ipr = _open(netns)
    try:
        yield ipr
    finally:
        ipr.close()


def _forget(netns: Path) -> None:
    for handles in _stack():
        h = handles.pop(str(netns), None)
        if h is not None:
            h.close()


def _netlink_error(what: str, e: Exception) -> NetworkError:
    return NetworkError(f"{what}: {getattr(e, 'args', [None, str(e)])[-1] or e}")


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
    from builder import syscalls

    sc = syscalls.real()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not is_netns(path):
        path.unlink()  # a stale mount point: the namespace it held died with a reboot
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444)
    os.close(fd)
    failure: list[OSError] = []

    def work() -> None:
        try:
            sc.unshare(syscalls.CLONE_NEWNET)
            sc.set_loopback_up()
            sc.mount("/proc/thread-self/ns/net", str(path), None, syscalls.MS_BIND)
        except OSError as e:
            failure.append(e)

    t = threading.Thread(target=work, name="pybuild-netns")
    t.start()
    t.join()
    if failure:
        remove_netns(path)
        raise NetworkError(f"cannot create network namespace {path}: {failure[0]}")


def remove_netns(path: Path) -> None:
    """Unmount and delete a netns file; the namespace dies with its last user."""
    from builder import syscalls

    _forget(path)
    if not path.exists():
        return
    if is_netns(path):
        with contextlib.suppress(OSError):
            syscalls.real().umount2(str(path), syscalls.MNT_DETACH)
    path.unlink(missing_ok=True)


# -- host-side objects --------------------------------------------------------------------------


def link_exists(ifname: str, netns: Path | None = None) -> bool:
    with _iproute(netns) as ipr:
        return bool(ipr.link_lookup(ifname=ifname))


def bridge_ready(name: str, gateway: str) -> bool:
    """The bridge exists, is up and holds the gateway address."""
    with _iproute() as ipr:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            return False
        link = ipr.get_links(idx[0])[0]
        if not link["flags"] & 1:  # IFF_UP
            return False
        return gateway in {a.get("address") for a in ipr.get_addr(index=idx[0], family=2)}


def ensure_bridge(name: str, gateway: str, prefixlen: int) -> None:
    """The bridge with the gateway address, up (idempotent: recreated after a reboot)."""
    with _iproute() as ipr:
        try:
            idx = ipr.link_lookup(ifname=name)
            if not idx:
                ipr.link("add", ifname=name, kind="bridge")
                idx = ipr.link_lookup(ifname=name)
            index = idx[0]
            have = {a.get("address") for a in ipr.get_addr(index=index, family=2)}
            if gateway not in have:
                ipr.addr("add", index=index, address=gateway, prefixlen=prefixlen)
            ipr.link("set", index=index, state="up")
        except Exception as e:  # pyroute2 raises NetlinkError (an OSError) with errno + text
            raise _netlink_error(f"cannot set up bridge {name}", e) from e


def delete_link(ifname: str, netns: Path | None = None) -> bool:
    with _iproute(netns) as ipr:
        idx = ipr.link_lookup(ifname=ifname)
        if not idx:
            return False
        ipr.link("del", index=idx[0])
        return True


def host_routes() -> list[ipaddress.IPv4Network]:
    """Every IPv4 destination the host routes or owns (to avoid picking a colliding subnet)."""
    nets: list[ipaddress.IPv4Network] = []
    with _iproute() as ipr:
        for r in ipr.get_routes(family=2, table=254):
            dst = r.get("dst")
            if dst:
                nets.append(ipaddress.IPv4Network(f"{dst}/{r['dst_len']}", strict=False))
        for a in ipr.get_addr(family=2):
            nets.append(ipaddress.IPv4Network(f"{a.get('address')}/{a['prefixlen']}", strict=False))
    return nets


# -- container-side -----------------------------------------------------------------------------


def free_ifname(netns: Path) -> str:
    """``eth0``, ``eth1``…: the next name unused in the namespace (Docker's order of connection)."""
    with _iproute(netns) as ipr:
        names = {link.get("ifname") for link in ipr.get_links()}
    n = 0
    while f"eth{n}" in names:
        n += 1
    return f"eth{n}"


def add_veth(
    *, host_name: str, bridge: str, netns: Path, ifname: str, ip: str, prefixlen: int,
    gateway: str, mac: str, default_route: bool,
) -> None:
    """A veth pair: one end enslaved to *bridge*, the other *ifname* in *netns* with *ip*."""
    tmp = "pbp" + host_name[3:]
    with _iproute() as ipr:
        try:
            ipr.link("add", ifname=host_name, kind="veth", peer={"ifname": tmp, "net_ns_fd": str(netns)})
        except Exception as e:
            raise _netlink_error(f"cannot create veth {host_name}", e) from e
        try:
            br = ipr.link_lookup(ifname=bridge)[0]
            idx = ipr.link_lookup(ifname=host_name)[0]
            ipr.link("set", index=idx, master=br, state="up")
            _configure_inside(netns, tmp, ifname, ip, prefixlen, gateway, mac, default_route)
        except BaseException as e:
            ipr.link("del", index=ipr.link_lookup(ifname=host_name)[0])
            if isinstance(e, Exception) and not isinstance(e, NetworkError):
                raise _netlink_error(f"cannot configure {ifname} in {netns}", e) from e
            raise


def add_macvlan(
    *, parent: str, netns: Path, ifname: str, ip: str, prefixlen: int, gateway: str,
    mac: str, default_route: bool, tmp_name: str,
) -> None:
    with _iproute() as ipr:
        found = ipr.link_lookup(ifname=parent)
        if not found:
            raise NetworkError(f"macvlan parent interface {parent!r} not found")
        try:
            ipr.link(
                "add", ifname=tmp_name, kind="macvlan", link=found[0], macvlan_mode="bridge",
                net_ns_fd=str(netns),
            )
        except Exception as e:
            raise _netlink_error(f"cannot create macvlan on {parent}", e) from e
    try:
        _configure_inside(netns, tmp_name, ifname, ip, prefixlen, gateway, mac, default_route)
    except BaseException:
        delete_link(tmp_name, netns)
        raise


def _configure_inside(
    netns: Path, tmp: str, ifname: str, ip: str, prefixlen: int, gateway: str, mac: str,
    default_route: bool,
) -> None:
    with _iproute(netns) as ipr:
        idx = ipr.link_lookup(ifname=tmp)[0]
        ipr.link("set", index=idx, ifname=ifname, address=mac)
        ipr.addr("add", index=idx, address=ip, prefixlen=prefixlen)
        ipr.link("set", index=idx, state="up")
        if default_route and gateway:
            routes = ipr.get_routes(family=2, table=254)
            if not any(r.get("dst") is None and r["dst_len"] == 0 for r in routes):
                ipr.route("add", dst="0.0.0.0/0", gateway=gateway)


def remove_ifname_in(netns: Path, ifname: str) -> None:
    """Delete *ifname* inside *netns* (its veth peer on the host goes with it)."""
    if is_netns(netns):
        delete_link(ifname, netns)
