"""Name resolution files of containers: ``/etc/hosts`` with their peers on user-defined networks,
``/etc/resolv.conf`` pointing at a network's DNS server or at the host's usable resolvers.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from builder.base.state import StateRoot
from builder.network.model import Endpoint, Network


def files_dir(state: StateRoot, container_id: str) -> Path:
    return state.run / "net" / container_id


def hosts_path(state: StateRoot, container_id: str) -> Path:
    """The file to bind-mount at ``/etc/hosts``; rewritten in place (same inode) on changes."""
    return files_dir(state, container_id) / "hosts"


def resolv_path(state: StateRoot, container_id: str) -> Path:
    """The file to bind-mount at ``/etc/resolv.conf``."""
    return files_dir(state, container_id) / "resolv.conf"


def _settings(nets: Sequence[Network], container_id: str) -> Endpoint | None:
    """The endpoint holding the container's ``--add-host``/``--dns*`` settings (the one it was
    started with; endpoints added by ``network connect`` carry none)."""
    for n in nets:
        ep = n.containers.get(container_id)
        if ep is not None and (ep.extra_hosts or ep.dns or ep.dns_search or ep.dns_options):
            return ep
    return None


def extra_hosts_lines(entries: Sequence[str]) -> str:
    """``--add-host`` entries (``name:ip``) as hosts-file lines, Docker's ``ip<TAB>name``."""
    out = []
    for e in entries:
        name, _, addr = e.partition(":")
        out.append(f"{addr}\t{name}\n")
    return "".join(out)


def hosts_content(nets: Sequence[Network], container_id: str) -> str:
    # the sandbox's header (one copy); imported here so that `network ls` stays light
    from builder.core.sandbox.etc import HOSTS_HEADER

    mine = [n for n in nets if container_id in n.containers]
    opts = _settings(nets, container_id)
    extra = extra_hosts_lines(opts.extra_hosts) if opts else ""
    if any(n.driver == "host" for n in mine):
        try:
            text = Path("/etc/hosts").read_text()
        except OSError:
            text = HOSTS_HEADER
        return (text if text.endswith("\n") or not text else text + "\n") + extra
    lines = [HOSTS_HEADER, extra]
    seen: set[str] = set()
    for net in mine:
        ep = net.containers[container_id]
        if ep.ip:
            names = [ep.hostname]
            if net.user_defined:
                names += [ep.name, *ep.aliases]
            lines.append(f"{ep.ip}\t{' '.join(dict.fromkeys(n for n in names if n))}\n")
    for net in mine:
        if not net.user_defined:
            continue  # Docker's default bridge has no name resolution between containers
        for other in net.endpoints():
            if other.container_id == container_id or not other.ip:
                continue
            names = [n for n in (other.name, *other.aliases, other.container_id[:12]) if n and n not in seen]
            seen.update(names)
            if names:
                lines.append(f"{other.ip}\t{' '.join(dict.fromkeys(names))}\n")
    return "".join(lines)


def override_resolv(text: str, *, dns: Sequence[str] = (), search: Sequence[str] = (),
                    options: Sequence[str] = ()) -> str:
    """*text* with its nameservers, search domains and options replaced by those given
    (``--dns``, ``--dns-search``, ``--dns-option``; a search of ``.`` alone means none)."""
    if not (dns or search or options):
        return text
    kept: list[str] = []
    servers: list[str] = []
    domains: list[str] = []
    opts: list[str] = []
    for line in text.splitlines():
        f = line.split()
        if f[:1] == ["nameserver"]:
            servers.append(line)
        elif f[:1] in (["search"], ["domain"]):
            domains.append(line)
        elif f[:1] == ["options"]:
            opts.append(line)
        else:
            kept.append(line)
    if dns:
        servers = [f"nameserver {d}" for d in dns]
    if search:
        wanted = [d for d in search if d != "."]
        domains = [f"search {' '.join(wanted)}"] if wanted else []
    if options:
        opts = [f"options {' '.join(options)}"]
    return "\n".join([*kept, *servers, *domains, *opts]) + "\n"


def resolv_for(nets: Sequence[Network], container_id: str) -> str:
    opts = _settings(nets, container_id)
    search = opts.dns_search if opts else ()
    options = opts.dns_options if opts else ()
    mine = [n for n in nets if container_id in n.containers]
    if any(n.driver == "host" for n in mine):
        return override_resolv(host_resolv(), dns=opts.dns if opts else (), search=search, options=options)
    dns = [
        n.containers[container_id]
        for n in mine if n.dns_pid and n.user_defined and n.driver in ("bridge", "overlay")
    ]
    if dns:  # our DNS server on the gateway of the first such network, as Docker's 127.0.0.11
        first = min(dns, key=lambda e: e.ifname)
        kept = [ln for ln in host_resolv().splitlines() if ln.split()[:1] in (["search"], ["domain"])]
        # --dns servers are this container's upstreams (dns.py), not its nameserver lines
        own = [o for o in options if not o.startswith("ndots:")]
        ndots = [o for o in options if o.startswith("ndots:")] or ["ndots:0"]
        text = "\n".join([f"nameserver {first.gateway}", *kept, f"options {' '.join([*ndots, *own])}"]) + "\n"
        return override_resolv(text, search=search)
    return override_resolv(resolv_content(False), dns=opts.dns if opts else (), search=search, options=options)


def host_resolv() -> str:
    try:
        return Path("/etc/resolv.conf").read_text()
    except OSError:
        return ""


SYSTEMD_RESOLV = Path("/run/systemd/resolve/resolv.conf")


def resolv_content(host_mode: bool, host_text: str | None = None) -> str:
    text = host_resolv() if host_text is None else host_text
    if host_mode:
        return text
    if host_text is None and only_loopback_servers(text) and SYSTEMD_RESOLV.exists():
        # systemd-resolved's stub (127.0.0.53) is unreachable from a netns: use its upstreams
        return resolv_content(False, SYSTEMD_RESOLV.read_text())
    kept, servers = [], 0
    for line in text.splitlines():
        f = line.split()
        if f and f[0] == "nameserver" and len(f) > 1:
            try:
                if ipaddress.ip_address(f[1].split("%")[0]).is_loopback:
                    continue
            except ValueError:
                continue
            servers += 1
        kept.append(line)
    if not servers:
        kept += ["nameserver 8.8.8.8", "nameserver 8.8.4.4"]
    return "\n".join(kept) + "\n"


def only_loopback_servers(text: str) -> bool:
    servers = [ln.split()[1] for ln in text.splitlines() if ln.split()[:1] == ["nameserver"] and len(ln.split()) > 1]
    try:
        return all(ipaddress.ip_address(x.split("%")[0]).is_loopback for x in servers)
    except ValueError:
        return False


def write_in_place(path: Path, text: str) -> None:
    """Rewrite keeping the inode, so a bind mount of this file sees the new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        data = text.encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    finally:
        os.close(fd)


def sync_files(state: StateRoot, nets: Sequence[Network], network_id: str, also: str = "") -> None:
    """Rewrite the hosts file of every container on *network_id* (and *also*). On a predefined
    network (the default bridge) peers do not resolve each other: only *also*'s change."""
    net = next(n for n in nets if n.id == network_id)
    cids = set(net.containers) if net.user_defined else set()
    if also:
        cids.add(also)
    for cid in sorted(cids):
        write_in_place(hosts_path(state, cid), hosts_content(nets, cid))
        write_in_place(resolv_path(state, cid), resolv_for(nets, cid))
