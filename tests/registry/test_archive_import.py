"""``import`` of a root filesystem: inputs (tar, compressed tar, directory, stream), the one
layer and config it makes (``--change`` lines: ``tests/builder/test_import_changes.py``)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest
import zstandard

from registry import archive
from registry import mediatypes as mt
from registry.errors import ArchiveError
from registry.reference import Reference
from registry.store import Store


def test_import_tar_gz_zstd_and_stream_give_one_image(busybox_tar: Path, tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    raw = busybox_tar.read_bytes()
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    gz = tmp_path / "rootfs.tar.gz"
    gz.write_bytes(gzip.compress(raw))
    results = [
        archive.import_rootfs(store, busybox_tar, reference=Reference.parse("a:1")),
        archive.import_rootfs(store, gz, reference=Reference.parse("a:2")),
        archive.import_rootfs(store, io.BytesIO(zstandard.ZstdCompressor().compress(raw)),
                              reference=Reference.parse("a:3"), message="from zstd"),
    ]
    for r in results:
        image = store.resolve(str(r.reference))
        assert [str(d) for d in image.diff_ids] == [diff_id]
        assert [(layer.media_type, str(layer.digest)) for layer in image.layers] == [(mt.OCI_LAYER, diff_id)]
        h = image.config.history
        assert len(h) == 1 and h[0]["created"] == image.config.created
    assert results[0].config.history[0]["comment"] == "Imported from -"
    assert results[2].config.data["comment"] == "from zstd"
    assert len(list((store.path / "blobs" / "sha256").iterdir())) == 1 + 3 * 2  # one layer
    assert list((store.path / "ingest").iterdir()) == []


def test_import_directory_keeps_modes_links_and_owners(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\n")
    os.chmod(root / "bin" / "tool", 0o4755)
    os.link(root / "bin" / "tool", root / "bin" / "tool2")
    os.symlink("tool", root / "bin" / "alias")
    (root / "home").mkdir()
    os.chown(root / "home", 1000, 1000)
    store = Store(tmp_path / "s")
    r = archive.import_rootfs(store, root, reference=Reference.parse("dir:1"))
    image = store.resolve("dir:1")
    with tarfile.open(fileobj=store.open_blob(image.layers[0].digest)) as tf:
        members = {m.name: m for m in tf}
    assert list(members) == ["bin", "bin/alias", "bin/tool", "bin/tool2", "home"]
    assert members["bin/tool"].mode == 0o4755
    assert members["bin/tool2"].islnk() and members["bin/tool2"].linkname == "bin/tool"
    assert members["bin/alias"].issym() and members["bin/alias"].linkname == "tool"
    assert (members["home"].uid, members["home"].uname) == (1000, "")
    again = archive.import_rootfs(store, root, reference=Reference.parse("dir:2"))
    assert again.config.diff_ids == r.config.diff_ids  # same tree, same layer


def test_import_refuses_what_is_not_a_tar(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    for data in (b"", b"hello world" * 100, gzip.compress(b"not a tar" * 100)):
        with pytest.raises(ArchiveError, match="not a valid tar archive"):
            archive.import_rootfs(store, io.BytesIO(data), reference=Reference.parse("x:1"))
    with pytest.raises(ArchiveError, match="cannot read the tarball"):
        archive.import_rootfs(store, io.BytesIO(gzip.compress(os.urandom(100000))[:5000]))
    assert store.images() == []
    assert list((store.path / "blobs" / "sha256").iterdir()) == []
    assert list((store.path / "ingest").iterdir()) == []
