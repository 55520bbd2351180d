"""A deleted state root's cgroups (issue 22, item 6): containers with no network namespace
(``--network none``) and the RUN step of a killed build are tied to their root by cgroup owner
records, so the next network set-up of another root, or ``system reset`` of the missing root,
kills their processes and removes their cgroups in every hierarchy (v1 and v2 alike).

The deletion here is deliberate: it is the scenario under test.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from root_tidy import assert_root_tidy

from builder.core.sandbox import cgroups
from builder.core.sandbox.spec import Resources
from builder.network import sweep

Pybuild = Any  # the runner from tests/conftest.py
Factory = Callable[[], Pybuild]


def _with_busybox(pb: Pybuild, busybox_tar: Path) -> Pybuild:
    from registry import archive
    from registry.reference import Reference

    archive.import_rootfs(pb.store(), busybox_tar, reference=Reference.parse("busybox:latest"),
                          config={"Cmd": ["sh"]})
    return pb


def _pids_running(argv: list[str]) -> set[int]:
    want = "\0".join(argv).encode() + b"\0"
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if Path(f"/proc/{d}/cmdline").read_bytes() == want:
                    out.add(int(d))
            except OSError:
                continue
    return out


def _processes_naming(root: str) -> set[int]:
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != os.getpid():
            try:
                if root.encode() in Path(f"/proc/{d}/cmdline").read_bytes():
                    out.add(int(d))
            except OSError:
                continue
    return out


def _populate(pb: Pybuild, tmp_path: Path, mark: str) -> tuple[set[int], set[str], subprocess.Popen[str]]:
    """A detached ``--network none`` container and a build killed (SIGKILL) in its RUN step:
    their processes and their cgroup dirs (the RUN step's process dies with the build, its
    cgroups stay: without the root, nothing else would remove them)."""
    pb("run", "-d", "--network", "none", "busybox", "sleep", f"{mark}1")
    ctx = tmp_path / f"ctx{mark}"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM busybox\nRUN sleep {mark}2\n")
    build = subprocess.Popen([*pb.command, "--root", str(pb.root), "build", str(ctx)], text=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not _pids_running(["sleep", f"{mark}2"]):
        assert build.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    pids = _pids_running(["sleep", f"{mark}1"]) | _pids_running(["sleep", f"{mark}2"])
    dirs = {d for p in pids for d in cgroups.cgroup_paths_of(p)}
    build.kill()
    build.wait()
    assert len(pids) == 2 and len({Path(d).name for d in dirs}) == 2, (pids, dirs)
    assert {Path(d).name for d in dirs} <= {sid for sid, _, _ in cgroups.owners()}
    return pids, dirs, build


def _assert_nothing_left(root: str, pids: set[int], dirs: set[str]) -> None:
    deadline = time.monotonic() + 10
    while (pids & _alive(pids) or _processes_naming(root)) and time.monotonic() < deadline:
        time.sleep(0.05)  # the killed sandboxes' helpers and the supervisor end after them
    assert not _alive(pids)
    assert not _processes_naming(root)
    assert [d for d in dirs if os.path.exists(d)] == []
    assert not [sid for sid, tag, _ in cgroups.owners() if tag.endswith(f" {root}")]


def _alive(pids: set[int]) -> set[int]:
    out = set()
    for p in pids:
        try:
            state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.add(p)
    return out


def test_another_roots_network_setup_sweeps_a_deleted_roots_cgroups(
        pybuild_factory: Factory, busybox_tar: Path, tmp_path: Path) -> None:
    gone = _with_busybox(pybuild_factory(), busybox_tar)
    pids, dirs, _ = _populate(gone, tmp_path, str(random.randrange(10000, 99999)))
    root = os.path.realpath(gone.root)
    subprocess.run(["rm", "-rf", root], capture_output=True)
    assert not os.path.isdir(os.path.join(root, "locks"))
    assert _alive(pids) and all(os.path.exists(d) for d in dirs)  # nothing of it stopped by itself
    # (another test session on this host may sweep it first: the outcome is the same)
    live = _with_busybox(pybuild_factory(), busybox_tar)
    keeper = live("run", "-d", "--network", "none", "busybox", "sleep", "7019").stdout.strip()
    live("network", "create", "next")  # sets up a network: sweeps first
    _assert_nothing_left(root, pids, dirs)
    # the live root's own container, on no network either, keeps running
    assert live("inspect", "-f", "{{.State.Running}}", keeper).stdout.strip() == "true"
    live("rm", "-f", keeper)
    assert_root_tidy(live)


def test_system_reset_of_a_missing_root_takes_its_cgroups(
        pybuild_factory: Factory, busybox_tar: Path, tmp_path: Path) -> None:
    gone = _with_busybox(pybuild_factory(), busybox_tar)
    pids, dirs, _ = _populate(gone, tmp_path, str(random.randrange(10000, 99999)))
    root = os.path.realpath(gone.root)
    subprocess.run(["rm", "-rf", root], capture_output=True)
    r = gone("system", "reset", "-f")
    assert r.returncode == 0 and r.stderr == ""
    _assert_nothing_left(root, pids, dirs)
    assert_root_tidy(gone)  # the root reset made again: empty, and nothing of it on the host


@pytest.mark.parametrize("version", [1, 2])
def test_owner_records_in_either_layout(version: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The owner record does not depend on the cgroup layout: in a v1 layout (one dir per
    controller hierarchy) or a pure v2 one, the sweep of a missing root finds its sandbox's
    dirs in every hierarchy by the record and removes them, and the record with them. The
    hierarchies are plain directories here (this host has one layout; the kernel's cgroup files
    are what ``Cgroup`` reads only where they exist)."""
    hiers = {c: str(tmp_path / "cg" / c) for c in ("pids", "devices")} if version == 1 else {}
    v2 = str(tmp_path / "cg" / "unified") if version == 2 else None
    for d in [*hiers.values(), *([v2] if v2 else [])]:
        Path(d).mkdir(parents=True)
    layout = cgroups.Layout(v1=hiers, v2=v2, v2_controllers=())
    root = tmp_path / "root"
    root.mkdir()
    sid = f"pbtsweep{os.getpid()}x{version}"
    cg = cgroups.Cgroup.create(sid, Resources(), layout, root=root)
    assert sorted(cg.paths) == sorted(str(Path(h) / cgroups.PARENT / sid) for h in [*hiers.values(), *([v2] if v2 else [])])
    assert (root / "locks").is_dir()  # a live root has it: the sweep tells a deleted one by its loss
    tag = dict((s, t) for s, t, _ in cgroups.owners())[sid]
    assert tag.endswith(f" {os.path.realpath(root)}")
    monkeypatch.setattr(cgroups, "_LAYOUT", layout)
    subprocess.run(["rm", "-rf", str(root)], check=True)
    assert all(os.path.isdir(p) for p in cg.paths)
    sweep.sweep(root=root)  # as ``system reset`` of the missing root does
    assert [p for p in cg.paths if os.path.exists(p)] == [] and sid not in {s for s, _, _ in cgroups.owners()}
