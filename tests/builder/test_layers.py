"""The layer format: applying tars with no path escape, whiteouts/opaque dirs, deterministic diffs."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
from syscounts import write_calls
from test_sandbox_support import tree_digest

from builder.base.errors import LayerError
from builder.core import layers
from registry.digest import WRITE_MAX

CAP_VALUE = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_bind_service+ep


def make_tar(entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            if isinstance(e, tuple):
                ti, data = e
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            else:
                tf.addfile(e)
    return buf.getvalue()


def entry(name: str, kind: bytes = tarfile.REGTYPE, *, linkname: str = "", mode: int = 0o644,
          data: bytes | None = None, **kw: int) -> tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.linkname = linkname
    ti.mode = mode
    ti.mtime = 1000
    for k, v in kw.items():
        setattr(ti, k, v)
    if kind == tarfile.REGTYPE:
        return ti, data if data is not None else b"x"
    return ti


def apply(raw: bytes, dest: Path, **kw: bool) -> str:
    return layers.apply_layer(io.BytesIO(raw), dest, **kw)


@pytest.fixture
def sandbox_dir(tmp_path: Path) -> tuple[Path, Path]:
    """(outside, dest): dest lies inside outside; nothing but dest may change."""
    outside = tmp_path / "outside"
    (outside / "etc").mkdir(parents=True)
    (outside / "etc" / "passwd").write_text("host passwd\n")
    dest = outside / "a" / "b" / "layer"
    dest.mkdir(parents=True)
    return outside, dest


def outside_digest(outside: Path, dest: Path) -> str:
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(outside):
        if Path(dirpath) == dest.parent:
            dirnames[:] = [d for d in dirnames if d != dest.name]
        for n in sorted(dirnames + filenames):
            p = Path(dirpath, n)
            h.update(f"{p}|{p.lstat().st_mode}".encode())
            if p.is_file() and not p.is_symlink():
                h.update(p.read_bytes())
    return h.hexdigest()


HOST_PASSWD = Path("/etc/passwd")


@pytest.mark.parametrize("evil", [
    [entry("../../escaped")],
    [entry("x/../../../escaped")],
])
def test_dotdot_above_the_root_is_refused(sandbox_dir: tuple[Path, Path], evil: list) -> None:  # type: ignore[type-arg]
    outside, dest = sandbox_dir
    before = outside_digest(outside, dest)
    with pytest.raises(LayerError, match="outside the layer root"):
        apply(make_tar(evil), dest)
    assert outside_digest(outside, dest) == before
    assert not (outside / "a" / "escaped").exists()


def test_absolute_names_are_confined(sandbox_dir: tuple[Path, Path]) -> None:
    outside, dest = sandbox_dir
    before = outside_digest(outside, dest)
    host_before = HOST_PASSWD.read_bytes()
    apply(make_tar([entry("/etc/passwd", data=b"evil\n"), entry("./etc/../etc/group", data=b"g\n")]), dest)
    assert (dest / "etc" / "passwd").read_bytes() == b"evil\n"
    assert (dest / "etc" / "group").read_bytes() == b"g\n"
    assert HOST_PASSWD.read_bytes() == host_before
    assert outside_digest(outside, dest) == before


def test_symlink_then_file_through_it_stays_inside(sandbox_dir: tuple[Path, Path]) -> None:
    outside, dest = sandbox_dir
    before = outside_digest(outside, dest)
    target = str(outside / "etc")
    raw = make_tar([
        entry("link", tarfile.SYMTYPE, linkname=target),
        entry("link/passwd", data=b"through the link\n"),
        entry("rel", tarfile.SYMTYPE, linkname="../../../etc"),
        entry("rel/passwd", data=b"through rel\n"),
        entry("abs", tarfile.SYMTYPE, linkname="/etc"),
        entry("abs/.wh.passwd"),  # a whiteout through a link must not delete the host's file
    ])
    apply(raw, dest)
    assert (outside / "etc" / "passwd").read_text() == "host passwd\n"
    assert outside_digest(outside, dest) == before
    assert (dest / "link").is_dir() and not (dest / "link").is_symlink()
    assert (dest / "link" / "passwd").read_text() == "through the link\n"
    assert HOST_PASSWD.exists()
    # merged onto a tree whose directory is a symlink: replaced, never followed
    tree = outside / "a" / "tree"
    (tree).mkdir()
    (tree / "etc").symlink_to(outside / "etc")
    apply(make_tar([entry("etc/passwd", data=b"merged\n")]), tree, overlay_format=False)
    assert (outside / "etc" / "passwd").read_text() == "host passwd\n"
    assert (tree / "etc" / "passwd").read_text() == "merged\n"


@pytest.mark.parametrize("linkname", ["/etc/passwd", "../../../etc/passwd", str(HOST_PASSWD)])
def test_hardlink_to_a_host_file_is_refused(sandbox_dir: tuple[Path, Path], linkname: str) -> None:
    outside, dest = sandbox_dir
    before = outside_digest(outside, dest)
    host_ino = os.stat(HOST_PASSWD).st_ino
    with pytest.raises(LayerError):
        apply(make_tar([entry("h", tarfile.LNKTYPE, linkname=linkname)]), dest)
    assert outside_digest(outside, dest) == before
    assert not (dest / "h").exists() or os.stat(dest / "h").st_ino != host_ino


def test_hardlink_inside_the_layer_and_through_a_symlink(sandbox_dir: tuple[Path, Path]) -> None:
    outside, dest = sandbox_dir
    raw = make_tar([entry("a/f", data=b"same"), entry("a/g", tarfile.LNKTYPE, linkname="a/f"),
                    entry("s", tarfile.SYMTYPE, linkname=str(outside / "etc")),
                    entry("h2", tarfile.LNKTYPE, linkname="s/passwd")])
    with pytest.raises(LayerError):
        apply(raw, dest)
    os.system(f"rm -rf {dest}/*")
    apply(make_tar([entry("a/f", data=b"same"), entry("a/g", tarfile.LNKTYPE, linkname="a/f")]), dest)
    assert os.stat(dest / "a/f").st_ino == os.stat(dest / "a/g").st_ino


def test_device_nodes_are_created_only_inside(sandbox_dir: tuple[Path, Path]) -> None:
    outside, dest = sandbox_dir
    before = outside_digest(outside, dest)
    raw = make_tar([entry("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0, mode=0o666),
                    entry("../dev/null2", tarfile.CHRTYPE, devmajor=1, devminor=3)])
    with pytest.raises(LayerError):
        apply(raw, dest)
    apply(make_tar([entry("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0, mode=0o666)]), dest)
    st = os.lstat(dest / "dev" / "sda")
    assert stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(8, 0)
    assert outside_digest(outside, dest) == before


def test_whiteouts_and_opaque_dirs(tmp_path: Path) -> None:
    l1 = make_tar([entry("a/", tarfile.DIRTYPE, mode=0o755), entry("a/x"), entry("a/y"),
                   entry("b/z"), entry("keep")])
    l2 = make_tar([entry("a/", tarfile.DIRTYPE, mode=0o750), entry("a/.wh..wh..opq"), entry("a/new"),
                   entry(".wh.b"), entry(".wh..wh.plnk")])
    d1, d2 = tmp_path / "1", tmp_path / "2"
    apply(l1, d1)
    apply(l2, d2)
    assert os.getxattr(d2 / "a", layers.OVERLAY_OPAQUE_XATTR) == b"y"
    assert os.lstat(d2 / "b").st_rdev == 0 and stat.S_ISCHR(os.lstat(d2 / "b").st_mode)
    assert not (d2 / ".wh..wh.plnk").exists()
    view = layers.MergedView([d1, d2])
    assert view.listdir(()) == ["a", "keep"]
    assert view.listdir(("a",)) == ["new"]
    assert view.lookup(("b", "z")) is None and view.lookup(("a", "x")) is None
    merged = tmp_path / "m"
    apply(l1, merged, overlay_format=False)
    apply(l2, merged, overlay_format=False)
    assert sorted(os.listdir(merged)) == ["a", "keep"]
    assert os.listdir(merged / "a") == ["new"]
    assert stat.S_IMODE(os.stat(merged / "a").st_mode) == 0o750
    # apply_dir (copy fallback) gives the same tree from the overlay-format dirs
    copy = tmp_path / "c"
    layers.apply_dir(d1, copy)
    layers.apply_dir(d2, copy)
    assert tree_digest(copy) == tree_digest(merged)


def test_diff_id_gzip_and_bad_input(tmp_path: Path) -> None:
    raw = make_tar([entry("f", data=b"hello")])
    want = "sha256:" + hashlib.sha256(raw).hexdigest()
    assert apply(raw, tmp_path / "plain") == want
    assert apply(gzip.compress(raw), tmp_path / "gz") == want
    assert apply(raw + b"\0" * 4096, tmp_path / "pad") == "sha256:" + hashlib.sha256(raw + b"\0" * 4096).hexdigest()
    with pytest.raises(LayerError):
        apply(raw[:700], tmp_path / "cut")
    with pytest.raises(LayerError):
        apply(b"this is not a tar at all" * 40, tmp_path / "junk")


def test_a_big_file_reaches_the_kernel_in_writes_of_at_most_write_max(tmp_path: Path) -> None:
    # the page cache sizes its folios by the write: big writes cost ~4x here (see WRITE_MAX)
    data = os.urandom(4 * WRITE_MAX + 256)
    raw = make_tar([entry("big", data=data)])
    before = write_calls()
    apply(raw, tmp_path / "l")
    assert write_calls() - before == 5
    assert (tmp_path / "l" / "big").read_bytes() == data


def test_forged_overlay_xattrs_are_dropped(tmp_path: Path) -> None:
    ti = tarfile.TarInfo("d")
    ti.type = tarfile.DIRTYPE
    ti.pax_headers = {"SCHILY.xattr.trusted.overlay.opaque": "y", "SCHILY.xattr.user.ok": "1"}
    apply(make_tar([ti]), tmp_path / "x")
    assert os.listxattr(tmp_path / "x" / "d") == ["user.ok"]


def _upper(tmp_path: Path) -> Path:
    """An overlayfs-style upper dir made by hand, with every kind of entry."""
    up = tmp_path / "upper"
    (up / "etc").mkdir(parents=True)
    (up / "etc" / "conf").write_text("c\n")
    os.mknod(up / "etc" / "gone", stat.S_IFCHR | 0o000, 0)  # overlay whiteout
    (up / "opq").mkdir()
    os.setxattr(up / "opq", layers.OVERLAY_OPAQUE_XATTR, b"y")
    os.setxattr(up / "opq", "trusted.overlay.origin", b"\0\1")  # overlay internals: never exported
    (up / "opq" / "only").write_text("o\n")
    (up / "bin").mkdir()
    (up / "bin" / "ping").write_bytes(b"\x7fELF")
    os.chmod(up / "bin" / "ping", 0o4755)
    os.setxattr(up / "bin" / "ping", "security.capability", CAP_VALUE)
    os.link(up / "bin" / "ping", up / "bin" / "ping2")
    os.symlink("ping", up / "bin" / "p")
    os.mkfifo(up / "fifo")
    os.chown(up / "etc" / "conf", 1000, 50)
    for p in [up / "etc" / "conf", up / "bin" / "ping", up / "fifo", up / "opq" / "only"]:
        os.utime(p, (2_000_000_000, 2_000_000_000))
    return up


def test_write_diff_is_deterministic_and_complete(tmp_path: Path) -> None:
    up = _upper(tmp_path)
    out1, out2 = io.BytesIO(), io.BytesIO()
    assert layers.write_diff(up, out1, source_date_epoch=1_700_000_000)
    assert layers.write_diff(up, out2, source_date_epoch=1_700_000_000)
    assert out1.getvalue() == out2.getvalue()
    with tarfile.open(fileobj=io.BytesIO(out1.getvalue())) as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    assert names == ["bin", "bin/p", "bin/ping", "bin/ping2", "etc", "etc/conf", "etc/.wh.gone", "fifo",
                     "opq", "opq/.wh..wh..opq", "opq/only"]
    by = {m.name: m for m in members}
    assert by["bin/ping2"].islnk() and by["bin/ping2"].linkname == "bin/ping"
    assert by["bin/ping"].mode == 0o4755
    assert by["bin/ping"].pax_headers["SCHILY.xattr.security.capability"].encode("utf-8", "surrogateescape") == CAP_VALUE
    assert not any(k.startswith("SCHILY.xattr.trusted.overlay") for m in members for k in m.pax_headers)
    assert by["etc/conf"].uid == 1000 and by["etc/conf"].gid == 50 and by["etc/conf"].uname == ""
    assert all(m.mtime <= 1_700_000_000 for m in members)
    assert by["fifo"].isfifo() and by["bin/p"].issym()
    # applying the diff as a layer gives the upper dir back (whiteout, opaque, caps, links)
    back = tmp_path / "back"
    apply(out1.getvalue(), back)
    assert os.getxattr(back / "bin" / "ping", "security.capability") == CAP_VALUE
    assert os.getxattr(back / "opq", layers.OVERLAY_OPAQUE_XATTR) == b"y"
    assert os.lstat(back / "etc" / "gone").st_rdev == 0
    assert os.stat(back / "bin" / "ping").st_ino == os.stat(back / "bin" / "ping2").st_ino
    assert stat.S_IMODE(os.stat(back / "bin" / "ping").st_mode) == 0o4755


def test_empty_diff_makes_no_layer(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    out = io.BytesIO()
    assert layers.write_diff(tmp_path / "empty", out) is False
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tf:
        assert tf.getmembers() == []


def test_write_dir_diff_against_lowers(tmp_path: Path) -> None:
    l1 = make_tar([entry("etc/", tarfile.DIRTYPE, mode=0o755), entry("etc/a", data=b"a"),
                   entry("etc/b", data=b"b"), entry("root/", tarfile.DIRTYPE, mode=0o700),
                   entry("usr/bin/tool", data=b"t")])
    d1 = tmp_path / "l1"
    apply(l1, d1)
    copy = tmp_path / "copy"
    layers.apply_dir(d1, copy)
    out = io.BytesIO()
    assert layers.write_dir_diff([d1], copy, out) is False
    (copy / "etc" / "b").unlink()
    (copy / "etc" / "a").write_bytes(b"changed")
    (copy / "root" / "new").write_text("n")
    (copy / "usr" / "bin").chmod(0o700)
    out = io.BytesIO()
    assert layers.write_dir_diff([d1], copy, out, source_date_epoch=5)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tf:
        members = {m.name: m for m in tf.getmembers()}
    assert sorted(members) == ["etc", "etc/.wh.b", "etc/a", "root", "root/new", "usr", "usr/bin"]
    assert members["root"].mode == 0o700  # a parent of a change keeps its mode
    assert all(m.mtime <= 5 for m in members.values())
