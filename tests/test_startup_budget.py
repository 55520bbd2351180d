"""The start-up budget of each command family: a heavy import cannot creep back onto a hot path
unseen.

pybuild has no daemon, so every command pays for what it imports. For each family (build,
``run --rm``, ``run -d``, ``rm -f``, ps/images/inspect/version, pull/push, network, volume, serve)
a fresh interpreter runs the command's entry in-process (``builder.cli.main(argv)``; for
``serve``, ``make_app`` as the command does before it listens), then reads ``sys.modules``. The
test fails when:

* a module of ours (``builder.*``, ``registry.*``, ``grammar``) outside the family's listed
  prefixes was imported (the command modules under ``builder.cli`` are every family's: they
  parse and render, and what they import at module level is held to the budget itself);
* a third-party distribution other than the family's was imported (none for a listing: the
  CLI parses its flags itself (``builder.cli.flags``), so ``click`` fails every family;
  ``aiohttp`` only for ``serve``; ``lark`` never on a cached build);
* a standard-library module on the family's heavy list was imported (the standard library is
  otherwise allowed: listing every small module it loads would pin CPython, not pybuild).

A budget says what the command does not do ("a listing spawns no process", "``run`` without
``-t`` sets no terminal mode"), each exclusion with its reason; it allows what the command
loads. ``tests/test_import_placement.py`` reads the budgets (``budgets()``): a function-level
import stays in its function only when hoisting it would take some family over its budget.

The runs are the warm ones a user repeats: a build whose steps are all cached, a ``run`` of an
image whose layers are unpacked, so first-use work (Lark, the executor, tar) is out of budget.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "registry"))

from registry_server import Registry, start_registry  # noqa: E402

# stdlib modules that cost milliseconds each and that no listing or cached command needs
HEAVY_STDLIB = frozenset({
    "asyncio", "concurrent", "ssl", "http", "email", "urllib.request", "tarfile", "zipfile",
    "gzip", "multiprocessing", "xml", "sqlite3", "logging", "pickle", "csv", "unittest",
    "pdb", "doctest", "argparse", "decimal", "statistics", "importlib.metadata", "tomllib",
    "getpass",  # no command here asks for a password (``login`` does: flags' hidden prompt)
})
NO_EXEC = ("subprocess", "ctypes")  # no process spawned nor libc called by a pure listing
# what issue 15's import diet took off the run, rm and listing paths: ``typing`` (~4 ms; names
# used only in annotations sit under a module constant ``TYPE_CHECKING = False``, a hot path's
# NamedTuples are ``registry.values.frozen`` values) and ``copy``/``weakref`` (registry.config
# copies JSON itself)
DIET = frozenset({"typing", "copy", "weakref"})
# a run, a removal and their teardowns delete run dirs and records with
# ``builder.base.paths.remove_tree``: not ``shutil``, which loads its archives' modules (~2 ms);
# a cached build writes its temp files with ``registry.leases.new_temp``, not ``tempfile``, and
# removes trees with ``remove_tree`` (an executed step's workspace still uses both)
NO_SHUTIL = frozenset({"shutil", "bz2", "lzma"})
# every command loads these (exact names); a family lists prefixes of its own beside them
CORE = frozenset({"builder", "builder.cli", "builder.base.errors", "builder.base.state", "builder.base.units",
        "builder.base.values", "registry.values",  # frozen values without dataclasses (container records)
        "builder.cli.flags", "builder.cli.flagtypes",  # the flag parser (click is no family's)
        "builder.base.filters", "builder.base.events", "registry", "registry.lazy", "registry.errors", "registry.kinds",
        "registry.digest", "registry.mediatypes", "registry.model", "registry.config",
        "registry.reference", "registry.store", "registry.leases", "registry.lookup",
        "registry.records",  # the store's lookups and records, split from it
        # packages whose ``__init__`` loads nothing (names resolved on first use)
        "builder.core.layers", "builder.core.sandbox", "builder.imagebuild.execute", "builder.runtime.containers",
        "grammar"})  # (Lark itself loads when a parser is built, and is a budget's third party)

PROBE = r"""
import json, sys
argv, out = json.loads(sys.argv[1]), sys.argv[2]
try:
    if argv[0] == "serve-app":
        from builder.api.app import make_app
        from builder.base.state import StateRoot
        make_app(StateRoot.open(argv[1]))
    else:
        from builder.cli import main
        main(argv)
except SystemExit as e:
    if e.code not in (0, None):
        raise
with open(out, "w") as f:
    json.dump(sorted(sys.modules), f)
"""


def loaded(argv: list[str], tmp: Path, *, cwd: Path | None = None) -> set[str]:
    """The modules a fresh interpreter holds after running *argv* through the CLI's entry."""
    out = tmp / "modules.json"
    env = {k: v for k, v in os.environ.items() if k != "PYBUILD_ROOT"}
    r = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv), str(out)],
                       capture_output=True, text=True, cwd=cwd or tmp, env=env, timeout=120)
    assert r.returncode == 0, f"{argv} exited {r.returncode}: {r.stderr[-2000:]}"
    mods: list[str] = json.loads(out.read_text())
    out.unlink()
    return set(mods)


def over_budget(mods: set[str], *, ours: tuple[str, ...], third_party: tuple[str, ...] = (),
                heavy: frozenset[str] | tuple[str, ...] = HEAVY_STDLIB, core: frozenset[str] = CORE,
                cli: tuple[str, ...] = ("builder.cli",), barred: tuple[str, ...] = ()) -> list[str]:
    """What *mods* holds beyond the budget (empty: within it). *core* narrows the modules every
    command may load, *cli* the command modules under ``builder.cli`` (default: any of them);
    *barred* names modules of ours (and their submodules) outside the budget though a prefix of
    *ours* covers them."""

    def under(name: str, prefixes: tuple[str, ...] | frozenset[str]) -> bool:
        return any(name == p or name.startswith(p + ".") for p in prefixes)

    def ancestor(name: str) -> bool:  # a package that an allowed module lives in
        return any(p.startswith(name + ".") for p in (*ours, *core))

    bad = []
    for m in sorted(mods):
        top = m.split(".")[0]
        if top in ("builder", "registry", "grammar"):
            if under(m, barred) or (m not in core and not under(m, (*cli, *ours))
                                    and not ancestor(m)):
                bad.append(m)
        elif under(m, heavy):
            bad.append(m)
        elif top in sys.stdlib_module_names or top.startswith("_") or top in sys.builtin_module_names:
            continue
        elif not under(top, third_party) and not under(top, _DEPENDENCIES_OF_ALLOWED):
            bad.append(m)
    return bad


# what the allowed third-party packages import themselves
_DEPENDENCIES_OF_ALLOWED = ("aiosignal", "attr", "frozenlist", "multidict", "yarl", "idna",
                            "propcache", "aiohappyeyeballs", "isal", "zstandard", "typing_extensions")


def assert_within(mods: set[str], argv: list[str], **budget: Any) -> None:
    bad = over_budget(mods, **budget)
    assert not bad, f"pybuild {' '.join(argv)} imports modules outside its budget: {bad}"


def test_over_budget_reports_what_is_outside() -> None:
    mods = {"builder", "builder.cli", "builder.imagebuild.graph", "builder.imagebuild.graph.ops", "click", "tarfile",
            "json", "lark"}
    assert over_budget(mods, ours=("builder.cli.images",)) == [
        "builder.imagebuild.graph", "builder.imagebuild.graph.ops", "click", "lark", "tarfile"]  # click: no family's
    # a package whose module is allowed is allowed itself; the standard library, but its
    # heavy list
    assert over_budget(mods, ours=("builder.imagebuild.graph.ops",), third_party=("click", "lark"),
                       heavy=()) == []
    # a family's narrower core, and only its own command module under builder.cli
    assert over_budget({"builder.cli", "builder.cli.format", "builder.cli.build", "registry.store"},
                       ours=(), core=CORE - {"registry.store"},
                       cli=("builder.cli.format",)) == ["builder.cli.build", "registry.store"]
    # a module barred under an allowed prefix
    assert over_budget({"builder.core.sandbox", "builder.core.sandbox.seccomp"},
                       ours=("builder.core.sandbox",),
                       barred=("builder.core.sandbox.seccomp",)) == ["builder.core.sandbox.seccomp"]


# -- ps / images / inspect -----------------------------------------------------------------------
LISTING_HEAVY = HEAVY_STDLIB | set(NO_EXEC)
# ps/images/inspect/version besides hash nothing, write no temp file and open no socket (hashlib
# loads OpenSSL: inspect checks the small blobs it reads with CPython's own SHA-256; tempfile
# loads shutil, bz2, lzma and random)
QUERY_HEAVY = LISTING_HEAVY | {"hashlib", "tempfile", "shutil", "bz2", "lzma", "socket"}
# the image store, which ``ps`` (container records only) never opens
IMAGE_STORE = frozenset({"registry.store", "registry.lookup", "registry.records", "registry.model",
                         "registry.digest", "registry.reference", "registry.mediatypes"})
# the command module each listing loads under builder.cli, beside the package and its renderer
LISTING_CLI = {"images": "builder.cli.images", "image": "builder.cli.images",
               "inspect": "builder.cli.images", "ps": "builder.cli.containers",
               "version": "builder.cli.system"}


@pytest.mark.parametrize("argv", [["images"], ["images", "-a", "--format", "json"], ["ps", "-a"],
                                  ["inspect", "busybox"], ["image", "inspect", "busybox"],
                                  ["version"]], ids=" ".join)
def test_listing_commands_stay_light(busybox: Any, tmp_path: Path, argv: list[str]) -> None:
    # version: git's and runc's answers kept (a commit since asks git again); --format: the
    # template's parse kept (a fresh cache dir parses it once, with Lark)
    if argv == ["version"] or "--format" in argv:
        busybox(*argv)
    mods = loaded(["--root", str(busybox.root), *argv], tmp_path)
    assert "builder.cli" in mods  # the probe ran the command
    assert_within(mods, argv, **listing_budget(argv))


def listing_budget(argv: list[str]) -> dict[str, Any]:
    """The keywords of ``over_budget`` for one listing command."""
    ours: tuple[str, ...] = ("builder.runtime.images",)
    heavy = QUERY_HEAVY
    core = CORE
    barred: tuple[str, ...] = ()
    if "--format" in argv:  # Go templates (parsed once, then cached: no Lark here)
        ours += ("builder.base.template",)
        heavy = QUERY_HEAVY - {"pickle"}  # the parse cache (keyed with CPython's own SHA-256)
    if argv[0] in ("images", "image", "inspect"):
        # an image signals no process and names no signal: ``signal`` (its enums, made at
        # import) only for ``import --change STOPSIGNAL=…``
        heavy = heavy | {"signal"}
    if argv[0] == "ps":  # container records (their config is registry.config's), no image store
        # endpoints, typed; the record's tree remover (builder.base.paths: os and pathlib only)
        ours = ("builder.runtime.containers", "builder.network.records", "builder.base.paths")
        core = CORE - IMAGE_STORE
        heavy = QUERY_HEAVY  # a listing removes nothing
        barred = ("builder.base.events",)  # it emits no event: lifecycle's emit loads the log
    if argv == ["version"]:
        # the installed distribution's version (a scan of site-packages, not importlib.metadata),
        # git's commit and runc's version, kept in the user cache dir (a repeated version spawns
        # nothing: ``builder.system.probe`` and subprocess only on a miss), the host's cgroup version
        # (builder.core.sandbox.cgroups; not the sandbox's spec and its dataclasses); no image store
        # (git's and runc's answers are kept in the user's cache dir: ``builder.system.probe``
        # spawns them on a miss only)
        ours = ("builder.system.engine", "builder.core.sandbox.cgroups")
        barred = ("builder.system.probe",)
        # nor a state root at all (builder.base.state and its leases: versions are the host's
        # and the install's), and no ID is made (uuid: ``info``'s engine ID)
        core = CORE - IMAGE_STORE - {"builder.base.state", "registry.leases"}
        heavy = (QUERY_HEAVY - {"shutil", "bz2", "lzma"}) | {"uuid", "datetime", "_datetime"}
    heavy = heavy | DIET
    cli = ("builder.cli.format", "builder.cli.columns", LISTING_CLI[argv[0]])
    return {"ours": ours, "heavy": heavy, "core": core, "cli": cli, "barred": barred}


# -- what issue 15 took off the listings' path -------------------------------------------------
# A ``@dataclass`` execs its generated methods when its module is imported (~0.5 ms each on a
# quiet machine, several under load), and ``dataclasses`` imports ``inspect`` (~7 ms with ``ast``,
# ``dis``, ``tokenize``): ``images`` and ``inspect`` load neither (the store's values, records and
# results and the state root are ``registry.values.frozen`` values, ``Manifest``/``Index``/
# ``ImageConfig`` a plain class; a ``--format`` template's nodes are frozen values too); ``ps`` and ``version`` make none
# in these modules (the container record and its HostConfig are ``builder.base.values`` frozen
# values; the image config's ContainerConfig, the containers' runtime and the cgroup layout's
# own are not listed here).
# modules that make no dataclass at import: every listing (or every command) loads them
NO_DATACLASS_MODULES = ("builder.base.state", "builder.runtime.images", "builder.system.engine", "builder.base.units",
                        "builder.base.filters", "registry.records", "registry.leases",
                        "registry.lookup", "registry.store", "registry.mediatypes",
                        "registry.digest", "registry.reference", "registry.model",
                        "builder.runtime.containers.recordparts", "builder.base.template.nodes",
                        "builder.base.template.exec", "builder.base.template.funcs",
                        "builder.runtime.containers.record", "builder.runtime.containers.hostconfig",
                        "builder.runtime.containers.options", "builder.base.values", "registry.values",
                        "registry.config", "builder.runtime.containers.runtime")
# what no listing loads any more: the image config's typed value (``ImageConfig.container_config``
# imports it), ``platform`` (``os.uname`` answers), ``shutil`` (its archive modules; ``version``
# lets its spawn find runc), ``threading`` (``images``' platform flag is imported when given),
# ``datetime`` (an image's times are read by ``builder.base.units.rfc3339_ns`` and shown with
# time's strftime);
# ``ps`` (container records) still loads ``registry.config``, but no ``shutil`` (a record's tree
# is removed through ``builder.base.paths.remove_tree``), ``datetime`` (display times are parsed by
# ``cli.images``), ``threading`` (the record's locks are ``_thread``'s) nor ``signal``
OFF_LISTING_PATH = {"images": {"registry.config", "platform", "shutil", "dataclasses", "inspect", "threading",
                               "datetime", "_datetime"},
                    "inspect": {"registry.config", "platform", "shutil", "dataclasses", "inspect", "threading",
                                "datetime", "_datetime"},
                    "ps": {"platform", "shutil", "datetime", "_datetime", "threading", "signal"} | IMAGE_STORE,
                    "version": {"shutil", "bz2", "lzma"} | IMAGE_STORE}


def dataclasses_made(mods: set[str]) -> set[str]:
    """``module.Class`` of each dataclass our modules in *mods* decorate at import."""
    import importlib

    made = set()
    for name in mods:
        if name.split(".")[0] not in ("builder", "registry"):
            continue
        module = importlib.import_module(name)
        for value in vars(module).values():
            if (isinstance(value, type) and value.__module__ == name
                    and "__dataclass_fields__" in vars(value)):
                made.add(f"{name}.{value.__qualname__}")
    return made


def test_dataclasses_made_finds_decorated_classes_only() -> None:
    made = dataclasses_made({"builder.runtime.volume.specs", "registry.records", "registry.values", "json"})
    assert made == {"builder.runtime.volume.specs.MountSpec", "builder.runtime.volume.specs.Mount"}


@pytest.mark.parametrize("argv", [["images"], ["images", "--format", "{{.ID}} {{.Tag}}"],
                                  ["inspect", "busybox"], ["ps", "-a"],
                                  ["ps", "-a", "--format", "{{.Names}}"], ["version"]],
                         ids=" ".join)
def test_listings_keep_dataclasses_off_their_path(busybox: Any, tmp_path: Path,
                                                 argv: list[str]) -> None:
    busybox("create", "--network", "none", "--name", "budget", "busybox", "true")
    if "--format" in argv:  # the template's parse is cached by its first run (Lark's)
        busybox(*argv)
    mods = loaded(["--root", str(busybox.root), *argv], tmp_path)
    assert "builder.cli" in mods  # the probe ran the command
    back = sorted(mods & OFF_LISTING_PATH[argv[0]])
    assert not back, f"pybuild {' '.join(argv)} loads {back} again"
    made = dataclasses_made(mods)
    ours = {d for d in made if d.rpartition(".")[0] in NO_DATACLASS_MODULES}
    assert not ours, f"pybuild {' '.join(argv)} makes dataclasses at import: {sorted(ours)}"
    busybox("rm", "budget")


# -- build ---------------------------------------------------------------------------------------
BUILD_OURS = ("builder.imagebuild.pipeline", "builder.imagebuild.progress", "builder.imagebuild.dockerfile.parsecache",
              "builder.imagebuild.dockerfile.instructions", "builder.imagebuild.dockerfile.syntax",
              "builder.imagebuild.dockerfile.tree", "builder.imagebuild.graph", "builder.imagebuild.solver", "builder.imagebuild.cache",
              "builder.imagebuild.assemble", "builder.imagebuild.context", "builder.imagebuild.ignore", "builder.imagebuild.expand",
              "builder.base.paths", "builder.imagebuild.execute.inputs", "builder.imagebuild.sources",
              # the solver's stages run on plain threads (no concurrent.futures, which loads logging)
              "builder.imagebuild.pool",
              # the build's small hashing (keys, checksum lines) with CPython's own SHA-256
              "builder.imagebuild.sha",
              # a snapshot's presence in the layer cache (rootfs.LayerCache.has); the lazy
              # ``builder.core.layers`` package comes with it, not its tar code
              "builder.core.rootfs")
# the parse cache (pickle); no thread pool (concurrent.futures and its logging: ``pool``'s plain
# threads); no process spawned nor socket opened when every step is cached (git and URL
# sources, RUN); no dataclass made (the build's records are registry.values frozen values); no
# datetime (a history time is written with time's strftime, ``assemble.rfc3339``); no secrets
# (its random, hmac, base64: a stand-in id is os.urandom's); no OpenSSL (``hashlib``, ~5 ms: a
# cached build hashes only small inputs, with CPython's own SHA-256, ``imagebuild.sha``); no
# ``signal`` (its enums: a stop signal's name is checked against ``_signal``'s); no ``typing``
# (~6 ms: names used only in annotations sit under a module constant ``TYPE_CHECKING = False``,
# protocols and ``Literal`` aliases too; ``context.Entry`` is ``collections.namedtuple``'s)
BUILD_HEAVY = (HEAVY_STDLIB - {"pickle"}) | set(NO_EXEC) | {"socket", "dataclasses", "inspect", "datetime",
                                                            "_datetime", "secrets", "hashlib", "_hashlib",
                                                            "signal", "typing", "tempfile"} | NO_SHUTIL
# a build where one changed file runs a COPY and the RUN after it again: the executor, the
# sandbox (libc through ctypes), the layer's diff (tarfile) and compression (isal, gzip, hashlib), the miss's
# explanation; still no thread pool nor logging (a COPY's file batches are ``pool``'s too), no
# dataclass (the diff's records are a plain class, ``explain.Slot`` a frozen value), no datetime,
# no process spawned by pybuild itself (the sandbox forks) and no ssh agent relay
# (``execute.ssh``: socket, selectors, subprocess; ``RUN --mount=type=ssh`` only). ``typing`` is
# loaded, but by these alone: isal's ``igzip`` (the layer's gzip, third party) and the layer's
# commit (``builder.core.layers.commit`` and ``.diff`` import it at module level); every other
# module the build loads imports without it (``test_one_file_build_stays_light``)
STEP_TYPING = ("builder.core.layers.commit", "builder.core.layers.diff")
BUILD_STEP_OURS = (*BUILD_OURS, "builder.imagebuild.execute", "builder.imagebuild.explain", "builder.core.layers",
                   "builder.core.sandbox", "builder.base.syscalls", "builder.base.binfmt",
                   "builder.network.model", "builder.network.records", "builder.network.resolution",
                   "registry.compression")
BUILD_STEP_BUDGET: dict[str, Any] = {
    "ours": BUILD_STEP_OURS, "third_party": ("isal",), "barred": ("builder.imagebuild.execute.ssh",),
    "heavy": (BUILD_HEAVY - {"tarfile", "gzip", "ctypes", "hashlib", "_hashlib", "typing", "tempfile"} - NO_SHUTIL)
    | {"selectors", "locale"}}


def test_cached_build_stays_light(busybox: Any, tmp_path: Path) -> None:
    """A rebuild with every step cached: no Lark (the parse cache holds the Dockerfile), no
    executor, sandbox, layer or tar code."""
    ctx = tmp_path / "ctx"
    (ctx / "src").mkdir(parents=True)
    (ctx / "src" / "a.txt").write_text("a\n")
    (ctx / "Dockerfile").write_text("FROM busybox AS base\nCOPY src/ /src/\nRUN cat /src/a.txt\n"
                                    "FROM busybox\nCOPY --from=base /src /src\nENV A=1\n"
                                    "WORKDIR /w\nCMD [\"true\"]\n")
    argv = ["--root", str(busybox.root), "build", "-q", "-t", "budget:latest", str(ctx)]
    busybox(*argv[2:])
    mods = loaded(argv, tmp_path)
    assert "builder.imagebuild.solver" in mods
    assert_within(mods, argv, ours=BUILD_OURS, heavy=BUILD_HEAVY)


def test_one_file_build_stays_light(busybox: Any, tmp_path: Path) -> None:
    """A rebuild after one small file changed: its COPY and the RUN after it execute (and say
    why they missed), the rest is cached."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "app.conf").write_text("conf 0\n")
    (ctx / "Dockerfile").write_text("FROM busybox\nWORKDIR /app\nCOPY app.conf ./\n"
                                    "RUN cat app.conf > /app/conf.out\n")
    argv = ["--root", str(busybox.root), "build", "-q", "-t", "budget:one", str(ctx)]
    busybox(*argv[2:])
    (ctx / "app.conf").write_text("conf 1\n")
    mods = loaded(argv, tmp_path)
    assert {"builder.imagebuild.execute.run", "builder.imagebuild.execute.fileops",
            "builder.imagebuild.explain", "builder.core.layers.diff"} <= mods  # the steps ran
    assert_within(mods, argv, **BUILD_STEP_BUDGET)
    # the modules of ours it loaded, but those that import ``typing`` themselves, load none
    ours = sorted(m for m in mods if m.split(".")[0] in ("builder", "registry", "grammar")
                  and m not in STEP_TYPING)
    probe = ("import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
             "    if 'typing' in sys.modules:\n        print(m)\n        break")
    r = subprocess.run([sys.executable, "-c", probe, *ours], capture_output=True, text=True, cwd=tmp_path,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not r.stdout.strip(), f"{r.stdout.strip()} (or a module it imports) loads typing"


# -- run -----------------------------------------------------------------------------------------
RUN_OURS = ("builder.runtime.containers", "builder.core.sandbox", "builder.core.rootfs",
            "builder.core.layers.common", "builder.core.layers.view", "builder.base.syscalls", "builder.base.paths",
            "builder.network.records")  # the network package's light read API (not its core)
# neither run has a terminal (no -t): no terminal mode is saved or set (termios, tty); a
# container that starts prints no traceback; the image is there: its one command module, no
# pull progress (builder.cli.registry), and no restart policy to follow (builder.cli.containers)
RUN_HEAVY = HEAVY_STDLIB | DIET | {"termios", "tty", "traceback"}
RUN_BUDGET: dict[str, Any] = {"ours": RUN_OURS, "heavy": RUN_HEAVY, "cli": ("builder.cli.container_run",)}
RUN_BUDGETS: dict[str, dict[str, Any]] = {
    # without a terminal the container's output comes through pipes: no socket is opened; the
    # sandbox's and the containers' values are frozen values (no dataclass made: neither
    # dataclasses nor inspect loaded), and seccomp's cache key is hashed without OpenSSL; a run
    # parses no time (no datetime: its timestamps are formatted from time.time_ns); its output is
    # pumped with select.poll (no selectors, math); a container without a healthcheck starts no
    # thread (no threading: the supervisor imports it for the healthcheck's)
    "run --rm": {**RUN_BUDGET, "heavy": RUN_HEAVY | {"socket", "_socket", "dataclasses", "inspect", "hashlib",
                                                    "datetime", "_datetime", "selectors", "math",
                                                    "threading"} | NO_SHUTIL},
    # the detached run's own process hands the container to the supervisor it forks before
    # the creation, which imports the sandbox (seccomp included) and the attach server (its
    # socket, its threads) itself: none of them is the command's start-up
    "run -d": {**RUN_BUDGET, "heavy": RUN_HEAVY | {"hashlib", "datetime", "_datetime", "dataclasses",
                                                  "inspect", "socket", "_socket", "threading",
                                                  "ctypes"} | NO_SHUTIL,
               "barred": ("builder.core.sandbox.seccomp", "builder.core.sandbox.executor",
                          "builder.core.sandbox.child", "builder.runtime.containers.attach")},
}


@pytest.mark.parametrize("argv", [["run", "--rm", "--network", "none", "busybox", "true"],
                                  ["run", "-d", "--network", "none", "busybox", "true"]],
                         ids=" ".join)
def test_run_stays_light(busybox: Any, tmp_path: Path, argv: list[str]) -> None:
    """``run`` of an image whose layers are unpacked: no front end, no tar, no network code for
    ``--network none``, no thread pool."""
    busybox("run", "--rm", "--network", "none", "busybox", "true")  # unpacks the layers
    full = ["--root", str(busybox.root), *argv]
    mods = loaded(full, tmp_path)
    assert "builder.runtime.containers.create" in mods
    assert_within(mods, full, **RUN_BUDGETS[" ".join(argv[:2])])
    if "-d" in argv:
        busybox("rm", "-f", busybox("ps", "-aq").stdout.split()[0])


# ``run --rm`` on the default bridge (issue 15): the network package attaches and releases the
# container through its own netlink module (a raw netlink socket is ``_socket``'s: no
# ``socket.py``); no cluster client, no helper process (no port published), no OpenSSL (a veth's
# name is hashed with CPython's own SHA-256)
BRIDGE_RUN_BUDGET: dict[str, Any] = {
    **RUN_BUDGET, "ours": (*RUN_OURS, "builder.network"),
    "barred": ("builder.network.cluster.etcd", "builder.network.cluster.agent", "builder.network.dns",
               "builder.network.proxy", "builder.network.rootless"),
    # and the network's records and core parse no time (``Created`` from time.time_ns)
    "heavy": RUN_HEAVY | {"socket", "hashlib", "subprocess", "datetime", "_datetime", "selectors", "math"}
    | NO_SHUTIL}


def test_bridge_run_stays_light(busybox: Any, tmp_path: Path) -> None:
    busybox("run", "--rm", "busybox", "true")  # the default bridge, made once for the root
    full = ["--root", str(busybox.root), "run", "--rm", "busybox", "true"]
    mods = loaded(full, tmp_path)
    assert "builder.network.core" in mods  # it attached the container to the bridge
    assert_within(mods, full, **BRIDGE_RUN_BUDGET)


# ``rm -f`` of a running container: the supervisor is signalled (os.kill, its pidfd) and the
# record removed; no libc call through ctypes (builder.base.syscalls), no process spawned, no
# socket opened, no dataclass made; the ps renderer's module is its command module
RM_BUDGET: dict[str, Any] = {
    "ours": ("builder.runtime.containers", "builder.core.sandbox", "builder.core.rootfs", "builder.network.records",
             "builder.base.paths"),
    "cli": ("builder.cli.containers", "builder.cli.format", "builder.cli.columns"),
    "heavy": HEAVY_STDLIB | DIET | set(NO_EXEC) | NO_SHUTIL
    | {"socket", "_socket", "dataclasses", "inspect", "selectors", "math"}}


def test_rm_f_stays_light(busybox: Any, tmp_path: Path) -> None:
    busybox("run", "-d", "--name", "budget", "--network", "none", "busybox", "sleep", "1000")
    full = ["--root", str(busybox.root), "rm", "-f", "budget"]
    mods = loaded(full, tmp_path)
    assert "builder.runtime.containers.lifecycle" in mods
    assert_within(mods, full, **RM_BUDGET)
    assert busybox("ps", "-aq").stdout.strip() == ""  # the probe removed it


# -- pull / push ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def registry_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with start_registry(tmp_path_factory.mktemp("budget-registry")) as reg:
        yield reg


TRANSFER_OURS = ("registry.transfer", "registry.client", "registry.auth",
                 "registry.compression")
# the HTTP stack is the standard library's (http.client, which imports ssl and email; an SSL
# context is made only for https), never requests/urllib3; blobs go in parallel on plain
# threads (no concurrent.futures, which imports logging)
TRANSFER_THIRD_PARTY = ("cython_runtime",)
TRANSFER_HEAVY = HEAVY_STDLIB - {"ssl", "http", "email"}
PUSH_BUDGET: dict[str, Any] = {"ours": TRANSFER_OURS, "heavy": TRANSFER_HEAVY,
                               "third_party": TRANSFER_THIRD_PARTY}
# a pulled layer is decompressed as it streams in (its diff_id checked, its unpacked size
# counted from the tar entries)
PULL_BUDGET: dict[str, Any] = {**PUSH_BUDGET, "heavy": TRANSFER_HEAVY - {"gzip", "tarfile"}}


def test_pull_and_push_stay_light(busybox: Any, registry_server: Registry, tmp_path: Path) -> None:
    """push and pull: the registry client and transfer code, never the build or run side."""
    ref = f"{registry_server.addr}/budget/busybox:latest"
    busybox("tag", "busybox", ref)
    push = ["--root", str(busybox.root), "push", ref]
    assert_within(loaded(push, tmp_path), push, **PUSH_BUDGET)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    pull = ["--root", str(fresh), "pull", ref]
    assert_within(loaded(pull, tmp_path), pull, **PULL_BUDGET)


# -- network / volume ----------------------------------------------------------------------------
# without --format no Go template is parsed nor a row rendered by one (builder.cli.format):
# the command module writes its table (builder.cli.columns)
# a volume command needs the store only: the volume package is lazy, so neither the -v parsers
# (``specs``: dataclasses) nor ``provision`` load; a volume's CreatedAt is written with
# time.strftime (no datetime)
VOLUME_BUDGET: dict[str, Any] = {"ours": ("builder.runtime.volume", "builder.base.paths"),
                                 "heavy": LISTING_HEAVY | DIET | {"dataclasses", "inspect", "datetime", "_datetime"},
                                 "barred": ("builder.runtime.volume.specs", "builder.runtime.volume.provision"),
                                 "cli": ("builder.cli.volume", "builder.cli.columns")}
# the network package and whether the root is in a cluster; ``network ls`` reads the records:
# it spawns no process (iptables, the helpers), hashes nothing (an interface's name), records
# no event, and, without --format, parses no Go template (builder.cli.format)
NETWORK_BUDGET: dict[str, Any] = {
    "ours": ("builder.runtime.volume", "builder.base.paths", "builder.network", "builder.network.cluster.membership"),
    "heavy": LISTING_HEAVY | {"hashlib"},
    "cli": ("builder.cli.network", "builder.cli.columns"),
    "core": CORE - {"builder.base.events"}}
# the etcd client (over requests and urllib3, which log through logging and read their own
# distribution metadata) and the network package
CLUSTER_BUDGET: dict[str, Any] = {
    "ours": ("builder.network.cluster", "builder.network"),
    "third_party": ("requests", "urllib3", "certifi", "charset_normalizer", "idna",
                    "cython_runtime"),
    "heavy": HEAVY_STDLIB - {"ssl", "http", "email", "urllib.request", "logging",
                             "importlib.metadata", "csv", "zipfile"}}


@pytest.mark.parametrize("argv", [["network", "ls"], ["volume", "ls"]], ids=" ".join)
def test_network_and_volume_listings_stay_light(pybuild: Any, tmp_path: Path,
                                                argv: list[str]) -> None:
    full = ["--root", str(pybuild.root), *argv]
    budget = NETWORK_BUDGET if argv[0] == "network" else VOLUME_BUDGET
    assert_within(loaded(full, tmp_path), full, **budget)


def test_cluster_ls_stays_light(pybuild: Any, tmp_path: Path) -> None:
    """``cluster ls`` (issue 16) of a joined root: the etcd client over the HTTP stack and the
    network package (its helpers check on the host agent); nothing of containers or builds."""
    sys.path.insert(0, str(Path(__file__).resolve().parent / "builder"))
    from etcd_cluster import EtcdCluster

    etcd = EtcdCluster([f"127.16.{os.getpid() % 250}.{i}" for i in (1, 2, 3)], tmp_path)
    try:
        etcd.start()
        pybuild("cluster", "join", etcd.store, "--advertise", "127.0.0.1")
        full = ["--root", str(pybuild.root), "cluster", "ls"]
        assert_within(loaded(full, tmp_path), full, **CLUSTER_BUDGET)
    finally:
        pybuild("cluster", "leave", "--force", check=False)
        etcd.stop()


def test_volume_create_and_rm_stay_light(pybuild: Any, tmp_path: Path) -> None:
    for argv in (["volume", "create", "budget"], ["volume", "rm", "budget"]):
        full = ["--root", str(pybuild.root), *argv]
        assert_within(loaded(full, tmp_path), full, **VOLUME_BUDGET)


# -- serve ---------------------------------------------------------------------------------------
# a daemon, started once: its budget keeps the build front end, the executor, the sandbox and
# networking out, which its endpoints load on first use; and the CLI, which it does not run
SERVE_BUDGET: dict[str, Any] = {
    "core": CORE - {"builder.cli"}, "cli": (),
    "ours": ("builder.api", "builder.runtime.containers.attach", "builder.runtime.containers.logfile",
             "builder.runtime.containers.options", "builder.system.engine", "registry.auth"),
    "third_party": ("aiohttp", "cython_runtime"),
    "heavy": HEAVY_STDLIB - {"asyncio", "concurrent", "http", "email", "ssl", "urllib.request",
                             "logging", "tarfile", "pickle", "argparse", "importlib.metadata",
                             "csv", "zipfile"}}


def test_serve_app_stays_light(pybuild: Any, tmp_path: Path) -> None:
    """``serve`` makes its application with aiohttp (and asyncio); each endpoint module loads
    the library it calls only when a request needs it."""
    argv = ["serve-app", str(pybuild.root)]
    mods = loaded(argv, tmp_path)
    assert "builder.api.app" in mods
    assert_within(mods, argv, **SERVE_BUDGET)


# -- every family's budget, by name (tests/test_import_placement.py asks which family loads a
# module and whether a hoisted import would take it over its budget) -----------------------------
def budgets() -> dict[str, dict[str, Any]]:
    """The keywords of ``over_budget`` for each command family the tests above run."""
    listings = {" ".join(a): listing_budget(a) for a in (["images"], ["images", "--format"],
                                                         ["ps"], ["inspect"], ["version"])}
    for name, off in OFF_LISTING_PATH.items():  # what test_listings_keep_… keeps off their path
        ours = {m for m in off if m.split(".")[0] in ("builder", "registry", "grammar")}
        budget = listings[name]
        listings[name] = {**budget, "heavy": frozenset(budget["heavy"]) | (off - ours),
                          "core": budget["core"] - ours}
    return {**listings, "build": {"ours": BUILD_OURS, "heavy": BUILD_HEAVY},
            "build (one step)": BUILD_STEP_BUDGET, **RUN_BUDGETS,
            "run --rm (bridge)": BRIDGE_RUN_BUDGET, "rm -f": RM_BUDGET, "push": PUSH_BUDGET,
            "pull": PULL_BUDGET, "network": NETWORK_BUDGET, "volume": VOLUME_BUDGET,
            "cluster": CLUSTER_BUDGET, "serve-app": SERVE_BUDGET}
