#!/usr/bin/env python3
"""bench_build: ``pybuild build`` against ``docker build`` (BuildKit) and ``buildah bud``.

Three Dockerfiles (10 steps; 3 stages with a 50 MB layer; 30 steps), each built cold, fully
cached, and after changing one file copied half-way; median of 5 runs, all in one invocation.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
PYBUILD = str(Path(sys.executable).parent / "pybuild")
RUNS = int(os.environ.get("BENCH_RUNS", "5"))

TEN = """\
FROM busybox
ENV APP=/app
WORKDIR /app
COPY a.txt .
RUN cp a.txt a2.txt
COPY src/ ./src/
RUN ls -R src > listing
COPY mid.txt .
RUN wc -c mid.txt > midsize
RUN echo done > done
CMD ["cat", "done"]
"""

THREE = """\
FROM busybox AS data
RUN head -c 50000000 /dev/urandom > /big.bin

FROM busybox AS tool
COPY tool.sh /tool.sh
RUN chmod +x /tool.sh

FROM busybox
COPY --from=data /big.bin /data/big.bin
COPY mid.txt /mid.txt
COPY --from=tool /tool.sh /usr/local/bin/tool
RUN /usr/local/bin/tool > /out
CMD ["cat", "/out"]
"""


def thirty() -> str:
    lines = ["FROM busybox"]
    for i in range(15):
        name = "mid.txt" if i == 7 else f"f{i:02d}.txt"
        lines.append(f"COPY {name} /files/{name}")
        lines.append(f"RUN cat /files/{name} >> /all")
    return "\n".join(lines[:31]) + "\n"


def make_context(base: Path, name: str, dockerfile: str) -> Path:
    ctx = base / name
    (ctx / "src" / "pkg").mkdir(parents=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / "a.txt").write_text("a\n" * 1000)
    (ctx / "mid.txt").write_text("mid 0\n")
    (ctx / "tool.sh").write_text("#!/bin/sh\necho tool ran\n")
    for i in range(20):
        (ctx / "src" / "pkg" / f"m{i}.py").write_text(f"x = {i}\n" * 200)
        (ctx / f"f{i:02d}.txt").write_text(f"file {i}\n")
    return ctx


def timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(*args: str, env: dict[str, str] | None = None) -> None:
    r = subprocess.run(args, capture_output=True, env={**os.environ, **(env or {})})
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{r.stderr.decode()[-2000:]}")


class Tool:
    name = ""

    def cold_reset(self) -> None: ...

    def build(self, ctx: Path, tag: str) -> None: ...


class Pybuild(Tool):
    name = "pybuild"

    def __init__(self, base: Path, busybox_tar: Path, *, source: Path | None = None) -> None:
        """*source*: another source tree to run (a baseline: ``PYTHONPATH`` puts it first),
        its roots under *base* too."""
        self.env = None if source is None else {"PYTHONPATH": str(source.resolve())}
        if source is not None:
            self.name = f"pybuild {source.name}"
        self.prepared = base / "pyb-prepared"
        self.root = base / "pyb-root"
        base.mkdir(parents=True, exist_ok=True)
        self._run("--root", str(self.prepared), "import", str(busybox_tar), "busybox:latest")
        # unpack the base once (BuildKit's snapshotter has it unpacked too), then drop the cache
        warm = base / "warm"
        warm.mkdir()
        (warm / "Dockerfile").write_text("FROM busybox\nRUN true\n")
        self._run("--root", str(self.prepared), "build", "-q", str(warm))
        self._run("--root", str(self.prepared), "builder", "prune", "--all")

    def _run(self, *args: str) -> None:
        run(PYBUILD, *args, env=self.env)

    def cold_reset(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        run("cp", "-a", str(self.prepared), str(self.root))

    def build(self, ctx: Path, tag: str) -> None:
        self._run("--root", str(self.root), "build", "-q", "-t", tag, str(ctx))


class Docker(Tool):
    name = "docker build (BuildKit)"

    def __init__(self, busybox_docker_tar: Path) -> None:
        from dockerd import Dockerd

        self.d = Dockerd()
        self.d.start()
        self.d.docker("load", "-i", str(busybox_docker_tar))
        self.env = {"DOCKER_BUILDKIT": "1", "DOCKER_HOST": self.d.host}

    def cold_reset(self) -> None:
        self.d.docker("builder", "prune", "-af", check=False)
        images = self.d.docker("images", "-q", "--filter", "reference=bench*").stdout.decode().split()
        if images:
            self.d.docker("rmi", "-f", *set(images), check=False)

    def build(self, ctx: Path, tag: str) -> None:
        # --network none: the private daemon has no bridge (our RUN default is an empty netns too)
        run("/usr/bin/docker", "build", "-q", "--network", "none", "-t", tag, str(ctx), env=self.env)

    def close(self) -> None:
        self.d.stop()


class Buildah(Tool):
    name = "buildah bud --layers"

    def __init__(self, base: Path, busybox_docker_tar: Path) -> None:
        self.opts = ["--root", str(base / "bh-root"), "--runroot", str(base / "bh-run"),
                     "--storage-driver", "overlay"]
        self.tar = busybox_docker_tar
        self._pull()

    def _pull(self) -> None:
        run("buildah", *self.opts, "pull", "-q", f"docker-archive:{self.tar}")
        run("buildah", *self.opts, "tag", "localhost/busybox:latest", "busybox:latest")

    def cold_reset(self) -> None:
        subprocess.run(["buildah", *self.opts, "rmi", "-a", "-f"], capture_output=True)
        self._pull()

    def build(self, ctx: Path, tag: str) -> None:
        # RUN without a network, as pybuild's default: buildah's CNI default network would leave
        # its bridge, iptables chains and /var/lib/cni on the host
        run("buildah", *self.opts, "bud", "-q", "--layers", "--runtime", "/usr/sbin/runc",
            "--network", "none", "-t", tag, str(ctx))

    def close(self) -> None:
        subprocess.run(["buildah", *self.opts, "rmi", "-a", "-f"], capture_output=True)
        subprocess.run(["umount", "-R", self.opts[1] + "/overlay"], capture_output=True)


def measure(tool: Tool, ctx: Path, tag: str) -> tuple[float, float, float]:
    cold = []
    for _ in range(RUNS):
        tool.cold_reset()
        cold.append(timed(lambda: tool.build(ctx, tag)))
    cached = [timed(lambda: tool.build(ctx, tag)) for _ in range(RUNS)]
    change = []
    for i in range(RUNS):
        (ctx / "mid.txt").write_text(f"mid {tool.name} {i} {time.time()}\n")
        change.append(timed(lambda: tool.build(ctx, tag)))
    return statistics.median(cold), statistics.median(cached), statistics.median(change)


def have_dockerd() -> bool:
    """Whether the docker CLI and a dockerd to start privately are installed."""
    return os.path.exists("/usr/bin/docker") and bool(shutil.which("dockerd") or os.path.exists("/usr/sbin/dockerd"))


def busybox_tar(base: Path) -> Path:
    """busybox made offline (``testdata/mkbusybox.py``), as ``Pybuild`` imports it."""
    spec = __import__("importlib.util").util.spec_from_file_location("mkbusybox", REPO / "testdata" / "mkbusybox.py")
    mk = __import__("importlib.util").util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    tar = base / "busybox.tar"
    mk.make_tar(tar)
    return tar


def docker_busybox_tar(base: Path) -> Path:
    """That busybox as a docker-archive for the peers, exported by ``pybuild build -o
    type=docker`` from the root a ``Pybuild(base, …)`` prepared (so: after making one)."""
    tar = base / "busybox-docker.tar"
    export = base / "export"
    export.mkdir()
    (export / "Dockerfile").write_text("FROM busybox\n")
    run(PYBUILD, "--root", str(base / "pyb-prepared"), "build", "-q", "-t", "busybox:latest",
        "-o", f"type=docker,dest={tar}", str(export))
    return tar


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="bench-build-", dir="/var/tmp"))
    tools: list[Tool] = [Pybuild(base, busybox_tar(base))]
    docker_tar = docker_busybox_tar(base)
    docker = buildah = None
    if have_dockerd():
        docker = Docker(docker_tar)
        tools.append(docker)
    if shutil.which("buildah"):
        buildah = Buildah(base, docker_tar)
        tools.append(buildah)
    cases = [("10-step single stage", TEN), ("3 stages, 50 MB layer", THREE), ("30 steps", thirty())]
    print(f"median of {RUNS} runs, seconds (cold / fully cached / one file changed half-way)")
    print(f"{'Dockerfile':24} " + "".join(f"{t.name:>34}" for t in tools))
    try:
        for n, (title, text) in enumerate(cases):
            row = []
            for t in tools:
                ctx = make_context(base / t.name.split()[0], f"case{n}", text)
                c, k, ch = measure(t, ctx, f"bench{n}:latest")
                row.append(f"{c:8.2f} / {k:6.2f} / {ch:6.2f}")
            print(f"{title:24} " + "".join(f"{r:>34}" for r in row), flush=True)
    finally:
        if docker is not None:
            docker.close()
        if buildah is not None:
            buildah.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
