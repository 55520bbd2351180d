"""Pins issue 21's layout of ``builder/``: rooms, one folder per concern, stacked.

A module imports only its own room and the rooms below it: every import statement counts
(module level, in a function, under ``TYPE_CHECKING``), and so do whole-string module names
(lazy-export tables, ``python -m`` names). Each room's ``__init__`` docstring says what it owns
and what it may import, and says the same as ``BELOW`` here. Caches pickled, and helpers
started, by the layout before a move still behave after it.
"""

from __future__ import annotations

import ast
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILDER = REPO / "builder"
# the rooms, bottom to top; a room may import the rooms before it, never one after it
ORDER = ("base", "core", "network", "imagebuild", "runtime", "system", "api", "cli")
BELOW = {room: ORDER[:i] for i, room in enumerate(ORDER)}
MODULE_NAME = re.compile(r"builder(\.\w+)+(:\w+)?")


def module_of(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def names_used(path: Path) -> list[tuple[str, int]]:
    """Every ``builder`` module *path* names, with its line: imports at any level (relative ones
    resolved), and string constants that are whole dotted module names."""
    return names_used_in(path.read_text(), module=module_of(path), package=path.name == "__init__.py",
                         filename=str(path))


def names_used_in(source: str, *, module: str, package: bool, filename: str = "<source>"
                  ) -> list[tuple[str, int]]:
    tree = ast.parse(source, filename=filename)
    package_name = module if package else module.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_name.split(".")[: len(package_name.split(".")) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.append((name, node.lineno))
            found += [(f"{name}.{alias.name}", node.lineno) for alias in node.names]
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and MODULE_NAME.fullmatch(node.value)):
            found.append((node.value.partition(":")[0], node.lineno))
    return [(n, line) for n, line in found if n == "builder" or n.startswith("builder.")]


def room_of(name: str) -> str | None:
    """The room a ``builder.…`` name lies in; None for ``builder`` itself and its attributes
    (``from builder import TYPE_CHECKING``)."""
    parts = name.split(".")
    if len(parts) < 2 or not ((BUILDER / parts[1]).is_dir() or (BUILDER / f"{parts[1]}.py").is_file()):
        return None
    return parts[1]


def violations(room: str, used: list[tuple[str, int]]) -> list[str]:
    bad = []
    for name, line in used:
        target = room_of(name)
        if target is not None and target != room and target not in BELOW[room]:
            bad.append(f"{line}: {name} (room {target!r} is not below {room!r})")
    return bad


def modules() -> list[Path]:
    return sorted(p for p in BUILDER.rglob("*.py") if p != BUILDER / "__init__.py")


def test_every_module_lives_in_a_room() -> None:
    assert sorted(p.name for p in BUILDER.iterdir() if p.suffix == ".py") == ["__init__.py"]
    rooms = sorted(p.name for p in BUILDER.iterdir()
                   if p.is_dir() and (p / "__init__.py").is_file())
    assert rooms == sorted(ORDER), "a new folder under builder/ takes its place in ORDER"
    stray = [p for p in BUILDER.iterdir() if p.is_dir() and p.name not in ORDER
             and p.name != "__pycache__"]
    assert not stray, f"folders that are not rooms (a namespace package hides stale imports): {stray}"


def test_no_module_imports_a_room_above_its_own() -> None:
    checked, bad = 0, []
    for path in modules():
        room = path.relative_to(BUILDER).parts[0]
        checked += 1
        bad += [f"{path.relative_to(REPO)}:{v}" for v in violations(room, names_used(path))]
    assert checked > 150
    assert not bad, "imports that run up the rooms:\n" + "\n".join(bad)


def test_the_rule_sees_function_level_type_checking_and_lazy_names() -> None:
    source = (
        "from builder import TYPE_CHECKING\n"
        "from builder.base import errors\n"
        "if TYPE_CHECKING:\n"
        "    from builder.api.app import make_app\n"          # line 4
        "def f() -> None:\n"
        "    import builder.runtime.containers.service\n"    # line 6
        "LAZY = {'x': 'builder.cli.format:table'}\n"          # line 7
        "LOCAL = 'builder.network.helpers'\n"
    )
    fake = BUILDER / "network" / "fake_for_test.py"  # a module of the network room, in memory
    used = names_used_in(source, module="builder.network.fake_for_test", package=False)
    assert module_of(fake) == "builder.network.fake_for_test"
    bad = violations("network", used)
    assert [b.split(":")[0] for b in bad] == ["4", "4", "6", "7"]
    assert violations("cli", used) == []


def test_each_room_says_what_it_owns_and_may_import() -> None:
    for room in ORDER:
        init = BUILDER / room / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert f"Room ``builder.{room}`` owns " in doc, f"{init.relative_to(REPO)}: what it owns"
        line = next((ln for ln in doc.splitlines() if ln.startswith("May import:")), None)
        assert line is not None, f"{init.relative_to(REPO)}: no 'May import:' line"
        said = re.findall(r"``builder\.(\w+)``", line.partition("(")[0])
        assert said == list(BELOW[room]), f"{room}: docstring says {said}, the order {BELOW[room]}"


def test_architecture_layout_table_matches_the_rooms() -> None:
    text = (REPO / "ARCHITECTURE.md").read_text()
    rows = re.findall(r"^\| `builder/(\w+)/` \|", text, re.M)
    assert rows == list(ORDER)


# -- what an earlier layout left on disk or running ------------------------------------------
def _moved_away(data: bytes) -> bytes:
    """A protocol-2 pickle whose classes' modules are renamed to ones that do not exist: what
    an entry pickled before a move of its classes is after it."""
    out, n = re.subn(rb"c(builder\.[\w.]+)\n", lambda m: b"cbuilder.retired" + m.group(1)[7:] + b"\n",
                     data)
    assert n >= 1
    return out


def test_a_parse_cache_entry_of_moved_classes_is_a_miss(tmp_path: Path) -> None:
    from builder.imagebuild.dockerfile.parsecache import load_cached

    text = "FROM busybox\nRUN echo hi\nCOPY a /b\n"
    first = load_cached(text, filename="Dockerfile", directory=tmp_path)
    (entry,) = tmp_path.iterdir()
    entry.write_bytes(_moved_away(pickle.dumps(pickle.loads(entry.read_bytes()), protocol=2)))
    with pytest.raises(ModuleNotFoundError):
        pickle.loads(entry.read_bytes())
    again = load_cached(text, filename="Dockerfile", directory=tmp_path)
    assert again == first
    assert pickle.loads(entry.read_bytes()) == first  # rewritten in this layout's names


def test_a_template_cache_entry_of_moved_classes_is_a_miss(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from builder.base.template import Template

    monkeypatch.setenv("PYBUILD_GRAMMAR_CACHE", str(tmp_path))
    text = "{{.Name}}: {{range .Tags}}{{.}} {{end}}"
    assert Template(text).execute({"Name": "a", "Tags": ["x", "y"]}) == "a: x y "
    (entry,) = (tmp_path / "templates").iterdir()
    entry.write_bytes(_moved_away(pickle.dumps(pickle.loads(entry.read_bytes()), protocol=2)))
    assert Template(text).execute({"Name": "b", "Tags": []}) == "b: "
    pickle.loads(entry.read_bytes())  # rewritten: loads in this layout


def test_a_cluster_agent_started_under_the_old_module_name_is_still_ours(tmp_path: Path) -> None:
    from builder.base.state import StateRoot
    from builder.network.cluster import membership

    state = StateRoot.open(tmp_path / "root")
    (old,) = membership.AGENT_BEFORE
    assert old != membership.AGENT
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", old,
                             str(state.path)])
    try:
        assert membership.agent_module(proc.pid, state) == old
        other = StateRoot.open(tmp_path / "other")
        assert membership.agent_module(proc.pid, other) is None
    finally:
        proc.kill()
        proc.wait()
