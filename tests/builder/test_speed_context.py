"""The context walk: its order (which every COPY checksum depends on) and, for a build's
context, the entries kept from the checksum's walk for the COPY that follows."""

from __future__ import annotations

from pathlib import Path

from builder.context import Tree


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
