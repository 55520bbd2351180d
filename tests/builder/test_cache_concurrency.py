"""Builds at once on one root, and builds killed mid-RUN (issue 22, items 2 and 4).

Real ``pybuild build`` subprocesses. After each scenario the root is tidy
(``root_tidy.assert_root_tidy``: ``system check`` clean, every listed image saves and runs,
nothing of the root on the host, nothing on disk beyond what its images and cache need).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from root_tidy import assert_root_tidy

SEED = 22

# Each stage's first RUN writes a random key, its second copies it: an image (or a stage) mixing
# two builds' chains would have a key and a copy that differ.
DOCKERFILE = """\
FROM busybox AS gen
RUN head -c 16 /dev/urandom | od -An -tx1 > /key
RUN cp /key /key.copy
FROM busybox
RUN head -c 16 /dev/urandom | od -An -tx1 > /key
RUN cp /key /key.copy
COPY --from=gen /key /gen.key
COPY --from=gen /key.copy /gen.copy
"""


def _start(pyb: Any, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*pyb.command, "--root", str(pyb.root), *args], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _keys(bt: Any, pyb: Any, ref: str, dest: Path) -> tuple[str, str, str, str]:
    root = bt.rootfs(pyb, ref, dest)
    return tuple((root / n).read_text() for n in ("key", "key.copy", "gen.key", "gen.copy"))  # type: ignore[return-value]


def test_concurrent_builds_then_cached_rebuilds_give_one_of_their_images(
        busybox: Any, bt: Any, tmp_path: Path) -> None:
    """Item 2: five builds of one Dockerfile at once (seeded staggered starts), one of them
    killed (SIGKILL) at a seeded moment, then cached rebuilds: each key equals its copy (never
    a mix of two builds' layers), the second rebuild is fully cached with the first's image ID,
    which is one of the four survivors' when the first was fully cached too."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    rng = random.Random(SEED)
    victim, kill_at = rng.randrange(5), rng.uniform(0.5, 3.0)
    procs = []
    started = time.monotonic()
    for i in range(5):
        procs.append(_start(busybox, "build", "-q", "-t", f"c:{i}", str(ctx)))
        time.sleep(rng.uniform(0, 0.3))
    time.sleep(max(0.0, started + kill_at - time.monotonic()))
    procs[victim].kill()
    for i, p in enumerate(procs):
        out, err = p.communicate(timeout=120)
        assert p.returncode in ((0, -signal.SIGKILL) if i == victim else (0,)), err
    survivors = [i for i, p in enumerate(procs) if p.returncode == 0]
    ids = {str(busybox.store().resolve(f"c:{i}").id) for i in survivors}
    for i in survivors:
        k = _keys(bt, busybox, f"c:{i}", tmp_path / f"c{i}")
        assert k[0] == k[1] and k[2] == k[3]
    rebuilt = []
    for n in range(2):
        _, ev = bt.build(busybox, ctx, "-t", f"r:{n}")
        if n == 0 and bt.executed(ev):
            ids = set()  # the killed build's records were last for a step: its chain goes on
        assert n == 0 or bt.executed(ev) == []
        rebuilt.append(str(busybox.store().resolve(f"r:{n}").id))
    assert rebuilt[0] == rebuilt[1]
    assert not ids or rebuilt[0] in ids
    # and fully cached builds at once agree with them
    again = [_start(busybox, "build", "-q", "-t", f"a:{i}", str(ctx)) for i in range(3)]
    for p in again:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert {str(busybox.store().resolve(f"a:{i}").id) for i in range(3)} == {rebuilt[0]}
    k = _keys(bt, busybox, "r:0", tmp_path / "r0")
    assert k[0] == k[1] and k[2] == k[3]
    out = busybox("run", "--rm", "--network", "none", "r:0", "sh", "-c",
                  "cmp /key /key.copy && cmp /gen.key /gen.copy && echo same").stdout
    assert out.strip() == "same"
    # a build killed between making a snapshot (or storing its layer's blob) and recording it
    # leaves an unpacked layer (or that blob and its cache link) no record names: system check
    # reports just that, and the next prune (even one that keeps every recent record) removes it
    unrecorded = (": unpacked layer no image or cache record names",
                  ": referenced by no image, cache record or transfer",
                  ": blob link no record, variant or image names")
    r = busybox("system", "check", check=False)
    assert r.returncode == 0 or all(any(u in line for u in unrecorded)
                                    for line in r.stdout.splitlines() if line.strip()), r.stdout
    busybox("builder", "prune", "-f")
    assert_root_tidy(busybox)


def test_killed_builds_leave_no_run_layer(busybox: Any, bt: Any, tmp_path: Path) -> None:
    """Item 4: builds killed (SIGKILL, or Ctrl-C) at random moments of a RUN that writes
    8 MiB. ``system check`` reports a killed one's workspace; the next build (even a fully
    cached one) removes it. Seeded, bounded to ~25 s."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    rng = random.Random(SEED)
    started = time.monotonic()
    rounds = 0
    while rounds < 2 or (time.monotonic() - started < 15 and rounds < 5):
        rounds += 1
        (ctx / "Dockerfile").write_text(
            f"FROM busybox\nRUN echo {rounds} > /n && dd if=/dev/urandom of=/big bs=1M count=8 "
            "2>/dev/null && sleep 3\n")
        sig = rng.choice([signal.SIGKILL, signal.SIGKILL, signal.SIGINT])
        p = _start(busybox, "build", "-t", "k:1", str(ctx))
        run = busybox.root / "run"
        deadline = time.monotonic() + 30
        while not (run.is_dir() and any(d.name.startswith("build-") for d in run.iterdir())):
            assert p.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.5))  # somewhere in the RUN step (dd, then 3 s of sleep)
        assert p.poll() is None
        p.send_signal(sig)
        p.communicate(timeout=60)
        assert p.returncode in (130, -signal.SIGKILL)
        left = [d for d in run.iterdir() if d.name.startswith("build-")]
        if sig == signal.SIGKILL:
            assert left, "the kill came before the RUN step's workspace existed"
            r = busybox("system", "check", check=False)
            assert r.returncode == 1 and "workspace of a build that is gone" in r.stdout
        else:
            assert left == []  # a cancelled build tears down its own
        # the next build, here a fully cached one, takes what the killed one left
        (tmp_path / "other").mkdir(exist_ok=True)
        (tmp_path / "other" / "Dockerfile").write_text("FROM busybox\n")
        bt.build(busybox, tmp_path / "other", "-t", "o:1")
        assert_root_tidy(busybox)
    assert rounds >= 2
    total = sum(f.stat().st_size for f in (busybox.root / "run").rglob("*") if f.is_file())
    assert total < 1 << 20, os.listdir(busybox.root / "run")


def _big_files(run: Path) -> list[Path]:
    """The 8 MiB file a RUN step wrote, in its workspace (``run/build-*``)."""
    out = []
    for d in run.glob("build-*"):
        # (walked while the build runs: a directory it removes meanwhile is skipped)
        for dirpath, _, files in os.walk(d):
            with contextlib.suppress(OSError):
                if "big" in files and os.stat(os.path.join(dirpath, "big")).st_size == 8 << 20:
                    out.append(Path(dirpath) / "big")
    return out


def test_prune_all_removes_killed_builds_workspaces(busybox: Any, bt: Any, tmp_path: Path) -> None:
    """Item 4: ``builder prune -a`` and ``system prune -a -f`` remove the workspace (the RUN
    layer, 8 MiB here) of a build killed with SIGKILL, as they remove the rest of the build
    cache; the total they report includes it. (Plain ``system prune`` does too: nothing can
    use a killed build's layer.)"""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    for n, cmd in enumerate((("builder", "prune", "-a", "-f"), ("system", "prune", "-a", "-f"))):
        (ctx / "Dockerfile").write_text(
            f"FROM busybox\nRUN echo {n} > /n && dd if=/dev/urandom of=/big bs=1M count=8 2>/dev/null && sleep 60\n")
        p = _start(busybox, "build", "-t", "k:1", str(ctx))
        run = busybox.root / "run"
        deadline = time.monotonic() + 60
        while not _big_files(run):
            assert p.poll() is None and time.monotonic() < deadline, p.communicate()
            time.sleep(0.05)
        p.kill()
        p.communicate(timeout=60)
        assert [d for d in run.iterdir() if d.name.startswith("build-")]
        out = busybox(*cmd).stdout
        assert [d.name for d in run.iterdir() if d.name.startswith("build-")] == [], cmd
        reclaimed = out.strip().splitlines()[-1]
        assert reclaimed.startswith("Total reclaimed space: ") and "MB" in reclaimed, out
        assert_root_tidy(busybox)


def test_rm_reaps_a_killed_unpackers_half_layer_and_leaves_a_live_one(busybox: Any) -> None:
    from registry.leases import claim

    layers = busybox.state.layers
    cid = busybox("create", "busybox", "true").stdout.strip()
    layers.mkdir(parents=True, exist_ok=True)
    dead = layers / ".tmp-cdcdcdcdcdcdcdcd-0000dead"
    (dead / "bin").mkdir(parents=True)
    live = layers / f".tmp-{'ab' * 8}-0000live"
    live.mkdir()
    fd = claim(layers / f".{'ab' * 32}.lock")
    try:
        busybox("rm", cid)
        assert not dead.exists() and live.is_dir()
    finally:
        os.close(fd)
    busybox("rm", busybox("create", "busybox", "true").stdout.strip())
    assert not live.exists()


def test_a_live_unpack_is_not_taken_for_a_killed_ones(tmp_path: Path) -> None:
    """A layer being unpacked (``layers/.tmp-*``) counts as a killed process's leftover only
    while nobody holds its layer's lock: ``system check`` and the next build leave a live one."""
    from builder.core.rootfs import LayerCache, dead_unpacks
    from registry.leases import claim

    cache = LayerCache(tmp_path)
    hexid = "ab" * 32
    live = cache.dir / f".tmp-{hexid[:16]}-0000live"
    live.mkdir()
    fd = claim(cache.dir / f".{hexid}.lock")
    dead = cache.dir / ".tmp-cdcdcdcdcdcdcdcd-0000dead"
    dead.mkdir()
    assert dead_unpacks(cache.dir) == [dead]
    os.close(fd)  # its unpacker is killed: the lock goes with it, the file stays
    assert dead_unpacks(cache.dir) == [live, dead]
