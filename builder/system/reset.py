"""``system reset``: everything one state root put on the host goes (and, with *everything*,
what the root holds).

``reset(state, everything=)`` stops and removes every container, tears down every sandbox
left by killed builds, removes every network (the default bridge too, with the root's
``PYBUILD*`` rules; chains and hooks go with the host's last rule), the root's cgroups and
mounts, and leaves the cluster. Images, volumes and the build cache stay unless *everything*,
which empties the root. The CLI's ``system reset`` and the tests call it; nothing here prints.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from builder import TYPE_CHECKING, network
from builder.base import rootless
from builder.core.sandbox import cgroups, teardown_run_dir
from builder.core.sandbox.cgroups import Cgroup
from builder.runtime.containers import lifecycle

if TYPE_CHECKING:
    from builder.base.state import StateRoot
@dataclass(frozen=True)
class ResetReport:
    """What ``system reset`` took off the host (and, with *everything*, out of the root)."""

    containers: tuple[str, ...] = ()
    sandboxes: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()
    cgroups: tuple[str, ...] = ()
    mounts: tuple[str, ...] = ()
    removed_store: bool = False
    errors: tuple[str, ...] = field(default=())


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or under *path*, deepest first (octal escapes of mountinfo decoded)."""
    base = str(path.resolve())
    out = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            mnt = line.split()[4].encode().decode("unicode_escape")
            if mnt == base or mnt.startswith(base.rstrip("/") + "/"):
                out.append(mnt)
    return sorted(set(out), key=lambda m: (-m.count("/"), m))


def _cgroups_of(ids: set[str]) -> list[Path]:
    """``pybuild/<id>`` cgroup dirs of these sandbox ids, in every hierarchy."""
    layout = cgroups.detect()
    out = []
    for mnt in {*layout.v1.values(), *([layout.v2] if layout.v2 else [])}:
        base = Path(mnt) / cgroups.PARENT
        for i in ids:
            if (base / i).is_dir():
                out.append(base / i)
    return out


def reset(state: StateRoot, *, everything: bool = False) -> ResetReport:
    """Take everything of this root off the host: containers (stopped, removed), sandboxes left
    by killed builds, networks (the default bridge too) with their links, rules and helpers,
    the root's cgroups and mounts. With *everything*, the root's contents go as well (images,
    build cache, volumes). Errors are collected, not raised: a reset goes as far as it can."""
    errors: list[str] = []
    ids: set[str] = set()
    containers: list[str] = []
    for c in lifecycle.list_containers(state, all=True):
        ids.add(c.id)
        try:
            lifecycle.remove(state, c.id, force=True, volumes=everything)
            containers.append(c.id)
        except Exception as e:  # keep going: the rest must still go
            errors.append(f"container {c.id[:12]}: {e}")
    sandboxes: list[str] = []
    if state.run.is_dir():
        for d in sorted(state.run.iterdir()):
            if (d / "state.json").exists():
                ids.add(d.name)
                try:
                    teardown_run_dir(d)
                    sandboxes.append(d.name)
                except Exception as e:
                    errors.append(f"sandbox {d.name}: {e}")
    names: list[str] = []
    try:  # links, rules, netns and containers' cgroups tagged with this root (records or not)
        swept = network.sweep_roots(root=state.path)
    except Exception as e:
        swept = network.Swept()
        errors.append(f"networks: {e}")
    if state.networks.is_dir() or (state.run / "netns").is_dir():
        names = [n.name for n in network.list_networks(state)]
        try:
            network.reset(state)
        except Exception as e:
            errors.append(f"networks: {e}")
    names += swept.links
    errors += [f"networks: {e}" for e in swept.errors]
    if state.containers.is_dir():
        ids.update(p.name for p in state.containers.iterdir() if p.is_dir())
    cgroups = list(swept.cgroups)
    for p in _cgroups_of(ids):
        try:
            Cgroup(id=p.name, paths=[str(p)]).remove()
            cgroups.append(str(p))
        except Exception as e:
            errors.append(f"cgroup {p}: {e}")
    mounts = []
    for m in _mounts_under(state.path):
        r = subprocess.run(["umount", "-l", m], capture_output=True, text=True)
        if r.returncode == 0:
            mounts.append(m)
        elif m in _mounts_under(state.path):  # else another process's sweep took it meanwhile
            errors.append(f"umount {m}: {r.stderr.strip()}")
    with contextlib.suppress(OSError):
        shutil.rmtree(state.run)
    if everything and not errors and state.path.is_dir():  # (a root never made: nothing to empty)
        for entry in state.path.iterdir():
            if entry.name in ("locks",):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    if "_PYBUILD_ROOTLESS" in os.environ:  # the user's namespace keeper, once nothing uses it
        rootless.stop_keeper()
    return ResetReport(tuple(containers), tuple(sandboxes), tuple(names), tuple(cgroups),
                       tuple(mounts), removed_store=everything and not errors, errors=tuple(errors))
