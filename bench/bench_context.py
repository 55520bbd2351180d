#!/usr/bin/env python3
"""bench_context: cost as the context grows. A context of many small files (20,000 by default,
~80 MB: ``COPY src/ ./src/`` then one RUN) built by ``pybuild build`` and by ``docker build``
(BuildKit, on the private ``dockerd`` of ``tests/dockerd.py``) in the same invocation: cold,
fully cached, and with one of the files changed; medians, runs interleaved with the peer, and
the ratio beside each row. ``--files 20000,200000`` adds the 200,000-file context (~800 MB,
minutes per build under load: left out of ``make bench``'s default run).

    .venv/bin/python bench/bench_context.py [--files 20000[,200000]] [--runs 3]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))

from bench_build import Docker, Pybuild, Tool, busybox_tar, docker_busybox_tar, have_dockerd, timed  # noqa: E402

DOCKERFILE = "FROM busybox\nWORKDIR /app\nCOPY src/ ./src/\nRUN find src -type f | wc -l > /count\n"


def make_context(base: Path, files: int) -> Path:
    """*files* files of 100 B to 8 KB (~4 KB on average) in directories of 200."""
    ctx = base / "ctx"
    rng = random.Random(15)
    for i in range(files):
        d = ctx / "src" / f"d{i // 200:04d}"
        if i % 200 == 0:
            d.mkdir(parents=True)
        (d / f"f{i:06d}.txt").write_bytes(rng.randbytes(rng.randint(100, 7800)))
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    return ctx


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", default="20000", help="context sizes, comma-separated")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    for files in (int(n) for n in args.files.split(",")):
        bench(files, args.runs)


def bench(files: int, runs: int) -> None:
    base = Path(tempfile.mkdtemp(prefix="bench-context-", dir="/var/tmp"))
    tools: list[Tool] = []
    docker: Docker | None = None
    try:
        tools.append(Pybuild(base, busybox_tar(base)))
        if have_dockerd():
            docker = Docker(docker_busybox_tar(base))
            tools.append(docker)
        t0 = time.perf_counter()
        ctx = make_context(base, files)
        size = sum(f.stat().st_size for f in (ctx / "src").rglob("*") if f.is_file())
        print(f"context: {files} files, {size / 1e6:.0f} MB (made in "
              f"{time.perf_counter() - t0:.1f} s); median of {runs} runs, interleaved")
        samples: dict[str, dict[str, list[float]]] = {
            t.name: {"cold": [], "cached": [], "one file changed": []} for t in tools}
        victim = ctx / "src" / f"d{(files // 2) // 200:04d}" / f"f{files // 2:06d}.txt"
        for i in range(runs):
            for t in tools:
                build = partial(t.build, ctx, "bench-ctx:latest")
                t.cold_reset()
                samples[t.name]["cold"].append(timed(build))
                samples[t.name]["cached"].append(timed(build))
                victim.write_text(f"changed {t.name} {i} {time.time()}\n")
                samples[t.name]["one file changed"].append(timed(build))
        names = [t.name for t in tools]
        print(f"{'build':18}" + "".join(f"{n:>26}" for n in names)
              + ("      ratio" if len(names) > 1 else ""))
        for case in ("cold", "cached", "one file changed"):
            meds = [statistics.median(samples[n][case]) for n in names]
            ratio = f"  {meds[0] / meds[1]:8.2f}x" if len(meds) > 1 else ""
            print(f"{case:18}" + "".join(f"{m:24.2f} s" for m in meds) + ratio, flush=True)
    finally:
        if docker is not None:
            docker.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
