"""No untyped dict crosses a module boundary but at a JSON edge (issue 21).

Inside pybuild, values are typed (frozen dataclasses, the record types, ``Digest``,
``Reference``…). A dict of ``Any`` is a JSON document: it may appear in a public signature only
where such a document is read or produced, and is converted there. The test reads every public
function and method of ``builder/`` and ``registry/`` (a name without a leading underscore in a
public class; dunders count) and fails on a parameter or return annotation holding a dict whose
values are untyped (``dict[str, Any]``, ``Mapping[str, object]``, a bare ``dict``, also inside
``list[...]``, ``X | None``, ``Callable[...]``…) unless the function is a JSON edge by one of
these rules:

1. its name says so: it holds ``json`` (``to_json``, ``from_json``, ``port_bindings_from_json``);
2. it is in ``builder.api``, the Engine API server, whose handlers and body converters read and
   write the API's JSON bodies;
3. its module is in ``JSON_MODULES`` or the function in ``JSON_EDGES`` below, each with the JSON
   document it reads or produces.

``**kwargs: Any`` is not a dict of the caller's making and is not checked.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

from test_api import MODULES, REPO

CHECKED = ("builder", "registry")
DICT_NAMES = frozenset({"dict", "Dict", "Mapping", "MutableMapping"})
UNTYPED = frozenset({"Any", "object"})
SERVER = "builder.api"

# modules whose public functions all read or produce one kind of JSON document
JSON_MODULES: dict[str, str] = {
    "builder.runtime.containers.inspect": "Docker's container inspect, /containers/json (ps) and top",
    "builder.runtime.containers.stats": "Docker's /containers/{id}/stats objects",
    "builder.base.events": "Docker's events (events.jsonl's lines, /events' objects)",
}
# "module:qualified name" -> the JSON document it reads or produces
JSON_EDGES: dict[str, str] = {
    # -- Docker's JSON answers (inspect, ps, top, stats, diff, info, version, df, events) --------
    "builder.runtime.containers.recordparts:State.docker": "container inspect's State",
    "builder.runtime.containers.changes:changes": "/containers/{id}/changes ([{Path, Kind}])",
    "builder.runtime.images:inspect_record": "docker image inspect",
    "builder.runtime.images:inspect": "docker image inspect",
    "builder.runtime.images:inspect_any": "docker inspect (image or container)",
    "builder.runtime.images:summaries": "/images/json (docker images --format json)",
    "builder.runtime.images:history": "/images/{name}/history",
    "builder.system.engine:version_info": "/version",
    "builder.system.engine:info": "/info",
    "builder.system.engine:df": "/system/df",
    "builder.system.engine:df_summary": "/system/df",
    "builder.base.rootless:info_fields": "/info (its rootless fields)",
    # -- what the CLI renders: the same JSON objects, for --format templates ------------------
    "builder.cli.containers:ports_text": "/containers/json's Ports",
    "builder.cli.events:event_line": "an event (/events' object)",
    "builder.cli.events:EventView.of": "an event (/events' object)",
    "builder.cli.format:format_rows": "the rows of a list command's --format json",
    "builder.cli.stats:row": "/containers/{id}/stats, and docker stats' --format json row",
    # -- image and container configs (OCI/Docker image config JSON) -----------------------------
    "builder.imagebuild.assemble:dated": "the image config's history entries",
    "builder.imagebuild.assemble:Assembler.image": "the image config (config, history)",
    "builder.imagebuild.graph.planner:apply_config": "the image config's config object (--change)",
    "builder.runtime.containers.changes:commit": "the image config's config object (commit --change)",
    "builder.runtime.containers.create:healthcheck_config": "the image config's Healthcheck",
    "builder.imagebuild.graph.configchanges:config_from_changes": "the image config's config object "
                                                                  "(import/commit --change)",
    "registry.archive.importer:import_rootfs": "the image config's config object (README API)",
    "registry.model:Platform.from_dict": "an OCI platform object",
    "registry.model:Platform.to_dict": "an OCI platform object",
    "registry.model:Descriptor.from_dict": "an OCI descriptor",
    "registry.model:Descriptor.to_dict": "an OCI descriptor",
    "registry.model:ImageConfig.build": "the image config",
    "registry.model:ImageConfig.config": "the image config's config object",
    "registry.model:ImageConfig.history": "the image config's history",
    "registry.store:Store.build_image": "the image config",
    "registry.store:empty_config": "the image config",
    # -- files and documents of other programs ------------------------------------------------
    "builder.core.sandbox.handle:write_state": "a sandbox run dir's state.json",
    "builder.core.sandbox.oci:oci_config": "an OCI runtime bundle's config.json",
    "builder.core.sandbox.seccomp:to_oci": "the OCI runtime spec's linux.seccomp",
    "builder.runtime.volume.specs:Mount.to_record": "container.json's Mounts entry (inspect's Mounts)",
    "builder.imagebuild.cacheshare.artifact:CacheConfig.to_doc": "the cache image's config blob "
                                                      "(BuildKit's cache config)",
    "builder.imagebuild.graph.ops:MountSpec.canonical": "the RUN mount's part of the step's canonical "
                                            "JSON (its cache key)",
    "builder.network.cluster.etcd:Etcd.status": "etcd's /v3/maintenance/status answer",
    # -- not data: a module's namespace ----------------------------------------------------------
    "registry.lazy:lazy_exports": "a package's globals() (PEP 562 __getattr__), not a value",
}


def _untyped_dict(ann: ast.expr) -> bool:
    """Whether annotation *ann* holds a dict of untyped values (a bare dict included)."""
    if isinstance(ann, ast.Constant) and isinstance(ann.value, str):
        return _untyped_dict(ast.parse(ann.value, mode="eval").body)
    subscripted = {id(n.value) for n in ast.walk(ann) if isinstance(n, ast.Subscript)}
    for node in ast.walk(ann):
        name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", None)
        if isinstance(node, ast.Subscript):
            base = node.value
            bname = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", None)
            if bname in DICT_NAMES and isinstance(node.slice, ast.Tuple) and len(node.slice.elts) == 2:
                value = node.slice.elts[1]
                vname = value.attr if isinstance(value, ast.Attribute) else getattr(value, "id", None)
                if vname in UNTYPED:
                    return True
        elif name in DICT_NAMES and id(node) not in subscripted and isinstance(node, ast.Name):
            return True
    return False


def public_functions(module: str, source: str) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """(qualified name, node) of every public function and method of *source* (also under a
    top-level ``if``): not nested in a function, no leading underscore, in no private class."""

    def walk(body: list[ast.stmt], prefix: str) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
        for node in body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                yield from walk(node.body, f"{prefix}{node.name}.")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                dunder = node.name.startswith("__") and node.name.endswith("__")
                if dunder or not node.name.startswith("_"):
                    yield prefix + node.name, node
            elif isinstance(node, ast.If):
                yield from walk(node.body, prefix)
                yield from walk(node.orelse, prefix)

    yield from walk(ast.parse(source).body, "")


def untyped_parts(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    """The parameters (and ``return``) of *fn* annotated with a dict of untyped values."""
    a = fn.args
    parts = [arg.arg for arg in (*a.posonlyargs, *a.args, *a.kwonlyargs)
             if arg.annotation is not None and _untyped_dict(arg.annotation)]
    if fn.returns is not None and _untyped_dict(fn.returns):
        parts.append("return")
    return parts


def edge_rule(module: str, qualname: str) -> str | None:
    """Which rule makes the function a JSON edge (None: none does)."""
    if "json" in qualname.rsplit(".", 1)[-1].lower():
        return "1: its name says json"
    if module == SERVER or module.startswith(SERVER + "."):
        return "2: the Engine API server"
    if module in JSON_MODULES:
        return "3: " + JSON_MODULES[module]
    if f"{module}:{qualname}" in JSON_EDGES:
        return "3: " + JSON_EDGES[f"{module}:{qualname}"]
    return None


def crossings() -> Iterator[tuple[str, str, int, list[str]]]:
    """(module, qualified name, line, untyped parts) of every public signature with a dict of
    untyped values."""
    for module, path in MODULES.items():
        if module.split(".")[0] not in CHECKED:
            continue
        for qualname, fn in public_functions(module, path.read_text()):
            parts = untyped_parts(fn)
            if parts:
                yield module, qualname, fn.lineno, parts


def _sig(text: str) -> list[str]:
    fn = ast.parse(text).body[0]
    assert isinstance(fn, ast.FunctionDef)
    return untyped_parts(fn)


def test_the_scan_sees_untyped_dicts_wherever_they_are() -> None:
    assert _sig("def f(a: dict[str, Any], b: dict[str, str]) -> None: ...") == ["a"]
    assert _sig("def f(*, a: Mapping[str, object] | None = None) -> list[dict]: ...") == ["a", "return"]
    assert _sig("def f(a: typing.Mapping[str, typing.Any]) -> 'dict[str, Any]': ...") == ["a", "return"]
    assert _sig("def f(a: Callable[[dict[str, Any]], None], **kw: Any) -> Iterator[int]: ...") == ["a"]
    assert _sig("def f(a: dict[str, list[int]], b: Any) -> Mapping[str, Digest]: ...") == []
    src = ("class A:\n def to_json(self) -> dict[str, Any]: ...\n def _x(self, d: dict) -> None: ...\n"
           "class _B:\n def f(self, d: dict) -> None: ...\n"
           "def g(d: dict) -> None:\n def inner(e: dict) -> None: ...\n")
    assert [q for q, _ in public_functions("m", src)] == ["A.to_json", "g"]
    assert edge_rule("builder.x", "A.to_json") and edge_rule("builder.api.images", "pull")
    assert edge_rule("builder.runtime.containers.inspect", "inspect") and not edge_rule("builder.x", "load")


def test_every_allowlisted_edge_exists_and_takes_a_dict() -> None:
    """A stale entry (renamed, typed since) is taken out of the list, so it stays short."""
    found = {f"{m}:{q}" for m, q, _, _ in crossings()}
    stale = sorted(set(JSON_EDGES) - found)
    assert not stale, f"JSON_EDGES entries with no untyped dict in their signature: {stale}"
    modules = {m for m, _, _, _ in crossings()}
    stale = sorted(set(JSON_MODULES) - modules)
    assert not stale, f"JSON_MODULES entries with no untyped dict in their signatures: {stale}"


def test_untyped_dicts_cross_modules_only_at_json_edges() -> None:
    bad = []
    edges = 0
    for module, qualname, line, parts in crossings():
        if edge_rule(module, qualname) is None:
            bad.append(f"{MODULES[module].relative_to(REPO)}:{line}: {qualname}({', '.join(parts)})")
        else:
            edges += 1
    assert edges >= 50  # the scan reads signatures
    assert not bad, ("dict[str, Any] crosses a module boundary outside a JSON edge (take or "
                     "return a typed value; or, for a JSON document, add it to JSON_EDGES):\n"
                     + "\n".join(bad))
