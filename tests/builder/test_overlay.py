"""Overlay networks across hosts (issue 16): hosts simulated as network namespaces on an
underlay bridge, each with its own state root, sharing a real 3-member etcd cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from etcd_cluster import EtcdCluster, Hosts  # noqa: E402

PYBUILD = [sys.executable, "-c", "from builder.cli import main; main()"]


class Host:
    def __init__(self, hosts: Hosts, i: int) -> None:
        self.hosts, self.i = hosts, i
        self.root = hosts.roots[i]
        self.addr = hosts.addrs[i]

    def __call__(self, *args: str, check: bool = True, env: dict[str, str] | None = None,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
        environ = {k: v for k, v in os.environ.items() if k != "PYBUILD_ROOT"}
        environ["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
        environ.update(env or {})
        r = subprocess.run([*self.hosts.command(self.i), *PYBUILD, "--root", str(self.root), *args],
                           capture_output=True, text=True, env=environ, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"host{self.i}: pybuild {' '.join(args)} exited {r.returncode}\n"
                                 f"stdout: {r.stdout!r}\nstderr: {r.stderr!r}")
        return r

    def exec_ok(self, name: str, *cmd: str) -> bool:
        return self("exec", name, *cmd, check=False).returncode == 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Iterator[tuple[EtcdCluster, list[Host]]]:
    from registry import archive
    from registry.reference import Reference
    from registry.store import Store

    base = tmp_path_factory.mktemp("overlay")
    tag = f"{os.getpid() % 10000:04d}"
    octet = 200 + os.getpid() % 50
    hosts = Hosts(3, base, tag, octet)
    etcd = EtcdCluster(hosts.etcd_addrs, base)
    made = [Host(hosts, i) for i in range(3)]
    try:
        etcd.start()
        for h in made:
            archive.import_rootfs(Store(h.root / "store"), busybox_tar, reference=Reference.parse("busybox:latest"),
                                  config={"Cmd": ["sh"]})
            h("cluster", "join", etcd.store, "--advertise", h.addr, "--ttl", "3")
        yield etcd, made
    finally:
        for h in made:
            h("system", "reset", "-f", check=False)
        etcd.stop()
        hosts.remove()


def wait_for(pred: Any, timeout: float = 10.0) -> float:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("timed out")
        time.sleep(0.05)
    return time.monotonic() - t0


def test_three_hosts_reach_each_other_by_ip_and_name(cluster: tuple[EtcdCluster, list[Host]]) -> None:
    etcd, (a, b, c) = cluster
    nid = a("network", "create", "-d", "overlay", "ov1").stdout.strip()
    for h in (a, b, c):
        ls = h("network", "ls").stdout
        assert any(line.split()[1:] == ["ov1", "overlay", "global"] for line in ls.splitlines()), ls
    a("run", "-d", "--name", "ca", "--network", "ov1", "busybox", "sleep", "300")
    ip_a = a("inspect", "-f", "{{.NetworkSettings.Networks.ov1.IPAddress}}", "ca").stdout.strip()
    b("run", "-d", "--name", "cb", "--network", "ov1", "busybox", "sleep", "300")
    # reachable from A within a second, with no command typed on A
    took = wait_for(lambda: a.exec_ok("ca", "ping", "-c1", "-W1", "cb"), timeout=5)
    assert took < 1.5
    assert b.exec_ok("cb", "ping", "-c1", "-W1", ip_a)
    c("run", "-d", "--name", "cc", "--network", "ov1", "busybox", "sleep", "300")
    wait_for(lambda: c.exec_ok("cc", "ping", "-c1", "-W1", "ca"))
    assert c.exec_ok("cc", "ping", "-c1", "-W1", "cb")
    for h in (a, b, c):
        h("rm", "-f", {a: "ca", b: "cb", c: "cc"}[h])
    a("network", "rm", "ov1")
    assert etcd.keys() and not [k for k in etcd.keys() if nid in k or "networks/" in k]
