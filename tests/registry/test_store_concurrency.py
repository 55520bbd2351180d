"""Many ``pybuild`` processes on one store, some of them killed (issue 22, items 1, 5, 7).

Real ``pybuild pull`` subprocesses against the session's real registry, slowed down by the
``FaultProxy`` so that a SIGINT or SIGKILL lands mid-transfer, at times drawn from a seeded
generator. After each scenario the root is tidy (``root_tidy.assert_root_tidy``: ``system
check`` clean, every listed image saves and runs, nothing of the root on the host, and the
store holds exactly the blobs its images reference, nothing in ingest).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from registry_server import (
    Fault,
    FaultProxy,
    Registry,
    busybox_layer_tar,
    file_tar,
    make_image,
    unique_repo,
)
from root_tidy import assert_root_tidy

from registry import transfer
from registry.store import Store

SEED = 22


@pytest.fixture()
def image(plain_registry: Registry, tmp_path: Path) -> tuple[str, str]:
    """A three-layer image pushed to the plain registry: (repository path, big layer digest);
    the 3 MiB random layer is what the fault proxy slows down."""
    src = Store(tmp_path / "src")
    repo = unique_repo("conc")
    img = make_image(src, "app:1", layers=[busybox_layer_tar(), file_tar("small", os.urandom(30_000)),
                                           file_tar("big", os.urandom(3 << 20))])
    transfer.push(src, "app:1", f"{plain_registry.addr}/{repo}:v1", tls_verify=True)
    big = max(img.layers, key=lambda d: d.size)
    return repo, str(big.digest)


def _slow(proxy: FaultProxy, digest: str) -> None:
    proxy.clear()
    proxy.add(Fault("GET", f"/blobs/{digest}", "slow", after=32 << 10, times=1000))


def _start(pyb: Any, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*pyb.command, "--root", str(pyb.root), *args], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_ingest(pyb: Any, proc: subprocess.Popen[str]) -> None:
    """Until a blob is being received into the store (by *proc*, the only writer yet)."""
    deadline = time.monotonic() + 15
    while not any(p.name.startswith("blob-") for p in (pyb.root / "store" / "ingest").glob("*")):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)


def test_cancelled_pull_keeps_what_a_finished_pull_references(
        pybuild: Any, image: tuple[str, str], fault_proxy: FaultProxy,
        plain_registry: Registry) -> None:
    """Issue 22 item 1: two pulls of one image, the slow one Ctrl-C'd after the fast one
    finished. The fast one's image keeps every blob (before: its config and a layer went)."""
    repo, big = image
    _slow(fault_proxy, big)
    slow = _start(pybuild, "pull", f"{fault_proxy.addr}/{repo}:v1")
    _wait_ingest(pybuild, slow)
    pybuild("pull", f"{plain_registry.addr}/{repo}:v1")
    assert slow.poll() is None
    slow.send_signal(signal.SIGINT)
    _, err = slow.communicate(timeout=20)
    assert slow.returncode == 130, err
    assert err.strip().splitlines()[-1] == "cancelled"
    assert [str(r.reference) for r in pybuild.store().images()] == [f"{plain_registry.addr}/{repo}:v1"]
    out = pybuild("run", "--rm", "--network", "none", f"{plain_registry.addr}/{repo}:v1",
                  "sh", "-c", "wc -c < /big").stdout
    assert out.strip() == str(3 << 20)
    assert_root_tidy(pybuild)


def test_killed_and_cancelled_pulls_leave_nothing(
        pybuild: Any, image: tuple[str, str], fault_proxy: FaultProxy,
        plain_registry: Registry) -> None:
    """Items 1 and 5: pulls killed (SIGKILL) or cancelled (SIGINT) at random moments, alone or
    beside a pull of the same image that completes. A cancel cleans up after itself; a kill's
    ingest file and lease are taken by the next process that takes a lease (not after an hour),
    and until then ``system check`` reports them. Seeded, bounded to ~25 s."""
    repo, big = image
    rng = random.Random(SEED)
    fast_ref = f"{plain_registry.addr}/{repo}:v1"
    slow_ref = f"{fault_proxy.addr}/{repo}:v1"
    started = time.monotonic()
    rounds = 0
    while rounds < 2 or (time.monotonic() - started < 18 and rounds < 6):
        rounds += 1
        sig = rng.choice([signal.SIGKILL, signal.SIGINT])
        delay = rng.uniform(0.0, 1.5)
        beside = rng.random() < 0.5
        _slow(fault_proxy, big)
        slow = _start(pybuild, "pull", slow_ref)
        _wait_ingest(pybuild, slow)  # the slow pull is receiving its big layer
        fast = _start(pybuild, "pull", fast_ref) if beside else None
        time.sleep(delay)
        if fast is not None:
            assert fast.wait(30) == 0, fast.communicate()
        assert slow.poll() is None, f"round {rounds}: the slow pull ended before its signal"
        slow.send_signal(sig)
        _, err = slow.communicate(timeout=20)
        assert slow.returncode == (130 if sig == signal.SIGINT else -signal.SIGKILL), err
        if sig == signal.SIGKILL:
            leftovers = list((pybuild.root / "store" / "ingest").glob("*"))
            r = pybuild("system", "check", check=False)
            assert (r.returncode != 0) == bool(leftovers), r.stdout + r.stderr
            if leftovers:
                assert "killed or cancelled" in r.stdout
            # the next process that takes the store's lease collects them
            pybuild("pull", fast_ref)
        assert_root_tidy(pybuild)
        for rec in pybuild.store().images():
            pybuild("rmi", str(rec.reference))
        pybuild("image", "prune", "-a", "-f")
        assert_root_tidy(pybuild)
    assert rounds >= 2


def test_disk_full_during_a_pull(pybuild_factory: Any, image: tuple[str, str],
                                 plain_registry: Registry, tmp_path: Path) -> None:
    """Item 7: pulls into a root on a small tmpfs (a real file system, its size seeded from
    64 KiB to 3 MiB, so the disk fills at a different moment each round: a lease, the small
    layers, the big one) fail with one line naming the store under the root and what was being
    written, exit 1; nothing is left of the pull, and the root is tidy."""
    repo, _ = image
    rng = random.Random(SEED)
    sizes = [64, 3 << 10] + [rng.randrange(64, 3 << 10) for _ in range(2)]
    for n, kib in enumerate(sizes):
        mnt = tmp_path / f"small{n}"
        mnt.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(mnt)], check=True)
        try:
            root = mnt / "root"
            root.mkdir()
            pyb = pybuild_factory()
            pyb.root = root
            r = pyb("pull", f"{plain_registry.addr}/{repo}:v1", check=False)
            why = f"seed {SEED}, {kib} KiB: {r.stdout}{r.stderr}"
            assert r.returncode == 1, why
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in r.stderr, why
            assert lines[0].startswith(f"Error: no space left on device under {root}/store: writing "), why
            assert pyb.store().images() == [], why
            assert_root_tidy(pyb)
            assert not any((root / "store" / "blobs" / "sha256").iterdir())
        finally:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_system_check_finds_and_repairs(busybox: Any) -> None:
    """``system check`` names each problem on a line of its own and exits 1; ``--repair``
    removes what nothing references (a dead writer's ingest file and lease, a blob no image
    names, a damaged cache record, a killed build's workspace, a killed unpack's half layer)
    and leaves a blob an image needs, reporting it as not repairable."""
    from registry.leases import Lease

    root = busybox.root
    assert busybox("system", "check").stdout.strip() == "ok"
    store = busybox.store()
    orphan = store.put_bytes(b"nobody references me")
    (store.path / "ingest" / "blob-dead").write_bytes(b"half a blob")
    lease = Lease(store.path / "ingest")
    lease.hold(orphan)
    lease.release(keep_listed=True)  # as a killed transfer leaves it
    records = root / "cache" / "records" / "ab"
    records.mkdir(parents=True)
    (records / ("ab" * 32 + ".json")).write_text("{not json")
    (root / "run" / "build-0123456789abcdef" / "c" / "upper").mkdir(parents=True)
    half = root / "layers" / ".tmp-0123456789abcdef-00c0ffee"  # as a killed unpack leaves it
    (half / "bin").mkdir(parents=True)
    r = busybox("system", "check", check=False)
    assert r.returncode == 1
    out = r.stdout
    for needle in ("ingest: ", "blob-dead", "lease: ", f"blob: {orphan}", "cache: ",
                   "unreadable record", "run: ", "build-0123456789abcdef", "layers: ",
                   f"{half}: half-unpacked layer"):
        assert needle in out, out
    assert "problems found" in r.stderr
    r = busybox("system", "check", "--repair")
    assert "repaired: " in r.stdout and r.stdout.strip().endswith("repaired)")
    assert busybox("system", "check").stdout.strip() == "ok"
    assert not store.has_blob(orphan)
    assert list((store.path / "ingest").iterdir()) == []
    assert not (root / "run" / "build-0123456789abcdef").exists() and not half.exists()
    # a damaged blob an image needs: reported, kept, exit 1 after --repair too
    layer = store.resolve("busybox:latest").layers[0].digest
    path = store.blob_path(layer)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    r = busybox("system", "check", "--repair", check=False)
    assert r.returncode == 1
    assert f"blob: {layer}: content does not match its digest (not repairable)" in r.stdout
    assert store.has_blob(layer)


def test_sweep_waits_for_holders_that_list_nothing(tmp_path: Path) -> None:
    """A dead transfer's blobs stay while a holder that lists nothing (a load, a layer being
    committed) is live, since it may rely on any blob; the next sweep after it takes them. A
    live transfer's listed blobs are never taken."""
    from registry.leases import Lease

    store = Store(tmp_path / "store")
    dead_blob = store.put_bytes(b"a killed pull's layer")
    live_blob = store.put_bytes(b"a running pull's layer")
    with store.lease():
        dead = Lease(store.ingest_dir)
        dead.hold(dead_blob)
        dead.hold(live_blob)
        dead.release(keep_listed=True)
        with store.lease(listing=True) as live:
            store.hold(live, live_blob)
            assert store.sweep() == (0, 0)
            assert store.has_blob(dead_blob)
        with store.lease(listing=True) as live:
            store.hold(live, live_blob)
            with pytest.raises(RuntimeError):
                with store.lease():
                    assert store.has_blob(dead_blob)
                    raise RuntimeError("a load fails")
            assert store.sweep() == (0, 0)
    running = Lease(store.ingest_dir)  # a transfer still running, relying on live_blob
    running.hold(live_blob)
    assert store.sweep() == (1, len(b"a killed pull's layer"))  # the blanket holder is done
    assert not store.has_blob(dead_blob) and store.has_blob(live_blob)
    running.release(keep_listed=False)
    assert [p.name for p in store.ingest_dir.iterdir()] == []


def test_removed_images_leave_no_unpacked_layers(busybox: Any) -> None:
    """The root's disk use goes back to what its images need: an image's unpacked layers
    (``layers/``, made by a run) go with its last name (``rmi``; ``image prune`` likewise, in
    the loop above), as Docker's graph driver drops them. ``system check`` reports one nothing
    names, and ``--repair`` removes it."""
    busybox("tag", "busybox", "other:1")
    busybox("run", "--rm", "--network", "none", "busybox", "true")
    layers = busybox.root / "layers"

    def unpacked() -> set[str]:
        return {p.name for p in layers.iterdir() if len(p.name) == 64}

    first = unpacked()
    assert first
    busybox("rmi", "busybox")  # other:1 still names the image
    assert unpacked() == first
    assert "Deleted: " in busybox("rmi", "other:1").stdout
    assert unpacked() == set()
    assert_root_tidy(busybox)
    (layers / ("ab" * 32) / "bin").mkdir(parents=True)  # as a removal during a build leaves it
    r = busybox("system", "check", check=False)
    assert r.returncode == 1 and f"layers: {layers / ('ab' * 32)}: unpacked layer no image" in r.stdout
    busybox("system", "check", "--repair")
    assert unpacked() == set()
