#!/usr/bin/env python3
"""``pybuild pull``/``push`` (the CLI, as a user types it) beside ``skopeo copy`` on a local
``docker-registry``, for two image shapes: ~100 MB in two layers and ~300 MB in many layers.

Every pull goes into a fresh root (skopeo: a fresh OCI layout); every push to a fresh registry
(neither tool can skip or mount a blob). Runs are interleaved with the peer; medians.

    .venv/bin/python bench/bench_pull_push.py [--runs 6] [--shape two|many] [--baseline DIR]

``--baseline DIR`` also runs ``pybuild`` from another checkout (``PYTHONPATH=DIR``), interleaved
with the other two (the order rotates each run), and prints its column and ours/baseline.
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
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "registry"))

from registry_server import busybox_layer_tar, file_tar, make_image, start_registry  # noqa: E402

from registry import transfer  # noqa: E402
from registry.store import Store  # noqa: E402

PYBUILD = str(REPO / ".venv" / "bin" / "pybuild")
SKOPEO = ["skopeo", "--insecure-policy"]

#: name -> (layer sizes in MB after busybox)
SHAPES: dict[str, list[int]] = {
    "two": [104],
    "many": [25] * 12,
}


VERBOSE = False


def _run(cmd: list[str], env: dict[str, str] | None = None) -> float:
    # the previous run's data (its writes, the rmtree after it) goes to disk before the clock
    # starts: each run pays its own writeback, not its predecessor's
    os.sync()
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    took = time.perf_counter() - t
    if VERBOSE:
        print(f"  {took:6.2f}s  {' '.join(cmd[:3])}", flush=True)
    return took


Row = tuple[str, float, float, float, float | None]


def _order(i: int, baseline: Path | None) -> list[str]:
    """Who runs first in run *i*: each in turn."""
    who = ["ours", "skopeo"] + (["base"] if baseline else [])
    k = i % len(who)
    return who[k:] + who[:k]


def bench_shape(work: Path, shape: str, runs: int, baseline: Path | None = None) -> list[Row]:
    root = work / f"root-{shape}"
    store = Store(root / "store")
    layers = [busybox_layer_tar()] + [file_tar(f"random{i}.bin", os.urandom(mb << 20))
                                      for i, mb in enumerate(SHAPES[shape])]
    image = make_image(store, f"bench/{shape}:v1", layers=layers)
    total = sum(d.size for d in image.layers) + image.manifest.config.size
    layout = work / f"layout-{shape}"
    transfer.copy(transfer.StoreEnd(store, f"bench/{shape}:v1"),
                  transfer.parse_end(f"oci:{layout}:v1"))
    env = {**os.environ, "PYBUILD_ROOT": str(root)}
    base_env = {"PYTHONPATH": str(baseline.resolve())} if baseline else {}
    push_ours: list[float] = []
    push_theirs: list[float] = []
    push_base: list[float] = []
    regs: list[Any] = []

    def fresh_registry() -> Any:
        for r in regs:
            r.stop()
            shutil.rmtree(r.root, ignore_errors=True)
        regs.clear()
        reg = start_registry(work / f"reg-{time.monotonic_ns()}")
        regs.append(reg)
        return reg

    try:
        for i in range(runs):
            for who in _order(i, baseline):
                reg = fresh_registry()
                dest = f"{reg.addr}/bench/{shape}:v1"
                if who in ("ours", "base"):
                    (store.path / "blob-sources.json").unlink(missing_ok=True)
                    (push_ours if who == "ours" else push_base).append(_run(
                        [PYBUILD, "push", "-q", "--tls-verify=false", f"bench/{shape}:v1", dest],
                        env if who == "ours" else {**env, **base_env}))
                else:
                    push_theirs.append(_run([*SKOPEO, "copy", "-q", "--dest-tls-verify=false",
                                             f"oci:{layout}:v1", f"docker://{dest}"]))
        reg = regs[0]
        src = f"{reg.addr}/bench/{shape}:v1"
        pull_ours: list[float] = []
        pull_theirs: list[float] = []
        pull_base: list[float] = []
        for i in range(runs):
            for who in _order(i, baseline):
                d = work / f"pull-{time.monotonic_ns()}"
                if who in ("ours", "base"):
                    (pull_ours if who == "ours" else pull_base).append(_run(
                        [PYBUILD, "pull", "-q", "--tls-verify=false", src],
                        {**os.environ, "PYBUILD_ROOT": str(d), **(base_env if who == "base" else {})}))
                else:
                    pull_theirs.append(_run([*SKOPEO, "copy", "-q", "--src-tls-verify=false",
                                             f"docker://{src}", f"oci:{d}:v1"]))
                shutil.rmtree(d, ignore_errors=True)
    finally:
        for r in regs:
            r.stop()
    name = f"{len(image.layers)} layers, {total / 1e6:.0f} MB"
    med = statistics.median
    return [(f"pull {name}", med(pull_ours), med(pull_theirs), total, med(pull_base) if pull_base else None),
            (f"push {name}", med(push_ours), med(push_theirs), total, med(push_base) if push_base else None)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # even: each tool goes first in as many pairs as the other
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--shape", choices=sorted(SHAPES), action="append")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every run's time")
    ap.add_argument("--baseline", type=Path, help="another checkout to compare (PYTHONPATH)")
    args = ap.parse_args()
    global VERBOSE
    VERBOSE = args.verbose
    if not shutil.which("skopeo"):
        sys.exit("skopeo is not installed (make install)")
    print(f"load average before: {_load()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-pull-push-"))
    os.environ["DOCKER_CONFIG"] = str(work / "docker-config")
    rows = []
    try:
        for shape in args.shape or ["two", "many"]:
            rows += bench_shape(work, shape, args.runs, args.baseline)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base_head = f"{'baseline':>9}{'ours/base':>10}" if args.baseline else ""
    print(f"{'median of ' + str(args.runs) + ', interleaved':<34}{'pybuild':>9}{'skopeo':>9}"
          f"{'ratio':>7}{'pybuild MB/s':>14}{'skopeo MB/s':>13}{base_head}")
    for name, ours, theirs, total, base in rows:
        base_cols = f"{base:>8.2f}s{ours / base:>9.2f}x" if base is not None else ""
        print(f"{name:<34}{ours:>8.2f}s{theirs:>8.2f}s{ours / theirs:>6.2f}x"
              f"{total / 1e6 / ours:>14.0f}{total / 1e6 / theirs:>13.0f}{base_cols}")
    print(f"load average after: {_load()}")


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
