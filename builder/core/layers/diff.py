"""Writing diffs: ``write_diff`` tars an overlayfs upper dir, ``write_dir_diff`` a copied tree
against its lower layers; deterministic (sorted, PAX, numeric owners, clamped mtimes).
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from builder.core.layers.common import (
    FUSE_OPAQUE_XATTR,
    OPAQUE_MARKER,
    OVERLAY_OPAQUE_XATTR,
    WHITEOUT_PREFIX,
    XATTR_PAX,
    get_xattr,
    is_whiteout_stat,
    read_xattrs,
)
from builder.core.layers.view import MergedView

if TYPE_CHECKING:
    import tarfile

# -- writing diffs -----------------------------------------------------------------------------------
class _Record:
    """One entry of a diff (a plain class: a ``@dataclass`` would bring ``dataclasses`` and
    ``inspect``, ~10 ms, to every build that executes a step)."""

    __slots__ = ("name", "path", "st", "marker", "xattr_fd")

    def __init__(self, name: str, path: str | None, st: os.stat_result | None, *,
                 marker: bool = False, xattr_fd: bool = False) -> None:
        self.name = name
        self.path = path  # host path to read (regular files, symlinks, xattrs); None for markers
        self.st = st
        self.marker = marker  # an empty .wh. file
        self.xattr_fd = xattr_fd


def _plain_header(t: Any, ti: tarfile.TarInfo) -> bytes | None:
    """The header ``ti.tobuf(PAX_FORMAT)`` makes, for the plain entry that needs no PAX record
    (ASCII names that fit, numbers that fit, no owner names): packed at once, where tarfile's
    general path costs more than the small file it describes. None for any other entry."""
    name = ti.name + "/" if ti.type == t.DIRTYPE and not ti.name.endswith("/") else ti.name
    device = ti.type in (t.CHRTYPE, t.BLKTYPE)
    if (ti.pax_headers or ti.uname or ti.gname or len(name) > 100 or len(ti.linkname) > 100
            or not name.isascii() or not ti.linkname.isascii() or type(ti.mtime) is not int
            or not (0 <= ti.uid < 8**7 and 0 <= ti.gid < 8**7 and 0 <= ti.size < 8**11
                    and 0 <= ti.mtime < 8**11)
            or (device and not (0 <= ti.devmajor < 8**7 and 0 <= ti.devminor < 8**7))):
        return None
    buf = b"".join((
        name.encode().ljust(100, b"\0"),
        b"%07o\0%07o\0%07o\0%011o\0%011o\0" % (ti.mode & 0o7777, ti.uid, ti.gid, ti.size, ti.mtime),
        b"        ",  # the checksum field counts as spaces
        ti.type,
        ti.linkname.encode().ljust(100, b"\0"),
        t.POSIX_MAGIC,
        bytes(64),  # owner names
        b"%07o\0%07o\0" % (ti.devmajor, ti.devminor) if device else bytes(16),
        bytes(155 + 12),  # prefix, padding
    ))
    chksum = sum(buf)  # (its own field: the eight spaces already in it)
    return buf[:148] + b"%06o\0" % chksum + buf[155:]


class _TarWriter:
    """A PAX tar written straight to *out*: each header made by ``TarInfo.tobuf``, then the
    file's bytes. The archive ``TarFile.addfile`` writes, without its per-entry copy of the
    header, its member list and its stream buffer (a layer may hold 100,000s of entries)."""

    def __init__(self, out: BinaryIO | IO[bytes], source_date_epoch: int | None) -> None:
        self.tarfile = tarfile
        self.out = out
        self.offset = 0
        self.sde = source_date_epoch
        self.links: dict[tuple[int, int], str] = {}
        self.count = 0

    def _add(self, ti: tarfile.TarInfo, fd: int | None = None) -> None:
        t = self.tarfile
        header = _plain_header(t, ti) or ti.tobuf(t.PAX_FORMAT, t.ENCODING, "surrogateescape")
        self.out.write(header)
        self.offset += len(header)
        if fd is None:
            return
        left = ti.size
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                raise OSError("unexpected end of data")  # (the file shrank: as tarfile says)
            self.out.write(chunk)
            left -= len(chunk)
        pad = -ti.size % t.BLOCKSIZE
        if pad:
            self.out.write(t.NUL * pad)
        self.offset += ti.size + pad

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
        self._add(ti)
        self.count += 1

    def entry(self, name: str, path: str, st: os.stat_result) -> None:
        t = self.tarfile
        ti = self._info(name, st)
        m = st.st_mode
        xattr_target: int | str = path
        follow = False
        fd: int | None = None  # (read unbuffered: most files are read in one call)
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
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                    xattr_target, follow = fd, True
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
                    XATTR_PAX + k: v.decode("utf-8", "surrogateescape")
                    for k, v in read_xattrs(xattr_target, follow=follow).items()
                }
            self._add(ti, fd)
            self.count += 1
        finally:
            if fd is not None:
                os.close(fd)

    def close(self) -> None:
        """The end-of-archive blocks, padded to a whole record, as ``TarFile.close`` ends it."""
        t = self.tarfile
        end = 2 * t.BLOCKSIZE
        self.out.write(t.NUL * (end + -(self.offset + end) % t.RECORDSIZE))


def write_diff(upper_dir: Path, out: BinaryIO | IO[bytes], *, source_date_epoch: int | None = None,
               lowers: Sequence[str | os.PathLike[str]] = ()) -> bool:
    """Tar the overlayfs upper dir *upper_dir* to *out* (the tar is always complete).

    *lowers* (bottom first): the layers under it, which tell a directory fuse-overlayfs marked
    opaque only because it is new (it marks every new one) from one that hides theirs.
    Returns whether any entry was written: ``False`` means the step changed nothing.
    """
    w = _TarWriter(out, source_date_epoch)
    try:
        _walk_stack(w, [str(upper_dir)], "", MergedView(lowers) if lowers else None)
    finally:
        w.close()
    return w.count > 0


def write_diff_stack(uppers: Sequence[Path], out: BinaryIO | IO[bytes], *,
                     source_date_epoch: int | None = None) -> bool:
    """``write_diff`` of several overlay-format upper dirs (bottom first) as one: a name the
    upper ones hold hides the lower ones' unless both are directories (then merged, down to an
    opaque one). ``commit`` tars a container's upper dir over the mount points it lacks."""
    w = _TarWriter(out, source_date_epoch)
    try:
        _walk_stack(w, [str(u) for u in reversed(uppers)], "")
    finally:
        w.close()
    return w.count > 0


def _walk_stack(w: _TarWriter, dirs: Sequence[str], rel: str, lowers: MergedView | None = None,
                fuse_opaque: bool = False) -> None:
    """*dirs*: the host directories merged at the archive directory *rel*, topmost first.
    *fuse_opaque*: the directory is marked opaque by fuse-overlayfs, whose marker file it holds."""
    for name in sorted(set().union(*(os.listdir(d) for d in dirs))):
        holders = [d for d in dirs if os.path.lexists(os.path.join(d, name))] if len(dirs) > 1 else dirs
        path = os.path.join(holders[0], name)
        arc = f"{rel}{name}"
        st = os.lstat(path)
        if fuse_opaque and name in _FUSE_MARKS:
            continue  # fuse-overlayfs's own marks: the marker, if any, came with the directory
        if is_whiteout_stat(st):
            w.marker(f"{rel}{WHITEOUT_PREFIX}{name}", st)
            continue
        w.entry(arc, path, st)
        if stat.S_ISDIR(st.st_mode):
            below: list[str] = []
            fuse = get_xattr(path, FUSE_OPAQUE_XATTR, follow=False) == b"y"
            if get_xattr(path, OVERLAY_OPAQUE_XATTR, follow=False) == b"y" or (
                    fuse and _hides_below(lowers, arc)):
                w.marker(f"{arc}/{OPAQUE_MARKER}", st)
            else:
                below = [os.path.join(h, name) for h in holders[1:]
                         if stat.S_ISDIR(os.lstat(os.path.join(h, name)).st_mode)]
            _walk_stack(w, [path, *below], arc + "/", lowers, fuse)


#: what fuse-overlayfs puts in a directory it marks opaque: a file named as the marker and a
#: whiteout device whose name makes the marker again
_FUSE_MARKS = frozenset({OPAQUE_MARKER, OPAQUE_MARKER.removeprefix(WHITEOUT_PREFIX)})


def _hides_below(lowers: MergedView | None, arc: str) -> bool:
    """Whether a directory fuse-overlayfs marked opaque hides one of the layers below (the
    kernel marks only those); without the layers, it is taken to."""
    if lowers is None:
        return True
    found = lowers.lookup(tuple(arc.split("/")))
    return found is not None and stat.S_ISDIR(found[1].st_mode)


def write_merged(layers: Sequence[Path], out: BinaryIO | IO[bytes]) -> int:
    """Tar the whole tree that the overlay-format *layers* (bottom first) make when merged, as a
    root filesystem (``export``): whiteouts and opaque dirs applied, no root entry, sorted.
    Returns the number of entries."""
    view = MergedView(layers)
    w = _TarWriter(out, None)
    try:
        _walk_merged(w, view, ())
    finally:
        w.close()
    return w.count


def _walk_merged(w: _TarWriter, view: MergedView, comps: tuple[str, ...]) -> None:
    try:
        names = view.listdir(comps)
    except FileNotFoundError:
        return  # a running container's directory, gone since its parent was read
    for name in names:
        child = (*comps, name)
        found = view.lookup(child)
        if found is None:
            continue
        path, st = found
        try:
            w.entry("/".join(child), str(path), st)
        except FileNotFoundError:
            continue  # removed by a running container meanwhile: as if it never was
        if stat.S_ISDIR(st.st_mode):
            _walk_merged(w, view, child)


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
    return read_xattrs(pa, follow=follow) == read_xattrs(str(pb), follow=follow)


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


