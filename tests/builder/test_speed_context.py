"""The context walk: its order (which every COPY checksum depends on) and, for a build's
context, the entries kept from the checksum's walk for the COPY that follows."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder.imagebuild.context import HashMemo, Tree, entry_fingerprint


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    for rel in ("b/z.txt", "b/a/1", "b/a/2", "a.txt", "c/d/e/f", "b.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    (root / "b" / "link").symlink_to("z.txt")
    return root


def test_walk_lists_a_directory_then_its_subdirectories_in_order(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    entries = list(Tree(root).walk(""))
    assert [e.dest for e in entries] == [
        "a.txt", "b", "b.txt", "c",  # a directory's entries, sorted, then each subdirectory's
        "b/a", "b/link", "b/z.txt", "b/a/1", "b/a/2",
        "c/d", "c/d/e", "c/d/e/f"]
    link = next(e for e in entries if e.dest == "b/link")
    assert link.link == "z.txt" and link.source == f"{root}/b/link"
    assert [e.dest for e in Tree(root).walk("b", excludes=["a"])] == ["link", "z.txt"]


def test_a_build_context_keeps_its_walks(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    kept, plain = Tree(root, keep_walks=True), Tree(root)
    first = list(kept.walk("b"))
    assert first == list(plain.walk("b"))
    (root / "b" / "z.txt").unlink()  # the COPY copies what the checksum read
    assert list(kept.walk("b")) == first
    assert len(list(plain.walk("b"))) == len(first) - 1
    assert [e.dest for e in kept.walk("b", excludes=["a"])] == ["link"]  # its own walk


def test_a_files_attributes_are_kept_with_its_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _tree(tmp_path)
    os.setxattr(root / "a.txt", "user.k", b"one")
    memo_path = tmp_path / "cache" / "filehash.json"

    def lines() -> list[str]:
        memo = HashMemo(memo_path)
        tree = Tree(root, memo=memo)
        out = [entry_fingerprint(tree, e) for e in tree.walk("")]
        memo.save()
        return out

    first = lines()
    assert "\0x" in next(line for line in first if line.startswith("a.txt\0"))
    with monkeypatch.context() as m:  # a cached walk lists no file's attributes
        m.setattr(os, "listxattr", lambda *a, **k: pytest.fail("listxattr called"))
        assert lines() == first
    os.setxattr(root / "a.txt", "user.k", b"two")  # (the ctime moves: the memo is not trusted)
    changed = lines()
    assert [x for x in changed if x not in first] == [
        next(line for line in changed if line.startswith("a.txt\0"))]
    os.removexattr(root / "a.txt", "user.k")
    assert next(line for line in lines() if line.startswith("a.txt\0")) == \
        next(line for line in first if line.startswith("a.txt\0")).split("\0x")[0] + "\n"
