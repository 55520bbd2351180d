"""``pybuild cluster join|leave|ls``: this host's membership in an etcd cluster (the store of
overlay networks)."""

from __future__ import annotations

from typing import Any

from builder.base.errors import NetworkError
from builder.cli import fail, flags
from builder.cli.columns import table


@flags.group()
def cluster() -> None:
    """Manage this host's membership in a cluster (overlay networks)."""


@cluster.command("join")
@flags.argument("store")
@flags.option("--advertise", default="", help="This host's underlay IPv4 address (default: the one routing to the store).")
@flags.option("--ttl", type=int, default=None, help="Lease time to live in seconds (default 15).")
@flags.pass_obj
def join(obj: Any, store: str, advertise: str, ttl: int | None) -> None:
    """Join the cluster whose store is STORE (etcd://HOST:PORT[,HOST:PORT…])."""
    from builder.network.cluster import membership
    try:
        m = membership.join(obj.state, store, advertise, ttl=ttl)
    except NetworkError as e:
        fail(str(e), 1)
    flags.echo(m.host_id)


@cluster.command("leave")
@flags.option("-f", "--force", is_flag=True, help="Leave even if the store cannot be reached.")
@flags.pass_obj
def leave(obj: Any, force: bool) -> None:
    """Leave the cluster: this host's lease, endpoints and addresses are released."""
    from builder.network import core

    try:
        core.leave_cluster(obj.state, force=force)
    except NetworkError as e:
        fail(str(e), 1)


@cluster.command("ls")
@flags.option("-q", "--quiet", is_flag=True, help="Only display host IDs.")
@flags.pass_obj
def ls(obj: Any, quiet: bool) -> None:
    """List the hosts of the cluster."""
    from builder.network.cluster import membership
    try:
        me = membership.require(obj.state)
        hosts = membership.hosts(obj.state)
    except NetworkError as e:
        fail(str(e), 1)
    if quiet:
        for h in hosts:
            flags.echo(h.id)
        return
    rows = [[h.id + (" *" if h.id == me.host_id else ""), h.address, h.name] for h in hosts]
    flags.echo(table(["HOST ID", "ADDRESS", "NAME"], rows))
