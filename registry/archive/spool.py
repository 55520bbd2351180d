"""The ingest spool shared by load, save and import: a file received into ``<store>/ingest``,
hashed as written and published as a blob by rename; plus stream copying and diff_id hashing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from registry import compression
from registry.digest import CHUNK, Digest
from registry.errors import ArchiveError
from registry.leases import ingest_file
from registry.store import Store


class Spool:
    """A file being received into ``<store>/ingest``; hashed as written, published by rename.

    Until ``publish`` it is an ingest temp file, which no reader takes for a blob (a ``sweep``
    takes those of dead loads), so a load killed half-way leaves nothing visible.
    """

    def __init__(self, store: Store, algorithm: str = "sha256") -> None:
        # locked while we live, so a sweep tells it from a dead load's leftover
        fd, self.path = ingest_file(store.ingest_dir, "blob-load-")
        self._file: BinaryIO | None = os.fdopen(fd, "wb")
        self._hash = hashlib.new(algorithm)
        self.algorithm = algorithm
        self.size = 0
        self.head = b""

    def write(self, data: bytes) -> None:
        assert self._file is not None
        if len(self.head) < 16:
            self.head += data[: 16 - len(self.head)]
        self._hash.update(data)
        self.size += len(data)
        self._file.write(data)

    def finish(self) -> Digest:
        """Flush and fsync; the digest of what was written. The file stays open, and so
        locked, until ``publish`` or ``discard``: an unlocked ingest file is a dead load's to
        a concurrent sweep."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
        return Digest(self.algorithm, self._hash.hexdigest())

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    @property
    def digest(self) -> Digest:
        return Digest(self.algorithm, self._hash.hexdigest())

    def publish(self, store: Store) -> Digest:
        digest = self.finish()
        target = store.blob_path(digest)
        if target.is_file():
            self.discard()
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(self.path, 0o644)
            os.rename(self.path, target)
            self._close()
        return digest

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._close()


def copy_stream(src: BinaryIO, write: Callable[[bytes], Any], size: int | None = None) -> int:
    done = 0
    while size is None or done < size:
        chunk = src.read(CHUNK if size is None else min(CHUNK, size - done))
        if not chunk:
            break
        write(chunk)
        done += len(chunk)
    return done


def diff_id_of(path: Path, head: bytes, what: str) -> Digest:
    """sha256 of the uncompressed content of a (possibly compressed) layer file."""
    kind = compression.detect(head)
    with open(path, "rb") as f:
        if kind == "none":
            return Digest.of_stream(f)[0]
        try:
            return Digest.of_stream(compression.open_decompressed(f, kind))[0]
        except (OSError, EOFError, ValueError, RuntimeError) as e:  # zlib/zstd report as these
            raise ArchiveError(f"{what}: corrupt {kind} layer: {e}") from None
        except Exception as e:  # zstandard.ZstdError derives from Exception only
            raise ArchiveError(f"{what}: corrupt {kind} layer: {e}") from None
