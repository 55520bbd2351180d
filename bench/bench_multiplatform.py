#!/usr/bin/env python3
"""bench_multiplatform: ``pybuild build --platform linux/amd64,linux/arm64`` (one index) next to
the two single-platform builds run one after the other, cold (``--no-cache``) and cached.

The Dockerfile cross-compiles as BuildKit users write it: a ``FROM --platform=$BUILDPLATFORM``
stage (native), then a target stage whose RUN steps execute per platform (arm64 through
qemu-user-static). Bases: busybox imported with ``--platform`` (the arm64 one from Debian's
``busybox-static:arm64``, ``make install``). Median of ``BENCH_RUNS`` (default 3) runs.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "builder"))
sys.path.insert(0, str(REPO / "tests"))
PYBUILD = str(Path(sys.executable).parent / "pybuild")
RUNS = int(os.environ.get("BENCH_RUNS", "3"))

DOCKERFILE = """\
FROM --platform=$BUILDPLATFORM base:multi AS build
RUN i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo $i > /count
ARG TARGETARCH
RUN echo "for $TARGETARCH" > /target
FROM base:multi
COPY --from=build /count /target /
RUN i=0; while [ $i -lt 5000 ]; do i=$((i+1)); done; uname -m > /arch
RUN head -c 2000000 /dev/urandom > /blob && md5sum /blob > /blob.md5
"""


def pybuild(root: Path, *args: str) -> None:
    subprocess.run([PYBUILD, "--root", str(root), *args], check=True, capture_output=True)


def timed(fn: object) -> float:
    t0 = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t0


def main() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("mkbusybox", REPO / "testdata" / "mkbusybox.py")
    assert spec and spec.loader
    mk: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    arm64 = REPO / "testdata" / "arm64" / "busybox"
    if not arm64.is_file():
        sys.exit(f"{arm64} is missing: run `make install`")
    with tempfile.TemporaryDirectory(prefix="bench-mp-") as tmp:
        base = Path(tmp)
        amd_tar, arm_tar = base / "amd64.tar", base / "arm64.tar"
        mk.make_tar(amd_tar)
        plain = mk.make_rootfs

        def arm_rootfs(dest: Path) -> Path:
            import shutil

            root: Path = plain(dest)
            shutil.copy2(arm64, root / "bin" / "busybox")
            return root

        mk.make_rootfs = arm_rootfs
        mk.make_tar(arm_tar)
        root = base / "root"
        pybuild(root, "import", "--platform", "linux/amd64", str(amd_tar), "base:amd64")
        pybuild(root, "import", "--platform", "linux/arm64", str(arm_tar), "base:arm64")
        from builder.base.platforms import store_index
        from registry.reference import Reference
        from registry.store import Store

        store = Store(root / "store")
        store_index(store, [store.resolve("base:amd64"), store.resolve("base:arm64")],
                    [Reference.parse("base:multi")])
        ctx = base / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(DOCKERFILE)

        def both(*extra: str) -> None:
            pybuild(root, "build", *extra, "--platform", "linux/amd64,linux/arm64", "-t", "mp:both", str(ctx))

        def one_then_other(*extra: str) -> None:
            for p in ("linux/amd64", "linux/arm64"):
                pybuild(root, "build", *extra, "--platform", p, "-t", f"mp:{p.split('/')[1]}", str(ctx))

        rows: list[tuple[str, float, float]] = []
        for name, fn in (("two-platform build (one index)", both),
                         ("amd64 build, then arm64 build", one_then_other)):
            cold_runs = [timed(lambda fn=fn: fn("--no-cache")) for _ in range(RUNS)]
            cached_runs = [timed(fn) for _ in range(RUNS)]
            rows.append((name, statistics.median(cold_runs), statistics.median(cached_runs)))
        print(f"{'':34} {'cold (s)':>10} {'cached (s)':>11}")
        for name, cold, cached in rows:
            print(f"{name:34} {cold:10.2f} {cached:11.2f}")


if __name__ == "__main__":
    main()
