"""Layer codecs: none, gzip and zstd, streamed both ways; diff_id versus digest bookkeeping."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os

import pytest
import zstandard

from registry import compression
from registry import mediatypes as mt
from registry.digest import Digest

DATA = os.urandom(1 << 20) + b"\0" * (3 << 20)  # 4 MiB: several chunks, part compressible


@pytest.mark.parametrize("kind", ["none", "gzip", "zstd"])
def test_encoder_tracks_diff_id_and_digest(kind: str) -> None:
    out = io.BytesIO()
    enc = compression.LayerEncoder(out, kind)
    for i in range(0, len(DATA), 300_000):
        enc.write(DATA[i:i + 300_000])
    enc.close()
    blob = out.getvalue()
    assert enc.diff_id == Digest.of(DATA) and enc.uncompressed_size == len(DATA)
    assert enc.digest == Digest.of(blob) and enc.size == len(blob)
    assert compression.detect(blob[:8]) == kind
    if kind == "none":
        assert blob == DATA
    else:
        assert len(blob) < len(DATA) and enc.digest != enc.diff_id
    back = compression.open_decompressed(io.BytesIO(blob))  # detected from the magic
    assert back.read() == DATA
    assert compression.open_decompressed(io.BytesIO(blob), kind).read() == DATA


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_compressed_output_is_deterministic(kind: str) -> None:
    outs = []
    for _ in range(2):
        out = io.BytesIO()
        enc = compression.LayerEncoder(out, kind)
        enc.write(DATA)
        enc.close()
        outs.append(out.getvalue())
    assert outs[0] == outs[1]


def test_reads_what_other_tools_write() -> None:
    for blob, kind in ((gzip.compress(DATA, mtime=0), "gzip"),
                       (zstandard.ZstdCompressor().compress(DATA), "zstd"),
                       (bz2.compress(DATA), "bzip2"), (lzma.compress(DATA), "xz")):
        assert compression.detect(blob) == kind
        assert hashlib.sha256(compression.open_decompressed(io.BytesIO(blob)).read()).digest() \
            == hashlib.sha256(DATA).digest()


def test_sniff_does_not_consume() -> None:
    kind, stream = compression.sniff(io.BytesIO(b"plain tar bytes"))
    assert kind == "none" and stream.read() == b"plain tar bytes"


def test_corrupt_gzip_raises() -> None:
    blob = bytearray(gzip.compress(DATA))
    blob[len(blob) // 2] ^= 0xFF
    with pytest.raises((OSError, EOFError, ValueError)):
        compression.open_decompressed(io.BytesIO(bytes(blob))).read()


def test_media_types() -> None:
    assert mt.layer_media_type("gzip") == mt.OCI_LAYER_GZIP
    assert mt.layer_media_type("none", docker=True) == mt.DOCKER_LAYER
    assert mt.layer_compression(mt.DOCKER_LAYER_GZIP) == "gzip"
    assert mt.layer_compression(mt.OCI_LAYER_ZSTD) == "zstd"
    with pytest.raises(ValueError):
        mt.layer_media_type("zstd", docker=True)
    with pytest.raises(ValueError):
        compression.LayerEncoder(io.BytesIO(), "lz4")
    assert mt.is_index(mt.DOCKER_MANIFEST_LIST) and mt.is_manifest(mt.OCI_MANIFEST)
    assert mt.config_for(mt.DOCKER_MANIFEST) == mt.DOCKER_CONFIG


def _tar_content_size(tar: bytes) -> int:
    """What ``Store.content_size`` counts, read with tarfile."""
    import tarfile

    total = 0
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r|") as tf:
        for m in tf:
            if m.isreg():
                total += m.size
            elif m.issym():
                total += len(m.linkname.encode())
    return total


def _tar(files: dict[str, bytes], links: dict[str, str]) -> bytes:
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        for name, target in links.items():
            ti = tarfile.TarInfo(name)
            ti.type = tarfile.SYMTYPE
            ti.linkname = target
            tf.addfile(ti)
    return buf.getvalue()


def test_layer_sizer_counts_a_blob_fed_in_any_pieces() -> None:
    """A pull counts a layer's content size from the compressed bytes as they arrive: gzip
    (one member or several, zeros that inflate far) and uncompressed, cut anywhere."""
    tar = _tar({"d/" + "long" * 40: os.urandom(70_001), "zeros": bytes(20 << 20), "e": b""},
               {"sym": "t" * 150, "s2": "zeros"})
    want = _tar_content_size(tar)
    half = len(tar) // 2
    blobs = [gzip.compress(tar), gzip.compress(tar[:half]) + gzip.compress(tar[half:]), tar]
    for blob in blobs:
        for step in (1 << 20, 4099) if blob is tar else (1 << 20, 4099, 7):
            sizer = compression.LayerSizer()
            for i in range(0, len(blob), step):
                sizer.feed(blob[i:i + step])
            assert sizer.total == want, (blob[:2], step)


def test_layer_sizer_gives_up_on_what_it_cannot_count() -> None:
    tar = _tar({"a": b"x" * 1000}, {})
    for blob in (zstandard.ZstdCompressor().compress(tar), b"\x1f\x8b" + b"garbage" * 99,
                 b"not a tar" * 100, gzip.compress(tar)[:-300]):
        sizer = compression.LayerSizer()
        sizer.feed(blob)
        assert sizer.total is None
