"""Golden cases: ``testdata/dockerfiles/<case>/`` against ``expected.json`` and
``testdata/dockerfiles-invalid/<case>/`` against the exact error line in ``expected``.

Regenerate with ``make golden`` (``python tests/builder/test_dockerfile_golden.py --regen``)
and review the diff.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from builder.base.errors import DockerfileSyntaxError  # noqa: E402
from builder.imagebuild.dockerfile import lint, parse, typed  # noqa: E402
from registry.values import value_fields  # noqa: E402

VALID = ROOT / "testdata" / "dockerfiles"
INVALID = ROOT / "testdata" / "dockerfiles-invalid"


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "__value_fields__") and not isinstance(obj, type):  # (registry.values.frozen)
        out: dict[str, Any] = {"kind": type(obj).__name__}
        for name in value_fields(obj):
            if name == "tree":
                continue
            value = getattr(obj, name)
            if name == "location":
                out["lines"] = [value.start_line, value.end_line, value.column]
                continue
            if name == "from_" and type(obj).__name__ == "Stage":
                continue
            out[name] = _jsonable(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _read(path: Path) -> str:
    return path.read_bytes().decode("utf-8")


def render_valid(case: Path) -> dict[str, Any]:
    """What ``expected.json`` holds for a valid case: the syntax tree (the ``parse --json``
    shape), the typed level (or its error) and the lint warnings."""
    tree = parse(_read(case / "Dockerfile"), filename="Dockerfile")
    out: dict[str, Any] = {"tree": tree.to_json()}
    try:
        out["typed"] = _jsonable(typed(tree))
    except DockerfileSyntaxError as e:
        out["typed_error"] = str(e)
    out["lint"] = [w.render() for w in lint(tree)]
    return out


def render_invalid(case: Path) -> str:
    """The first line of the error: ``Dockerfile:LINE:COL: message``."""
    try:
        typed(parse(_read(case / "Dockerfile"), filename="Dockerfile"))
    except DockerfileSyntaxError as e:
        return str(e)
    raise AssertionError(f"{case.name}: no error")


def _dump(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


VALID_CASES = sorted(p.name for p in VALID.iterdir() if p.is_dir())
INVALID_CASES = sorted(p.name for p in INVALID.iterdir() if p.is_dir())


def test_case_counts() -> None:
    assert len(VALID_CASES) >= 60
    assert len(INVALID_CASES) >= 20


@pytest.mark.parametrize("name", VALID_CASES)
def test_valid_case(name: str) -> None:
    case = VALID / name
    expected = (case / "expected.json").read_text(encoding="utf-8")
    assert _dump(render_valid(case)) == expected


@pytest.mark.parametrize("name", INVALID_CASES)
def test_invalid_case(name: str) -> None:
    case = INVALID / name
    expected = (case / "expected").read_text(encoding="utf-8").rstrip("\n")
    assert render_invalid(case) == expected


@pytest.mark.parametrize(
    "name", ["nested-json", "unterminated-heredoc", "env-no-value", "unknown-flag"]
)
def test_cli_reports_invalid_cases(name: str) -> None:
    """The CLI prints the same first line, then the source line with a caret, and exits 1."""
    case = INVALID / name
    command = "check" if name == "unknown-flag" else "parse"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from builder.cli import main; main()",
            "dockerfile",
            command,
            "Dockerfile",
        ],
        cwd=case,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    expected = (case / "expected").read_text(encoding="utf-8").rstrip("\n")
    assert lines[0] == expected
    line_no, column = (int(x) for x in expected.split(":")[1:3])
    source = (case / "Dockerfile").read_text().splitlines()[line_no - 1]
    assert lines[1] == source
    assert lines[2] == " " * (column - 1) + "^"


def regenerate() -> None:
    for name in VALID_CASES:
        (VALID / name / "expected.json").write_text(
            _dump(render_valid(VALID / name)), encoding="utf-8"
        )
    for name in INVALID_CASES:
        (INVALID / name / "expected").write_text(
            render_invalid(INVALID / name) + "\n", encoding="utf-8"
        )
    print(f"regenerated {len(VALID_CASES)} valid and {len(INVALID_CASES)} invalid cases")


if __name__ == "__main__":
    if sys.argv[1:] == ["--regen"]:
        regenerate()
    else:
        sys.exit("usage: test_dockerfile_golden.py --regen")
