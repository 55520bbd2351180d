"""``builder.base.paths.remove_tree``: how a run, a removal and their teardowns delete their own
directories, without ``shutil`` (its archive modules cost a run ~2 ms). It removes what
``shutil.rmtree(path, ignore_errors=True)`` removes, and never follows a link out of the tree.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.base.paths import remove_tree


def _tree(base: Path, outside: Path) -> Path:
    t = base / "t"
    (t / "a" / "b" / "c").mkdir(parents=True)
    (t / "a" / "f").write_text("x")
    (t / "a" / "link-out").symlink_to(outside)  # a link to a directory outside: removed, not followed
    (t / "a" / "b" / "file-link").symlink_to(outside / "keep")
    (t / "dangling").symlink_to("/nonexistent")
    os.mkfifo(t / "fifo")
    os.mknod(t / "null-like", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    (t / "ro").mkdir()
    (t / "ro" / "x").write_text("y")
    (t / "ro").chmod(0o500)  # root removes inside a read-only directory, as rmtree does
    return t


def test_removes_a_tree_and_nothing_a_link_points_at(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("k")
    remove_tree(_tree(tmp_path, outside))
    assert not (tmp_path / "t").exists() and not (tmp_path / "t").is_symlink()
    assert sorted(os.listdir(outside)) == ["keep"] and (outside / "keep").read_text() == "k"


def test_leaves_what_rmtree_leaves(tmp_path: Path) -> None:
    """A link or a file at the path, or no path at all: nothing removed, nothing raised."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "link").symlink_to(outside)
    (tmp_path / "file").write_text("1")
    for name in ("link", "file", "missing"):
        remove_tree(tmp_path / name)
        shutil.rmtree(tmp_path / name, ignore_errors=True)
    assert (tmp_path / "link").is_symlink() and (tmp_path / "file").read_text() == "1"
    assert outside.is_dir()


def test_a_busy_mount_point_stays_and_the_rest_goes(tmp_path: Path) -> None:
    """What cannot be removed (a mount point in use) is left, as with ``ignore_errors``."""
    from builder.base import syscalls as sc

    t = tmp_path / "t"
    (t / "mnt").mkdir(parents=True)
    (t / "other").write_text("o")
    sc.real().mount("tmpfs", str(t / "mnt"), "tmpfs", 0, "size=1m")
    try:
        (t / "mnt" / "inside").write_text("i")
        remove_tree(t)
        assert sorted(os.listdir(t)) == ["mnt"]
    finally:
        sc.real().umount2(str(t / "mnt"))
    remove_tree(t)
    assert not t.exists()


names = st.text(alphabet="abc", min_size=1, max_size=3)
trees = st.recursive(st.sampled_from(["file", "link", "fifo"]),
                     lambda kids: st.dictionaries(names, kids, max_size=4), max_leaves=20)


def _make(at: Path, node: object, outside: Path) -> None:
    if isinstance(node, dict):
        at.mkdir()
        for name, kid in node.items():
            _make(at / name, kid, outside)
    elif node == "file":
        at.write_text("f")
    elif node == "link":
        at.symlink_to(outside)
    else:
        os.mkfifo(at)


@settings(max_examples=60, deadline=None)
@given(tree=st.dictionaries(names, trees, max_size=4))
def test_same_result_as_rmtree(tree: dict[str, object], tmp_path_factory: pytest.TempPathFactory) -> None:
    base = tmp_path_factory.mktemp("rt")
    outside = base / "outside"
    outside.mkdir()
    (outside / "keep").write_text("k")
    for remover, name in ((remove_tree, "ours"), (lambda p: shutil.rmtree(p, ignore_errors=True), "theirs")):
        _make(base / name, tree, outside)
        remover(base / name)
        assert not (base / name).exists()
    assert os.listdir(outside) == ["keep"]
