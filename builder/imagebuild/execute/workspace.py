"""Where one build step runs: its parent layers (from the shared layer cache) plus a fresh upper.

``with_root`` runs Python (the file steps) on the mounted root in a forked child with a private
mount namespace (the overlay vanishes with it); the caller tars the diff.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from builder.base import syscalls as sc
from builder.base.errors import BuildError, ContextError
from builder.base.state import StateRoot
from builder.core import rootfs
from builder.core.layers import MergedView, clean_name
from builder.core.layers.common import OVERLAY_OPAQUE_XATTR, allowed_xattr
from builder.core.rootfs import LayerCache, claim_workspace, diff, prepare_root, release_workspace
from builder.imagebuild.context import Tree
from builder.imagebuild.execute.inputs import LayerRef
from registry.compression import open_decompressed
from registry.model import Descriptor, Platform
from registry.store import Store, file_lock

TYPE_CHECKING = False  # not ``typing``'s: a build loads no ``typing`` (~6 ms)
if TYPE_CHECKING:
    from typing import IO, Any

    from builder.core.rootfs import Root


def _opener(store: Store, desc: Descriptor) -> Callable[[], IO[bytes]]:
    def open_it() -> IO[bytes]:
        return open_decompressed(store.open_blob(desc.digest))

    return open_it


def layer_dirs(state: StateRoot, store: Store, layers: Sequence[LayerRef]) -> list[Path]:
    """The unpacked (overlay-format) dirs of *layers*, bottom first, unpacking what is missing."""
    cache = LayerCache(state)
    return [cache.unpack(str(lr.diff_id), _opener(store, lr.descriptor)) for lr in layers]


class Workspace:
    """A fresh writable root over *lowers* under ``<state>/run/build-…``; removed on exit."""

    def __init__(self, state: StateRoot, store: Store, lowers: Sequence[LayerRef], *,
                 platform: Platform | None = None, context: Tree | None = None) -> None:
        self.state = state
        self.store = store
        self.lowers = list(lowers)
        self.platform = platform
        self.context = context
        self.dir = state.run / f"build-{os.urandom(8).hex()}"  # (not ``secrets``: its random, hmac, base64)
        self.root: Root
        self._mounts = 0
        self._owner = -1
        #: called with the step's layer id once its layer is made (an incremental COPY's record)
        self.after_commit: Callable[[str], None] | None = None

    def __enter__(self) -> Workspace:
        dirs = layer_dirs(self.state, self.store, self.lowers)
        # held while the dir lives: a killed build's dir is told from a live one's by it
        self._owner = claim_workspace(self.dir)
        self.dir.mkdir(parents=True)
        try:
            # probed on the workspace dir itself: the probe's memo then lives in ``run/``
            # (``run/.overlay-ok``), kept from build to build, not in this dir that goes with it
            rootfs.overlay_supported(self.dir)
            self.root = prepare_root(dirs, self.dir / "c")
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            self._release()
            raise
        return self

    def _release(self) -> None:
        release_workspace(self.dir, self._owner)

    def __exit__(self, *exc: object) -> None:
        # Removing an upper dir full of files is slow: rename it away now (it is out of every
        # path at once) and delete it in the background; ``drain_trash`` waits for that.
        trash = self.dir.with_name(f".trash-{self.dir.name}")
        try:
            os.rename(self.dir, trash)
        except OSError:
            shutil.rmtree(self.dir, ignore_errors=True)
            self._release()
            return
        _TRASH.put(trash, self._release)  # still ours (locked) until it is gone

    def _changes(self) -> str | None:
        if self.root.is_overlay:
            return self.root.upper
        if not self.root.layers:
            return self.root.path  # a root with nothing below: the tree is the whole diff
        return None

    def can_adopt(self) -> bool:
        """Whether the step's changes are a dir the layer cache can take as a layer."""
        return self._changes() is not None

    def is_unchanged(self) -> bool:
        changes = self._changes()
        assert changes is not None
        with os.scandir(changes) as it:
            return next(it, None) is None

    def adopt_into_layer_cache(self, diff_id: str) -> None:
        """Move the step's upper dir into the layer cache as the unpacked form of the layer just
        tarred from it (same overlay format), so later steps need not unpack it again."""
        upper = self._changes()
        if upper is None:
            return
        cache = LayerCache(self.state)
        final = cache.path(diff_id)
        if cache.has(diff_id):  # (the same files made before: what their record says holds)
            if self.after_commit is not None:
                self.after_commit(diff_id)
            return
        # the lock ``LayerCache.unpack`` takes for the same layer, so the two never race
        with file_lock(cache.dir / f".{final.name}.lock"), contextlib.suppress(OSError):
            if not final.is_dir():  # else another build got there first: keep theirs
                os.chmod(upper, 0o755)
                os.rename(upper, final)
        if self.after_commit is not None and final.is_dir():
            self.after_commit(diff_id)

    def diff(self, out: Any, *, source_date_epoch: int | None) -> bool:
        return diff(self.root, out, source_date_epoch=source_date_epoch)

    # -- Python on the merged root ---------------------------------------------------------------
    def with_root(self, fn: Callable[[Path, list[Path]], None], *,
                  sources: Sequence[Sequence[Path]] = ()) -> None:
        """Run ``fn(merged_root, source_roots)`` with the root (and each read-only source
        layer stack) mounted, in a forked child whose private mount namespace takes the
        mounts with it when it exits."""
        if not self.root.is_overlay and not any(len(s) > 0 for s in sources):
            assert self.root.path is not None
            fn(Path(self.root.path), [self._empty() for _ in sources])
            return
        self._mounts += 1
        base = self.dir / f"m{self._mounts}"
        base.mkdir()
        targets = [base / "root"] + [base / f"src{i}" for i in range(len(sources))]
        for t in targets:
            t.mkdir()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(r)
            code = 0
            try:
                s = sc.real()
                sc.private_mount_namespace(s)
                if self.root.is_overlay:
                    run = base / "r0"
                    run.mkdir()
                    data = rootfs.link_lowers(self.root, run, None)
                    rootfs.mount_root(s, self.root, str(targets[0]), str(run), data)
                else:
                    assert self.root.path is not None
                    s.mount(self.root.path, str(targets[0]), None, sc.MS_BIND | sc.MS_REC)
                for i, dirs in enumerate(sources):
                    if not dirs:
                        continue
                    src_root = rootfs.Root(layers=tuple(str(d) for d in dirs), readonly=True)
                    run = base / f"r{i + 1}"
                    run.mkdir()
                    if len(dirs) == 1:
                        s.mount(str(dirs[0]), str(targets[i + 1]), None, sc.MS_BIND | sc.MS_REC)
                    else:
                        data = rootfs.link_lowers(src_root, run, None)
                        rootfs.mount_root(s, src_root, str(targets[i + 1]), str(run), data)
                fn(targets[0], targets[1:])
            except BaseException as e:  # noqa: BLE001 - reported to the parent
                kind = "context" if isinstance(e, ContextError) else "build"
                msg = str(e) if isinstance(e, BuildError) else f"{type(e).__name__}: {e}"
                os.write(w, f"{kind}\0{msg}".encode()[:8000])
                code = 1
            finally:
                os._exit(code)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            report = f.read().decode(errors="replace")
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            kind, _, msg = report.partition("\0")
            if kind == "context":
                raise ContextError(msg)
            raise BuildError(msg or f"file step failed (status {status})")

    def stub_in_upper(self, targets: Sequence[tuple[str, bool]]) -> bool:
        """Leave the mount points *targets* ((path, is_file), as ``run._leave_mount_points``)
        without mounting the root, where that is plain: a kernel overlay root (not rootless)
        in whose merged view every directory on the way is a real directory (no symlink, none
        to make). Then all there is to do is a missing file target's stub, made and removed
        in its directory: here in the upper dir, once that directory and its parents are
        copied up as overlayfs copies them up (mode, owner, xattrs but overlay's own, times;
        a parent's times kept, the stub's directory's moved to now). False: nothing done."""
        root = self.root
        if not root.is_overlay or root.upper is None or "_PYBUILD_ROOTLESS" in os.environ:
            return False
        view = MergedView([*root.layers, root.upper])
        stubs: list[tuple[str, ...]] = []
        for target, is_file in targets:
            comps = clean_name(target)
            dirs = comps[:-1] if is_file else comps
            for i in range(1, len(dirs) + 1):
                found = view.lookup(dirs[:i])
                if found is None or not stat.S_ISDIR(found[1].st_mode):
                    return False
            if is_file and comps:
                found = view.lookup(comps)
                if found is None:
                    stubs.append(comps)
                elif stat.S_ISLNK(found[1].st_mode):
                    return False
        for comps in stubs:
            parent = _copy_up(view, root.upper, comps[:-1])
            stub = os.path.join(parent, comps[-1])
            os.close(os.open(stub, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644))
            os.unlink(stub)
        return True

    def _empty(self) -> Path:
        p = self.dir / "empty"
        p.mkdir(exist_ok=True)
        return p


def copy_attrs(src: str, dst: str, st: os.stat_result | None, *, opaque: bool) -> None:
    """Give *dst* the xattrs of *src* (overlay's opaque mark too if *opaque*, no other of
    overlay's own) and, with *st* (its lstat), its owner and mode."""
    for name in os.listxattr(src, follow_symlinks=False):
        if allowed_xattr(name) or (opaque and name == OVERLAY_OPAQUE_XATTR):
            os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False),
                        follow_symlinks=False)
    if st is not None:
        os.chown(dst, st.st_uid, st.st_gid)
        os.chmod(dst, stat.S_IMODE(st.st_mode))


def _copy_up(view: MergedView, upper: str, comps: tuple[str, ...]) -> str:
    """The upper dir's copy of the directory *comps* (each one on the way made as overlayfs
    copies a directory up, if the upper dir lacks it); its host path."""
    made: list[tuple[str, os.stat_result]] = []
    path = upper
    for i, c in enumerate(comps):
        path = os.path.join(path, c)
        if os.path.lexists(path):
            continue
        found = view.lookup(comps[:i + 1])
        assert found is not None
        os.mkdir(path, 0o700)
        copy_attrs(str(found[0]), path, found[1], opaque=False)
        made.append((path, found[1]))
    for p, st in reversed(made):  # (after their entries were made in them)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    return path


class _Trash:
    """One background thread deleting renamed-away workspaces."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[tuple[Path, Callable[[], None]]] = []
        self._thread: threading.Thread | None = None

    def put(self, path: Path, then: Callable[[], None]) -> None:
        with self._lock:
            self._pending.append((path, then))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._thread = None
                    return
                path, then = self._pending.pop()
            shutil.rmtree(path, ignore_errors=True)
            then()

    def drain(self) -> None:
        while True:
            with self._lock:
                t = self._thread
            if t is None:
                return
            t.join()


_TRASH = _Trash()


def drain_trash() -> None:
    """Wait until every workspace handed to the background remover is gone."""
    _TRASH.drain()


@contextlib.contextmanager
def temp_dir(base: Path) -> Iterator[Path]:
    base.mkdir(parents=True, exist_ok=True)
    p = Path(tempfile.mkdtemp(dir=base))
    try:
        yield p
    finally:
        shutil.rmtree(p, ignore_errors=True)
