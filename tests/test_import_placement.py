"""Function-level imports only where the start-up budget needs them (issue 21).

A module's imports sit at its top, where a reader sees what it depends on. An import inside a
function (``if TYPE_CHECKING`` blocks aside) of module M in module X (in ``builder/`` and
``registry/``) is kept there only when:

(a) M is, or loads at its top, a heavy third-party module (``HEAVY_THIRD_PARTY``: loaded only by
    the command that uses it), or
(b) hoisting it would break a start-up budget: some command family of
    ``tests/test_startup_budget.py`` may load X (X's own top-level import closure is within
    that family's budget) and M's top-level import closure brings a module outside it. A
    budget says what its command does not do (``run`` without ``-t`` sets no terminal mode,
    ``network ls`` spawns no process, ``version`` opens no state root…): an import that would
    add to a command's start-up stays lazy because a budget says so, not because a list does.

Every other function-level import must move to the top.

A third reason is seen but not allowed: (c) hoisting it would make an import-time cycle (X is in
M's top-level import closure, packages whose ``__init__`` a module runs first included, but X's
own packages, which are already under way when X runs). The module graph of tests/test_api.py
has no cycle, but it links a module to the modules it names, not to the packages they are in.
None is left (``test_no_import_is_kept_for_a_cycle``): a new one is taken away by putting the
shared piece where both modules can import it at the top.

The closures are computed statically from the AST for our modules (top-level statements, class
bodies included, ``if TYPE_CHECKING`` and ``except ImportError`` fallbacks excluded, a package's
``__init__`` with each of its modules, a lazy ``_EXPORTS`` name with the module it resolves to);
what an import of the standard library or of a third party loads is asked of a forked
interpreter, once per statement.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

from test_api import MODULES, REPO, _base
from test_startup_budget import budgets, over_budget

# third-party modules that only the commands using them load (a few ms to tens of ms each)
HEAVY_THIRD_PARTY = frozenset({"lark", "aiohttp", "pyroute2", "zstandard", "cryptography",
                               "requests", "urllib3", "certifi", "isal", "tqdm"})
CHECKED = ("builder", "registry")


@dataclass(frozen=True)
class Imported:
    """One import statement: in module *where* at *line*, loading our *modules* (those it
    *named* and the packages they are in) or, for anything else, the *external* statement text
    a probe runs."""

    where: str
    line: int
    text: str
    modules: frozenset[str]
    external: str | None
    named: frozenset[str] = frozenset()


def _ancestors(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))} & set(MODULES)


@cache
def _lazy_names(package: str) -> tuple[dict[str, str], frozenset[str], frozenset[str]]:
    """A lazy package (one with a module ``__getattr__``): its name -> module tables (``_EXPORTS``,
    ``_WHERE``, ``_LAZY``: any top-level dict of strings), the modules its ``__getattr__`` names
    for a name in no table, and the names bound at its top level. Empty for other modules."""
    if package not in MODULES:
        return {}, frozenset(), frozenset()
    tables: dict[str, str] = {}
    fallback: set[str] = set()
    bound: set[str] = set()
    text = MODULES[package].read_text()
    lazy = "lazy_exports(" in text
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            lazy = True
            fallback |= {c.value for c in ast.walk(node) if isinstance(c, ast.Constant)
                         and isinstance(c.value, str) and c.value in MODULES}
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Dict):
            try:
                table = ast.literal_eval(node.value)
            except ValueError:
                continue
            if all(isinstance(v, str) and v.partition(":")[0] in MODULES for v in table.values()):
                tables.update({k: v.partition(":")[0] for k, v in table.items()})
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                bound |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
    if not lazy:
        return {}, frozenset(), frozenset()
    if "lazy_exports" in bound:  # registry.lazy's: its table is the whole story
        fallback = set()
    return tables, frozenset(fallback), frozenset(bound)


def _lazy_target(package: str, name: str) -> set[str]:
    """The modules ``from package import name`` loads through the package's ``__getattr__``."""
    tables, fallback, bound = _lazy_names(package)
    if name in tables:
        return {tables[name], *_ancestors(tables[name])}
    if name in bound:
        return set()
    return {m for f in fallback for m in (f, *_ancestors(f))}


def _resolve(where: str, node: ast.Import | ast.ImportFrom) -> Imported:
    named: set[str] = set()  # what the statement names: a submodule, not the package it is in
    external = None
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] in ("builder", "registry", "grammar"):
                named.add(alias.name)
            else:
                external = ast.unparse(node)
    else:
        base = _base(where, node)
        if base.split(".")[0] in ("builder", "registry", "grammar"):
            for alias in node.names:
                if f"{base}.{alias.name}" in MODULES:
                    named.add(f"{base}.{alias.name}")
                else:  # a name of the module (or resolved by a lazy package's __getattr__)
                    named |= {base, *(m for m in _lazy_target(base, alias.name)
                                      if m not in _ancestors(base) | {base})}
        else:
            external = ast.unparse(node)
    named &= set(MODULES)
    modules = named | {a for m in named for a in _ancestors(m)}
    return Imported(where, node.lineno, ast.unparse(node), frozenset(modules), external,
                    frozenset(named))


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _is_import_fallback(handler: ast.ExceptHandler) -> bool:
    """``except ImportError:`` (or ``ModuleNotFoundError``): it runs only where the ``try``'s
    import fails (another interpreter)."""
    names = {n.id for n in ast.walk(handler.type) if isinstance(n, ast.Name)} if handler.type else set()
    return bool(names) and names <= {"ImportError", "ModuleNotFoundError"}


def statements(name: str) -> Iterator[tuple[bool, Imported]]:
    """(in a function, import) for every import of module *name* but those under
    ``if TYPE_CHECKING`` (whose ``else`` branch runs and counts) and in an ``except ImportError``
    fallback."""

    def walk(node: ast.AST, in_function: bool) -> Iterator[tuple[bool, Imported]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield in_function, _resolve(name, child)
            elif _is_type_checking(child):
                assert isinstance(child, ast.If)
                for stmt in child.orelse:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), in_function)
            elif isinstance(child, ast.ExceptHandler) and _is_import_fallback(child):
                continue
            else:
                fn = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                yield from walk(child, in_function or fn)

    yield from walk(ast.parse(MODULES[name].read_text(), filename=str(MODULES[name])), False)


@cache
def _statements(name: str) -> tuple[tuple[bool, Imported], ...]:
    return tuple(statements(name))


_PROBE = r"""
import json, os, sys
stmts = json.loads(sys.stdin.read())
out = {}
for stmt in stmts:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        before = set(sys.modules)
        try:
            exec(stmt, {})
            found = sorted(set(sys.modules) - before)
        except Exception as e:
            found = ["!" + repr(e)]
        os.write(w, json.dumps(found).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out[stmt] = json.loads(f.read())
    os.waitpid(pid, 0)
print(json.dumps(out))
"""


def _probe(stmts: list[str]) -> dict[str, frozenset[str]]:
    r = subprocess.run([sys.executable, "-c", _PROBE], input=json.dumps(stmts), cwd=REPO,
                       capture_output=True, text=True, check=True, timeout=300)
    return {k: frozenset(v) for k, v in json.loads(r.stdout).items()}


@cache
def external_loads() -> dict[str, frozenset[str]]:
    """What each external import statement of our modules loads in a fresh interpreter."""
    return _probe(sorted({imp.external for m in MODULES for _, imp in _statements(m) if imp.external}))


@cache
def _external(stmt: str) -> frozenset[str]:
    """What *stmt* loads (one of our modules' statements, or one a test makes up)."""
    loads = external_loads()
    return loads[stmt] if stmt in loads else _probe([stmt])[stmt]


@cache
def closure(name: str) -> frozenset[str]:
    """Every module that importing our module *name* loads: its packages, its top-level
    imports' closures (ours by the AST, the others by the probe)."""
    seen: set[str] = set()
    todo = [name, *_ancestors(name)]
    loads = external_loads()
    found: set[str] = set()
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        found.add(m)
        for in_function, imp in _statements(m):
            if in_function:
                continue
            todo.extend(imp.modules)
            if imp.external:
                found |= loads[imp.external]
    return frozenset(found)


def _loads_of(imp: Imported) -> frozenset[str]:
    mods: set[str] = set()
    for m in imp.modules:
        mods |= closure(m)
    if imp.external:
        mods |= _external(imp.external)
    return frozenset(mods)


def _comes_back(imp: Imported) -> bool:
    """Whether the top-level imports of what *imp* names lead back to the module it is in, X.
    X is being imported then: a package of a module reached is run unless it is X or a package
    X is in (their ``__init__`` is already under way: Python imports a package before its
    modules, and does not run it again); X itself, or a package of it, counts when a statement
    names it (``from package import name`` needs the name bound)."""
    x = imp.where
    under_way = {x, *_ancestors(x)}
    seen: set[str] = set()
    todo = list(imp.named)
    while todo:
        m = todo.pop()
        if m == x:
            return True
        if m in seen:
            continue
        seen.add(m)
        todo.extend(a for a in _ancestors(m) if a not in under_way)
        for in_function, other in _statements(m):
            if not in_function:
                todo.extend(other.named)
    return False


def why_lazy(imp: Imported, families: dict[str, dict[str, Any]]) -> str | None:
    """The reason a function-level import stays in its function, None when it must move up."""
    here = closure(imp.where)
    named = {imp.external.split()[1].split(".")[0]} if imp.external else set()
    heavy = sorted((named | {m.split(".")[0] for m in _loads_of(imp) - here}) & HEAVY_THIRD_PARTY)
    if heavy:  # M, or what M imports at its top (larkglue's lark)
        return f"(a) heavy third party {heavy[0]}"
    for family, budget in families.items():
        if over_budget(set(here), **budget):
            continue  # this family cannot load the module
        bad = over_budget(set(here | _loads_of(imp)), **budget)
        if bad:
            return f"(b) {family}: {bad[0]}"
    if _comes_back(imp):
        return f"(c) cycle: what it imports imports {imp.where} at its top"
    return None


def function_level_imports() -> list[Imported]:
    return [imp for m in MODULES if m.split(".")[0] in CHECKED
            for in_function, imp in _statements(m) if in_function]


def test_external_probe_sees_what_an_import_loads() -> None:
    loads = external_loads()
    assert "tarfile" in loads["import tarfile"]
    assert "shutil" in loads["import tarfile"]
    assert "hashlib" in closure("registry.digest") or "hashlib" not in closure("builder.base.state")
    # our modules by the AST: a package comes with its module; TYPE_CHECKING imports do not count
    assert "builder.imagebuild.solver" in closure("builder.imagebuild.pipeline")
    assert {"builder", "builder.runtime.containers"} <= closure("builder.runtime.containers.record")


def test_the_rule_keeps_what_a_budget_needs_and_moves_the_rest() -> None:
    families = budgets()

    def imp(where: str, text: str) -> Imported:
        node = ast.parse(text).body[0]
        assert isinstance(node, (ast.Import, ast.ImportFrom))
        return _resolve(where, node)

    # ps loads builder.runtime.containers.record; the sandbox would take it over its budget
    assert why_lazy(imp("builder.runtime.containers.record", "from builder.core.sandbox import executor"),
                    families)
    # lark is heavy wherever it is imported, and so is our module that imports it at its top
    assert why_lazy(imp("builder.imagebuild.pipeline", "import lark"), families) == "(a) heavy third party lark"
    assert why_lazy(imp("builder.imagebuild.dockerfile.syntax",
                        "from builder.imagebuild.dockerfile.larkglue import LineLexer"),
                    families) == "(a) heavy third party lark"
    # json is light and every family may load it: it belongs at the top
    assert why_lazy(imp("builder.runtime.containers.record", "import json"), families) is None
    # no family loads the build pipeline's cached path with tarfile: hashlib in the solver moves up
    assert why_lazy(imp("builder.imagebuild.pipeline", "from builder.imagebuild import solver"), families) is None
    # a budget's statement keeps an import: run without -t sets no terminal mode
    assert why_lazy(imp("builder.cli.container_run", "import termios"), families) == "(b) run --rm: termios"
    # a cycle: values is imported by exec at its top
    assert why_lazy(imp("builder.base.template.values", "from builder.base.template import exec"),
                    families) == "(c) cycle: what it imports imports builder.base.template.values at its top"
    # not one: the package both are in is under way when exec runs (values loads it first)
    assert not _comes_back(imp("builder.base.template.exec", "from builder.base.template.values import go_quote"))


def test_an_import_fallback_does_not_count() -> None:
    """registry.digest takes CPython's own SHA-256, hashlib's only where ``_sha256`` is missing."""
    assert "hashlib" not in closure("registry.digest")
    assert not any(imp.external and "hashlib" in imp.external
                   for in_function, imp in _statements("registry.digest") if not in_function)


def test_function_level_imports_are_only_those_a_budget_needs() -> None:
    families = budgets()
    imports = function_level_imports()
    assert len(imports) >= 10  # the scan sees function bodies
    kept: dict[str, int] = {}
    bad = []
    for imp in imports:
        reason = why_lazy(imp, families)
        if reason is None:
            bad.append(f"{MODULES[imp.where].relative_to(REPO)}:{imp.line}: {imp.text}")
        else:
            kept[reason[:3]] = kept.get(reason[:3], 0) + 1
    assert not bad, (f"{len(bad)} function-level imports no start-up budget needs (move them to "
                     f"the top of the module; kept by rule: {kept}):\n" + "\n".join(bad))
    assert kept.get("(b)", 0) >= 50  # the budgets keep most of them (the rule sees families)


def test_no_import_is_kept_for_a_cycle() -> None:
    """A function-level import that only a cycle keeps: take the cycle away (the shared piece
    where both modules can import it at the top), then hoist it."""
    families = budgets()
    cycles = [f"{MODULES[imp.where].relative_to(REPO)}:{imp.line}: {imp.text}"
              for imp in function_level_imports() if (why_lazy(imp, families) or "").startswith("(c)")]
    assert not cycles, "function-level imports kept for an import-time cycle:\n" + "\n".join(cycles)
