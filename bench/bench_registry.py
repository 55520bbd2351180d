#!/usr/bin/env python3
"""Push and pull of a ~300 MB, 5-layer image to a local ``docker-registry``: pybuild beside skopeo
(and oras-py for a single blob), cold and warm, median of 3; then a profile of where time goes.

    .venv/bin/python bench/bench_registry.py [--size-mb 300] [--runs 3] [--no-profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "registry"))

from registry_server import busybox_layer_tar, file_tar, make_image, start_registry  # noqa: E402

from registry import transfer  # noqa: E402
from registry.client import RegistryClient, Repository  # noqa: E402
from registry.digest import Digest  # noqa: E402
from registry.store import Store  # noqa: E402


def median_of(runs: int, setup: Callable[[int], object], action: Callable[[object], None]) -> float:
    times = []
    for i in range(runs):
        ctx = setup(i)
        t = time.perf_counter()
        action(ctx)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=300)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-profile", action="store_true")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-registry-"))
    os.environ["DOCKER_CONFIG"] = str(work / "docker-config")
    regs: list[Any] = []
    try:
        store = Store(work / "store")
        per_layer = (args.size_mb << 20) // 4
        layers = [busybox_layer_tar()] + [file_tar(f"random{i}.bin", os.urandom(per_layer))
                                          for i in range(4)]
        t = time.perf_counter()
        image = make_image(store, "bench:1", layers=layers)
        total = sum(d.size for d in image.layers) + image.manifest.config.size
        print(f"image: {len(image.layers)} layers, {total / 1e6:.0f} MB compressed "
              f"(made in {time.perf_counter() - t:.1f}s)")
        layout = work / "layout"
        transfer.copy(transfer.StoreEnd(store, "bench:1"), transfer.parse_end(f"oci:{layout}:v1"))

        def fresh_registry(i: int) -> object:
            for r in regs:
                r.stop()
            regs.clear()
            reg = start_registry(work / f"reg-{time.monotonic_ns()}")
            regs.append(reg)
            return reg

        # Every cold push goes to an empty registry: neither tool can skip or mount anything.
        def our_push(reg: object) -> None:
            (store.path / "blob-sources.json").unlink(missing_ok=True)
            transfer.push(store, "bench:1", f"{reg.addr}/bench/img:v1")  # type: ignore[attr-defined]

        def skopeo_push(reg: object) -> None:
            subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:v1",
                            f"docker://{reg.addr}/bench/img:v1"], check=True)  # type: ignore[attr-defined]

        results: dict[str, tuple[float, float]] = {}
        results["push cold"] = (median_of(args.runs, fresh_registry, our_push),
                                median_of(args.runs, fresh_registry, skopeo_push))
        reg = regs[0]
        our_push(reg)
        results["push warm (all blobs present)"] = (
            median_of(args.runs, lambda i: reg, our_push),
            median_of(args.runs, lambda i: reg, skopeo_push))
        ref = f"{reg.addr}/bench/img:v1"

        def fresh_store(i: int) -> object:
            d = work / f"pull-{time.monotonic_ns()}"
            return d

        def our_pull(d: object) -> None:
            transfer.pull(Store(d), ref)  # type: ignore[arg-type]

        def skopeo_pull(d: object) -> None:
            subprocess.run(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}",
                            f"oci:{d}:v1"], check=True)

        results["pull cold"] = (median_of(args.runs, fresh_store, our_pull),
                                median_of(args.runs, fresh_store, skopeo_pull))
        warm_ours, warm_skopeo = work / "warm-ours", work / "warm-skopeo"
        our_pull(warm_ours)
        skopeo_pull(warm_skopeo)
        results["pull warm (layers present)"] = (
            median_of(args.runs, lambda i: warm_ours, our_pull),
            median_of(args.runs, lambda i: warm_skopeo, skopeo_pull))

        print(f"\n{'median of ' + str(args.runs):<32}{'pybuild':>10}{'skopeo':>10}"
              f"{'pybuild MB/s':>14}{'skopeo MB/s':>13}")
        for name, (ours, theirs) in results.items():
            print(f"{name:<32}{ours:>9.2f}s{theirs:>9.2f}s{total / 1e6 / ours:>14.0f}"
                  f"{total / 1e6 / theirs:>13.0f}")

        single_blob(work, reg, per_layer, args.runs)
        if not args.no_profile:
            profile(store, ref, work)
    finally:
        for r in regs:
            r.stop()
        shutil.rmtree(work, ignore_errors=True)


def single_blob(work: Path, reg: object, size: int, runs: int) -> None:
    """One blob up and down: our client's push_blob/open_blob beside oras-py's push/pull."""
    path = work / "blob.bin"
    path.write_bytes(os.urandom(size))
    digest, _ = Digest.of_stream(open(path, "rb"))
    addr = reg.addr  # type: ignore[attr-defined]

    def ours_up(i: object) -> None:
        with RegistryClient(addr) as c:
            repo = Repository(c, f"blob/ours{time.monotonic_ns()}")
            repo.want_push()
            repo.push_blob(digest, size, lambda off: _open_at(path, off))

    def ours_down(i: object) -> None:
        with RegistryClient(addr) as c:
            r = Repository(c, "blob/ours-src").open_blob(digest, size)
            h = digest.new_hasher()
            while data := r.read(1 << 20):
                h.update(data)
            r.close()
            assert h.hexdigest() == digest.encoded

    ours_up(None)
    with RegistryClient(addr) as c:
        repo = Repository(c, "blob/ours-src")
        repo.want_push()
        repo.push_blob(digest, size, lambda off: _open_at(path, off))
    up = median_of(runs, lambda i: None, ours_up)
    down = median_of(runs, lambda i: None, ours_down)
    line = f"single {size / 1e6:.0f} MB blob: pybuild up {up:.2f}s down {down:.2f}s"
    try:
        import oras.client

        client = oras.client.OrasClient(hostname=addr, insecure=True)
        cwd = os.getcwd()
        os.chdir(work)
        try:
            target = f"{addr}/blob/oras:v1"
            # A new repository each run: oras skips a blob the repository already has.
            o_up = median_of(runs, lambda i: f"{addr}/blob/oras{time.monotonic_ns()}:v1",
                             lambda t: client.push(files=["blob.bin"], target=str(t)))
            client.push(files=["blob.bin"], target=target)
            outdir = work / "oras-out"
            o_down = median_of(runs, lambda i: shutil.rmtree(outdir, ignore_errors=True),
                               lambda _: client.pull(target=target, outdir=str(outdir)))
        finally:
            os.chdir(cwd)
        line += f"; oras-py up {o_up:.2f}s down {o_down:.2f}s"
    except Exception as e:  # oras is optional: report why it did not run
        line += f"; oras-py: not measured ({type(e).__name__}: {str(e)[:80]})"
    print(line)


def _open_at(path: Path, offset: int) -> io.BufferedReader:
    f = open(path, "rb")
    f.seek(offset)
    return f


def profile(store: Store, ref: str, work: Path) -> None:
    """One push and one pull with a single worker (so the work runs in the profiled thread)."""
    for what, call in (
        ("pull", lambda: transfer.pull(Store(work / "profiled"), ref, max_concurrent=1)),
        ("push", lambda: transfer.push(store, "bench:1", ref.replace("bench/img", "bench/prof"),
                                       max_concurrent=1)),
    ):
        # No cross-repository mount for the profiled push: a real upload.
        (store.path / "blob-sources.json").unlink(missing_ok=True)
        prof = cProfile.Profile()
        prof.enable()
        call()
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(8)
        print(f"\n-- profile of a {what} (one worker), top functions by own time --")
        lines = [ln for ln in out.getvalue().splitlines() if ln.strip()]
        start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls"))
        print("\n".join(lines[start:start + 9]))


if __name__ == "__main__":
    main()
