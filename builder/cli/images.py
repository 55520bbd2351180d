"""The image commands: images, image (ls/rm/prune/inspect/tag/history/import/save/load), import,
tag, rmi, inspect, history, save, load; flag parsing, one library call, Docker-shaped output.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from builder.base import events
from builder.base.units import rfc3339_seconds
from builder.cli import Globals, fail, flags
from builder.cli.format import (
    INSPECT,
    format_rows,
    human_duration,
    human_size,
    inspect_output,
    output_stream,
    table,
    template,
)

# Only the light registry modules load at start-up; archive/compression load when used.
from registry.digest import Digest
from registry.errors import RegistryError
from registry.model import Platform
from registry.reference import Reference
from registry.store import ImageRecord, Store

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, BinaryIO

pass_globals = flags.pass_obj


# -- shared helpers ----------------------------------------------------------------------------
# Docker's timestamps as its CLI shows them (no ``datetime``: the times are read by
# ``builder.base.units.rfc3339_ns``, shown with ``time``)
def utc_text(seconds: float) -> str:
    """Go's ``time.Time.String()`` of a UTC time, as ``docker images --format '{{.CreatedAt}}'``
    shows it."""
    return time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(seconds))


def created_at(text: str | None) -> str:
    """``CreatedAt`` of an RFC 3339 timestamp, "" if none."""
    t = rfc3339_seconds(text)
    return utc_text(t) if t is not None else ""


def since(seconds: float) -> str:
    """``CreatedSince``: how long ago, as Docker's CLI says it."""
    return human_duration(time.time() - seconds) + " ago"


def _store(g: Globals) -> Store:
    store: Store = g.state.image_store()
    return store


def _platform_option(text: str | None) -> Any:
    if not text:
        return None
    from builder.cli.registry import platform_option

    return platform_option(text)


def _short(digest: Digest | None, no_trunc: bool = False) -> str:
    if digest is None:
        return "<none>"
    return str(digest) if no_trunc else digest.short


def _echo_lines(text: str) -> None:
    if text:
        flags.echo(text)


# -- images ------------------------------------------------------------------------------------
_IMAGE_HEADERS = {"Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID", "Digest": "DIGEST",
                  "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE",
                  "Containers": "CONTAINERS", "VirtualSize": "VIRTUAL SIZE"}


def _image_row(rec: ImageRecord, no_trunc: bool) -> tuple[float, dict[str, Any]]:
    """Docker's ``images --format json`` object, and the created time to sort by (one parse
    of each field: listing a large store stays cheap)."""
    ref = rec.reference
    created = rfc3339_seconds(rec.created)
    size = human_size(rec.size)
    return float("-inf") if created is None else created, {
        "Containers": "N/A",
        "CreatedAt": utc_text(created) if created is not None else "",
        "CreatedSince": since(created) if created is not None else "N/A",
        # a repo digest only (pulled or pushed), as Docker: <none> for a built or loaded image
        "Digest": str(rec.descriptor.digest) if rec.repo_digest else "<none>",
        "ID": _short(rec.image_id, no_trunc),
        "Repository": ref.familiar_name if ref else "<none>",
        "SharedSize": "N/A",
        "Size": size,
        "Tag": (ref.tag or "<none>") if ref else "<none>",
        "UniqueSize": "N/A",
        "VirtualSize": size,
    }


@flags.command("images")
@flags.argument("repository", required=False)
@flags.option("-a", "--all", "all_", is_flag=True, help="Show all images (no effect: no intermediates).")
@flags.option("-q", "--quiet", is_flag=True, help="Only show image IDs.")
@flags.option("--digests", is_flag=True, help="Show digests.")
@flags.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@flags.option("-f", "--filter", "filters", multiple=True, help="Filter: dangling=, reference=, label=, before=, since=.")
@flags.option("--format", "fmt", default=None, help="'table', 'table TEMPLATE', 'json' or a Go TEMPLATE.")
@flags.option("--tree", is_flag=True, help="List each image's platforms under it.")
@pass_globals
def images(g: Globals, repository: str | None, all_: bool, quiet: bool, digests: bool,
           no_trunc: bool, filters: tuple[str, ...], fmt: str | None, tree: bool) -> None:
    """List images."""
    from builder.runtime import images as library

    wanted: dict[str, list[str]] = {}
    for f in filters:
        key, sep, value = f.partition("=")
        if not sep:
            fail(f"bad format of filter (expected name=value): {f}")
        wanted.setdefault(key, []).append(value)
    store = _store(g)
    records = library.filter_images(store, store.images(), repository=repository, filters=wanted)
    keyed = [_image_row(r, no_trunc) for r in records]
    keyed.sort(key=lambda kr: (kr[0], kr[1]["Repository"], kr[1]["Tag"]), reverse=True)
    rows = [row for _, row in keyed]
    if tree:
        pairs = sorted(zip(keyed, records, strict=True),
                       key=lambda p: (p[0][0], p[0][1]["Repository"], p[0][1]["Tag"]), reverse=True)
        _tree(store, [rec for _, rec in pairs], no_trunc)
        return
    if quiet:
        ids = list(dict.fromkeys(r["ID"] for r in rows))
        _echo_lines("\n".join(ids))
        return
    if fmt and fmt != "table":
        _echo_lines(format_rows(fmt, rows, _IMAGE_HEADERS, type_name="*formatter.imageContext"))
        return
    cols = ["Repository", "Tag"] + (["Digest"] if digests else []) + ["ID", "CreatedSince", "Size"]
    flags.echo(table([_IMAGE_HEADERS[c] for c in cols], [[r[c] for c in cols] for r in rows]))


def _tree(store: Store, records: list[ImageRecord], no_trunc: bool) -> None:
    """``images --tree`` as Docker 27's: each image, then its platforms (manifest digests)."""
    from builder.runtime import images as library

    out = []
    for rec in records:
        plats = library.platform_images(store, rec)
        name = rec.reference.familiar if rec.reference else "<none>:<none>"
        out.append([name, _short(rec.image_id, no_trunc), human_size(sum(p.disk_usage for p in plats)),
                    human_size(sum(p.content_size for p in plats))])
        for n, p in enumerate(plats):
            branch = "└─ " if n == len(plats) - 1 else "├─ "
            out.append([branch + str(p.platform), _short(p.manifest, no_trunc),
                        human_size(p.disk_usage), human_size(p.content_size)])
    flags.echo(table(["IMAGE", "ID", "DISK USAGE", "CONTENT SIZE"], out))


# -- tag / rmi / prune -------------------------------------------------------------------------
@flags.command("tag")
@flags.argument("source")
@flags.argument("target")
@pass_globals
def tag(g: Globals, source: str, target: str) -> None:
    """Create a tag TARGET that refers to SOURCE."""
    from builder.runtime import images as library

    store = _store(g)
    ref = library.tag(store, source, target)

    events.emit(g.state, "image", "tag", str(store.lookup(str(ref)).image_id),
                {"name": ref.familiar})


@flags.command("rmi")
@flags.argument("names", nargs=-1, required=True)
@flags.option("-f", "--force", is_flag=True, help="Force removal of the image.")
@flags.option("--no-prune", is_flag=True, help="Do not delete unreferenced blobs.")
@flags.option("--platform", default=None, help="Remove only this platform's image (os/arch[/variant]).")
@pass_globals
def rmi(g: Globals, names: tuple[str, ...], force: bool, no_prune: bool, platform: str | None) -> None:
    """Remove one or more images."""
    from builder.runtime import images as library

    store = _store(g)
    errors = 0
    for name in names:
        try:
            for line in library.remove(g.state, name, force=force, platform=_platform_option(platform)):
                flags.echo(line)
        except RegistryError as e:
            flags.echo(f"Error: {e}", err=True)
            errors += 1
    if not no_prune:
        store.gc(wait=False)  # never block behind a build or pull holding a lease
    if errors:
        sys.exit(1)


@flags.command("prune")
@flags.option("-a", "--all", "all_", is_flag=True, help="Remove all unused images, not just dangling ones.")
@flags.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@pass_globals
def prune(g: Globals, all_: bool, force: bool) -> None:
    """Remove unused images and unreferenced blobs."""
    if not force:
        what = ("all images without at least one container associated to them" if all_
                else "all dangling images")
        flags.confirm(f"WARNING! This will remove {what}.\nAre you sure you want to continue?",
                      abort=True)
    from builder.runtime import images as library

    report = library.prune(g.state, all=all_)
    if report.deleted:
        flags.echo("Deleted Images:")
        for line in report.deleted:
            flags.echo(line)
        flags.echo("")
    flags.echo(f"Total reclaimed space: {human_size(report.freed, 4)}")


# -- inspect / history ---------------------------------------------------------------------------
@flags.command("inspect")
@flags.argument("names", nargs=-1, required=True)
@flags.option("-f", "--format", "fmt", default=None, help="Format with a Go template.")
@flags.option("--type", "kind", type=flags.Choice(["image", "container"]), default=None)
@flags.option("--platform", default=None, help="Inspect this platform's image of an index.")
@pass_globals
def inspect(g: Globals, names: tuple[str, ...], fmt: str | None, kind: str | None,
            platform: str | None) -> None:
    """Return low-level information on images (or, failing that, containers)."""
    from builder.runtime import images as library
    if fmt and fmt != "json":
        template(fmt, messages=INSPECT)  # a bad template fails before any lookup
    results, missing = library.inspect_any(g.state, names, kind=kind, platform=_platform_option(platform))
    what = "image" if kind == "image" else "object"
    inspect_output(fmt, results, [f"Error: No such {what}: {name}" for name in missing])


_HISTORY_HEADERS = {"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT",
                    "CreatedBy": "CREATED BY", "Size": "SIZE", "Comment": "COMMENT"}


def _ellipsis(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@flags.command("history")
@flags.argument("name")
@flags.option("-H", "--human", type=flags.BOOL, default=True, show_default=True,
              help="Print sizes and dates in human readable format.")
@flags.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@flags.option("-q", "--quiet", is_flag=True, help="Only show image IDs.")
@flags.option("--format", "fmt", default=None, help="'table', 'json' or a Go TEMPLATE.")
@pass_globals
def history(g: Globals, name: str, human: bool, no_trunc: bool, quiet: bool, fmt: str | None) -> None:
    """Show the history of an image."""
    from builder.runtime import images as library

    rows: list[dict[str, Any]] = []
    for h in library.history(_store(g), name):
        created = h["Created"]
        image_id = h["Id"]
        if image_id != "<missing>":
            image_id = image_id if no_trunc else Digest.parse(image_id).short
        by = h["CreatedBy"]
        rows.append({
            "Comment": h["Comment"],
            "CreatedAt": (utc_text(created) if human
                          else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))) if created else "",
            "CreatedBy": by if no_trunc else _ellipsis(by, 45),
            "CreatedSince": (since(created) if human
                             else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))) if created else "N/A",
            "ID": image_id,
            "Size": human_size(h["Size"]) if human else str(h["Size"]),
        })
    if quiet:
        _echo_lines("\n".join(r["ID"] for r in rows))
    elif fmt and fmt != "table":
        _echo_lines(format_rows(fmt, rows, _HISTORY_HEADERS, type_name="*image.historyContext"))
    else:
        cols = ["ID", "CreatedSince", "CreatedBy", "Size", "Comment"]
        flags.echo(table([_HISTORY_HEADERS[c] for c in cols], [[r[c] for c in cols] for r in rows]))


# -- import / save / load ----------------------------------------------------------------------
@flags.command("import")
@flags.argument("source")
@flags.argument("repository", required=False)
@flags.option("-c", "--change", "changes", multiple=True, help="Apply a Dockerfile instruction to the image.")
@flags.option("-m", "--message", default=None, help="Set the commit message for the imported image.")
@flags.option("--platform", default=None, help="Set the platform (os/arch[/variant]).")
@pass_globals
def import_(g: Globals, source: str, repository: str | None, changes: tuple[str, ...],
            message: str | None, platform: str | None) -> None:
    """Import the contents of a tarball (or a directory) to create a filesystem image."""
    from builder.imagebuild.graph import config_from_changes
    from registry import archive
    ref = Reference.parse(repository) if repository else None
    config = config_from_changes(changes)  # a bad --change fails before any input is read
    try:
        plat = Platform.parse(platform) if platform else None
    except ValueError as e:
        fail(str(e))
        return
    src: BinaryIO | Path
    if source == "-":
        src = sys.stdin.buffer
    else:
        src = Path(source)
        if not src.exists():
            fail(f"open {source}: no such file or directory")
    result = archive.import_rootfs(_store(g), src, reference=ref, config=config,
                                   message=message, platform=plat, source_name="-")
    image_id = str(result.config.digest)
    events.emit(g.state, "image", "import", image_id,
                {"name": ref.familiar if ref else image_id})
    flags.echo(image_id)


@flags.command("save")
@flags.argument("names", nargs=-1, required=True)
@flags.option("-o", "--output", default=None, help="Write to a file, instead of STDOUT.")
@flags.option("--format", "fmt", type=flags.Choice(["docker-archive", "oci-archive"]),
              default="docker-archive", show_default=True)
@pass_globals
def save(g: Globals, names: tuple[str, ...], output: str | None, fmt: str) -> None:
    """Save one or more images to a tar archive (streamed to STDOUT by default)."""
    from registry import archive

    store = _store(g)
    for n in names:
        store.lookup(n)  # fail before creating the output
    with output_stream(output) as out:
        archive.save(store, list(names), out, format=fmt)
    for n in names:
        events.emit(g.state, "image", "save", n, {"name": n})


@flags.command("load")
@flags.option("-i", "--input", "input_", default=None, help="Read from tar archive file, instead of STDIN.")
@flags.option("-q", "--quiet", is_flag=True, help="Suppress the load output.")
@pass_globals
def load(g: Globals, input_: str | None, quiet: bool) -> None:
    """Load images from a docker-archive or oci-archive tarball (or STDIN)."""
    from registry import archive

    store = _store(g)
    if input_ is None or input_ == "-":
        if sys.stdin.isatty():
            fail("requested load from stdin, but stdin is empty")
        loaded = archive.load(store, sys.stdin.buffer, source="stdin")
    else:
        try:
            f = open(input_, "rb")
        except OSError as e:
            fail(f"open {input_}: {e.strerror.lower() if e.strerror else e}")
            return
        with f:
            loaded = archive.load(store, f, source=input_)
    for item in loaded:
        name = item.reference.familiar if item.reference is not None else str(item.image_id)
        events.emit(g.state, "image", "load", name, {"name": name})
    if not quiet:
        for item in loaded:
            if item.reference is not None:
                flags.echo(f"Loaded image: {item.reference.familiar}")
            else:
                flags.echo(f"Loaded image ID: {item.image_id}")


# -- the `image` group -------------------------------------------------------------------------
@flags.group("image")
def image() -> None:
    """Manage images."""


for _name, _cmd in (("ls", images), ("list", images), ("rm", rmi), ("remove", rmi),
                    ("prune", prune), ("inspect", inspect), ("tag", tag), ("history", history),
                    ("import", import_), ("save", save), ("load", load)):
    image.add_command(_cmd, _name)
