"""Incremental COPY: a context COPY that ran before on the same layers starts from its previous
layer, so a change of a few files of 200,000 costs about what those files cost.

Before the step's overlay is mounted, its empty upper dir becomes a copy of the previous layer's
(directories made, files hard-linked: read-only from then on, as every layer is). The copy then
skips a regular file whose source fingerprint (content, xattrs) is the one the previous copy
recorded and whose linked file has the mode, owner, size and mtime the copy would give it; any
other entry is removed and made again (never written in place: its inode is the old layer's).
What the previous copy made and this one does not is removed from the upper dir after the
overlay is gone (no whiteout: a fresh copy would leave nothing there), and every directory that
got a child is stamped now, as a fresh copy's creations stamp it. So the layer is the one a copy
from scratch makes (``tests/builder/test_incremental_copy.py``).

Each such COPY leaves ``cache/copies/<slot>``: the layers it ran on, the op as written, the
layer it made and the fingerprint of each path it made in it.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

from builder.base.state import StateRoot
from builder.core.rootfs import LayerCache
from builder.imagebuild.cache import replace_file
from builder.imagebuild.context import Entry, HashMemo, entry_content
from builder.imagebuild.execute.workspace import Workspace, copy_attrs
from builder.imagebuild.graph.ops import CopySpec, Step

#: a made path's fingerprint when it is not a regular file (never skipped: made again)
OTHER = ""


class Reuse:
    """What one COPY execution reads from the previous one (*old*: path in the layer →
    fingerprint) and records of its own (``made``). Paths are relative to the root."""

    def __init__(self, memo: HashMemo, old: dict[str, str], upper: str | None) -> None:
        self.memo = memo
        self.old = old
        #: the step's upper dir, where a kept file is looked at (not through the overlay)
        self.upper = upper
        self.made: dict[str, str] = {}
        self.root = ""  # the merged root's host path, set by the copy

    def rel(self, host: str) -> str:
        return host[len(self.root) + 1:]

    def fingerprint(self, e: Entry) -> str:
        """A regular file's content and xattrs, short (a record may name 100,000s of files):
        128 bits of each digest."""
        if not stat.S_ISREG(e.st.st_mode):
            return OTHER
        content = entry_content(self.memo, e)
        return content[:32] + content[66:98]  # (the xattrs' digest follows "\0x" after 64)

    def record(self, e: Entry, host: str) -> None:
        """The regular file *e* is copied to *host*."""
        self.made[self.rel(host)] = self.fingerprint(e)

    def keep(self, e: Entry, host: str, mode: int, uid: int, gid: int) -> bool:
        """Record the regular file *e* copied to *host*; whether the one there already is it."""
        rel = self.rel(host)
        fp = self.made[rel] = self.fingerprint(e)
        if self.old.get(rel) != fp or self.upper is None:
            return False
        try:
            st = os.lstat(f"{self.upper}/{rel}")
        except OSError:
            return False
        return (stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == mode
                and st.st_uid == uid and st.st_gid == gid and st.st_size == e.st.st_size
                and st.st_mtime_ns == e.st.st_mtime_ns)

    def other(self, host: str) -> None:
        self.made[self.rel(host)] = OTHER

    def dump(self) -> bytes:
        return marshal.dumps(self.made)


class Previous:
    """The record of a COPY's last execution at one slot, and where the next one is kept."""

    def __init__(self, state: StateRoot, slot: str, lowers: list[str], shape: str) -> None:
        self.state = state
        self.file = state.cache / "copies" / slot
        self.lowers = lowers
        #: the op as written (sources, destination, options): an edited one (another
        #: destination) makes directories the previous one did not, and starts from scratch
        self.shape = shape

    def load(self) -> tuple[Path, dict[str, str]] | None:
        """The previous layer's dir and what its copy made, if it ran on these same layers and
        the layer is still unpacked."""
        try:
            rec = marshal.loads(self.file.read_bytes())
        except (OSError, ValueError, EOFError, TypeError):
            return None
        if not isinstance(rec, dict) or rec.get("lowers") != self.lowers \
                or rec.get("shape") != self.shape:
            return None
        layer, files = rec.get("layer"), rec.get("files")
        if not isinstance(layer, str) or not isinstance(files, dict):
            return None
        cache = LayerCache(self.state)
        return (cache.path(layer), files) if cache.has(layer) else None

    def save(self, layer: str, made: dict[str, str]) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        replace_file(self.file, marshal.dumps({"lowers": self.lowers, "shape": self.shape,
                                                "layer": layer, "files": made}))


def clone(src: Path, dst: Path) -> None:
    """Make the (empty) upper dir *dst* a copy of the overlay-format layer dir *src*: its
    directories made with their mode, owner, times and xattrs (overlay's opaque mark included),
    each regular file hard-linked, links, whiteouts and devices made again. An inode linked
    twice in *src* is linked once (a copy never makes links: the second name is copied)."""
    seen: set[int] = set()
    stack = [(str(src), str(dst))]
    dirs: list[tuple[str, os.stat_result]] = []
    while stack:
        s, d = stack.pop()
        with os.scandir(s) as it:
            for ent in it:
                sp, dp = ent.path, f"{d}/{ent.name}"
                st = ent.stat(follow_symlinks=False)
                m = st.st_mode
                if stat.S_ISREG(m):
                    if st.st_ino in seen:
                        continue
                    seen.add(st.st_ino)
                    os.link(sp, dp, follow_symlinks=False)
                    continue
                if stat.S_ISDIR(m):
                    os.mkdir(dp, 0o700)
                    copy_attrs(sp, dp, st, opaque=True)
                    dirs.append((dp, st))
                    stack.append((sp, dp))
                    continue
                if stat.S_ISLNK(m):
                    os.symlink(os.readlink(sp), dp)
                elif stat.S_ISCHR(m) or stat.S_ISBLK(m) or stat.S_ISFIFO(m):
                    os.mknod(dp, m, st.st_rdev)
                else:
                    continue
                os.lchown(dp, st.st_uid, st.st_gid)
                if not stat.S_ISLNK(m):
                    os.chmod(dp, stat.S_IMODE(m))
                    copy_attrs(sp, dp, None, opaque=True)
                os.utime(dp, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    for dp, st in reversed(dirs):  # (after their entries were made in them)
        os.utime(dp, ns=(st.st_atime_ns, st.st_mtime_ns))


def empty(upper: Path) -> None:
    """Back to an empty upper dir (a clone that failed half-way)."""
    for ent in os.scandir(upper):
        if ent.is_dir(follow_symlinks=False):
            shutil.rmtree(ent.path)
        else:
            os.unlink(ent.path)


def settle(upper: Path, old: Iterable[str], made: dict[str, str]) -> None:
    """After the copy, the overlay unmounted: remove from *upper* what the previous copy made
    and this one did not, then stamp now every directory a made path lies in (a fresh copy
    creates each made path, which stamps its directory; removals stamp theirs too)."""
    base = str(upper)
    for rel in sorted(set(old) - made.keys()):
        p = f"{base}/{rel}"
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            if stat.S_ISDIR(os.lstat(p).st_mode):
                shutil.rmtree(p)
            else:
                os.unlink(p)
    parents: set[str] = set()
    for rel in made:
        cut = rel.rfind("/")
        while cut > 0 and (d := rel[:cut]) not in parents:
            parents.add(d)
            cut = d.rfind("/")
    for d in parents:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            os.utime(f"{base}/{d}")


def start(ws: Workspace, step: Step, spec: CopySpec) -> tuple[Reuse | None, Previous | None]:
    """A COPY of context sources only onto an overlay root (not rootless: its whiteouts and
    opaque marks differ) starts from the layer its last execution at this slot made on the same
    layers, and records what it makes for the next one."""
    upper = ws.root.upper
    if (not step.slot or spec.add or upper is None or not ws.root.is_overlay or ws.context is None
            or ws.context.root is None or "_PYBUILD_ROOTLESS" in os.environ
            or any(s.origin != "context" for s in spec.sources)):
        return None, None
    previous = Previous(ws.state, step.slot, [str(lr.diff_id) for lr in ws.lowers], repr(spec))
    found = previous.load()
    old: dict[str, str] = {}
    if found is not None:
        try:
            clone(found[0], Path(upper))
            old = found[1]
        except OSError:  # (the layer pruned meanwhile): a copy from scratch
            empty(Path(upper))
    return Reuse(ws.context.memo, old, upper), previous
