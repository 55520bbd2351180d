"""``ps``, ``logs``, ``stop``, ``kill``, ``start``, ``restart``, ``rm``, ``wait``, ``port``, ``top``,
``rename``, ``cp``, ``exec`` and the ``container`` group: parse, one library call, render.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from contextlib import suppress

from builder.base.errors import BuildError, ContainerError
from builder.cli import fail, flags
from builder.cli import format as fmt_

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from builder.runtime.containers.record import Container


# -- rendering ---------------------------------------------------------------------------------
def _ago(ts: str) -> float:
    from builder.runtime.containers.options import parse_timestamp_text

    ns = parse_timestamp_text(ts)
    return max(time.time() - ns / 1e9, 0) if ns else 0.0


def ports_text(ports: list[dict[str, Any]]) -> str:
    """The PORTS column from ``/containers/json`` ``Ports``."""
    return ", ".join(f"{p['IP']}:{p['PublicPort']}->{p['PrivatePort']}/{p['Type']}" if "PublicPort" in p
                     else f"{p['PrivatePort']}/{p['Type']}" for p in ports)


def command_text(c: Container, *, trunc: bool) -> str:
    cmd = " ".join(c.command)
    if trunc and len(cmd) > 20:
        cmd = cmd[:19] + "…"
    return f'"{cmd}"'


def _ps_row(c: Container, summary: dict[str, Any], *, trunc: bool, size: str = "0B") -> dict[str, Any]:
    created_at = time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(summary["Created"]))
    return {
        "Command": command_text(c, trunc=trunc),
        "CreatedAt": created_at,
        "ID": c.short_id if trunc else c.id,
        "Image": c.image,
        "Label": fmt_.label_method(dict(c.labels)),
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(c.labels.items())),
        "LocalVolumes": str(sum(1 for m in c.mounts if m.type == "volume")),
        "Mounts": ",".join(m.name or m.source for m in c.mounts),
        "Names": c.name,
        "Networks": ",".join(sorted(summary["NetworkSettings"]["Networks"])),
        "Ports": ports_text(summary["Ports"]),
        "RunningFor": f"{fmt_.human_duration(_ago(c.created))} ago",
        "Size": size,
        "State": summary["State"],
        "Status": summary["Status"],
    }


#: column titles of `ps --format "table …"`, as Docker prints them
_HEADERS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
            "RunningFor": "CREATED", "Ports": "PORTS", "Status": "STATUS", "Names": "NAMES",
            "Labels": "LABELS", "Mounts": "MOUNTS", "Networks": "NETWORKS", "State": "STATE",
            "Size": "SIZE", "LocalVolumes": "LOCAL VOLUMES"}


# -- helpers -----------------------------------------------------------------------------------
def _root(obj: Any) -> Any:
    return obj.state


def _each(refs: Sequence[str], fn: Callable[[str], object], *, echo: bool = True) -> None:
    """Apply *fn* to every reference; errors are printed per container and the exit status is
    1 if any failed (Docker's behaviour for multi-container verbs)."""
    failed = False
    for ref in refs:
        try:
            fn(ref)
            if echo:
                flags.echo(ref)
        except BuildError as e:
            flags.echo(f"Error: {e}", err=True)
            failed = True
    if failed:
        sys.exit(1)


# -- ps ----------------------------------------------------------------------------------------
@flags.command("ps")
@flags.option("-a", "--all", "all_", is_flag=True, help="Show all containers (default shows just running).")
@flags.option("-q", "--quiet", is_flag=True, help="Only display container IDs.")
@flags.option("-f", "--filter", "filters", multiple=True, help="Filter output based on conditions provided.")
@flags.option("--format", "fmt", default=None, help="'table', 'json' or a {{.Field}} template.")
@flags.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@flags.option("-n", "--last", type=int, default=-1, help="Show n last created containers (includes all states).")
@flags.option("-l", "--latest", is_flag=True, help="Show the latest created container (includes all states).")
@flags.option("-s", "--size", is_flag=True, help="Display total file sizes.")
@flags.pass_obj
def ps(obj: Any, all_: bool, quiet: bool, filters: tuple[str, ...], fmt: str | None, no_trunc: bool,
       last: int, latest: bool, size: bool) -> None:
    """List containers."""
    from builder.runtime.containers import inspect, lifecycle

    if latest:
        last = 1
    try:
        flt = lifecycle.Filters.parse(filters)
        found = lifecycle.list_containers(_root(obj), all=all_ or last >= 0, filters=flt)
    except ContainerError as e:
        fail(str(e))  # dockerd refuses the listing: the client exits 1 (125 is run's and create's)
    if last >= 0:
        found = found[:last]
    trunc = not no_trunc
    table = lifecycle.network_endpoints(_root(obj))

    def row_of(c: Container) -> dict[str, Any]:
        s = inspect.summary(_root(obj), c, table=table, size=size)
        text = f"{fmt_.human_size(s['SizeRw'])} (virtual {fmt_.human_size(s['SizeRootFs'])})" if size else "0B"
        return _ps_row(c, s, trunc=trunc, size=text)

    if quiet:
        for c in found:
            flags.echo(c.short_id if trunc else c.id)
        return
    if fmt and fmt != "table":
        flags.echo(fmt_.format_rows(fmt, [row_of(c) for c in found], _HEADERS,
                                    type_name="*formatter.ContainerContext", messages=fmt_.PS))
        return
    rows = []
    for c in found:
        r = row_of(c)
        rows.append([r["ID"], r["Image"], r["Command"], r["RunningFor"], r["Status"], r["Ports"], r["Names"]]
                    + ([r["Size"]] if size else []))
    flags.echo(fmt_.table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
                          + (["SIZE"] if size else []), rows))


# -- logs --------------------------------------------------------------------------------------
@flags.command("logs")
@flags.option("-f", "--follow", is_flag=True, help="Follow log output.")
@flags.option("-n", "--tail", default="all", help='Number of lines to show from the end of the logs (default "all").')
@flags.option("-t", "--timestamps", is_flag=True, help="Show timestamps.")
@flags.option("--since", default=None, help="Show logs since timestamp (e.g. 2013-01-02T13:23:37Z) or relative (e.g. 42m).")
@flags.option("--until", default=None, help="Show logs before a timestamp or relative time.")
@flags.argument("container")
@flags.pass_obj
def logs(obj: Any, follow: bool, tail: str, timestamps: bool, since: str | None, until: str | None,
         container: str) -> None:
    """Fetch the logs of a container."""
    from builder.runtime.containers import logs

    entries = logs.entries(_root(obj), container, tail=tail, since=since, until=until, follow=follow)
    out, err = sys.stdout.buffer, sys.stderr.buffer
    for e in entries:
        stream = err if e.stream == "stderr" else out
        if timestamps:
            stream.write(e.time.encode() + b" ")
        stream.write(e.data)
        if follow:
            stream.flush()
    out.flush()
    err.flush()


# -- stop / kill / start / restart --------------------------------------------------------------
@flags.command("stop")
@flags.option("-s", "--signal", "sig", default=None, help="Signal to send to the container.")
@flags.option("-t", "--time", "--timeout", "timeout", type=int, default=None,
              help="Seconds to wait before killing the container.")
@flags.argument("containers", nargs=-1, required=True)
@flags.pass_obj
def stop(obj: Any, sig: str | None, timeout: int | None, containers: tuple[str, ...]) -> None:
    """Stop one or more running containers."""
    from builder.runtime.containers import lifecycle

    _each(containers, lambda r: lifecycle.stop(_root(obj), r, timeout=timeout, sig=sig))


@flags.command("kill")
@flags.option("-s", "--signal", "sig", default="KILL", help="Signal to send to the container.")
@flags.argument("containers", nargs=-1, required=True)
@flags.pass_obj
def kill(obj: Any, sig: str, containers: tuple[str, ...]) -> None:
    """Kill one or more running containers."""
    from builder.runtime.containers import lifecycle
    from builder.runtime.containers.options import parse_signal

    parse_signal(sig)  # a bad signal is one error, not one per container
    _each(containers, lambda r: lifecycle.kill(_root(obj), r, sig))


@flags.command("start")
@flags.option("-a", "--attach", is_flag=True, help="Attach STDOUT/STDERR and forward signals.")
@flags.option("-i", "--interactive", is_flag=True, help="Attach container's STDIN.")
@flags.option("--detach-keys", default=None, help="Override the key sequence for detaching a container.")
@flags.argument("containers", nargs=-1, required=True)
@flags.pass_obj
def start(obj: Any, attach: bool, interactive: bool, detach_keys: str | None, containers: tuple[str, ...]) -> None:
    """Start one or more stopped containers."""
    from builder.runtime.containers import service

    if (attach or interactive) and len(containers) > 1:
        raise flags.UsageError("you cannot start and attach multiple containers at once")
    if attach or interactive:
        from builder.runtime.containers.attached import detach_keys as parse_keys
        try:
            parse_keys(detach_keys)
        except ContainerError as e:
            fail(str(e))  # dockerd refuses the attach: exit 1, nothing started
    if interactive:
        _start_interactive(_root(obj), containers[0], detach_keys)
    if attach:
        c = service.start(_root(obj), containers[0])
        sys.exit(follow_first_run(_root(obj), c.id, since_ns=started_ns(c)))
    _each(containers, lambda r: service.start(_root(obj), r))


def _start_interactive(root: Any, ref: str, detach_keys: str | None) -> None:
    """``start -a -i``: this terminal attached (stdin too) through the supervisor's socket."""
    from builder.cli.attach import check_tty, session
    from builder.runtime.containers import attached, lifecycle

    keys = attached.detach_keys(detach_keys)
    c = lifecycle.get(root, ref)
    tty, stdin = bool(c.config.tty), bool(c.config.open_stdin)
    check_tty(tty, stdin)
    c, sock = attached.start_connected(root, ref, stdin=True)

    def proxy(signum: int) -> None:
        with suppress(Exception):
            lifecycle.kill(root, c.id, signum)

    if session(sock, tty=tty, stdin=stdin, detach_keys=keys, proxy=proxy)[0]:
        sys.exit(0)  # detached: the container goes on (Docker's `start -ai` exits 0)
    sys.exit(attached.exit_code(root, c.id))


def started_ns(c: Container) -> int:
    from builder.runtime.containers.options import parse_timestamp_text

    return parse_timestamp_text(c.state.started_at)


def follow_first_run(root: Any, cid: str, *, since_ns: int) -> int:
    """Stream a detached container's output from *since_ns* until its current run ends;
    returns that run's exit code."""
    from builder.runtime.containers import lifecycle, logs

    for e in logs.follow_run(root, cid, since_ns=since_ns):
        stream = sys.stderr.buffer if e.stream == "stderr" else sys.stdout.buffer
        stream.write(e.data)
        stream.flush()
    return lifecycle.run_exit_code(root, cid)


@flags.command("restart")
@flags.option("-s", "--signal", "sig", default=None, help="Signal to send to the container.")
@flags.option("-t", "--time", "--timeout", "timeout", type=int, default=None,
              help="Seconds to wait before killing the container.")
@flags.argument("containers", nargs=-1, required=True)
@flags.pass_obj
def restart(obj: Any, sig: str | None, timeout: int | None, containers: tuple[str, ...]) -> None:
    """Restart one or more containers."""
    from builder.runtime.containers import service

    _each(containers, lambda r: service.restart(_root(obj), r, timeout=timeout, sig=sig))


# -- rm / prune / rename / wait ----------------------------------------------------------------
@flags.command("rm")
@flags.option("-f", "--force", is_flag=True, help="Force the removal of a running container (uses SIGKILL).")
@flags.option("-v", "--volumes", is_flag=True, help="Remove anonymous volumes associated with the container.")
@flags.argument("containers", nargs=-1, required=True)
@flags.pass_obj
def rm(obj: Any, force: bool, volumes: bool, containers: tuple[str, ...]) -> None:
    """Remove one or more containers."""
    from builder.runtime.containers import lifecycle

    _each(containers, lambda r: lifecycle.remove(_root(obj), r, force=force, volumes=volumes))


@flags.command("prune")
@flags.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@flags.option("--filter", "filters", multiple=True, help="Provide filter values (e.g. 'label=<key>=<value>').")
@flags.pass_obj
def prune(obj: Any, force: bool, filters: tuple[str, ...]) -> None:
    """Remove all stopped containers."""
    from builder.runtime.containers import lifecycle

    if not force and not flags.confirm(
        "WARNING! This will remove all stopped containers.\nAre you sure you want to continue?"
    ):
        return
    removed = lifecycle.prune(_root(obj), filters=lifecycle.Filters.parse(filters))
    if removed:
        flags.echo("Deleted Containers:")
        for cid in removed:
            flags.echo(cid)
        flags.echo("")
    flags.echo("Total reclaimed space: 0B")


@flags.command("rename")
@flags.argument("container")
@flags.argument("new_name")
@flags.pass_obj
def rename(obj: Any, container: str, new_name: str) -> None:
    """Rename a container."""
    from builder.runtime.containers import lifecycle

    lifecycle.rename(_root(obj), container, new_name)


@flags.command("wait")
@flags.option("--condition", type=flags.Choice(["not-running", "next-exit", "removed"]), default="not-running")
@flags.argument("containers", nargs=-1, required=True)
@flags.pass_obj
def wait(obj: Any, condition: str, containers: tuple[str, ...]) -> None:
    """Block until one or more containers stop, then print their exit codes."""
    from builder.runtime.containers import lifecycle

    _each(containers, lambda r: flags.echo(lifecycle.wait(_root(obj), r, condition=condition)), echo=False)


# -- port / top / inspect ----------------------------------------------------------------------
@flags.command("port")
@flags.argument("container")
@flags.argument("private_port", required=False)
@flags.pass_obj
def port(obj: Any, container: str, private_port: str | None) -> None:
    """List port mappings or a specific mapping for the container."""
    from builder.runtime.containers import inspect, lifecycle
    c = lifecycle.get(_root(obj), container)
    published = inspect.published_ports(c, inspect.endpoints(_root(obj), c))
    if private_port:
        num, _, proto = private_port.partition("/")
        proto = proto or "tcp"
        hits = [p for p in published if str(p["ContainerPort"]) == num and p["Protocol"] == proto]
        if not hits:
            raise ContainerError(f"No public port '{num}/{proto}' published for {container}")
        for p in hits:
            flags.echo(f"{p['HostIp'] or '0.0.0.0'}:{p['HostPort']}")
        return
    for p in sorted(published, key=lambda p: (p["ContainerPort"], p["Protocol"])):
        flags.echo(f"{p['ContainerPort']}/{p['Protocol']} -> {p['HostIp'] or '0.0.0.0'}:{p['HostPort']}")


@flags.command("pause")
@flags.argument("containers", nargs=-1, required=True)
@flags.pass_obj
def pause(obj: Any, containers: tuple[str, ...]) -> None:
    """Pause all processes within one or more containers."""
    from builder.runtime.containers import lifecycle

    _each(containers, lambda r: lifecycle.pause(_root(obj), r))


@flags.command("unpause")
@flags.argument("containers", nargs=-1, required=True)
@flags.pass_obj
def unpause(obj: Any, containers: tuple[str, ...]) -> None:
    """Unpause all processes within one or more containers."""
    from builder.runtime.containers import lifecycle

    _each(containers, lambda r: lifecycle.unpause(_root(obj), r))


@flags.command("top")
@flags.argument("container")
@flags.pass_obj
def top(obj: Any, container: str) -> None:
    """Display the running processes of a container."""
    from builder.runtime.containers import inspect, lifecycle

    shown = inspect.top(lifecycle.get(_root(obj), container))
    flags.echo(fmt_.table(shown["Titles"], shown["Processes"]))


@flags.command("inspect")
@flags.option("-f", "--format", "fmt", default=None, help="Format the output using a {{.Field}} template.")
@flags.option("-s", "--size", is_flag=True, help="Display total file sizes.")
@flags.argument("containers", nargs=-1, required=True)
@flags.pass_obj
def container_inspect(obj: Any, fmt: str | None, size: bool, containers: tuple[str, ...]) -> None:
    """Display detailed information on one or more containers."""
    from builder.runtime.containers import inspect
    root = _root(obj)
    if fmt:
        fmt_.template(fmt, messages=fmt_.INSPECT)  # a bad template fails before any lookup
    objs, errors = [], []
    for ref in containers:
        try:
            objs.append(inspect.inspect(root, ref, size=size))
        except BuildError as e:
            errors.append(f"Error: {e}")
    fmt_.inspect_output(fmt, objs, errors)


# -- the `container` group ---------------------------------------------------------------------
_CONTAINER_COMMANDS = {
    name: f"builder.cli.containers:{attr}"
    for name, attr in (("ls", "ps"), ("ps", "ps"), ("list", "ps"), ("logs", "logs"), ("stop", "stop"),
                       ("kill", "kill"), ("start", "start"), ("restart", "restart"), ("rm", "rm"),
                       ("remove", "rm"), ("prune", "prune"), ("rename", "rename"), ("wait", "wait"),
                       ("port", "port"), ("top", "top"), ("inspect", "container_inspect"),
                       ("pause", "pause"), ("unpause", "unpause"))
} | {"attach": "builder.cli.attach:attach"} | {name: f"builder.cli.container_run:{attr}"
     for name, attr in (("run", "run"), ("create", "create"), ("exec", "exec_"), ("cp", "cp"))
     } | {"stats": "builder.cli.stats:stats", "update": "builder.cli.stats:update"} | {
    name: f"builder.cli.changes:{name}" for name in ("diff", "export", "commit")}


@flags.group("container", cls=flags.LazyGroup, lazy=_CONTAINER_COMMANDS)
def container() -> None:
    """Manage containers."""
