#!/usr/bin/env python3
"""Image-command benchmarks, ours next to peers run in the same invocation.

1. ``pybuild images`` on a store of 200 images, next to ``python -c pass`` (interpreter floor),
   ``umoci ls`` on the same OCI layout, ``skopeo list-tags docker-archive:`` (its only local
   tag listing) and ``skopeo inspect oci:`` of one image.
2. ``save``/``load`` throughput of a 200 MB image (one incompressible layer), next to
   ``skopeo copy`` between the same formats (store layout -> archive, archive -> layout).

    .venv/bin/python bench/bench_images.py [--images 200] [--mb 200] [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from registry import archive  # noqa: E402
from registry.reference import Reference  # noqa: E402
from registry.store import Store  # noqa: E402

PYBUILD = str(Path(sys.executable).parent / "pybuild")
SKOPEO = ["skopeo", "--insecure-policy"]


def timed(cmd: list[str], runs: int) -> float:
    """Median wall time (seconds) of *runs* runs, after one warm-up."""
    subprocess.run(cmd, check=True, capture_output=True)
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def once(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t


def row(name: str, seconds: float, note: str = "") -> None:
    print(f"  {name:<52} {seconds * 1000:9.1f} ms  {note}")


def bench_listing(work: Path, count: int, runs: int) -> None:
    root = work / "many"
    store = Store(root / "store")
    rootfs = work / "tiny"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "hostname").write_text("bench\n")
    t = time.perf_counter()
    for i in range(count):
        archive.import_rootfs(store, rootfs, reference=Reference.parse(f"bench/img{i}:v{i % 7}"),
                              config={"Labels": {"n": str(i)}})
    made = time.perf_counter() - t
    print(f"== listing a store of {count} images (made in {made:.1f} s through the library)")
    all_tar = work / "all.tar"
    with open(all_tar, "wb") as f:
        archive.save(store, [f"bench/img{i}:v{i % 7}" for i in range(count)], f)
    row("python -c pass", timed([sys.executable, "-c", "pass"], runs))
    row("pybuild images", timed([PYBUILD, "--root", str(root), "images"], runs))
    row("pybuild images -q", timed([PYBUILD, "--root", str(root), "images", "-q"], runs))
    row("pybuild images --format json", timed([PYBUILD, "--root", str(root), "images", "--format", "json"], runs))
    if shutil.which("umoci"):
        row("umoci ls --layout STORE", timed(["umoci", "ls", "--layout", str(root / "store")], runs))
    if shutil.which("skopeo"):
        row("skopeo list-tags docker-archive:ALL.tar (one repo)",
            timed([*SKOPEO, "list-tags", f"docker-archive:{all_tar}"], runs), "(reads the whole tar)")
        row("skopeo inspect oci:STORE:REF (one image)",
            timed([*SKOPEO, "inspect", f"oci:{root / 'store'}:docker.io/bench/img0:v0"], runs))


def bench_throughput(work: Path, mb: int) -> None:
    print(f"== save/load of a {mb} MB image (one uncompressed, incompressible layer)")
    rootfs = work / "big"
    (rootfs / "data").mkdir(parents=True)
    with open(rootfs / "data" / "blob.bin", "wb") as f:
        for _ in range(mb):
            f.write(os.urandom(1 << 20))
    root = work / "bigroot"
    subprocess.run([PYBUILD, "--root", str(root), "import", str(rootfs), "big:1"], check=True,
                   capture_output=True)
    store_dir = root / "store"
    size = mb * 1.048576  # the layer holds mb MiB; rates are in MB (10^6 bytes) per second

    def show(name: str, seconds: float) -> None:
        print(f"  {name:<52} {seconds:7.2f} s  {size / seconds:7.0f} MB/s")

    for fmt in ("docker-archive", "oci-archive"):
        out = work / f"ours-{fmt}.tar"
        show(f"pybuild save --format {fmt}",
             once([PYBUILD, "--root", str(root), "save", "--format", fmt, "-o", str(out), "big:1"]))
        theirs = work / f"skopeo-{fmt}.tar"
        dest = f"{fmt}:{theirs}:big:1" if fmt == "docker-archive" else f"{fmt}:{theirs}:latest"
        if shutil.which("skopeo"):
            show(f"skopeo copy oci:STORE {fmt}:",
                 once([*SKOPEO, "copy", "-q", f"oci:{store_dir}:docker.io/library/big:1", dest]))
        fresh = work / f"load-{fmt}"
        show(f"pybuild load -i ({fmt})", once([PYBUILD, "--root", str(fresh), "load", "-i", str(out)]))
        shutil.rmtree(fresh)
        fresh.mkdir()
        show(f"cat | pybuild load (a pipe, {fmt})",
             once(["sh", "-c", f'cat "{out}" | "{PYBUILD}" --root "{fresh}" load']))
        shutil.rmtree(fresh)
        if shutil.which("skopeo"):
            layout = work / f"layout-{fmt}"
            show(f"skopeo copy {fmt}: oci:DIR",
                 once([*SKOPEO, "copy", "-q", f"{fmt}:{out}", f"oci:{layout}:latest"]))
            shutil.rmtree(layout)
        out.unlink()
        theirs.unlink(missing_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-images-", dir="/var/tmp") as tmp:
        bench_listing(Path(tmp), args.images, args.runs)
        bench_throughput(Path(tmp), args.mb)


if __name__ == "__main__":
    main()
