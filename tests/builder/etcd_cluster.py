"""A real 3-member etcd cluster on addresses the test owns (``/usr/bin/etcd``, Debian's
``etcd-server``): data dirs under a temp dir, each member a child process killed at the end.

``EtcdCluster(addresses, base)``: member *i* listens for clients on ``addresses[i]:2379`` and
for peers on ``addresses[i]:2380``; ``kill(i)`` (SIGKILL), ``start(i)`` again with its data,
``stop()`` everything. ``store`` is the ``etcd://a:2379,b:2379,c:2379`` spec pybuild takes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

ETCD = "/usr/bin/etcd"


class EtcdCluster:
    def __init__(self, addresses: list[str], base: Path, *, netns: str | None = None) -> None:
        self.addresses = addresses
        self.base = base
        self.netns = netns
        self.token = f"pbtest-{os.getpid()}-{time.monotonic_ns()}"
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.initial = ",".join(f"m{i}=http://{a}:2380" for i, a in enumerate(addresses))

    @property
    def store(self) -> str:
        return "etcd://" + ",".join(f"{a}:2379" for a in self.addresses)

    def client_urls(self, members: list[int] | None = None) -> list[str]:
        idx = range(len(self.addresses)) if members is None else members
        return [f"http://{self.addresses[i]}:2379" for i in idx]

    def start(self, i: int | None = None) -> None:
        for m in ([i] if i is not None else range(len(self.addresses))):
            a = self.addresses[m]
            data = self.base / f"m{m}"
            log = open(self.base / f"m{m}.log", "ab")  # noqa: SIM115 (the child holds it)
            argv = [ETCD, "--name", f"m{m}", "--data-dir", str(data),
                    "--listen-client-urls", f"http://{a}:2379", "--advertise-client-urls", f"http://{a}:2379",
                    "--listen-peer-urls", f"http://{a}:2380", "--initial-advertise-peer-urls", f"http://{a}:2380",
                    "--initial-cluster", self.initial, "--initial-cluster-token", self.token,
                    "--initial-cluster-state", "new", "--heartbeat-interval", "50",
                    "--election-timeout", "500", "--listen-metrics-urls", "", "--log-level", "warn"]
            if self.netns:
                argv = ["ip", "netns", "exec", self.netns, *argv]
            self.procs[m] = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
            log.close()
        self.wait_healthy([i] if i is not None else None)

    def wait_healthy(self, members: list[int] | None = None, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        for url in self.client_urls(members):
            while True:
                try:
                    req = urllib.request.Request(url + "/v3/kv/range", data=json.dumps({"key": "AA=="}).encode(),
                                                 headers={"Content-Type": "application/json"})
                    with urllib.request.urlopen(req, timeout=1) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"etcd at {url} did not become healthy; logs in {self.base}")
                time.sleep(0.1)

    def kill(self, i: int) -> None:
        p = self.procs.pop(i, None)
        if p is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()

    def stop(self) -> None:
        for i in list(self.procs):
            self.kill(i)

    def keys(self, prefix: str = "pybuild/") -> list[str]:
        """Every key under *prefix* (through etcdctl, independent of the code under test)."""
        env = dict(os.environ, ETCDCTL_API="3")
        r = subprocess.run(["etcdctl", "--endpoints", ",".join(self.client_urls(sorted(self.procs))),
                            "get", "--prefix", "--keys-only", prefix],
                           capture_output=True, text=True, env=env, timeout=30, check=True)
        return [line for line in r.stdout.splitlines() if line]


# -- simulated hosts ------------------------------------------------------------------------------


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


class Hosts:
    """Hosts simulated as network namespaces ``pbh<tag><i>`` on an underlay bridge ``pbu<tag>``
    (``192.168.<n>.0/24``: the bridge .1, the etcd members .2–.4, host *i* .1<i>); each host runs
    pybuild (``nsenter --net``: its own network namespace, the machine's mounts) on its own root."""

    def __init__(self, count: int, base: Path, tag: str, octet: int) -> None:
        self.tag, self.octet = tag, octet
        self.bridge = f"pbu{tag}"
        self.names = [f"pbh{tag}{i}" for i in range(count)]
        self.addrs = [f"192.168.{octet}.{11 + i}" for i in range(count)]
        self.roots = [base / f"host{i}" for i in range(count)]
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"192.168.{octet}.1/24", "dev", self.bridge)
        for a in self.etcd_addrs:
            sh("ip", "addr", "add", f"{a}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for i in range(count):
            self.add(i)

    @property
    def etcd_addrs(self) -> list[str]:
        return [f"192.168.{self.octet}.{n}" for n in (2, 3, 4)]

    def add(self, i: int) -> None:
        ns, veth = self.names[i], f"{self.bridge}{i}"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "link", "set", veth, "master", self.bridge, "up")
        sh("ip", "-n", ns, "addr", "add", f"{self.addrs[i]}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        self.roots[i].mkdir(exist_ok=True)

    def command(self, i: int) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.names[i]}"]

    def delete(self, i: int) -> None:
        subprocess.run(["ip", "netns", "del", self.names[i]], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", f"{self.bridge}{i}"], capture_output=True, timeout=30)

    def remove(self) -> None:
        for i in range(len(self.names)):
            self.delete(i)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=30)
