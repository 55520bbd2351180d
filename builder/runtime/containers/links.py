"""Legacy ``--link``s on the default bridge, as dockerd gives them at start: the linked
container's name in ``/etc/hosts`` and its address, ports, name and environment in variables
(``ALIAS_PORT_80_TCP_ADDR``…, dockerd's ``daemon/links``). On a user-defined network a link is
only an alias the network's DNS answers, and nothing here applies.
"""

from __future__ import annotations

from builder.base.errors import ContainerError
from builder.base.state import StateRoot
from builder.base.values import frozen
from builder.runtime.containers.record import Container, ContainerStore, NoSuchContainer


@frozen
class Link:
    """A running linked container as the linking one sees it."""

    alias: str
    #: dockerd's name of the link: ``/parent/alias``
    name: str
    ip: str
    child: Container


def split(link: str) -> tuple[str, str]:
    """``name:alias``, ``name`` or dockerd's ``/name:/self/alias`` → (name, alias)."""
    child, _, alias = link.partition(":")
    child = child.lstrip("/")
    return child, (alias or child).rsplit("/", 1)[-1]


def resolve(root: StateRoot, c: Container) -> list[Link]:
    """The links of *c* (those ``DELETE /containers/{id}/{alias}?link=1`` left) to running
    containers; one not running refuses the start with dockerd's words."""
    hc = c.host_config
    if not hc.links or hc.network != "bridge":
        return []
    cs = ContainerStore(root)
    out = []
    for link in hc.links:
        name, alias = split(link)
        if alias in hc.links_removed:
            continue
        full = f"/{c.name}/{alias}"
        try:
            child = cs.find(name)
        except NoSuchContainer:
            raise ContainerError(f"Cannot link to a non running container: /{name} AS {full}") from None
        ep = child.state.endpoints.get("bridge")
        ip = ep.ip if ep else ""
        if child.state.status != "running" or not ip:
            raise ContainerError(f"Cannot link to a non running container: /{child.name} AS {full}")
        out.append(Link(alias, full, ip, child))
    return out


def hosts(links: list[Link]) -> tuple[str, ...]:
    """``/etc/hosts`` entries (``names:ip``, as ``--add-host`` gives them): the alias, the
    linked container's hostname and, when it differs from the alias, its name."""
    out = []
    for ln in links:
        names = [ln.alias, ln.child.config.hostname or ln.child.short_id]
        if ln.child.name != ln.alias:
            names.append(ln.child.name)
        out.append(f"{' '.join(names)}:{ln.ip}")
    return tuple(out)


def _ranges(alias: str, ip: str, ports: list[tuple[int, str]]) -> list[str]:
    """dockerd's variables of each run of three or more consecutive ports (``_START``/``_END``;
    its ``nextContiguous`` looks at the numbers only)."""
    out: list[str] = []
    i = 0
    while i < len(ports):
        j, value = i, ports[i][0]
        while j + 1 < len(ports) and ports[j + 1][0] <= value + 1:
            j, value = j + 1, value + 1
        if j > i + 1:
            (p, proto), (q, qproto) = ports[i], ports[j]
            key = f"{alias}_PORT_{p}_{proto.upper()}"
            out += [f"{key}_START={proto}://{ip}:{p}", f"{key}_ADDR={ip}", f"{key}_PROTO={proto}",
                    f"{key}_PORT_START={p}", f"{alias}_PORT_{p}_{qproto.upper()}_END={qproto}://{ip}:{q}",
                    f"{alias}_PORT_{p}_{qproto.upper()}_PORT_END={q}"]
            i = j + 1
        else:
            i += 1
    return out


def env(links: list[Link]) -> list[str]:
    """dockerd's link variables, link by link: ``ALIAS_PORT`` (the lowest port), each port's
    ``ALIAS_PORT_<port>_<PROTO>[_ADDR|_PORT|_PROTO]``, ``ALIAS_NAME``, and the linked
    container's environment as ``ALIAS_ENV_<name>`` (but HOME and PATH)."""
    out: list[str] = []
    for ln in links:
        alias = ln.alias.upper().replace("-", "_")
        ports = sorted((int(p.partition("/")[0]), p.partition("/")[2] or "tcp")
                       for p in ln.child.config.exposed_ports or ())
        if ports:
            port, proto = ports[0]
            out.append(f"{alias}_PORT={proto}://{ln.ip}:{port}")
        out += _ranges(alias, ln.ip, ports)
        for port, proto in ports:
            key = f"{alias}_PORT_{port}_{proto.upper()}"
            out += [f"{key}={proto}://{ln.ip}:{port}", f"{key}_ADDR={ln.ip}", f"{key}_PORT={port}",
                    f"{key}_PROTO={proto}"]
        out.append(f"{alias}_NAME={ln.name}")
        for item in ln.child.config.env or ():
            k, eq, v = item.partition("=")
            if eq and k not in ("HOME", "PATH"):
                out.append(f"{alias}_ENV_{k}={v}")
    return out
