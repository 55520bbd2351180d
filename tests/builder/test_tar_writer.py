"""The layer tar writer (``builder.core.layers.diff``) packs plain headers itself and writes entries
straight to its sink: the archive must be, byte for byte, the one it writes with every header
made by ``tarfile`` (``TarInfo.tobuf``, PAX), plain entries and those needing PAX records alike,
and one ``tarfile`` reads back."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from builder.core.layers import diff, write_diff


def test_written_tar_is_what_tarfile_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    upper = tmp_path / "upper"
    (upper / "dir" / ("long" * 30)).mkdir(parents=True)
    (upper / "dir" / ("long" * 30) / ("name" * 40)).write_text("long path, PAX record")
    (upper / ("d" * 99)).mkdir()  # 99 + "/" fills the name field exactly
    (upper / ("f" * 100)).write_text("x")
    (upper / "ünïcode").write_bytes(b"u" * 700)
    (upper / "empty").touch()
    (upper / "big").write_bytes(os.urandom(1 << 20 | 7))
    os.link(upper / "big", upper / "big.link")
    (upper / "sym").symlink_to("big")
    (upper / "longsym").symlink_to("t" * 150)
    (upper / "suid").touch()
    (upper / "suid").chmod(0o4755)
    (upper / "owned").touch()
    os.chown(upper / "owned", 2**22, 7)  # past 7 octal digits: a PAX record
    os.mknod(upper / "null", 0o666 | 0o020000, os.makedev(1, 3))
    os.mkfifo(upper / "fifo")
    os.setxattr(upper / "empty", "user.note", b"v\xff")
    os.utime(upper / "dir", (0, 2**40))  # past 11 octal digits
    for epoch in (None, 1):
        out = io.BytesIO()
        assert write_diff(upper, out, source_date_epoch=epoch)
        data = out.getvalue()
        assert len(data) % tarfile.RECORDSIZE == 0
        with monkeypatch.context() as m:  # every header from tarfile's general path
            m.setattr(diff, "_plain_header", lambda _t, _ti: None)
            general = io.BytesIO()
            write_diff(upper, general, source_date_epoch=epoch)
        assert data == general.getvalue()
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            names = tf.getnames()
            assert tf.getmember("big").size == (1 << 20 | 7)
            assert tf.extractfile("ünïcode").read() == b"u" * 700  # type: ignore[union-attr]
            assert tf.getmember("owned").uid == 2**22
            assert tf.getmember("null").isdev()
        assert f"dir/{'long' * 30}/{'name' * 40}" in names


def test_an_empty_upper_is_an_empty_archive(tmp_path: Path) -> None:
    out = io.BytesIO()
    assert not write_diff(tmp_path, out)
    assert out.getvalue() == bytes(tarfile.RECORDSIZE)


def test_plain_headers_are_packed_without_tarfile() -> None:
    """The fast path is taken (else the test above compares tarfile with itself)."""
    ti = tarfile.TarInfo("etc/hostname")
    ti.size, ti.mtime, ti.uname, ti.gname = 6, 1700000000, "", ""
    plain = diff._plain_header(tarfile, ti)
    assert plain == ti.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")
