"""The build context read in place: source selection for COPY/ADD, confinement, ``.dockerignore``.

Checksums come from content, mode, owner, type and link target; a stat-keyed memo of file
hashes under the cache dir spares re-reading unchanged files (the key never sees an mtime).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import marshal
import os
import re
import stat
import threading
from collections import namedtuple
from collections.abc import Callable, Iterator
from pathlib import Path

from builder.base.errors import ContextError
from builder.base.paths import resolve_parts
from builder.imagebuild import sha
from builder.imagebuild.cache import replace_file

TYPE_CHECKING = False  # not ``typing``'s: a build loads no ``typing`` (~6 ms)

#: (relative path, is_dir) -> excluded?
Excluder = Callable[[str, bool], bool]


class HashMemo:
    """``path → (dev, ino, size, mtime_ns, ctime_ns) → sha256``, persisted as one small file per
    directory of hashed files (under *path* without its suffix, e.g. ``cache/filehash/``): a
    build reads the memo of the directories it hashes and writes back only those where a hash
    was added, so a cached build of 200,000 files writes nothing and a change writes one file,
    and a build never parses the memo of another context.

    The stat tuple only decides whether a stored hash may be trusted; what goes into a cache key
    is always the content hash. A file rewritten in place within one mtime tick still changes
    ctime or size, so a stale hash is not served.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path  # (the single file an older pybuild kept: removed on save)
        self.dir = path.with_suffix("") if path is not None else None
        self._lock = threading.Lock()
        self._shards: dict[str, dict[str, list[object]]] = {}  # host dir -> name -> sig + hash
        self._dirty: set[str] = set()
        self._forgotten: list[str] = []

    def _file(self, directory: str) -> Path:
        assert self.dir is not None
        key = sha.sha256(directory.encode("utf-8", "surrogateescape")).hexdigest()
        return self.dir / key[:40]

    def _shard(self, directory: str) -> dict[str, list[object]]:
        """The memo of *directory*'s files, read on first use (call with the lock held). A shard
        file is the directory's JSON string on its first line, then its files' dict in
        ``marshal`` form (read 4-5 times faster than JSON: a cached build reads them all; the
        state root is trusted as the parse cache's pickles are)."""
        shard = self._shards.get(directory)
        if shard is None:
            shard = {}
            if self.dir is not None:
                with contextlib.suppress(OSError, ValueError, EOFError, TypeError), \
                        open(self._file(directory), "rb") as f:
                    if json.loads(f.readline()) == directory:
                        loaded = marshal.loads(f.read())
                        if isinstance(loaded, dict):
                            shard = loaded
            self._shards[directory] = shard
        return shard

    def sha256(self, path: str, st: os.stat_result) -> str:
        """The content hash of the file at absolute path *path* (``lstat`` gave *st*)."""
        return self.content(path, st)[0]

    def content(self, path: str, st: os.stat_result,
                xattrs: Callable[[str], str] | None = None) -> tuple[str, str]:
        """``sha256`` and, with *xattrs*, ``xattrs(path)`` (what the file's extended attributes
        add to a checksum line), kept beside the hash: setting or removing one moves the ctime,
        so the stat that vouches for the hash vouches for it too, and a cached build lists no
        file's attributes."""
        sig = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        cut = path.rfind("/")  # (os.path.split's answer, for the clean paths a walk makes)
        directory, name = path[:cut] or "/", path[cut + 1:]
        with self._lock:
            hit = self._shard(directory).get(name)
        if hit is not None and hit[:5] == sig:
            if xattrs is None:
                return str(hit[5]), ""
            if len(hit) > 6:
                return str(hit[5]), str(hit[6])
            digest = str(hit[5])
        else:
            with open(path, "rb") as f:
                h = sha.for_file(os.fstat(f.fileno()).st_size)
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            digest = h.hexdigest()
        record: list[object] = [*sig, digest]
        attrs = ""
        if xattrs is not None:
            attrs = xattrs(path)
            record.append(attrs)
        with self._lock:
            self._shard(directory)[name] = record
            self._dirty.add(directory)
        return digest, attrs

    def forget(self, directory: str) -> None:
        """Drop the hashes of every file under *directory* (a context that is gone: the
        daemon's unpacked upload), so the memo does not grow with each one."""
        top = directory.rstrip("/")
        with self._lock:
            for d in [d for d in self._shards if _under(d, top)]:
                del self._shards[d]
                self._dirty.discard(d)
            self._forgotten.append(top)

    def save(self) -> None:
        if self.dir is None:
            return
        with self._lock:
            dirty = {d: json.dumps(d).encode() + b"\n" + marshal.dumps(self._shards[d])
                     for d in self._dirty}
            forgotten, self._forgotten = self._forgotten, []
            self._dirty.clear()
        if dirty:
            self.dir.mkdir(parents=True, exist_ok=True)
        for d, data in dirty.items():
            replace_file(self._file(d), data)
        if forgotten and self.dir.is_dir():
            for f in self.dir.iterdir():
                if f.name.startswith("."):
                    continue  # another writer's temp file
                with contextlib.suppress(OSError, ValueError), open(f, "rb") as fh:
                    d = json.loads(fh.readline())
                    if isinstance(d, str) and any(_under(d, top) for top in forgotten):
                        f.unlink()
        if self.path is not None and (dirty or forgotten):
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top + "/")


if TYPE_CHECKING:
    from typing import NamedTuple

    class Entry(NamedTuple):
        source: str  # absolute host path
        dest: str  # path relative to the copy destination root ("" is the root itself)
        st: os.stat_result
        link: str | None = None
else:  # the tuple class ``typing.NamedTuple`` makes, without loading ``typing`` (~6 ms)
    Entry = namedtuple("Entry", ("source", "dest", "st", "link"), defaults=(None,))
    Entry.__doc__ = """One file system object selected from the context (or a stage): where it
    goes. (A tuple: a walk makes one per file, 100,000s of them.)"""


_MAGIC = re.compile(r"[*?\[]")


def has_glob(text: str) -> bool:
    return bool(_MAGIC.search(text))


def clean(rel: str) -> str:
    """A context-relative path in canonical form, refusing anything that climbs out."""
    parts: list[str] = []
    for p in rel.replace("\\", "/").split("/"):
        if p in ("", "."):
            continue
        if p == "..":
            if not parts:
                raise ContextError(f"forbidden path outside the build context: {rel}")
            parts.pop()
            continue
        parts.append(p)
    return "/".join(parts)


def split_pivot(pattern: str) -> tuple[str, str]:
    """``COPY --parents`` source → (pivot, pattern): the parents kept are those after a ``/./``
    in the source (rsync's ``--relative`` marker), none before it; (``""``, pattern) when the
    source has none (every parent is kept). ``./p/./q/r`` → (``p``, ``p/q/r``)."""
    rel = pattern.replace("\\", "/").lstrip("/")
    while rel.startswith("./"):
        rel = rel[2:].lstrip("/")
    before, marker, after = rel.partition("/./")
    if not marker:
        return "", clean(rel)
    return clean(before), clean(before + "/" + after)


class Tree:
    """A directory read in place (the build context, or a stage's mounted root) as a source.

    *confined*: symlinks are resolved inside *root*, never outside it.
    """

    def __init__(self, root: Path | None, *, excluded: Excluder | None = None,
                 memo: HashMemo | None = None, name: str = "build context",
                 keep_walks: bool = False) -> None:
        self.root = root
        self.excluded = excluded
        self.memo = memo or HashMemo(None)
        self.name = name
        #: *keep_walks*: each walk's entries kept, so the COPY that follows the checksum of its
        #: sources copies the entries the checksum read (its forked child inherits them)
        self._walks: dict[tuple[str, tuple[str, ...], bool], list[Entry]] | None = (
            {} if keep_walks else None)

    # -- path resolution -----------------------------------------------------------------------
    def _resolve(self, rel: str, *, follow_last: bool = True) -> str:
        """Resolve symlinks of *rel* confined to the root; returns a clean relative path."""
        assert self.root is not None
        return "/".join(resolve_parts(self.root, rel, follow_last=follow_last, error=ContextError))

    def _lstat(self, rel: str) -> os.stat_result | None:
        assert self.root is not None
        try:
            return os.lstat(self.root / rel) if rel else os.stat(self.root)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _is_excluded(self, rel: str, is_dir: bool) -> bool:
        return bool(rel) and self.excluded is not None and self.excluded(rel, is_dir)

    # -- selection -----------------------------------------------------------------------------
    def match(self, pattern: str, *, doublestar: bool = False) -> list[str]:
        """Context-relative paths named by *pattern* (a path or a glob), sorted; [] if none.
        *doublestar* (``COPY --parents``): a ``**`` component matches any number of
        directories, none included."""
        if self.root is None:
            return []
        rel = clean(pattern)
        if not has_glob(rel):
            resolved = self._resolve(rel)
            st = self._lstat(resolved)
            if st is None or self._is_excluded(resolved, stat.S_ISDIR(st.st_mode)):
                return []
            return [resolved]
        parts = rel.split("/")
        found = [""]
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            nxt: list[str] = []
            if doublestar and part == "**":
                nxt = [] if last else list(found)
                for base in found:
                    nxt.extend(self._below(base, dirs_only=not last))
                found = list(dict.fromkeys(nxt))
                continue
            for base in found:
                if not has_glob(part):
                    cand = f"{base}/{part}" if base else part
                    cand = self._resolve(cand)
                    if self._lstat(cand) is not None:
                        nxt.append(cand)
                    continue
                d = self.root / base if base else self.root
                try:
                    names = sorted(os.listdir(d))
                except (NotADirectoryError, FileNotFoundError):
                    continue
                for n in names:
                    if fnmatch.fnmatchcase(n, part):
                        cand = f"{base}/{n}" if base else n
                        nxt.append(self._resolve(cand) if not last else cand)
            found = nxt
        out = []
        for r in found:
            st = self._lstat(r)
            if st is not None and not self._is_excluded(r, stat.S_ISDIR(st.st_mode)):
                out.append(r)
        return sorted(set(out))

    def _below(self, base: str, *, dirs_only: bool) -> list[str]:
        """Every path under *base* (its directories only with *dirs_only*), symlinks not followed."""
        assert self.root is not None
        out: list[str] = []
        stack = [base]
        while stack:
            cur = stack.pop()
            try:
                names = sorted(os.listdir(self.root / cur if cur else self.root))
            except (NotADirectoryError, FileNotFoundError):
                continue
            for n in names:
                path = f"{cur}/{n}" if cur else n
                is_dir = stat.S_ISDIR(os.lstat(self.root / path).st_mode)
                if is_dir or not dirs_only:
                    out.append(path)
                if is_dir:
                    stack.append(path)
        return out

    def walk(self, rel: str, *, excludes: list[str] = (), follow: bool = True) -> Iterator[Entry]:  # type: ignore[assignment]
        """Entries of the source *rel*: a file gives itself (dest ""), a directory its contents
        (dest relative to it), sorted, ``.dockerignore`` and ``--exclude`` applied."""
        if self._walks is None:
            return self._walk(rel, excludes, follow)
        key = (rel, tuple(excludes), follow)
        kept = self._walks.get(key)
        if kept is None:
            kept = self._walks[key] = list(self._walk(rel, excludes, follow))
        return iter(kept)

    def _walk(self, rel: str, excludes: list[str], follow: bool) -> Iterator[Entry]:
        assert self.root is not None
        top = self._resolve(rel) if follow else rel
        st = self._lstat(top)
        if st is None:
            return
        if not stat.S_ISDIR(st.st_mode):
            yield self._entry(top, "", st)
            return
        ex = [clean(e) for e in excludes]

        def skip(dest: str, path: str, is_dir: bool) -> bool:
            if self._is_excluded(path, is_dir):
                return True
            return any(_path_match(e, dest) for e in ex)

        filtered = bool(ex) or self.excluded is not None  # (else no name is skipped)
        # plain strings, not Path objects: a context may hold 100,000s of files
        base = str(self.root).rstrip("/")
        stack = [("", top)]
        while stack:
            dest_dir, dir_rel = stack.pop()
            try:
                names = os.listdir(f"{base}/{dir_rel}" if dir_rel else str(self.root))
            except FileNotFoundError:
                continue
            children = []
            for n in sorted(names):  # emitted in sorted order; recursed depth-first in it
                path = f"{dir_rel}/{n}" if dir_rel else n
                dest = f"{dest_dir}/{n}" if dest_dir else n
                full = f"{base}/{path}"
                cst = os.lstat(full)
                isdir = stat.S_ISDIR(cst.st_mode)
                if filtered and skip(dest, path, isdir):
                    # A later "!" exception may re-include something below an excluded dir.
                    if isdir and self.excluded is not None and _may_reinclude(self.excluded, path):
                        children.append((dest, path))
                    continue
                yield Entry(full, dest, cst, os.readlink(full) if stat.S_ISLNK(cst.st_mode) else None)
                if isdir:
                    children.append((dest, path))
            stack.extend(reversed(children))

    def _entry(self, path: str, dest: str, st: os.stat_result) -> Entry:
        assert self.root is not None
        full = f"{str(self.root).rstrip('/')}/{path}" if path else str(self.root)
        link = os.readlink(full) if stat.S_ISLNK(st.st_mode) else None
        return Entry(full, dest, st, link)

    def content_hash(self, e: Entry) -> str:
        if stat.S_ISREG(e.st.st_mode):
            return self.memo.sha256(e.source, e.st)
        return ""


def _path_match(pattern: str, rel: str) -> bool:
    """``--exclude`` matching: the pattern matches the path or one of its parent dirs."""
    parts = rel.split("/")
    return any(fnmatch.fnmatchcase("/".join(parts[:i]), pattern)
               for i in range(1, len(parts) + 1))


def _may_reinclude(excluded: Excluder, path: str) -> bool:
    probe = getattr(excluded, "may_reinclude", None)
    return bool(probe(path)) if callable(probe) else False


def entry_fingerprint(tree: Tree, e: Entry) -> str:
    """One line of a selection checksum: dest, type, mode, owner, link target, content (a
    regular file's extended attributes with it: they are copied with the file)."""
    st = e.st
    kind = stat.S_IFMT(st.st_mode)
    digest, attrs = tree.memo.content(e.source, st, _read_xattrs) if kind == stat.S_IFREG else ("", "")
    return (f"{e.dest}\0{kind:o}\0{stat.S_IMODE(st.st_mode):o}\0{st.st_uid}:{st.st_gid}\0"
            f"{e.link or ''}\0{digest}{attrs}\n")


def entry_content(memo: HashMemo, e: Entry) -> str:
    """A regular file's content and extended attributes as its checksum line has them."""
    digest, attrs = memo.content(e.source, e.st, _read_xattrs)
    return digest + attrs


def _read_xattrs(path: str) -> str:
    try:
        names = sorted(os.listxattr(path, follow_symlinks=False))
    except OSError:
        return ""
    if not names:
        return ""
    h = sha.sha256()
    for n in names:
        try:
            h.update(n.encode() + b"\0" + os.getxattr(path, n, follow_symlinks=False) + b"\0")
        except OSError:
            continue
    return "\0x" + h.hexdigest()
