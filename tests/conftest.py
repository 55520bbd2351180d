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
  a ``pb-*`` bridge or ``pbv*`` veth, a rule in a ``PYBUILD*`` iptables chain, a mount under
  the pytest base temp dir (or mentioning a pybuild state root), an empty cgroup under
  ``*/pybuild/``, or a process whose command line mentions the base temp dir.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
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
        from builder.state import StateRoot

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


def _reset_networks(root: Path) -> None:
    """The default bridge stays up between containers (as docker0): remove it, and every other
    network of the root, when the test is over."""
    if (root / "networks").is_dir():
        from builder import network
        from builder.state import StateRoot

        network.reset(StateRoot.open(root))


@pytest.fixture
def pybuild(tmp_path: Path) -> Iterator[Pybuild]:
    root = tmp_path / "root"
    root.mkdir()
    yield Pybuild(root)
    _reset_networks(root)


@pytest.fixture
def pybuild_factory(tmp_path: Path) -> Iterator[Callable[[], Pybuild]]:
    count = iter(range(1, 1000))
    made: list[Path] = []

    def make() -> Pybuild:
        root = tmp_path / f"root{next(count)}"
        root.mkdir()
        made.append(root)
        return Pybuild(root)

    yield make
    for root in made:
        _reset_networks(root)


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


# -- the host is left as it was found -------------------------------------------------------------
_CGROUP_BASE = Path("/sys/fs/cgroup")


def _our_links() -> set[str]:
    """Bridges (``pb-*``) and host-side veths (``pbv*``) of ours."""
    out: set[str] = set()
    for name in os.listdir("/sys/class/net"):
        if name.startswith(("pb-", "pbv")):
            out.add(name)
    return out


def _our_rules() -> set[str]:
    """Rules in ``PYBUILD*`` chains, every table (``iptables-save``)."""
    try:
        text = subprocess.run(["iptables-save"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return set()
    table = ""
    out: set[str] = set()
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith("-A PYBUILD"):
            out.add(f"{table}: {line}")
    return out


def _our_mounts(scope: str) -> set[str]:
    """Host mounts under the base temp dir or mentioning a pybuild state root (ids dropped)."""
    out: set[str] = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if scope in line or "pybuild" in line:
            out.add(" ".join(line.split()[3:]))
    return out


def _empty_pybuild_cgroups() -> set[str]:
    """Cgroup dirs under ``*/pybuild/`` holding no process (live ones may be another session's)."""
    out: set[str] = set()
    if not _CGROUP_BASE.is_dir():
        return out
    for hier in _CGROUP_BASE.iterdir():
        base = hier / "pybuild"
        if not base.is_dir():
            continue
        for dirpath, dirnames, _files in os.walk(base):
            for d in dirnames:
                p = os.path.join(dirpath, d)
                try:
                    procs = Path(p, "cgroup.procs").read_text().strip()
                except OSError:
                    continue
                if not procs:
                    out.add(p)
    return out


def _our_processes(scope: str) -> set[str]:
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


def _foreign(scope: str) -> set[str]:
    """Bridge, veth and rule-tag names that network records of other, concurrent pytest sessions
    (siblings of our base temp dir) account for: theirs to clean, not ours."""
    import glob
    import json

    base = Path(scope)
    out: set[str] = set()
    for depth in ("*", "*/*", "*/*/*"):
        for rec in glob.glob(str(base.parent / "pytest-*" / depth / "networks" / "*.json")):
            if rec.startswith(scope + os.sep):
                continue
            try:
                d = json.loads(Path(rec).read_text())
            except (OSError, ValueError):
                continue
            out.update({str(d.get("Bridge") or ""), f"pybuild:{str(d.get('Id', ''))[:12]}"})
            for cid, ep in (d.get("Containers") or {}).items():
                out.update({f"pybuild:{cid[:12]}", str((ep or {}).get("HostVeth") or "")})
    out.discard("")
    return out


def _ours(kind: str, item: str, foreign: set[str]) -> bool:
    if kind == "links":
        return item not in foreign
    if kind == "iptables rules":
        return not any(f in item for f in foreign if f.startswith("pybuild:"))
    return True


def _host_state(scope: str) -> dict[str, set[str]]:
    return {"links": _our_links(), "iptables rules": _our_rules(), "mounts": _our_mounts(scope),
            "empty cgroups": _empty_pybuild_cgroups(), "processes": _our_processes(scope)}


@pytest.fixture(scope="session", autouse=True)
def host_leak_guard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fail the session (an error at teardown) if it left host state behind (see the docstring).

    Made first and torn down last, after every other session fixture has stopped its servers.
    What is new must still be there after a grace: helpers being stopped take a moment.
    """
    scope = str(tmp_path_factory.getbasetemp())
    before = _host_state(scope)
    yield
    deadline = time.monotonic() + 10
    seen: dict[str, set[str]] | None = None
    while True:
        after = _host_state(scope)
        # new and still there at the previous look: another session's passing sandbox is not
        fresh = {k: after[k] - before[k] for k in after}
        if seen is not None:
            fresh = {k: fresh[k] & seen[k] for k in fresh}
        foreign = _foreign(scope) if any(fresh.values()) else set()
        new = {k: sorted(i for i in v if _ours(k, i, foreign)) for k, v in fresh.items()}
        new = {k: v for k, v in new.items() if v}
        if not new or time.monotonic() > deadline:
            break
        seen = {k: after[k] - before[k] for k in after}
        time.sleep(0.5)
    if new:
        lines = [f"{k}: {v}" for k, items in new.items() for v in items]
        pytest.fail("the test session left host state behind:\n  " + "\n  ".join(lines), pytrace=False)
