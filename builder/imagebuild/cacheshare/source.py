"""Importing a shared cache: the records first (one manifest and one config blob), a layer only
when a step is about to run on it or the image needs it; each blob verified (its digest, and
its tar's diff_id) before anything uses it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, BinaryIO

from builder.base.state import StateRoot
from builder.core.layers.apply import apply_layer
from builder.core.rootfs import LayerCache
from builder.imagebuild.cache import BuildCache, replace_file
from builder.imagebuild.cacheshare.artifact import (
    CONFIG_TYPE,
    INLINE_KEY,
    CacheConfig,
    SharedRecord,
)
from builder.imagebuild.cacheshare.spec import CacheSpec
from builder.imagebuild.explain import Slot
from registry import mediatypes as mt
from registry.compression import open_decompressed
from registry.digest import Digest
from registry.model import Descriptor, Index, Manifest, Platform
from registry.store import Store
from registry.transfer import remote_end
from registry.transfer.ends import BlobSources

#: the largest cache config we read (a corrupt size field must not fill memory)
MAX_CONFIG = 64 << 20


class CacheImportError(Exception):
    """A shared cache could not be used: the build goes on (or starts again) without it."""


def mount_dir(state: StateRoot, mount_id: str) -> Path:
    """Where a ``RUN --mount=type=cache`` id lives (as ``builder.imagebuild.execute.run`` places it)."""
    return state.cache / "mounts" / hashlib.sha256(mount_id.encode()).hexdigest()[:32]


class CacheSource:
    """One ``--cache-from``: its records by (key, parent), its blobs on demand."""

    def __init__(self, spec: CacheSpec, config: CacheConfig,
                 open_blob: Callable[[Descriptor], IO[bytes]], origin: str | None = None) -> None:
        self.spec = spec
        self.config = config
        self._open = open_blob
        #: ``host/repo`` the blobs live in (a later push to that registry mounts them)
        self.origin = origin
        self._index = {(s.record.key, s.record.parent): s for s in config.records}
        self._lock = threading.Lock()
        self.downloaded = 0

    @property
    def name(self) -> str:
        return self.spec.name

    def lookup(self, key: str, parent: str) -> SharedRecord | None:
        return self._index.get((key, parent))

    def slot(self, slot: str) -> Slot | None:
        return Slot.from_json(self.config.slots.get(slot))

    # -- blobs -----------------------------------------------------------------------------------
    def fetch(self, store: Store, desc: Descriptor, diff_id: Digest | None = None) -> None:
        """Blob *desc* into *store*, its digest (and the diff_id of its tar) checked."""
        with self._lock:
            if store.has_blob(desc.digest):
                return
            try:
                with self._open(desc) as stream:
                    store.put_stream(stream, desc.digest, desc.size)  # type: ignore[arg-type]
            except Exception as e:  # noqa: BLE001 - any fault: this source is not used
                raise CacheImportError(f"{self.name}: blob {desc.digest}: {_one_line(e)}") from None
            self.downloaded += desc.size
            if diff_id is not None:
                got = _diff_id(store, desc.digest)
                if got != diff_id:
                    with contextlib.suppress(FileNotFoundError):
                        store.blob_path(desc.digest).unlink()
                    raise CacheImportError(f"{self.name}: blob {desc.digest}: its tar is {got}, "
                                           f"the record says {diff_id}")
            if self.origin:
                sources = BlobSources(store)
                sources.note(desc.digest, self.origin)
                sources.save()

    def materialize(self, state: StateRoot, store: Store, cache: BuildCache, shared: SharedRecord) -> None:
        """Make a record's layer local (its blob in the store, or its snapshot unpacked) and
        file the record in the local cache, so later builds hit it locally."""
        rec = shared.record
        if shared.layer is None:
            cache.put(rec)
            return
        desc = self.config.layers[shared.layer]
        if rec.snapshot:
            assert rec.diff_id is not None and shared.tar_diff_id is not None
            layers = LayerCache(state)
            if not layers.has(str(rec.diff_id)):
                self.fetch(store, desc, shared.tar_diff_id)
                try:
                    made = layers.unpack(str(shared.tar_diff_id), lambda: store.open_blob(desc.digest))
                except Exception as e:  # noqa: BLE001
                    raise CacheImportError(f"{self.name}: layer {desc.digest}: {_one_line(e)}") from None
                with contextlib.suppress(OSError):
                    os.rename(made, layers.path(str(rec.diff_id)))
            cache.put(rec)
            return
        self.fetch(store, desc, rec.diff_id)
        cache.put(rec)

    def restore_mounts(self, state: StateRoot, store: Store, ids: set[str]) -> list[str]:
        """The cache mount directories *ids* this source has and this root lacks; returns the
        ids restored."""
        done = []
        for mount_id, idx in sorted(self.config.mounts.items()):
            if mount_id not in ids:
                continue
            d = mount_dir(state, mount_id)
            if d.exists():
                continue
            desc = self.config.layers[idx]
            self.fetch(store, desc)
            tmp = d.parent / f".restore-{os.getpid()}-{threading.get_ident()}"
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                with store.open_blob(desc.digest) as stream:
                    apply_layer(stream, tmp, overlay_format=False)
                os.rename(tmp, d)
                done.append(mount_id)
            except FileExistsError:
                shutil.rmtree(tmp, ignore_errors=True)
            except OSError as e:
                shutil.rmtree(tmp, ignore_errors=True)
                if not d.exists():
                    raise CacheImportError(f"{self.name}: cache mount {mount_id}: {e}") from None
            except Exception as e:  # noqa: BLE001
                shutil.rmtree(tmp, ignore_errors=True)
                raise CacheImportError(f"{self.name}: cache mount {mount_id}: {_one_line(e)}") from None
        return done

    def remember_contents(self, state: StateRoot) -> None:
        """The content memos of stages other stages read (``cache/content``), where missing."""
        root = state.cache / "content"
        for diff_id, value in self.config.contents.items():
            memo = root / Digest.parse(diff_id).encoded
            if not memo.exists():
                root.mkdir(parents=True, exist_ok=True)
                replace_file(memo, value.encode())


def _diff_id(store: Store, digest: Digest) -> Digest:
    h = hashlib.sha256()
    with store.open_blob(digest) as raw:
        stream = open_decompressed(raw)
        while chunk := stream.read(1 << 20):
            h.update(chunk)
    return Digest("sha256", h.hexdigest())


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


# -- loading ---------------------------------------------------------------------------------------
def load(spec: CacheSpec, state: StateRoot) -> CacheSource:
    """Read the records of one ``--cache-from`` (raises ``CacheImportError``)."""
    try:
        if spec.type == "local":
            return _load_layout(spec)
        return _load_registry(spec)
    except CacheImportError:
        raise
    except Exception as e:  # noqa: BLE001 - a registry, a layout or a record at fault: one line
        raise CacheImportError(f"{spec.name}: {_one_line(e)}") from None


def _config(spec: CacheSpec, config_desc: Descriptor, raw: bytes) -> CacheConfig:
    if Digest.of(raw) != config_desc.digest:
        raise CacheImportError(f"{spec.name}: config blob {config_desc.digest} does not match its digest")
    if config_desc.media_type == CONFIG_TYPE:
        try:
            return CacheConfig.from_json(raw)
        except ValueError as e:
            raise CacheImportError(f"{spec.name}: corrupt cache record: {e}") from None
    # an image: our inline records, or none (BuildKit's inline cache, a plain image)
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise CacheImportError(f"{spec.name}: image config is not JSON: {e}") from None
    if isinstance(doc, dict) and INLINE_KEY in doc:
        try:
            return CacheConfig.from_doc(doc[INLINE_KEY])
        except ValueError as e:
            raise CacheImportError(f"{spec.name}: corrupt inline cache record: {e}") from None
    return CacheConfig()


def _load_registry(spec: CacheSpec) -> CacheSource:
    end = remote_end(spec.ref)
    fetched = end.resolve()
    if fetched.media_type in mt.INDEXES:
        index = Index.parse(fetched.raw, fetched.media_type)
        chosen = index.select(Platform.host())
        if chosen is None or not mt.is_manifest(chosen.media_type):
            return CacheSource(spec, CacheConfig(), lambda d: _no_blob(d))  # BuildKit's own cache
        fetched = end.get_manifest(chosen)
    manifest = Manifest.parse(fetched.raw, fetched.media_type)
    cfg = manifest.config
    if cfg.size > MAX_CONFIG:
        raise CacheImportError(f"{spec.name}: config blob of {cfg.size} bytes")
    with end.repo.open_blob(cfg.digest, cfg.size) as stream:
        raw = stream.read(MAX_CONFIG + 1)
    repo = end.repo

    def open_blob(desc: Descriptor) -> IO[bytes]:
        return repo.open_blob(desc.digest, desc.size)  # type: ignore[return-value]

    return CacheSource(spec, _config(spec, cfg, raw), open_blob, origin=f"{repo.host}/{repo.path}")


def _no_blob(desc: Descriptor) -> IO[bytes]:
    raise CacheImportError(f"blob {desc.digest} is not in this cache")


def _load_layout(spec: CacheSpec) -> CacheSource:
    root = Path(spec.path)
    try:
        index = Index.parse((root / "index.json").read_bytes())
    except FileNotFoundError:
        raise CacheImportError(f"{spec.name}: no OCI layout there (index.json missing)") from None
    if not index.manifests:
        raise CacheImportError(f"{spec.name}: the layout's index lists no cache")

    def blob(digest: Digest) -> Path:
        return root / "blobs" / digest.algorithm / digest.encoded

    top = index.manifests[-1]
    manifest = Manifest.parse(blob(top.digest).read_bytes(), top.media_type)
    raw = blob(manifest.config.digest).read_bytes()

    def open_blob(desc: Descriptor) -> BinaryIO:
        return open(blob(desc.digest), "rb")

    return CacheSource(spec, _config(spec, manifest.config, raw), open_blob)


def load_all(specs: tuple[CacheSpec, ...], state: StateRoot,
             warn: Callable[[str], None]) -> list[CacheSource]:
    """Every source that loads; each one that does not is one warning line."""
    out = []
    for spec in specs:
        try:
            src = load(spec, state)
        except CacheImportError as e:
            warn(f"cache import failed: {e} (building without it)")
            continue
        src.remember_contents(state)
        out.append(src)
    return out


