#!/usr/bin/env python3
"""bench_overlay: overlay networks across simulated hosts (issue 16).

Three hosts (network namespaces on an underlay bridge, each with its own state root) share a
real 3-member etcd cluster. Measured:

* time from ``run -d`` on host B to the first ping answered from a container on host A (the
  ping runs every 10 ms from before the start; median of ``BENCH_RUNS``), and to host A's
  neighbour entry for it (what the agent's watch wrote);
* a 3-host × ``BENCH_PER_HOST`` (default 30) container start, hosts in parallel, and the
  cross-host ping from the first container to the last one of every host afterwards;
* store keys and watch events per container start, and per removal.
"""

from __future__ import annotations

import importlib.util
import os
import pty
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "builder"))
sys.path.insert(0, str(REPO))

from etcd_cluster import EtcdCluster, Hosts  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
PER_HOST = int(os.environ.get("BENCH_PER_HOST", "30"))
PYBUILD = [sys.executable, "-c", "from builder.cli import main; main()"]


def busybox_tar(base: Path) -> Path:
    spec = importlib.util.spec_from_file_location("mkbusybox", REPO / "testdata" / "mkbusybox.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["mkbusybox"] = mod
    spec.loader.exec_module(mod)
    tar = base / "busybox.tar"
    mod.make_tar(tar)
    return tar


class Host:
    def __init__(self, hosts: Hosts, i: int) -> None:
        self.hosts, self.i, self.root = hosts, i, hosts.roots[i]

    def argv(self, *args: str) -> list[str]:
        return [*self.hosts.command(self.i), *PYBUILD, "--root", str(self.root), *args]

    def __call__(self, *args: str, check: bool = True) -> str:
        env = {k: v for k, v in os.environ.items() if k != "PYBUILD_ROOT"}
        env["PYTHONPATH"] = str(REPO)
        r = subprocess.run(self.argv(*args), capture_output=True, text=True, env=env, timeout=300)
        if check and r.returncode:
            raise SystemExit(f"host{self.i}: pybuild {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout


class EventCounter:
    """Counts watch events under ``pybuild/`` (our client, one stream) while it runs."""

    def __init__(self, urls: list[str]) -> None:
        from builder.network.cluster.etcd import Etcd

        self.etcd = Etcd(urls)
        self.count = 0
        _, self.rev = self.etcd.range("pybuild/")
        threading.Thread(target=self.run, daemon=True).start()

    def run(self) -> None:
        from builder.network.cluster.etcd import ClusterError

        try:
            for evs in self.etcd.watch("pybuild/", self.rev + 1, idle=120):
                self.count += len(evs)
        except ClusterError:
            pass

    def settle(self) -> int:
        time.sleep(0.5)
        return self.count


def first_ping(a: Host, b: Host, k: int) -> float:
    ip = f"10.0.1.{200 + k}"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    # a terminal: the container's ping writes each line as it comes (a pipe would buffer them)
    master, slave = pty.openpty()
    ping = subprocess.Popen(a.argv("exec", "-t", "pa", "ping", "-i", "0.01", "-W", "1", "-w", "20", ip),
                            stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = os.fdopen(master, "rb", buffering=0)
    buf = b""
    while b"PING" not in buf:  # pinging now
        buf += out.read(256)
    answered: list[float] = []

    def read() -> None:
        data = b""
        while not answered:
            try:
                chunk = out.read(4096)
            except OSError:
                return
            if not chunk:
                return
            data += chunk
            if b"bytes from" in data:
                answered.append(time.monotonic())

    programmed: list[float] = []

    monitor = subprocess.Popen(["ip", "-n", a.hosts.names[a.i], "monitor", "neigh"], stdout=subprocess.PIPE,
                               text=True, bufsize=1)

    def watch_neigh() -> None:  # when host A's agent wrote the neighbour entry for B's container
        assert monitor.stdout is not None
        for line in monitor.stdout:
            if line.startswith(ip + " ") and "PERMANENT" in line:
                programmed.append(time.monotonic())
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    threading.Thread(target=watch_neigh, daemon=True).start()
    time.sleep(0.2)  # the monitor is listening
    t0 = time.monotonic()
    b("run", "-d", "--name", f"pb{k}", "--network", "bench", "--ip", ip, "busybox", "sleep", "600")
    started = time.monotonic() - t0
    while not answered and time.monotonic() - t0 < 20:
        time.sleep(0.005)
    took = answered[0] - t0 if answered else float("inf")
    for p in (ping, monitor):
        p.kill()
        p.wait()
    out.close()
    entry = programmed[0] - t0 if programmed else float("inf")
    print(f"  run {k}: run -d returned after {started:.2f} s, A's entry written after {entry:.2f} s, "
          f"first ping answered after {took:.2f} s")
    b("rm", "-f", f"pb{k}")
    return took


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="bench-overlay-"))
    hosts = Hosts(3, base, f"b{os.getpid() % 1000}", 190 + os.getpid() % 9)
    etcd = EtcdCluster(hosts.etcd_addrs, base)
    made = [Host(hosts, i) for i in range(3)]
    try:
        etcd.start()
        tar = busybox_tar(base)
        for h in made:
            from registry import archive
            from registry.reference import Reference
            from registry.store import Store

            archive.import_rootfs(Store(h.root / "store"), tar, reference=Reference.parse("busybox:latest"),
                                  config={"Cmd": ["sh"]})
            h("cluster", "join", etcd.store, "--advertise", hosts.addrs[h.i])
        a, b, c = made
        a("network", "create", "-d", "overlay", "--subnet", "10.0.1.0/24", "bench")
        a("run", "-d", "--name", "pa", "--network", "bench", "busybox", "sleep", "600")
        b("run", "-d", "--name", "warm", "--network", "bench", "busybox", "true")  # unpack layers
        b("rm", "-f", "warm")

        print("run -d on host B → first ping answered from host A")
        times = [first_ping(a, b, k) for k in range(RUNS)]
        print(f"  median {statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f})")

        counter = EventCounter(etcd.client_urls())
        keys0 = len(etcd.keys())
        ev0 = counter.settle()
        b("run", "-d", "--name", "one", "--network", "bench", "busybox", "sleep", "600")
        keys1, ev1 = len(etcd.keys()), counter.settle()
        b("rm", "-f", "one")
        keys2, ev2 = len(etcd.keys()), counter.settle()
        print(f"per container start: {keys1 - keys0} keys, {ev1 - ev0} watch events (one stream); "
              f"per removal: {keys1 - keys2} keys gone, {ev2 - ev1} events")

        print(f"3 hosts × {PER_HOST} containers, hosts in parallel")
        t0 = time.monotonic()
        per_host: dict[int, float] = {}

        def start_all(h: Host) -> None:
            t = time.monotonic()
            for k in range(PER_HOST):
                h("run", "-d", "--name", f"h{h.i}c{k}", "--network", "bench", "busybox", "sleep", "600")
            per_host[h.i] = time.monotonic() - t

        threads = [threading.Thread(target=start_all, args=(h,)) for h in made]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - t0
        print(f"  {3 * PER_HOST} containers in {wall:.1f} s wall; per host {', '.join(f'{v:.1f}' for v in per_host.values())} s "
              f"({statistics.mean(per_host.values()) / PER_HOST:.2f} s per run -d)")
        print(f"  store: {len(etcd.keys())} keys, {counter.settle()} watch events so far")
        for h in made:
            last = f"h{h.i}c{PER_HOST - 1}"
            ok = subprocess.run(a.argv("exec", "h0c0", "ping", "-c1", "-W2", last), capture_output=True,
                                env=dict(os.environ, PYTHONPATH=str(REPO))).returncode == 0
            print(f"  h0c0 → {last}: {'answered' if ok else 'NO ANSWER'}")
        for h in made:
            names = [f"h{h.i}c{k}" for k in range(PER_HOST)] + (["pa"] if h.i == 0 else [])
            h("rm", "-f", *names)
        a("network", "rm", "bench")
    finally:
        for h in made:
            h("system", "reset", "-f", check=False)
        etcd.stop()
        hosts.remove()
        subprocess.run(["rm", "-rf", str(base)])


if __name__ == "__main__":
    main()
