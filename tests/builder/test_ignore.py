"""``.dockerignore``: the pattern table in ``testdata/ignore_cases.json``, bad patterns, file
lookup next to a named Dockerfile, and the pruning walk over a real tree."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.base.errors import IgnorePatternError
from builder.imagebuild.ignore import IgnoreMatcher, read_dockerignore

DATA = json.loads(
    (Path(__file__).resolve().parents[2] / "testdata" / "ignore_cases.json").read_text("utf-8")
)
PAIRS = [
    (case["patterns"], path, excluded)
    for case in DATA["cases"]
    for excluded, key in ((True, "excluded"), (False, "included"))
    for path in case[key]
]


def test_table_size() -> None:
    assert len(PAIRS) >= 80


@pytest.mark.parametrize(
    ("patterns", "path", "excluded"), PAIRS, ids=[f"{p}:{q}" for p, q, _ in PAIRS]
)
def test_table(patterns: list[str], path: str, excluded: bool) -> None:
    assert IgnoreMatcher.from_lines(patterns).matches(path) is excluded


@pytest.mark.parametrize("case", DATA["errors"], ids=[str(c["patterns"]) for c in DATA["errors"]])
def test_bad_patterns_name_their_line(case: dict[str, Any]) -> None:
    with pytest.raises(IgnorePatternError) as info:
        IgnoreMatcher.from_lines(case["patterns"], source="ctx/.dockerignore")
    assert str(info.value).startswith(f"ctx/.dockerignore:{case['line']}: ")


def _tree(root: Path, paths: list[str]) -> None:
    for p in paths:
        target = root / p
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(p)


def test_walk_prunes_excluded_directories(tmp_path: Path) -> None:
    _tree(
        tmp_path, [f"node_modules/pkg{i}/index.js" for i in range(50)] + ["src/a.py", "README.md"]
    )
    matcher = IgnoreMatcher.from_lines(["node_modules"])
    got = list(matcher.walk(tmp_path))
    assert got == ["README.md", "src", "src/a.py"]
    # node_modules itself was looked at, nothing inside it
    assert matcher.visited == 4


def test_walk_enters_excluded_directory_only_when_an_exception_may_reinclude(
    tmp_path: Path,
) -> None:
    _tree(tmp_path, ["dir/keep/x", "dir/drop/y", "dir/z", "other/w"])
    matcher = IgnoreMatcher.from_lines(["dir", "other", "!dir/keep"])
    assert list(matcher.walk(tmp_path)) == ["dir/keep", "dir/keep/x"]
    # "other" cannot hold dir/keep: pruned; dir/drop neither
    assert matcher.visited == 6


def test_walk_matches_matches(tmp_path: Path) -> None:
    paths = ["a.go", "b/c.go", "b/d.txt", "e/f/g.md", "e/README.md", ".git/HEAD", "x/.git/y"]
    _tree(tmp_path, paths)
    patterns = ["**/*.go", ".git", "e/**", "!e/README.md"]
    matcher = IgnoreMatcher.from_lines(patterns)
    walked = set(matcher.walk(tmp_path))
    files = {p for p in walked if (tmp_path / p).is_file()}
    assert files == {p for p in paths if not matcher.matches(p)}
    assert files == {"b/d.txt", "e/README.md", "x/.git/y"}


def test_walk_does_not_follow_symlinks(tmp_path: Path) -> None:
    _tree(tmp_path, ["real/file"])
    os.symlink(tmp_path / "real", tmp_path / "link")
    assert list(IgnoreMatcher().walk(tmp_path)) == ["link", "real", "real/file"]


def test_read_dockerignore_prefers_the_dockerfile_specific_file(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("generic\n")
    (tmp_path / "app.Dockerfile.dockerignore").write_text("# specific\nspecific\n")
    specific = read_dockerignore(tmp_path, "app.Dockerfile")
    assert specific.matches("specific") and not specific.matches("generic")
    generic = read_dockerignore(tmp_path, "Dockerfile")
    assert generic.matches("generic") and not generic.matches("specific")
    sub = tmp_path / "build"
    sub.mkdir()
    (sub / "x.Dockerfile.dockerignore").write_text("beside\n")
    assert read_dockerignore(tmp_path, "build/x.Dockerfile").matches("beside")
    assert not read_dockerignore(tmp_path / "build").matches("anything")


def test_read_dockerignore_bad_pattern_names_the_file(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("ok\n\n[bad\n")
    with pytest.raises(IgnorePatternError) as info:
        read_dockerignore(tmp_path, "Dockerfile")
    assert str(info.value) == f"{tmp_path}/.dockerignore:3: syntax error in pattern '[bad'"


_TREE = [
    "a.go", "README.md", "docs/x.md", "docs/img/p.png", "src/keep/gen_keep.go", "src/gen_x.go",
    "src/sub/main.go", "node_modules/m/i.js", "build/o.o", "vendor/v/testdata/t.txt", ".git/HEAD",
]  # fmt: skip
_PATTERN_PIECES = st.sampled_from(
    [
        "*",
        "**",
        "?",
        "/",
        "src",
        "docs",
        "node_modules",
        "build",
        "keep",
        "gen_*",
        "*.go",
        "*.md",
        "[a-m]",
        "!",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_PATTERN_PIECES, min_size=1, max_size=4).map("".join), max_size=5))
def test_walk_agrees_with_matches(
    tmp_path_factory: pytest.TempPathFactory, patterns: list[str]
) -> None:
    """Pruning never changes the answer: walk() yields exactly the entries matches() keeps."""
    try:
        matcher = IgnoreMatcher.from_lines(patterns)
    except IgnorePatternError:
        return
    root = tmp_path_factory.getbasetemp() / "walk-tree"
    if not root.exists():
        _tree(root, _TREE)
    expected = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for name in dirnames + filenames:
            path = name if rel == "." else f"{rel}/{name}"
            if not matcher.matches(path):
                expected.add(path)
    assert set(matcher.walk(root)) == expected
