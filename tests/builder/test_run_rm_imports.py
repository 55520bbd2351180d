"""What ``run --rm`` on the default bridge and ``rm -f`` of a running container leave out of
their start-up (issue 15): a fresh interpreter runs the CLI's
entry (``test_startup_budget.loaded``) against a real root, then ``sys.modules`` is read.

* a bridge run without published ports spawns no helper: no ``subprocess``;
* ``rm -f`` tears down from the persisted state: none of the sandbox's start code (executor,
  child, spec, seccomp), no ``ctypes``, no ``subprocess``, no ``containers.create``;
* ``run --rm``, ``run -d`` and ``rm -f`` make no dataclass: ``dataclasses`` (and the ``inspect``,
  ``ast``, ``dis`` and ``tokenize`` it loads, ~10 ms) stays out of them (their values are
  ``builder.base.values.frozen`` ones);
* ``run --rm`` of a container without a healthcheck starts no thread: no ``threading`` (the
  supervisor imports it for the healthcheck's thread only; ``run -d`` loads it for the attach
  server it starts in the supervisor it forks);
* a foreground run looks its image up once: ``create`` hands the image it resolved to the
  supervisor, whose first start builds the spec from it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from test_startup_budget import loaded

NO_DATACLASS = {"dataclasses", "inspect"}
SANDBOX_START = {"builder.core.sandbox.executor", "builder.core.sandbox.child", "builder.core.sandbox.spec",
                 "builder.core.sandbox.seccomp", "builder.base.syscalls", "ctypes"}


def test_bridge_run_spawns_no_helper(busybox: Any, tmp_path: Path) -> None:
    busybox("run", "--rm", "busybox", "true")  # the default bridge, made once for the root
    mods = loaded(["--root", str(busybox.root), "run", "--rm", "busybox", "true"], tmp_path)
    assert "builder.network.core" in mods  # it attached the container to the bridge
    assert "subprocess" not in mods


def test_rm_f_loads_no_sandbox_start_code(busybox: Any, tmp_path: Path) -> None:
    busybox("run", "-d", "--name", "budget", "--network", "none", "busybox", "sleep", "1000")
    mods = loaded(["--root", str(busybox.root), "rm", "-f", "budget"], tmp_path)
    assert "builder.runtime.containers.lifecycle" in mods
    assert not mods & {*SANDBOX_START, "subprocess", "builder.runtime.containers.create",
                       "builder.runtime.containers.attach"}
    assert busybox("ps", "-aq").stdout.strip() == ""  # removed, and its supervisor is gone


def test_run_and_rm_f_make_no_dataclass(busybox: Any, tmp_path: Path) -> None:
    busybox("run", "--rm", "--network", "none", "busybox", "true")  # warm: its layers unpacked
    root = ["--root", str(busybox.root)]
    for argv in (["run", "--rm", "--network", "none", "busybox", "true"],
                 ["run", "-d", "--name", "nodc", "--network", "none", "busybox", "sleep", "1000"],
                 ["rm", "-f", "nodc"]):
        mods = loaded([*root, *argv], tmp_path)
        assert "builder.runtime.containers.supervisor" in mods or argv[0] == "rm"
        assert not mods & NO_DATACLASS, f"{argv[:2]} loaded {sorted(mods & NO_DATACLASS)}"
    assert busybox("ps", "-aq").stdout.strip() == ""


def test_run_rm_without_healthcheck_loads_no_threading(busybox: Any, tmp_path: Path) -> None:
    busybox("run", "--rm", "--network", "none", "busybox", "true")  # warm: its layers unpacked
    mods = loaded(["--root", str(busybox.root), "run", "--rm", "--network", "none", "busybox", "true"], tmp_path)
    assert "builder.runtime.containers.supervisor" in mods
    assert "threading" not in mods


COUNT_RESOLVES = r"""
import sys
from builder.cli import main
from registry.store import Store

calls = []
resolve = Store.resolve
Store.resolve = lambda self, *a, **k: calls.append(a) or resolve(self, *a, **k)
try:
    main(sys.argv[1:])
except SystemExit as e:
    assert not e.code, e.code
print(len(calls), file=sys.stderr)
"""


def test_foreground_run_resolves_its_image_once(busybox: Any) -> None:
    r = subprocess.run([sys.executable, "-c", COUNT_RESOLVES, "--root", str(busybox.root), "run", "--rm",
                        "--network", "none", "busybox", "echo", "ran"], capture_output=True, text=True, check=True)
    assert r.stdout == "ran\n"
    assert r.stderr.strip().splitlines()[-1] == "1"
