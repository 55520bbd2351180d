"""A container's mounts: ``-v``/``--mount``/``--tmpfs`` flags plus the image's ``VOLUME``s
(anonymous volumes) resolved through ``builder.runtime.volume`` into ``container.json`` records,
and those records back into sandbox mounts at start.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from builder.base.errors import VolumeError
from builder.base.state import StateRoot
from builder.runtime.containers.recordparts import MountPoint

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from builder.runtime.containers.hostconfig import HostConfig
    from builder.runtime.volume import MountSpec
    from registry.store import Image


def parse_all(hc: HostConfig) -> list[MountSpec]:
    """The ``Binds``, ``Mounts`` and ``Tmpfs`` of a ``HostConfig`` parsed, once (one-line
    ``VolumeError`` on bad syntax or a destination given twice)."""
    from builder.runtime import volume

    cwd = Path(os.getcwd())
    specs = [volume.parse_volume(v, cwd=cwd) for v in hc.binds]
    specs += [m.spec() for m in hc.mounts]
    specs += [volume.parse_tmpfs(f"{path}:{opts}" if opts else path) for path, opts in hc.tmpfs]
    volume.check_destinations(specs)
    return specs


def with_image_volumes(specs: Sequence[MountSpec], image_volumes: Sequence[str]) -> list[MountSpec]:
    """*specs*, then the image's VOLUMEs that none covers, as anonymous volumes (Docker's rule)."""
    from builder.runtime import volume

    out = list(specs)
    taken = {s.destination for s in specs}
    for dst in image_volumes:
        norm = "/" + dst.strip("/")
        if norm not in taken:
            out.append(volume.parse_volume(norm))
            taken.add(norm)
    return out


def _image_dir_for(layer_dirs: Sequence[Path], destination: str) -> Path | None:
    """The topmost unpacked layer holding *destination* as a directory: where a new volume is
    filled from (a directory made across several layers is taken from its topmost one)."""
    from builder.runtime import volume

    for d in reversed(layer_dirs):
        p = volume.resolve_in_root(d, destination)
        if p is not None and p.is_dir():
            return d
    return None


def records(root: StateRoot, specs: Sequence[MountSpec], image: Image) -> list[MountPoint]:
    """Create what the specs need (volumes, bind sources) and return the ``Mounts`` records."""
    from builder.runtime import volume

    if not specs:
        return []
    layer_dirs: list[Path] = []
    if any(s.type == "volume" and not s.nocopy for s in specs):
        from builder.core.rootfs import LayerCache, image_layers

        layer_dirs = image_layers(root.image_store(), image, LayerCache(root))
    out = []
    made: list[str] = []
    try:
        for s in specs:
            src_root = _image_dir_for(layer_dirs, s.destination) if s.type == "volume" else None
            existed = s.type == "volume" and bool(s.source) and _exists(root, s.source)
            m = volume.prepare(root, s, image_rootfs=src_root)
            if m.volume and not existed:
                made.append(m.volume)
            out.append(MountPoint.of(m))
    except BaseException:
        # a bad mount after some volumes were made: those go again (nothing leaked)
        for name in made:
            try:
                volume.remove(root, name, in_use=lambda n: [])
            except Exception:  # noqa: BLE001 - best effort on an error path
                pass
        raise
    return out


def _exists(root: StateRoot, name: str) -> bool:
    return (root.volumes / name / "volume.json").exists()


def sandbox_mounts(records: Sequence[MountPoint]) -> list[Any]:
    """The ``Mounts`` records as ``builder.core.sandbox`` mounts."""
    from builder.core.sandbox.spec import Mount

    out = []
    for r in records:
        dst = r.destination
        if r.type == "tmpfs":
            opts = ["nosuid", "nodev", *(r.tmpfs_options or ())]
            if not r.rw:
                opts.append("ro")
            out.append(Mount(dst, "tmpfs", "tmpfs", tuple(opts)))
            continue
        src = r.source
        if not src or not os.path.exists(src):
            what = f"volume {r.name}" if r.name else f"bind source {src}"
            raise VolumeError(f"cannot mount {what} at {dst}: it no longer exists")
        opts = ["rbind"]
        if not r.rw:
            opts.append("ro")
        out.append(Mount(dst, "bind", src, tuple(opts)))
    return out
