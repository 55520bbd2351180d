"""Exporting a build's cache: the records of the steps it took or made (``mode=min``: the
image's stages; ``max``: every stage), their layers (a snapshot-only layer tarred once), the
cache mounts with ``cache-mounts=true``; to a registry (blobs first, the manifest last, so a
reader never sees a manifest whose blobs are missing), an OCI layout, or an image's config."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any, BinaryIO

from builder.base.state import StateRoot
from builder.core.layers import commit_layer, recompress, write_diff
from builder.imagebuild.cache import BuildCache, CacheRecord
from builder.imagebuild.cacheshare.artifact import CONFIG_TYPE, CacheConfig, SharedRecord
from builder.imagebuild.cacheshare.source import CacheSource, mount_dir
from builder.imagebuild.cacheshare.spec import CacheSpec
from builder.imagebuild.explain import Slot
from builder.imagebuild.graph.ops import ExecSpec, Graph, Step
from registry import mediatypes as mt
from registry.digest import Digest
from registry.leases import write_atomic
from registry.model import Descriptor, Manifest
from registry.reference import Reference
from registry.store import Store
from registry.transfer import remote_end
from registry.transfer.ends import BlobSources
from registry.values import replace


def cache_config(state: StateRoot, store: Store, cache: BuildCache,
                 used: Iterable[tuple[Step, CacheRecord]], *, compression: str,
                 mounts: Iterable[str] = (), epoch: int | None = None,
                 remote: Mapping[str, tuple[CacheSource, SharedRecord]] | None = None,
                 ) -> tuple[CacheConfig, dict[Digest, CacheSource]]:
    """The document of an export, and the blobs it names that are not in *store* but in the
    ``--cache-from`` source that lent them (*remote*: ``Solver.remote_layers``)."""
    remote = remote or {}
    elsewhere: dict[Digest, CacheSource] = {}
    layers: list[Descriptor] = []
    where: dict[Digest, int] = {}

    def index(desc: Descriptor) -> int:
        if desc.digest not in where:
            where[desc.digest] = len(layers)
            layers.append(desc)
        return where[desc.digest]

    records: list[SharedRecord] = []
    seen: set[tuple[str, str]] = set()
    slots: dict[str, Any] = {}
    contents: dict[str, str] = {}
    for step, rec in used:
        if (rec.key, rec.parent) in seen:
            continue
        seen.add((rec.key, rec.parent))
        if step.slot:
            slots[step.slot] = Slot(step.inputs, step.files).to_json()
        if rec.diff_id is None:
            records.append(SharedRecord(rec, None))
            continue
        memo = state.cache / "content" / rec.diff_id.encoded
        with contextlib.suppress(OSError):
            contents[str(rec.diff_id)] = memo.read_text()
        if str(rec.diff_id) in remote:  # never fetched: named as its source has it
            src, shared = remote[str(rec.diff_id)]
            assert shared.layer is not None
            desc = src.config.layers[shared.layer]
            if str(rec.diff_id) in src.config.contents:
                contents[str(rec.diff_id)] = src.config.contents[str(rec.diff_id)]
            elsewhere[desc.digest] = src
            records.append(SharedRecord(rec, index(desc), shared.tar_diff_id))
        elif rec.snapshot:
            desc, tar_id = _materialized(state, store, cache, rec.diff_id, compression, epoch)
            records.append(SharedRecord(rec, index(desc), tar_id))
        elif rec.layer is not None and store.has_blob(rec.layer.digest):
            layer = _encoded(store, cache, rec.layer, rec.diff_id, compression)
            records.append(SharedRecord(replace(rec, layer=layer), index(layer)))
    mount_layers: dict[str, int] = {}
    for mount_id in sorted(set(mounts)):
        d = mount_dir(state, mount_id)
        if d.is_dir():
            mount_layers[mount_id] = index(_tar_dir(store, d, compression).with_annotations(
                **{"io.pybuild.cache.mount.id": mount_id}))
    return CacheConfig(tuple(records), tuple(layers), mount_layers, contents, slots), elsewhere


def fetch_all(store: Store, config: CacheConfig, elsewhere: Mapping[Digest, CacheSource]) -> None:
    """The blobs of *config* still in their sources, into *store* (before a layout or an
    image carries them)."""
    for desc in config.layers:
        src = elsewhere.get(desc.digest)
        if src is not None:
            src.fetch(store, desc)


def cache_mount_ids(graph: Graph) -> list[str]:
    """The ``RUN --mount=type=cache`` ids of the stages a build ran."""
    out = []
    for plan in graph.needed():
        for step in plan.steps:
            if isinstance(step.payload, ExecSpec):
                out += [m.id for m in step.payload.mounts if m.type == "cache" and m.id]
    return out


def _materialized(state: StateRoot, store: Store, cache: BuildCache, snapshot: Digest,
                  compression: str, epoch: int | None) -> tuple[Descriptor, Digest]:
    """A snapshot-only layer as a blob (made once, remembered as the assembler's are)."""
    known = cache.get_materialized(snapshot, compression)
    if known is not None:
        return known
    src = state.layers / snapshot.encoded
    made = commit_layer(store, lambda sink: write_diff(src, sink, source_date_epoch=epoch) or None,
                        compression)
    assert made is not None
    cache.put_variant(snapshot, compression, made[0], real_diff_id=made[1])
    return made


def _encoded(store: Store, cache: BuildCache, layer: Descriptor, diff_id: Digest,
             compression: str) -> Descriptor:
    """An uncompressed layer (a stage no image carries) in the export's compression, encoded
    once and remembered as the assembler's variants are; a compressed one as it is (the image's
    layers must stay the very blobs its manifest names)."""
    if compression == "none" or mt.layer_compression(layer.media_type) != "none":
        return layer
    known = cache.get_variant(diff_id, compression)
    if known is not None:
        return known
    desc, got = recompress(store, layer, compression)
    if got != diff_id:
        raise ValueError(f"layer {diff_id} re-encoded to different content {got}")
    cache.put_variant(diff_id, compression, desc)
    return desc


def _tar_dir(store: Store, directory: Path, compression: str) -> Descriptor:
    def empty(sink: IO[bytes]) -> None:
        sink.write(bytes(1024))

    made = commit_layer(store, lambda sink: write_diff(directory, sink) or None, compression)
    if made is None:  # an empty cache mount: the empty tar
        made = commit_layer(store, empty, compression)
    assert made is not None
    return made[0]


def _opener(store: Store, desc: Descriptor) -> Callable[[int], BinaryIO]:
    def open_at(offset: int) -> BinaryIO:
        f = store.open_blob(desc.digest)
        f.seek(offset)
        return f

    return open_at


# -- destinations ----------------------------------------------------------------------------------
def to_registry(spec: CacheSpec, store: Store, config: CacheConfig,
                elsewhere: Mapping[Digest, CacheSource] | None = None) -> Descriptor:
    """Blobs the registry lacks (mounted from a repository of it that has them, else uploaded;
    one still in its ``--cache-from`` source fetched only if it is on another registry), then
    the config blob, then the manifest under the tag."""
    elsewhere = elsewhere or {}
    ref = Reference.parse(spec.ref)
    end = remote_end(ref)
    repo = end.repo
    repo.want_push()
    sources = BlobSources(store)
    for desc in config.layers:
        if repo.has_blob(desc.digest):
            continue
        mounted = False
        src = elsewhere.get(desc.digest)
        candidates = ([src.origin] if src is not None and src.origin else []) + sources.get(desc.digest)
        for source in candidates:
            host, _, path = source.partition("/")
            if host == repo.host and path != repo.path and repo.mount_blob(desc.digest, path):
                mounted = True
                break
        if not mounted:
            if src is not None:
                src.fetch(store, desc)
            repo.push_blob(desc.digest, desc.size, _opener(store, desc))
        sources.note(desc.digest, f"{repo.host}/{repo.path}")
    sources.save()
    raw = config.to_json()
    cfg = Descriptor(CONFIG_TYPE, Digest.of(raw), len(raw))
    if not repo.has_blob(cfg.digest):
        repo.push_blob(cfg.digest, cfg.size, lambda off: io.BytesIO(raw[off:]))
    manifest = Manifest.build(cfg, list(config.layers), media_type=mt.OCI_MANIFEST,
                              annotations={"io.pybuild.cache": "v1"})
    repo.put_manifest(manifest.raw, mt.OCI_MANIFEST, ref.digest or ref.tag or "latest")
    return manifest.descriptor()


def to_layout(spec: CacheSpec, store: Store, config: CacheConfig) -> Descriptor:
    """An OCI image layout at ``dest``: blobs copied in, ``index.json`` replaced last."""
    root = Path(spec.path)
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(digest: Digest, data: bytes | None = None) -> None:
        target = blobs / digest.encoded
        if target.exists():
            return
        tmp = blobs / f".{digest.encoded}.{os.getpid()}"
        if data is None:
            shutil.copyfile(store.blob_path(digest), tmp)
        else:
            tmp.write_bytes(data)
        os.rename(tmp, target)

    for desc in config.layers:
        put(desc.digest)
    raw = config.to_json()
    cfg = Descriptor(CONFIG_TYPE, Digest.of(raw), len(raw))
    put(cfg.digest, raw)
    manifest = Manifest.build(cfg, list(config.layers), media_type=mt.OCI_MANIFEST,
                              annotations={"io.pybuild.cache": "v1"})
    put(manifest.digest, manifest.raw)
    desc = manifest.descriptor(**{"org.opencontainers.image.ref.name": "latest"})
    write_atomic(root / "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [desc.to_dict()]}
    write_atomic(root / "index.json", json.dumps(index, indent=2, sort_keys=True).encode())
    return desc


def inline(config: CacheConfig, image_layers: Iterable[Descriptor]) -> CacheConfig:
    """Only what the image itself carries: records with no layer or one of the image's."""
    have = {d.digest for d in image_layers}
    records = [s for s in config.records
               if s.layer is None or not s.record.snapshot and config.layers[s.layer].digest in have]
    layers = [d for d in config.layers if d.digest in have]
    at = {d.digest: i for i, d in enumerate(layers)}
    kept = tuple(SharedRecord(s.record, None if s.layer is None else at[config.layers[s.layer].digest])
                 for s in records)
    return CacheConfig(kept, tuple(layers), {}, {k: v for k, v in config.contents.items()},
                       dict(config.slots))
