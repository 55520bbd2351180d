"""A layer's content size (an image's SIZE) is counted while the layer is committed, so adding
the image never re-reads the blob; the count is what reading the blob gives."""

from __future__ import annotations

import io
import os
from pathlib import Path

from builder.core.layers import commit_layer, write_diff
from registry.store import Store


def _upper(tmp_path: Path) -> Path:
    upper = tmp_path / "upper"
    (upper / "dir" / ("long" * 30)).mkdir(parents=True)
    (upper / "dir" / ("long" * 30) / ("name" * 40)).write_text("long path, PAX record")
    (upper / "ünïcode").write_bytes(b"u" * 700)
    (upper / "empty").touch()
    (upper / "big").write_bytes(os.urandom(1 << 20 | 7))
    os.link(upper / "big", upper / "big.link")  # counted once
    (upper / "sym").symlink_to("big")
    (upper / "longsym").symlink_to("t" * 150)  # its target in a PAX record
    (upper / "owned").write_text("x" * 3)
    os.chown(upper / "owned", 2**22, 7)
    os.mkfifo(upper / "fifo")
    os.setxattr(upper / "empty", "user.note", b"v\xff")
    (upper / ".wh.gone").touch()
    return upper


def test_commit_records_the_content_size_read_from_the_blob(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    upper = _upper(tmp_path)
    for compression in ("gzip", "none"):
        made = commit_layer(store, lambda sink: write_diff(upper, sink), compression)
        assert made is not None
        desc, _ = made
        memo = store.path / "sizes" / desc.digest.algorithm / desc.digest.encoded
        assert memo.is_file()  # written by the commit, before any image asks
        counted = int(memo.read_text())
        memo.unlink()
        assert store.content_size(desc) == counted  # read from the blob
        assert counted == (1 << 20 | 7) + 700 + 3 + len("long path, PAX record") + 3 + 150


def test_a_blob_that_is_no_tar_records_no_size(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")

    def write(sink: io.BufferedIOBase) -> None:
        sink.write(b"not a tar" * 100)

    made = commit_layer(store, write, "none")  # type: ignore[arg-type]
    assert made is not None
    desc, _ = made
    assert not (store.path / "sizes" / desc.digest.algorithm / desc.digest.encoded).exists()
    assert store.content_size(desc) == desc.size  # unreadable as a tar: its stored size
