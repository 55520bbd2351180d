"""``pybuild system check [--repair]``: ``fsck`` for a state root. The store (``registry.fsck``:
blob digests, images' references, tags, dead transfers' leases and ingest files), the build
cache (records readable, where their key and parent say, their layers present; blob links and
variants something names), the run dirs of killed builds, the layers killed processes were
unpacking and unpacked layers no image or record names (``reap_unused_layers``: ``rmi`` and the
prunes remove those). ``repair`` removes what nothing
references and reports what it could not mend.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from builder.base.state import StateRoot
from builder.core.rootfs import (
    LayerCache,
    dead_unpacks,
    dead_workspaces,
    reap_dead_unpacks,
    reap_workspaces,
)
from builder.core.sandbox.handle import reap_stale, teardown_run_dir
from builder.imagebuild.cache import BuildCache, tree_size
from registry import mediatypes as mt
from registry.digest import Digest
from registry.errors import BlobUnknown, DigestError
from registry.fsck import Problem, check_store, repair_store
from registry.model import Index


@dataclass(frozen=True)
class CheckReport:
    """What ``check`` found still wrong (``problems``) and what ``repair`` removed."""

    problems: tuple[Problem, ...]
    repaired: tuple[Problem, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


def _cache_problems(state: StateRoot, cache: BuildCache) -> list[Problem]:
    out: list[Problem] = []
    layers = LayerCache(state) if state.layers.is_dir() else None
    named: set[Digest] = set()
    for path, rec in cache.records():
        where = str(path)
        if rec is None:
            out.append(Problem("cache", where, "unreadable record (or of an older schema)"))
            continue
        if cache.record_path(rec) != path:
            out.append(Problem("cache", where, "record filed under another key or parent"))
            continue
        if rec.layer is not None:
            named.add(rec.layer.digest)
            if not cache.store.has_blob(rec.layer.digest) and not cache.has_link(rec.layer.digest):
                out.append(Problem("cache", where, f"its layer {rec.layer.digest} is gone"))
        if rec.snapshot and rec.diff_id is not None and (layers is None or not layers.has(str(rec.diff_id))):
            out.append(Problem("cache", where, f"its snapshot {rec.diff_id} is gone"))
    for path, desc in cache.variants():
        if desc is None:
            out.append(Problem("cache", str(path), "unreadable variant record"))
        elif not cache.store.has_blob(desc.digest) and not cache.has_link(desc.digest):
            out.append(Problem("cache", str(path), f"its blob {desc.digest} is gone"))
        else:
            named.add(desc.digest)
    # A link no record names (its record was replaced by a concurrent build's) costs no space
    # while an image holds the same blob; once none does, it is what nothing references.
    in_images = cache.store.referenced()
    for link in cache.blob_links():
        try:
            digest: Digest | None = Digest(link.parent.name, link.name)
        except DigestError:
            digest = None
        if digest not in named and digest not in in_images:
            out.append(Problem("cache", str(link), "blob link no record, variant or image names"))
    return out


def _run_problems(state: StateRoot) -> list[Problem]:
    return [*(Problem("run", str(d), "workspace of a build that is gone (killed)")
              for d in dead_workspaces(state.run)),
            *(Problem("layers", str(d), "half-unpacked layer of a process that is gone (killed)")
              for d in dead_unpacks(state.layers))]


def reap_killed_builds(state: StateRoot) -> list[Path]:
    """Remove what builds that are gone (killed) left under ``run/``: their workspaces (the
    RUN layer) and the sandboxes of their RUN steps, started or half-started (their processes
    died with the build), the snapshots they made that no record names (when no build runs:
    ``reap_unused_layers``); and the layers a killed process was unpacking. Returns the
    workspaces removed."""
    reap_dead_unpacks(state.layers)  # a layer a killed ``run`` or build was unpacking
    dead = dead_workspaces(state.run)
    if not dead:
        return []
    for d in state.run.iterdir():
        with contextlib.suppress(OSError):
            target = Path(os.readlink(d / "u"))
            if any(target.is_relative_to(w) for w in dead) and (d / "state.json").exists():
                with contextlib.suppress(Exception):
                    teardown_run_dir(d)
    gone = reap_workspaces(state.run)
    reap_stale(state)
    reap_unused_layers(state)  # a snapshot the killed build made and recorded no record of
    return gone


def _needed_layers(state: StateRoot, cache: BuildCache) -> set[str] | None:
    """Hex diff_ids of every image's layers (each platform's) and every cache record's; None
    if an image cannot be read (then nothing is known to be unneeded)."""
    store = state.image_store()
    needed = {rec.diff_id.encoded for _, rec in cache.records() if rec is not None and rec.diff_id}
    try:
        for record in store.images():
            desc = record.descriptor
            children = (Index.parse(store.read_blob(desc.digest), desc.media_type).manifests
                        if mt.is_index(desc.media_type) else [desc])
            for d in children:
                with contextlib.suppress(BlobUnknown):  # a platform not pulled: no layers here
                    needed |= {x.encoded for x in store.image(d).diff_ids}
    except Exception:  # noqa: BLE001 - a damaged image is system check's to report
        return None
    return needed


def unused_layers(state: StateRoot, cache: BuildCache) -> list[Path]:
    """Unpacked layers (``layers/<diff_id hex>``) that no image and no cache record names (an
    image removed, a record pruned). Listed before the images are read: a layer unpacked
    meanwhile is not among them."""
    if not state.layers.is_dir():
        return []
    dirs = [p for p in state.layers.iterdir() if len(p.name) == 64 and p.is_dir()]
    needed = _needed_layers(state, cache) if dirs else set()
    return [] if needed is None else [p for p in dirs if p.name not in needed]


def reap_unused_layers(state: StateRoot) -> int:
    """Remove ``unused_layers`` (for ``rmi`` and the prunes): the bytes freed. Not while a build
    runs (it may use a layer no record names yet): the next removal or prune takes them."""
    if not state.layers.is_dir():
        return 0
    cache = BuildCache(state.cache, state.image_store(), layers=state.layers)
    freed = 0
    with contextlib.suppress(BlockingIOError), cache.exclusive(wait=False):
        for d in unused_layers(state, cache):
            freed += tree_size(d)
            shutil.rmtree(d, ignore_errors=True)
    return freed


def _problems(state: StateRoot) -> list[Problem]:
    cache = BuildCache(state.cache, state.image_store(), layers=state.layers)
    return [*check_store(state.image_store(), keep=cache.kept_blobs()),
            *_cache_problems(state, cache), *_run_problems(state),
            *(Problem("layers", str(d), "unpacked layer no image or cache record names")
              for d in unused_layers(state, cache))]


def _repair(state: StateRoot, found: list[Problem]) -> None:
    reap_killed_builds(state)
    reap_stale(state)  # sandboxes whose processes are gone
    cache = BuildCache(state.cache, state.image_store(), layers=state.layers)
    with cache.exclusive():
        for p in found:
            if p.area == "cache" and p.repairable:
                with contextlib.suppress(FileNotFoundError):
                    Path(p.where).unlink()
        repair_store(state.image_store(), keep=cache.kept_blobs())
        for d in unused_layers(state, cache):
            shutil.rmtree(d, ignore_errors=True)


def check(state: StateRoot, *, repair: bool = False) -> CheckReport:
    """Check *state*'s root; with *repair*, remove what nothing references, then check again."""
    found = _problems(state)
    if not repair or not any(p.repairable for p in found):
        return CheckReport(tuple(found))
    _repair(state, found)
    left = _problems(state)
    return CheckReport(tuple(left), tuple(p for p in found if p not in left))


__all__ = ["CheckReport", "Problem", "check", "reap_killed_builds", "reap_unused_layers", "unused_layers"]
