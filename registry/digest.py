"""The ``Digest`` value type: parsed and validated once, then passed around typed.

Also hashing of bytes and streams, and a reader that verifies size and digest as it is read.
"""

from __future__ import annotations

from registry.errors import DigestError
from registry.values import frozen

try:  # CPython 3.11's own SHA-256: ~0.3 ms to import, where hashlib loads OpenSSL in ~5 ms
    from _sha256 import sha256 as _builtin_sha256
except ImportError:  # another interpreter: hashlib's for every blob
    _builtin_sha256 = None

TYPE_CHECKING = False  # not ``typing``'s: a hot path loads no ``typing`` (~5 ms)
if TYPE_CHECKING:
    import hashlib
    from typing import BinaryIO

_ALGORITHMS = {"sha256": 64, "sha512": 128}
_HEX = frozenset("0123456789abcdef")  # the encoded part's characters (lowercase hex)
CHUNK = 1 << 20
#: most bytes handed to one ``write(2)`` of a blob or a layer's file. The kernel sizes the
#: page-cache folios it allocates by the write: a 1 MiB write takes order-8 blocks, which this
#: VM's host (free page reporting) has often taken back and must fault in again, at ~4x the
#: cost of the order-6 blocks a 256 KiB write takes (316 MB written: 0.50 s against 0.12 s)
WRITE_MAX = 256 << 10
#: an in-memory blob up to this size (a manifest, a config) is hashed without OpenSSL; above
#: it, hashlib's OpenSSL (with the CPU's SHA instructions) is worth its import
SMALL = 1 << 20


@frozen
class Digest:
    """``algorithm:hex``; only sha256 and sha512, lowercase hex of the right length.

    A frozen value (equal, hashed and ordered by its two fields), checked when made."""

    algorithm: str
    encoded: str

    def __post_init__(self) -> None:
        length = _ALGORITHMS.get(self.algorithm)
        if length is None:
            raise DigestError(f"unsupported digest algorithm {self.algorithm!r}")
        if len(self.encoded) != length or not _HEX.issuperset(self.encoded):
            raise DigestError(f"invalid {self.algorithm} digest {self.algorithm}:{self.encoded}")

    def __lt__(self, other: Digest) -> bool:  # (``>`` is this one reflected)
        if not isinstance(other, Digest):
            return NotImplemented
        return (self.algorithm, self.encoded) < (other.algorithm, other.encoded)

    def __le__(self, other: Digest) -> bool:  # (and ``>=``)
        if not isinstance(other, Digest):
            return NotImplemented
        return (self.algorithm, self.encoded) <= (other.algorithm, other.encoded)

    @classmethod
    def parse(cls, text: str) -> Digest:
        algorithm, sep, encoded = text.partition(":")
        if not sep:
            raise DigestError(f"invalid digest {text!r}: expected algorithm:hex")
        return cls(algorithm, encoded)

    @classmethod
    def of(cls, data: bytes) -> Digest:
        if _builtin_sha256 is not None and len(data) <= SMALL:
            return cls("sha256", str(_builtin_sha256(data).hexdigest()))
        import hashlib  # OpenSSL's: ~5 ms, which a listing that only parses digests never pays

        return cls("sha256", hashlib.sha256(data).hexdigest())

    def verifies(self, data: bytes) -> bool:
        """Whether *data* hashes to this digest (an inspect's config check loads no OpenSSL)."""
        if _builtin_sha256 is not None and self.algorithm == "sha256" and len(data) <= SMALL:
            return str(_builtin_sha256(data).hexdigest()) == self.encoded
        h = self.new_hasher()
        h.update(data)
        return h.hexdigest() == self.encoded

    @classmethod
    def of_stream(cls, stream: BinaryIO) -> tuple[Digest, int]:
        """Hash a stream to its end; returns the digest and the byte count."""
        import hashlib

        h = hashlib.sha256()
        size = 0
        while chunk := stream.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
        return cls("sha256", h.hexdigest()), size

    def new_hasher(self) -> hashlib._Hash:
        import hashlib

        return hashlib.new(self.algorithm)

    @property
    def hex(self) -> str:
        return self.encoded

    @property
    def short(self) -> str:
        """The 12-character form Docker shows as an image ID."""
        return self.encoded[:12]

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.encoded}"


class VerifyingReader:
    """Wraps a stream; raises ``DigestError`` at EOF if the bytes read do not match."""

    def __init__(self, stream: BinaryIO, expected: Digest, size: int | None = None) -> None:
        self._stream = stream
        self._expected = expected
        self._size = size
        self._hash = expected.new_hasher()
        self._read = 0
        self._done = False

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        if data:
            self._hash.update(data)
            self._read += len(data)
            if self._size is not None and self._read > self._size:
                raise DigestError(
                    f"blob {self._expected}: more than the expected {self._size} bytes"
                )
        elif not self._done and n != 0:
            self._done = True
            self.verify()
        return data

    def verify(self) -> None:
        if self._size is not None and self._read != self._size:
            raise DigestError(
                f"blob {self._expected}: got {self._read} bytes, expected {self._size}"
            )
        actual = self._hash.hexdigest()
        if actual != self._expected.encoded:
            raise DigestError(
                f"digest mismatch: expected {self._expected}, got {self._expected.algorithm}:{actual}"
            )

    @property
    def bytes_read(self) -> int:
        return self._read
