"""The build cache: a step's content-derived key and its parent's result → the layer it made
and its history entry.

A record names the result it was made on (``parent``: the layers below the step and those of
the stages it reads, as they were): a hit is taken only on that very result, so a chain of hits
never mixes the layers of builds that ran at once (each one's records form a chain of their
own, and a rebuild follows one of them, giving that build's image ID again).

Records live under ``StateRoot.cache``; the layer blobs they name are hard-linked there too, so a
store ``gc`` never strands a record, and ``prune`` is the only thing that frees cache space.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from builder.base.paths import remove_tree
from builder.imagebuild import sha
from registry.digest import Digest
from registry.errors import DigestError
from registry.model import Descriptor, canonical_json
from registry.store import Store, file_lock
from registry.values import field, frozen

_SCHEMA = 2


@frozen
class CacheRecord:
    """What one filesystem step produced: a layer (or none, for an empty diff) and its history."""

    key: str
    layer: Descriptor | None
    diff_id: Digest | None
    created_by: str
    #: when the layer was first made (RFC 3339): cached rebuilds keep it, so their IDs stay
    created: str = ""
    #: what went into the key, by name, so a later miss can say which input changed
    inputs: dict[str, str] = field(default_factory=dict, compare=False)
    #: the layer lives only unpacked in the layer cache, under ``diff_id`` (a stand-in id):
    #: a step of a stage no image carries, as BuildKit keeps a snapshot and no blob
    snapshot: bool = False
    last_used: float = field(default=0.0, compare=False)
    #: the result the step ran on (``chain_parent``): part of where the record lives
    parent: str = ""

    def to_json(self) -> bytes:
        return canonical_json({
            "schema": _SCHEMA,
            "key": self.key,
            "layer": self.layer.to_dict() if self.layer else None,
            "diff_id": str(self.diff_id) if self.diff_id else None,
            "created_by": self.created_by,
            "created": self.created,
            "inputs": self.inputs,
            "snapshot": self.snapshot,
            "parent": self.parent,
        })

    @classmethod
    def from_json(cls, raw: bytes, *, last_used: float = 0.0) -> CacheRecord:
        d = json.loads(raw)
        if d.get("schema") != _SCHEMA:
            raise ValueError("unknown cache record schema")
        return cls(
            key=str(d["key"]),
            layer=Descriptor.from_dict(d["layer"]) if d.get("layer") else None,
            diff_id=Digest.parse(d["diff_id"]) if d.get("diff_id") else None,
            created_by=str(d.get("created_by", "")),
            created=str(d.get("created", "")),
            inputs={str(k): str(v) for k, v in (d.get("inputs") or {}).items()},
            last_used=last_used,
            snapshot=bool(d.get("snapshot", False)),
            parent=str(d.get("parent", "")),
        )


@frozen
class PruneResult:
    records: int
    blobs: int
    freed: int


class BuildCache:
    """Records by key under *path*; blobs hard-linked from *store* into ``path/blobs``.

    Writers publish a record with an atomic rename after its blob is linked, so a concurrent
    reader sees either no record or a complete one. ``prune`` holds the cache lock
    exclusively; builds hold it shared (``using()``).
    """

    def __init__(self, path: Path, store: Store, *, layers: Path | None = None) -> None:
        self.path = path
        self.store = store
        #: the layer cache dir, where snapshot-only layers live (pruned with their records)
        self.layers = layers

    # -- layout --------------------------------------------------------------------------------
    def _record_path(self, key: str, parent: str = "") -> Path:
        name = f"{key}.{parent}.json" if parent else f"{key}.json"
        return self.path / "records" / key[:2] / name

    def record_path(self, rec: CacheRecord) -> Path:
        """Where *rec* belongs (``system check`` compares it with where it was found)."""
        return self._record_path(rec.key, rec.parent)

    def _blob_path(self, digest: Digest) -> Path:
        return self.path / "blobs" / digest.algorithm / digest.encoded

    def _lock_path(self) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path / ".lock"

    @contextlib.contextmanager
    def using(self) -> Iterator[None]:
        """Held (shared) by a build for its whole run, so ``prune`` waits for it."""
        with file_lock(self._lock_path(), shared=True):
            yield

    @contextlib.contextmanager
    def exclusive(self, *, wait: bool = True) -> Iterator[None]:
        """Held by ``prune`` and ``system check --repair``: no build is using the cache. With
        ``wait=False``, ``BlockingIOError`` at once while a build runs."""
        with file_lock(self._lock_path(), wait=wait):
            yield

    def has_link(self, digest: Digest) -> bool:
        """Whether the cache holds its own link of blob *digest*."""
        return self._blob_path(digest).is_file()

    # -- lookups -------------------------------------------------------------------------------
    def get(self, key: str, parent: str = "") -> CacheRecord | None:
        """The record for *key* made on the result *parent* (``chain_parent``), with its layer
        blob present in the store, or None."""
        path = self._record_path(key, parent)
        try:
            raw = path.read_bytes()
            rec = CacheRecord.from_json(raw, last_used=time.time())
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, DigestError):
            return None  # a damaged record is a miss; the rebuild overwrites it
        if rec.key != key or rec.parent != parent:
            return None
        if rec.layer is not None and not self._ensure_in_store(rec.layer.digest):
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # last use, for prune's LRU order
        return rec

    def _ensure_in_store(self, digest: Digest) -> bool:
        """The blob is in the store (re-linked from our copy if the store's gc took it)."""
        if self.store.has_blob(digest):
            return True
        ours = self._blob_path(digest)
        if not ours.is_file():
            return False
        target = self.store.blob_path(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        _link(ours, target)
        return True

    def keep_blob(self, digest: Digest) -> None:
        """Keep the store's blob *digest* through store gc, as a record's layer is kept."""
        self._keep_blob(digest)

    def _keep_blob(self, digest: Digest) -> None:
        """Hard-link the store's blob into the cache (once)."""
        ours = self._blob_path(digest)
        if ours.exists():
            return
        ours.parent.mkdir(parents=True, exist_ok=True)
        _link(self.store.blob_path(digest), ours)

    def put(self, rec: CacheRecord) -> bool:
        """Publish *rec*; its layer blob must already be in the store. A record of a layer kept
        only as a snapshot is published only if none is there yet (another build running the
        same step at once made its own snapshot, which later records already name): False
        then, and the caller drops its snapshot once its build is over."""
        if rec.layer is not None:
            self._keep_blob(rec.layer.digest)
        path = self._record_path(rec.key, rec.parent)
        path.parent.mkdir(parents=True, exist_ok=True)
        if rec.snapshot:
            return _create_file(path, rec.to_json())
        replace_file(path, rec.to_json())
        return True

    # -- the same layer in another compression ------------------------------------------------
    def _variant_path(self, diff_id: Digest, comp: str) -> Path:
        return self.path / "variants" / f"{diff_id.encoded}-{comp}.json"

    def get_variant(self, diff_id: Digest, comp: str) -> Descriptor | None:
        try:
            desc = Descriptor.from_dict(json.loads(self._variant_path(diff_id, comp).read_bytes()))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        except Exception:  # noqa: BLE001 - a damaged variant record is a miss
            return None
        return desc if self._ensure_in_store(desc.digest) else None

    def put_variant(self, diff_id: Digest, comp: str, desc: Descriptor,
                    real_diff_id: Digest | None = None) -> None:
        self._keep_blob(desc.digest)
        path = self._variant_path(diff_id, comp)
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = desc.to_dict()
        if real_diff_id is not None:
            doc["io.pybuild.diff_id"] = str(real_diff_id)
        replace_file(path, canonical_json(doc))

    def get_materialized(self, snapshot_id: Digest, comp: str) -> tuple[Descriptor, Digest] | None:
        """The blob made from a snapshot-only layer, with the diff_id of its tar."""
        try:
            doc = json.loads(self._variant_path(snapshot_id, comp).read_bytes())
            real = Digest.parse(doc.pop("io.pybuild.diff_id"))
            desc = Descriptor.from_dict(doc)
        except Exception:  # noqa: BLE001 - a damaged or missing record is a miss
            return None
        return (desc, real) if self._ensure_in_store(desc.digest) else None

    def _variants(self) -> list[tuple[Path, str, Descriptor | None]]:
        root = self.path / "variants"
        if not root.is_dir():
            return []
        out: list[tuple[Path, str, Descriptor | None]] = []
        for f in root.glob("*.json"):
            try:
                doc = json.loads(f.read_bytes())
                doc.pop("io.pybuild.diff_id", None)
                desc: Descriptor | None = Descriptor.from_dict(doc)
            except Exception:  # noqa: BLE001
                desc = None
            out.append((f, f.name.split("-", 1)[0], desc))
        return out

    def inputs_index(self) -> Iterator[CacheRecord]:
        """Every record (for the "why did this miss?" search and for listing)."""
        root = self.path / "records"
        if not root.is_dir():
            return
        for sub in sorted(root.iterdir()):
            for f in sorted(sub.glob("*.json")):
                try:
                    yield CacheRecord.from_json(f.read_bytes(), last_used=f.stat().st_mtime)
                except (OSError, ValueError, KeyError, TypeError, DigestError):
                    continue

    def usage(self) -> int:
        """Bytes held by the cache's own blob links (what ``prune --all`` can free at most)."""
        total = 0
        for blob in self._blobs():
            with contextlib.suppress(FileNotFoundError):
                total += blob.stat().st_size
        return total

    def _blobs(self) -> list[Path]:
        root = self.path / "blobs"
        if not root.is_dir():
            return []
        return [b for alg in root.iterdir() for b in alg.iterdir()]

    def kept_blobs(self) -> set[Digest]:
        """Every blob a record or a variant names: what the store keeps for the cache."""
        keep = self.referenced_blobs()
        keep |= {desc.digest for _f, _d, desc in self._variants() if desc is not None}
        return keep

    def records(self) -> Iterator[tuple[Path, CacheRecord | None]]:
        """Every record file and what it holds (None: unreadable, or of an older schema)."""
        root = self.path / "records"
        if not root.is_dir():
            return
        for sub in sorted(root.iterdir()):
            for f in sorted(sub.glob("*.json")):
                try:
                    yield f, CacheRecord.from_json(f.read_bytes())
                except (OSError, ValueError, KeyError, TypeError, DigestError):
                    yield f, None

    def variants(self) -> list[tuple[Path, Descriptor | None]]:
        return [(f, desc) for f, _d, desc in self._variants()]

    def blob_links(self) -> list[Path]:
        """The cache's own hard links of blobs (``blobs/<alg>/<hex>``)."""
        return self._blobs()

    def referenced_blobs(self) -> set[Digest]:
        """Layer digests named by records: what a store ``gc`` may pass as ``keep``."""
        return {r.layer.digest for r in self.inputs_index() if r.layer is not None}

    # -- prune ---------------------------------------------------------------------------------
    def prune(self, *, all: bool = False, keep_storage: int | None = None) -> PruneResult:
        """Drop records, least recently used first.

        ``all``: every record. ``keep_storage``: until the blobs still linked total at most that
        many bytes. Neither: records unused for 48 hours (Docker's default filter for
        dangling cache). The store's own unreferenced blobs then go in a ``gc`` that keeps
        what surviving records name.
        """
        removed_records = removed_blobs = freed = 0
        with file_lock(self._lock_path()):
            records = sorted(self.inputs_index(), key=lambda r: r.last_used)
            sizes = {r.layer.digest: r.layer.size for r in records if r.layer is not None}
            if all:
                doomed = records
            elif keep_storage is not None:
                doomed = []
                total = sum(sizes.values())
                live: dict[Digest, int] = {}
                for r in records:
                    if r.layer is not None:
                        live[r.layer.digest] = live.get(r.layer.digest, 0) + 1
                for r in records:
                    if total <= keep_storage:
                        break
                    doomed.append(r)
                    if r.layer is not None:
                        live[r.layer.digest] -= 1
                        if live[r.layer.digest] == 0:
                            total -= sizes[r.layer.digest]
            else:
                cutoff = time.time() - 48 * 3600
                doomed = [r for r in records if r.last_used < cutoff]
            for r in doomed:
                with contextlib.suppress(FileNotFoundError):
                    self._record_path(r.key, r.parent).unlink()
                    removed_records += 1
                if r.snapshot and r.diff_id is not None and self.layers is not None:
                    snap = self.layers / r.diff_id.encoded
                    if snap.is_dir():
                        freed += tree_size(snap)
                        remove_tree(snap)
            keep = {r.layer.digest for r in records if r.layer is not None and r not in doomed}
            kept_diffs = {r.diff_id.encoded for r in records if r.diff_id is not None and r not in doomed}
            for f, diff_hex, desc in self._variants():
                if diff_hex in kept_diffs and desc is not None:
                    keep.add(desc.digest)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        f.unlink()
            in_images = self.store.referenced()
            for blob in self._blobs():
                try:
                    d = Digest(blob.parent.name, blob.name)
                except DigestError:
                    continue
                if d not in keep:
                    with contextlib.suppress(FileNotFoundError):
                        st = blob.stat()
                        blob.unlink()
                        removed_blobs += 1
                        # The space comes back only if the store held no other link to it.
                        if d not in in_images:
                            freed += st.st_size
            self.store.gc(keep=keep)
            freed += self._prune_memos("dockerfiles", all=all)
            freed += self._prune_memos("copies", all=all)
            if all:  # the solver's content digests of layers (``cache/content``): memos only
                remove_tree(self.path / "content")
        return PruneResult(removed_records, removed_blobs, freed)

    def _prune_memos(self, name: str, *, all: bool) -> int:
        """Drop the memo files of ``cache/<name>``: parsed Dockerfiles (``dockerfiles``,
        ``builder.imagebuild.dockerfile.parsecache``: a hit refreshes an entry's mtime) or the
        records of incremental COPYs (``copies``, ``builder.imagebuild.execute.incremental``:
        rewritten at each execution). All of them with *all*, else those unused for 48 hours.
        Returns bytes freed."""
        root = self.path / name
        if not root.is_dir():
            return 0
        cutoff = time.time() - 48 * 3600
        freed = 0
        for f in root.iterdir():
            with contextlib.suppress(FileNotFoundError):
                st = f.stat()
                if all or st.st_mtime < cutoff:
                    f.unlink()
                    freed += st.st_size
        return freed


def _link(src: Path, dst: Path) -> None:
    """``link(2)`` that tolerates *dst* existing, and *src* being renamed over meanwhile (a
    concurrent writer of the same blob replaces its inode: link then fails with ENOENT)."""
    for _ in range(10):
        try:
            os.link(src, dst)
            return
        except FileExistsError:
            return
        except FileNotFoundError:
            if not src.exists():
                raise
    os.link(src, dst)


def tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def chain_parent(parts: Iterable[str]) -> str:
    """The result a step runs on, as one hex digest of *parts* (its layers' ids, in order)."""
    h = sha.sha256()
    for p in parts:
        h.update(p.encode() + b"\n")
    return h.hexdigest()


def _create_file(path: Path, data: bytes) -> bool:
    """Publish *data* at *path* whole, unless a file is there already (then False)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        tmp.write_bytes(data)
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def replace_file(path: Path, data: bytes) -> None:
    """Write a temp file beside *path* and rename it over: readers see old or new, never half.

    No fsync: a record lost in a crash is only a cache miss, and a cut-short one fails to parse
    (also a miss); syncing every step's records cost more than the steps themselves.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        tmp.write_bytes(data)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
