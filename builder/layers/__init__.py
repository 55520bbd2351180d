"""The OCI layer format in one place: applying layer tars with no path escape, and writing diffs.

``apply_layer``/``apply_dir`` unpack (overlay format or merged); ``write_diff``/``write_dir_diff`` tar changes.
"""

from __future__ import annotations

from builder.layers.apply import apply_dir, apply_layer, iter_tar_names
from builder.layers.common import (
    OPAQUE_MARKER,
    OVERLAY_OPAQUE_XATTR,
    WHITEOUT_PREFIX,
    clean_name,
)
from builder.layers.diff import write_diff, write_dir_diff
from builder.layers.view import MergedView

__all__ = [
    "OPAQUE_MARKER", "OVERLAY_OPAQUE_XATTR", "WHITEOUT_PREFIX", "MergedView", "apply_dir",
    "apply_layer", "clean_name", "iter_tar_names", "write_diff", "write_dir_diff",
]
