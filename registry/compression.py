"""Layer compression codecs (none, gzip, zstd), streaming both ways, never a whole layer in memory;
what a layer holds once unpacked, counted from its tar headers as the bytes pass.

gzip uses ISA-L (``isal``) when installed, which is several times faster than zlib; zstd runs
multi-threaded. Output is deterministic: gzip headers carry no name and mtime 0.
"""

from __future__ import annotations

import bz2
import hashlib
import io
import lzma
import os
import queue
import threading
import zlib

from registry.digest import CHUNK, Digest

TYPE_CHECKING = False  # not ``typing``'s: a first run's unpack loads no ``typing`` (~5 ms)
if TYPE_CHECKING:
    from typing import Any, BinaryIO

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"


def detect(head: bytes) -> str:
    """``gzip``, ``zstd``, ``bzip2``, ``xz`` or ``none`` from a stream's first bytes."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if head.startswith(BZIP2_MAGIC):
        return "bzip2"
    if head.startswith(XZ_MAGIC):
        return "xz"
    return "none"


class _Peek(io.RawIOBase):
    """Puts back bytes read ahead so that detection does not consume the stream."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self._head = head
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._stream.read(len(b))
        b[: len(data)] = data
        return len(data)


def sniff(stream: BinaryIO) -> tuple[str, BinaryIO]:
    """Detect the compression of *stream*; returns it and a stream that still starts at 0."""
    head = stream.read(8)
    return detect(head), io.BufferedReader(_Peek(head, stream), CHUNK)


def open_decompressed(stream: BinaryIO, compression: str | None = None) -> BinaryIO:
    """A reader of the uncompressed bytes; ``compression=None`` detects it from the magic."""
    if compression is None:
        compression, stream = sniff(stream)
    if compression == "none":
        return stream
    if compression == "gzip":
        try:
            from isal import igzip

            return igzip.IGzipFile(fileobj=stream, mode="rb")  # type: ignore[no-untyped-call,return-value]
        except ImportError:
            import gzip

            return gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[return-value]
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(stream, read_size=CHUNK)
    if compression == "bzip2":
        return bz2.BZ2File(stream, "rb")  # type: ignore[return-value]
    if compression == "xz":
        return lzma.LZMAFile(stream, "rb")  # type: ignore[return-value]
    raise ValueError(f"unknown compression {compression!r}")


class _Counting:
    """A write-only sink that hashes and counts what passes through to *out*."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.hash.update(data)
        self.size += len(data)
        self.out.write(data)
        return len(data)

    def flush(self) -> None:
        self.out.flush()

    @property
    def digest(self) -> Digest:
        return Digest("sha256", self.hash.hexdigest())


class LayerEncoder:
    """Write uncompressed tar bytes in; compressed bytes go to *out*.

    Tracks both sides: ``diff_id`` (sha256 of the tar) and ``digest``/``size`` of what was
    written, so that a layer needs one pass. Call ``close()`` before reading them.
    """

    def __init__(self, out: BinaryIO, compression: str = "gzip", *, level: int | None = None) -> None:
        self.compression = compression
        self._compressed = _Counting(out)
        self._uncompressed_hash = hashlib.sha256()
        self.uncompressed_size = 0
        self._sink: Any
        self._zstd: object | None = None
        if compression == "none":
            self._sink = None
        elif compression == "gzip":
            try:
                from isal import igzip

                self._sink = igzip.IGzipFile(  # type: ignore[no-untyped-call]
                    fileobj=self._compressed, mode="wb", compresslevel=1 if level is None else min(level, 3), mtime=0
                )
            except ImportError:
                import gzip

                self._sink = gzip.GzipFile(
                    filename="", fileobj=self._compressed, mode="wb",
                    compresslevel=6 if level is None else level, mtime=0,
                )
        elif compression == "zstd":
            import zstandard

            cctx = zstandard.ZstdCompressor(level=3 if level is None else level,
                                            threads=max(os.cpu_count() or 1, 1))
            self._sink = cctx.stream_writer(self._compressed, closefd=False)  # type: ignore[arg-type]
        else:
            raise ValueError(f"unknown compression {compression!r}")
        self._closed = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._uncompressed_hash.update(data)
        self.uncompressed_size += len(data)
        if self._sink is None:
            self._compressed.write(data)
        else:
            self._sink.write(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._sink is not None:
            self._sink.close()
        self._compressed.flush()

    @property
    def diff_id(self) -> Digest:
        return Digest("sha256", self._uncompressed_hash.hexdigest())

    @property
    def digest(self) -> Digest:
        assert self._closed, "close() the encoder first"
        return self._compressed.digest

    @property
    def size(self) -> int:
        assert self._closed, "close() the encoder first"
        return self._compressed.size


class ContentSizer:
    """Passes a tar stream on to *sink* and counts on the way what ``Store.content_size``
    counts (regular files' bytes, symlink targets), reading only the headers: a PAX record's
    ``size``/``linkpath`` (or a GNU long link) applies to the entry after it, as in tarfile."""

    def __init__(self, sink: Any = None) -> None:
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
        if self.sink is not None:
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
            if self.known:  # past the end-of-archive block: padding only
                return
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


class LayerSizer:
    """Fed a layer blob's bytes as they arrive (a pull), counts what ``ContentSizer`` counts in
    the tar inside, decompressing on the way: the store then never re-reads the blob for an
    image's SIZE. gzip (ISA-L when installed; several members too) and uncompressed layers;
    ``total`` is None for anything else (zstd, whose one call could inflate without bound) or
    a blob that is not a tar."""

    #: most bytes one ``decompress`` call may return (a highly compressed chunk stays bounded)
    MAX_OUT = 8 << 20

    def __init__(self) -> None:
        self.sizer = ContentSizer()
        self._inflate: Any = None
        self._new: Any = None
        self._kind = ""
        self._head = b""

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self.sizer.known is not None or self._kind == "other":
            return  # counted (the rest is padding) or given up
        try:
            self._feed(bytes(data))
        except Exception:  # noqa: BLE001 - a codec's error (zlib.error, ...): not a readable layer,
            self._kind = "other"  # whose size ``Store.content_size`` reads later as it can

    def _feed(self, data: bytes) -> None:
        if not self._kind:
            self._head += data
            if len(self._head) < len(GZIP_MAGIC) + 2:
                return
            data, self._head = self._head, b""
            kind = detect(data)
            if kind == "gzip":
                codec: Any = zlib
                try:
                    from isal import isal_zlib as codec
                except ImportError:  # ISA-L not installed: zlib inflates the same bytes
                    pass
                self._new = lambda: codec.decompressobj(wbits=31)
                self._inflate = self._new()
            self._kind = kind if kind in ("gzip", "none") else "other"
        if self._kind == "none":
            self.sizer.write(data)
            return
        while data and self._kind == "gzip" and self.sizer.known is None:
            self.sizer.write(self._inflate.decompress(data, self.MAX_OUT))
            data = self._inflate.unconsumed_tail
            if self._inflate.eof:  # a member ended: another may follow
                data = self._inflate.unused_data + data
                self._inflate = self._new()
                if data[:1] == b"\0":  # padding after the last member
                    return

    @property
    def total(self) -> int | None:
        """The content size, once the tar's end was seen (None if it was not)."""
        return self.sizer.total if self.sizer.known else None


class Pipelined:
    """A write sink that hands 1 MiB batches to a thread running *sink*: the tar of a diff is
    made (files read, headers packed) while the previous batch is hashed and compressed, or a
    blob's next chunk is received while the last one is hashed, written and inflated (hashlib,
    zlib/ISA-L, file and socket I/O release the GIL), so a big layer uses both cores."""

    BATCH = 1 << 20

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.q: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self.buf = bytearray()
        self.error: BaseException | None = None
        # started with the first full batch: a small stream (most of a build's layers) is
        # written by close(), in the writer's thread, without one
        self.thread: threading.Thread | None = None
        self.closed = False

    def _put(self, chunk: bytes) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()
        self.q.put(chunk)

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
        if not self.buf and len(data) >= self.BATCH and isinstance(data, bytes):
            self._put(data)  # a whole batch already: passed on as it is, not copied
            return len(data)
        self.buf += data
        if len(self.buf) >= self.BATCH:
            self._put(bytes(self.buf))
            self.buf.clear()
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.thread is None:  # less than a batch in all: no thread was needed
            if self.buf:
                self.sink.write(bytes(self.buf))
                self.buf.clear()
            return
        if self.buf:
            self.q.put(bytes(self.buf))
            self.buf.clear()
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
