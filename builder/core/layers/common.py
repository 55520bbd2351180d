"""Shared by the layer modules: names and markers of the format, xattr helpers, decompression."""

from __future__ import annotations

import errno
import io
import os
import stat

from builder.base.errors import LayerError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
#: overlayfs's opaque-directory mark: ``trusted.`` as root; rootless (``builder.base.rootless``, in a
#: user namespace, which joins before this is imported) the kernel's overlay takes ``userxattr``
#: and the mark is ``user.overlay.opaque``
OVERLAY_OPAQUE_XATTR = ("user" if "_PYBUILD_ROOTLESS" in os.environ else "trusted") + ".overlay.opaque"
#: fuse-overlayfs's (rootless fallback): it marks every directory it creates
FUSE_OPAQUE_XATTR = "user.fuseoverlayfs.opaque"
_OVERLAY_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.", "user.fuseoverlayfs.")
XATTR_PAX = "SCHILY.xattr."
COPY_CHUNK = 1 << 20

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


# -- names ------------------------------------------------------------------------------------------
def clean_name(name: str) -> tuple[str, ...]:
    """Split a tar member name into components relative to the root.

    Leading ``/`` and ``.`` components are dropped (the name is taken relative to the root);
    ``..`` is resolved lexically and refused when it would climb above the root.
    """
    out: list[str] = []
    for comp in name.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if not out:
                raise LayerError(f"layer entry {name!r} points outside the layer root")
            out.pop()
            continue
        out.append(comp)
    return tuple(out)


def is_whiteout_stat(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def allowed_xattr(key: str) -> bool:
    # A layer must not forge overlayfs metadata (opaque, redirect, origin…): we write those.
    return not key.startswith(_OVERLAY_XATTR_PREFIXES)


def get_xattr(target: int | str, key: str, *, follow: bool = True) -> bytes | None:
    try:
        return os.getxattr(target, key, follow_symlinks=follow)
    except OSError:
        return None


def read_xattrs(target: int | str, *, follow: bool = True) -> dict[str, bytes]:
    try:
        names = os.listxattr(target, follow_symlinks=follow)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise
    out: dict[str, bytes] = {}
    for k in sorted(names):
        if not allowed_xattr(k):
            continue
        try:
            out[k] = os.getxattr(target, k, follow_symlinks=follow)
        except OSError:
            continue
    return out


def decompressed(stream: IO[bytes]) -> IO[bytes]:
    """Transparent gzip/zstd: peek at the magic number."""
    buffered = stream if isinstance(stream, io.BufferedReader) else io.BufferedReader(_Raw(stream))
    head = buffered.peek(4)[:4]
    if head[:2] == b"\x1f\x8b":
        import gzip

        return gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[return-value]
    if head == b"\x28\xb5\x2f\xfd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(buffered)
    return buffered


class _Raw(io.RawIOBase):
    def __init__(self, src: IO[bytes]) -> None:
        self._src = src

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._src.read(len(b))
        b[: len(data)] = data
        return len(data)


