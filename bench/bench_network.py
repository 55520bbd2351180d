#!/usr/bin/env python3
"""Network figures: ``network create``+``rm``, attach+release of a container endpoint (plain and
with a published port), and HTTP through the userland proxy, beside iproute2 and Docker.

    .venv/bin/python bench/bench_network.py [--runs N]

Docker runs as a private daemon started here (``tests/dockerd.py`` with ``bridges=True``: in a
network namespace of its own it makes its default bridge and its iptables rules as a stock
daemon does, so its ``network create`` does the work ours does). ``network create`` + ``rm``
runs interleaved with docker's (the same load for both). Run as root.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from builder import network as N  # noqa: E402
from builder.base.state import StateRoot  # noqa: E402

PYBUILD = [sys.executable, "-c", "from builder.cli import main; main()"]


def median_ms(fn: Callable[[int], None], runs: int) -> float:
    times = []
    for i in range(runs):
        t = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def interleaved(fns: Sequence[Callable[[int], None]], runs: int) -> list[float]:
    """Median ms of each of *fns*, called in turn in every round (the same load for each)."""
    times: list[list[float]] = [[] for _ in fns]
    for i in range(runs):
        for fn, ts in zip(fns, times, strict=True):
            t = time.perf_counter()
            fn(i)
            ts.append(time.perf_counter() - t)
    return [statistics.median(ts) * 1000 for ts in times]


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def row(what: str, figures: dict[str, float | None]) -> None:
    cells = "  ".join(f"{k} {v:8.1f} ms" if v is not None else f"{k}      n/a" for k, v in figures.items())
    print(f"{what:<38} {cells}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    runs = ap.parse_args().runs
    tmp = Path(tempfile.mkdtemp(prefix="pbbench-net-"))
    state = StateRoot.open(tmp / "root")
    docker = None
    try:
        try:
            from dockerd import Dockerd

            docker = Dockerd(bridges=True)
            docker.start()
        except Exception as e:  # the figure is left out, with the reason
            print(f"(docker: not measured: {e})")
            docker = None

        # -- network create + rm, as commands --------------------------------------------------
        def ours_cli(i: int) -> None:
            root = ["--root", str(state.path)]
            subprocess.run([*PYBUILD, *root, "network", "create", f"bn{i}"], check=True, capture_output=True)
            subprocess.run([*PYBUILD, *root, "network", "rm", f"bn{i}"], check=True, capture_output=True)

        def docker_cli(i: int) -> None:
            assert docker is not None
            docker.docker("network", "create", f"bn{i}")
            docker.docker("network", "rm", f"bn{i}")

        def ip_bridge(i: int) -> None:
            sh("ip", "link", "add", f"pbbench{i}", "type", "bridge")
            sh("ip", "addr", "add", "10.254.0.1/24", "dev", f"pbbench{i}")
            sh("ip", "link", "set", f"pbbench{i}", "up")
            sh("ip", "link", "del", f"pbbench{i}")

        n = max(5, runs // 2)
        pair = [ours_cli, docker_cli] if docker else [ours_cli]
        ours, *theirs = interleaved(pair, n)
        row("network create + rm (command)", {
            "pybuild": ours, "docker": theirs[0] if theirs else None, "ip(8)": median_ms(ip_bridge, n)})
        if theirs:
            print(f"{'':<38} ratio {ours / theirs[0]:.2f}x docker")

        # -- library: a container endpoint ------------------------------------------------------
        net = N.create_network(state, "benchnet")
        N.attach(state, "w" * 64, "benchnet")  # warm: pyroute2 imported, bridge up
        N.release(state, "w" * 64)

        def attach_release(i: int) -> None:
            cid = f"{i:064x}"
            N.attach(state, cid, "benchnet", name=f"c{i}")
            N.release(state, cid)

        def attach_release_port(i: int) -> None:
            cid = f"{i + 1000:064x}"
            N.attach(state, cid, "benchnet", ports=N.parse_publish("80"))
            N.release(state, cid)

        def ip_endpoint(i: int) -> None:
            ns, veth = f"pbbench{i}", f"pbbv{i}"
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "tmp0", "netns", ns)
            sh("ip", "link", "set", veth, "master", net.bridge, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", "tmp0", "name", "eth0")
            sh("ip", "-n", ns, "addr", "add", f"{net.subnet.rsplit('.', 1)[0]}.200/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "route", "add", "default", "via", net.gateway)
            sh("ip", "link", "del", veth)
            sh("ip", "netns", "del", ns)

        row("attach + release (netns, veth, IP)", {
            "pybuild": median_ms(attach_release, runs),
            "ip(8)": median_ms(ip_endpoint, runs),
        })
        row("attach + release with -p 80", {"pybuild": median_ms(attach_release_port, runs)})

        def default_bridge(i: int) -> None:  # the bridge and its rules stay up, as docker0
            cid = f"{i + 2000:064x}"
            N.attach(state, cid, "bridge")
            N.release(state, cid)

        row("attach + release, default bridge", {"pybuild": median_ms(default_bridge, runs)})

        # -- HTTP through the proxy vs straight to the container --------------------------------
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        web = N.attach(state, "f" * 64, "benchnet", ports=N.parse_publish(f"127.0.0.1:{port}:80"))
        www = tmp / "www"
        www.mkdir()
        (www / "index.html").write_text("x" * 1024)
        httpd = subprocess.Popen(["nsenter", f"--net={web.netns}", "busybox", "httpd", "-f", "-p", "80", "-h", str(www)])
        try:
            deadline = time.monotonic() + 5
            while True:
                try:
                    urllib.request.urlopen(f"http://{web.ip}/", timeout=1).read()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)

            def get(url: str) -> Callable[[int], None]:
                return lambda _i: urllib.request.urlopen(url, timeout=5).read() and None

            row("HTTP GET 1 KiB (median of 100)", {
                "via proxy": median_ms(get(f"http://127.0.0.1:{port}/"), 100),
                "direct": median_ms(get(f"http://{web.ip}/"), 100),
            })
        finally:
            httpd.kill()
            httpd.wait()
    finally:
        N.reset(state)
        if docker is not None:
            docker.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
