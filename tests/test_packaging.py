"""Pins the packaging: every package directory is listed in pyproject.toml, and the CLI starts."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("grammar", "registry", "builder")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert found - listed == set(), "packages missing from pyproject.toml"
    assert listed - found == set(), "pyproject.toml lists packages that do not exist"


def test_console_script_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "builder.cli", "--help"], capture_output=True,
                         text=True, check=True, cwd=ROOT)
    assert "Usage: pybuild" in out.stdout
    for command in ("build", "run", "images", "push", "pull", "ps", "network", "volume"):
        assert command in out.stdout


def test_ci_runs_lint_then_the_suite_through_make_only() -> None:
    lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    commands = [ln for ln in lines if not ln.startswith(("set ", "cd "))]
    assert commands == ["make lint", "make test"]
    # and the lint target is ruff + mypy over the packages
    make = subprocess.run(["make", "-n", "lint"], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert "ruff check" in make and "mypy registry builder" in make
