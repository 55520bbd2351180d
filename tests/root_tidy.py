"""What every fault scenario of issue 22 checks afterwards (``assert_root_tidy``): the root is
whole (``system check`` clean, every listed image ``save``s and runs) and holds nothing beyond
its own, on the host (no process, mount, link, rule or cgroup) or on disk (the blobs its images
and build cache need; no ingest file, killed build's workspace, half-unpacked layer or half-made
container record; ``system check`` also reports unpacked layers no image or record names).
Shared by the store, build, container and sweep fault tests.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

Pybuild = Any  # the runner from tests/conftest.py


def _check_ok(pb: Pybuild) -> None:
    r = pb("system", "check", check=False)
    assert r.returncode == 0 and r.stdout.strip() == "ok", f"system check: {r.stdout}{r.stderr}"


def _images_save_and_run(pb: Pybuild) -> None:
    """Each listed image (once per ID) saves with its layers and runs ``true``."""
    by_id: dict[str, str] = {}
    for rec in pb.store().images():
        by_id.setdefault(str(rec.image_id), str(rec.reference) if rec.reference else str(rec.image_id))
    out = pb.root.parent / "tidy-saved.tar"
    for name in by_id.values():
        pb("save", "-o", str(out), name)
        assert out.stat().st_size > 10_000, name
        out.unlink()
        pb("run", "--rm", "--network", "none", name, "true")


def _network_ids(root: Path) -> set[str]:
    out = set()
    for p in (root / "networks").glob("*.json"):
        try:
            out.add(str(json.loads(p.read_text())["Id"])[:12])
        except (OSError, ValueError, KeyError):
            continue
    return out


def host_leftovers(pb: Pybuild) -> list[str]:
    """What of the root is on the host beyond its own networks (bridges and their rules), with
    no container running: processes naming the root, mounts under it, veths tagged with it,
    per-container rules of its networks, cgroup owner records naming it."""
    from builder.core.sandbox import cgroups
    from builder.network import links, sweep

    root = os.path.realpath(pb.root)
    bad: list[str] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if f" {root}/" in line or f" {root} " in line:
            bad.append(f"mount {' '.join(line.split()[3:5])}")
    nets = _network_ids(pb.root)
    for name, alias in links.tagged_links(sweep.PREFIX):
        if alias.endswith(f" {root}") and (not name.startswith("pb-") or alias.split()[1] not in nets):
            bad.append(f"link {name} ({alias})")
    if nets:
        rules = subprocess.run(["iptables-save"], capture_output=True, text=True, timeout=30).stdout
        alt = "|".join(sorted(nets))
        per_container = re.compile(rf"pybuild:({alt}):[0-9a-f]{{12}}")
        bad += [f"rule {r}" for r in rules.splitlines() if per_container.search(r)]
    bad += [f"cgroup {sid}" for sid, tag, _ in cgroups.owners() if tag.endswith(f" {root}")]
    me = os.getpid()
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != me:
            try:
                cmd = Path(f"/proc/{d}/cmdline").read_bytes()
            except OSError:
                continue
            if root.encode() in cmd or str(pb.root).encode() in cmd:
                bad.append(f"process {d}: " + cmd.replace(b"\0", b" ").decode(errors="replace"))
    return bad


def disk_leftovers(pb: Pybuild) -> list[str]:
    """What the root holds on disk beyond what its images and build cache need."""
    from builder.base.state import StateRoot
    from builder.imagebuild.cache import BuildCache

    state = StateRoot(pb.root)
    store = pb.store()
    need = {d.encoded for d in store.referenced()}
    if state.cache.is_dir():
        need |= {d.encoded for d in BuildCache(state.cache, store, layers=state.layers).kept_blobs()}
    blobs = store.path / "blobs" / "sha256"
    on_disk = {p.name for p in blobs.iterdir()} if blobs.is_dir() else set()
    bad = [f"blob {b}" for b in sorted(on_disk - need)]
    bad += [f"missing blob {b}" for b in sorted(need - on_disk)]
    for area, prefixes in (("store/ingest", ("",)), ("run", ("build-",)), ("layers", (".tmp-",)),
                           ("containers", (".tmp-", ".rm-"))):
        d = pb.root / area
        if d.is_dir():
            bad += [f"{area}/{p.name}" for p in d.iterdir() if p.name.startswith(prefixes)]
    return bad


def assert_root_tidy(pb: Pybuild, *, images: bool = True) -> None:
    """Issue 22's check after a fault scenario, with no container of the root running.
    *images*: save and run every listed image (the slowest part: a loop that changes no image
    may do it once at its end)."""
    _check_ok(pb)
    if images:
        _images_save_and_run(pb)
    deadline = time.monotonic() + 10
    while (host := host_leftovers(pb)) and time.monotonic() < deadline:
        time.sleep(0.2)  # a SIGKILLed process is reaped, a port proxy stopped, a moment later
    assert host == [], f"host state of {pb.root} left: {host}"
    disk = disk_leftovers(pb)
    assert disk == [], f"{pb.root} holds more than its images need: {disk}"
