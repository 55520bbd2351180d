"""The public Python API and the module graph behind it.

Pins ``builder.__all__`` and ``registry.__all__`` (lazily imported: ``import builder`` loads
nothing else), runs the README's "Python API" example, and fails on an import cycle between
any two modules (function-level and ``TYPE_CHECKING`` imports included: the graph is built
from the AST of every module) and on ``from x import _private`` across modules.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("builder", "registry", "grammar")

BUILDER_API = [
    "BuildError", "BuildOutcome", "BuildRequest", "Container", "ContainerConfig", "ContainerError",
    "DockerfileSyntaxError", "Endpoint", "Network", "NetworkError", "Output", "PortBinding",
    "RunOptions", "StateRoot", "StepFailed", "Volume", "VolumeError", "build", "create",
    "create_network", "create_volume", "get_container", "get_network", "get_volume", "kill",
    "list_containers", "list_networks", "list_volumes", "prune_containers", "prune_networks",
    "prune_volumes", "read_logs", "remove", "remove_network", "remove_volume", "restart", "run",
    "run_detached", "start", "stop", "wait",
]
REGISTRY_API = [
    "ContainerConfig", "Descriptor", "Digest", "DigestError", "Image", "ImageConfig", "Index", "InvalidReference",
    "Manifest", "NotFound", "Platform", "Reference", "RegistryClient", "RegistryError",
    "Repository", "Store", "Unauthorized", "client_for", "copy", "import_rootfs", "load",
    "parse_end", "pull", "push", "save",
]


# -- the module graph ------------------------------------------------------------------------
def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _base(name: str, node: ast.ImportFrom) -> str:
    """The module an ``ImportFrom`` names, relative imports resolved."""
    if not node.level:
        return node.module or ""
    package = name.split(".") if _is_package(name) else name.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def _ours(name: str) -> str | None:
    """The nearest of our modules that *name* is or lies in (``a.b.C`` -> ``a.b``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(name: str) -> Iterator[tuple[str, int, ast.stmt]]:
    """(imported module of ours, line, statement) for every import anywhere in module *name*:
    top level, in functions, under ``if TYPE_CHECKING``."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _ours(alias.name)
                if target:
                    yield target, node.lineno, node
        elif isinstance(node, ast.ImportFrom):
            base = _base(name, node)
            for alias in node.names:
                if base == "builder" and alias.name == "TYPE_CHECKING":
                    # builder's own cheap flag (no typing import): the package is imported
                    # before any of its modules anyway, so this adds no dependency
                    continue
                # ``from pkg import sub`` imports the submodule ``pkg.sub``
                target = _ours(f"{base}.{alias.name}") if f"{base}.{alias.name}" in MODULES else _ours(base)
                if target:
                    yield target, node.lineno, node


def graph() -> dict[str, dict[str, int]]:
    edges: dict[str, dict[str, int]] = {m: {} for m in MODULES}
    for m in MODULES:
        for target, line, _ in imports(m):
            if target != m:
                edges[m].setdefault(target, line)
    return edges


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def test_the_graph_sees_function_level_and_relative_imports() -> None:
    edges = graph()
    assert len(MODULES) >= 90
    # a top-level import, a function-level one, a relative one (grammar loads its own files)
    assert "registry.store" in edges["registry.archive.load"]
    assert "builder.runtime.containers.supervisor" in edges["builder.runtime.containers.service"]  # in a function
    assert "builder.runtime.containers.runtime" in edges["builder.runtime.containers.repair"]


def test_the_cycle_finder_finds_a_hidden_cycle() -> None:
    edges = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}
    assert cycles(edges) == [["a", "b", "c"]]
    assert cycles({"a": {"b": 1}, "b": {}}) == []


def test_no_import_cycles() -> None:
    edges = graph()
    problems = []
    for comp in cycles(edges):
        links = [f"{a} -> {b} ({MODULES[a].relative_to(REPO)}:{edges[a][b]})"
                 for a in comp for b in sorted(edges[a]) if b in comp]
        problems.append("cycle: " + "; ".join(links))
    assert not problems, "\n".join(problems)


def test_no_module_imports_another_modules_private_names() -> None:
    bad = set()
    for m, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = _base(m, node)
            if _ours(base) in (None, m):
                continue
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and f"{base}.{alias.name}" not in MODULES:
                    bad.add(f"{path.relative_to(REPO)}:{node.lineno}: from {base} import {alias.name}")
    assert not bad, "\n".join(sorted(bad))


# -- the exports -------------------------------------------------------------------------------
@pytest.mark.parametrize(("package", "expected"), [("builder", BUILDER_API), ("registry", REGISTRY_API)])
def test_exports_are_pinned_and_resolve(package: str, expected: list[str]) -> None:
    mod = __import__(package)
    assert mod.__all__ == expected
    assert sorted(mod._EXPORTS) == expected
    for name in expected:
        value = getattr(mod, name)
        target_module, _, attr = mod._EXPORTS[name].partition(":")
        assert value is getattr(sys.modules[target_module], attr)
        assert name in dir(mod)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mod.nope  # noqa: B018


def test_import_is_lazy_and_a_name_is_its_function_even_after_its_module() -> None:
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import builder, registry\n"
        "print(sorted(set(sys.modules) - before - {'__future__'}))\n"
        "import builder.imagebuild.pipeline\n"  # the module behind builder.build, imported first
        "print(callable(builder.build), builder.build is builder.imagebuild.pipeline.run_build)\n"
        "from registry import Store, copy\n"
        "print(Store.__module__, copy.__module__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO).stdout.splitlines()
    assert out == ["['builder', 'registry', 'registry.lazy']", "True True", "registry.store registry.transfer.copier"]


# -- the README example --------------------------------------------------------------------------
def _readme_example() -> tuple[str, list[str]]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(\w*)\n(.*?)```", section, re.S)
    code = next(body for lang, body in blocks if lang == "python")
    output = next(body for lang, body in blocks if lang == "")
    return code, output.splitlines()


def test_readme_python_api_example_runs(busybox: object) -> None:
    code, expected = _readme_example()
    root = busybox.root  # type: ignore[attr-defined]
    env = {**os.environ, "PYBUILD_ROOT": str(root)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == expected
    # it cleaned up after itself: no container, volume or network left
    assert not [p for p in (root / "containers").iterdir() if not p.name.startswith(".")]
    assert not (root / "volumes" / "api-data").exists()
    assert "api-net" not in "".join(p.read_text() for p in (root / "networks").glob("*.json"))
