"""SHA-256 for the build's own hashing: cache keys, checksum lines, names and small context files
with CPython's own ``_sha256`` (~0.3 ms to import), OpenSSL's (``hashlib``, ~5 ms to import, then
several times faster) for large contents. A cached build hashes only small inputs, so it never
imports ``hashlib`` (``registry.digest`` does the same for a listing's small blobs)."""

from __future__ import annotations

import sys

try:  # CPython 3.11's own SHA-256
    from _sha256 import sha256 as _own
except ImportError:  # another interpreter: hashlib's for everything
    _own = None

TYPE_CHECKING = False  # not ``typing``'s (see ARCHITECTURE's "Start-up budget")
if TYPE_CHECKING:
    from hashlib import _Hash

#: a file larger than this is hashed by OpenSSL's SHA-256
SMALL_FILE = 256 << 10
#: bytes of files hashed by CPython's own SHA-256 before OpenSSL's import pays for itself
#: (~5 ms: ~3 MB at the own code's ~0.3 GB/s less OpenSSL's ~1 GB/s with the CPU's instructions)
OWN_BUDGET = 4 << 20
_spent = [0]


def sha256(data: bytes = b"") -> _Hash:
    """A SHA-256 hasher for small inputs (the digest is the same whichever code computes it)."""
    if _own is not None and "_hashlib" not in sys.modules:
        return _own(data)  # type: ignore[no-any-return]
    return large(data)


def for_file(size: int) -> _Hash:
    """A hasher for a file of *size* bytes: the own code for small files, until a build has
    hashed ``OWN_BUDGET`` bytes with it (a first build of a large context imports OpenSSL's
    once rather than hash it all at a third of the speed)."""
    if _own is not None and "_hashlib" not in sys.modules and size <= SMALL_FILE \
            and _spent[0] + size <= OWN_BUDGET:
        _spent[0] += size
        return _own()  # type: ignore[no-any-return]
    return large()


def large(data: bytes = b"") -> _Hash:
    """OpenSSL's SHA-256, for contents of any size (layers' trees, large files)."""
    # here, not at the top: OpenSSL's ~5 ms, which a cached build never pays
    import hashlib

    return hashlib.sha256(data)
