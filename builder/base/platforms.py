"""Multi-platform images: ``--platform a,b`` parsed, one build per platform, their images
gathered in an index stored under the build's tags (as BuildKit exports it); ``run``'s and
``rmi``'s ``--platform``.

The builds run one after the other: a ``FROM --platform=$BUILDPLATFORM`` stage is the same
op for every target, so the first build runs it and the others take it from the cache (each
build's own stages still run in parallel, ``--jobs``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

from builder.base import events
from builder.base.binfmt import ensure
from builder.base.errors import BuildError, ContainerError
from registry import mediatypes as mt
from registry.archive import DOCKER_ARCHIVE, OCI_ARCHIVE, save_image
from registry.errors import NotFound, StoreError
from registry.model import Descriptor, Index, Manifest, Platform
from registry.reference import Reference
from registry.store import Image, Store
from registry.transfer import push
from registry.values import replace


class _Outcome(Protocol):
    @property
    def image(self) -> Image: ...
    @property
    def warnings(self) -> tuple[str, ...]: ...
    @property
    def executed(self) -> tuple[str, ...]: ...
    @property
    def cached(self) -> tuple[str, ...]: ...
    @property
    def per_platform_stages(self) -> frozenset[str]: ...


@dataclasses.dataclass(frozen=True)
class MultiOutcome:
    image: Image  # the host platform's, else the first
    index: Descriptor
    tags: tuple[str, ...]
    warnings: tuple[str, ...]
    executed: tuple[str, ...]
    cached: tuple[str, ...]


def parse_platforms(text: str | None) -> list[Platform]:
    """``--platform linux/amd64,linux/arm64`` (duplicates once, in order); [] for none."""
    out: list[Platform] = []
    for part in (text or "").split(","):
        if not part.strip():
            continue
        try:
            p = Platform.parse(part.strip().lower())
        except ValueError as e:
            raise BuildError.invalid(f"--platform {text}: {e}") from None
        if p not in out:
            out.append(p)
    return out


def store_index(store: Store, images: list[Image], tags: list[Reference], *,
                record: bool = True) -> Descriptor:
    """An index over *images* (each described with its config's platform), stored and recorded
    under *tags* (untagged when there are none; not at all without *record*). Docker's shapes,
    a manifest list of schema 2 manifests, as BuildKit's image exporter writes by default (the
    docker CLI's ``manifest inspect`` reads no OCI index); an OCI index when a layer has no
    Docker type (zstd)."""
    docker = _docker_manifests(store, images)
    if docker is not None:
        index = Index.build(docker, media_type=mt.DOCKER_MANIFEST_LIST)
    else:
        index = Index.build([img.descriptor.with_platform(img.config.platform) for img in images],
                            media_type=mt.OCI_INDEX)
    desc = store.put_manifest(index)
    for ref in tags:
        store.add(desc, ref)
    if not tags and record:
        store.add(desc, None)
    return desc


def _docker_manifests(store: Store, images: list[Image]) -> list[Descriptor] | None:
    """Each image's manifest with Docker's media types (same config and layer blobs), stored;
    None when a layer's compression has no Docker media type."""
    out = []
    for img in images:
        layers = []
        for d in img.layers:
            kind = mt.layer_compression(d.media_type)
            if kind not in ("none", "gzip"):
                return None
            layers.append(Descriptor(mt.layer_media_type(kind, docker=True), d.digest, d.size))
        config = img.manifest.config
        manifest = Manifest.build(Descriptor(mt.DOCKER_CONFIG, config.digest, config.size), layers,
                                  media_type=mt.DOCKER_MANIFEST)
        out.append(store.put_manifest(manifest).with_platform(img.config.platform))
    return out


class _Steps:
    """A platform's build progress as BuildKit shows several platforms: step names prefixed
    with the platform (``[linux/arm64 stage-1 2/3] RUN …``), step numbers continuing the
    previous platforms' (one ``#n`` per step of the whole build)."""

    def __init__(self) -> None:
        self.top = 0

    def wrap(self, progress: Callable[[Any], None] | None, platform: Platform
             ) -> Callable[[Any], None] | None:
        if progress is None:
            return None
        base = self.top

        def emit(e: Any) -> None:
            changes: dict[str, Any] = {}
            if e.id:
                changes["id"] = e.id + base
                self.top = max(self.top, changes["id"])
            if e.name.startswith("["):
                changes["name"] = f"[{platform} {e.name[1:]}"
            progress(replace(e, **changes) if changes else e)

        return emit


def build_platforms(state: Any, req: Any, platforms: list[Platform], tags: list[Reference],
                    build_one: Callable[[Any, Callable[..., Any]], _Outcome]) -> MultiOutcome:
    """*req* (a ``pipeline.BuildRequest``) built for each of *platforms* by *build_one*, the
    images unrecorded, then their index under *tags* (*req*'s, parsed). *build_one(req, wrap)* builds
    with ``wrap(progress)`` as its progress callback (the platform's step names)."""
    steps = _Steps()

    def one(r: Any, p: Platform) -> _Outcome:
        return build_one(replace(r, platform=str(p), tags=(), outputs=(), record=False),
                         lambda progress: steps.wrap(progress, p))

    if any(o.type not in ("image", "oci", "docker") for o in req.outputs):
        raise BuildError.invalid("--output with several platforms: type=oci, docker or image "
                                 "(a rootfs is one platform's)")
    first = one(req, platforms[0])
    rest = req
    if req.no_cache:  # what the first build ran afresh for every platform is not run again
        rest = replace(req, no_cache=False, no_cache_filter=frozenset(
            req.no_cache_filter | first.per_platform_stages))
    done = [first, *(one(rest, p) for p in platforms[1:])]
    images = [d.image for d in done]
    store = state.image_store()
    exports = [o for o in req.outputs if o.type != "image"]
    desc = store_index(store, images, tags, record=bool(tags) or not exports)
    for out in exports:  # the index with every platform, as ``save`` writes it
        with open(out.dest, "wb") as f:
            save_image(store, desc, tags, f, format=DOCKER_ARCHIVE if out.type == "docker" else OCI_ARCHIVE)
    host = Platform.host()
    main = next((i for i in images if i.config.platform.matches(host)), images[0])
    for ref in tags:
        events.emit(state, "image", "tag", str(main.id), {"name": ref.familiar})
    return MultiOutcome(
        main, desc, tuple(r.familiar for r in tags),
        tuple(w for d in done for w in d.warnings if w),
        tuple(x for d in done for x in d.executed), tuple(x for d in done for x in d.cached))


def push_tags(state: Any, tags: tuple[str, ...]) -> None:
    """``build --push``: each tag to its registry (an index with every platform)."""
    if not tags:
        raise BuildError.invalid("--push needs a tag (-t NAME)")
    for t in tags:
        push(state.image_store(), t)


def wanted_platform(text: str | None) -> Platform | None:
    """``run --platform``'s value, or None."""
    if not text:
        return None
    try:
        return Platform.parse(text.lower())
    except ValueError as e:
        raise ContainerError.invalid(f"--platform: {e}") from None


def foreign_ready(image: Image, want: Platform | None, ref: str, pull: str | None = None) -> Image:
    """*image* when it is of platform *want* (any, for None), its emulator registered when it is
    a foreign one. A local image of another platform counts as missing (``pull`` missing: a
    pull of *want* follows, as ``docker run --platform`` does)."""
    actual = image.config.platform
    if want is not None and actual.architecture and not actual.matches(want):
        if pull == "missing":
            raise NotFound(f"No such image: {ref} for platform {want}")
        raise ContainerError.not_found(
            f"image with reference {ref} was found but does not match the specified platform: "
            f"wanted {want}, actual: {actual}")
    if actual.architecture:
        ensure(actual)
    return image



def remove_platform(store: Store, name: str, platform: Platform, *,
                    in_use: Callable[[str], str | None] = lambda image_id: None) -> list[str] | None:
    """``rmi --platform``: the index *name* names without *platform*'s image, stored under its
    tags (the ``Deleted:`` lines of the manifests that left); None when nothing would be left
    (the caller removes the whole image). *in_use(image_id)*: the short ID of a container
    using that image, which refuses the removal."""
    record = store.lookup(name)
    desc = record.descriptor
    if not mt.is_index(desc.media_type):
        if store.image(desc).config.platform.matches(platform):
            return None
        raise NotFound(f"No such image: {name} (platform {platform})")
    index = Index.parse(store.read_blob(desc.digest), desc.media_type)
    keep = [d for d in index.manifests if not (d.platform and d.platform.matches(platform))]
    gone = [d for d in index.manifests if d not in keep]
    if not gone:
        raise NotFound(f"No such image: {name} (platform {platform})")
    if not keep:
        return None
    for d in gone:
        config = str(store.image(d).id)
        cid = in_use(config)
        if cid:
            raise StoreError.conflict(
                f"conflict: unable to delete {name} (platform {platform}) - image is being used "
                f"by container {cid}")
    new = store.put_manifest(Index.build(keep, media_type=index.media_type))
    for r in store.images():
        if r.descriptor.digest == desc.digest and r.reference is not None:
            store.add(new, r.reference, distributed=False)
    return [f"Deleted: {d.digest}" for d in gone]


__all__ = ["MultiOutcome", "build_platforms", "foreign_ready", "parse_platforms", "push_tags", "remove_platform", "store_index",
           "wanted_platform"]
