"""The OCI layer format in one place: applying layer tars with no path escape, and writing diffs.

``apply_layer``/``apply_dir`` unpack (overlay format or merged); ``write_diff``/``write_dir_diff`` tar changes, ``write_merged`` a whole merged tree;
``commit_layer`` streams a tar into the store as one blob (compressed, diff_id in the same pass).
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False

# names load on first use: a container start needs only ``view``/``common``, not tar code
_WHERE = {
    "apply_dir": "builder.core.layers.apply", "apply_layer": "builder.core.layers.apply",
    "iter_tar_names": "builder.core.layers.apply",
    "OPAQUE_MARKER": "builder.core.layers.common", "OVERLAY_OPAQUE_XATTR": "builder.core.layers.common",
    "WHITEOUT_PREFIX": "builder.core.layers.common", "clean_name": "builder.core.layers.common",
    "write_diff": "builder.core.layers.diff", "write_dir_diff": "builder.core.layers.diff",
    "write_merged": "builder.core.layers.diff", "write_diff_stack": "builder.core.layers.diff",
    "MergedView": "builder.core.layers.view",
    "commit_layer": "builder.core.layers.commit", "recompress": "builder.core.layers.commit",
}

__all__ = [
    "OPAQUE_MARKER", "OVERLAY_OPAQUE_XATTR", "WHITEOUT_PREFIX", "MergedView", "apply_dir",
    "apply_layer", "clean_name", "commit_layer", "iter_tar_names", "recompress", "write_diff",
    "write_diff_stack", "write_dir_diff", "write_merged",
]

if TYPE_CHECKING:
    from typing import Any

    from builder.core.layers.apply import apply_dir, apply_layer, iter_tar_names
    from builder.core.layers.commit import commit_layer, recompress
    from builder.core.layers.common import (
        OPAQUE_MARKER,
        OVERLAY_OPAQUE_XATTR,
        WHITEOUT_PREFIX,
        clean_name,
    )
    from builder.core.layers.diff import write_diff, write_diff_stack, write_dir_diff, write_merged
    from builder.core.layers.view import MergedView


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'builder.core.layers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
