"""Pins the layering: ``registry`` never imports ``builder``, and the Dockerfile front end
(``FRONT_END``: the Dockerfile modules, ``builder.imagebuild.expand``, ``builder.imagebuild.ignore``, the graph) imports
nothing Linux-specific; ``tests/test_layout.py`` holds the order of builder's rooms."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FRONT_END = ("builder.imagebuild.dockerfile", "builder.imagebuild.expand", "builder.imagebuild.ignore", "builder.imagebuild.graph")
LINUX_SPECIFIC = ("ctypes", "fcntl", "termios", "pty", "resource", "pyroute2",
                  "builder.base.syscalls", "builder.core.sandbox", "builder.core.rootfs", "builder.network",
                  "builder.runtime.containers", "builder.runtime.volume", "builder.core.layers")


def imports_of(path: Path) -> set[str]:
    """Every module an import statement in *path* names (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _names(modules: set[str], prefix: str) -> set[str]:
    return {m for m in modules if m == prefix or m.startswith(prefix + ".")}


def test_imports_of_sees_absolute_and_from_imports() -> None:
    path = REPO / "registry" / "archive" / "load.py"
    assert "registry.store" in imports_of(path)
    assert "builder" not in imports_of(path)


def test_registry_never_imports_builder() -> None:
    modules = sorted((REPO / "registry").rglob("*.py"))
    assert len(modules) >= 8
    for path in modules:
        bad = _names(imports_of(path), "builder")
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


def test_front_end_imports_nothing_linux_specific() -> None:
    checked = 0
    for name in FRONT_END:
        base = REPO.joinpath(*name.split("."))
        for path in [base.with_suffix(".py"), *sorted(base.rglob("*.py"))]:
            if not path.is_file():
                continue
            checked += 1
            mods = imports_of(path)
            for banned in LINUX_SPECIFIC:
                bad = _names(mods, banned)
                assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"
    assert checked >= 15  # every front-end module, wherever the layout puts them
