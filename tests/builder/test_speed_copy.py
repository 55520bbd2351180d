"""COPY of a context into directories it makes: files made in batches on a few threads, owner
and mode not set again when the new file has them already. The result (and so the layer tar)
is the one the copy made one file at a time, setting everything."""

from __future__ import annotations

import hashlib
import io
import os
import stat
from pathlib import Path

import pytest

from builder.core.layers import write_diff
from builder.imagebuild.context import Tree
from builder.imagebuild.execute import fileops
from builder.imagebuild.execute.fileops import Ownership, copy_tree


def _context(tmp_path: Path) -> Path:
    src = tmp_path / "ctx" / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "g").mkdir()
    os.chmod(src / "g", 0o2775)  # set-group-ID: what is made in it takes its group
    for name, mode in (("plain", 0o644), ("exe", 0o755), ("private", 0o600), ("open", 0o666),
                       ("suid", 0o4755), ("g/in", 0o644), ("a/b/deep", 0o640)):
        (src / name).write_bytes(name.encode() * 50)
        os.chmod(src / name, mode)
    for i in range(300):  # more than a batch
        (src / "a" / f"n{i:03d}").write_text(str(i))
    (src / "empty").touch()
    (src / "sym").symlink_to("a/n001")
    os.link(src / "plain", src / "hard")
    os.setxattr(src / "exe", "user.note", b"kept")
    return src.parent


def _copy(tmp_path: Path, ctx: Path, name: str, own: Ownership, batch: int,
          umask: int | None = None) -> Path:
    root = tmp_path / name
    root.mkdir()
    old = fileops._Files.BATCH, fileops._umask
    fileops._Files.BATCH = batch
    if umask is not None:
        fileops._umask = lambda: umask
    try:
        copy_tree(root, list(Tree(ctx).walk("src")), "/app/src", own, keep_owner=False)
    finally:
        fileops._Files.BATCH, fileops._umask = old
    return root


def _tar_digest(root: Path) -> str:
    out = io.BytesIO()
    write_diff(root, out, source_date_epoch=1000)  # (new directories' times: the copy's)
    return hashlib.sha256(out.getvalue()).hexdigest()


@pytest.mark.parametrize("own", [Ownership(), Ownership(chmod=0o640), Ownership(1000, 1000),
                                 Ownership(0, 0, 0o755)], ids=["plain", "chmod", "chown", "both"])
def test_threaded_copy_makes_the_layer_a_one_by_one_copy_makes(tmp_path: Path, own: Ownership) -> None:
    ctx = _context(tmp_path)
    threaded = _copy(tmp_path, ctx, "threaded", own, 16)
    # one batch on this thread, every owner and mode set again (no umask keeps any whole)
    single = _copy(tmp_path, ctx, "single", own, 10**9, umask=0o7777)
    assert _tar_digest(threaded) == _tar_digest(single)
    src = ctx / "src"
    for path in src.rglob("*"):
        rel = path.relative_to(src)
        st, got = path.lstat(), (threaded / "app" / "src" / rel).lstat()
        assert stat.S_IFMT(got.st_mode) == stat.S_IFMT(st.st_mode), rel
        if path.is_symlink():
            continue
        want_mode = own.chmod if own.chmod is not None else stat.S_IMODE(st.st_mode)
        assert stat.S_IMODE(got.st_mode) == want_mode, rel  # 0666, set-user-ID kept
        assert (got.st_uid, got.st_gid) == (own.uid or 0, own.gid or 0), rel
        if path.is_file():
            assert got.st_mtime_ns == st.st_mtime_ns, rel
            assert (threaded / "app" / "src" / rel).read_bytes() == path.read_bytes()
            assert got.st_nlink == 1, rel  # a context's hard link is copied as two files
    assert os.getxattr(threaded / "app" / "src" / "exe", "user.note") == b"kept"


def test_a_failing_file_fails_the_copy(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    entries = list(Tree(ctx).walk("src"))
    (ctx / "src" / "a" / "n150").unlink()  # gone between the walk and the copy
    root = tmp_path / "root"
    root.mkdir()
    old = fileops._Files.BATCH
    fileops._Files.BATCH = 16
    try:
        with pytest.raises(FileNotFoundError):
            copy_tree(root, entries, "/app", Ownership(), keep_owner=False)
    finally:
        fileops._Files.BATCH = old
