"""A forward-only tar reader for archives arriving on a pipe: headers are decoded by ``tarfile``,
member data is read straight from the stream (``tarfile``'s stream mode copies each block twice).

Handles ustar, GNU long names/links and PAX (per-file and global) headers; enough for image
archives. Raises ``tarfile.TarError``/``EOFError`` on a damaged or cut stream.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from registry.digest import CHUNK

_BLOCK = tarfile.BLOCKSIZE
_PAX = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)


def _parse_pax(data: bytes) -> dict[str, str]:
    """PAX records ``"<len> <key>=<value>\\n"``."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos:pos + 1] != b"\0":
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise tarfile.ReadError("invalid pax header") from None
        if space < 0 or length <= 0 or pos + length > len(data):
            raise tarfile.ReadError("invalid pax header")
        key, eq, value = data[space + 1:pos + length - 1].partition(b"=")
        if not eq:
            raise tarfile.ReadError("invalid pax header")
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


class TarStream:
    """``for info in TarStream(f): ...`` yields each member's ``TarInfo``; read its data (if
    wanted) with ``copy_data`` before asking for the next one; the rest is skipped."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._left = 0  # data bytes of the current member not yet consumed
        self._pad = 0

    def _exact(self, n: int) -> bytes:
        parts = []
        got = 0
        while got < n:
            chunk = self._stream.read(n - got)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def _skip(self, n: int) -> None:
        while n > 0:
            chunk = self._stream.read(min(n, CHUNK))
            if not chunk:
                raise tarfile.ReadError("unexpected end of data")
            n -= len(chunk)

    def _payload(self, size: int) -> bytes:
        data = self._exact(size)
        if len(data) != size:
            raise tarfile.ReadError("unexpected end of data")
        self._skip(-size % _BLOCK)
        return data

    def copy_data(self, write: Callable[[bytes], Any]) -> int:
        """Pass the current member's data to *write* in chunks; returns the byte count."""
        done = 0
        while self._left:
            chunk = self._stream.read(min(self._left, CHUNK))
            if not chunk:
                raise tarfile.ReadError("unexpected end of data")
            write(chunk)
            self._left -= len(chunk)
            done += len(chunk)
        return done

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        pax: dict[str, str] = {}
        global_pax: dict[str, str] = {}
        long_name: str | None = None
        long_link: str | None = None
        first = True
        while True:
            self._skip(self._left + self._pad)
            self._left = self._pad = 0
            block = self._exact(_BLOCK)
            if not block:
                if first:
                    raise tarfile.ReadError("empty file")
                return  # no end-of-archive blocks: tolerated, as tar(1) and tarfile do
            first = False
            if len(block) < _BLOCK:
                raise tarfile.ReadError("unexpected end of data")
            if block.count(0) == _BLOCK:
                return
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
            if info.type in _PAX:
                (global_pax if info.type == tarfile.XGLTYPE else pax).update(
                    _parse_pax(self._payload(info.size)))
                continue
            if info.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
                text = self._payload(info.size).rstrip(b"\0").decode("utf-8", "surrogateescape")
                if info.type == tarfile.GNUTYPE_LONGNAME:
                    long_name = text
                else:
                    long_link = text
                continue
            fields = {**global_pax, **pax}
            if "path" in fields or long_name is not None:
                info.name = fields.get("path", long_name or info.name)
            if "linkpath" in fields or long_link is not None:
                info.linkname = fields.get("linkpath", long_link or info.linkname)
            if "size" in fields:
                try:
                    info.size = int(fields["size"])
                except ValueError:
                    raise tarfile.ReadError("invalid pax size") from None
            pax, long_name, long_link = {}, None, None
            has_data = info.type not in (tarfile.LNKTYPE, tarfile.SYMTYPE, tarfile.DIRTYPE,
                                         tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE)
            self._left = info.size if has_data else 0
            self._pad = -self._left % _BLOCK
            yield info
