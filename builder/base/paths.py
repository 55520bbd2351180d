"""Paths inside a root filesystem: symlinks resolved as the image would see them, never escaping.

One resolver for the build context, file steps, volumes and the sandbox's mount points; and
``remove_tree``, how a run and a removal delete their own directories.
"""

from __future__ import annotations

import contextlib
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


_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def remove_tree(path: str | os.PathLike[str]) -> None:
    """Remove the directory *path* and everything in it, leaving what cannot be removed, as
    ``shutil.rmtree(path, ignore_errors=True)`` does (a symlink, or a file, at *path* is left;
    one inside is removed, never followed: each directory is opened relative to its parent's fd
    with ``O_NOFOLLOW``). Not ``shutil``: it loads ``bz2``, ``lzma`` and ``zlib`` for its
    archives (~2 ms), which a ``run --rm``, a ``run -d`` and an ``rm -f`` would pay to delete a
    run dir and a record."""
    try:
        fd = os.open(path, _OPEN_DIR)
    except OSError:
        return
    try:
        _empty(fd)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.rmdir(path)


def _empty(fd: int) -> None:
    with os.scandir(fd) as it:
        entries = list(it)
    for e in entries:
        try:
            is_dir = e.is_dir(follow_symlinks=False)
        except OSError:
            is_dir = False
        if not is_dir:
            with contextlib.suppress(OSError):
                os.unlink(e.name, dir_fd=fd)
            continue
        try:
            sub = os.open(e.name, _OPEN_DIR, dir_fd=fd)
        except OSError:
            continue
        try:
            _empty(sub)
        finally:
            os.close(sub)
        with contextlib.suppress(OSError):
            os.rmdir(e.name, dir_fd=fd)
