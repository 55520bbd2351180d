"""What a container changed in its root filesystem, as Docker has it: ``changes`` (``docker diff``),
``export`` (its whole filesystem as a tar) and ``commit`` (its image plus one layer of its changes).

The container's writable layer is its overlay upper dir (or, on the copy fallback, its plain tree
compared with its image's layers); the paths Docker mounts itself never land there (mount points
live in a stub layer), nor do volume or bind mount contents.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from builder.containers.record import Container
from builder.errors import ContainerError
from builder.state import StateRoot

#: Docker's ``archive.ChangeType``: the ``Kind`` of a ``/containers/{id}/changes`` entry
MODIFIED, ADDED, DELETED = 0, 1, 2
KIND_LETTERS = {MODIFIED: "C", ADDED: "A", DELETED: "D"}

#: what Docker's init layer holds (``daemon/initlayer``), between the image and the container's
#: own layer: a ``docker export`` lists these whatever the image has
_INIT_LAYER: tuple[tuple[str, str], ...] = (
    ("dev/pts", "dir"), ("dev/shm", "dir"), ("proc", "dir"), ("sys", "dir"), (".dockerenv", "file"),
    ("etc/resolv.conf", "file"), ("etc/hosts", "file"), ("etc/hostname", "file"),
    ("dev/console", "file"), ("etc/mtab", "/proc/mounts"),
)


@dataclass(frozen=True)
class _Layers:
    """A container's filesystem: its image's layers (bottom first) and its own writable part,
    an overlay upper dir or a plain tree (None for a container never started)."""

    image: tuple[Path, ...]
    upper: Path | None
    tree: Path | None


def _layers_of(root: StateRoot, c: Container) -> _Layers:
    from builder.containers.record import ContainerStore
    from builder.rootfs import LayerCache, image_layers
    from registry.errors import NotFound

    try:
        image = root.image_store().resolve(c.image_id)
    except NotFound:
        raise ContainerError(f"the image {c.image} ({c.image_id[7:19]}) of container {c.name} is gone") from None
    layers = tuple(image_layers(root.image_store(), image, LayerCache(root)))
    cdir = ContainerStore(root).dir(c.id)
    upper, tree = cdir / "upper", cdir / "rootfs"
    return _Layers(layers, upper if upper.is_dir() else None, tree if tree.is_dir() else None)


# -- docker diff ---------------------------------------------------------------------------------
def changes(root: StateRoot, ref: str) -> list[dict[str, Any]]:
    """``GET /containers/{id}/changes``: ``[{"Path", "Kind"}]`` (0 modified, 1 added, 2 deleted)
    in Docker's order, for a running or stopped container."""
    from builder.containers import lifecycle

    c = lifecycle.get(root, ref)
    fs = _layers_of(root, c)
    if fs.upper is not None:
        return _overlay_changes(fs.image, fs.upper)
    if fs.tree is not None:
        return _tree_changes(fs.image, fs.tree)
    return []


def _in_lowers(lowers: Sequence[Path], rel: str) -> os.stat_result | None:
    """lstat of *rel* in the topmost lower layer that has it (as Docker's overlay2 asks each
    lower dir in turn, topmost first)."""
    for layer in reversed(lowers):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            return os.lstat(os.path.join(layer, rel))
    return None


def _overlay_changes(lowers: Sequence[Path], upper: Path) -> list[dict[str, Any]]:
    """Docker's ``archive.OverlayChanges``: the upper dir walked in lexical order; a whiteout is
    a deletion, an opaque dir that hid a lower one is one too (its entries then added); a path
    a lower layer has is a modification, except a directory whose size, mode and mtime did not
    change; the parent of an addition or deletion is listed (modified) once, before it."""
    from builder.layers import OVERLAY_OPAQUE_XATTR
    from builder.layers.common import get_xattr, is_whiteout_stat

    out: list[dict[str, Any]] = []
    changed_dirs: set[str] = set()

    def walk(rel: str) -> None:
        base = os.path.join(upper, rel)
        for name in sorted(os.listdir(base)):
            child = f"{rel}/{name}" if rel else name
            path = "/" + child
            st = os.lstat(os.path.join(upper, child))
            is_dir = stat.S_ISDIR(st.st_mode)
            kind: int | None
            if is_whiteout_stat(st) or (
                    is_dir and get_xattr(os.path.join(upper, child), OVERLAY_OPAQUE_XATTR, follow=False) == b"y"
                    and _in_lowers(lowers, child) is not None):
                kind = DELETED
            else:
                kind = ADDED
                below = _in_lowers(lowers, child)
                if below is not None:
                    kind = MODIFIED
                    if is_dir and stat.S_ISDIR(below.st_mode) and (
                            st.st_size, st.st_mode, st.st_mtime_ns // 1000) == (
                            below.st_size, below.st_mode, below.st_mtime_ns // 1000):
                        kind = None  # only a parent of changes further down
            if kind is not None:
                if is_dir:
                    changed_dirs.add(path)
                if kind in (ADDED, DELETED):
                    parent = os.path.dirname(path)
                    if parent != "/" and parent not in changed_dirs:
                        out.append({"Path": parent, "Kind": MODIFIED})
                        changed_dirs.add(parent)
                out.append({"Path": path, "Kind": kind})
            if is_dir:
                walk(child)

    walk("")
    return out


def _tree_changes(lowers: Sequence[Path], tree: Path) -> list[dict[str, Any]]:
    """The copy fallback: the plain tree compared with its image's merged layers, in the same
    order and with the same parent rule as the overlay walk."""
    from builder.layers import MergedView

    view = MergedView(lowers)
    out: list[dict[str, Any]] = []
    changed_dirs: set[str] = set()

    def record(path: str, kind: int, is_dir: bool) -> None:
        if is_dir:
            changed_dirs.add(path)
        if kind in (ADDED, DELETED):
            parent = os.path.dirname(path)
            if parent != "/" and parent not in changed_dirs:
                out.append({"Path": parent, "Kind": MODIFIED})
                changed_dirs.add(parent)
        out.append({"Path": path, "Kind": kind})

    def walk(comps: tuple[str, ...], whole_added: bool) -> None:
        base = os.path.join(tree, *comps)
        names = sorted(os.listdir(base))
        gone = [] if whole_added else [n for n in view.listdir(comps) if n not in set(names)]
        for name in sorted([*names, *gone]):
            child = (*comps, name)
            path = "/" + "/".join(child)
            if name in gone and name not in names:
                record(path, DELETED, False)
                continue
            st = os.lstat(os.path.join(base, name))
            is_dir = stat.S_ISDIR(st.st_mode)
            found = None if whole_added else view.lookup(child)
            if found is None:
                record(path, ADDED, is_dir)
            elif not _same_entry(st, found[1], os.path.join(base, name), found[0]):
                record(path, MODIFIED, is_dir)
            if is_dir:
                walk(child, found is None or not stat.S_ISDIR(found[1].st_mode))

    walk((), False)
    return out


def _same_entry(a: os.stat_result, b: os.stat_result, pa: str, pb: Path) -> bool:
    if (a.st_mode, a.st_uid, a.st_gid) != (b.st_mode, b.st_uid, b.st_gid):
        return False
    if stat.S_ISDIR(a.st_mode):
        return (a.st_size, a.st_mtime_ns // 1000) == (b.st_size, b.st_mtime_ns // 1000)
    if stat.S_ISLNK(a.st_mode):
        return os.readlink(pa) == os.readlink(pb)
    if stat.S_ISCHR(a.st_mode) or stat.S_ISBLK(a.st_mode):
        return a.st_rdev == b.st_rdev
    return (a.st_size, a.st_mtime_ns) == (b.st_size, b.st_mtime_ns)


# -- docker export -------------------------------------------------------------------------------
@contextlib.contextmanager
def _init_layer(root: StateRoot) -> Iterator[Path]:
    """Docker's init layer, made in a scratch dir for the time of an export."""
    d = Path(tempfile.mkdtemp(prefix="init-", dir=root.area("tmp")))
    try:
        os.chmod(d, 0o755)
        for rel, kind in _INIT_LAYER:
            p = d / rel
            p.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            if kind == "dir":
                p.mkdir(mode=0o755, exist_ok=True)
            elif kind == "file":
                p.touch(mode=0o755)
            else:
                p.symlink_to(kind)
        for p in (d, *d.rglob("*")):  # the modes Docker's daemon leaves (umask 022)
            if not p.is_symlink():
                os.chmod(p, 0o755)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def export(root: StateRoot, ref: str, out: BinaryIO | IO[bytes]) -> None:
    """``docker export``: the container's whole filesystem (its image's layers, Docker's init
    layer, its own changes) as a tar stream on *out*, running or stopped."""
    from builder.containers import lifecycle
    from builder.layers import write_merged

    c = lifecycle.get(root, ref)
    fs = _layers_of(root, c)
    with _init_layer(root) as init:
        if fs.tree is not None:
            stack = [init, fs.tree]
        else:
            stack = [*fs.image, init, *([fs.upper] if fs.upper is not None else [])]
        write_merged(stack, out)


# -- docker commit -------------------------------------------------------------------------------
def commit(root: StateRoot, ref: str, reference: str | None = None, *, message: str = "",
           author: str = "", changes: Sequence[str] = (), config: Mapping[str, Any] | None = None,
           pause: bool = True, compression: str = "gzip") -> str:
    """``docker commit``: a new image of the container's image plus one layer of its changes
    (none when it changed nothing), its config the container's (or *config* merged over it, as
    ``POST /commit`` takes a body) with the ``--change`` lines applied, and Docker's history
    entry; tagged *reference* if given. The container is paused meanwhile if it runs and
    *pause*. Returns the image ID (``sha256:…``).

    A bad *reference* or ``--change`` line raises before anything is written."""
    from builder.containers import lifecycle
    from builder.images import config_from_changes
    from registry.reference import Reference

    c = lifecycle.get(root, ref)
    ref_value: Reference | None = None
    if reference:
        ref_value = Reference.parse(reference)
        if ref_value.digest is not None:
            raise ContainerError(f"invalid reference format: {reference}: a commit cannot be tagged with a digest")
    container_config = c.config.to_json()
    base = _merge_config(dict(config), container_config) if config else container_config
    new_config = config_from_changes(changes, base=base) if changes else base
    fs = _layers_of(root, c)
    paused_here = False
    if pause and c.state.status == "running" and not c.state.paused:
        lifecycle.pause(root, c.id)
        paused_here = True
    with root.image_store().lease():  # the new layer is referenced by nothing until the image is
        try:
            layer = _commit_layer(root, fs, compression)
        finally:
            if paused_here:
                with contextlib.suppress(ContainerError):
                    lifecycle.unpause(root, c.id)
        image_id = _write_image(root, c, new_config, layer, ref_value, message=message, author=author)
    lifecycle.emit(root, c, "commit", comment=message, imageID=image_id,
                   **({"imageRef": ref_value.familiar} if ref_value is not None else {}))
    return image_id


def _merge_config(user: dict[str, Any], container: Mapping[str, Any]) -> dict[str, Any]:
    """Docker's commit ``merge``: what the body's config leaves empty comes from the container's
    (Env and ExposedPorts joined, Cmd only when neither Cmd nor Entrypoint is given)."""
    out = dict(user)
    for key in ("User", "WorkingDir", "Hostname", "Domainname", "StopSignal", "Healthcheck", "Volumes",
                "OnBuild", "Shell", "Image"):
        if not out.get(key) and container.get(key):
            out[key] = container[key]
    if container.get("ExposedPorts"):
        out["ExposedPorts"] = {**container["ExposedPorts"], **(out.get("ExposedPorts") or {})}
    if container.get("Env"):
        have = {e.partition("=")[0] for e in out.get("Env") or []}
        out["Env"] = [*(out.get("Env") or []), *(e for e in container["Env"] if e.partition("=")[0] not in have)]
    if container.get("Labels"):
        out["Labels"] = {**container["Labels"], **(out.get("Labels") or {})}
    if not out.get("Cmd") and not out.get("Entrypoint"):
        if container.get("Cmd"):
            out["Cmd"] = container["Cmd"]
        if container.get("Entrypoint"):
            out["Entrypoint"] = container["Entrypoint"]
    return {k: v for k, v in out.items() if v is not None}


def _commit_layer(root: StateRoot, fs: _Layers, compression: str) -> tuple[Any, Any] | None:
    from builder.layers import commit_layer, write_diff, write_dir_diff

    write: Callable[[IO[bytes]], bool]
    if fs.upper is not None:
        upper = fs.upper

        def write(sink: IO[bytes]) -> bool:
            return write_diff(upper, sink)
    elif fs.tree is not None:
        tree = fs.tree

        def write(sink: IO[bytes]) -> bool:
            return write_dir_diff(list(fs.image), tree, sink)
    else:
        return None
    return commit_layer(root.image_store(), write, compression)


def _write_image(root: StateRoot, c: Container, config: Mapping[str, Any], layer: tuple[Any, Any] | None,
                 reference: Any, *, message: str, author: str) -> str:
    from registry import mediatypes as mt
    from registry.archive.importer import now_rfc3339
    from registry.model import Descriptor, ImageConfig, Manifest

    store = root.image_store()
    parent = store.resolve(c.image_id)
    data: dict[str, Any] = json.loads(parent.config.raw)
    created = now_rfc3339()
    entry: dict[str, Any] = {"created": created, "created_by": " ".join(c.config.cmd or ())}
    if author:
        entry["author"] = author
    if message:
        entry["comment"] = message
    if layer is None:
        entry["empty_layer"] = True
    data["history"] = [*(data.get("history") or []), entry]
    data["config"] = dict(config)
    data["created"] = created
    data["container"] = c.id
    data.pop("comment", None)
    if author:
        data["author"] = author
    else:
        data.pop("author", None)
    rootfs = dict(data.get("rootfs") or {"type": "layers"})
    layers = list(parent.layers)
    if layer is not None:
        desc, diff_id = layer
        rootfs["diff_ids"] = [*(rootfs.get("diff_ids") or []), str(diff_id)]
        layers.append(desc)
    data["rootfs"] = rootfs
    image_config = ImageConfig.build(data)
    manifest = Manifest.build(Descriptor(mt.OCI_CONFIG, image_config.digest, image_config.size), layers)
    desc = store.put_image(manifest, image_config)
    store.add(desc, reference)
    return str(image_config.digest)
