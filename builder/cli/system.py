"""``pybuild system prune|df|info|reset``, ``pybuild info``, ``pybuild version`` (and the text of
``pybuild --version``): flags in, one ``builder.system.engine`` call, Docker's layouts out."""

from __future__ import annotations

import json
import sys
import time

from builder.base.errors import TemplateError
from builder.base.units import binary_size, rfc3339_seconds
from builder.cli import Globals, flags
from builder.cli.format import INFO, format_rows, human_duration, human_size, table
from builder.cli.format import template as fmt_template

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _confirm(warning: str) -> bool:
    """Docker's prompt: the warning, then ``Are you sure you want to continue? [y/N] `` on
    stdout; only y/yes goes on (end of input is a no)."""
    flags.echo(warning + "Are you sure you want to continue? [y/N] ", nl=False)
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


# ``system events``/``system check`` are ``pybuild events``/``pybuild check``'s commands, their
# modules imported only when one of them runs (not for ``version`` or ``info``)
@flags.group("system", cls=flags.LazyGroup, lazy={"events": "builder.cli.events:events",
                                           "check": "builder.cli.check:check"})
def system() -> None:
    """Manage pybuild: disk usage, pruning, information, host cleanup."""


# -- df -----------------------------------------------------------------------------------------
def _reclaimable(row: Any) -> str:
    text = human_size(row.reclaimable, 4)
    if row.percent and row.size > 0:
        text += f" ({row.reclaimable * 100 // row.size}%)"
    return text


def _ago(epoch: float) -> str:
    return human_duration(time.time() - epoch) + " ago" if epoch else "N/A"


def _verbose(usage: dict[str, Any]) -> str:
    out = ["Images space usage:", ""]
    rows = []
    for i in usage["Images"]:
        for tag in i["RepoTags"]:
            repo, _, t = tag.rpartition(":")
            rows.append([repo, t, i["Id"].removeprefix("sha256:")[:12], _ago(i["Created"]),
                         human_size(i["Size"]), human_size(i["SharedSize"]),
                         human_size(i["Size"] - i["SharedSize"]), str(i["Containers"])])
    out += [table(["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "SHARED SIZE",
                   "UNIQUE SIZE", "CONTAINERS"], rows), "", "Containers space usage:", ""]
    rows = []
    for c in usage["Containers"]:
        cmd = c["Command"] if len(c["Command"]) <= 19 else c["Command"][:19] + "…"
        vols = sum(1 for m in c.get("Mounts") or () if m.get("Type") == "volume")
        rows.append([c["Id"][:12], c["Image"], f'"{cmd}"', str(vols), human_size(c.get("SizeRw") or 0),
                     _ago(c["Created"]), c["Status"], ",".join(n.lstrip("/") for n in c["Names"])])
    out += [table(["CONTAINER ID", "IMAGE", "COMMAND", "LOCAL VOLUMES", "SIZE", "CREATED",
                   "STATUS", "NAMES"], rows), "", "Local Volumes space usage:", ""]
    rows = [[v["Name"], str(v["UsageData"]["RefCount"]), human_size(v["UsageData"]["Size"])]
            for v in usage["Volumes"]]
    total = sum(b["Size"] for b in usage["BuildCache"] if not b["Shared"])
    out += [table(["VOLUME NAME", "LINKS", "SIZE"], rows), "", f"Build cache usage: {human_size(total, 4)}", ""]
    rows = []
    for b in usage["BuildCache"]:
        created, last = rfc3339_seconds(b["CreatedAt"]), rfc3339_seconds(b["LastUsedAt"])
        rows.append([b["ID"][:12], b["Type"], human_size(b["Size"]),
                     _ago(created) if created is not None else "N/A",
                     _ago(last) if last is not None else "N/A", str(b["UsageCount"]),
                     "true" if b["Shared"] else "false"])
    out.append(table(["CACHE ID", "CACHE TYPE", "SIZE", "CREATED", "LAST USED", "USAGE", "SHARED"], rows))
    return "\n".join(out)


@system.command("df")
@flags.option("-v", "--verbose", is_flag=True, help="Show detailed information on space usage.")
@flags.option("--format", "fmt", default=None, help="Format output: 'json' or a Go template.")
@flags.pass_obj
def df(g: Globals, verbose: bool, fmt: str | None) -> None:
    """Show pybuild disk usage."""
    from builder.system import engine as lib

    usage = lib.df(g.state)
    rows = lib.df_summary(usage)
    if fmt is not None and fmt != "table":  # "table" alone: the default table, as Docker
        objs = [{"Type": r.type, "TotalCount": str(r.total), "Active": str(r.active),
                 "Size": human_size(r.size, 4), "Reclaimable": _reclaimable(r)} for r in rows]
        headers = {"Type": "TYPE", "TotalCount": "TOTAL", "Active": "ACTIVE", "Size": "SIZE",
                   "Reclaimable": "RECLAIMABLE"}
        flags.echo(format_rows(fmt, objs, headers, type_name="*formatter.diskUsageImagesContext"))
        return
    if verbose:
        flags.echo(_verbose(usage))
        return
    flags.echo(table(["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"],
                     [[r.type, str(r.total), str(r.active), human_size(r.size, 4), _reclaimable(r)]
                      for r in rows]))


# -- prune --------------------------------------------------------------------------------------
@system.command("prune")
@flags.option("-a", "--all", "all_", is_flag=True, help="Remove all unused images not just dangling ones.")
@flags.option("--volumes", is_flag=True, help="Prune anonymous volumes.")
@flags.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@flags.pass_obj
def prune(g: Globals, all_: bool, volumes: bool, force: bool) -> None:
    """Remove unused data: stopped containers, unused networks, dangling images, build cache."""
    from builder.system import engine as lib

    if not force and not _confirm(lib.prune_warning(all=all_, volumes=volumes)):
        return
    r = lib.prune(g.state, all=all_, volumes=volumes)
    for title, items in (("Deleted Containers:", r.containers), ("Deleted Networks:", r.networks),
                         ("Deleted Volumes:", r.volumes), ("Deleted Images:", r.images),
                         ("Deleted build cache objects:", r.build_cache)):
        if items:
            flags.echo(title)
            for item in items:
                flags.echo(item)
            flags.echo()
    flags.echo(f"Total reclaimed space: {human_size(r.reclaimed, 4)}")


# -- reset --------------------------------------------------------------------------------------
RESET_WARNING = (
    "WARNING! This will remove from this host everything of the state root {root}:\n"
    "  - every container, stopped first if running\n"
    "  - every network, the default bridge included, with its iptables rules\n"
    "  - the root's cgroups, mounts and leftover sandboxes\n"
    "{extra}\n"
)


@system.command("reset")
@flags.option("-a", "--all", "all_", is_flag=True,
              help="Also remove the root's images, volumes and build cache (empty the root).")
@flags.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@flags.pass_obj
def reset(g: Globals, all_: bool, force: bool) -> None:
    """Remove everything of this state root from the host (images stay unless --all)."""
    from builder.system import reset as lib

    state = g.state
    extra = "  - every image, volume and build cache record (the root is emptied)\n" if all_ else ""
    if not force and not _confirm(RESET_WARNING.format(root=state.path, extra=extra)):
        return
    r = lib.reset(state, everything=all_)
    for title, items in (("Deleted Containers:", r.containers), ("Deleted Networks:", r.networks),
                         ("Removed sandboxes:", r.sandboxes), ("Removed cgroups:", r.cgroups),
                         ("Unmounted:", r.mounts)):
        if items:
            flags.echo(title)
            for item in items:
                flags.echo(item)
            flags.echo()
    if r.removed_store:
        flags.echo(f"Emptied {state.path}")
    for e in r.errors:
        flags.echo(f"Error: {e}", err=True)
    if r.errors:
        sys.exit(1)


# -- info ---------------------------------------------------------------------------------------
def _info_text(d: dict[str, Any], emulated: list[str] | None = None) -> str:
    lines = ["Client:", " Context:    default", " Debug Mode: false", "", "Server:",
             f" Containers: {d['Containers']}", f"  Running: {d['ContainersRunning']}",
             f"  Paused: {d['ContainersPaused']}", f"  Stopped: {d['ContainersStopped']}",
             f" Images: {d['Images']}", f" Server Version: {d['ServerVersion']}",
             f" Storage Driver: {d['Driver']}"]
    lines += [f"  {k}: {v}" for k, v in d["DriverStatus"]]
    lines += [f" Logging Driver: {d['LoggingDriver']}", f" Cgroup Driver: {d['CgroupDriver']}",
              f" Cgroup Version: {d['CgroupVersion']}", " Plugins:",
              f"  Volume: {' '.join(d['Plugins']['Volume'])}",
              f"  Network: {' '.join(d['Plugins']['Network'])}",
              f"  Log: {' '.join(d['Plugins']['Log'])}",
              f" Swarm: {d['Swarm']['LocalNodeState']}",
              f" Runtimes: {' '.join(sorted(d['Runtimes']))}",
              f" Default Runtime: {d['DefaultRuntime']}", f" Init Binary: {d['InitBinary']}",
              f" runc version: {d['RuncCommit']['ID'] or 'N/A'}", " Security Options:"]
    lines += [f"  {o.removeprefix('name=')}" for o in d["SecurityOptions"]]
    lines += [f" Kernel Version: {d['KernelVersion']}", f" Operating System: {d['OperatingSystem']}",
              f" OSType: {d['OSType']}", f" Architecture: {d['Architecture']}",
              *([f" Emulated Platforms: {', '.join(emulated)}"] if emulated else []),
              f" CPUs: {d['NCPU']}", f" Total Memory: {binary_size(d['MemTotal'])}",
              f" Name: {d['Name']}", f" ID: {d['ID']}", f" Pybuild Root Dir: {d['DockerRootDir']}",
              " Debug Mode: false", f" Registry: {d['IndexServerAddress']}", " Labels:",
              " Experimental: false", " Insecure Registries:"]
    lines += [f"  {c}" for c in d["RegistryConfig"]["InsecureRegistryCIDRs"]]
    if d["RegistryConfig"]["Mirrors"]:
        lines += [" Registry Mirrors:"] + [f"  {m}" for m in d["RegistryConfig"]["Mirrors"]]
    lines.append(f" Live Restore Enabled: {str(d['LiveRestoreEnabled']).lower()}")
    if d.get("Warnings"):  # rootless says what it lacks, as docker info ends with its warnings
        lines += ["", *d["Warnings"]]
    return "\n".join(lines)


def _info(g: Globals, fmt: str | None) -> None:
    from builder.system import engine as lib

    d = lib.info(g.state)
    if fmt is None:
        from builder.base.binfmt import (
            emulated,  # qemu-user-static in binfmt_misc (builder.base.binfmt)
        )

        flags.echo(_info_text(d, [str(p) for p in emulated()]))
    elif fmt == "json":
        flags.echo(json.dumps(d, separators=(",", ":")))
    else:
        flags.echo(_info_format(fmt, d, "system.info"))


def _info_format(fmt: str, doc: dict[str, Any], type_name: str, *, name: str = "") -> str:
    """``info``/``version -f``: Docker prints an empty line, then the error (exit 1)."""
    from builder.base.template.shapes import row

    tmpl = fmt_template(fmt, messages=INFO, name=name)
    try:
        return tmpl.execute(doc, options=row(type_name))
    except TemplateError as e:
        flags.echo("")
        flags.echo(str(e), err=True)
        sys.exit(1)


@system.command("info")
@flags.option("-f", "--format", "fmt", default=None, help="Format output: 'json' or a Go template.")
@flags.pass_obj
def system_info(g: Globals, fmt: str | None) -> None:
    """Display system-wide information."""
    _info(g, fmt)


@flags.command("info")
@flags.option("-f", "--format", "fmt", default=None, help="Format output: 'json' or a Go template.")
@flags.pass_obj
def info(g: Globals, fmt: str | None) -> None:
    """Display system-wide information."""
    _info(g, fmt)


# -- version ------------------------------------------------------------------------------------
def _kv(pairs: list[tuple[str, str]], indent: int) -> list[str]:
    # Docker aligns the values at column 20 whatever the indent
    return [f"{' ' * indent}{k + ':':<{19 - indent}} {v}".rstrip() for k, v in pairs]


@flags.command("version")
@flags.option("-f", "--format", "fmt", default=None, help="Format output: 'json' or a Go template.")
def version(fmt: str | None) -> None:
    """Show the pybuild version information."""
    from builder.system import engine as lib

    server = lib.version_info()
    client = {"Platform": {"Name": "pybuild"}, "Version": server["Version"],
              "ApiVersion": lib.API_VERSION, "DefaultAPIVersion": lib.API_VERSION,
              "GitCommit": server["GitCommit"], "GoVersion": server["GoVersion"], "Os": "linux",
              "Arch": lib.arch(), "BuildTime": "", "Context": "default"}
    doc = {"Client": client, "Server": server}
    if fmt == "json":
        flags.echo(json.dumps(doc, separators=(",", ":")))
        return
    if fmt is not None:
        flags.echo(_info_format(fmt, doc, "system.versionInfo", name="version"))
        return
    python = lib.python_version()
    lines = ["Client:"] + _kv([("Version", client["Version"]), ("API version", lib.API_VERSION),
                              ("Python version", python), ("Git commit", client["GitCommit"]),
                              ("OS/Arch", f"linux/{lib.arch()}"), ("Context", "default")], 1)
    lines += ["", "Server: pybuild engine (daemonless)", " Engine:"]
    engine = server["Components"][0]
    det = engine["Details"]
    lines += _kv([("Version", engine["Version"]),
                  ("API version", f"{lib.API_VERSION} (minimum version {lib.MIN_API_VERSION})"),
                  ("Python version", python), ("Git commit", det["GitCommit"]),
                  ("OS/Arch", f"linux/{lib.arch()}"), ("Storage driver", det["StorageDriver"]),
                  ("Cgroup driver", det["CgroupDriver"]), ("Cgroup version", det["CgroupVersion"]),
                  ("Runtime", "pybuild (built-in); runc with --runtime runc"),
                  ("Experimental", "false")], 2)
    for comp in server["Components"][1:]:
        lines += [f" {comp['Name']}:"] + _kv([("Version", comp["Version"]),
                                               ("GitCommit", comp["Details"].get("GitCommit", ""))], 2)
    flags.echo("\n".join(lines))


