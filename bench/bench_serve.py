#!/usr/bin/env python3
"""``pybuild serve`` benchmarks: the docker CLI through our socket next to the same pybuild
command, and requests per second of ``GET /containers/json`` with 10 concurrent clients.

1. ``docker ps -a`` and ``docker images`` (Debian's ``/usr/bin/docker``, DOCKER_HOST at our unix
   socket) next to ``pybuild ps -a`` and ``pybuild images`` on the same state root (median of
   --runs runs, after a warm-up). The root holds busybox under --tags tags and --containers
   created containers.
2. ``GET /v1.41/containers/json?all=1`` from --clients concurrent aiohttp clients on one unix
   socket, --requests in all (bounded count and time); requests/s and latency percentiles.
   Without a ``/containers/json`` route (an older daemon), ``/images/json`` is measured and
   the report says so. Then the same for ``/images/json`` and ``/_ping`` (the server's floor).

3. ``docker run --rm busybox true`` (``--network none`` and the default bridge) through
   ``pybuild serve`` beside the same client on a private dockerd (``tests/dockerd.py``, which
   makes its default bridge and iptables rules in its own network namespace), interleaved
   (the same load for both), median of --runs-run runs.

    .venv/bin/python bench/bench_serve.py [--runs 7] [--run-runs 15] [--clients 10] [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PYBUILD = str(Path(sys.executable).parent / "pybuild")
DOCKER = "/usr/bin/docker"


def timed(cmd: list[str], runs: int, env: dict[str, str] | None = None) -> float:
    """Median wall time (seconds) of *runs* runs, after one warm-up."""
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def interleaved(cmds: list[tuple[list[str], dict[str, str] | None]], runs: int) -> list[float]:
    """Median wall time (seconds) of each command, run in turn in every round, after a warm-up."""
    def run(cmd: list[str], env: dict[str, str] | None) -> None:
        r = subprocess.run(cmd, capture_output=True, env=env)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.decode().strip()}")

    for cmd, env in cmds:
        run(cmd, env)
    samples: list[list[float]] = [[] for _ in cmds]
    for _ in range(runs):
        for (cmd, env), ts in zip(cmds, samples, strict=True):
            t = time.perf_counter()
            run(cmd, env)
            ts.append(time.perf_counter() - t)
    return [statistics.median(ts) for ts in samples]


def docker_run_rm(tar: Path, ours: dict[str, str], runs: int) -> None:
    """``docker run --rm`` through our socket and through a private dockerd, side by side."""
    sys.path.insert(0, str(REPO / "tests"))
    from dockerd import Dockerd

    d = Dockerd(bridges=True)
    try:
        d.start()
        d.docker("import", "--change", 'CMD ["sh"]', str(tar), "busybox:latest")
        theirs = {**os.environ, "DOCKER_HOST": d.host, "DOCKER_CONFIG": ours["DOCKER_CONFIG"]}
        for label, extra in (("--network none", ["--network", "none"]), ("default bridge", [])):
            cmd = [DOCKER, "run", "--rm", *extra, "busybox", "true"]
            a, b = interleaved([(cmd, ours), (cmd, theirs)], runs)
            row(f"docker run --rm ({label}) via pybuild serve", a)
            row(f"docker run --rm ({label}) via dockerd", b, f"ratio {a / b:.2f}x")
    except Exception as e:  # noqa: BLE001 - the peer is optional; say why it is missing
        print(f"  (docker run --rm not measured: {str(e).splitlines()[0]})")
    finally:
        d.stop()


def row(name: str, seconds: float, note: str = "") -> None:
    print(f"  {name:<44} {seconds * 1000:9.1f} ms  {note}")


def make_root(root: Path, tags: int, containers: int) -> None:
    from registry import archive
    from registry.reference import Reference
    from registry.store import Store

    spec = importlib.util.spec_from_file_location("mkbusybox", REPO / "testdata" / "mkbusybox.py")
    assert spec and spec.loader
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    tar = root.parent / "busybox.tar"
    mk.make_tar(tar)
    store = Store(root / "store")
    archive.import_rootfs(store, tar, reference=Reference.parse("busybox:latest"),
                          config={"Cmd": ["sh"]})
    for i in range(tags - 1):
        store.tag("busybox:latest", Reference.parse(f"bench/tag{i}:latest"))
    for i in range(containers):
        subprocess.run([PYBUILD, "--root", str(root), "create", "--name", f"bench{i}",
                        "busybox", "sleep", "1000"], check=True, capture_output=True)


async def load(sock: str, path: str, clients: int, total: int, limit_s: float
               ) -> tuple[int, float, list[float], int]:
    """(requests done, seconds, latencies, failures) of *total* GETs from *clients* workers."""
    import aiohttp

    latencies: list[float] = []
    failures = 0
    left = total
    deadline = time.monotonic() + limit_s

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal left, failures
        while left > 0 and time.monotonic() < deadline:
            left -= 1
            t = time.perf_counter()
            async with session.get(f"http://localhost{path}") as r:
                await r.read()
                if r.status != 200:
                    failures += 1
            latencies.append(time.perf_counter() - t)

    connector = aiohttp.UnixConnector(path=sock, limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get("http://localhost/_ping") as r:  # warm-up
            await r.read()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    return len(latencies), elapsed, latencies, failures


def has_route(sock: str, path: str) -> bool:
    import http.client
    import socket

    class Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(sock)
            self.sock = s

    c = Conn("localhost", timeout=30)
    try:
        c.request("GET", path)
        return c.getresponse().status == 200
    finally:
        c.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--run-runs", type=int, default=15, help="rounds of docker run --rm")
    ap.add_argument("--only-run", action="store_true", help="measure docker run --rm only")
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=30.0, help="time limit of each load run")
    ap.add_argument("--tags", type=int, default=20)
    ap.add_argument("--containers", type=int, default=10)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pybuild-bench-serve-"))
    root = work / "root"
    sock = str(work / "api.sock")
    daemon: subprocess.Popen[bytes] | None = None
    try:
        make_root(root, args.tags, args.containers)
        env = {**os.environ, "DOCKER_HOST": f"unix://{sock}",
               "DOCKER_CONFIG": str(work / "docker-config")}
        daemon = subprocess.Popen([PYBUILD, "--root", str(root), "serve", "--host",
                                   f"unix://{sock}"], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not os.path.exists(sock) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert has_route(sock, "/_ping"), "the daemon did not come up"
        print(f"pybuild serve: {args.tags} tags of busybox, {args.containers} created "
              f"containers; median of {args.runs} runs")
        docker_run_rm(work / "busybox.tar", env, args.run_runs)
        if args.only_run:
            return
        base = [PYBUILD, "--root", str(root)]
        containers_route = has_route(sock, "/v1.41/containers/json?all=1")
        if containers_route:
            row("docker ps -a (through pybuild serve)", timed([DOCKER, "ps", "-a"], args.runs, env))
            row("pybuild ps -a", timed([*base, "ps", "-a"], args.runs))
        else:
            print("  (no /containers/json route in this daemon: docker ps not measured)")
        row("docker images (through pybuild serve)", timed([DOCKER, "images"], args.runs, env))
        row("pybuild images", timed([*base, "images"], args.runs))
        row("docker version (client + /version floor)", timed([DOCKER, "version"], args.runs, env))

        paths = ["/v1.41/containers/json?all=1"] if containers_route else []
        paths += ["/v1.41/images/json", "/_ping"]
        if not containers_route:
            print("  (no /containers/json route: measuring /images/json in its place)")
        for path in paths:
            n, secs, lat, failed = asyncio.run(load(sock, path, args.clients, args.requests,
                                                    args.seconds))
            lat.sort()
            p50 = lat[len(lat) // 2] * 1000
            p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
            print(f"  GET {path:<34} {n / secs:8.0f} req/s  ({n} requests, {args.clients} "
                  f"clients, p50 {p50:.1f} ms, p99 {p99:.1f} ms, {failed} failed)")
    finally:
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(20)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        for i in range(args.containers):
            subprocess.run([PYBUILD, "--root", str(root), "rm", "-f", f"bench{i}"],
                           capture_output=True)
        if root.is_dir():  # the default bridge and its rules, made by docker run --rm
            from builder import network
            from builder.base.state import StateRoot

            network.reset(StateRoot.open(root))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
