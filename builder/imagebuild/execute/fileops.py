"""File steps of a build done from Python on a mounted root: COPY/ADD (context, stages, images,
URLs, heredocs, local archives), WORKDIR's mkdir, ``--chown`` users.

Every path inside the image is resolved by ``in_root`` (symlinks followed inside the root,
never on the host), so an image's ``/bin -> usr/bin`` or a hostile link cannot leak out.
"""

from __future__ import annotations

import contextlib
import errno
import marshal
import os
import shutil
import stat
import tarfile
import urllib.parse
from collections.abc import Iterable
from pathlib import Path

from builder.base import paths
from builder.base.errors import BuildError, ContextError
from builder.base.paths import in_root
from builder.imagebuild import sources
from builder.imagebuild.context import Entry, Tree, has_glob, split_pivot
from builder.imagebuild.execute import incremental
from builder.imagebuild.execute.incremental import Reuse
from builder.imagebuild.execute.inputs import LayerRef, StepInputs
from builder.imagebuild.execute.workspace import Workspace, layer_dirs
from builder.imagebuild.graph.ops import CopySource, CopySpec, MkdirSpec, Step
from builder.imagebuild.pool import Job, Pool
from registry.compression import detect, open_decompressed
from registry.values import frozen

TYPE_CHECKING = False  # not ``typing``'s: a build loads no ``typing`` (~6 ms)
if TYPE_CHECKING:
    from typing import BinaryIO


def _lookup(file: Path, name: str, field: int) -> int | None:
    try:
        lines = file.read_text(errors="replace").splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return None
    for line in lines:
        parts = line.split(":")
        if len(parts) > field and parts[0] == name:
            with contextlib.suppress(ValueError):
                return int(parts[field])
    return None


def resolve_user(root: Path, spec: str, *, where: str = "") -> tuple[int, int]:
    """``user[:group]`` (names or numbers) → uid, gid from the image's passwd/group files."""
    user, _, group = spec.partition(":")
    passwd = in_root(root, "/etc/passwd")
    groups = in_root(root, "/etc/group")
    if user.isdigit():
        uid = int(user)
        gid = None
    else:
        found = _lookup(passwd, user, 2)
        if found is None:
            raise BuildError(f"{where}unable to find user {user}: no matching entries in passwd file")
        uid = found
        gid = _lookup(passwd, user, 3)
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            g = _lookup(groups, group, 2)
            if g is None:
                raise BuildError(f"{where}unable to find group {group}: no matching entries in group file")
            gid = g
    elif gid is None:
        # a numeric uid takes the primary group of a passwd line with that uid, else the uid
        gid = uid
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for line in passwd.read_text(errors="replace").splitlines():
                parts = line.split(":")
                if len(parts) > 3 and parts[2] == str(uid) and parts[3].isdigit():
                    gid = int(parts[3])
                    break
    return uid, gid


def mkdir_p(root: Path, path: str, *, uid: int = 0, gid: int = 0, mode: int = 0o755) -> None:
    """Create image directory *path* and missing parents (owned uid:gid), like ``mkdir -p``."""
    parts = [p for p in path.split("/") if p]
    cur = "/"
    for p in parts:
        cur = cur.rstrip("/") + "/" + p
        host = in_root(root, cur)
        if host.is_dir():
            continue
        if host.exists() or host.is_symlink():
            raise BuildError(f"cannot create directory {cur}: a file is in the way")
        os.mkdir(host, mode)
        os.chmod(host, mode)
        os.lchown(host, uid, gid)


@frozen
class Ownership:
    uid: int | None = None  # None: keep the source's (COPY --from) or root (context)
    gid: int | None = None
    chmod: int | None = None


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def copy_entry(root: Path, e: Entry, dest: str, own: Ownership, *, keep_owner: bool) -> bool:
    """Copy one selected entry to image path *dest* (its parents exist already), replacing what
    is there. Returns whether it made a new directory (empty until its entries come)."""
    target = in_root(root, dest, follow_last=False)
    if stat.S_ISDIR(e.st.st_mode):
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            _remove(target)
        made = not target.is_dir()
        _create(str(target), e, own, keep_owner=keep_owner, exists=not made)
        return made
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    elif target.exists() or target.is_symlink():
        target.unlink()
    _create(str(target), e, own, keep_owner=keep_owner)
    return False


def _create(target: str, e: Entry, own: Ownership, *, keep_owner: bool, exists: bool = False) -> None:
    """Make *e* at host path *target*, where nothing is (but a directory, with *exists*)."""
    st = e.st
    mode = stat.S_IMODE(st.st_mode)
    if own.chmod is not None:
        mode = own.chmod
    uid = own.uid if own.uid is not None else (st.st_uid if keep_owner else 0)
    gid = own.gid if own.gid is not None else (st.st_gid if keep_owner else 0)
    if stat.S_ISDIR(st.st_mode):
        if not exists:
            os.mkdir(target, 0o700)
        os.chmod(target, mode)
        os.lchown(target, uid, gid)
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
        return
    if stat.S_ISLNK(st.st_mode):
        os.symlink(e.link or "", target)
        os.lchown(target, uid, gid)
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        return
    if stat.S_ISREG(st.st_mode):
        _copy_regular(e.source, target, st, uid, gid, mode)
        return
    if stat.S_ISFIFO(st.st_mode):
        os.mkfifo(target)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        os.mknod(target, st.st_mode, st.st_rdev)
    else:
        return  # sockets are not copied, as Docker skips them
    os.chown(target, uid, gid)
    os.chmod(target, mode)
    _copy_xattrs(e.source, target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))


def _copy_regular(source: str, target: str, st: os.stat_result, uid: int, gid: int,
                  mode: int, *, owned: bool = False) -> None:
    """``_create`` of a regular file, on the two open files rather than their paths: a context
    of 100,000s of small files pays a path lookup through the overlay per call otherwise.
    *owned*: a new file at *target* is *uid*:*gid* already and takes *mode* as created (the
    umask keeps it whole), so neither is set again."""
    src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            dst = os.open(target, flags | os.O_EXCL, mode if owned else 0o600)
        except FileExistsError:
            owned = False
            dst = os.open(target, flags | os.O_TRUNC, 0o600)
        try:
            try:
                while os.sendfile(dst, src, None, 1 << 30):  # in the kernel, to the end
                    pass
            except OSError as err:  # a file system without sendfile: as shutil falls back
                if err.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                with open(src, "rb", closefd=False) as r, open(dst, "wb", closefd=False) as w:
                    shutil.copyfileobj(r, w, 1 << 20)
            if not owned:
                os.chown(dst, uid, gid)
                os.chmod(dst, mode)
            _copy_xattrs(src, dst)
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _copy_xattrs(source: str | int, target: str | int) -> None:
    """Extended attributes travel with the file (``security.capability`` set after chown,
    which clears it); overlay's own and SELinux labels do not."""
    on_fd = isinstance(source, int)  # (a path's link is not followed; an fd takes no such flag)
    try:
        names = os.listxattr(source, follow_symlinks=on_fd)
    except OSError:
        return
    for name in names:
        if name.startswith("trusted.overlay.") or name == "security.selinux":
            continue
        with contextlib.suppress(OSError):
            os.setxattr(target, name, os.getxattr(source, name, follow_symlinks=on_fd),
                        follow_symlinks=on_fd)


class _Files:
    """Regular files to make in directories a copy has just made, in batches on a few threads
    (a file's creation is mostly kernel work: the threads overlap it). A new file there is
    already the caller's (root's) and takes its mode as created when the umask keeps it whole:
    neither is set again."""

    BATCH = 128

    def __init__(self, own: Ownership, keep_owner: bool) -> None:
        self.own = own
        self.keep_owner = keep_owner
        self.euid, self.egid = os.geteuid(), os.getegid()
        self.batch: list[tuple[Entry, str, bool]] = []
        self.jobs: list[Job] = []
        self.pool: Pool | None = None
        self.umask = _umask()

    def add(self, e: Entry, target: str, setgid_parent: bool) -> None:
        self.batch.append((e, target, setgid_parent))
        if len(self.batch) >= self.BATCH:
            self._submit()

    def _submit(self) -> None:
        if self.pool is None:
            self.pool = Pool(min(os.cpu_count() or 1, 4), "pybuild-copy")
        batch = self.batch
        self.jobs.append(self.pool.submit(lambda: self._make(batch)))
        self.batch = []

    def attrs(self, e: Entry) -> tuple[int, int, int]:
        """The mode, uid and gid the copy of *e* gets."""
        own, st = self.own, e.st
        mode = own.chmod if own.chmod is not None else stat.S_IMODE(st.st_mode)
        uid = own.uid if own.uid is not None else (st.st_uid if self.keep_owner else 0)
        gid = own.gid if own.gid is not None else (st.st_gid if self.keep_owner else 0)
        return mode, uid, gid

    def _make(self, batch: list[tuple[Entry, str, bool]]) -> None:
        for e, target, setgid_parent in batch:
            mode, uid, gid = self.attrs(e)
            owned = (uid == self.euid and gid == self.egid and not setgid_parent
                     and not mode & (0o7000 | self.umask))
            _copy_regular(e.source, target, e.st, uid, gid, mode, owned=owned)

    def finish(self, ok: bool) -> None:
        """Wait for every batch (made now if no thread was needed); the error of the first
        batch that failed (in the order they were made) raised. Not *ok*: the batches no thread
        started are dropped."""
        try:
            if ok and self.batch and self.pool is None:
                self._make(self.batch)
            elif ok and self.batch:
                self._submit()
        finally:  # the threads end whatever happened here (a live one would hold up the exit)
            self.batch = []
            if self.pool is not None:
                self.pool.close(cancel=not ok)
        if ok:
            for job in self.jobs:
                job.result()


def _umask() -> int:
    """The process's umask, read without setting it (other threads may be creating files)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o7777  # unknown: every mode is set again


def copy_tree(root: Path, entries: Iterable[Entry], dest: str, own: Ownership, *,
              keep_owner: bool, reuse: Reuse | None = None) -> None:
    """Copy *entries* (dest-relative) under image dir *dest*; a "" entry lands at *dest*.
    *reuse*: the upper dir holds the previous copy's files (``incremental``): a regular file
    already there as this copy would make it is kept, anything else there is made again."""
    created: set[str] = set()
    # image dirs this copy made, by host path (and whether set-group-ID): what goes in them
    # needs no path resolution nor check of what is in the way (a context of 100,000s of files
    # lands mostly in new dirs)
    new_dirs: dict[str, tuple[str, bool]] = {}
    # with *reuse*: image dirs that were there (host path, set-group-ID): what goes in them
    # needs no path resolution, but what is there is checked
    kept_dirs: dict[str, tuple[str, bool]] = {}
    if reuse is not None:
        reuse.root = str(root)
    files = _Files(own, keep_owner)
    ok = False
    try:
        for e in entries:
            path = dest.rstrip("/") + "/" + e.dest if e.dest else dest
            parent = os.path.dirname(path.rstrip("/")) or "/"
            made = new_dirs.get(parent)
            if made is not None:
                target = f"{made[0]}/{os.path.basename(path)}"
                if stat.S_ISREG(e.st.st_mode):
                    if reuse is not None:
                        reuse.record(e, target)
                    files.add(e, target, made[1])
                    continue
                if reuse is not None:
                    reuse.other(target)
                _create(target, e, own, keep_owner=keep_owner)
                if stat.S_ISDIR(e.st.st_mode):
                    new_dirs[path] = (target, bool(os.lstat(target).st_mode & stat.S_ISGID))
                continue
            if parent not in created:
                mkdir_p(root, parent, uid=own.uid or 0, gid=own.gid or 0)
                created.add(parent)
                if reuse is not None:
                    host = str(in_root(root, parent))
                    kept_dirs[parent] = (host, bool(os.stat(host).st_mode & stat.S_ISGID))
            kept = kept_dirs.get(parent) if reuse is not None else None
            if kept is None:
                if copy_entry(root, e, path, own, keep_owner=keep_owner):
                    host = str(in_root(root, path, follow_last=False))
                    new_dirs[path] = (host, bool(os.lstat(host).st_mode & stat.S_ISGID))
                continue
            assert reuse is not None
            target = f"{kept[0]}/{os.path.basename(path)}"
            if stat.S_ISREG(e.st.st_mode):
                if not reuse.keep(e, target, *files.attrs(e)):
                    _clear(target)  # (never written in place: its inode is the old layer's)
                    files.add(e, target, kept[1])
                continue
            reuse.other(target)
            is_dir = stat.S_ISDIR(e.st.st_mode)
            there = _lstat(target)
            if is_dir and there is not None and stat.S_ISDIR(there.st_mode):
                _create(target, e, own, keep_owner=keep_owner, exists=True)
                kept_dirs[path] = (target, bool(there.st_mode & stat.S_ISGID))
                continue
            if there is not None:
                _clear(target)
            _create(target, e, own, keep_owner=keep_owner)
            if is_dir:
                new_dirs[path] = (target, bool(os.lstat(target).st_mode & stat.S_ISGID))
        ok = True
    finally:
        files.finish(ok)


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _clear(path: str) -> None:
    """Remove what is at host path *path*, if anything."""
    st = _lstat(path)
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def extract_archive(root: Path, stream: BinaryIO, dest: str, *, where: str = "") -> None:
    """Unpack a tar stream (already decompressed) under image dir *dest*, confined to *root*."""
    mkdir_p(root, dest)
    try:
        tf = tarfile.open(fileobj=stream, mode="r|")
    except tarfile.TarError as e:
        raise ContextError(f"{where}not a tar archive: {e}") from None
    with tf:
        for m in tf:
            name = "/".join(p for p in m.name.split("/") if p not in ("", "."))
            if not name or any(p == ".." for p in name.split("/")):
                continue  # Docker refuses to write outside the destination; skip silently
            path = dest.rstrip("/") + "/" + name
            parent = os.path.dirname(path)
            mkdir_p(root, parent)
            target = in_root(root, path, follow_last=False)
            if m.isdir():
                if not target.is_dir():
                    if target.exists() or target.is_symlink():
                        _remove(target)
                    os.mkdir(target)
            else:
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                elif target.exists() or target.is_symlink():
                    target.unlink()
                if m.issym():
                    os.symlink(m.linkname, target)
                elif m.islnk():
                    link_src = in_root(root, dest.rstrip("/") + "/" + m.linkname.lstrip("/"),
                                       follow_last=False)
                    os.link(link_src, target)
                    continue
                elif m.isfile():
                    f = tf.extractfile(m)
                    assert f is not None
                    with open(target, "wb") as out:
                        shutil.copyfileobj(f, out, 1 << 20)
                elif m.isfifo():
                    os.mkfifo(target)
                elif m.ischr() or m.isblk():
                    os.mknod(target, (stat.S_IFCHR if m.ischr() else stat.S_IFBLK) | m.mode,
                             os.makedev(m.devmajor, m.devminor))
                else:
                    continue
            os.lchown(target, m.uid, m.gid)
            if not m.issym():
                os.chmod(target, m.mode & 0o7777)
                os.utime(target, (m.mtime, m.mtime))


# -- the steps ------------------------------------------------------------------------------------
def mkdir_step(ws: Workspace, step: Step, spec: MkdirSpec) -> None:
    """WORKDIR: the directory and its missing parents."""

    def mkdir(root: Path, _sources: list[Path]) -> None:
        # as BuildKit: directories WORKDIR creates belong to the current USER
        uid, gid = (resolve_user(root, spec.user, where=f"{step.location}: ")
                    if spec.user else (0, 0))
        mkdir_p(root, spec.path, uid=uid, gid=gid)

    ws.with_root(mkdir)


def _is_archive(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return False
    comp = detect(head)
    if comp != "none":
        return True
    return len(head) >= 262 and head[257:262] == b"ustar"


def _fetch(s: CopySource, into: Path, where: str) -> Path:
    """A URL's file or a git checkout's directory, fetched under *into* (a new directory)."""
    try:
        if s.git is not None:
            return sources.git.checkout(s.git, into)
        into.mkdir()
        return sources.url.download(s.path, s.checksum, into)
    except ContextError as e:
        raise ContextError(f"{where}: {e}") from None


def copy_step(ws: Workspace, step: Step, spec: CopySpec, inputs: StepInputs) -> None:
    """COPY/ADD: sources from the context, earlier stages, images, URLs or heredocs onto the root."""
    where = step.location
    keyword = "ADD" if spec.add else "COPY"
    # Source layer stacks for --from, mounted read-only next to the root.
    stacks: list[list[Path]] = []
    stack_of: dict[int, int] = {}
    for i, s in enumerate(spec.sources):
        loc = s.location
        if loc is not None and loc.stage is not None:
            lay: tuple[LayerRef, ...] = inputs.stage_layers[loc.stage]
        elif loc is not None and loc.image is not None:
            lay = LayerRef.of_image(loc.image)
        else:
            continue
        stack_of[i] = len(stacks)
        stacks.append(layer_dirs(ws.state, ws.store, lay))
    downloads: dict[int, Path] = {}
    for i, s in enumerate(spec.sources):
        if s.origin in ("url", "git"):
            downloads[i] = _fetch(s, ws.dir / f"src{i}", where)
    reuse, previous = incremental.start(ws, step, spec)
    made_file = ws.dir / "copy-made"

    def work(root: Path, src_roots: list[Path]) -> None:
        own = Ownership()
        if spec.chown:
            uid, gid = resolve_user(root, spec.chown, where=f"{where}: ")
            own = Ownership(uid, gid, spec.chmod)
        elif spec.chmod is not None:
            own = Ownership(None, None, spec.chmod)
        dest = spec.dest
        dest_host = paths.in_root(root, dest)
        dest_is_dir = dest.endswith("/") or dest_host.is_dir()
        multi = len(spec.sources) > 1
        for i, s in enumerate(spec.sources):
            if s.origin == "heredoc":
                target = dest.rstrip("/") + "/" + s.path if dest_is_dir else dest
                _write_file(root, target, (s.content or "").encode(), own, 0o644)
                continue
            if s.origin == "git":
                # the checkout's contents go into dest, as a directory source's
                mkdir_p(root, dest, uid=own.uid or 0, gid=own.gid or 0)
                copy_tree(root, Tree(downloads[i], name=s.path).walk(""), dest, own, keep_owner=False)
                continue
            if s.origin == "url":
                name = os.path.basename(urllib.parse.urlparse(s.path).path) or "index.html"
                target = dest.rstrip("/") + "/" + name if dest_is_dir else dest
                data_path = downloads[i]
                st = os.stat(data_path)
                e = Entry(str(data_path), "", st)
                copy_tree(root, [e], target,
                                  Ownership(own.uid, own.gid, own.chmod if own.chmod is not None else 0o600),
                                  keep_owner=False)
                continue
            if s.origin == "context":
                tree = ws.context
                if tree is None or tree.root is None:
                    raise ContextError(f"{where}: {keyword} {s.path}: no build context")
                keep_owner = False
                src_reuse = reuse
            else:
                tree = Tree(src_roots[stack_of[i]], name="--from source")
                keep_owner = True
                src_reuse = None
            pivot, pattern = split_pivot(s.path) if spec.parents else ("", s.path)
            matches = tree.match(pattern, doublestar=spec.parents)
            if not matches:
                raise ContextError(f"{where}: {keyword} {s.path}: not found"
                                   + (" in build context" if s.origin == "context" else " in the source image"))
            many = multi or len(matches) > 1 or has_glob(s.path)
            troot = tree.root
            assert troot is not None
            for m in matches:
                st = os.stat(troot) if m == "" else os.lstat(troot / tree._resolve(m))
                is_dir = stat.S_ISDIR(st.st_mode)
                if spec.parents:
                    # the parents after the pivot (all of them without one) are kept
                    kept = m[len(pivot) + 1:] if pivot and m.startswith(pivot + "/") else m
                    base = dest.rstrip("/") + "/" + kept
                    copy_tree(root, tree.walk(m, excludes=list(spec.excludes)), base, own,
                              keep_owner=keep_owner, reuse=src_reuse)
                    continue
                if is_dir:
                    entries = list(tree.walk(m, excludes=list(spec.excludes)))
                    # the directory itself: its contents go into dest (which is created)
                    mkdir_p(root, dest, uid=own.uid or 0, gid=own.gid or 0)
                    copy_tree(root, entries, dest, own, keep_owner=keep_owner, reuse=src_reuse)
                    continue
                if spec.add and s.origin == "context" and _is_archive(str(tree.root / tree._resolve(m))):  # type: ignore[operator]
                    with open(troot / tree._resolve(m), "rb") as f:
                        extract_archive(root, open_decompressed(f), dest.rstrip("/") or "/",
                                                where=f"{where}: ")
                    continue
                name = os.path.basename(m)
                target = dest.rstrip("/") + "/" + name if (dest_is_dir or many) else dest
                entries = list(tree.walk(m))
                copy_tree(root, entries, target, own, keep_owner=keep_owner, reuse=src_reuse)
        if reuse is not None:
            made_file.write_bytes(reuse.dump())

    ws.with_root(work, sources=stacks)
    if reuse is not None and previous is not None:
        made = marshal.loads(made_file.read_bytes())
        assert ws.root.upper is not None
        if reuse.old:
            incremental.settle(Path(ws.root.upper), reuse.old, made)
        ws.after_commit = lambda layer: previous.save(layer, made)


def _write_file(root: Path, path: str, data: bytes, own: Ownership, mode: int) -> None:
    parent = os.path.dirname(path.rstrip("/")) or "/"
    mkdir_p(root, parent)
    target = paths.in_root(root, path, follow_last=False)
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    elif target.exists() or target.is_symlink():
        target.unlink()
    with open(target, "wb") as f:
        f.write(data)
    os.chmod(target, own.chmod if own.chmod is not None else mode)
    os.chown(target, own.uid or 0, own.gid or 0)
