"""``Digest`` parsing and validation, hashing of bytes and streams, the verifying reader."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys

import pytest

from registry.digest import SMALL, Digest, VerifyingReader
from registry.errors import DigestError

HELLO = hashlib.sha256(b"hello").hexdigest()


def test_parse_and_format() -> None:
    d = Digest.parse(f"sha256:{HELLO}")
    assert (d.algorithm, d.encoded, d.hex, d.short) == ("sha256", HELLO, HELLO, HELLO[:12])
    assert str(d) == f"sha256:{HELLO}"
    assert Digest.of(b"hello") == d
    assert Digest.parse("sha512:" + "a" * 128).algorithm == "sha512"


@pytest.mark.parametrize("text, why", [
    ("sha256:short", "invalid sha256 digest"),
    ("sha256:" + "A" * 64, "invalid sha256 digest"),
    ("md5:" + "a" * 32, "unsupported digest algorithm"),
    ("nocolon", "expected algorithm:hex"),
    ("sha256:" + "a" * 65, "invalid sha256 digest"),
])
def test_invalid_digests(text: str, why: str) -> None:
    with pytest.raises(DigestError, match=why):
        Digest.parse(text)


def test_of_stream_counts_and_hashes() -> None:
    data = b"x" * (3 << 20) + b"tail"
    d, size = Digest.of_stream(io.BytesIO(data))
    assert (d, size) == (Digest.of(data), len(data))


def test_verifying_reader() -> None:
    good = VerifyingReader(io.BytesIO(b"hello"), Digest.of(b"hello"), 5)
    assert good.read() == b"hello" and good.read() == b"" and good.bytes_read == 5
    bad = VerifyingReader(io.BytesIO(b"hellO"), Digest.of(b"hello"), 5)
    with pytest.raises(DigestError, match="digest mismatch"):
        while bad.read(2):
            pass
    long = VerifyingReader(io.BytesIO(b"hello world"), Digest.of(b"hello"), 5)
    with pytest.raises(DigestError, match="more than the expected 5 bytes"):
        long.read()
    short = VerifyingReader(io.BytesIO(b"hell"), Digest.of(b"hello"), 5)
    with pytest.raises(DigestError, match="got 4 bytes, expected 5"):
        short.read(), short.read()


def test_digests_are_ordered_values() -> None:
    a, b = Digest.of(b"a"), Digest.of(b"b")
    assert len({a, Digest.parse(str(a)), b}) == 2
    assert sorted([b, a]) == sorted([a, b])


def test_small_blobs_hash_without_openssl() -> None:
    """A manifest or config is hashed and checked by CPython's own SHA-256, so an ``inspect``
    does not pay hashlib's OpenSSL load; a large blob goes through hashlib, with the same result."""
    for data in (b"", b"{}", os.urandom(SMALL), os.urandom(SMALL + 1)):
        d = Digest.of(data)
        assert d == Digest("sha256", hashlib.sha256(data).hexdigest())
        assert d.verifies(data) and not d.verifies(data + b"\n")
    probe = ("import sys; from registry.digest import Digest; d = Digest.of(b'{}'); "
             "assert d.verifies(b'{}'); print('hashlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
