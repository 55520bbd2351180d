"""The local image store: an OCI image layout on disk with atomic, verified blob writes and tags.

Tags are ``index.json`` entries annotated ``org.opencontainers.image.ref.name`` (the full
reference); each entry also carries the image ID, created time and size so listing is one read.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from registry import lookup
from registry import mediatypes as mt
from registry.digest import CHUNK, WRITE_MAX, Digest
from registry.errors import BlobUnknown, DigestError, NotFound, StoreError
from registry.leases import Lease, file_lock, ingest_file, leftovers, new_temp, write_atomic
from registry.model import Descriptor, ImageConfig, Index, Manifest, Platform, canonical_json
from registry.records import (  # the records, re-exported
    IMAGE_CREATED,
    IMAGE_ID,
    IMAGE_SIZE,
    REF_NAME,
    REPO_DIGEST,
    Image,
    ImageRecord,
)
from registry.reference import Reference

TYPE_CHECKING = False  # not ``typing``'s: a hot path loads no ``typing`` (~5 ms)
if TYPE_CHECKING:
    from typing import Any, BinaryIO

LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'


class BlobWriter:
    """A blob being written: bytes go to a temp file; ``commit`` verifies and publishes it.

    Leaving the ``with`` block without ``commit`` (or on an error) removes the temp file, so a
    reader never sees a partial blob.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        # locked by us while we live: a sweeper tells our file from a dead writer's by that
        fd, tmp = ingest_file(store.ingest_dir)
        self._tmp = str(tmp)
        self._file = os.fdopen(fd, "wb")
        self._hash = Digest("sha256", "0" * 64).new_hasher()
        self.size = 0
        self.digest: Digest | None = None

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._hash.update(data)
        self.size += len(data)
        if len(data) <= WRITE_MAX:
            self._file.write(data)
        else:
            view = memoryview(data)
            for at in range(0, len(view), WRITE_MAX):
                self._file.write(view[at:at + WRITE_MAX])
        return len(data)

    def flush(self) -> None:
        self._file.flush()

    def fileno(self) -> int:
        return self._file.fileno()

    def copy_from(self, stream: BinaryIO) -> None:
        while chunk := stream.read(CHUNK):
            self.write(chunk)

    def commit(self, expected: Digest | None = None, size: int | None = None) -> Digest:
        # the file stays open (and locked) until it is renamed: an unlocked ingest file is a
        # dead writer's to a concurrent sweep
        self._file.flush()
        os.fsync(self._file.fileno())
        actual = Digest("sha256", self._hash.hexdigest())
        if expected is not None and expected.algorithm != "sha256":
            actual = self._rehash(expected.algorithm)
        if size is not None and size != self.size:
            self.abort()
            raise DigestError(f"blob {expected or actual}: size {self.size}, expected {size}")
        if expected is not None and expected != actual:
            self.abort()
            raise DigestError(f"digest mismatch: expected {expected}, got {actual}")
        target = self._store.blob_path(actual)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self._tmp, 0o644)
        os.rename(self._tmp, target)
        self._file.close()
        self.digest = actual
        return actual

    def _rehash(self, algorithm: str) -> Digest:
        import hashlib

        h = hashlib.new(algorithm)
        with open(self._tmp, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        return Digest(algorithm, h.hexdigest())

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.digest is None:
            self.abort()


class Store:
    """An OCI image layout at *path*: ``oci-layout``, ``index.json``, ``blobs/<alg>/<hex>``.

    Blob calls: ``has_blob``, ``blob_path``, ``open_blob``, ``read_blob``, ``writer``, ``put_bytes``,
    ``put_stream``. Image calls: ``images``, ``put_image``, ``tag``, ``untag``, ``resolve``,
    ``remove``, ``gc``. Writers of several blobs that will be referenced later hold ``lease()``
    so that a concurrent ``gc`` does not take them.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    # -- layout --------------------------------------------------------------------------------
    @property
    def ingest_dir(self) -> Path:
        d = self.path / "ingest"
        if not d.is_dir():
            self._init()
        return d

    def _init(self) -> None:
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.path / "ingest").mkdir(exist_ok=True)
        if not (self.path / "oci-layout").exists():
            write_atomic(self.path / "oci-layout", LAYOUT)
        if not (self.path / "index.json").exists():
            # Create-if-absent by link(2): this runs unlocked (from ``ingest_dir``), and a plain
            # write could clobber an index.json another process has just filled.
            fd, tmp = new_temp(self.path, ".index.json.")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(json.dumps({"manifests": [], "mediaType": mt.OCI_INDEX,
                                        "schemaVersion": 2}, indent=2).encode())
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o644)
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, self.path / "index.json")
            finally:
                os.unlink(tmp)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.mkdir(parents=True, exist_ok=True)
        with file_lock(self.path / ".lock"):
            yield

    @contextlib.contextmanager
    def lease(self, *, listing: bool = False) -> Iterator[Lease]:
        """Keep ``gc`` away while blobs are written that nothing references yet. A *listing*
        holder (a transfer) lists with ``Lease.hold`` the blobs it writes or relies on, so that
        no ``sweep`` takes them; leaving by an exception (or after ``Lease.fail``) leaves its
        lease dead: what it lists and nothing else references goes in the sweep that follows
        here, or in a later one. Any other holder keeps every sweep from taking blobs until it
        is done. Dead holders' leftovers go first."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.sweep()
        ok = False
        held: Lease | None = None
        try:
            with file_lock(self.path / ".gc.lock", shared=True):
                with self._locked():  # a sweep sees no lease or a whole one
                    held = Lease(self.ingest_dir, listing=listing)
                try:
                    yield held
                    ok = not held.failed
                finally:
                    held.release(keep_listed=not ok)
        finally:
            if not ok and held is not None and held.listed:
                self.sweep()

    def sweep(self) -> tuple[int, int]:
        """Collect what dead (killed or cancelled) holders left: their ingest files, and the
        blobs their leases list that no image and no live lease references. Returns (blobs
        removed, bytes freed); cheap when there is nothing to collect."""
        if not (self.path / "ingest").is_dir():
            return 0, 0
        removed = freed = 0
        with self._locked(), leftovers(self.path / "ingest") as found:
            if not found:
                return 0, 0
            # a live holder that lists nothing may rely on any blob: leave dead leases for later
            doomed = set() if found.blanket else found.listed - found.live_listed
            if doomed:
                doomed -= self.referenced()
            for d in doomed:
                with contextlib.suppress(FileNotFoundError):
                    freed += self._unlink_blob(d)
                    removed += 1
            for p in found.ingest:
                with contextlib.suppress(FileNotFoundError):
                    freed += p.stat().st_size
                    p.unlink()
            for p in found.leases if not found.blanket else ():
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
        return removed, freed

    def hold(self, lease: Lease, digest: Digest) -> None:
        """List *digest* in *lease* under the store lock: a sweep then either ran before (and
        the caller sees what it left) or sees the digest listed."""
        with self._locked():
            lease.hold(digest)

    def _unlink_blob(self, d: Digest) -> int:
        path = self.blob_path(d)
        size = path.stat().st_size
        path.unlink()
        with contextlib.suppress(FileNotFoundError):
            (self.path / "sizes" / d.algorithm / d.encoded).unlink()
        return size

    # -- blobs ---------------------------------------------------------------------------------
    def blob_path(self, digest: Digest) -> Path:
        return self.path / "blobs" / digest.algorithm / digest.encoded

    def has_blob(self, digest: Digest) -> bool:
        return self.blob_path(digest).is_file()

    def blob_size(self, digest: Digest) -> int:
        try:
            return self.blob_path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobUnknown(f"blob unknown to the local store: {digest}") from None

    def open_blob(self, digest: Digest) -> BinaryIO:
        try:
            return open(self.blob_path(digest), "rb")
        except FileNotFoundError:
            raise BlobUnknown(f"blob unknown to the local store: {digest}") from None

    def content_size(self, layer: Descriptor) -> int:
        """The bytes a layer holds once unpacked, as Docker counts an image's SIZE: regular
        files (a hard-linked one once) and symlink targets, directories and whiteouts nothing.
        Read once from the blob (unless its writer told ``remember_content_size``), then
        remembered beside the store's blobs."""
        memo = self.path / "sizes" / layer.digest.algorithm / layer.digest.encoded
        with contextlib.suppress(OSError, ValueError):
            return int(memo.read_text())
        import tarfile

        from registry.compression import open_decompressed

        total = 0
        try:
            with self.open_blob(layer.digest) as f, \
                    tarfile.open(fileobj=open_decompressed(f), mode="r|") as tf:
                for m in tf:
                    if m.isreg():
                        total += m.size
                    elif m.issym():
                        total += len(m.linkname.encode())
        except (BlobUnknown, tarfile.TarError, OSError, EOFError):
            return layer.size  # not a readable layer here: its stored size is all we know
        self.remember_content_size(layer.digest, total)
        return total

    def remember_content_size(self, digest: Digest, total: int) -> None:
        """Record what ``content_size`` would count in layer blob *digest* (its writer knows)."""
        memo = self.path / "sizes" / digest.algorithm / digest.encoded
        with contextlib.suppress(OSError):
            memo.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(memo, str(total).encode())

    def read_blob(self, digest: Digest) -> bytes:
        """A small blob (manifest, config) in memory, verified against its digest."""
        with self.open_blob(digest) as f:
            data = f.read()
        if not digest.verifies(data):
            raise DigestError(f"store blob {digest} is corrupt (content does not match its digest)")
        return data

    def writer(self) -> BlobWriter:
        return BlobWriter(self)

    def put_bytes(self, data: bytes, expected: Digest | None = None) -> Digest:
        if expected is None:
            expected = Digest.of(data)
        if self.has_blob(expected):
            return expected
        with self.writer() as w:
            w.write(data)
            return w.commit(expected, len(data))

    def put_stream(
        self, stream: BinaryIO, expected: Digest | None = None, size: int | None = None
    ) -> tuple[Digest, int]:
        with self.writer() as w:
            w.copy_from(stream)
            return w.commit(expected, size), w.size

    # -- index.json ----------------------------------------------------------------------------
    def _read_index(self) -> list[Descriptor]:
        try:
            raw = (self.path / "index.json").read_bytes()
        except FileNotFoundError:
            return []
        return Index.parse(raw, mt.OCI_INDEX).manifests

    def _write_index(self, entries: list[Descriptor]) -> None:
        data: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": [d.to_dict() for d in entries],
        }
        write_atomic(self.path / "index.json", json.dumps(data, indent=2, sort_keys=True).encode())

    def images(self) -> list[ImageRecord]:
        return [ImageRecord(d) for d in self._read_index()]

    # -- images --------------------------------------------------------------------------------
    def put_manifest(self, doc: Manifest | Index) -> Descriptor:
        """Store a manifest or index whose referenced blobs are all present already."""
        if isinstance(doc, Manifest):
            missing = [d for d in [doc.config, *doc.layers] if not self.has_blob(d.digest)]
        else:
            missing = [d for d in doc.manifests if not self.has_blob(d.digest)]
        if missing:
            raise BlobUnknown(f"manifest references blobs missing from the store: {missing[0].digest}")
        self.put_bytes(doc.raw)
        return doc.descriptor()

    def put_image(self, manifest: Manifest, config: ImageConfig) -> Descriptor:
        self.put_bytes(config.raw, manifest.config.digest)
        return self.put_manifest(manifest)

    def build_image(self, config: dict[str, Any], layers: list[Descriptor]) -> Image:
        """A new image from its config document *config* and its *layers* (already stored):
        the config blob and an OCI manifest written, untagged (``add`` names it)."""
        image_config = ImageConfig.build(config)
        manifest = Manifest.build(Descriptor(mt.OCI_CONFIG, image_config.digest, image_config.size), layers)
        return Image(self.put_image(manifest, image_config), manifest, image_config)

    def _describe(self, desc: Descriptor) -> Descriptor:
        """The entry for *desc* with ID/created/size annotations filled in."""
        raw = self.read_blob(desc.digest)
        doc = Manifest.parse(raw, desc.media_type) if mt.is_manifest(desc.media_type) else Index.parse(raw, desc.media_type)
        if isinstance(doc, Index):
            chosen = doc.select(Platform.host()) or (doc.manifests[0] if doc.manifests else None)
            if chosen is None:
                return desc
            doc = Manifest.parse(self.read_blob(chosen.digest), chosen.media_type)
        config = ImageConfig.parse(self.read_blob(doc.config.digest))
        size = sum(self.content_size(layer) for layer in doc.layers)
        return desc.with_annotations(
            **{IMAGE_ID: str(doc.config.digest), IMAGE_CREATED: config.created or "",
               IMAGE_SIZE: str(size)}
        )

    def add(self, desc: Descriptor, reference: Reference | None = None, *,
            distributed: bool = False) -> None:
        """Record an image (a manifest or index already stored), tagged or dangling;
        *distributed*: pulled from a registry (its digest is a repo digest)."""
        entry = self._describe(desc).with_annotations(
            **{REF_NAME: str(reference) if reference else None,
               REPO_DIGEST: "true" if distributed else None}
        )
        with self._locked():
            self._init()
            entries = self._read_index()
            out: list[Descriptor] = []
            for e in entries:
                name = e.annotation(REF_NAME)
                if reference is not None and name == str(reference):
                    if e.digest != desc.digest:
                        out.append(e.with_annotations(**{REF_NAME: None}))  # now dangling
                    continue
                if name is None and e.digest == desc.digest:
                    continue  # tagged or re-added: drop the dangling duplicate
                out.append(e)
            if reference is None and any(e.digest == desc.digest for e in out):
                return
            out.append(entry)
            new = self._dedupe_dangling(out)
            # tagged so already (a cached build's tag): no index.json rewrite, no fsync
            if not (entry in entries and len(new) == len(entries) and all(e in entries for e in new)):
                self._write_index(new)
        self.sweep()  # whoever takes the store lock collects what dead transfers left

    @staticmethod
    def _dedupe_dangling(entries: list[Descriptor]) -> list[Descriptor]:
        tagged = {e.digest for e in entries if e.annotation(REF_NAME)}
        # One image ID is one image (as in Docker): a dangling manifest of a tagged config goes.
        tagged_ids = {e.annotation(IMAGE_ID) for e in entries if e.annotation(REF_NAME)}
        seen: set[Digest] = set()
        out = []
        for e in entries:
            if e.annotation(REF_NAME) is None:
                if e.digest in tagged or e.digest in seen or e.annotation(IMAGE_ID) in tagged_ids:
                    continue
                seen.add(e.digest)
            out.append(e)
        return out

    def mark_distributed(self, reference: Reference, digest: Digest) -> None:
        """The entry tagged *reference* was pushed as *digest*: a repo digest from now on."""
        with self._locked():
            entries = self._read_index()
            out = [e.with_annotations(**{REPO_DIGEST: "true"})
                   if e.annotation(REF_NAME) == str(reference) and e.digest == digest else e
                   for e in entries]
            if out != entries:
                self._write_index(out)

    def tag(self, source: str, target: Reference) -> None:
        self.add(self.lookup(source).descriptor, target)

    def untag(self, reference: Reference) -> Descriptor:
        with self._locked():
            entries = self._read_index()
            keep = [e for e in entries if e.annotation(REF_NAME) != str(reference)]
            if len(keep) == len(entries):
                raise NotFound(f"No such image: {reference.familiar}")
            self._write_index(keep)
        self.sweep()
        return next(e for e in entries if e.annotation(REF_NAME) == str(reference))

    def lookup(self, text: str) -> ImageRecord:
        """The index entry named by a reference, ``name@digest``, or an image ID (or prefix).

        As Docker resolves it: a full 64-hex or ``sha256:`` form is always an ID; any other
        name that is a valid reference is tried as one first, then as an ID prefix."""
        return self.find(text)[0]

    def find(self, text: str) -> tuple[ImageRecord, bool]:
        """``lookup``, and whether *text* named the image by its ID (``rmi`` deletes then)."""
        entry, by_id = lookup.find(self._read_index(), text, self._children)
        return ImageRecord(entry), by_id

    def _children(self, entry: Descriptor) -> list[tuple[Descriptor, str]]:
        """An index entry's platform manifests with their config digests (none for a manifest)."""
        if not mt.is_index(entry.media_type):
            return []
        out = []
        try:
            for child in Index.parse(self.read_blob(entry.digest), entry.media_type).manifests:
                if mt.is_manifest(child.media_type):
                    m = Manifest.parse(self.read_blob(child.digest), child.media_type)
                    out.append((child, str(m.config.digest)))
        except (BlobUnknown, DigestError):
            pass
        return out

    def resolve(self, text: str, *, platform: Platform | None = None) -> Image:
        """Lookup, then load manifest and config (choosing *platform* from an index)."""
        record = self.lookup(text)
        return self.image(record.descriptor, platform=platform, reference=record.reference)

    def image(self, desc: Descriptor, *, platform: Platform | None = None,
              reference: Reference | None = None) -> Image:
        raw = self.read_blob(desc.digest)
        if mt.is_index(desc.media_type):
            index = Index.parse(raw, desc.media_type)
            want = platform or Platform.host()
            chosen = index.select(want)
            if chosen is None:
                raise NotFound(f"no image for platform {want} in {reference.familiar if reference else desc.digest}")
            desc = chosen
            raw = self.read_blob(desc.digest)
        manifest = Manifest.parse(raw, desc.media_type)
        config = ImageConfig.parse(self.read_blob(manifest.config.digest))
        return Image(desc, manifest, config, reference)

    def remove(self, text: str, *, force: bool = False) -> list[str]:
        """``rmi``: untag a reference, or drop every tag of an image ID. Returns what was done
        (``Untagged: …`` / ``Deleted: …`` lines); blobs go in ``gc``."""
        record, by_id = self.find(text)
        done: list[str] = []
        with self._locked():
            entries = self._read_index()
            by_ref = record.reference is not None and not by_id
            if by_ref:
                target = [e for e in entries if e.annotation(REF_NAME) == str(record.reference)]
            else:
                same = [e for e in entries if e.digest == record.descriptor.digest
                        or (record.image_id and e.annotation(IMAGE_ID) == str(record.image_id))]
                if len([e for e in same if e.annotation(REF_NAME)]) > 1 and not force:
                    raise StoreError.conflict(
                        f"conflict: unable to delete {text} (must be forced) - image is referenced in multiple repositories"
                    )
                target = same
            keep = [e for e in entries if e not in target]
            for e in target:
                if e.annotation(REF_NAME):
                    done.append(f"Untagged: {Reference.parse(e.annotation(REF_NAME) or '').familiar}")
            if not any(e.digest == record.descriptor.digest for e in keep):
                done.append(f"Deleted: {record.image_id or record.descriptor.digest}")
            self._write_index(keep)
        return done

    # -- garbage collection --------------------------------------------------------------------
    def referenced(self, roots: Iterable[Descriptor] | None = None) -> set[Digest]:
        """Every blob reachable from the index (or from *roots*)."""
        seen: set[Digest] = set()
        stack = list(roots if roots is not None else self._read_index())
        while stack:
            d = stack.pop()
            if d.digest in seen:
                continue
            seen.add(d.digest)
            if not (mt.is_index(d.media_type) or mt.is_manifest(d.media_type)):
                continue
            try:
                raw = self.read_blob(d.digest)
            except (BlobUnknown, DigestError):
                continue
            if mt.is_index(d.media_type):
                stack.extend(Index.parse(raw, d.media_type).manifests)
            else:
                m = Manifest.parse(raw, d.media_type)
                stack.extend([m.config, *m.layers])
        return seen

    def gc(self, *, keep: Iterable[Digest] = (), wait: bool = True) -> tuple[int, int]:
        """Delete unreferenced blobs, dead leases and dead writers' ingest files; returns
        (blobs removed, bytes).

        With ``wait=False`` (``rmi``) a gc that would wait for a lease holder (a build or a
        pull in progress) is skipped, returning (0, 0): ``image prune`` collects later."""
        if not (self.path / "blobs").is_dir():
            return 0, 0
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(file_lock(self.path / ".gc.lock", wait=wait))
            except BlockingIOError:
                return 0, 0
            stack.enter_context(self._locked())
            live = self.referenced() | set(keep)
            removed = freed = 0
            for alg_dir in (self.path / "blobs").iterdir():
                for blob in alg_dir.iterdir():
                    try:
                        d = Digest(alg_dir.name, blob.name)
                    except DigestError:
                        continue
                    if d not in live:
                        freed += self._unlink_blob(d)
                        removed += 1
            # no lease is live now: every lease file is a dead one; ingest files of dead writers
            with leftovers(self.path / "ingest") as found:
                for p in [*found.ingest, *found.leases]:
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()
        return removed, freed


def empty_config(platform: Platform | None = None) -> dict[str, Any]:
    """The config of an image with no layers yet, as ``FROM scratch`` starts it."""
    p = platform or Platform.host()
    return {"architecture": p.architecture, "os": p.os, "config": {},
            "rootfs": {"type": "layers", "diff_ids": []}, "history": []}


__all__ = ["Store", "BlobWriter", "Image", "ImageRecord", "REF_NAME", "IMAGE_ID", "IMAGE_CREATED",
           "IMAGE_SIZE", "REPO_DIGEST", "file_lock", "write_atomic",
           "empty_config", "canonical_json"]
