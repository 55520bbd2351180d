"""The one way a layer reaches the store: a tar written into a sink, compressed and hashed on
the way (diff_id and blob digest in one pass), committed as one blob.

Used for a step's diff, a snapshot made into a blob for an image, and a layer re-encoded in
another compression.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import IO, Any

from registry import mediatypes as mt
from registry.compression import LayerEncoder
from registry.digest import Digest
from registry.model import Descriptor
from registry.store import Store


def commit_layer(store: Store, write: Callable[[IO[bytes]], bool | None],
                 compression: str) -> tuple[Descriptor, Digest] | None:
    """``write(sink)`` a layer tar; store it compressed with *compression*. Returns the blob's
    descriptor and the tar's diff_id, or None (nothing stored) when *write* returns False."""
    with store.lease(), store.writer() as w:
        enc = LayerEncoder(w, compression)  # type: ignore[arg-type]
        sizer = _ContentSizer(enc)
        pipe = _Pipelined(sizer)
        try:
            wrote = write(pipe)  # type: ignore[arg-type]
        finally:
            pipe.close()
        enc.close()
        if wrote is False:
            return None
        digest = w.commit()
        if sizer.known:  # an image's SIZE then never re-reads the blob
            store.remember_content_size(digest, sizer.total)
        return Descriptor(mt.layer_media_type(compression), digest, w.size), enc.diff_id


def recompress(store: Store, desc: Descriptor, compression: str) -> tuple[Descriptor, Digest]:
    """*desc*'s layer re-encoded with *compression*; returns the new descriptor and its diff_id."""
    from registry.compression import open_decompressed

    def copy(sink: IO[bytes]) -> None:
        with store.open_blob(desc.digest) as src:
            reader = open_decompressed(src)
            while chunk := reader.read(1 << 20):
                sink.write(chunk)

    out = commit_layer(store, copy, compression)
    assert out is not None
    return out


class _ContentSizer:
    """Passes a tar stream on to *sink* and counts on the way what ``Store.content_size``
    counts (regular files' bytes, symlink targets), reading only the headers: a PAX record's
    ``size``/``linkpath`` (or a GNU long link) applies to the entry after it, as in tarfile."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.total = 0
        self.known: bool | None = None  # True once the end-of-archive block is read
        self._skip = 0  # data bytes of the current entry still to pass
        self._head = b""  # a header block split across writes
        self._pax: bytes | None = None  # collecting a PAX record's data (its size in _want)
        self._want = 0
        self._kind = b""
        self._next: dict[bytes, bytes] = {}

    def write(self, data: bytes) -> int:
        self.sink.write(data)
        if self.known is not False:
            try:
                self._scan(data)
            except (ValueError, IndexError):  # not a tar we can read: content_size will say
                self.known = False
        return len(data)

    def _scan(self, data: bytes) -> None:
        view = memoryview(data)
        pos, end = 0, len(data)
        while pos < end:
            if self._pax is not None:
                take = view[pos:pos + self._want - len(self._pax)]
                self._pax += take
                pos += len(take)
                if len(self._pax) == self._want:
                    if self._kind == b"x":
                        self._next.update(_pax_fields(self._pax))
                    elif self._kind == b"K":  # GNU long link name
                        self._next[b"linkpath"] = self._pax.rstrip(b"\0")
                    self._pax = None
                    self._skip = -self._want % 512
                continue
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            take = view[pos:pos + 512 - len(self._head)]
            self._head += take
            pos += len(take)
            if len(self._head) == 512:
                self._header(self._head)
                self._head = b""

    def _header(self, h: bytes) -> None:
        if h == bytes(512):
            self.known = True
            return
        kind = h[156:157]
        raw = h[124:136]
        size = int.from_bytes(raw[1:], "big") if raw[0] & 0x80 else int(raw.strip(b"\0 ") or b"0", 8)
        if kind in (b"x", b"K", b"L"):  # a PAX record or GNU long name: read for the next entry
            self._pax, self._want, self._kind = b"", size, kind
            return
        fields, self._next = self._next, {}
        size = int(fields.get(b"size", size))
        if kind in (b"0", b"\0", b"7"):
            self.total += size
            self._skip = size + -size % 512
        elif kind == b"2":
            self.total += len(fields.get(b"linkpath", h[157:257].rstrip(b"\0")))
        elif kind not in (b"1", b"3", b"4", b"5", b"6"):
            self._skip = size + -size % 512


def _pax_fields(data: bytes) -> dict[bytes, bytes]:
    """``size`` and ``linkpath`` of a PAX record block (``"<len> key=value\n"`` records)."""
    out: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data) and data[pos:pos + 1] != b"\0":
        length = int(data[pos:data.index(b" ", pos)])
        key, _, value = data[data.index(b" ", pos) + 1:pos + length - 1].partition(b"=")
        if key in (b"size", b"linkpath"):
            out[key] = value
        pos += length
    return out


class _Pipelined:
    """A write sink that hands 1 MiB batches to a thread running *sink*: the tar of a diff is
    made (files read, headers packed) while the previous batch is hashed and compressed
    (hashlib and ISA-L release the GIL), so a big layer uses both cores."""

    BATCH = 1 << 20

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.q: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self.buf = bytearray()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.closed = False

    def _run(self) -> None:
        while (chunk := self.q.get()) is not None:
            if self.error is None:
                try:
                    self.sink.write(chunk)
                except BaseException as e:  # noqa: BLE001 - re-raised in the writer's thread
                    self.error = e

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.error is not None:
            raise self.error
        self.buf += data
        if len(self.buf) >= self.BATCH:
            self.q.put(bytes(self.buf))
            self.buf.clear()
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.buf:
            self.q.put(bytes(self.buf))
            self.buf.clear()
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
