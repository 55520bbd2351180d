"""A relative ``--root`` (or ``PYBUILD_ROOT``) is read from the working directory and made
absolute, as dockerd makes its ``--data-root``: a build's RUN and a container's bind mounts of
their own files need absolute sources (they failed with "bind mount source … is not an
absolute path")."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any


def _pybuild(pb: Any, cwd: Path, *args: str,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "PYBUILD_ROOT"}
    environ.update(env or {})
    return subprocess.run([*pb.command, *args], cwd=cwd, env=environ, capture_output=True,
                          text=True, timeout=120)


def test_relative_root_builds_and_runs(busybox: Any, tmp_path: Path) -> None:
    assert busybox.root == tmp_path / "root"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo built > /built\n")
    r = _pybuild(busybox, tmp_path, "--root", "root", "build", "-q", "-t", "rel:1", "ctx")
    assert r.returncode == 0, r.stderr
    r = _pybuild(busybox, tmp_path, "--root", "./ctx/../root", "run", "--rm", "--network", "none",
                 "rel:1", "cat", "/built")
    assert (r.returncode, r.stdout) == (0, "built\n"), r.stderr
    r = _pybuild(busybox, tmp_path, "run", "--rm", "--network", "none", "busybox", "cat", "/etc/hostname",
                 env={"PYBUILD_ROOT": "root"})
    assert r.returncode == 0 and len(r.stdout.strip()) == 12, r.stderr
    # the same root, not a second one under the working directory
    assert not (ctx / "root").exists()
    assert "rel" in busybox("images", "--format", "{{.Repository}}").stdout.split()
