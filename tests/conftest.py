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
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
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


@pytest.fixture
def pybuild(tmp_path: Path) -> Pybuild:
    root = tmp_path / "root"
    root.mkdir()
    return Pybuild(root)


@pytest.fixture
def pybuild_factory(tmp_path: Path) -> Callable[[], Pybuild]:
    count = iter(range(1, 1000))

    def make() -> Pybuild:
        root = tmp_path / f"root{next(count)}"
        root.mkdir()
        return Pybuild(root)

    return make


@pytest.fixture
def busybox(pybuild: Pybuild, busybox_tar: Path) -> Iterator[Pybuild]:
    from registry import archive
    from registry.reference import Reference

    imported = archive.import_rootfs(pybuild.store(), busybox_tar,
                                     reference=Reference.parse("busybox:latest"),
                                     changes=['CMD ["sh"]'])
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
