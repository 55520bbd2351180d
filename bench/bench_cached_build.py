#!/usr/bin/env python3
"""bench_cached_build: a two-stage, 19-instruction Dockerfile (a 50 MB blob copied in the first
stage) built again by ``pybuild build`` and by ``docker build`` (BuildKit, on the private warm
``dockerd`` of ``tests/dockerd.py``): fully cached, and with one small file copied in the final
stage changed (its COPY and the RUN after it run again). Medians of the runs, the two tools
interleaved, the ratio beside each row. Byte-compile first (``make compile``): the bench
measures the package as ``pip install`` leaves it.

    .venv/bin/python bench/bench_cached_build.py [--runs 15] [--baseline DIR]

``--baseline DIR``: an older source tree (``git archive REV | tar -x -C DIR``, byte-compiled)
built the same way in the same interleaving, its ratio to ours beside.
"""

from __future__ import annotations

import argparse
import os
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

DOCKERFILE = """\
FROM busybox AS build
WORKDIR /src
ENV MODE=release
COPY blob.bin /src/blob.bin
COPY lib/ ./lib/
RUN ls -R lib > /src/listing
RUN wc -c blob.bin > /src/blobsize
ARG VERSION=1
RUN echo "v$VERSION $MODE" > /src/version

FROM busybox
LABEL org.example.bench=cached
ENV APP=/app
WORKDIR /app
COPY --from=build /src/listing /src/blobsize /src/version ./
COPY app.conf ./
RUN cat app.conf > /app/conf.out
USER nobody
EXPOSE 8080
CMD ["cat", "/app/version"]
"""


def make_context(base: Path, name: str) -> Path:
    ctx = base / name
    (ctx / "lib").mkdir(parents=True)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "blob.bin").write_bytes(os.urandom(50_000_000))
    for i in range(20):
        (ctx / "lib" / f"m{i}.py").write_text(f"x = {i}\n" * 100)
    (ctx / "app.conf").write_text("conf 0\n")
    return ctx


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--baseline", type=Path, default=None, help="an older source tree to compare with")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-cached-", dir="/var/tmp"))
    tools: list[Tool] = []
    docker: Docker | None = None
    try:
        tar = busybox_tar(base)
        tools.append(Pybuild(base, tar))
        if args.baseline is not None:
            tools.append(Pybuild(base / "baseline", tar, source=args.baseline))
        if have_dockerd():
            docker = Docker(docker_busybox_tar(base))
            tools.append(docker)
        # a context per tool: one tool's change must not make the other's next build a miss
        ctxs = {t.name: make_context(base, f"ctx-{n}") for n, t in enumerate(tools)}
        cases = ("fully cached", "one file changed")
        samples: dict[str, dict[str, list[float]]] = {t.name: {c: [] for c in cases} for t in tools}
        for t in tools:  # the first (cold) build, not measured: the daemon and caches warm
            t.cold_reset()
            t.build(ctxs[t.name], "bench-cached:latest")
        for i in range(args.runs):
            for t in tools:
                ctx = ctxs[t.name]
                build = partial(t.build, ctx, "bench-cached:latest")
                samples[t.name]["fully cached"].append(timed(build))
                (ctx / "app.conf").write_text(f"conf {t.name} {i} {time.time()}\n")
                samples[t.name]["one file changed"].append(timed(build))
        names = [t.name for t in tools]
        # ours against each other tool: the baseline's, BuildKit's
        others = names[1:]
        print(f"two stages, 19 instructions, 50 MB blob; median of {args.runs} runs, interleaved; "
              f"load {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        print(f"{'build':18}" + "".join(f"{n:>26}" for n in names)
              + "".join(f"{'vs ' + n.split()[-1]:>20}" for n in others))
        for case in cases:
            meds = {n: statistics.median(samples[n][case]) for n in names}
            ratios = "".join(f"{meds[names[0]] / meds[n]:19.2f}x" for n in others)
            print(f"{case:18}" + "".join(f"{meds[n]:24.3f} s" for n in names) + ratios, flush=True)
    finally:
        if docker is not None:
            docker.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
