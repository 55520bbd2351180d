"""``ps``, ``logs``, ``stop``, ``kill``, ``start``, ``restart``, ``rm``, ``wait``, ``port``, ``top``,
``rename``, ``cp``, ``exec`` and the ``container`` group: parse, one library call, render.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import click

from builder.cli import format as fmt_

if TYPE_CHECKING:
    from builder.containers.record import Container


# -- rendering ---------------------------------------------------------------------------------
def _ago(ts: str) -> float:
    from builder.containers.options import parse_timestamp_text

    ns = parse_timestamp_text(ts)
    return max(time.time() - ns / 1e9, 0) if ns else 0.0


def status_text(c: Container) -> str:
    st = c.state
    if st.status == "running":
        health = f" ({st.health.status if st.health.status != 'starting' else 'health: starting'})" if st.health else ""
        return f"Up {fmt_.human_duration(_ago(st.started_at))}{health}"
    if st.status == "restarting":
        return f"Restarting ({st.exit_code}) {fmt_.human_duration(_ago(st.finished_at))} ago"
    if st.status == "exited":
        if st.finished_at.startswith("0001"):
            return f"Exited ({st.exit_code})"
        return f"Exited ({st.exit_code}) {fmt_.human_duration(_ago(st.finished_at))} ago"
    if st.status == "created":
        return "Created"
    if st.status == "removing":
        return "Removal In Progress"
    return st.status.capitalize()


def ports_of(c: Container, eps: dict[str, Any]) -> list[dict[str, Any]]:
    """Published ports from the container's network endpoints."""
    out: list[dict[str, Any]] = []
    if c.state.status != "running":
        return out
    for ep in eps.values():
        for p in ep.get("Ports", ()):
            out.append(p)
    return out


def ports_text(c: Container, eps: dict[str, Any]) -> str:
    parts = []
    published = ports_of(c, eps)
    seen = set()
    for p in published:
        parts.append(f"{p['HostIp'] or '0.0.0.0'}:{p['HostPort']}->{p['ContainerPort']}/{p['Protocol']}")
        seen.add(f"{p['ContainerPort']}/{p['Protocol']}")
    for k in sorted(c.config.get("ExposedPorts") or {}):
        key = k if "/" in k else f"{k}/tcp"
        if key not in seen:
            parts.append(key)
    return ", ".join(parts)


def command_text(c: Container, *, trunc: bool) -> str:
    cmd = " ".join(c.command)
    if trunc and len(cmd) > 20:
        cmd = cmd[:19] + "…"
    return f'"{cmd}"'


def _ps_row(c: Container, *, trunc: bool, eps: dict[str, Any], size: str = "0B") -> dict[str, Any]:
    from builder.containers.options import parse_timestamp_text

    created_ns = parse_timestamp_text(c.created)
    created_at = time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(created_ns / 1e9))
    return {
        "Command": command_text(c, trunc=trunc),
        "CreatedAt": created_at,
        "ID": c.short_id if trunc else c.id,
        "Image": c.image,
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(c.labels.items())),
        "LocalVolumes": str(sum(1 for m in c.mounts if m.get("Type") == "volume")),
        "Mounts": ",".join(str(m.get("Name") or m.get("Source", "")) for m in c.mounts),
        "Names": c.name,
        "Networks": ",".join(sorted(eps)),
        "Ports": ports_text(c, eps),
        "RunningFor": f"{fmt_.human_duration(_ago(c.created))} ago",
        "Size": size,
        "State": c.state.status,
        "Status": status_text(c),
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
    from builder.errors import BuildError

    failed = False
    for ref in refs:
        try:
            fn(ref)
            if echo:
                click.echo(ref)
        except BuildError as e:
            click.echo(f"Error: {e}", err=True)
            failed = True
    if failed:
        sys.exit(1)


# -- ps ----------------------------------------------------------------------------------------
@click.command("ps")
@click.option("-a", "--all", "all_", is_flag=True, help="Show all containers (default shows just running).")
@click.option("-q", "--quiet", is_flag=True, help="Only display container IDs.")
@click.option("-f", "--filter", "filters", multiple=True, help="Filter output based on conditions provided.")
@click.option("--format", "fmt", default=None, help="'table', 'json' or a {{.Field}} template.")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@click.option("-n", "--last", type=int, default=-1, help="Show n last created containers (includes all states).")
@click.option("-l", "--latest", is_flag=True, help="Show the latest created container (includes all states).")
@click.option("-s", "--size", is_flag=True, help="Display total file sizes.")
@click.pass_obj
def ps(obj: Any, all_: bool, quiet: bool, filters: tuple[str, ...], fmt: str | None, no_trunc: bool,
       last: int, latest: bool, size: bool) -> None:
    """List containers."""
    from builder.containers import lifecycle

    if latest:
        last = 1
    flt = lifecycle.Filters.parse(filters)
    found = lifecycle.list_containers(_root(obj), all=all_ or last >= 0, filters=flt)
    if last >= 0:
        found = found[:last]
    trunc = not no_trunc
    table = lifecycle.network_endpoints(_root(obj))

    def row_of(c: Container) -> dict[str, Any]:
        text = "0B"
        if size:
            rw, total = lifecycle.sizes(_root(obj), c)
            text = f"{fmt_.human_size(rw)} (virtual {fmt_.human_size(total)})"
        return _ps_row(c, trunc=trunc, eps=lifecycle.endpoints_of(c, table), size=text)

    if quiet:
        for c in found:
            click.echo(c.short_id if trunc else c.id)
        return
    if fmt and fmt != "table":
        click.echo(fmt_.format_rows(fmt, [row_of(c) for c in found], _HEADERS))
        return
    rows = []
    for c in found:
        r = row_of(c)
        rows.append([r["ID"], r["Image"], r["Command"], r["RunningFor"], r["Status"], r["Ports"], r["Names"]]
                    + ([r["Size"]] if size else []))
    click.echo(fmt_.table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
                          + (["SIZE"] if size else []), rows))


# -- logs --------------------------------------------------------------------------------------
@click.command("logs")
@click.option("-f", "--follow", is_flag=True, help="Follow log output.")
@click.option("-n", "--tail", default="all", help='Number of lines to show from the end of the logs (default "all").')
@click.option("-t", "--timestamps", is_flag=True, help="Show timestamps.")
@click.option("--since", default=None, help="Show logs since timestamp (e.g. 2013-01-02T13:23:37Z) or relative (e.g. 42m).")
@click.option("--until", default=None, help="Show logs before a timestamp or relative time.")
@click.argument("container")
@click.pass_obj
def logs(obj: Any, follow: bool, tail: str, timestamps: bool, since: str | None, until: str | None,
         container: str) -> None:
    """Fetch the logs of a container."""
    from builder.containers import lifecycle
    from builder.containers.logs import read_logs
    from builder.containers.options import parse_timestamp_ns
    from builder.errors import ContainerError

    root = _root(obj)
    c = lifecycle.get(root, container)
    if tail == "all":
        n: int | None = None
    else:
        try:
            n = int(tail)
        except ValueError:
            raise ContainerError(f"invalid --tail value {tail!r}: a number or \"all\"") from None
        if n < 0:
            n = None
    since_ns = parse_timestamp_ns(since) if since else 0
    until_ns = parse_timestamp_ns(until) if until else 0
    cs = lifecycle.store(root)

    def running() -> bool:
        try:
            return lifecycle.refresh(cs, cs.load(c.id)).state.running
        except ContainerError:
            return False

    out, err = sys.stdout.buffer, sys.stderr.buffer
    for e in read_logs(cs.log_path(c.id), tail=n, since_ns=since_ns, until_ns=until_ns,
                       follow=follow, still_running=running):
        stream = err if e.stream == "stderr" else out
        if timestamps:
            stream.write(e.time.encode() + b" ")
        stream.write(e.data)
        if follow:
            stream.flush()
    out.flush()
    err.flush()


# -- stop / kill / start / restart --------------------------------------------------------------
@click.command("stop")
@click.option("-s", "--signal", "sig", default=None, help="Signal to send to the container.")
@click.option("-t", "--time", "--timeout", "timeout", type=int, default=None,
              help="Seconds to wait before killing the container.")
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def stop(obj: Any, sig: str | None, timeout: int | None, containers: tuple[str, ...]) -> None:
    """Stop one or more running containers."""
    from builder.containers import lifecycle

    _each(containers, lambda r: lifecycle.stop(_root(obj), r, timeout=timeout, sig=sig))


@click.command("kill")
@click.option("-s", "--signal", "sig", default="KILL", help="Signal to send to the container.")
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def kill(obj: Any, sig: str, containers: tuple[str, ...]) -> None:
    """Kill one or more running containers."""
    from builder.containers import lifecycle
    from builder.containers.options import parse_signal

    parse_signal(sig)  # a bad signal is one error, not one per container
    _each(containers, lambda r: lifecycle.kill(_root(obj), r, sig))


@click.command("start")
@click.option("-a", "--attach", is_flag=True, help="Attach STDOUT/STDERR (follow the logs until it stops).")
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def start(obj: Any, attach: bool, containers: tuple[str, ...]) -> None:
    """Start one or more stopped containers."""
    from builder.containers import service

    if attach and len(containers) > 1:
        raise click.UsageError("you cannot start and attach multiple containers at once")
    if attach:
        c = service.start(_root(obj), containers[0])
        sys.exit(_follow_first_run(_root(obj), c.id, since_ns=_started_ns(c)))
    _each(containers, lambda r: service.start(_root(obj), r))


def _started_ns(c: Container) -> int:
    from builder.containers.options import parse_timestamp_text

    return parse_timestamp_text(c.state.started_at)


def _follow_first_run(root: Any, cid: str, *, since_ns: int) -> int:
    """Stream a detached container's output from *since_ns* until its current run ends;
    returns that run's exit code."""
    from builder.containers import lifecycle
    from builder.containers.logs import read_logs
    from builder.errors import ContainerError

    cs = lifecycle.store(root)
    runs = cs.load(cid).state.restart_count
    last = [0]

    def running() -> bool:
        try:
            st = lifecycle.refresh(cs, cs.load(cid)).state
        except ContainerError:
            return False
        last[0] = st.exit_code
        return st.status == "running" and st.restart_count == runs

    for e in read_logs(cs.log_path(cid), since_ns=since_ns, follow=True, still_running=running):
        stream = sys.stderr.buffer if e.stream == "stderr" else sys.stdout.buffer
        stream.write(e.data)
        stream.flush()
    try:
        return lifecycle.refresh(cs, cs.load(cid)).state.exit_code
    except ContainerError:
        return lifecycle._last_exit(root, cid) or last[0]


@click.command("restart")
@click.option("-s", "--signal", "sig", default=None, help="Signal to send to the container.")
@click.option("-t", "--time", "--timeout", "timeout", type=int, default=None,
              help="Seconds to wait before killing the container.")
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def restart(obj: Any, sig: str | None, timeout: int | None, containers: tuple[str, ...]) -> None:
    """Restart one or more containers."""
    from builder.containers import service

    _each(containers, lambda r: service.restart(_root(obj), r, timeout=timeout, sig=sig))


# -- rm / prune / rename / wait ----------------------------------------------------------------
@click.command("rm")
@click.option("-f", "--force", is_flag=True, help="Force the removal of a running container (uses SIGKILL).")
@click.option("-v", "--volumes", is_flag=True, help="Remove anonymous volumes associated with the container.")
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def rm(obj: Any, force: bool, volumes: bool, containers: tuple[str, ...]) -> None:
    """Remove one or more containers."""
    from builder.containers import lifecycle

    _each(containers, lambda r: lifecycle.remove(_root(obj), r, force=force, volumes=volumes))


@click.command("prune")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@click.option("--filter", "filters", multiple=True, help="Provide filter values (e.g. 'label=<key>=<value>').")
@click.pass_obj
def prune(obj: Any, force: bool, filters: tuple[str, ...]) -> None:
    """Remove all stopped containers."""
    from builder.containers import lifecycle

    if not force and not click.confirm(
        "WARNING! This will remove all stopped containers.\nAre you sure you want to continue?"
    ):
        return
    removed = lifecycle.prune(_root(obj), filters=lifecycle.Filters.parse(filters))
    if removed:
        click.echo("Deleted Containers:")
        for cid in removed:
            click.echo(cid)
        click.echo("")
    click.echo("Total reclaimed space: 0B")


@click.command("rename")
@click.argument("container")
@click.argument("new_name")
@click.pass_obj
def rename(obj: Any, container: str, new_name: str) -> None:
    """Rename a container."""
    from builder.containers import lifecycle

    lifecycle.rename(_root(obj), container, new_name)


@click.command("wait")
@click.option("--condition", type=click.Choice(["not-running", "next-exit", "removed"]), default="not-running")
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def wait(obj: Any, condition: str, containers: tuple[str, ...]) -> None:
    """Block until one or more containers stop, then print their exit codes."""
    from builder.containers import lifecycle

    _each(containers, lambda r: click.echo(lifecycle.wait(_root(obj), r, condition=condition)), echo=False)


# -- port / top / inspect ----------------------------------------------------------------------
@click.command("port")
@click.argument("container")
@click.argument("private_port", required=False)
@click.pass_obj
def port(obj: Any, container: str, private_port: str | None) -> None:
    """List port mappings or a specific mapping for the container."""
    from builder.containers import lifecycle
    from builder.errors import ContainerError

    c = lifecycle.get(_root(obj), container)
    published = ports_of(c, lifecycle.endpoints_of(c, lifecycle.network_endpoints(_root(obj))))
    if private_port:
        num, _, proto = private_port.partition("/")
        proto = proto or "tcp"
        hits = [p for p in published if str(p["ContainerPort"]) == num and p["Protocol"] == proto]
        if not hits:
            raise ContainerError(f"No public port '{num}/{proto}' published for {container}")
        for p in hits:
            click.echo(f"{p['HostIp'] or '0.0.0.0'}:{p['HostPort']}")
        return
    for p in sorted(published, key=lambda p: (p["ContainerPort"], p["Protocol"])):
        click.echo(f"{p['ContainerPort']}/{p['Protocol']} -> {p['HostIp'] or '0.0.0.0'}:{p['HostPort']}")


@click.command("top")
@click.argument("container")
@click.pass_obj
def top(obj: Any, container: str) -> None:
    """Display the running processes of a container."""
    from builder.containers import lifecycle

    c = lifecycle.get(_root(obj), container)
    procs = lifecycle.processes(c)
    ticks = __import__("os").sysconf("SC_CLK_TCK")
    boot = _boot_time()
    rows = []
    for p in procs:
        stime = time.strftime("%H:%M", time.localtime(boot + p["STIME"] / ticks))
        t = p["TIME"]
        rows.append([_user(p["UID"]), str(p["PID"]), str(p["PPID"]), "0", stime, p["TTY"],
                     f"{t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d}", p["CMD"]])
    click.echo(fmt_.table(["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"], rows))


def _boot_time() -> float:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime"):
                return float(line.split()[1])
    return 0.0


def _user(uid: str) -> str:
    import pwd

    try:
        return pwd.getpwuid(int(uid)).pw_name
    except (KeyError, ValueError):
        return uid


def inspect_json(root: Any, c: Container) -> dict[str, Any]:
    """Docker's ``container inspect`` object for a record."""
    d = c.to_json()
    st = c.state.docker()
    out = {
        "Id": d["Id"],
        "Created": d["Created"],
        "Path": d["Path"],
        "Args": d["Args"],
        "State": st,
        "Image": d["ImageID"],
        "ResolvConfPath": str(root.run / "net" / c.id / "resolv.conf"),
        "HostnamePath": "",
        "HostsPath": str(root.run / "net" / c.id / "hosts"),
        "LogPath": str(root.containers / c.id / f"{c.id}-json.log"),
        "Name": d["Name"],
        "RestartCount": c.state.restart_count,
        "Driver": "overlay2",
        "Platform": "linux",
        "HostConfig": d["HostConfig"],
        "Mounts": d["Mounts"],
        "Config": d["Config"],
        "NetworkSettings": _network_settings(c, _endpoints(root, c)),
    }
    return out


def _endpoints(root: Any, c: Container) -> dict[str, Any]:
    from builder.containers import lifecycle

    return lifecycle.endpoints_of(c, lifecycle.network_endpoints(root))


def _network_settings(c: Container, eps: dict[str, Any]) -> dict[str, Any]:
    running = c.state.running
    nets: dict[str, Any] = {}
    ports: dict[str, Any] = {}
    for k in c.config.get("ExposedPorts") or {}:
        ports[k if "/" in k else f"{k}/tcp"] = None
    for name, ep in eps.items():
        ip, _, plen = str(ep.get("IPv4Address", "")).partition("/")
        nets[name] = {
            "Aliases": ep.get("Aliases") or None,
            "NetworkID": ep.get("NetworkID", ""),
            "EndpointID": ep.get("EndpointID", "") if running else "",
            "Gateway": ep.get("Gateway", "") if running else "",
            "IPAddress": ip if running else "",
            "IPPrefixLen": int(plen or 0) if running else 0,
            "MacAddress": ep.get("MacAddress", "") if running else "",
        }
        if running:
            for p in ep.get("Ports", ()):
                key = f"{p['ContainerPort']}/{p['Protocol']}"
                ports.setdefault(key, None)
                ports[key] = (ports[key] or []) + [{"HostIp": p["HostIp"] or "0.0.0.0", "HostPort": str(p["HostPort"])}]
    first: dict[str, Any] = next(iter(nets.values()), {})
    return {
        "SandboxKey": c.state.sandbox.get("netns", "") if running else "",
        "Ports": ports,
        "IPAddress": first.get("IPAddress", ""),
        "Gateway": first.get("Gateway", ""),
        "MacAddress": first.get("MacAddress", ""),
        "Networks": nets,
    }


def _format_inspect(objs: list[dict[str, Any]], fmt: str | None) -> None:
    if not fmt:
        click.echo(json.dumps(objs, indent=4))
        return
    for o in objs:
        click.echo(fmt_.render_template(fmt, o))


@click.command("inspect")
@click.option("-f", "--format", "fmt", default=None, help="Format the output using a {{.Field}} template.")
@click.option("-s", "--size", is_flag=True, help="Display total file sizes.")
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def container_inspect(obj: Any, fmt: str | None, size: bool, containers: tuple[str, ...]) -> None:
    """Display detailed information on one or more containers."""
    from builder.containers import lifecycle
    from builder.errors import BuildError

    root = _root(obj)
    objs, failed = [], False
    for ref in containers:
        try:
            c = lifecycle.get(root, ref)
            obj_ = inspect_json(root, c)
            if size:
                obj_["SizeRw"], obj_["SizeRootFs"] = lifecycle.sizes(root, c)
            objs.append(obj_)
        except BuildError as e:
            click.echo(f"Error: {e}", err=True)
            failed = True
    _format_inspect(objs, fmt)
    if failed:
        sys.exit(1)


def try_inspect(root: Any, ref: str) -> dict[str, Any] | None:
    """The container named *ref*, for a top-level ``inspect`` that found no image (or None)."""
    from builder.containers import lifecycle
    from builder.containers.record import NoSuchContainer

    try:
        return inspect_json(root, lifecycle.get(root, ref))
    except NoSuchContainer:
        return None


# -- the `container` group ---------------------------------------------------------------------
_CONTAINER_COMMANDS = {
    name: f"builder.cli.containers:{attr}"
    for name, attr in (("ls", "ps"), ("ps", "ps"), ("list", "ps"), ("logs", "logs"), ("stop", "stop"),
                       ("kill", "kill"), ("start", "start"), ("restart", "restart"), ("rm", "rm"),
                       ("remove", "rm"), ("prune", "prune"), ("rename", "rename"), ("wait", "wait"),
                       ("port", "port"), ("top", "top"), ("inspect", "container_inspect"))
} | {name: f"builder.cli.container_run:{attr}"
     for name, attr in (("run", "run"), ("create", "create"), ("exec", "exec_"), ("cp", "cp"))}


def _lazy_group() -> type[click.Group]:
    from builder.cli import LazyGroup

    return LazyGroup


@click.group("container", cls=_lazy_group(), lazy=_CONTAINER_COMMANDS)
def container() -> None:
    """Manage containers."""
