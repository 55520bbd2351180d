"""Archive ends of a copy: ``oci-archive:FILE[:tag]`` and ``docker-archive:FILE[:name:tag]``.

An archive is unpacked into (or packed from) a temporary OCI layout or store, which ``copy``
then treats as any other end; ``registry.archive`` reads and writes docker-archives.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from registry.client import Fetched
from registry.errors import ArchiveError, NotFound
from registry.model import Descriptor
from registry.reference import Reference
from registry.store import Store
from registry.transfer.ends import BaseEnd, End, LayoutEnd, StoreEnd
from registry.transfer.events import Progress

OCI_ARCHIVE = "oci-archive"
DOCKER_ARCHIVE = "docker-archive"


class ArchiveEnd(BaseEnd):
    """A tarball as a source (unpacked when the copy begins) or a destination (written, whole
    and atomically, only when the copy succeeded)."""

    def __init__(self, kind: str, path: Path, name: str | None, role: str) -> None:
        self.kind = kind
        self.path = path
        self.name = name
        self.role = role
        self._tmp: Path | None = None
        self._inner: StoreEnd | None = None
        self._root: Descriptor | None = None

    def describe(self) -> str:
        return f"{self.kind}:{self.path}" + (f":{self.name}" if self.name else "")

    def as_destination(self) -> None:
        self.role = "destination"

    @property
    def inner(self) -> StoreEnd:
        if self._inner is None:
            raise ArchiveError(f"{self.describe()}: used before the copy began")
        return self._inner

    # -- lifecycle -------------------------------------------------------------------------------
    def begin(self, progress: Progress) -> None:
        if self.role == "destination" and not self.path.parent.is_dir():
            raise ArchiveError(f"{self.describe()}: directory {self.path.parent} does not exist")
        if self.role == "source" and not self.path.is_file():
            raise NotFound(f"not found: {self.path}: no such archive")
        # A destination is staged beside the file it becomes (one filesystem, for the rename).
        parent = self.path.parent if self.role == "destination" else None
        self._tmp = Path(tempfile.mkdtemp(prefix=".pybuild-archive-", dir=parent))
        try:
            self._inner = self._open_source() if self.role == "source" else self._open_destination()
            if self.role == "destination":
                self._inner.as_destination()
            self._inner.begin(progress)
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise

    def _open_source(self) -> StoreEnd:
        assert self._tmp is not None
        if self.kind == OCI_ARCHIVE:
            layout = self._tmp / "layout"
            try:
                with tarfile.open(self.path) as tf:
                    tf.extractall(layout, filter="data")
            except (tarfile.TarError, OSError) as e:
                raise ArchiveError(f"{self.describe()}: not a readable tar archive: {e}") from None
            return LayoutEnd(layout, self.name)
        from registry import archive

        store = Store(self._tmp / "store")
        with open(self.path, "rb") as f:
            loaded = archive.load(store, f, source=str(self.path))
        if self.name:
            want = Reference.parse(self.name)
            hits = [entry for entry in loaded if entry.reference == want]
        else:
            hits = loaded
        if len({h.descriptor.digest for h in hits}) != 1:
            raise NotFound(f"not found: {self.describe()}: "
                           + ("no such image in the archive" if not hits
                              else "several images; name one (docker-archive:FILE:NAME:TAG)"))
        hit = hits[0]
        return StoreEnd(store, str(hit.reference) if hit.reference else str(hit.image_id))

    def _open_destination(self) -> StoreEnd:
        assert self._tmp is not None
        if self.kind == OCI_ARCHIVE:
            return LayoutEnd(self._tmp / "layout", self.name)
        ref = Reference.parse(self.name) if self.name else None
        return StoreEnd(Store(self._tmp / "store"), self.name or "", ref)

    def end(self, ok: bool) -> None:
        try:
            if self._inner is not None:
                self._inner.end(ok)
            if ok and self.role == "destination":
                self._write()
        finally:
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None

    def _write(self) -> None:
        assert self._tmp is not None and self._root is not None
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "wb") as out:
                if self.kind == OCI_ARCHIVE:
                    _tar_directory(self._tmp / "layout", out)
                else:
                    from registry import archive

                    store = self.inner.store
                    name = self.name or str(self._root.digest)
                    archive.save(store, [name], out, format=archive.DOCKER_ARCHIVE)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)
            os.rename(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    # -- the End calls, answered by the unpacked layout or store ---------------------------------
    def resolve(self) -> Fetched:
        return self.inner.resolve()

    def get_manifest(self, desc: Descriptor) -> Fetched:
        return self.inner.get_manifest(desc)

    def has_blob(self, desc: Descriptor) -> bool:
        return self.inner.has_blob(desc)

    def open_at(self, desc: Descriptor, offset: int) -> BinaryIO:
        return self.inner.open_at(desc, offset)

    def put_blob(self, desc: Descriptor, src: End, on_bytes: Callable[[int], None]) -> None:
        self.inner.put_blob(desc, src, on_bytes)

    def put_manifest(self, doc: Fetched, *, root: bool) -> Descriptor:
        desc = self.inner.put_manifest(doc, root=root)
        if root:
            self._root = desc
        return desc


def _tar_directory(root: Path, out: BinaryIO) -> None:
    """An OCI layout directory as a deterministic tar: sorted names, mtime 0, root-owned."""

    def clean(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        ti.mtime = 0
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        return ti

    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        for path in sorted(root.rglob("*"), key=lambda p: p.relative_to(root).as_posix()):
            tf.add(path, arcname=path.relative_to(root).as_posix(), recursive=False, filter=clean)


def parse_archive(text: str, role: str) -> ArchiveEnd | None:
    """``oci-archive:FILE[:tag]`` / ``docker-archive:FILE[:name[:tag]]``, else None."""
    for kind in (OCI_ARCHIVE, DOCKER_ARCHIVE):
        if text.startswith(kind + ":"):
            rest = text[len(kind) + 1:]
            path, _, name = rest.partition(":")
            if not path:
                raise ArchiveError(f"invalid {'destination' if role == 'destination' else 'source'} "
                                   f"{text!r}: {kind}:FILE needs a file")
            if name and kind == DOCKER_ARCHIVE:
                Reference.parse(name)  # validated once, at the edge
            return ArchiveEnd(kind, Path(path), name or None, role)
    return None
