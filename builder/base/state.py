"""The state root (``--root``, ``PYBUILD_ROOT``) and where everything lives under it, plus file locks.

Every other module asks a ``StateRoot`` for its paths; none builds them by hand.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from builder.base.values import frozen
from registry.leases import file_lock

TYPE_CHECKING = False  # not ``typing``'s: a hot path loads no ``typing`` (~5 ms)
if TYPE_CHECKING:
    from registry.store import Store


def identity(root: str | os.PathLike[str]) -> tuple[str, str]:
    """``(real path, "mount-id maj:min inode")`` of a root directory: what its host state is
    tagged with (a bridge's alias, a cgroup's owner record), so a sweep can tell the root it
    names from another directory that took its path later."""
    path = os.path.realpath(root)
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        with open(f"/proc/self/fdinfo/{fd}") as f:
            mnt_id = next((line.split()[1] for line in f if line.startswith("mnt_id:")), "0")
    finally:
        os.close(fd)
    return path, f"{mnt_id} {os.major(st.st_dev)}:{os.minor(st.st_dev)} {st.st_ino}"


def default_root() -> Path:
    """``$PYBUILD_ROOT``, else ``/var/lib/pybuild`` as root, else (rootless, ``builder.base.rootless``)
    ``$XDG_DATA_HOME/pybuild`` or ``~/.local/share/pybuild``."""
    env = os.environ.get("PYBUILD_ROOT")
    if env:
        return Path(os.path.abspath(env))
    if os.geteuid() == 0 and "_PYBUILD_ROOTLESS" not in os.environ:
        return Path("/var/lib/pybuild")
    from builder.base import rootless

    return rootless.data_home()


@frozen  # (no dataclass made at import: every command loads this)
class StateRoot:
    path: Path

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None) -> StateRoot:
        # made absolute, as dockerd does its --data-root: mount sources must be
        root = cls(Path(os.path.abspath(path)) if path is not None else default_root())
        root.path.mkdir(parents=True, exist_ok=True)
        return root

    # -- areas -------------------------------------------------------------------------------
    @property
    def store(self) -> Path:
        """The OCI image layout (``registry.store``)."""
        return self.path / "store"

    def image_store(self) -> Store:
        """The ``registry.store.Store`` over ``store``."""
        from registry.store import Store

        return Store(self.store)

    @property
    def layers(self) -> Path:
        """Unpacked layers by diff_id, shared by every sandbox (``builder.core.rootfs``)."""
        return self.path / "layers"

    @property
    def cache(self) -> Path:
        """Build cache records (``builder.imagebuild.cache``)."""
        return self.path / "cache"

    @property
    def containers(self) -> Path:
        return self.path / "containers"

    @property
    def volumes(self) -> Path:
        return self.path / "volumes"

    @property
    def networks(self) -> Path:
        return self.path / "networks"

    @property
    def run(self) -> Path:
        """Short-lived per-sandbox state: overlay upper/work dirs, hosts files, mount points."""
        return self.path / "run"

    @property
    def tmp(self) -> Path:
        return self.path / "tmp"

    def area(self, name: str) -> Path:
        p = self.path / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    @contextlib.contextmanager
    def lock(self, name: str, *, shared: bool = False) -> Iterator[None]:
        """An advisory ``flock`` on ``<root>/locks/<name>.lock``, held for the ``with`` body."""
        with file_lock(self.area("locks") / f"{name}.lock", shared=shared):
            yield

