"""A state root deleted without ``system reset`` (a CI workspace, a test's temp dir removed
with ``rm -rf``) leaves no host state for long: the next command of another root that sets up
a network sweeps it (bridges, veths, rules, netns mounts, cgroups, port proxies), and
``system reset`` of the missing root does the same. A root that is only absent (its file
system unmounted) and every live root are left alone.

The deletion here is deliberate: it is the scenario under test.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from root_tidy import assert_root_tidy

from builder.core.sandbox import cgroups
from builder.network import links, sweep

Pybuild = Any  # the runner from tests/conftest.py
Factory = Callable[[], Pybuild]


def _with_busybox(pb: Pybuild, busybox_tar: Path) -> Pybuild:
    from registry import archive
    from registry.reference import Reference

    archive.import_rootfs(pb.store(), busybox_tar, reference=Reference.parse("busybox:latest"),
                          config={"Cmd": ["sh"]})
    return pb


@dataclass
class Trace:
    """What a root put on the host, read while it was alive."""

    root: str
    links: set[str]
    tags: set[str]
    cids: set[str]
    proxies: set[int]


def _aliases() -> dict[str, str]:
    return dict(links.tagged_links(sweep.PREFIX))


def _rules_with(tags: set[str]) -> list[str]:
    text = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    return [line for line in text.splitlines()
            if any(re.search(f'--comment "?{t}[:" ]', line + " ") for t in tags)]


def _mounts_under(root: str) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if f" {root}/" in line or f" {root} " in line]


def _cgroups_of(cids: set[str]) -> list[Path]:
    layout = cgroups.detect()
    mounts = {*layout.v1.values(), *([layout.v2] if layout.v2 else [])}
    return [p for m in mounts for c in cids if (p := Path(m) / cgroups.PARENT / c).exists()]


def _proxies(cids: set[str]) -> set[int]:
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                cmd = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"builder.network.proxy" in cmd and any(c.encode() in cmd for c in cids):
                out.add(int(d))
    return out


def _populate(pb: Pybuild) -> Trace:
    """A user network, a container on it with a published port, one on the default bridge."""
    pb("network", "create", "ci-net")
    a = pb("run", "-d", "--network", "ci-net", "-p", "127.0.0.1::80", "busybox", "sleep", "600").stdout.strip()
    b = pb("run", "-d", "busybox", "sleep", "600").stdout.strip()
    root = os.path.realpath(pb.root)
    mine = {name for name, alias in _aliases().items() if alias.endswith(f" {root}")}
    nets = {alias.split()[1] for name, alias in _aliases().items() if name in mine}
    trace = Trace(root, mine, {f"pybuild:{n}" for n in nets}, {a, b}, _proxies({a, b}))
    assert len([n for n in mine if n.startswith("pb-")]) == 2 and len([n for n in mine if n.startswith("pbv")]) == 2
    assert len(_rules_with(trace.tags)) >= 10 and trace.proxies
    assert _cgroups_of(trace.cids) and _mounts_under(root)
    return trace


def _kill_and_delete(pb: Pybuild) -> None:
    """What a CI runner does at the end of a job: kill -9 the job's processes (the containers'
    supervisors carry the root in their command line), then ``rm -rf`` the workspace."""
    root = str(pb.root)
    _kill_root(root)
    # the netns files are mount points: rm cannot remove those, and says so
    r = subprocess.run(["rm", "-rf", root], capture_output=True, text=True)
    assert r.returncode != 0 and "busy" in r.stderr
    assert not (pb.root / "locks").exists() and not (pb.root / "store").exists()


def _assert_swept(t: Trace) -> None:
    deadline = time.monotonic() + 5
    while _proxies(t.cids) and time.monotonic() < deadline:
        time.sleep(0.05)  # SIGKILLed helpers are reaped by init
    assert not t.links & set(os.listdir("/sys/class/net"))
    assert not [a for a in _aliases().values() if a.endswith(f" {t.root}")]
    assert _rules_with(t.tags) == []
    assert _mounts_under(t.root) == []
    assert _cgroups_of(t.cids) == []
    assert not _proxies(t.cids)
    assert not os.path.exists(t.root)  # the mount points rm left, and their dirs, are gone too


def test_another_roots_network_setup_sweeps_a_deleted_root(pybuild_factory: Factory, busybox_tar: Path) -> None:
    gone = _with_busybox(pybuild_factory(), busybox_tar)
    live = _with_busybox(pybuild_factory(), busybox_tar)
    live("network", "create", "stays")
    keeper = live("run", "-d", "-p", "127.0.0.1::80", "busybox", "sleep", "600").stdout.strip()
    theirs = _populate(gone)
    live_links = {n for n, a in _aliases().items() if a.endswith(f" {os.path.realpath(live.root)}")}
    _kill_and_delete(gone)
    # (another test session on this host may sweep it first: the outcome is the same)
    live("network", "create", "next")  # sets up a network: sweeps first
    _assert_swept(theirs)
    # the live root keeps everything: links, its running container and its published port
    assert live_links <= set(os.listdir("/sys/class/net"))
    assert live("inspect", "-f", "{{.State.Running}}", keeper).stdout.strip() == "true"
    assert _proxies({keeper})
    live("rm", "-f", keeper)
    assert_root_tidy(live)


def test_default_bridge_setup_sweeps_and_costs_little(pybuild_factory: Factory, busybox_tar: Path) -> None:
    gone = _with_busybox(pybuild_factory(), busybox_tar)
    theirs = _populate(gone)
    _kill_and_delete(gone)
    fresh = _with_busybox(pybuild_factory(), busybox_tar)
    fresh("run", "--rm", "busybox", "true")  # its default bridge is made now: sweep first
    _assert_swept(theirs)
    assert_root_tidy(fresh, images=False)  # (its one image just ran)
    # with nothing to sweep, a sweep is one netlink dump and one read of mountinfo (other
    # sessions on this host may leave something to sweep meanwhile: the median is taken)
    times = []
    for _ in range(11):
        t = time.perf_counter()
        sweep.sweep()
        times.append(time.perf_counter() - t)
    assert sorted(times)[5] < 0.02


def test_system_reset_of_a_missing_root(pybuild_factory: Factory, busybox_tar: Path) -> None:
    gone = _with_busybox(pybuild_factory(), busybox_tar)
    theirs = _populate(gone)
    _kill_and_delete(gone)
    r = gone("system", "reset", "-f")
    # (what it removed is listed; another session's sweep may have taken some of it first)
    assert r.returncode == 0 and r.stderr == ""
    _assert_swept_but_root(theirs)
    assert_root_tidy(gone)
    # and a root that never existed resets cleanly too
    never = pybuild_factory()
    never.root.rmdir()
    assert never("system", "reset", "-f").returncode == 0


def test_system_reset_of_a_root_removed_whole(pybuild_factory: Factory) -> None:
    """Nothing busy under it, ``rm -rf`` took all of it: its bridge and rules still go."""
    pb = pybuild_factory()
    pb("network", "create", "only")
    root = os.path.realpath(pb.root)
    bridges = {n for n, a in _aliases().items() if a.endswith(f" {root}")}
    tags = {f"pybuild:{_aliases()[n].split()[1]}" for n in bridges}
    assert len(bridges) == 1 and _rules_with(tags)
    subprocess.run(["rm", "-rf", root], check=True)
    r = pb("system", "reset", "-f")
    assert r.returncode == 0 and r.stderr == ""
    assert not bridges & set(os.listdir("/sys/class/net")) and _rules_with(tags) == []


def test_system_reset_reports_what_its_records_no_longer_named(pybuild_factory: Factory) -> None:
    """A live root (no other sweep touches it) whose record of a network was lost: ``system
    reset`` still finds the bridge by its tag, removes it with its rules and lists it."""
    pb = pybuild_factory()
    pb("network", "create", "lost")
    root = os.path.realpath(pb.root)
    bridge = next(n for n, a in _aliases().items() if a.endswith(f" {root}"))
    tags = {f"pybuild:{_aliases()[bridge].split()[1]}"}
    for rec in (pb.root / "networks").glob("*.json"):
        if '"lost"' in rec.read_text():
            rec.unlink()
    pybuild_factory()("network", "create", "elsewhere")  # a sweep elsewhere: the root is live
    assert bridge in os.listdir("/sys/class/net") and _rules_with(tags)
    r = pb("system", "reset", "-f")
    assert r.returncode == 0 and r.stderr == "" and f"\n{bridge}\n" in r.stdout
    assert bridge not in os.listdir("/sys/class/net") and _rules_with(tags) == []


def _assert_swept_but_root(t: Trace) -> None:
    """As ``_assert_swept``; the CLI opened (so made) the root dir again: it may exist."""
    assert not t.links & set(os.listdir("/sys/class/net"))
    assert _rules_with(t.tags) == []
    assert _mounts_under(t.root) == []
    assert _cgroups_of(t.cids) == []
    deadline = time.monotonic() + 5
    while _proxies(t.cids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _proxies(t.cids)


def test_a_new_root_at_a_dead_roots_path_keeps_its_state(pybuild_factory: Factory, busybox_tar: Path) -> None:
    """The path holds another directory now: only the dead root's tagged links and rules go,
    nothing of the live root that took its place."""
    first = pybuild_factory()
    first("network", "create", "old")
    root = os.path.realpath(first.root)
    old = {n for n, a in _aliases().items() if a.endswith(f" {root}")}
    old_tags = {f"pybuild:{_aliases()[n].split()[1]}" for n in old}
    subprocess.run(["rm", "-rf", str(first.root)], check=True)  # nothing busy: all of it goes
    first.root.mkdir()
    again = _with_busybox(first, busybox_tar)
    again("network", "create", "new")
    cid = again("run", "-d", "--network", "new", "-p", "127.0.0.1::80", "busybox", "sleep", "600").stdout.strip()
    new = {n for n, a in _aliases().items() if a.endswith(f" {root}")} - old
    assert len(new) == 2 and old
    pybuild_factory()("network", "create", "elsewhere")
    assert not old & set(os.listdir("/sys/class/net")) and _rules_with(old_tags) == []
    assert new <= set(os.listdir("/sys/class/net"))
    assert again("inspect", "-f", "{{.State.Running}}", cid).stdout.strip() == "true"
    assert _proxies({cid}) and _mounts_under(root)
    again("rm", "-f", cid)
    assert_root_tidy(again, images=False)  # (its one image just ran)


def test_a_root_on_an_unmounted_file_system_is_left_alone(tmp_path: Path, pybuild_factory: Factory) -> None:
    other = pybuild_factory()
    disk, mnt = tmp_path / "disk", tmp_path / "mnt"
    disk.mkdir()
    mnt.mkdir()
    subprocess.run(["mount", "--bind", str(disk), str(mnt)], check=True)
    try:
        away = type(other)(mnt / "root")
        (mnt / "root").mkdir()
        away("network", "create", "on-disk")
        bridge = next(n for n, a in _aliases().items() if a.endswith(f" {mnt}/root"))
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    assert not (mnt / "root").exists()  # absent, not gone: its disk is only unmounted
    other("network", "create", "other")
    assert bridge in os.listdir("/sys/class/net")
    # once it is back (a new mount of the same disk), it is alive and still has its bridge
    subprocess.run(["mount", "--bind", str(disk), str(mnt)], check=True)
    try:
        assert away("network", "ls").stdout.count("on-disk") == 1
        other("network", "create", "another")
        assert bridge in os.listdir("/sys/class/net")
        away("system", "reset", "-f")
        assert bridge not in os.listdir("/sys/class/net")
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.parametrize("shape", ["short", "inode", "cut"])
def test_aliases_not_ours_are_ignored(shape: str, tmp_path: Path) -> None:
    """Links whose alias only looks like ours stay, even naming a missing path on a mounted
    file system (the mount and device of a live directory)."""
    _, ident = sweep.identity(tmp_path)
    mnt_id, dev, _ = ident.split()
    alias = {
        "short": f"pybuild abc {mnt_id} {dev}",
        "inode": f"pybuild abc {mnt_id} {dev} x {tmp_path}/gone",
        # cut at the kernel's 255 bytes: the path it names is not the root's
        "cut": (f"pybuild abc {mnt_id} {dev} 4 {tmp_path}/gone/" + "x" * 255)[:255],
    }[shape]
    subprocess.run(["ip", "link", "add", "pbtsweep0", "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "link", "set", "pbtsweep0", "alias", alias], check=True)
        assert dict(links.tagged_links(sweep.PREFIX))["pbtsweep0"] == alias
        sweep.sweep()
        assert "pbtsweep0" in os.listdir("/sys/class/net")
    finally:
        subprocess.run(["ip", "link", "del", "pbtsweep0"], check=True)


def _kill_root(root: str) -> None:
    """kill -9 of every process naming *root* (the CLI, the supervisors, the sandbox helpers)."""
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != os.getpid():
            try:
                cmd = Path(f"/proc/{d}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if root in cmd:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(d), signal.SIGKILL)


def test_roots_killed_at_random_moments_then_deleted_are_swept(
        pybuild_factory: Factory, busybox_tar: Path) -> None:
    """Item 6 with seeded kill timings: a root's ``run -d -p`` on a user network is killed
    (kill -9 of all the root's processes) at a random moment of its start, the root deleted
    with ``rm -rf``; the next network set-up of a live root takes every piece of it the kill
    left (links, rules, netns mounts, cgroups, the container's and helpers' processes), and the
    live root stays tidy. Seeded, bounded to ~15 s (new rounds for 10 s)."""
    rng = random.Random(22)
    live = _with_busybox(pybuild_factory(), busybox_tar)
    started = time.monotonic()
    rounds = 0
    made: list[int] = []  # per round: how many pieces of a container the kill left
    while rounds < 2 or (time.monotonic() - started < 10 and rounds < 4):
        rounds += 1
        gone = _with_busybox(pybuild_factory(), busybox_tar)
        gone("network", "create", "ci-net")
        mark = str(rng.randrange(10000, 99999))
        delay = rng.uniform(0.0, 2.5)
        why = f"seed 22, round {rounds}, kill after {delay:.2f} s"
        p = subprocess.Popen([*gone.command, "--root", str(gone.root), "run", "-d", "--network", "ci-net",
                              "-p", "127.0.0.1::80", "busybox", "sleep", mark],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        root = os.path.realpath(gone.root)
        _kill_root(root)
        p.wait()
        # what the kill left, read now: nothing of the root runs to make more
        mine = {n for n, a in _aliases().items() if a.endswith(f" {root}")}
        nets = {a.split()[1] for n, a in _aliases().items() if n in mine}
        cids = {c.name for c in (gone.root / "containers").glob("*") if len(c.name) == 64}
        sids = {sid for sid, tag, _ in cgroups.owners() if tag.endswith(f" {root}")}
        trace = Trace(root, mine, {f"pybuild:{n}" for n in nets}, cids | sids, _proxies(cids))
        made.append(len(mine - {n for n in mine if n.startswith("pb-")}) + len(sids) + len(trace.proxies))
        subprocess.run(["rm", "-rf", root], capture_output=True)
        live("network", "create", f"next{rounds}")  # sets up a network: sweeps first
        _assert_swept(trace)
        assert not _pids_of(["sleep", mark]), why
        live("network", "rm", f"next{rounds}")
        assert_root_tidy(live, images=False)
    assert any(made), f"no kill came after the start had made something: {made}"
    assert_root_tidy(live)


def _pids_of(argv: list[str]) -> list[int]:
    want = "\0".join(argv).encode() + b"\0"
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{d}/cmdline").read_bytes() == want:
                    out.append(int(d))
    return out
