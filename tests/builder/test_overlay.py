"""Overlay networks across hosts (issue 16): hosts simulated as network namespaces on an
underlay bridge, each with its own state root, sharing a real 3-member etcd cluster."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from etcd_cluster import EtcdCluster, Hosts  # noqa: E402

PYBUILD = [sys.executable, "-c", "from builder.cli import main; main()"]
TTL = 4  # seconds: a dead host's endpoints go within it (short for the test; 15 by default)


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
            h("cluster", "join", etcd.store, "--advertise", h.addr, "--ttl", str(TTL))
        yield etcd, made
    finally:
        for h in made:
            if not Path(f"/run/netns/{hosts.names[h.i]}").exists():
                hosts.add(h.i)  # a test that killed the host failed before bringing it back
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


def ip_of(h: Host, name: str, net: str) -> str:
    return h("inspect", "-f", f"{{{{.NetworkSettings.Networks.{net}.IPAddress}}}}", name).stdout.strip()


def host_links(h: Host) -> list[str]:
    out = subprocess.run(["ip", "-n", h.hosts.names[h.i], "-br", "link"], capture_output=True, text=True,
                         check=True).stdout
    return [line.split()[0].partition("@")[0] for line in out.splitlines() if line.startswith(("pb", "pbx"))]


def neigh(h: Host, ip: str) -> str:
    return subprocess.run(["ip", "-n", h.hosts.names[h.i], "neigh", "show", ip], capture_output=True, text=True,
                          check=True).stdout


def host_rules(h: Host, tag: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "exec", h.hosts.names[h.i], "iptables-save"], capture_output=True,
                         text=True, check=True).stdout
    return [line for line in out.splitlines() if tag in line]


HTTPD = ["sh", "-c", "echo hello-from-$(hostname) > /var/www/index.html && exec httpd -f -p 80 -h /var/www"]


def test_three_hosts_reach_each_other_by_ip_and_name(cluster: tuple[EtcdCluster, list[Host]]) -> None:
    etcd, (a, b, c) = cluster
    nid = a("network", "create", "-d", "overlay", "--subnet", "10.0.9.0/24", "ov1").stdout.strip()
    for h in (a, b, c):
        ls = h("network", "ls").stdout
        assert any(line.split()[1:] == ["ov1", "overlay", "global"] for line in ls.splitlines()), ls
    a("run", "-d", "--name", "ca", "--network", "ov1", "busybox", "sleep", "300")
    a("run", "-d", "--name", "ca2", "--network", "ov1", "busybox", "sleep", "300")
    ip_a = ip_of(a, "ca", "ov1")
    ip_b = "10.0.9.200"
    b("run", "-d", "--name", "cb", "--hostname", "cb", "--network", "ov1", "--ip", ip_b, "-p", "8080:80",
      "busybox", *HTTPD)
    # reachable from A within a second, with no command typed on A: A's agent has written the
    # neighbour and forwarding entries for it (as a rule before B's run returned)
    took = wait_for(lambda: "PERMANENT" in neigh(a, ip_b), timeout=5)
    assert took < 1.0, took
    assert a.exec_ok("ca", "ping", "-c1", "-W1", "cb")
    assert b.exec_ok("cb", "ping", "-c1", "-W1", ip_a)
    assert a.exec_ok("ca", "ping", "-c1", "-W1", "ca2")  # same host
    assert "1450" in a("exec", "ca", "cat", "/sys/class/net/eth0/mtu").stdout
    c("run", "-d", "--name", "cc", "--network", "ov1", "busybox", "sleep", "300")
    wait_for(lambda: c.exec_ok("cc", "ping", "-c1", "-W1", "ca"))
    # TCP across hosts, by name and by IP
    assert a("exec", "ca", "wget", "-q", "-O", "-", "http://cb/").stdout.strip() == "hello-from-cb"
    assert c("exec", "cc", "wget", "-q", "-O", "-", f"http://{ip_of(b, 'cb', 'ov1')}/").stdout.strip() == "hello-from-cb"
    # -p on an overlay endpoint: host B's underlay address, port 8080, from a container on A
    assert a("exec", "ca", "wget", "-q", "-O", "-", f"http://{b.addr}:8080/").stdout.strip() == "hello-from-cb"

    # a second overlay network is isolated from the first; connect/disconnect join it
    b("network", "create", "-d", "overlay", "ov2")
    b("run", "-d", "--name", "cx", "--network", "ov2", "busybox", "sleep", "300")
    ip_x = ip_of(b, "cx", "ov2")
    assert not a.exec_ok("ca", "ping", "-c1", "-W1", ip_x)
    assert a("exec", "ca", "nslookup", "cx", check=False).returncode != 0 or \
        ip_x not in a("exec", "ca", "nslookup", "cx", check=False).stdout
    a("network", "connect", "ov2", "ca")
    wait_for(lambda: a.exec_ok("ca", "ping", "-c1", "-W1", "cx"))
    a("network", "disconnect", "ov2", "ca")
    assert not a.exec_ok("ca", "ping", "-c1", "-W1", ip_x)
    # a container on a bridge network of host A cannot reach the overlay
    a("run", "-d", "--name", "plain", "busybox", "sleep", "300")
    assert not a.exec_ok("plain", "ping", "-c1", "-W1", ip_of(b, "cb", "ov1"))
    assert not a.exec_ok("plain", "ping", "-c1", "-W1", ip_of(a, "ca2", "ov1"))

    # nothing leaks: no vxlan, bridge, veth, rule or key once containers and networks are gone
    for h, names in ((a, ["ca", "ca2", "plain"]), (b, ["cb", "cx"]), (c, ["cc"])):
        h("rm", "-f", *names)
    nid2 = b("network", "inspect", "-f", "{{.Id}}", "ov2").stdout.strip()
    a("network", "rm", "ov1")
    c("network", "rm", "ov2")
    for h in (a, b, c):
        left = [n for n in host_links(h) if n.startswith(("pbx", "pbv")) or n[3:] in (nid[:12], nid2[:12])]
        assert left == [], left
        assert host_rules(h, nid[:12]) == [] and host_rules(h, nid2[:12]) == []
        assert not list((h.root / "run" / "netns").glob("*")) if (h.root / "run" / "netns").is_dir() else True
    assert [k for k in etcd.keys() if not k.startswith("pybuild/hosts/")] == []


def test_twenty_containers_at_once_get_distinct_addresses(cluster: tuple[EtcdCluster, list[Host]]) -> None:
    etcd, hosts = cluster
    hosts[0]("network", "create", "-d", "overlay", "many")
    names = {h.i: [f"m{h.i}x{k}" for k in range(7 if h.i < 2 else 6)] for h in hosts}

    errors: list[str] = []

    def start(h: Host, name: str) -> None:
        r = h("run", "-d", "--name", name, "--network", "many", "busybox", "sleep", "300", timeout=240, check=False)
        if r.returncode:
            errors.append(f"host{h.i} {name}: {r.stderr.strip()}")

    threads = [threading.Thread(target=start, args=(h, n)) for h in hosts for n in names[h.i]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ips = {}
    for h in hosts:  # each host's record has its own endpoints
        [rec] = json.loads(h("network", "inspect", "many").stdout)
        ips |= {ep["Name"]: ep["IPv4Address"] for ep in rec["Containers"].values()}
    assert sorted(ips) == sorted(n for h in hosts for n in names[h.i])
    assert len(ips) == 20 and len(set(ips.values())) == 20, ips
    assert len([k for k in etcd.keys() if k.startswith("pybuild/ips/")]) == 20
    a = hosts[0]
    assert a.exec_ok(names[0][0], "ping", "-c1", "-W1", names[2][-1])
    for h in hosts:
        h("rm", "-f", *names[h.i])
    a("network", "rm", "many")
    assert [k for k in etcd.keys() if not k.startswith("pybuild/hosts/")] == []


def _kill_host(h: Host) -> None:
    """Every pybuild process of the host dies (kill -9) and its namespace is deleted (its
    bridges, VXLAN devices and veths with it)."""
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != os.getpid():
            try:
                cmd = Path(f"/proc/{d}/cmdline").read_bytes()
            except OSError:
                continue
            if str(h.root).encode() in cmd:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(d), signal.SIGKILL)
    h.hosts.delete(h.i)


def test_faults(cluster: tuple[EtcdCluster, list[Host]]) -> None:
    etcd, (a, b, c) = cluster
    etcd.kill(1)  # one member down: create, run and DNS still work
    a("network", "create", "-d", "overlay", "ft")
    a("run", "-d", "--name", "fa", "--network", "ft", "busybox", "sleep", "300")
    b("run", "-d", "--name", "fb", "--network", "ft", "busybox", "sleep", "300")
    wait_for(lambda: a.exec_ok("fa", "ping", "-c1", "-W1", "fb"))
    etcd.kill(0)
    etcd.kill(2)  # the whole store down
    r = c("run", "-d", "--name", "fc", "--network", "ft", "busybox", "sleep", "300", check=False)
    assert r.returncode != 0 and r.stderr.strip().count("\n") == 0 and "cluster store unavailable" in r.stderr, r.stderr
    assert c("run", "--rm", "busybox", "true").returncode == 0  # bridge networks are unaffected
    assert a.exec_ok("fa", "ping", "-c1", "-W1", "fb")  # running overlay containers keep talking
    c("rm", "-f", "fc")  # created, not started (as dockerd leaves a container whose start failed)
    etcd.start()  # the store back: everything converges
    c("run", "-d", "--name", "fc", "--network", "ft", "busybox", "sleep", "300")
    wait_for(lambda: a.exec_ok("fa", "ping", "-c1", "-W1", "fc"))
    # host C dies: its endpoint vanishes within the lease time, its address is reused
    ip_c = ip_of(c, "fc", "ft")
    _kill_host(c)
    t = wait_for(lambda: not any(k.endswith("/" + ip_c) for k in etcd.keys("pybuild/ips/")), timeout=15)
    assert t < TTL + 3, t  # the lease's TTL, and etcd's expiry sweep
    wait_for(lambda: a("exec", "fa", "nslookup", "fc", check=False).returncode != 0)
    b("run", "-d", "--name", "fb2", "--network", "ft", "--ip", ip_c, "busybox", "sleep", "300")
    wait_for(lambda: a.exec_ok("fa", "ping", "-c1", "-W1", "fb2"))
    c.hosts.add(c.i)  # the machine back, empty: its root still names what it had
    c("system", "reset", "-f")  # the dead host's leftovers go, and it leaves the cluster
    assert host_links(c) == [] and not (c.root / "cluster.json").exists()
    assert len(etcd.keys("pybuild/hosts/")) == 2
    c("cluster", "join", etcd.store, "--advertise", c.addr, "--ttl", str(TTL))
    a("rm", "-f", "fa")
    b("rm", "-f", "fb", "fb2")
    a("network", "rm", "ft")
    assert [k for k in etcd.keys() if not k.startswith("pybuild/hosts/")] == []
