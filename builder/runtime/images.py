"""Image rules that need the containers beside the store: ``rmi`` and ``image prune`` refuse or
keep an image a container uses (Docker's in-use rules), and ``image inspect``'s JSON shape.

``registry.store`` knows images only; this module is where containers are asked.
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Mapping, Sequence

from builder.base import events
from builder.base.errors import BuildError
from builder.base.filters import labels_match
from builder.base.state import StateRoot
from builder.base.units import rfc3339_seconds
from builder.base.values import frozen
from registry import mediatypes as mt
from registry.digest import Digest
from registry.errors import InvalidReference, NotFound, RegistryError, StoreError
from registry.model import Index, Platform
from registry.reference import Reference
from registry.store import ImageRecord, Store

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from builder.runtime.containers.record import Container


def containers_by_image(root: StateRoot) -> dict[str, list[Container]]:
    """Image ID (``sha256:…``) -> the containers made from it, in any state. States are read as
    recorded: an image rule never repairs (nor waits on the locks of) a container record."""
    from builder.runtime.containers.record import ContainerStore  # not for ``images``/``inspect``

    out: dict[str, list[Container]] = {}
    for c in ContainerStore(root).all():
        if c.image_id:
            out.setdefault(c.image_id, []).append(c)
    return out


def _conflict(message: str) -> StoreError:
    return StoreError.conflict(f"conflict: {message}")


def remove(root: StateRoot, name: str, *, force: bool = False,
           platform: Platform | None = None) -> list[str]:
    """``docker rmi NAME``: the ``Untagged: …``/``Deleted: …`` lines of what was done (each
    also an event in ``builder.base.events``); the in-use rules are ``_remove``'s. With *platform*,
    only that platform's image leaves the index NAME names (the whole image, if it was its last)."""
    lines = None
    if platform is not None:
        from builder.base.platforms import remove_platform

        users = containers_by_image(root)

        def in_use(image_id: str) -> str | None:
            return users[image_id][0].short_id if users.get(image_id) and not force else None

        lines = remove_platform(root.image_store(), name, platform, in_use=in_use)
    if lines is None:
        lines = _remove(root, name, force=force)
    if any(line.startswith("Deleted: ") for line in lines):
        from builder.imagebuild.fsck import reap_unused_layers

        reap_unused_layers(root)  # its unpacked layers, as Docker's graph driver drops them
    events.image_changes(root, lines)
    return lines


def _remove(root: StateRoot, name: str, *, force: bool = False) -> list[str]:
    """``docker rmi NAME``: the ``Untagged: …``/``Deleted: …`` lines of what was done.

    An image a container uses is refused (``conflict: …``), unless *force* and no container
    runs it by ID; forced, it is only untagged and stays as ``<none>`` (Docker keeps an image a
    container uses). Another tag of the same image keeps it: the name is just untagged."""
    store: Store = root.image_store()
    record, named_by_id = store.find(name)
    image_id = record.image_id
    users = containers_by_image(root).get(str(image_id), []) if image_id else []
    others = [r for r in store.images() if r.image_id == image_id and r.reference is not None
              and r.reference != record.reference]
    if not users or others:
        return store.remove(name, force=force)
    by_id = record.reference is None or named_by_id
    running = [c for c in users if c.state.running]
    cid = (running or users)[0].short_id
    short = image_id.short if image_id else ""
    if by_id and running:
        raise _conflict(f"unable to delete {short} (cannot be forced) - image is being used by "
                        f"running container {cid}")
    if not force:
        if by_id:
            raise _conflict(f"unable to delete {short} (must be forced) - image is being used by "
                            f"stopped container {cid}")
        raise _conflict(f'unable to remove repository reference "{name}" (must force) - '
                        f"container {cid} is using its referenced image {short}")
    lines = []
    for r in [record, *others] if by_id else [record]:
        if r.reference is not None:
            store.untag(r.reference)
            lines.append(f"Untagged: {r.reference.familiar}")
    store.add(record.descriptor.with_annotations(**{"org.opencontainers.image.ref.name": None}))
    return lines


def tag(store: Store, source: str, target: str) -> Reference:
    """``docker tag SOURCE TARGET``: the reference now naming SOURCE's image. A TARGET with a
    digest is refused (``InvalidReference``), as Docker does."""
    ref = Reference.parse(target)
    if ref.digest is not None:
        raise InvalidReference(f"refusing to create a tag with a digest reference: {target}")
    store.tag(source, ref)
    return ref


@frozen  # (not a dataclass: images/inspect load this)
class PruneReport:
    """What ``image prune`` did: the ``untagged: …``/``deleted: …`` lines and bytes freed."""

    deleted: tuple[str, ...]
    freed: int


def prune(root: StateRoot, *, all: bool = False) -> PruneReport:
    """``docker image prune [-a]``: dangling images (every image with *all*) no container uses,
    then the blobs nothing references any more."""
    store: Store = root.image_store()
    used = set(containers_by_image(root))
    deleted: list[str] = []
    for rec in store.images():
        if rec.image_id is None or str(rec.image_id) in used:
            continue
        if rec.reference is None or all:
            with contextlib.suppress(NotFound):
                target = str(rec.image_id) if rec.reference is None else str(rec.reference)
                deleted += store.remove(target, force=True)
    _, freed = store.gc()
    from builder.imagebuild.fsck import reap_unused_layers

    freed += reap_unused_layers(root)  # the removed images' unpacked layers
    lines = [line.replace("Untagged: ", "untagged: ").replace("Deleted: ", "deleted: ")
             for line in deleted]
    events.image_changes(root, lines)
    return PruneReport(tuple(lines), freed)


# -- inspect -----------------------------------------------------------------------------------
_CONFIG_ORDER = ("Hostname", "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr",
                 "ExposedPorts", "Tty", "OpenStdin", "StdinOnce", "Env", "Cmd", "Healthcheck",
                 "ArgsEscaped", "Image", "Volumes", "WorkingDir", "Entrypoint", "OnBuild", "Labels",
                 "StopSignal", "StopTimeout", "Shell")
_CONFIG_DEFAULTS: dict[str, Any] = {"Hostname": "", "Domainname": "", "User": "",
                                    "AttachStdin": False, "AttachStdout": False,
                                    "AttachStderr": False, "Tty": False, "OpenStdin": False,
                                    "StdinOnce": False, "Env": None, "Cmd": None, "Image": "",
                                    "Volumes": None, "WorkingDir": "", "Entrypoint": None,
                                    "OnBuild": None, "Labels": None}


def _docker_config(config: dict[str, Any]) -> dict[str, Any]:
    merged = {**_CONFIG_DEFAULTS, **config}
    out = {k: merged[k] for k in _CONFIG_ORDER if k in merged}
    out.update({k: v for k, v in merged.items() if k not in out})
    return out


#: an image's ``ContainerConfig`` when it has none (not made by a classic builder), as dockerd
#: 20.10 shows it
ZERO_CONTAINER_CONFIG: dict[str, Any] = {
    "Hostname": "", "Domainname": "", "User": "", "AttachStdin": False, "AttachStdout": False,
    "AttachStderr": False, "Tty": False, "OpenStdin": False, "StdinOnce": False, "Env": None,
    "Cmd": None, "Image": "", "Volumes": None, "WorkingDir": "", "Entrypoint": None,
    "OnBuild": None, "Labels": None,
}


def inspect_record(store: Store, record: ImageRecord, *, platform: Platform | None = None) -> dict[str, Any]:
    """Docker's ``image inspect`` object for one store entry (*platform*'s image of an index;
    the host's by default)."""
    image = store.image(record.descriptor, reference=record.reference, platform=platform)
    cfg = image.config.data
    same = [r for r in store.images() if r.image_id == image.id and r.reference is not None]
    tags = [r.reference.familiar for r in same if r.reference and r.reference.tag]
    digests = sorted({f"{r.reference.familiar_name}@{r.descriptor.digest}" for r in same
                      if r.reference and r.repo_digest})
    out: dict[str, Any] = {
        "Id": str(image.id),
        "RepoTags": tags,
        "RepoDigests": digests,
        "Parent": "",
        "Comment": cfg.get("comment", ""),
        "Created": cfg.get("created", ""),
        # what a classic builder's image carries (compose 1.29 reads ContainerConfig to recreate)
        "Container": str(cfg.get("container") or ""),
        "ContainerConfig": {**ZERO_CONTAINER_CONFIG, **(cfg.get("container_config") or {})},
        "DockerVersion": cfg.get("docker_version", ""),
        "Author": cfg.get("author", ""),
        "Config": _docker_config(image.config.config),
        "Architecture": cfg.get("architecture", ""),
    }
    if cfg.get("variant"):
        out["Variant"] = cfg["variant"]
    size = sum(store.content_size(layer) for layer in image.layers)
    out.update({
        "Os": cfg.get("os", ""),
        "Size": size,
        "VirtualSize": size,
        "GraphDriver": {"Data": None, "Name": "overlay2"},
        "RootFS": {"Type": "layers", "Layers": [str(d) for d in image.diff_ids]},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
        "Descriptor": record.descriptor.with_annotations(
            **{k: None for k, _ in record.descriptor.annotations}).to_dict(),
    })
    return out


def inspect(store: Store, name: str, *, platform: Platform | None = None) -> dict[str, Any]:
    """``image inspect NAME`` (a reference, ``name@digest`` or an ID prefix); ``NotFound``."""
    return inspect_record(store, store.lookup(name), platform=platform)


def inspect_any(root: StateRoot, names: Sequence[str], *, kind: str | None = None,
                platform: Platform | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Top-level ``docker inspect``: each name as an image, else (unless *kind* says which) as a
    container. Returns (the objects found, the names nothing matched)."""
    store: Store = root.image_store()
    found: list[dict[str, Any]] = []
    missing: list[str] = []
    for name in names:
        obj: dict[str, Any] | None = None
        if kind in (None, "image"):
            with contextlib.suppress(NotFound):
                obj = inspect(store, name, platform=platform)
        if obj is None and kind in (None, "container"):
            from builder.runtime.containers import (
                inspect as container_inspect,  # images need it not
            )

            obj = container_inspect.try_inspect(root, name)
        if obj is None:
            missing.append(name)
        else:
            found.append(obj)
    return found, missing


# -- images --filter ---------------------------------------------------------------------------
IMAGE_FILTERS = ("dangling", "reference", "label", "before", "since")


def filter_images(store: Store, records: Sequence[ImageRecord], *, repository: str | None = None,
                  filters: Mapping[str, Sequence[str]] | None = None) -> list[ImageRecord]:
    """``docker images [REPOSITORY[:TAG]] --filter``: ``dangling=true|false``,
    ``reference=PATTERN`` (a glob on ``name:tag``), ``label=KEY[=VALUE]`` (every one must hold),
    ``before=IMAGE``/``since=IMAGE`` (created before/after it); values of the other keys OR.
    An unknown key or value is a ``BuildError``; a missing before/since image ``NotFound``."""
    filters = filters or {}
    for key, values in filters.items():
        if key not in IMAGE_FILTERS:
            raise BuildError.invalid(f"Invalid filter '{key}'")
        for v in values if key == "dangling" else ():
            if v.lower() not in ("true", "false", "1", "0"):
                raise BuildError.invalid(f"Invalid filter 'dangling={v}'")
    pivots = {key: [_created(store.lookup(v)) for v in filters.get(key, ())] for key in ("before", "since")}
    out = []
    for rec in records:
        if repository and not _in_repository(rec, repository):
            continue
        ok = True
        for key, values in filters.items():
            if not values:
                continue
            if key == "dangling":
                ok = any((rec.reference is None) == (v.lower() in ("true", "1")) for v in values)
            elif key == "reference":
                ok = any(_reference_glob(rec, v) for v in values)
            elif key == "label":
                labels = _labels(store, rec)
                ok = labels_match(labels, values)
            elif key == "before":
                ok = all(_created(rec) < t for t in pivots["before"])
            elif key == "since":
                ok = all(_created(rec) > t for t in pivots["since"])
            if not ok:
                break
        if ok:
            out.append(rec)
    return out


@frozen
class PlatformImage:
    """One platform's image of a store entry (``images --tree``): its manifest digest, its
    unpacked size (Docker's disk usage) and its blobs' size (content size)."""

    platform: Platform
    manifest: Digest
    disk_usage: int
    content_size: int


def platform_images(store: Store, record: ImageRecord) -> list[PlatformImage]:
    """The platforms of *record* (an index's manifests in order; one for a plain image)."""
    desc = record.descriptor
    children = [desc]
    if mt.is_index(desc.media_type):
        children = Index.parse(store.read_blob(desc.digest), desc.media_type).manifests
    out = []
    for d in children:
        image = store.image(d)
        out.append(PlatformImage(
            d.platform or image.config.platform, d.digest,
            sum(store.content_size(layer) for layer in image.layers),
            sum(layer.size for layer in image.layers) + image.manifest.config.size + d.size))
    return out


def summaries(store: Store, *, filters: Mapping[str, list[str]] | None = None
              ) -> list[dict[str, Any]]:
    """Docker's ``ImageSummary`` list (``GET /images/json``): one entry per image ID, every
    tag of it in ``RepoTags``, newest first; *filters* as ``docker images --filter``."""
    records = filter_images(store, store.images(), filters=filters or {})
    groups: dict[str, list[ImageRecord]] = {}
    for rec in records:
        groups.setdefault(str(rec.image_id or rec.descriptor.digest), []).append(rec)
    out = []
    for image_id, recs in groups.items():
        tags = [r.familiar for rec in recs if (r := rec.reference) is not None and r.tag]
        digests = sorted({f"{r.familiar_name}@{rec.descriptor.digest}" for rec in recs
                          if (r := rec.reference) is not None and rec.repo_digest})
        out.append({
            "Id": image_id,
            "ParentId": "",
            "RepoTags": tags or ["<none>:<none>"],
            "RepoDigests": digests or ["<none>@<none>"],
            "Created": int(_created(recs[0])),
            "Size": recs[0].size,
            "SharedSize": -1,
            "VirtualSize": recs[0].size,
            "Labels": dict(_labels(store, recs[0])) or None,
            "Containers": -1,
        })
    out.sort(key=lambda s: (s["Created"], s["Id"]), reverse=True)
    return out


def _created(rec: ImageRecord) -> float:
    """The image's creation time as a Unix time; 0 if unknown."""
    return rfc3339_seconds(rec.created) or 0.0


def _in_repository(rec: ImageRecord, pattern: str) -> bool:
    ref = rec.reference
    if ref is None:
        return False
    try:  # the whole pattern: a registry's port (host:5000/repo:tag) is no tag
        want = Reference.parse(pattern, default_tag=False)
    except RegistryError:
        return False
    return ref.name == want.name and (want.tag is None or ref.tag == want.tag)


def _reference_glob(rec: ImageRecord, pattern: str) -> bool:
    ref = rec.reference
    if ref is None:
        return False
    return any(fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, pattern + ":*")
               for name in (ref.familiar, str(ref)))


def _labels(store: Store, rec: ImageRecord) -> Mapping[str, str]:
    try:
        image = store.image(rec.descriptor, reference=rec.reference)
    except (NotFound, OSError, ValueError):
        return {}
    return dict(image.config.config.get("Labels") or {})


# -- history -------------------------------------------------------------------------------------
def history(store: Store, name: str) -> list[dict[str, Any]]:
    """Docker's ``/images/{name}/history`` (what ``docker history`` shows): newest first, only
    the top entry carries the image ID and its tags; ``Created`` in Unix seconds; ``Size`` the
    layer's unpacked size as Docker counts it, 0 for an entry that made no layer."""
    record = store.lookup(name)
    image = store.image(record.descriptor, reference=record.reference)
    sizes = iter(store.content_size(layer) for layer in image.layers)
    tags = [r.reference.familiar for r in store.images()
            if r.image_id == image.id and r.reference is not None and r.reference.tag]
    rows = []
    entries = image.config.history
    for i, h in enumerate(entries):
        top = i == len(entries) - 1
        rows.append({
            "Id": str(image.id) if top else "<missing>",
            "Created": int(rfc3339_seconds(h.get("created")) or 0),
            "CreatedBy": h.get("created_by", ""),
            "Tags": tags if top else None,
            "Size": 0 if h.get("empty_layer") else next(sizes, 0),
            "Comment": h.get("comment", ""),
        })
    rows.reverse()
    return rows
