"""``pybuild network create|ls|inspect|rm|connect|disconnect|prune``: parse, one
``builder.network`` call, render (Docker's table and JSON shapes)."""

from __future__ import annotations

import json
from typing import Any

from builder.base.errors import ContainerError, NetworkError
from builder.cli import fail, flags
from builder.cli.columns import table


def _kv(items: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not k or not sep:
            fail(f"invalid {what} {item!r}: expected KEY=VALUE", 1)
        out[k] = v
    return out


def _container(state: Any, ref: str) -> tuple[str, str, str]:
    """(id, name, hostname) of the container *ref* (name, ID or unique ID prefix)."""
    from builder.runtime.containers import lifecycle
    try:
        c = lifecycle.get(state, ref)
    except ContainerError as e:
        fail(str(e), 1)
        raise AssertionError from None
    return c.id, c.name, c.config.hostname or c.short_id


@flags.group()
def network() -> None:
    """Manage networks."""


@network.command("create")
@flags.argument("name")
@flags.option("-d", "--driver", default="bridge", show_default=True, help="bridge, macvlan or overlay.")
@flags.option("--subnet", "subnets", multiple=True, help="Subnet in CIDR format, e.g. 10.50.0.0/24 (and an IPv6 one with --ipv6).")
@flags.option("--gateway", "gateways", multiple=True, help="Gateway of a subnet (IPv4 or IPv6).")
@flags.option("--ipv6", is_flag=True, help="Enable IPv6 (needs an IPv6 --subnet).")
@flags.option("-o", "--opt", "opts", multiple=True, help="Driver options (parent=IFACE for macvlan).")
@flags.option("--label", "labels", multiple=True, help="Set metadata (KEY=VALUE).")
@flags.option("--internal", is_flag=True, help="Restrict external access to the network.")
@flags.option("--attachable", is_flag=True, help="Enable manual container attachment (overlay).")
@flags.pass_obj
def create(obj: Any, name: str, driver: str, subnets: tuple[str, ...], gateways: tuple[str, ...], ipv6: bool,
           opts: tuple[str, ...], labels: tuple[str, ...], internal: bool, attachable: bool) -> None:
    """Create a network."""
    from builder import network as N
    v4 = [s for s in subnets if ":" not in s]
    v6 = [s for s in subnets if ":" in s]
    if len(v4) > 1 or len(v6) > 1:
        fail("one IPv4 and one IPv6 --subnet at most", 1)
    gw4 = [g for g in gateways if ":" not in g]
    gw6 = [g for g in gateways if ":" in g]
    if len(gw4) > len(v4) or len(gw6) > len(v6):
        fail("--gateway needs --subnet of its family", 1)
    subnet, gateway = next(iter(v4), None), next(iter(gw4), None)
    try:
        net = N.create_network(obj.state, name, driver=driver, subnet=subnet, gateway=gateway,
                               enable_ipv6=ipv6, subnet6=next(iter(v6), None), gateway6=next(iter(gw6), None),
                               options=_kv(opts, "option"), labels=_kv(labels, "label"),
                               internal=internal, attachable=attachable)
    except NetworkError as e:
        fail(str(e), 1)
    flags.echo(net.id)


@network.command("ls")
@flags.option("-q", "--quiet", is_flag=True, help="Only display network IDs.")
@flags.option("--no-trunc", is_flag=True, help="Do not truncate the output.")
@flags.option("-f", "--filter", "filters", multiple=True, help="name=, id=, driver=, label=, type=custom|builtin")
@flags.option("--format", "fmt", default=None, help="'table', 'table TEMPLATE', 'json' or a Go TEMPLATE.")
@flags.pass_obj
def ls(obj: Any, quiet: bool, no_trunc: bool, filters: tuple[str, ...], fmt: str | None) -> None:
    """List networks."""
    from builder import network as N
    wanted: dict[str, list[str]] = {}
    for f in filters:
        k, sep, v = f.partition("=")
        if not sep:
            fail(f"bad format of filter (expected name=value): {f}", 1)
        wanted.setdefault(k, []).append(v)
    try:
        nets = N.filter_networks(N.list_networks(obj.state), wanted)
    except NetworkError as e:
        fail(str(e), 1)

    def ident(i: str) -> str:
        return i if no_trunc else i[:12]

    if quiet:
        for n in nets:
            flags.echo(ident(n.id))
    elif fmt and fmt != "table":
        from builder.cli.format import format_rows, label_method
        from builder.cli.images import created_at

        objs = [{"CreatedAt": created_at(n.created), "Driver": n.driver, "ID": ident(n.id), "IPv6": str(bool(n.subnet6)).lower(),
                 "Internal": str(n.internal).lower(), "Label": label_method(dict(n.labels)),
                 "Labels": ",".join(f"{k}={v}" for k, v in n.labels.items()), "Name": n.name, "Scope": n.scope}
                for n in nets]
        headers = {"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE", "IPv6": "IPV6",
                   "Internal": "INTERNAL", "Labels": "LABELS", "CreatedAt": "CREATED AT"}
        text = format_rows(fmt, objs, headers, type_name="*network.networkContext")
        if text:
            flags.echo(text)
    else:
        rows = [[ident(n.id), n.name, n.driver, n.scope] for n in nets]
        flags.echo(table(["NETWORK ID", "NAME", "DRIVER", "SCOPE"], rows))


@network.command("inspect")
@flags.option("-f", "--format", "fmt", default=None, help="Format the output using a Go template.")
@flags.argument("refs", nargs=-1, required=True)
@flags.pass_obj
def inspect(obj: Any, fmt: str | None, refs: tuple[str, ...]) -> None:
    """Display detailed information on one or more networks."""
    from builder import network as N
    if fmt:
        from builder.cli.format import INSPECT, inspect_output, template

        template(fmt, messages=INSPECT)  # a bad template fails before any lookup
    out, errors = [], []
    for r in refs:
        try:
            out.append(N.get_network(obj.state, r).to_json())
        except NetworkError as e:
            errors.append(f"No such network: {r}" if str(e).endswith("not found") else str(e))
    if fmt:
        inspect_output(fmt, out, [f"Error: {e}" for e in errors[:1]])
        return
    flags.echo(json.dumps(out, indent=4))
    if errors:
        fail(errors[0], 1)


@network.command("rm")
@flags.argument("refs", nargs=-1, required=True)
@flags.pass_obj
def rm(obj: Any, refs: tuple[str, ...]) -> None:
    """Remove one or more networks (refused while containers are connected)."""
    from builder import network as N
    errors = []
    for r in refs:
        try:
            N.remove_network(obj.state, r)
            flags.echo(r)
        except NetworkError as e:
            errors.append(str(e))
    if errors:
        fail("; ".join(errors), 1)


@network.command("connect")
@flags.argument("net")
@flags.argument("container")
@flags.option("--alias", "aliases", multiple=True, help="Network-scoped alias for the container.")
@flags.option("--ip", default=None, help="IPv4 address on the network.")
@flags.pass_obj
def connect(obj: Any, net: str, container: str, aliases: tuple[str, ...], ip: str | None) -> None:
    """Connect a running container to a network."""
    from builder import network as N
    cid, name, hostname = _container(obj.state, container)
    try:
        N.shared_netns(obj.state, cid)
        N.attach(obj.state, cid, net, name=name, aliases=aliases, ip=ip, hostname=hostname)
    except NetworkError as e:
        fail(str(e), 1)


@network.command("disconnect")
@flags.argument("net")
@flags.argument("container")
@flags.option("-f", "--force", is_flag=True, help="Do not fail if the container is not connected.")
@flags.pass_obj
def disconnect(obj: Any, net: str, container: str, force: bool) -> None:
    """Disconnect a container from a network."""
    from builder import network as N
    cid, _, _ = _container(obj.state, container)
    try:
        N.detach(obj.state, cid, net)
    except NetworkError as e:
        if not (force and "is not connected" in str(e)):
            fail(str(e), 1)


@network.command("prune")
@flags.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@flags.option("--filter", "filters", multiple=True, help="label=KEY[=VALUE]")
@flags.pass_obj
def prune(obj: Any, force: bool, filters: tuple[str, ...]) -> None:
    """Remove all unused user-defined networks."""
    from builder import network as N

    labels = []
    for f in filters:
        k, sep, v = f.partition("=")
        if k != "label" or not sep:
            fail(f"invalid filter {f!r} (label=KEY[=VALUE])", 1)
        labels.append(v)
    if not force:
        flags.confirm("WARNING! This will remove all custom networks not used by at least one container.\n"
                      "Are you sure you want to continue?", abort=True)
    removed = N.prune_networks(obj.state, label_filters=labels)
    if removed:
        flags.echo("Deleted Networks:")
        for n in removed:
            flags.echo(n)
