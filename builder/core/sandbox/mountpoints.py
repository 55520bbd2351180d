"""Mount points a sandbox's root lacks (``/proc``, ``/etc/hosts``…, wherever a mount lands): for an
overlay root, made in a stub layer that becomes its topmost lower (``make_stub_layer``), so none
lands in the upper dir and so in a diff; for a plain (copied) root, created in the tree and
removed again at teardown (``make_mountpoints``, ``remove_mountpoints``).

Not in ``builder.core.rootfs``: a teardown (``rm``) loads neither the layer cache nor overlay code.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from builder.core import layers as _layers

TYPE_CHECKING = False
if TYPE_CHECKING:
    from builder.core.rootfs import Root


def make_stub_layer(root: Root, targets: Sequence[tuple[str, bool]], stub_dir: Path) -> bool:
    """Create in *stub_dir* the mount points missing from the overlay *root*.

    *targets*: (absolute container path, is_file). The stub dir becomes the topmost lower
    layer, so mount points never land in the upper dir (and so never in a diff). Directories
    on the way copy the owner, mode and mtime of the image's own. Returns whether any stub
    was made.
    """
    full = _layers.MergedView([*root.layers, *([root.upper] if root.upper else [])])  # bottom first
    memo: dict[tuple[str, ...], tuple[Path, os.stat_result] | None] = {}

    class _Memo:
        @staticmethod
        def lookup(c: tuple[str, ...]) -> tuple[Path, os.stat_result] | None:
            if c not in memo:
                memo[c] = full.lookup(c)
            return memo[c]

    view = _Memo
    made = False
    for target, is_file in targets:
        comps = _layers.clean_name(target)
        if not comps or view.lookup(comps) is not None:
            continue
        # every existing ancestor must be a directory in the view, else leave it to the kernel
        ok = True
        for i in range(1, len(comps)):
            found = view.lookup(comps[:i])
            if found is None:
                break
            if not stat.S_ISDIR(found[1].st_mode):
                ok = False
                break
        if not ok:
            continue
        p = stub_dir
        for i in range(1, len(comps) + 1):
            p = p / comps[i - 1]
            last = i == len(comps)
            if p.exists() or p.is_symlink():
                continue
            found = view.lookup(comps[:i])
            if last and is_file:
                p.touch(mode=0o644)
            else:
                p.mkdir(mode=0o755)
            if found is not None:
                st = found[1]
                os.chown(p, st.st_uid, st.st_gid)
                os.chmod(p, stat.S_IMODE(st.st_mode))
                os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        made = True
    if made:
        # ancestors' mtimes changed when their children were created: set them again
        for dirpath, _dirs, _files in os.walk(stub_dir, topdown=False):
            rel = os.path.relpath(dirpath, stub_dir)
            if rel == ".":
                continue
            found = view.lookup(_layers.clean_name(rel))
            if found is not None:
                os.utime(dirpath, ns=(found[1].st_atime_ns, found[1].st_mtime_ns))
    return made


def make_mountpoints(tree: Path, targets: Sequence[tuple[str, bool]]) -> list[tuple[str, int, int]]:
    """Create missing mount points in a plain root; returns what to undo with ``remove_mountpoints``."""
    created: list[tuple[str, int, int]] = []
    for target, is_file in targets:
        comps = _layers.clean_name(target)
        p = tree
        for i, c in enumerate(comps):
            parent = p
            p = p / c
            if p.is_symlink():
                break  # resolved by the kernel inside the root
            if p.exists():
                continue
            pst = os.lstat(parent)
            if i == len(comps) - 1 and is_file:
                p.touch(mode=0o644)
            else:
                p.mkdir(mode=0o755)
            created.append((str(p), pst.st_atime_ns, pst.st_mtime_ns))
    return created


def remove_mountpoints(created: Sequence[tuple[str, int, int]]) -> None:
    for path, atime, mtime in reversed(created):
        p = Path(path)
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                p.rmdir()
            elif p.stat().st_size == 0:
                p.unlink()
            os.utime(p.parent, ns=(atime, mtime))
