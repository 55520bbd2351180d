"""The OCI layer format in one place: applying layer tars with no path escape, and writing diffs.

``apply_layer``/``apply_dir`` unpack (overlay format or merged); ``write_diff``/``write_dir_diff`` tar changes.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO

from builder.errors import LayerError

if TYPE_CHECKING:
    import tarfile

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"
_OVERLAY_XATTR_PREFIX = "trusted.overlay."
_XATTR_PAX = "SCHILY.xattr."
_COPY_CHUNK = 1 << 20

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


# -- names ------------------------------------------------------------------------------------------
def clean_name(name: str) -> tuple[str, ...]:
    """Split a tar member name into components relative to the root.

    Leading ``/`` and ``.`` components are dropped (the name is taken relative to the root);
    ``..`` is resolved lexically and refused when it would climb above the root.
    """
    out: list[str] = []
    for comp in name.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if not out:
                raise LayerError(f"layer entry {name!r} points outside the layer root")
            out.pop()
            continue
        out.append(comp)
    return tuple(out)


def _is_whiteout_stat(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


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
        self.root_fd = os.open(root, _DIR_FLAGS)
        self._dirs: dict[tuple[str, ...], int] = {(): self.root_fd}
        self.created: set[tuple[str, ...]] = set()
        self.dir_mtimes: dict[tuple[str, ...], float] = {}

    def close(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()

    def begin_layer(self) -> None:
        self.created.clear()

    # directory fds ------------------------------------------------------------------------------
    def dir_fd(self, comps: tuple[str, ...], *, create: bool = True) -> int:
        """An fd of the directory *comps*, creating (or replacing non-directories) on the way."""
        fd = self._dirs.get(comps)
        if fd is not None:
            return fd
        parent = self.dir_fd(comps[:-1], create=create)
        name = comps[-1]
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise LayerError(f"{'/'.join(comps)} does not exist in the layer") from None
            os.mkdir(name, 0o755, dir_fd=parent)
            self.created.add(comps)
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as e:
            if e.errno not in (errno.ENOTDIR, errno.ELOOP) or not create:
                raise LayerError(f"{'/'.join(comps)} is not a directory in the layer") from None
            # A symlink or file where a directory is needed: overlayfs would show the directory
            # of the upper layer, so replace it rather than follow it.
            os.unlink(name, dir_fd=parent)
            os.mkdir(name, 0o755, dir_fd=parent)
            self.created.add(comps)
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
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
            kind = stat.S_IFCHR if e.kind == "chr" else stat.S_IFBLK
            os.mknod(name, kind | 0o600, e.rdev, dir_fd=parent)
        elif e.kind == "fifo":
            os.mkfifo(name, 0o600, dir_fd=parent)
        else:
            raise LayerError(f"{'/'.join(e.comps)}: unsupported entry type {e.kind}")
        os.chown(name, e.uid, e.gid, dir_fd=parent, follow_symlinks=False)
        if e.kind != "symlink":
            os.chmod(name, e.mode, dir_fd=parent, follow_symlinks=False)
        path = f"/proc/self/fd/{parent}/{name}"
        for k, v in e.xattrs.items():
            _set_xattr(path, k, v, follow=False)
        os.utime(name, (e.mtime, e.mtime), dir_fd=parent, follow_symlinks=False)

    def _meta_fd(self, fd: int, e: _Entry) -> None:
        os.fchown(fd, e.uid, e.gid)
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
        chunk = src.read(min(_COPY_CHUNK, left))
        if not chunk:
            raise LayerError("layer entry is cut short")
        view = memoryview(chunk)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        left -= len(chunk)


def _allowed_xattr(key: str) -> bool:
    # A layer must not forge overlayfs metadata (opaque, redirect, origin…): we write those.
    return not key.startswith(_OVERLAY_XATTR_PREFIX)


# -- applying tars -----------------------------------------------------------------------------------
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
            data = self._src.read(_COPY_CHUNK)
            if not data:
                return
            self.hash.update(data)


def _decompressed(stream: IO[bytes]) -> IO[bytes]:
    """Transparent gzip/zstd: peek at the magic number."""
    buffered = stream if isinstance(stream, io.BufferedReader) else io.BufferedReader(_Raw(stream))
    head = buffered.peek(4)[:4]
    if head[:2] == b"\x1f\x8b":
        import gzip

        return gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[return-value]
    if head == b"\x28\xb5\x2f\xfd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(buffered)
    return buffered


class _Raw(io.RawIOBase):
    def __init__(self, src: IO[bytes]) -> None:
        self._src = src

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._src.read(len(b))
        b[: len(data)] = data
        return len(data)


def _member_entry(m: tarfile.TarInfo) -> _Entry | None:
    import tarfile

    comps = clean_name(m.name)
    xattrs = {
        k[len(_XATTR_PAX):]: v.encode("utf-8", "surrogateescape")
        for k, v in sorted(m.pax_headers.items())
        if k.startswith(_XATTR_PAX) and _allowed_xattr(k[len(_XATTR_PAX):])
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
    import tarfile

    dest.mkdir(parents=True, exist_ok=True)
    reader = _HashingReader(_decompressed(stream))
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
        src_fd = os.open(layer_dir, _DIR_FLAGS)
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


def _xattrs(target: int | str, *, follow: bool = True) -> dict[str, bytes]:
    try:
        names = os.listxattr(target, follow_symlinks=follow)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise
    out: dict[str, bytes] = {}
    for k in sorted(names):
        if not _allowed_xattr(k):
            continue
        try:
            out[k] = os.getxattr(target, k, follow_symlinks=follow)
        except OSError:
            continue
    return out


def _apply_dir_walk(
    tree: _Tree, dfd: int, comps: tuple[str, ...], inodes: dict[tuple[int, int], tuple[str, ...]]
) -> None:
    for name in sorted(os.listdir(dfd)):
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        child = (*comps, name)
        if _is_whiteout_stat(st):
            tree.whiteout(child)
            continue
        if stat.S_ISDIR(st.st_mode):
            cfd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
            try:
                opaque = _get_xattr(cfd, OVERLAY_OPAQUE_XATTR) == b"y"
                tree.put(_entry_from_stat(child, st, _xattrs(cfd)))
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
                tree.put(_entry_from_stat(child, st, _xattrs(f.fileno())), f, st.st_size)
            continue
        e = _entry_from_stat(child, st, _xattrs(f"/proc/self/fd/{dfd}/{name}", follow=False))
        if e.kind == "symlink":
            e.linkname = os.readlink(name, dir_fd=dfd)
        tree.put(e)


def _get_xattr(target: int | str, key: str, *, follow: bool = True) -> bytes | None:
    try:
        return os.getxattr(target, key, follow_symlinks=follow)
    except OSError:
        return None


# -- the merged view of lower layers -----------------------------------------------------------------
class MergedView:
    """Read-only lookups through a stack of overlay-format layer dirs (given bottom first)."""

    def __init__(self, layers: Sequence[str | os.PathLike[str]]) -> None:
        self.layers = [Path(p) for p in layers]

    def _probe(self, layer: Path, comps: tuple[str, ...]) -> tuple[str, os.stat_result | None, Path]:
        """("found", st, path) | ("hidden"…) | ("absent"…) | ("blocked"…): *comps* in one layer.

        Components are checked one by one with lstat, so no symlink of a layer is followed.
        "blocked" means absent here and hidden below (an opaque ancestor).
        """
        p = layer
        opaque = False
        for i, c in enumerate(comps):
            p = p / c
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                return ("blocked" if opaque else "absent"), None, p
            if i == len(comps) - 1:
                if _is_whiteout_stat(st):
                    return "hidden", None, p
                return "found", st, p
            if not stat.S_ISDIR(st.st_mode):
                return "hidden", None, p
            if _get_xattr(str(p), OVERLAY_OPAQUE_XATTR, follow=False) == b"y":
                opaque = True
        return "found", os.lstat(layer), layer

    def lookup(self, comps: tuple[str, ...]) -> tuple[Path, os.stat_result] | None:
        """(host path, lstat) of *comps* in the merged view, or None."""
        for layer in reversed(self.layers):
            state, st, p = self._probe(layer, comps)
            if state == "found":
                assert st is not None
                return p, st
            if state != "absent":
                return None
        return None

    def listdir(self, comps: tuple[str, ...]) -> list[str]:
        names: set[str] = set()
        gone: set[str] = set()
        for layer in reversed(self.layers):
            state, st, p = self._probe(layer, comps)
            if state == "absent":
                continue
            if state != "found" or st is None or not stat.S_ISDIR(st.st_mode):
                break
            for n in os.listdir(p):
                if n in names or n in gone:
                    continue
                if _is_whiteout_stat(os.lstat(p / n)):
                    gone.add(n)
                else:
                    names.add(n)
            if _get_xattr(str(p), OVERLAY_OPAQUE_XATTR, follow=False) == b"y":
                break
        return sorted(names)

    def read_file(self, path: str, *, limit: int = 1 << 20) -> bytes | None:
        """The bytes of a regular file (no symlink followed), or None."""
        found = self.lookup(clean_name(path))
        if found is None or not stat.S_ISREG(found[1].st_mode):
            return None
        fd = os.open(found[0], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            return f.read(limit)


# -- writing diffs -----------------------------------------------------------------------------------
@dataclass
class _Record:
    name: str
    path: str | None  # host path to read (regular files, symlinks, xattrs); None for markers
    st: os.stat_result | None
    marker: bool = False  # an empty .wh. file
    xattr_fd: bool = False


class _TarWriter:
    def __init__(self, out: BinaryIO | IO[bytes], source_date_epoch: int | None) -> None:
        import tarfile

        self.tarfile = tarfile
        self.tf = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)
        self.sde = source_date_epoch
        self.links: dict[tuple[int, int], str] = {}
        self.count = 0

    def _mtime(self, st: os.stat_result) -> int:
        t = int(st.st_mtime)
        return min(t, self.sde) if self.sde is not None else t

    def _info(self, name: str, st: os.stat_result) -> tarfile.TarInfo:
        ti = self.tarfile.TarInfo(name)
        ti.mode = stat.S_IMODE(st.st_mode)
        ti.uid, ti.gid = st.st_uid, st.st_gid
        ti.uname = ti.gname = ""
        ti.mtime = self._mtime(st)
        return ti

    def marker(self, name: str, st: os.stat_result | None) -> None:
        ti = self.tarfile.TarInfo(name)
        ti.type = self.tarfile.REGTYPE
        ti.size = 0
        if st is not None:
            ti.mode = stat.S_IMODE(st.st_mode)
            ti.uid, ti.gid = st.st_uid, st.st_gid
            ti.mtime = self._mtime(st)
        else:
            ti.mode, ti.mtime = 0o644, 0
        ti.uname = ti.gname = ""
        self.tf.addfile(ti)
        self.count += 1

    def entry(self, name: str, path: str, st: os.stat_result) -> None:
        t = self.tarfile
        ti = self._info(name, st)
        m = st.st_mode
        xattr_target: int | str = path
        follow = False
        fobj: IO[bytes] | None = None
        try:
            if stat.S_ISDIR(m):
                ti.type = t.DIRTYPE
            elif stat.S_ISREG(m):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in self.links:
                    ti.type, ti.linkname = t.LNKTYPE, self.links[key]
                else:
                    if st.st_nlink > 1:
                        self.links[key] = name
                    ti.type, ti.size = t.REGTYPE, st.st_size
                    fobj = open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb")
                    xattr_target, follow = fobj.fileno(), True
            elif stat.S_ISLNK(m):
                ti.type, ti.linkname = t.SYMTYPE, os.readlink(path)
            elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
                ti.type = t.CHRTYPE if stat.S_ISCHR(m) else t.BLKTYPE
                ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            elif stat.S_ISFIFO(m):
                ti.type = t.FIFOTYPE
            else:
                return  # sockets are not content
            if ti.type != t.LNKTYPE:
                ti.pax_headers = {
                    _XATTR_PAX + k: v.decode("utf-8", "surrogateescape")
                    for k, v in _xattrs(xattr_target, follow=follow).items()
                }
            self.tf.addfile(ti, fobj)
            self.count += 1
        finally:
            if fobj is not None:
                fobj.close()

    def close(self) -> None:
        self.tf.close()


def write_diff(upper_dir: Path, out: BinaryIO | IO[bytes], *, source_date_epoch: int | None = None) -> bool:
    """Tar the overlayfs upper dir *upper_dir* to *out* (the tar is always complete).

    Returns whether any entry was written: ``False`` means the step changed nothing.
    """
    w = _TarWriter(out, source_date_epoch)
    try:
        _walk_upper(w, str(upper_dir), "")
    finally:
        w.close()
    return w.count > 0


def _walk_upper(w: _TarWriter, top: str, rel: str) -> None:
    base = os.path.join(top, rel) if rel else top
    for name in sorted(os.listdir(base)):
        path = os.path.join(base, name)
        arc = f"{rel}{name}"
        st = os.lstat(path)
        if _is_whiteout_stat(st):
            w.marker(f"{rel}{WHITEOUT_PREFIX}{name}", st)
            continue
        w.entry(arc, path, st)
        if stat.S_ISDIR(st.st_mode):
            if _get_xattr(path, OVERLAY_OPAQUE_XATTR, follow=False) == b"y":
                w.marker(f"{arc}/{OPAQUE_MARKER}", st)
            _walk_upper(w, top, arc + "/")


def write_dir_diff(
    lowers: Sequence[Path], new: Path, out: BinaryIO | IO[bytes], *, source_date_epoch: int | None = None
) -> bool:
    """Tar the changes of the plain tree *new* against the merged overlay-format *lowers* (bottom first).

    Parents of changed entries are written too (so that applying keeps their owner and mode);
    deleted entries become ``.wh.`` markers. Returns whether any entry was written.
    """
    view = MergedView(lowers)
    records = _dir_changes(view, str(new), ())
    w = _TarWriter(out, source_date_epoch)
    try:
        for r in records:
            if r.marker:
                w.marker(r.name, r.st)
            else:
                assert r.path is not None and r.st is not None
                w.entry(r.name, r.path, r.st)
    finally:
        w.close()
    return w.count > 0


def _same(a: os.stat_result, b: os.stat_result, pa: str, pb: Path) -> bool:
    if stat.S_IFMT(a.st_mode) != stat.S_IFMT(b.st_mode):
        return False
    if (a.st_mode, a.st_uid, a.st_gid) != (b.st_mode, b.st_uid, b.st_gid):
        return False
    if stat.S_ISLNK(a.st_mode):
        return os.readlink(pa) == os.readlink(pb)
    if stat.S_ISCHR(a.st_mode) or stat.S_ISBLK(a.st_mode):
        return a.st_rdev == b.st_rdev
    if not stat.S_ISDIR(a.st_mode) and (a.st_size != b.st_size or a.st_mtime_ns != b.st_mtime_ns):
        return False
    follow = not stat.S_ISLNK(a.st_mode)
    return _xattrs(pa, follow=follow) == _xattrs(str(pb), follow=follow)


def _dir_changes(view: MergedView, top: str, comps: tuple[str, ...]) -> list[_Record]:
    base = os.path.join(top, *comps)
    rel = "/".join(comps) + "/" if comps else ""
    names = sorted(os.listdir(base))
    have = set(names)
    base_listing = view.listdir(comps)
    out: list[tuple[str, list[_Record]]] = []
    for name in base_listing:
        if name not in have:
            out.append((WHITEOUT_PREFIX + name, [_Record(f"{rel}{WHITEOUT_PREFIX}{name}", None, None, marker=True)]))
    for name in names:
        path = os.path.join(base, name)
        st = os.lstat(path)
        if stat.S_ISSOCK(st.st_mode):
            continue
        child = (*comps, name)
        found = view.lookup(child)
        changed = found is None or not _same(st, found[1], path, found[0])
        sub: list[_Record] = []
        if stat.S_ISDIR(st.st_mode):
            if found is not None and stat.S_ISDIR(found[1].st_mode):
                sub = _dir_changes(view, top, child)
            else:
                sub = _all_records(top, child)
        if changed or sub:
            out.append((name, [_Record(f"{rel}{name}", path, st), *sub]))
    out.sort(key=lambda kv: kv[0])
    return [r for _, recs in out for r in recs]


def _all_records(top: str, comps: tuple[str, ...]) -> list[_Record]:
    base = os.path.join(top, *comps)
    rel = "/".join(comps) + "/"
    recs: list[_Record] = []
    for name in sorted(os.listdir(base)):
        path = os.path.join(base, name)
        st = os.lstat(path)
        if stat.S_ISSOCK(st.st_mode):
            continue
        recs.append(_Record(f"{rel}{name}", path, st))
        if stat.S_ISDIR(st.st_mode):
            recs.extend(_all_records(top, (*comps, name)))
    return recs


def iter_tar_names(stream: IO[bytes]) -> Iterator[str]:
    """Member names of a layer tar, in order (for tests and debugging)."""
    import tarfile

    with tarfile.open(fileobj=_decompressed(stream), mode="r|") as tf:
        for m in tf:
            yield m.name
