"""Root filesystems for sandboxes: the shared layer cache, overlayfs roots (copy fallback), diffs.

``LayerCache`` (once per diff_id, atomic, concurrent-safe), ``prepare_root`` → ``Root``, ``diff``.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from builder.base.errors import LayerError, SandboxError
from builder.base.paths import remove_tree
from builder.base.state import StateRoot
from builder.base.values import frozen
from builder.core import layers as _layers
from registry.leases import claim, try_claim

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any, BinaryIO

    from builder.base.syscalls import Syscalls

#: overlayfs options that keep the upper dir a complete, plain diff (no redirects or metacopy);
#: rootless (``builder.base.rootless``) the kernel refuses ``redirect_dir=off`` (it needs trusted
#: xattrs): ``nofollow`` makes no redirects either, and ``userxattr`` marks opaque dirs
OVERLAY_OPTIONS = ("userxattr,redirect_dir=nofollow,index=off,metacopy=off"
                   if "_PYBUILD_ROOTLESS" in os.environ else "redirect_dir=off,index=off,metacopy=off")


@frozen
class Root:
    """The root filesystem of a sandbox.

    Overlay form: ``layers`` (cached lower dirs, bottom first) + ``upper``/``work`` (writable,
    same filesystem). Plain form: ``path``, a directory used as is (the copy fallback keeps the
    layers it was made from in ``layers`` so that ``diff`` can compare). ``readonly`` mounts
    the root read-only either way. ``volatile``: the overlay is mounted ``volatile`` (an
    ``--rm`` container's, whose upper dir is thrown away when it ends; see ``link_lowers``).
    """

    layers: tuple[str, ...] = ()
    upper: str | None = None
    work: str | None = None
    path: str | None = None
    readonly: bool = False
    volatile: bool = False

    def __post_init__(self) -> None:
        if self.path is None and not self.layers:
            raise SandboxError("a root needs layers or a path")
        if self.path is None and (self.upper is None) != (self.work is None):
            raise SandboxError("an overlay root needs both upper and work dirs")
        if self.path is None and self.upper is None and not self.readonly:
            raise SandboxError("an overlay root without an upper dir must be read-only")

    @property
    def is_overlay(self) -> bool:
        return self.path is None


# -- build workspaces under <root>/run ----------------------------------------------------------------
#: a build step's workspace dir (``execute.workspace``), and its name once renamed to be deleted
WORKSPACE_PREFIX = "build-"
_TRASH_PREFIX = ".trash-"


def _owner_lock(run_dir: Path) -> Path:
    return run_dir.parent / f".{run_dir.name.removeprefix(_TRASH_PREFIX)}.lock"


def claim_workspace(run_dir: Path) -> int:
    """Mark *run_dir* (not made yet) as this process's: an fd holding the ``flock`` of a lock
    file beside it, closed by ``release_workspace``. A killed build's lock goes with it, so
    ``reap_workspaces`` tells its leftovers from a live build's."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    return claim(_owner_lock(run_dir))


def release_workspace(run_dir: Path, fd: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        _owner_lock(run_dir).unlink()
    os.close(fd)


def _workspaces(run: Path) -> list[Path]:
    if not run.is_dir():
        return []
    return sorted(p for p in run.iterdir() if p.is_dir() and not p.is_symlink()
                  and p.name.removeprefix(_TRASH_PREFIX).startswith(WORKSPACE_PREFIX))


def dead_workspaces(run: Path) -> list[Path]:
    """Workspace dirs under *run* whose build is gone (killed, or older code's leftovers)."""
    out = []
    for d in _workspaces(run):
        lock = _owner_lock(d)
        if not lock.exists():  # a live build makes its lock first and removes it last
            out.append(d)
            continue
        fd = try_claim(lock)
        if fd is not None:
            os.close(fd)
            out.append(d)
    return out


def reap_workspaces(run: Path) -> list[Path]:
    """Remove the workspaces of builds that are gone (a RUN layer a killed build left), and
    stray owner locks; returns the dirs removed. Live builds' workspaces are left alone."""
    gone = []
    for d in _workspaces(run):
        lock = _owner_lock(d)
        fd = try_claim(lock)
        if fd is None:
            continue
        try:
            remove_tree(d)
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
        finally:
            os.close(fd)
        gone.append(d)
    if run.is_dir():
        for lock in run.glob(f".{WORKSPACE_PREFIX}*.lock"):
            if (run / lock.name[1:].removesuffix(".lock")).exists():
                continue
            fd = try_claim(lock)
            if fd is not None:
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
                os.close(fd)
    return gone


# -- the layer cache ---------------------------------------------------------------------------------
def _hex(diff_id: str) -> str:
    algo, _, hexpart = diff_id.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise LayerError(f"bad diff_id {diff_id!r}")
    return hexpart


class LayerCache:
    """Unpacked layers (overlay format) by diff_id under ``<state>/layers``."""

    def __init__(self, state: StateRoot | Path | str) -> None:
        root = state.layers if isinstance(state, StateRoot) else Path(state) / "layers"
        self.dir = root
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)  # device nodes of images live here: host root only

    def path(self, diff_id: str) -> Path:
        return self.dir / _hex(diff_id)

    def has(self, diff_id: str) -> bool:
        return self.path(diff_id).is_dir()

    def unpack(self, diff_id: str, open_stream: Callable[[], IO[bytes]]) -> Path:
        """The directory of layer *diff_id*, unpacking ``open_stream()`` first if not cached.

        The stream is the layer tar (gzip/zstd are detected); its sha256 must be *diff_id*.
        """
        final = self.path(diff_id)
        if final.is_dir():
            return final
        # claim (not a plain flock): the lock file at its path is always the holder's, so
        # ``dead_unpacks`` tells a killed unpacker's ``.tmp-`` dir by its free (or absent) lock
        lock = self.dir / f".{final.name}.lock"
        fd = claim(lock)
        try:
            if final.is_dir():
                return final
            for dead in self.dir.glob(f"{_UNPACK_PREFIX}{final.name[:16]}-*"):
                remove_tree(dead)  # a killed unpack of this layer
            tmp = self.dir / f"{_UNPACK_PREFIX}{final.name[:16]}-{os.urandom(4).hex()}"
            try:
                with open_stream() as stream:
                    got = _layers.apply_layer(stream, tmp)
                if got != diff_id:
                    raise LayerError(f"layer {diff_id}: its content hashes to {got}")
                os.chmod(tmp, 0o755)
                os.rename(tmp, final)
            except BaseException:
                remove_tree(tmp)
                raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)
            os.close(fd)
        return final

    def unpack_all(
        self,
        layers: Sequence[tuple[str, Callable[[], IO[bytes]]]],
        *,
        progress: Callable[[str, bool], None] | None = None,
    ) -> list[Path]:
        """Unpack (diff_id, opener) pairs, bottom first; *progress(diff_id, cached)* per layer."""
        out = []
        for diff_id, opener in layers:
            cached = self.has(diff_id)
            out.append(self.unpack(diff_id, opener))
            if progress is not None:
                progress(diff_id, cached)
        return out

    def remove(self, diff_id: str) -> None:
        remove_tree(self.path(diff_id))


#: a layer being unpacked: ``.tmp-<first 16 hex of its diff_id>-<random>`` beside the cache's dirs
_UNPACK_PREFIX = ".tmp-"


def dead_unpacks(layers: Path) -> list[Path]:
    """Half-unpacked layers under the layer cache *layers* whose unpacker is gone (killed): no
    live process holds the lock of a layer their name starts with."""
    out = []
    for tmp in sorted(layers.glob(f"{_UNPACK_PREFIX}*")) if layers.is_dir() else []:
        prefix = tmp.name[len(_UNPACK_PREFIX):].split("-")[0]
        live = False
        for lock in layers.glob(f".{prefix}*.lock"):
            fd = try_claim(lock)
            if fd is None:
                live = True
                break
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()  # a killed unpacker's lock: ours now, and nobody else's
            os.close(fd)
        if not live:
            out.append(tmp)
    return out


def reap_dead_unpacks(layers: Path) -> None:
    """Remove ``dead_unpacks``: for whoever finds what a killed process left (the repair of a
    killed start, ``rm``, the next build, ``system check --repair``)."""
    for half in dead_unpacks(layers):
        remove_tree(half)


def image_layers(store: Any, image: Any, cache: LayerCache) -> list[Path]:
    """Unpack the layers of a ``registry.store.Image`` (``image.layers`` + ``image.diff_ids``)."""
    descriptors = list(image.layers)
    diff_ids = [str(d) for d in image.diff_ids]
    if len(diff_ids) != len(descriptors):
        raise LayerError(
            f"image has {len(descriptors)} layers but {len(diff_ids)} diff_ids in its config"
        )

    def opener(desc: Any) -> Callable[[], IO[bytes]]:
        def open_it() -> IO[bytes]:
            # imported only when a layer is not unpacked yet (not on a warm ``run``)
            from registry.compression import open_decompressed

            return open_decompressed(store.open_blob(desc.digest))

        return open_it

    dirs = cache.unpack_all([(d, opener(desc)) for d, desc in zip(diff_ids, descriptors, strict=True)])
    return [Path(p) for p in topmost_layers(dirs)]


def topmost_layers(layer_dirs: Sequence[Path | str]) -> tuple[str, ...]:
    """*layer_dirs* (bottom first) with a repeated layer kept only where it is topmost.

    overlayfs refuses a lowerdir list naming one directory twice (ELOOP), and an image may
    carry the same diff twice (a COPY, then a step producing the same diff). Dropping the
    lower copies changes nothing: the top copy covers every path the lower one has, and the
    layers in between are overridden by it on exactly those paths.
    """
    seen: set[str] = set()
    kept: list[str] = []
    for d in reversed([str(p) for p in layer_dirs]):
        if d not in seen:
            seen.add(d)
            kept.append(d)
    return tuple(reversed(kept))


# -- overlay support -------------------------------------------------------------------------------
_PROBED: dict[int, bool] = {}


def overlay_supported(where: Path) -> bool:
    """Whether an overlay with upper/work dirs on *where*'s filesystem mounts here (probed once)."""
    where.mkdir(parents=True, exist_ok=True)
    dev = os.stat(where).st_dev
    if dev in _PROBED:
        return _PROBED[dev]
    if os.environ.get("PYBUILD_NO_OVERLAY") == "1":
        _PROBED[dev] = False
        return False
    if _ROOTLESS and os.environ.get(FORCE_DRIVER) == FUSE:
        _PROBED[dev] = fuse_usable()
        return _PROBED[dev]
    # a probe costs a fork and a mount: remember a success beside *where* (per filesystem, boot)
    memo = where.parent / ".overlay-ok"
    stamp = f"{dev} {_boot_id()}"
    with contextlib.suppress(OSError):
        if memo.read_text() == stamp:
            _PROBED[dev] = True
            return True
    from builder.base import syscalls as sc

    probe = where / f".overlay-probe-{os.urandom(4).hex()}"
    for d in ("l", "u", "w", "m"):
        (probe / d).mkdir(parents=True)
    ok = False
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 1
            try:
                s = sc.real()
                sc.private_mount_namespace(s)
                os.chdir(probe)
                s.mount("overlay", "m", "overlay", 0, f"lowerdir=l,upperdir=u,workdir=w,{OVERLAY_OPTIONS}")
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        ok = os.waitstatus_to_exitcode(status) == 0
    finally:
        remove_tree(probe)
    if not ok and _ROOTLESS and fuse_usable():  # the kernel's refused in this user namespace
        _FUSE_FALLBACK.add(dev)
        ok = True
    _PROBED[dev] = ok
    if ok and dev not in _FUSE_FALLBACK:
        with contextlib.suppress(OSError):
            tmp = memo.with_name(f".overlay-ok.{os.getpid()}")
            tmp.write_text(stamp)
            os.rename(tmp, memo)
    return ok


#: rootless, the overlay driver: the kernel's overlayfs where it mounts in the user namespace,
#: else fuse-overlayfs (Debian's); ``PYBUILD_ROOTLESS_OVERLAY=fuse-overlayfs`` forces the latter
FORCE_DRIVER = "PYBUILD_ROOTLESS_OVERLAY"
FUSE = "fuse-overlayfs"
_ROOTLESS = "_PYBUILD_ROOTLESS" in os.environ
_FUSE_FALLBACK: set[int] = set()


def fuse_usable() -> bool:
    import shutil  # only a rootless start without kernel overlay asks: a run's budget bars shutil

    return shutil.which(FUSE) is not None and os.access("/dev/fuse", os.R_OK | os.W_OK)


def overlay_driver(where: Path) -> str:
    """What an overlay root on *where*'s filesystem is mounted with: ``overlay`` (the kernel's),
    ``fuse-overlayfs`` (rootless fallback) or ``copy`` (no overlay at all)."""
    if not overlay_supported(where):
        return "copy"
    if _ROOTLESS and (os.environ.get(FORCE_DRIVER) == FUSE or os.stat(where).st_dev in _FUSE_FALLBACK):
        return FUSE
    return "overlay"


def _mount_fuse(target: str, data: str) -> None:
    """fuse-overlayfs on *target* (cwd: the run dir the relative names in *data* start from).
    Its daemon serves the mount until the mount namespace holding it goes."""
    import subprocess

    keep = [o for o in data.split(",") if o.split("=", 1)[0] in ("lowerdir", "upperdir", "workdir")]
    r = subprocess.run([FUSE, "-o", ",".join(keep), target], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise SandboxError(f"fuse-overlayfs on {target}: {r.stderr.strip() or r.returncode}")


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def prepare_root(
    layer_dirs: Sequence[Path], container_dir: Path, *, overlay: bool | None = None, readonly: bool = False,
    volatile: bool = False,
) -> Root:
    """A fresh writable root over *layer_dirs* in *container_dir* (overlay, or a copy where not).

    *overlay*: None probes the filesystem; False forces the copy fallback. *volatile*: an
    overlay root is mounted ``volatile`` (``Root.volatile``).
    """
    container_dir.mkdir(parents=True, exist_ok=True)
    layers = topmost_layers(layer_dirs)
    if overlay is None:
        overlay = overlay_supported(container_dir)
    if overlay and layers:
        upper, work = container_dir / "upper", container_dir / "work"
        upper.mkdir(exist_ok=True)
        work.mkdir(exist_ok=True)
        return Root(layers=layers, upper=str(upper), work=str(work), readonly=readonly, volatile=volatile)
    tree = container_dir / "rootfs"
    tree.mkdir(exist_ok=True)
    os.chmod(tree, 0o755)
    for d in layers:
        _layers.apply_dir(Path(d), tree)
    return Root(layers=layers, path=str(tree), readonly=readonly)


def diff(root: Root, out: BinaryIO | IO[bytes], *, source_date_epoch: int | None = None) -> bool:
    """Tar what ran in *root* changed (``layers.write_diff`` / ``write_dir_diff``); False if nothing."""
    if root.is_overlay:
        if root.upper is None:
            raise SandboxError("a read-only overlay root has no changes to tar")
        return _layers.write_diff(Path(root.upper), out, source_date_epoch=source_date_epoch,
                                  lowers=root.layers if _ROOTLESS else ())
    assert root.path is not None
    return _layers.write_dir_diff(
        [Path(p) for p in root.layers], Path(root.path), out, source_date_epoch=source_date_epoch
    )


def forget_volatile(work: Path) -> None:
    """Let an overlay whose last mount was ``volatile`` mount again. Unmounting a ``volatile``
    overlay skips syncing its upper filesystem (else each ``run --rm`` waits ~5-30 ms for an
    ext4 journal commit of the whole filesystem), and the kernel then refuses to mount that
    work dir until ``work/incompat/volatile`` is removed, lest a crash left the upper dir
    half-written (Documentation/filesystems/overlayfs.rst, "Volatile mount"). Only an
    ``--rm`` container mounts so, and a crash ends it for good: the first look at its record
    after a reboot (``lifecycle.refresh``) removes it, so a mount in the same boot (a
    ``restart``, ``cp`` into it) is the only one that gets here."""
    remove_tree(work / "work" / "incompat" / "volatile")


# -- in the sandbox's own mount namespace ---------------------------------------------------------
def link_lowers(root: Root, run_dir: Path, stub_dir: Path | None, *, direct: bool = False) -> str:
    """Short relative names for the overlay's dirs (the mount data is limited to one page).

    Creates ``run_dir/l/<n>`` symlinks (and ``u``, ``w``); returns the mount data, relative to
    *run_dir*. *direct* (an ``--rm`` container's root): the lower dirs by their paths from
    *run_dir* (``<root>/run/<id>``) when all are in its state root, need no escaping and fit:
    no ``l/`` links to make and remove (each a journalled op: ~0.1 ms, several on a busy disk).
    """
    lowers = list(reversed(topmost_layers(root.layers)))  # overlayfs wants the topmost first
    if stub_dir is not None:
        lowers.insert(0, str(stub_dir))
    upper = (root.upper, root.work) if root.upper is not None and root.work is not None else None
    if upper is not None and root.volatile:
        forget_volatile(Path(upper[1]))
    for name, d in zip("uw", upper or (), strict=False):
        os.symlink(d, run_dir / name)
    if direct and not os.path.islink(run_dir.parent):  # (so ``../..`` from run_dir is its state root)
        top = f"{run_dir.parent.parent}/"
        near = ["../../" + d[len(top):] if d.startswith(top) else "/" for d in lowers]
        data = _overlay_data(root, near, ("u", "w") if upper else None)
        if len(data) < 4096 and not any(n == "/" or set(n) & set(",:\\") for n in near):
            return data
    (run_dir / "l").mkdir(exist_ok=True)
    for i, d in enumerate(lowers):
        os.symlink(d, run_dir / "l" / str(i))
    data = _overlay_data(root, [f"l/{i}" for i in range(len(lowers))], ("u", "w") if upper else None)
    if len(data) >= 4096:
        raise SandboxError(f"too many layers for one overlay mount ({len(lowers)})")
    return data


def _overlay_data(root: Root, lowers: list[str], upper: tuple[str, str] | None) -> str:
    data = "lowerdir=" + ":".join(lowers)
    if upper is not None:
        data += f",upperdir={upper[0]},workdir={upper[1]}" + (",volatile" if root.volatile else "")
    return data + "," + OVERLAY_OPTIONS


def mount_root(sys: Syscalls, root: Root, target: str, run_dir: str, data: str) -> None:
    """Mount *root* on *target* (called in the sandbox's mount namespace)."""
    from builder.base import syscalls as sc

    if not root.is_overlay:
        assert root.path is not None
        sys.mount(root.path, target, None, sc.MS_BIND | sc.MS_REC)
        return
    if len(root.layers) == 1 and root.upper is None and ":" not in data.partition(",")[0]:  # no stub layer
        sys.mount(root.layers[0], target, None, sc.MS_BIND | sc.MS_REC)
        return
    sys.chdir(run_dir)
    try:
        if _ROOTLESS and overlay_driver(Path(run_dir)) == FUSE:
            _mount_fuse(target, data)
            return
        try:
            sys.mount("overlay", target, "overlay", sc.MS_NODEV, data)
        except OSError as e:
            if e.errno != errno.EINVAL or ",volatile" not in data:
                raise
            sys.mount("overlay", target, "overlay", sc.MS_NODEV, data.replace(",volatile", ""))  # kernel < 5.10
    except OSError as e:
        if e.errno == errno.EINVAL and root.upper is None:
            raise SandboxError("this kernel needs two or more layers for a read-only overlay") from e
        raise
    finally:
        sys.chdir("/")
