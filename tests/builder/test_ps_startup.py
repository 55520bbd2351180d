"""Issue 15: what ``ps`` reads of every container record (its ``HostConfig`` and the values it is
made of, its ``State``, its image config's ``ContainerConfig``) is made without ``dataclasses``:
importing it makes no dataclass, and ``ps -a`` loads neither ``dataclasses`` nor ``inspect``
(~1 ms a class, ~7 ms the two modules, on every ``ps``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HOST_CONFIG_MODULES = ("builder.base.values", "builder.runtime.containers.options",
                       "builder.runtime.containers.hostconfig")
RECORD_MODULES = ("registry.values", "registry.config", "builder.runtime.containers.record")

PROBE = r"""
import json, sys
for name in sys.argv[1:]:
    __import__(name)
made = sorted(f"{name}.{v.__qualname__}" for name in sys.argv[1:]
              for v in vars(sys.modules[name]).values()
              if isinstance(v, type) and v.__module__ == name and "__dataclass_fields__" in vars(v))
print(json.dumps({"made": made, "loaded": sorted(m for m in ("dataclasses", "inspect") if m in sys.modules)}))
"""


def test_host_config_loads_no_dataclasses() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE, *HOST_CONFIG_MODULES], capture_output=True,
                         text=True, check=True, cwd="/")
    got = json.loads(out.stdout)
    assert got == {"made": [], "loaded": []}, got


def test_the_record_loads_no_dataclasses() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE, *RECORD_MODULES], capture_output=True,
                         text=True, check=True, cwd="/")
    got = json.loads(out.stdout)
    assert got == {"made": [], "loaded": []}, got


def test_ps_loads_no_dataclasses(busybox: Any) -> None:
    busybox("run", "-d", "--network", "none", "--name", "up", "busybox", "sleep", "300")
    busybox("run", "--network", "none", "--name", "done", "busybox", "true")
    code = ("import sys\nfrom builder.cli import main\ntry:\n    main(sys.argv[1:])\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "print([m for m in ('dataclasses', 'inspect') if m in sys.modules], file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code, "--root", str(busybox.root), "ps", "-a"],
                       capture_output=True, text=True, check=True, cwd="/")
    assert r.stdout.count("busybox") == 2  # both rows: the command ran
    assert r.stderr.strip().splitlines()[-1] == "[]", r.stderr
    busybox("rm", "-f", "up", "done")


def test_the_probe_sees_a_dataclass(tmp_path: Path) -> None:
    """The probe itself: a module that makes a dataclass is reported."""
    (tmp_path / "probe_dc.py").write_text("from dataclasses import dataclass\n\n\n"
                                          "@dataclass(frozen=True)\nclass D:\n    a: int = 0\n")
    out = subprocess.run([sys.executable, "-c", PROBE, "probe_dc"], capture_output=True, text=True,
                         check=True, cwd=tmp_path)
    assert json.loads(out.stdout) == {"made": ["probe_dc.D"], "loaded": ["dataclasses", "inspect"]}
