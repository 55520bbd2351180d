"""Where one build step runs: its parent layers (from the shared layer cache) plus a fresh upper.

File steps (COPY/ADD/WORKDIR) run from Python in a forked child with a private mount namespace
(the overlay vanishes with it); RUN goes through the sandbox. The caller tars the diff.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets as _secrets
import shutil
import stat
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from builder import fileops, paths
from builder.context import Entry, Tree, has_glob
from builder.errors import BuildError, ContextError
from builder.graph.ops import CopySpec, ExecSpec, MkdirSpec, Step
from builder.state import StateRoot
from registry.model import Descriptor, Platform
from registry.store import Store

if TYPE_CHECKING:
    from builder.rootfs import Root
    from builder.solver import LayerRef, StageResult


def is_linked(step: Step) -> bool:
    return isinstance(step.payload, CopySpec) and step.payload.link


def _opener(store: Store, desc: Descriptor) -> Callable[[], IO[bytes]]:
    def open_it() -> IO[bytes]:
        from registry.compression import open_decompressed

        return open_decompressed(store.open_blob(desc.digest))

    return open_it


def layer_dirs(state: StateRoot, store: Store, layers: Sequence[LayerRef]) -> list[Path]:
    """The unpacked (overlay-format) dirs of *layers*, bottom first, unpacking what is missing."""
    from builder.rootfs import LayerCache

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
        self.dir = state.run / f"build-{_secrets.token_hex(8)}"
        self.root: Root
        self._mounts = 0

    def __enter__(self) -> Workspace:
        from builder.rootfs import prepare_root

        dirs = layer_dirs(self.state, self.store, self.lowers)
        self.dir.mkdir(parents=True)
        try:
            self.root = prepare_root(dirs, self.dir / "c")
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        # Removing an upper dir full of files is slow: rename it away now (it is out of every
        # path at once) and delete it in the background; ``drain_trash`` waits for that.
        trash = self.dir.with_name(f".trash-{self.dir.name}")
        try:
            os.rename(self.dir, trash)
        except OSError:
            shutil.rmtree(self.dir, ignore_errors=True)
            return
        _TRASH.put(trash)

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
        from builder.rootfs import LayerCache

        upper = self._changes()
        if upper is None:
            return
        from registry.store import file_lock

        cache = LayerCache(self.state)
        if cache.has(diff_id):
            return
        final = cache.path(diff_id)
        # the lock ``LayerCache.unpack`` takes for the same layer, so the two never race
        with file_lock(cache.dir / f".{final.name}.lock"), contextlib.suppress(OSError):
            if not final.is_dir():  # else another build got there first: keep theirs
                os.chmod(upper, 0o755)
                os.rename(upper, final)

    def diff(self, out: Any, *, source_date_epoch: int | None) -> bool:
        from builder.rootfs import diff

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
        from builder import rootfs
        from builder import syscalls as sc

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
                s.unshare(sc.CLONE_NEWNS)
                s.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
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

    def _empty(self) -> Path:
        p = self.dir / "empty"
        p.mkdir(exist_ok=True)
        return p


class _Trash:
    """One background thread deleting renamed-away workspaces."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[Path] = []
        self._thread: threading.Thread | None = None

    def put(self, path: Path) -> None:
        with self._lock:
            self._pending.append(path)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._thread = None
                    return
                path = self._pending.pop()
            shutil.rmtree(path, ignore_errors=True)

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


# -- executing steps ---------------------------------------------------------------------------------
def run_step(ws: Workspace, step: Step, *, results: dict[int, StageResult],
             secrets: dict[str, bytes], log: Callable[[str], None],
             cancel: threading.Event) -> None:
    p = step.payload
    if isinstance(p, MkdirSpec):
        def mkdir(root: Path, _sources: list[Path]) -> None:
            # as BuildKit: directories WORKDIR creates belong to the current USER
            uid, gid = (fileops.resolve_user(root, p.user, where=f"{step.location}: ")
                        if p.user else (0, 0))
            fileops.mkdir_p(root, p.path, uid=uid, gid=gid)

        ws.with_root(mkdir)
    elif isinstance(p, CopySpec):
        _copy(ws, step, p, results)
    elif isinstance(p, ExecSpec):
        from builder.buildrun import run_exec

        run_exec(ws, step, p, results=results, secrets=secrets, log=log, cancel=cancel)
    else:
        raise BuildError(f"{step.location}: nothing to execute for {step.name}")


def _is_archive(path: str) -> bool:
    from registry.compression import detect

    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return False
    comp = detect(head)
    if comp != "none":
        return True
    return len(head) >= 262 and head[257:262] == b"ustar"


def _download(url: str, checksum: str | None, into: Path, where: str) -> Path:
    import requests

    target = into / f"dl-{hashlib.sha256(url.encode()).hexdigest()[:16]}"
    h = hashlib.sha256()
    try:
        with requests.get(url, stream=True, timeout=30) as resp:
            if resp.status_code != 200:
                raise ContextError(f"{where}: ADD {url}: HTTP {resp.status_code}")
            with open(target, "wb") as f:
                for chunk in resp.iter_content(1 << 20):
                    h.update(chunk)
                    f.write(chunk)
    except requests.RequestException as e:
        raise ContextError(f"{where}: ADD {url}: download failed: {type(e).__name__}: {e}") from None
    if checksum:
        want = checksum.removeprefix("sha256:")
        if want != h.hexdigest():
            raise ContextError(f"{where}: ADD {url}: checksum mismatch: got sha256:{h.hexdigest()}, "
                               f"expected {checksum}")
    return target


def _copy(ws: Workspace, step: Step, spec: CopySpec, results: dict[int, StageResult]) -> None:
    where = step.location
    keyword = "ADD" if spec.add else "COPY"
    # Source layer stacks for --from, mounted read-only next to the root.
    stacks: list[list[Path]] = []
    stack_of: dict[int, int] = {}
    for i, s in enumerate(spec.sources):
        if s.origin == "stage":
            assert s.stage is not None
            lay = list(results[s.stage].layers)
        elif s.origin == "image":
            assert s.image is not None
            from builder.solver import LayerRef

            lay = [LayerRef(d, di) for d, di in zip(s.image.manifest.layers, s.image.config.diff_ids,
                                                    strict=False)]
        else:
            continue
        stack_of[i] = len(stacks)
        stacks.append(layer_dirs(ws.state, ws.store, lay))
    downloads: dict[int, Path] = {}
    for i, s in enumerate(spec.sources):
        if s.origin == "url":
            downloads[i] = _download(s.path, s.checksum, ws.dir, where)

    def work(root: Path, src_roots: list[Path]) -> None:
        own = fileops.Ownership()
        if spec.chown:
            uid, gid = fileops.resolve_user(root, spec.chown, where=f"{where}: ")
            own = fileops.Ownership(uid, gid, spec.chmod)
        elif spec.chmod is not None:
            own = fileops.Ownership(None, None, spec.chmod)
        dest = spec.dest
        dest_host = paths.in_root(root, dest)
        dest_is_dir = dest.endswith("/") or dest_host.is_dir()
        multi = len(spec.sources) > 1
        for i, s in enumerate(spec.sources):
            if s.origin == "heredoc":
                target = dest.rstrip("/") + "/" + s.path if dest_is_dir else dest
                _write_file(root, target, (s.content or "").encode(), own, 0o644)
                continue
            if s.origin == "url":
                name = os.path.basename(urllib.parse.urlparse(s.path).path) or "index.html"
                target = dest.rstrip("/") + "/" + name if dest_is_dir else dest
                data_path = downloads[i]
                st = os.stat(data_path)
                e = Entry(str(data_path), "", st)
                fileops.copy_tree(root, [e], target,
                                  fileops.Ownership(own.uid, own.gid, own.chmod if own.chmod is not None else 0o600),
                                  keep_owner=False)
                continue
            if s.origin == "context":
                tree = ws.context
                if tree is None or tree.root is None:
                    raise ContextError(f"{where}: {keyword} {s.path}: no build context")
                keep_owner = False
            else:
                tree = Tree(src_roots[stack_of[i]], name="--from source")
                keep_owner = True
            matches = tree.match(s.path)
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
                    base = dest.rstrip("/") + "/" + m
                    fileops.copy_tree(root, tree.walk(m, excludes=list(spec.excludes)), base, own,
                                      keep_owner=keep_owner)
                    continue
                if is_dir:
                    entries = list(tree.walk(m, excludes=list(spec.excludes)))
                    # the directory itself: its contents go into dest (which is created)
                    fileops.mkdir_p(root, dest, uid=own.uid or 0, gid=own.gid or 0)
                    fileops.copy_tree(root, entries, dest, own, keep_owner=keep_owner)
                    continue
                if spec.add and s.origin == "context" and _is_archive(str(tree.root / tree._resolve(m))):  # type: ignore[operator]
                    from registry.compression import open_decompressed

                    with open(troot / tree._resolve(m), "rb") as f:
                        fileops.extract_archive(root, open_decompressed(f), dest.rstrip("/") or "/",
                                                where=f"{where}: ")
                    continue
                name = os.path.basename(m)
                target = dest.rstrip("/") + "/" + name if (dest_is_dir or many) else dest
                entries = list(tree.walk(m))
                fileops.copy_tree(root, entries, target, own, keep_owner=keep_owner)

    ws.with_root(work, sources=stacks)


def _write_file(root: Path, path: str, data: bytes, own: fileops.Ownership, mode: int) -> None:
    parent = os.path.dirname(path.rstrip("/")) or "/"
    fileops.mkdir_p(root, parent)
    target = paths.in_root(root, path, follow_last=False)
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    elif target.exists() or target.is_symlink():
        target.unlink()
    with open(target, "wb") as f:
        f.write(data)
    os.chmod(target, own.chmod if own.chmod is not None else mode)
    os.chown(target, own.uid or 0, own.gid or 0)


@contextlib.contextmanager
def temp_dir(base: Path) -> Iterator[Path]:
    base.mkdir(parents=True, exist_ok=True)
    p = Path(tempfile.mkdtemp(dir=base))
    try:
        yield p
    finally:
        shutil.rmtree(p, ignore_errors=True)
