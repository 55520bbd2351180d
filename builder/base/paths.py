"""Paths inside a root filesystem: symlinks resolved as the image would see them, never escaping.

One resolver for the build context, file steps, volumes and the sandbox's mount points.
"""

from __future__ import annotations

import os
from pathlib import Path

from builder.base.errors import BuildError

MAX_LINKS = 40


def resolve_parts(root: Path, path: str, *, follow_last: bool = True,
                  error: type[BuildError] = BuildError) -> list[str]:
    """The components of *path* under *root* with every symlink resolved inside *root*:
    ``..`` stops at the root and an absolute link target restarts from it, as ``chroot`` would.
    Missing components are kept as they are. *error* is raised after 40 links."""
    out: list[str] = []
    todo = [p for p in path.split("/") if p]
    hops = 0
    while todo:
        part = todo.pop(0)
        if part == ".":
            continue
        if part == "..":
            if out:
                out.pop()
            continue
        candidate = root.joinpath(*out, part)
        if (todo or follow_last) and candidate.is_symlink():
            hops += 1
            if hops > MAX_LINKS:
                raise error(f"too many levels of symbolic links: {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                out = []
            todo = [p for p in target.split("/") if p] + todo
            continue
        out.append(part)
    return out


def in_root(root: Path, path: str, *, follow_last: bool = True,
            error: type[BuildError] = BuildError) -> Path:
    """The host path of image path *path* under *root* (see ``resolve_parts``)."""
    return root.joinpath(*resolve_parts(root, path, follow_last=follow_last, error=error))
