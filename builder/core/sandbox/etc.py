"""Per-sandbox ``/etc/hosts``, ``/etc/hostname`` and ``/etc/resolv.conf``, as Docker writes them.

``etc_mounts`` writes the three files into a directory and returns the bind mounts for a spec.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path

from builder.core.sandbox.spec import Mount

#: the lines Docker starts every container's ``/etc/hosts`` with (``network.resolution`` too)
HOSTS_HEADER = """127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
ff00::0\tip6-mcastprefix
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
"""

DEFAULT_DNS = ("8.8.8.8", "8.8.4.4")


def _host_resolv() -> str:
    try:
        return Path("/etc/resolv.conf").read_text()
    except OSError:
        return ""


def resolv_conf(*, host_network: bool, dns: Sequence[str] = (), text: str | None = None) -> str:
    """The host's resolv.conf, without loopback nameservers unless on the host network."""
    src = _host_resolv() if text is None else text
    lines = []
    servers = 0
    for line in src.splitlines():
        parts = line.split()
        if parts and parts[0] == "nameserver" and len(parts) > 1:
            if dns:
                continue
            try:
                loop = ipaddress.ip_address(parts[1].split("%")[0]).is_loopback
            except ValueError:
                loop = False
            if loop and not host_network:
                continue
            servers += 1
        lines.append(line)
    for s in dns or (DEFAULT_DNS if servers == 0 and not host_network else ()):
        lines.append(f"nameserver {s}")
    return "\n".join(lines) + "\n"


def etc_mounts(
    directory: Path,
    *,
    hostname: str,
    host_network: bool = False,
    hosts_extra: Sequence[tuple[str, str]] = (),
    dns: Sequence[str] = (),
) -> tuple[Mount, ...]:
    """Write hosts/hostname/resolv.conf into *directory*; bind mounts onto ``/etc`` for them.

    *hosts_extra*: (name, address) lines to add (``--add-host``, the container's own address).
    """
    directory.mkdir(parents=True, exist_ok=True)
    if host_network:
        try:
            hosts = Path("/etc/hosts").read_text()
        except OSError:
            hosts = HOSTS_HEADER
    else:
        hosts = HOSTS_HEADER
    for name, addr in hosts_extra:
        hosts += f"{addr}\t{name}\n"
    (directory / "hosts").write_text(hosts)
    (directory / "hostname").write_text(hostname + "\n")
    (directory / "resolv.conf").write_text(resolv_conf(host_network=host_network, dns=dns))
    return tuple(
        Mount(f"/etc/{n}", "bind", str(directory / n), ("rbind", "rprivate"))
        for n in ("hosts", "hostname", "resolv.conf")
    )
