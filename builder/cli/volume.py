"""``pybuild volume create|ls|inspect|rm|prune``: parse, one ``builder.runtime.volume`` call, render."""

from __future__ import annotations

import json
from collections.abc import Sequence

from builder.base import units
from builder.base.errors import VolumeError
from builder.cli import fail, flags
from builder.cli.columns import table

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _kv(items: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        k, _, v = item.partition("=")
        if not k:
            fail(f"invalid {what} {item!r}: expected KEY=VALUE", 1)
        out[k] = v
    return out


@flags.group()
def volume() -> None:
    """Manage volumes."""


@volume.command("create")
@flags.argument("name", required=False)
@flags.option("-d", "--driver", default="local", show_default=True, help="Volume driver.")
@flags.option("--label", "labels", multiple=True, help="Set metadata (KEY=VALUE).")
@flags.option("-o", "--opt", "opts", multiple=True, help="Driver options (KEY=VALUE).")
@flags.option("--name", "name_opt", default=None, help="Volume name (same as the argument).")
@flags.pass_obj
def create(obj: Any, name: str | None, driver: str, labels: tuple[str, ...], opts: tuple[str, ...], name_opt: str | None) -> None:
    """Create a volume."""
    from builder.runtime.volume import store as V
    if name and name_opt and name != name_opt:
        fail("conflicting options: either specify --name or provide positional arg, not both", 1)
    try:
        vol = V.create(obj.state, name or name_opt, driver=driver, labels=_kv(labels, "label"), options=_kv(opts, "option"))
    except VolumeError as e:
        fail(str(e), 1)
    flags.echo(vol.name)


@volume.command("ls")
@flags.option("-q", "--quiet", is_flag=True, help="Only display volume names.")
@flags.option("-f", "--filter", "filters", multiple=True, help="dangling=, name=, label=, driver=")
@flags.option("--format", "fmt", default=None, help="'table', 'table TEMPLATE', 'json' or a Go TEMPLATE.")
@flags.pass_obj
def ls(obj: Any, quiet: bool, filters: tuple[str, ...], fmt: str | None) -> None:
    """List volumes."""
    from builder.runtime.volume import store as V
    wanted: dict[str, list[str]] = {}
    for f in filters:
        k, sep, v = f.partition("=")
        if not sep:
            fail(f"bad format of filter (expected name=value): {f}", 1)
        wanted.setdefault(k, []).append(v)
    try:
        vols = V.filter_volumes(obj.state, V.list_volumes(obj.state), wanted)
    except VolumeError as e:
        fail(str(e), 1)
    if quiet:
        for vol in vols:
            flags.echo(vol.name)
    elif fmt and fmt != "table":
        from builder.cli.format import format_rows, label_method

        rows = []
        for vol in vols:
            d = vol.to_json()
            rows.append({"Driver": d["Driver"], "Label": label_method(dict(d["Labels"])),
                         "Labels": ",".join(f"{k}={v}" for k, v in d["Labels"].items()), "Links": "N/A",
                         "Mountpoint": d["Mountpoint"], "Name": d["Name"], "Scope": "local", "Size": "N/A"})
        headers = {"Name": "VOLUME NAME", "Driver": "DRIVER", "Scope": "SCOPE", "Mountpoint": "MOUNTPOINT",
                   "Labels": "LABELS", "Links": "LINKS", "Size": "SIZE"}
        text = format_rows(fmt, rows, headers, type_name="*formatter.volumeContext")
        if text:
            flags.echo(text)
    else:
        flags.echo(table(["DRIVER", "VOLUME NAME"], [[v.driver, v.name] for v in vols]))


@volume.command("inspect")
@flags.option("-f", "--format", "fmt", default=None, help="Format the output using a Go template.")
@flags.argument("names", nargs=-1, required=True)
@flags.pass_obj
def inspect(obj: Any, fmt: str | None, names: tuple[str, ...]) -> None:
    """Display detailed information on one or more volumes."""
    from builder.runtime.volume import store as V
    if fmt:
        from builder.cli.format import INSPECT, inspect_output, template

        template(fmt, messages=INSPECT)  # a bad template fails before any lookup
    out, missing = [], []
    for n in names:
        try:
            out.append(V.get(obj.state, n).to_json())
        except VolumeError:
            missing.append(f"No such volume: {n}")
    if fmt:
        from builder.base.template.shapes import row

        # Docker's volume inspect has no JSON fallback: its errors name the Go type
        inspect_output(fmt, out, [f"Error: {m}" for m in missing[:1]], options=row("types.Volume"))
        return
    flags.echo(json.dumps(out, indent=4))
    if missing:
        fail(missing[0], 1)


@volume.command("rm")
@flags.argument("names", nargs=-1, required=True)
@flags.option("-f", "--force", is_flag=True, help="Do not fail on a missing volume.")
@flags.pass_obj
def rm(obj: Any, names: tuple[str, ...], force: bool) -> None:
    """Remove one or more volumes (refused while a container uses one)."""
    from builder.runtime.volume import store as V
    errors = []
    for n in names:
        try:
            V.remove(obj.state, n, force=force)
            flags.echo(n)
        except VolumeError as e:
            errors.append(str(e))
    if errors:
        fail(errors[0] if len(errors) == 1 else "; ".join(errors), 1)


@volume.command("prune")
@flags.option("-a", "--all", "all_", is_flag=True, help="Remove all unused volumes, not just anonymous ones.")
@flags.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@flags.option("--filter", "filters", multiple=True, help="label=KEY[=VALUE]")
@flags.pass_obj
def prune(obj: Any, all_: bool, force: bool, filters: tuple[str, ...]) -> None:
    """Remove unused local volumes."""
    from builder.runtime.volume import store as V

    labels = []
    for f in filters:
        k, sep, v = f.partition("=")
        if k != "label" or not sep:
            fail(f"invalid filter {f!r} (label=KEY[=VALUE])", 1)
        labels.append(v)
    if not force:
        what = "all local volumes" if all_ else "anonymous local volumes"
        flags.confirm(f"WARNING! This will remove {what} not used by at least one container.\n"
                      "Are you sure you want to continue?", abort=True)
    removed, space = V.prune(obj.state, all_volumes=all_, label_filters=labels)
    if removed:
        flags.echo("Deleted Volumes:")
        for n in removed:
            flags.echo(n)
        flags.echo("")
    flags.echo(f"Total reclaimed space: {units.human_size(space, 4)}")  # go-units HumanSize
