"""The ends of a copy: a registry repository (``RemoteEnd``), the local store (``StoreEnd``),
an OCI layout directory (``LayoutEnd``); ``parse.py`` makes one from text, ``archives.py`` the
tarball ends."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from registry import mediatypes as mt
from registry.auth import Credentials
from registry.client import Fetched, Repository, client_for
from registry.compression import LayerSizer, Pipelined
from registry.digest import CHUNK, Digest
from registry.errors import (
    BlobUnknown,
    DigestError,
    InvalidManifest,
    NotFound,
    RegistryError,
    StoreError,
)
from registry.leases import Lease
from registry.model import Descriptor
from registry.reference import Reference
from registry.store import REF_NAME, BlobWriter, Store, file_lock, write_atomic
from registry.transfer.events import Event, Progress
from registry.values import frozen

DEFAULT_CONCURRENCY = 3
#: start writing a downloaded blob to disk every this many bytes (see ``_start_writeback``)
WRITEBACK = 8 << 20


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Have the kernel begin writing a just-written range to disk now.

    The store fsyncs each blob on commit; without this, all of a blob's dirty pages are
    written at that moment and the download waits for the disk. On Linux, POSIX_FADV_DONTNEED
    starts asynchronous writeback of the range (and drops pages already clean), so disk writes
    overlap the network and the final fsync finds little left: about 1.6x faster pulls here.
    """
    with contextlib.suppress(OSError, AttributeError):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)



class _Feeder:
    """``Pipelined``'s sink for a ``LayerSizer``."""

    def __init__(self, sizer: LayerSizer) -> None:
        self.sizer = sizer

    def write(self, data: bytes) -> int:
        self.sizer.feed(data)
        return len(data)


class _Storing:
    """``Pipelined``'s sink for a blob's ``BlobWriter``: hashes and writes what it is handed,
    starting the writeback of every ``WRITEBACK`` bytes written."""

    def __init__(self, writer: BlobWriter) -> None:
        self.writer = writer
        self.flushed = 0

    def write(self, data: bytes) -> int:
        w = self.writer
        w.write(data)
        if w.size - self.flushed >= WRITEBACK:
            w.flush()
            _start_writeback(w.fileno(), self.flushed, w.size - self.flushed)
            self.flushed = w.size
        return len(data)


#: a blob at least this big is stored from a thread of its own (see ``StoreEnd._put_blob``)
PIPELINE_MIN = 4 << 20


@contextlib.contextmanager
def _pipelined(sink: Any, big: bool) -> Iterator[Any]:
    """*sink* behind a ``Pipelined`` thread when *big* (else *sink* itself), closed (its thread
    joined, its error raised) on leaving; after an error of the caller, the caller's wins."""
    if not big:
        yield sink
        return
    pipe = Pipelined(sink)
    try:
        yield pipe
    except BaseException:
        with contextlib.suppress(Exception):
            pipe.close()
        raise
    pipe.close()


class End(Protocol):
    """What ``copy`` asks of a source or a destination (each end implements both sides)."""

    def describe(self) -> str: ...
    def resolve(self) -> Fetched: ...
    def get_manifest(self, desc: Descriptor) -> Fetched: ...
    def has_blob(self, desc: Descriptor) -> bool: ...
    def open_at(self, desc: Descriptor, offset: int) -> BinaryIO: ...
    def put_blob(self, desc: Descriptor, src: End, on_bytes: Callable[[int], None]) -> None: ...
    def put_manifest(self, doc: Fetched, *, root: bool) -> Descriptor: ...
    def mount_sources(self, desc: Descriptor) -> list[str]: ...
    def try_mount(self, desc: Descriptor, source: str) -> bool: ...
    def as_destination(self) -> None: ...
    def begin(self, progress: Progress) -> None: ...
    def end(self, ok: bool) -> None: ...


class BaseEnd:
    def mount_sources(self, desc: Descriptor) -> list[str]:
        return []

    def try_mount(self, desc: Descriptor, source: str) -> bool:
        return False

    def as_destination(self) -> None:
        """Told by ``copy`` before it begins, to the end it writes to."""

    def begin(self, progress: Progress) -> None:
        pass

    def end(self, ok: bool) -> None:
        pass


class RemoteEnd(BaseEnd):
    """A repository of a registry at a tag or digest."""

    def __init__(self, repo: Repository, reference: Reference) -> None:
        self.repo = repo
        self.reference = reference

    def describe(self) -> str:
        return str(self.reference)

    def _ref(self) -> str | Digest:
        if self.reference.digest is not None:
            return self.reference.digest
        return self.reference.tag or "latest"

    def resolve(self) -> Fetched:
        return self.repo.get_manifest(self._ref())

    def get_manifest(self, desc: Descriptor) -> Fetched:
        return self.repo.get_manifest(desc.digest)

    def has_blob(self, desc: Descriptor) -> bool:
        return self.repo.has_blob(desc.digest)

    def open_at(self, desc: Descriptor, offset: int) -> BinaryIO:
        return self.repo.open_blob(desc.digest, desc.size, offset)  # type: ignore[return-value]

    def put_blob(self, desc: Descriptor, src: End, on_bytes: Callable[[int], None]) -> None:
        self.repo.push_blob(desc.digest, desc.size, lambda off: src.open_at(desc, off), on_bytes)

    def put_manifest(self, doc: Fetched, *, root: bool) -> Descriptor:
        if root and self.reference.tag and self.reference.digest is None:
            where: str | Digest = self.reference.tag
        else:
            where = doc.digest
            if root and self.reference.digest is not None and self.reference.digest != doc.digest:
                raise DigestError(f"{self.reference}: the image's digest is {doc.digest}")
        self.repo.put_manifest(doc.raw, doc.media_type, where)
        return Descriptor(doc.media_type, doc.digest, len(doc.raw))

    def as_destination(self) -> None:
        self.repo.want_push()

    def try_mount(self, desc: Descriptor, source: str) -> bool:
        host, _, repo = source.partition("/")
        if host != self.repo.host or repo == self.repo.path:
            return False
        return self.repo.mount_blob(desc.digest, repo)

    def begin(self, progress: Progress) -> None:
        def on_retry(attempt: int, wait_s: float, err: RegistryError) -> None:
            progress(Event("retry", detail=f"{err} (retry {attempt} in {wait_s:.1f}s)"))

        self.repo.client.on_retry = on_retry


class StoreEnd(BaseEnd):
    """The local store: as a source, the image named *name* (reference, ID or ``name@digest``);
    as a destination, tagged *reference* (or left untagged when None)."""

    #: remember each pulled layer's content size beside the blobs (a layout has no such place)
    count_sizes = True

    def __init__(self, store: Store, name: str, reference: Reference | None = None, *,
                 distributed: bool = False) -> None:
        self.store = store
        self.name = name
        self.reference = reference
        #: a pull from a registry: the tag's digest is a repo digest
        self.distributed = distributed
        self._written: list[Digest] = []
        self._lock = threading.Lock()
        #: blobs of ``PIPELINE_MIN`` or more being received now (see ``_put_blob``)
        self._big_receiving = 0
        self._lease: contextlib.ExitStack | None = None
        self._held: Lease | None = None
        self.sources = BlobSources(store)

    def describe(self) -> str:
        return f"local:{self.name}"

    def resolve(self) -> Fetched:
        record = self.store.lookup(self.name)
        d = record.descriptor
        return Fetched(self.store.read_blob(d.digest), d.media_type, d.digest)

    def get_manifest(self, desc: Descriptor) -> Fetched:
        try:
            raw = self.store.read_blob(desc.digest)
        except BlobUnknown:
            raise NotFound(f"not found: manifest {desc.digest} ({desc.platform or 'no platform'}) "
                           f"is not in the local store") from None
        return Fetched(raw, desc.media_type, desc.digest)

    def has_blob(self, desc: Descriptor) -> bool:
        # a blob found here is one this copy relies on: listed first, so no sweep takes it
        self._hold(desc.digest)
        return self.store.has_blob(desc.digest)

    def _hold(self, digest: Digest) -> None:
        if self._held is not None:
            with self._disk_full(f"the lease of {digest}"):
                self.store.hold(self._held, digest)

    @contextlib.contextmanager
    def _disk_full(self, what: str) -> Iterator[None]:
        """A full disk (or quota) is one line naming the store and what was being written."""
        try:
            yield
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise StoreError(f"no space left on device under {self.store.path}: "
                             f"writing {what}") from None

    def open_at(self, desc: Descriptor, offset: int) -> BinaryIO:
        f = self.store.open_blob(desc.digest)
        if offset:
            f.seek(offset)
        return f

    def put_blob(self, desc: Descriptor, src: End, on_bytes: Callable[[int], None]) -> None:
        self._hold(desc.digest)
        with self._disk_full(f"blob {desc.digest} ({desc.size} bytes)"):
            self._put_blob(desc, src, on_bytes)

    def _put_blob(self, desc: Descriptor, src: End, on_bytes: Callable[[int], None]) -> None:
        # Three stages for a big blob received alone, each in its own thread and each releasing
        # the GIL for its work (socket I/O; hashlib and file I/O; zlib/ISA-L), handed the same
        # bytes objects (no copy): this thread receives, one hashes and writes, one inflates a
        # layer to count its content size (an image's SIZE, counted as the bytes pass rather
        # than re-read at tagging). One layer then keeps both cores busy. A big blob that
        # starts while another is being received does all three in its own worker: the
        # blobs in parallel already keep the cores busy, and two more threads a blob only
        # add GIL hand-offs, each a wait for the scheduler on a loaded machine (a 13-layer
        # pull at 3 concurrent: ~20% less wall time, half the system time).
        sizer = LayerSizer() if self.count_sizes and mt.is_layer(desc.media_type) else None
        big = int(desc.size >= PIPELINE_MIN)
        with self._lock:
            staged = bool(big) and not self._big_receiving
            self._big_receiving += big
        try:
            self._store_blob(desc, src, on_bytes, sizer, staged)
        finally:
            with self._lock:
                self._big_receiving -= big

    def _store_blob(self, desc: Descriptor, src: End, on_bytes: Callable[[int], None],
                    sizer: LayerSizer | None, staged: bool) -> None:
        with self.store.writer() as w:
            with contextlib.closing(src.open_at(desc, 0)) as stream, \
                    _pipelined(_Storing(w), staged) as storing, \
                    _pipelined(_Feeder(sizer) if sizer else None, staged and sizer is not None) as sizing:
                received = 0
                while data := stream.read(CHUNK):
                    received += len(data)
                    if received > desc.size:
                        raise DigestError(f"blob {desc.digest}: more than the expected {desc.size} bytes")
                    storing.write(data)
                    if sizing is not None:
                        sizing.write(data)
                    on_bytes(received)
            w.commit(desc.digest, desc.size)
        if sizer is not None and sizer.total is not None:
            self.store.remember_content_size(desc.digest, sizer.total)
        with self._lock:
            self._written.append(desc.digest)

    def put_manifest(self, doc: Fetched, *, root: bool) -> Descriptor:
        self._hold(doc.digest)
        what = f"manifest {doc.digest}"
        with self._disk_full(what):
            existed = self.store.has_blob(doc.digest)
            self.store.put_bytes(doc.raw, doc.digest)
            if not existed:
                with self._lock:
                    self._written.append(doc.digest)
            desc = Descriptor(doc.media_type, doc.digest, len(doc.raw))
            if root:
                with self._disk_full(f"index.json (tagging {self.reference or doc.digest})"):
                    self.store.add(desc, self.reference, distributed=self.distributed)
        return desc

    def mount_sources(self, desc: Descriptor) -> list[str]:
        return self.sources.get(desc.digest)

    def begin(self, progress: Progress) -> None:
        self._lease = contextlib.ExitStack()
        self._held = self._lease.enter_context(self.store.lease(listing=True))

    def end(self, ok: bool) -> None:
        # A failed copy leaves the store as it was: its lease ends dead, and the sweep that
        # follows takes the blobs it listed unless an image or a live lease references them
        # (another pull of the same image may have finished, or still be running, meanwhile).
        self._written.clear()
        if self._lease is not None:
            if not ok and self._held is not None:
                self._held.fail()
            self._held = None
            self._lease.close()
            self._lease = None


class LayoutEnd(StoreEnd):
    """An OCI image layout directory (``oci:DIR[:tag]``), tags as ``ref.name`` annotations
    holding just the tag, as skopeo and umoci write them."""

    count_sizes = False

    def __init__(self, path: Path, tag: str | None) -> None:
        super().__init__(Store(path), tag or "")
        self.path = path
        self.tag = tag
        self._destination = False
        self._created = False

    def describe(self) -> str:
        return f"oci:{self.path}" + (f":{self.tag}" if self.tag else "")

    def _entries(self) -> list[dict[str, Any]]:
        try:
            data = json.loads((self.path / "index.json").read_bytes())
        except FileNotFoundError:
            return []
        except ValueError as e:
            raise InvalidManifest(f"{self.path}/index.json: {e}") from None
        return list(data.get("manifests") or [])

    def resolve(self) -> Fetched:
        if not (self.path / "index.json").is_file():
            raise NotFound(f"not found: {self.path} is not an OCI layout (no index.json)")
        entries = self._entries()
        if self.tag:
            hits = [e for e in entries if (e.get("annotations") or {}).get(REF_NAME) == self.tag]
        else:
            hits = entries
        if len(hits) != 1:
            raise NotFound(f"not found: {self.describe()}: "
                           + ("no such tag" if not hits else "several images; name a tag"))
        d = Descriptor.from_dict(hits[0])
        return Fetched(self.store.read_blob(d.digest), d.media_type, d.digest)

    def put_manifest(self, doc: Fetched, *, root: bool) -> Descriptor:
        existed = self.store.has_blob(doc.digest)
        self.store.put_bytes(doc.raw, doc.digest)
        if not existed:
            self._written.append(doc.digest)
        desc = Descriptor(doc.media_type, doc.digest, len(doc.raw))
        if root:
            entry = desc.with_annotations(**{REF_NAME: self.tag}) if self.tag else desc
            with file_lock(self.path / ".lock"):
                kept = [e for e in self._entries()
                        if not (self.tag and (e.get("annotations") or {}).get(REF_NAME) == self.tag)
                        and not (not self.tag and e.get("digest") == str(doc.digest))]
                kept.append(entry.to_dict())
                write_atomic(self.path / "index.json", json.dumps(
                    {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": kept},
                    indent=2).encode())
        return desc

    def as_destination(self) -> None:
        self._destination = True

    def begin(self, progress: Progress) -> None:
        # No store lease: a layout has no gc. A source is only read; a destination is laid out.
        if self._destination:
            self._created = not self.path.exists()
            self.store.ingest_dir  # noqa: B018 - lays out oci-layout, index.json, blobs/
        elif not (self.path / "index.json").is_file():
            raise NotFound(f"not found: {self.path} is not an OCI layout (no index.json)")

    def end(self, ok: bool) -> None:
        written = list(self._written)
        super().end(ok)
        if not self._destination:
            return
        if not ok and self._created:
            shutil.rmtree(self.path, ignore_errors=True)  # a failed copy leaves no layout behind
            return
        if not ok:  # a layout has no leases (nor other writers): drop the blobs this copy added
            for d in written:
                with contextlib.suppress(FileNotFoundError):
                    self.store.blob_path(d).unlink()
        # The layout only needs oci-layout, index.json and blobs/: tidy our working files.
        with contextlib.suppress(OSError):
            (self.path / "ingest").rmdir()
        for name in (".lock", ".gc.lock"):
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()


class BlobSources:
    """Which repositories (``host/repo``) a blob was pulled from or pushed to, so that a push to
    another repository of the same registry can mount it instead of uploading (as Docker's
    distribution metadata does). Kept beside the store's blobs in ``blob-sources.json``."""

    LIMIT = 8

    def __init__(self, store: Store) -> None:
        self.path = store.path / "blob-sources.json"
        self._pending: dict[str, list[str]] = {}

    def _load(self) -> dict[str, list[str]]:
        try:
            data = json.loads(self.path.read_bytes())
            return data if isinstance(data, dict) else {}
        except (FileNotFoundError, ValueError):
            return {}

    def get(self, digest: Digest) -> list[str]:
        return list(self._load().get(str(digest), []))

    def note(self, digest: Digest, repo: str) -> None:
        self._pending.setdefault(str(digest), []).append(repo)

    def save(self) -> None:
        if not self._pending or not self.path.parent.is_dir():
            return
        with file_lock(self.path.parent / ".lock"):
            data = self._load()
            for d, repos in self._pending.items():
                old = [r for r in data.get(d, []) if r not in repos]
                data[d] = (repos + old)[: self.LIMIT]
            write_atomic(self.path, json.dumps(data, sort_keys=True).encode())
        self._pending.clear()


@frozen
class ClientOptions:
    """What a command sets on the registry client of a transfer: the credentials to use (else
    the stored ones for the registry) and the size of its connection pool (else the client's)."""

    credentials: Credentials | None = None
    pool_size: int | None = None


def remote_end(reference: Reference | str, *, tls_verify: bool = True,
               options: ClientOptions | None = None, **client_options: Any) -> RemoteEnd:
    """The registry repository *reference* names (text is parsed here, a ``Reference`` used as
    is); *options*, then any other ``RegistryClient`` keyword, for its client."""
    ref = reference if isinstance(reference, Reference) else Reference.parse(reference)
    if options is not None and options.credentials is not None:
        client_options.setdefault("credentials", options.credentials)
    if options is not None and options.pool_size is not None:
        client_options.setdefault("pool_size", options.pool_size)
    client = client_for(ref, tls_verify=tls_verify, **client_options)
    return RemoteEnd(Repository(client, ref.path), ref)


