"""Applying layers: a tar stream (``apply_layer``) or an overlay-format dir (``apply_dir``) into a
directory, in overlay format or merged, never writing outside it.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from builder.base.errors import LayerError
from builder.core.layers.common import (
    COPY_CHUNK,
    DIR_FLAGS,
    OPAQUE_MARKER,
    OVERLAY_OPAQUE_XATTR,
    WHITEOUT_PREFIX,
    XATTR_PAX,
    allowed_xattr,
    clean_name,
    decompressed,
    get_xattr,
    is_whiteout_stat,
    read_xattrs,
)
from registry.digest import WRITE_MAX

if TYPE_CHECKING:
    import tarfile

# -- the safe writer ---------------------------------------------------------------------------------
@dataclass
class _Entry:
    comps: tuple[str, ...]
    kind: str  # file dir symlink hardlink chr blk fifo
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: float = 0.0
    linkname: str = ""
    link_comps: tuple[str, ...] = ()
    rdev: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)


# How a layer is kept inside its root: every write goes through directory fds opened with
# O_NOFOLLOW. ``..`` above the root and hardlinks to paths outside the layer are refused,
# absolute names are taken relative to the root, and a symlink met where a directory is needed
# is replaced by a directory (what overlayfs would show), never followed. Device nodes are
# created (we run as root); sandboxes mount their roots ``nodev`` so that they stay inert.
# Diffs: sorted, PAX, numeric owners, xattrs (``security.capability``…), hardlinks, overlay
# whiteouts → ``.wh.``, opaque dirs → ``.wh..wh..opq``, mtimes clamped to SOURCE_DATE_EPOCH.
class _Tree:
    """A destination tree written only through directory fds (never following symlinks).

    ``overlay=True`` keeps whiteouts as overlayfs markers; ``overlay=False`` applies them.
    """

    def __init__(self, root: Path, *, overlay: bool) -> None:
        self.overlay = overlay
        self.root_fd = os.open(root, DIR_FLAGS)
        self._dirs: dict[tuple[str, ...], int] = {(): self.root_fd}
        self.created: set[tuple[str, ...]] = set()
        self.dir_mtimes: dict[tuple[str, ...], float] = {}

    def close(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()

    # directory fds ------------------------------------------------------------------------------
    def dir_fd(self, comps: tuple[str, ...], *, create: bool = True) -> int:
        """An fd of the directory *comps*, creating (or replacing non-directories) on the way."""
        fd = self._dirs.get(comps)
        if fd is not None:
            return fd
        parent = self.dir_fd(comps[:-1], create=create)
        name = comps[-1]
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise LayerError(f"{'/'.join(comps)} does not exist in the layer") from None
            os.mkdir(name, 0o755, dir_fd=parent)
            self.created.add(comps)
            fd = os.open(name, DIR_FLAGS, dir_fd=parent)
        except OSError as e:
            if e.errno not in (errno.ENOTDIR, errno.ELOOP) or not create:
                raise LayerError(f"{'/'.join(comps)} is not a directory in the layer") from None
            # A symlink or file where a directory is needed: overlayfs would show the directory
            # of the upper layer, so replace it rather than follow it.
            os.unlink(name, dir_fd=parent)
            os.mkdir(name, 0o755, dir_fd=parent)
            self.created.add(comps)
            fd = os.open(name, DIR_FLAGS, dir_fd=parent)
        self._dirs[comps] = fd
        return fd

    def _forget(self, comps: tuple[str, ...]) -> None:
        n = len(comps)
        for key in [k for k in self._dirs if len(k) >= n and k[:n] == comps and k]:
            os.close(self._dirs.pop(key))

    def _lstat(self, parent: int, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def _remove(self, parent: int, name: str, comps: tuple[str, ...], st: os.stat_result) -> None:
        self._forget(comps)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=parent)
        else:
            os.unlink(name, dir_fd=parent)

    # layer semantics ----------------------------------------------------------------------------
    def whiteout(self, comps: tuple[str, ...]) -> None:
        parent = self.dir_fd(comps[:-1])
        name = comps[-1]
        st = self._lstat(parent, name)
        if st is not None:
            self._remove(parent, name, comps, st)
        if self.overlay:
            os.mknod(name, stat.S_IFCHR | 0o000, 0, dir_fd=parent)

    def opaque(self, comps: tuple[str, ...]) -> None:
        fd = self.dir_fd(comps)
        if self.overlay:
            os.setxattr(fd, OVERLAY_OPAQUE_XATTR, b"y")
            return
        for name in os.listdir(fd):
            child = (*comps, name)
            if child in self.created:
                continue
            st = self._lstat(fd, name)
            if st is not None:
                self._remove(fd, name, child, st)

    def put(self, e: _Entry, data: IO[bytes] | None = None, size: int = 0) -> None:
        if not e.comps:
            if e.kind == "dir":  # the root itself: take its metadata
                self._meta_fd(self.root_fd, e)
                self.dir_mtimes[()] = e.mtime
            return
        parent = self.dir_fd(e.comps[:-1])
        name = e.comps[-1]
        st = self._lstat(parent, name)
        if e.kind == "dir":
            if st is not None and not stat.S_ISDIR(st.st_mode):
                self._remove(parent, name, e.comps, st)
                st = None
            if st is None:
                os.mkdir(name, 0o700, dir_fd=parent)
            self.created.add(e.comps)
            self._meta_fd(self.dir_fd(e.comps), e)
            self.dir_mtimes[e.comps] = e.mtime
            return
        if st is not None:
            self._remove(parent, name, e.comps, st)
        self.created.add(e.comps)
        if e.kind == "file":
            fd = os.open(
                name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                dir_fd=parent,
            )
            try:
                if data is not None:
                    _copy_to_fd(data, fd, size)
                self._meta_fd(fd, e)
                os.utime(fd, (e.mtime, e.mtime))
            finally:
                os.close(fd)
            return
        if e.kind == "hardlink":
            src_parent = self.dir_fd(e.link_comps[:-1], create=False)
            src = e.link_comps[-1]
            sst = self._lstat(src_parent, src)
            if sst is None or stat.S_ISDIR(sst.st_mode):
                raise LayerError(
                    f"hardlink {'/'.join(e.comps)} → {e.linkname}: target is not a file of this layer"
                )
            os.link(src, name, src_dir_fd=src_parent, dst_dir_fd=parent, follow_symlinks=False)
            return
        if e.kind == "symlink":
            os.symlink(e.linkname, name, dir_fd=parent)
        elif e.kind in ("chr", "blk"):
            if _ROOTLESS:  # a user namespace makes no device nodes: skipped, as Docker's rootless
                return
            kind = stat.S_IFCHR if e.kind == "chr" else stat.S_IFBLK
            os.mknod(name, kind | 0o600, e.rdev, dir_fd=parent)
        elif e.kind == "fifo":
            os.mkfifo(name, 0o600, dir_fd=parent)
        else:
            raise LayerError(f"{'/'.join(e.comps)}: unsupported entry type {e.kind}")
        _owned(e, lambda: os.chown(name, e.uid, e.gid, dir_fd=parent, follow_symlinks=False))
        if e.kind != "symlink":
            os.chmod(name, e.mode, dir_fd=parent, follow_symlinks=False)
        path = f"/proc/self/fd/{parent}/{name}"
        for k, v in e.xattrs.items():
            _set_xattr(path, k, v, follow=False)
        os.utime(name, (e.mtime, e.mtime), dir_fd=parent, follow_symlinks=False)

    def _meta_fd(self, fd: int, e: _Entry) -> None:
        _owned(e, lambda: os.fchown(fd, e.uid, e.gid))
        os.fchmod(fd, e.mode)  # after chown: chown clears set-id bits
        for k, v in e.xattrs.items():
            _set_xattr(fd, k, v)

    def finish(self) -> None:
        """Set directory mtimes last: creating their entries changed them."""
        for comps, mtime in sorted(self.dir_mtimes.items(), key=lambda kv: -len(kv[0])):
            try:
                fd = self.dir_fd(comps, create=False)
            except LayerError:
                continue
            os.utime(fd, (mtime, mtime))
        self.dir_mtimes.clear()


#: in the user namespace of ``builder.base.rootless`` (joined before this module is imported)
_ROOTLESS = "_PYBUILD_ROOTLESS" in os.environ


def _owned(e: _Entry, chown: Callable[[], None]) -> None:
    """*chown*, with the one error a user namespace adds said plainly: an owner it cannot map."""
    try:
        chown()
    except OSError as err:
        if not (_ROOTLESS and err.errno == errno.EINVAL):
            raise
        raise LayerError(f"{'/'.join(e.comps)}: owner {e.uid}:{e.gid} is outside this user's "
                         "ID ranges (rootless: add ranges to /etc/subuid and /etc/subgid)") from None


def _set_xattr(target: int | str, key: str, value: bytes, *, follow: bool = True) -> None:
    try:
        os.setxattr(target, key, value, follow_symlinks=follow)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return  # this filesystem keeps no such xattrs
        # LSM labels (security.selinux…) may be refused here: not content we must keep.
        if e.errno in (errno.EPERM, errno.EACCES) and key.startswith("security.") and key != "security.capability":
            return
        raise


def _copy_to_fd(src: IO[bytes], fd: int, size: int) -> None:
    left = size
    while left > 0:
        chunk = src.read(min(COPY_CHUNK, left))
        if not chunk:
            raise LayerError("layer entry is cut short")
        view = memoryview(chunk)
        while view:
            n = os.write(fd, view[:WRITE_MAX])
            view = view[n:]
        left -= len(chunk)


class _HashingReader(io.RawIOBase):
    """Reads *src* and hashes every byte that passes (the diff_id of an uncompressed layer)."""

    def __init__(self, src: IO[bytes]) -> None:
        self._src = src
        self.hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._src.read(len(b))
        n = len(data)
        b[:n] = data
        self.hash.update(data)
        return n

    def drain_hashing(self) -> None:
        while True:
            data = self._src.read(COPY_CHUNK)
            if not data:
                return
            self.hash.update(data)


# -- applying tars -----------------------------------------------------------------------------------
def _member_entry(m: tarfile.TarInfo) -> _Entry | None:
    comps = clean_name(m.name)
    xattrs = {
        k[len(XATTR_PAX):]: v.encode("utf-8", "surrogateescape")
        for k, v in sorted(m.pax_headers.items())
        if k.startswith(XATTR_PAX) and allowed_xattr(k[len(XATTR_PAX):])
    }
    e = _Entry(comps=comps, kind="", mode=stat.S_IMODE(m.mode), uid=m.uid, gid=m.gid,
               mtime=float(m.mtime), xattrs=xattrs)
    if m.isreg():
        e.kind = "file"
    elif m.isdir():
        e.kind = "dir"
    elif m.issym():
        e.kind, e.linkname = "symlink", m.linkname
    elif m.islnk():
        e.kind, e.linkname = "hardlink", m.linkname
        e.link_comps = clean_name(m.linkname)
        if not e.link_comps:
            raise LayerError(f"hardlink {m.name!r} points at the layer root")
    elif m.ischr() or m.isblk():
        e.kind = "chr" if m.type == tarfile.CHRTYPE else "blk"
        e.rdev = os.makedev(m.devmajor, m.devminor)
    elif m.isfifo():
        e.kind = "fifo"
    else:
        return None  # sockets, GNU volume headers…: nothing to create
    return e


def apply_layer(stream: IO[bytes], dest: Path, *, overlay_format: bool = True) -> str:
    """Unpack the layer tar *stream* into *dest*; returns its diff_id (``sha256:`` of the tar).

    ``overlay_format=True``: *dest* is (normally) an empty directory that becomes an overlayfs
    lowerdir. ``False``: the layer is merged onto the tree already in *dest*.
    Raises ``LayerError`` for an entry reaching outside *dest* or a malformed tar; *dest* may
    then hold part of the layer (callers unpack into a temporary directory).
    """
    dest.mkdir(parents=True, exist_ok=True)
    reader = _HashingReader(decompressed(stream))
    tree = _Tree(dest, overlay=overlay_format)
    try:
        with tarfile.open(fileobj=io.BufferedReader(reader, 1 << 16), mode="r|") as tf:
            for m in tf:
                _apply_member(tree, tf, m)
        tree.finish()
        reader.drain_hashing()
    except tarfile.TarError as e:
        raise LayerError(f"not a valid layer tar: {e}") from None
    except EOFError:
        raise LayerError("layer tar is cut short") from None
    finally:
        tree.close()
    return "sha256:" + reader.hash.hexdigest()


def _apply_member(tree: _Tree, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
    comps = clean_name(m.name)
    if comps and comps[-1].startswith(WHITEOUT_PREFIX):
        name = comps[-1]
        if name == OPAQUE_MARKER:
            tree.opaque(comps[:-1])
        elif name.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            pass  # aufs metadata (.wh..wh.plnk, …): not content
        else:
            target = name[len(WHITEOUT_PREFIX):]
            if target in ("", ".", ".."):
                raise LayerError(f"bad whiteout entry {m.name!r}")
            tree.whiteout((*comps[:-1], target))
        return
    e = _member_entry(m)
    if e is None:
        return
    if e.kind == "file":
        data = tf.extractfile(m)
        tree.put(e, data, m.size)
    else:
        tree.put(e)


# -- applying an overlay-format directory onto a plain tree (copy fallback) --------------------------
def apply_dir(layer_dir: Path, dest: Path) -> None:
    """Merge the overlay-format *layer_dir* (as ``apply_layer`` makes them) onto the tree *dest*."""
    dest.mkdir(parents=True, exist_ok=True)
    tree = _Tree(dest, overlay=False)
    inodes: dict[tuple[int, int], tuple[str, ...]] = {}
    try:
        src_fd = os.open(layer_dir, DIR_FLAGS)
        try:
            _apply_dir_walk(tree, src_fd, (), inodes)
        finally:
            os.close(src_fd)
        tree.finish()
    finally:
        tree.close()


def _entry_from_stat(comps: tuple[str, ...], st: os.stat_result, xattrs: dict[str, bytes]) -> _Entry:
    e = _Entry(comps=comps, kind="", mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
               mtime=st.st_mtime, xattrs=xattrs)
    m = st.st_mode
    if stat.S_ISREG(m):
        e.kind = "file"
    elif stat.S_ISDIR(m):
        e.kind = "dir"
    elif stat.S_ISLNK(m):
        e.kind = "symlink"
    elif stat.S_ISCHR(m):
        e.kind, e.rdev = "chr", st.st_rdev
    elif stat.S_ISBLK(m):
        e.kind, e.rdev = "blk", st.st_rdev
    elif stat.S_ISFIFO(m):
        e.kind = "fifo"
    return e


def _apply_dir_walk(
    tree: _Tree, dfd: int, comps: tuple[str, ...], inodes: dict[tuple[int, int], tuple[str, ...]]
) -> None:
    for name in sorted(os.listdir(dfd)):
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        child = (*comps, name)
        if is_whiteout_stat(st):
            tree.whiteout(child)
            continue
        if stat.S_ISDIR(st.st_mode):
            cfd = os.open(name, DIR_FLAGS, dir_fd=dfd)
            try:
                opaque = get_xattr(cfd, OVERLAY_OPAQUE_XATTR) == b"y"
                tree.put(_entry_from_stat(child, st, read_xattrs(cfd)))
                if opaque:
                    tree.opaque(child)
                _apply_dir_walk(tree, cfd, child, inodes)
            finally:
                os.close(cfd)
            continue
        if stat.S_ISSOCK(st.st_mode):
            continue
        if stat.S_ISREG(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in inodes:
                tree.put(_Entry(comps=child, kind="hardlink", linkname="/".join(inodes[key]),
                                link_comps=inodes[key]))
                continue
            inodes[key] = child
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            with os.fdopen(fd, "rb") as f:
                tree.put(_entry_from_stat(child, st, read_xattrs(f.fileno())), f, st.st_size)
            continue
        e = _entry_from_stat(child, st, read_xattrs(f"/proc/self/fd/{dfd}/{name}", follow=False))
        if e.kind == "symlink":
            e.linkname = os.readlink(name, dir_fd=dfd)
        tree.put(e)


def iter_tar_names(stream: IO[bytes]) -> Iterator[str]:
    """Member names of a layer tar, in order (for tests and debugging)."""
    with tarfile.open(fileobj=decompressed(stream), mode="r|") as tf:
        for m in tf:
            yield m.name
