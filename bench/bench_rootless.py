#!/usr/bin/env python3
"""bench_rootless: pybuild as root and as an ordinary user (rootless), side by side in one run.

``run --rm`` (no network, and the default network: root's bridge against slirp4netns), a cold
and a fully cached build (rootless with the kernel's overlayfs and with fuse-overlayfs forced),
and a pull from a local registry; median of ``BENCH_RUNS`` (5). The user is made as the tests
make it (``tests/builder/test_rootless.py``: ``useradd`` with sub-ID ranges, ``runuser -u``) and
removed at the end. buildah and podman are not installed on this machine: no column for them.
Run as root: ``.venv/bin/python bench/bench_rootless.py``.
"""

from __future__ import annotations

import os
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
sys.path.insert(0, str(REPO / "tests" / "builder"))
sys.path.insert(0, str(REPO / "tests" / "registry"))
sys.path.insert(0, str(REPO / "testdata"))
PYBUILD = str(Path(sys.executable).parent / "pybuild")
RUNS = int(os.environ.get("BENCH_RUNS", "5"))

DOCKERFILE = """\
FROM busybox
COPY data.txt /data.txt
RUN head -c 20000000 /dev/urandom > /big && mkdir -p /app && chown 1000:1000 /app
RUN cp /bin/busybox /app/tool && chmod u+s /app/tool && ln /data.txt /app/data.txt
RUN rm -rf /home && mkdir /home && echo done > /home/done
"""


def median_time(fn: Callable[[], Any], before: Callable[[], Any] | None = None) -> float:
    times = []
    for _ in range(RUNS):
        if before is not None:
            before()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("bench_rootless makes a user: run it as root")
    import mkbusybox
    from registry_server import start_registry
    from test_rootless import ordinary_user

    work = Path(tempfile.mkdtemp(prefix="bench-rootless-"))
    os.chmod(work, 0o755)
    busybox = work / "busybox.tar"
    mkbusybox.make_tar(busybox)
    busybox.chmod(0o644)
    root_dir = work / "root"
    ctx = work / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "data.txt").write_text("data\n" * 1000)
    os.chmod(ctx / "Dockerfile", 0o644)

    def root(*args: str, env: dict[str, str] | None = None) -> None:
        subprocess.run([PYBUILD, "--root", str(root_dir), *args], check=True, capture_output=True,
                       env={**os.environ, **(env or {})})

    rows: list[tuple[str, float, float, float]] = []
    reg = start_registry(work / "registry")
    try:
        with ordinary_user() as user:
            def rl(*args: str, env: dict[str, str] | None = None) -> None:
                user.pb(*args, env=env)

            fuse = {"PYBUILD_ROOTLESS_OVERLAY": "fuse-overlayfs"}
            uctx = user.give(ctx, "ctx")
            ubusy = user.give(busybox, "busybox.tar")
            root("import", "--change", 'CMD ["sh"]', str(busybox), "busybox:latest")
            rl("import", "--change", 'CMD ["sh"]', str(ubusy), "busybox:latest")
            rl("run", "--rm", "--network", "none", "busybox", "true")  # the keeper, first layers
            root("run", "--rm", "--network", "none", "busybox", "true")
            for label, args in (("run --rm --network none", ["--network", "none"]),
                                ("run --rm (bridge | slirp4netns)", [])):
                argv = ("run", "--rm", *args, "busybox", "true")
                rows.append((label, median_time(lambda a=argv: root(*a)),  # type: ignore[misc]
                             median_time(lambda a=argv: rl(*a)),  # type: ignore[misc]
                             median_time(lambda a=argv: rl(*a, env=fuse))))  # type: ignore[misc]
            cold = ("build", "--no-cache", "-q", "-t", "bench")
            rows.append(("build, cold (--no-cache)", median_time(lambda: root(*cold, str(ctx))),
                         median_time(lambda: rl(*cold, str(uctx))),
                         median_time(lambda: rl(*cold, str(uctx), env=fuse))))
            cached = ("build", "-q", "-t", "bench")
            rows.append(("build, all cached", median_time(lambda: root(*cached, str(ctx))),
                         median_time(lambda: rl(*cached, str(uctx))),
                         median_time(lambda: rl(*cached, str(uctx), env=fuse))))
            ref = f"{reg.addr}/bench/app:1"
            root("tag", "bench", ref)
            root("push", ref)
            rows.append(("pull (after rmi)",
                         median_time(lambda: root("pull", ref), lambda: subprocess.run(
                             [PYBUILD, "--root", str(root_dir), "rmi", ref], capture_output=True)),
                         median_time(lambda: rl("pull", ref),
                                     lambda: user.pb("rmi", ref, check=False)),
                         float("nan")))
            r = subprocess.run([PYBUILD, "--root", str(root_dir), "system", "reset", "-a", "-f"],
                               capture_output=True, text=True)
            if r.returncode != 0:
                print(f"root's system reset: {r.stderr.strip()}", file=sys.stderr)
    finally:
        reg.proc.terminate()
        reg.proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'operation (median of ' + str(RUNS) + ')':38} {'root':>8} {'rootless':>9} {'rl+fuse':>8}")
    for label, a, b, c in rows:
        print(f"{label:38} {a:7.3f}s {b:8.3f}s " + ("     n/a" if c != c else f"{c:7.3f}s"))


if __name__ == "__main__":
    main()
