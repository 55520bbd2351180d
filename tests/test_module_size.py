"""No module over 600 lines (issue 21): a module that grows past it is split by what it holds
(BuildKit's Dockerfile front end keeps commands, parsing, run mounts and flags apart).

Lines are counted as ``wc -l`` counts them: newline characters.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIMIT = 600
CHECKED = ("builder", "registry")


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n")


def test_lines_are_counted_as_wc_does(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_bytes(b"a\n\nb")  # wc -l: 2 (the last line has no newline)
    assert lines(f) == 2


def test_no_module_is_over_600_lines() -> None:
    sizes = {p: lines(p) for top in CHECKED for p in sorted((REPO / top).rglob("*.py"))}
    assert len(sizes) > 100  # the scan sees the package
    over = [f"{p.relative_to(REPO)}: {n} lines" for p, n in sizes.items() if n > LIMIT]
    assert not over, f"modules over {LIMIT} lines (split them by what they hold):\n" + "\n".join(over)
