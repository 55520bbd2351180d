"""Making a mount real for a container: volumes created on first use and filled from the image's
content at the mount point (Docker's rule), ``-v`` bind sources created, ``--mount`` ones checked.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path

from builder.base.errors import BuildError, VolumeError
from builder.base.paths import in_root
from builder.base.state import StateRoot
from builder.runtime.volume.specs import Mount, MountSpec
from builder.runtime.volume.store import Volume, create


def prepare(
    state: StateRoot, spec: MountSpec, *, image_rootfs: Path | None = None,
    labels: Mapping[str, str] | None = None,
) -> Mount:
    """Make what *spec* needs exist and return the mount; a new empty volume is filled from
    *image_rootfs* at the destination (the image's content there), unless ``nocopy``."""
    mode = ",".join(x for x in (("ro" if spec.read_only else ""), spec.selinux) if x)
    if spec.type == "tmpfs":
        return Mount("tmpfs", spec.destination, None, spec.read_only, "", spec.tmpfs_options, mode=mode)
    if spec.type == "bind":
        src = Path(spec.source)
        if not src.exists():
            if not spec.create_source:
                raise VolumeError.invalid(
                    f"invalid mount config for type \"bind\": bind source path does not exist: {src}"
                )
            try:
                src.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise VolumeError(f"cannot create bind source {src}: {e.strerror}") from e
        return Mount("bind", spec.destination, src, spec.read_only, spec.propagation or "rprivate", mode=mode)
    vol = create(state, spec.source or None, labels=labels)
    if image_rootfs is not None and not spec.nocopy:
        populate(vol, image_rootfs, spec.destination)
    return Mount("bind", spec.destination, vol.mountpoint, spec.read_only, "rprivate",
                 volume=vol.name, anonymous=vol.anonymous, mode=mode)


def resolve_in_root(root: Path, path: str) -> Path | None:
    """*path* inside *root* with symlinks followed but confined to *root* (None if missing)."""
    try:
        found = in_root(root, path)
    except BuildError:
        return None
    return found if os.path.lexists(found) else None


def populate(volume: Volume, image_rootfs: Path, destination: str) -> bool:
    """Copy the image's content at *destination* into *volume* if the volume is empty (Docker's
    rule for a volume's first use), keeping owners, modes, times, links and special files.
    Returns whether anything was copied."""
    dst = volume.mountpoint
    if any(os.scandir(dst)):
        return False
    src = resolve_in_root(image_rootfs, destination)
    if src is None or not src.is_dir():
        return False
    st = os.lstat(src)
    os.chown(dst, st.st_uid, st.st_gid)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    _copy_tree(src, dst)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    return True


def _copy_tree(src: Path, dst: Path) -> None:
    links: dict[tuple[int, int], str] = {}
    for dirpath, dirnames, filenames in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        out_dir = dst if rel == "." else dst / rel
        for name in dirnames + filenames:
            s = os.path.join(dirpath, name)
            d = os.path.join(out_dir, name)
            st = os.lstat(s)
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                os.mkdir(d, stat.S_IMODE(mode))
            elif stat.S_ISLNK(mode):
                os.symlink(os.readlink(s), d)
            elif st.st_nlink > 1 and (st.st_dev, st.st_ino) in links:
                os.link(links[(st.st_dev, st.st_ino)], d)
                continue
            elif stat.S_ISREG(mode):
                shutil.copyfile(s, d, follow_symlinks=False)
                if st.st_nlink > 1:
                    links[(st.st_dev, st.st_ino)] = d
            else:  # fifo, socket, device node
                os.mknod(d, mode, st.st_rdev)
            os.lchown(d, st.st_uid, st.st_gid)
            if not stat.S_ISLNK(mode):
                os.chmod(d, stat.S_IMODE(mode))
        # directory times last, once their content is written
    for dirpath, dirnames, filenames in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        for name in dirnames + filenames:
            s = os.path.join(dirpath, name)
            target = dst / rel / name if rel != "." else dst / name
            st = os.lstat(s)
            os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
