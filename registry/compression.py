"""Layer compression codecs (none, gzip, zstd), streaming both ways, never a whole layer in memory.

gzip uses ISA-L (``isal``) when installed, which is several times faster than zlib; zstd runs
multi-threaded. Output is deterministic: gzip headers carry no name and mtime 0.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
from typing import Any, BinaryIO

from registry.digest import CHUNK, Digest

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
            return gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[return-value]
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(stream, read_size=CHUNK)
    if compression == "bzip2":
        import bz2

        return bz2.BZ2File(stream, "rb")  # type: ignore[return-value]
    if compression == "xz":
        import lzma

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
