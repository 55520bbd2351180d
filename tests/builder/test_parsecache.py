"""The typed-Dockerfile disk cache: hits equal fresh parses, errors are never cached.

Also checks that a cache hit does not import Lark (the point of the cache).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from builder.base.errors import DockerfileSyntaxError
from builder.imagebuild.dockerfile import load
from builder.imagebuild.dockerfile.parsecache import load_cached

TEXT = 'FROM busybox AS b\nARG X=1\nRUN --mount=type=cache,target=/c echo $X\nCOPY <<EOF /f\nhi\nEOF\nCMD ["sh"]\n'


def test_hit_equals_a_fresh_parse(tmp_path: Path) -> None:
    first = load_cached(TEXT, filename="Dockerfile", directory=tmp_path)
    assert len(list(tmp_path.glob("*.pickle"))) == 1
    again = load_cached(TEXT, filename="Dockerfile", directory=tmp_path)
    fresh = load(TEXT, filename="Dockerfile")
    assert again == fresh == first
    assert again.tree.nodes == fresh.tree.nodes
    # the file name is part of every location, so it is part of the key
    other = load_cached(TEXT, filename="Other.Dockerfile", directory=tmp_path)
    assert other.stages[0].location.filename == "Other.Dockerfile"
    assert len(list(tmp_path.glob("*.pickle"))) == 2


def test_errors_are_raised_as_load_raises_them_and_not_cached(tmp_path: Path) -> None:
    bad = "FROM busybox\nFROBNICATE x\n"
    with pytest.raises(DockerfileSyntaxError) as direct:
        load(bad, filename="Dockerfile")
    for _ in range(2):
        with pytest.raises(DockerfileSyntaxError) as cached:
            load_cached(bad, filename="Dockerfile", directory=tmp_path)
        assert str(cached.value) == str(direct.value)
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_entry_is_a_miss_and_is_rewritten(tmp_path: Path) -> None:
    load_cached(TEXT, filename="Dockerfile", directory=tmp_path)
    (entry,) = tmp_path.glob("*.pickle")
    entry.write_bytes(b"not a pickle")
    assert load_cached(TEXT, filename="Dockerfile", directory=tmp_path) == load(TEXT)
    assert entry.read_bytes() != b"not a pickle"


def test_a_hit_does_not_import_lark(tmp_path: Path) -> None:
    load_cached(TEXT, filename="Dockerfile", directory=tmp_path)
    code = (
        "import sys; from pathlib import Path\n"
        "from builder.imagebuild.dockerfile.parsecache import load_cached\n"
        f"d = load_cached({TEXT!r}, filename='Dockerfile', directory=Path({str(tmp_path)!r}))\n"
        "assert d.stages[0].name == 'b'\n"
        "print(any(m == 'lark' or m.startswith('lark.') for m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
