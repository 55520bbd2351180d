"""Shared fixtures for the whole suite.

* ``busybox_tar`` (session): path of a deterministic busybox rootfs tarball made offline by
  ``testdata/mkbusybox.py`` from Debian's busybox-static. Read-only: copy it to change it.
* ``pybuild``: a ``Pybuild`` runner bound to a fresh state root under ``tmp_path``. Call it
  like the CLI; it runs the installed ``pybuild`` in a subprocess with ``--root`` set:

      out = pybuild("images", "-q").stdout                  # check=True: raises on exit != 0
      r = pybuild("rmi", "nope", check=False); r.returncode, r.stderr
      pybuild("load", input=data, text=False)              # bytes in/out

  ``pybuild.root`` is the state root (``Path``), ``pybuild.state`` its ``StateRoot`` and
  ``pybuild.store()`` the ``registry.store.Store`` under it, for direct checks.
* ``busybox``: a ``Pybuild`` whose store already holds ``busybox:latest`` (imported through
  the library, ``CMD ["sh"]``); ``busybox.image_id`` is its ``sha256:…`` ID.
* ``pybuild_factory()``: another ``Pybuild`` with a fresh root of its own, per call.
* ``store_listing(root)`` (fixture returning the function): every path under a directory with
  its size, sorted, for "the store is unchanged" checks.
* ``Pybuild.command``: the argv prefix that runs the CLI, for tests that need ``Popen``.
* ``host_leak_guard`` (session, autouse): the session fails at teardown if it left on the host
  state of its own roots (several sessions run at once here; theirs does not count): a ``pb-*``
  bridge or ``pbv*`` veth, or a rule in a ``PYBUILD*`` chain, that a network record under the
  base temp dir names (records still there, and those the ``pybuild`` fixtures read before
  resetting their roots); a ``pybuild/<id>`` cgroup of one of its containers, sandbox run dirs
  or sandbox tests; a mount or a process whose command line mentions the base temp dir.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]

# No test may reach Docker Hub: every docker.io reference goes to a closed loopback port instead
# (PYBUILD_REGISTRY_MIRROR), so a missing base image fails at once with "connection refused".
os.environ["PYBUILD_REGISTRY_MIRROR"] = "127.0.0.1:9"
TESTDATA = REPO / "testdata"
_BIN = Path(sys.executable).parent / "pybuild"
PYBUILD_CMD = [str(_BIN)] if _BIN.exists() else [sys.executable, "-c",
                                                  "from builder.cli import main; main()"]


def _mkbusybox() -> Any:
    spec = importlib.util.spec_from_file_location("mkbusybox", TESTDATA / "mkbusybox.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("mkbusybox", mod)
    spec.loader.exec_module(mod)
    return mod


class Pybuild:
    """Runs ``pybuild --root ROOT ARGS…`` in a subprocess (see the module docstring)."""

    command = PYBUILD_CMD

    def __init__(self, root: Path) -> None:
        self.root = root
        self.image_id = ""

    @property
    def state(self) -> Any:
        from builder.base.state import StateRoot

        return StateRoot.open(self.root)

    def store(self) -> Any:
        from registry.store import Store

        return Store(self.root / "store")

    def __call__(self, *args: str, input: bytes | str | None = None, check: bool = True,
                 text: bool = True, env: dict[str, str] | None = None,
                 timeout: float = 120) -> subprocess.CompletedProcess[Any]:
        environ = {k: v for k, v in os.environ.items() if k != "PYBUILD_ROOT"}
        environ.update(env or {})
        if text and isinstance(input, bytes):
            input = input.decode()
        r = subprocess.run([*PYBUILD_CMD, "--root", str(self.root), *args], input=input,
                           capture_output=True, text=text, env=environ, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"pybuild {' '.join(args)} exited {r.returncode}\n"
                                 f"stdout: {r.stdout!r}\nstderr: {r.stderr!r}")
        return r


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("busybox") / "busybox.tar"
    _mkbusybox().make_tar(path)
    path.chmod(0o444)
    return path


def _reset_networks(root: Path, failed: bool = False) -> None:
    """The default bridge stays up between containers (as docker0): remove it, and every other
    network of the root, when the test is over. After a *failed* test the whole root is taken
    off the host (``system reset``: its containers too), so that what the failure left running
    cannot disturb the tests after it; a passing test's leftovers stay for the leak guard."""
    from builder.base.state import StateRoot

    if failed and root.is_dir():
        from builder.system import reset

        reset.reset(StateRoot.open(root))
    if (root / "networks").is_dir():
        from builder import network

        _SEEN_NAMES.update(_network_names([str(p) for p in (root / "networks").glob("*.json")]))
        network.reset(StateRoot.open(root))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """Marks an item whose test body failed (``item.failed``), for the fixtures' teardown."""
    outcome = yield
    if call.when == "call" and outcome.get_result().failed:
        item.failed = True  # type: ignore[attr-defined]


def _failed(request: pytest.FixtureRequest) -> bool:
    return bool(getattr(request.node, "failed", False))


@pytest.fixture
def pybuild(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Pybuild]:
    root = tmp_path / "root"
    root.mkdir()
    yield Pybuild(root)
    _reset_networks(root, _failed(request))


@pytest.fixture
def pybuild_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[[], Pybuild]]:
    count = iter(range(1, 1000))
    made: list[Path] = []

    def make() -> Pybuild:
        root = tmp_path / f"root{next(count)}"
        root.mkdir()
        made.append(root)
        return Pybuild(root)

    yield make
    for root in made:
        _reset_networks(root, _failed(request))


@pytest.fixture
def busybox(pybuild: Pybuild, busybox_tar: Path) -> Iterator[Pybuild]:
    from registry import archive
    from registry.reference import Reference

    imported = archive.import_rootfs(pybuild.store(), busybox_tar,
                                     reference=Reference.parse("busybox:latest"),
                                     config={"Cmd": ["sh"]})
    pybuild.image_id = str(imported.config.digest)
    yield pybuild


@pytest.fixture(name="store_listing")
def store_listing_fixture() -> Callable[[Path], list[tuple[str, int]]]:
    return store_listing


def store_listing(root: Path) -> list[tuple[str, int]]:
    """Every file and directory under *root* (relative path, size; -1 for a directory)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out.append((os.path.relpath(os.path.join(dirpath, d), root), -1))
        for f in filenames:
            p = os.path.join(dirpath, f)
            out.append((os.path.relpath(p, root), os.lstat(p).st_size))
    return sorted(out)


@pytest.fixture(scope="session")
def dockerd() -> Iterator[Any]:
    """The judge tests' private ``dockerd`` (``tests/dockerd.py``): one per session, whichever
    folder's tests ask first, stopped at the session's end."""
    from dockerd import Dockerd

    d = Dockerd()
    d.start()
    try:
        yield d
    finally:
        d.stop()


# -- the host is left as it was found -------------------------------------------------------------
# Several test sessions run at once on this host: the guard counts only what belongs to state
# roots under this session's base temp dir (its *scope*), found through their records.
_CGROUP_BASE = Path("/sys/fs/cgroup")
#: network names (bridges, host veths, rule tags) of records a ``pybuild`` fixture saw before
#: resetting its root: the records are gone by teardown, what they named must be too
_SEEN_NAMES: set[str] = set()


def _under(scope: str, *pattern: str, depth: int = 4) -> list[str]:
    """Paths matching ``SCOPE/*/…/PATTERN`` with 1 to *depth* directories in between (state
    roots sit at ``tmp_path/root``, module roots at ``mktemp(...)``, test roots deeper)."""
    import glob

    out: list[str] = []
    for n in range(1, depth + 1):
        out.extend(glob.glob(os.path.join(glob.escape(scope), *(["*"] * n), *pattern)))
    return out


def _network_names(records: list[str]) -> set[str]:
    """Bridge, host veth and rule tag names that these network records account for."""
    import json

    out: set[str] = set()
    for rec in records:
        try:
            d = json.loads(Path(rec).read_text())
        except (OSError, ValueError):
            continue
        nid = str(d.get("Id", ""))[:12]
        out.update({str(d.get("Bridge") or ""), f"pybuild:{nid}"})
        for cid, ep in (d.get("Containers") or {}).items():
            out.update({f"pybuild:{nid}:{cid[:12]}", str((ep or {}).get("HostVeth") or "")})
    out.discard("")
    out.discard("pybuild:")
    return out


def _owned(scope: str) -> dict[str, set[str]]:
    """What this session's state roots account for: network names (records now and those seen
    before a reset) and sandbox ids (containers, run dirs left, the sandbox tests' prefix)."""
    names = _network_names(_under(scope, "networks", "*.json")) | _SEEN_NAMES
    ids = {Path(p).name for p in _under(scope, "containers", "*") if os.path.isdir(p)}
    ids |= {Path(p).parent.name for p in _under(scope, "run", "*", "state.json")}
    return {"names": names, "ids": ids}


def _links(owned: dict[str, set[str]]) -> set[str]:
    """Bridges (``pb-*``) and host-side veths (``pbv*``) that our records name."""
    return {n for n in os.listdir("/sys/class/net")
            if n.startswith(("pb-", "pbv")) and n in owned["names"]}


def _rules(owned: dict[str, set[str]]) -> set[str]:
    """Rules in ``PYBUILD*`` chains, every table (``iptables-save``), tagged with our networks."""
    try:
        text = subprocess.run(["iptables-save"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return set()
    table = ""
    out: set[str] = set()
    tags = {n for n in owned["names"] if n.startswith("pybuild:")}
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith("-A PYBUILD"):
            m = re.search(r'--comment "?(pybuild:[0-9a-f]{12}(?::[0-9a-f]{12})?)', line)
            if m and (m.group(1) in tags or m.group(1)[:20] in tags):
                out.add(f"{table}: {line}")
    return out


def _mounts(scope: str) -> set[str]:
    """Host mounts that mention the base temp dir (every state root of ours is under it)."""
    return {" ".join(line.split()[3:]) for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if scope in line}


def _cgroups(owned: dict[str, set[str]]) -> set[str]:
    """Cgroup dirs ``*/pybuild/<id>`` of our sandboxes: the ids our roots name, and the sandbox
    tests' ``pbt<pid>x`` prefix (this process's pid: see ``test_sandbox_support.ID_PREFIX``)."""
    prefix = f"pbt{os.getpid()}x"
    out: set[str] = set()
    if not _CGROUP_BASE.is_dir():
        return out
    for hier in _CGROUP_BASE.iterdir():
        base = hier / "pybuild"
        if not base.is_dir():
            continue
        for dirpath, dirnames, _files in os.walk(base):
            out.update(os.path.join(dirpath, d) for d in dirnames
                       if d in owned["ids"] or d.startswith(prefix))
    return out


def _processes(scope: str) -> set[str]:
    """Processes (other than this one and its ancestors) whose command line mentions *scope*."""
    mine = {os.getpid()}
    pid = os.getppid()
    while pid > 1:
        mine.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            break
    out: set[str] = set()
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) in mine:
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if scope in cmd:
            out.add(f"{d}: {cmd.strip()}")
    return out


def _host_state(scope: str) -> dict[str, set[str]]:
    owned = _owned(scope)
    return {"links": _links(owned), "iptables rules": _rules(owned), "mounts": _mounts(scope),
            "cgroups": _cgroups(owned), "processes": _processes(scope)}


@pytest.fixture(scope="session", autouse=True)
def host_leak_guard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fail the session (an error at teardown) if it left host state behind (see the docstring).

    Made first and torn down last, after every other session fixture has stopped its servers.
    Only state of this session's roots counts (other sessions run meanwhile); helpers being
    stopped take a moment, so what is left gets a grace before it counts.
    """
    scope = str(tmp_path_factory.getbasetemp())
    yield
    deadline = time.monotonic() + 10
    while True:
        left = {k: sorted(v) for k, v in _host_state(scope).items() if v}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if left:
        lines = [f"{k}: {v}" for k, items in left.items() for v in items]
        pytest.fail("the test session left host state behind:\n  " + "\n  ".join(lines), pytrace=False)
