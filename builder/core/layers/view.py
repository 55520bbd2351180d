"""``MergedView``: read-only lookups through a stack of overlay-format layer dirs."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from builder.core.layers.common import OVERLAY_OPAQUE_XATTR, clean_name, get_xattr, is_whiteout_stat


# -- the merged view of lower layers -----------------------------------------------------------------
class MergedView:
    """Read-only lookups through a stack of overlay-format layer dirs (given bottom first)."""

    def __init__(self, layers: Sequence[str | os.PathLike[str]]) -> None:
        self.layers = [Path(p) for p in layers]

    def _probe(self, layer: Path, comps: tuple[str, ...]) -> tuple[str, os.stat_result | None, Path]:
        """("found", st, path) | ("hidden"…) | ("absent"…) | ("blocked"…): *comps* in one layer.

        Components are checked one by one with lstat, so no symlink of a layer is followed.
        "blocked" means absent here and hidden below (an opaque ancestor).
        """
        p = layer
        opaque = False
        for i, c in enumerate(comps):
            p = p / c
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                return ("blocked" if opaque else "absent"), None, p
            if i == len(comps) - 1:
                if is_whiteout_stat(st):
                    return "hidden", None, p
                return "found", st, p
            if not stat.S_ISDIR(st.st_mode):
                return "hidden", None, p
            if get_xattr(str(p), OVERLAY_OPAQUE_XATTR, follow=False) == b"y":
                opaque = True
        return "found", os.lstat(layer), layer

    def lookup(self, comps: tuple[str, ...]) -> tuple[Path, os.stat_result] | None:
        """(host path, lstat) of *comps* in the merged view, or None."""
        for layer in reversed(self.layers):
            state, st, p = self._probe(layer, comps)
            if state == "found":
                assert st is not None
                return p, st
            if state != "absent":
                return None
        return None

    def listdir(self, comps: tuple[str, ...]) -> list[str]:
        names: set[str] = set()
        gone: set[str] = set()
        for layer in reversed(self.layers):
            state, st, p = self._probe(layer, comps)
            if state == "absent":
                continue
            if state != "found" or st is None or not stat.S_ISDIR(st.st_mode):
                break
            for n in os.listdir(p):
                if n in names or n in gone:
                    continue
                if is_whiteout_stat(os.lstat(p / n)):
                    gone.add(n)
                else:
                    names.add(n)
            if get_xattr(str(p), OVERLAY_OPAQUE_XATTR, follow=False) == b"y":
                break
        return sorted(names)

    def read_file(self, path: str, *, limit: int = 1 << 20) -> bytes | None:
        """The bytes of a regular file (no symlink followed), or None."""
        found = self.lookup(clean_name(path))
        if found is None or not stat.S_ISREG(found[1].st_mode):
            return None
        fd = os.open(found[0], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            return f.read(limit)


