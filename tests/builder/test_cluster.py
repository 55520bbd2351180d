"""``pybuild cluster`` and overlay network records on a real 3-member etcd cluster (issue 16),
one machine: roots here share the host's network namespace (the multi-host data path is
``test_overlay.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from etcd_cluster import EtcdCluster  # noqa: E402


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdCluster]:
    n = os.getpid() % 250
    cluster = EtcdCluster([f"127.17.{n}.{i}" for i in (1, 2, 3)], tmp_path / "etcd")
    (tmp_path / "etcd").mkdir()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def joined(pybuild_factory: Any, etcd: EtcdCluster, count: int) -> list[Any]:
    out = []
    for _ in range(count):
        p = pybuild_factory()
        p("cluster", "join", etcd.store, "--advertise", "127.0.0.1")
        out.append(p)
    return out


def test_join_ls_leave(pybuild_factory: Any, etcd: EtcdCluster) -> None:
    a, b = joined(pybuild_factory, etcd, 2)
    ids = set(a("cluster", "ls", "-q").stdout.split())
    assert len(ids) == 2 and ids == set(b("cluster", "ls", "-q").stdout.split())
    table = a("cluster", "ls").stdout.splitlines()
    assert table[0].split() == ["HOST", "ID", "ADDRESS", "NAME"] and sum("*" in r for r in table) == 1
    assert len([k for k in etcd.keys() if k.startswith("pybuild/hosts/")]) == 2
    b("cluster", "leave")
    assert len(a("cluster", "ls", "-q").stdout.split()) == 1
    assert len([k for k in etcd.keys() if k.startswith("pybuild/hosts/")]) == 1
    r = b("cluster", "ls", check=False)
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "not in a cluster" in r.stderr
    # the environment joins a root on first use
    c = pybuild_factory()
    assert len(c("cluster", "ls", "-q", env={"PYBUILD_CLUSTER_STORE": etcd.store}).stdout.split()) == 2
    for p in (a, c):
        p("cluster", "leave")
    assert etcd.keys() == []


def test_bad_store_is_one_line(pybuild: Any) -> None:
    r = pybuild("cluster", "join", "etcd://", check=False)
    assert r.returncode != 0 and r.stderr.strip().count("\n") == 0 and "invalid cluster store" in r.stderr
    r = pybuild("cluster", "join", "etcd://127.17.255.1:1", "--advertise", "127.0.0.1", check=False)
    assert r.returncode != 0 and r.stderr.strip().count("\n") == 0 and "cluster store unavailable" in r.stderr
    assert not (pybuild.root / "cluster.json").exists()


def test_simultaneous_creates_give_one_network(pybuild_factory: Any, etcd: EtcdCluster) -> None:
    hosts = joined(pybuild_factory, etcd, 3)
    results: list[subprocess.CompletedProcess[str]] = []

    def create(p: Any) -> None:
        results.append(p("network", "create", "-d", "overlay", "--attachable", "shared", check=False))

    threads = [threading.Thread(target=create, args=(p,)) for p in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = [r for r in results if r.returncode == 0]
    assert len(ok) == 1, [r.stderr for r in results]
    assert all("already exists" in r.stderr for r in results if r.returncode)
    nid = ok[0].stdout.strip()
    for p in hosts:
        rows = [r.split() for r in p("network", "ls").stdout.splitlines() if " shared " in r]
        assert rows == [[nid[:12], "shared", "overlay", "global"]]
        [d] = json.loads(p("network", "inspect", "shared").stdout)
        assert (d["Id"], d["Scope"], d["Driver"], d["Attachable"]) == (nid, "global", "overlay", True)
        assert d["IPAM"]["Config"] == [{"Subnet": "10.0.1.0/24", "Gateway": "10.0.1.1"}]
        assert d["Options"]["com.docker.network.driver.overlay.vxlanid_list"] == "4097"
    # subnets and VNIs are never given twice
    hosts[1]("network", "create", "-d", "overlay", "second")
    [d] = json.loads(hosts[2]("network", "inspect", "second").stdout)
    assert d["IPAM"]["Config"][0]["Subnet"] == "10.0.2.0/24"
    assert d["Options"]["com.docker.network.driver.overlay.vxlanid_list"] == "4098"
    r = hosts[0]("network", "create", "-d", "overlay", "--subnet", "10.0.1.128/25", "clash", check=False)
    assert r.returncode != 0 and "overlaps" in r.stderr
    # removed on one host, gone from every host and from the store
    hosts[2]("network", "rm", "shared", "second")
    for p in hosts:
        assert " shared " not in p("network", "ls").stdout
    assert [k for k in etcd.keys() if not k.startswith("pybuild/hosts/")] == []


def test_store_faults(pybuild_factory: Any, etcd: EtcdCluster) -> None:
    a, b = joined(pybuild_factory, etcd, 2)
    etcd.kill(0)  # one member down: the others answer
    a("network", "create", "-d", "overlay", "ov")
    assert " ov " in b("network", "ls").stdout
    etcd.kill(1)
    etcd.kill(2)  # the whole store down
    r = a("network", "create", "-d", "overlay", "ov2", check=False)
    assert r.returncode != 0 and r.stderr.strip().count("\n") == 0 and "cluster store unavailable" in r.stderr, r.stderr
    r = a("network", "rm", "ov", check=False)
    assert r.returncode != 0 and "cluster store unavailable" in r.stderr
    # bridge networks are unaffected, and listings show what was last seen
    a("network", "create", "br")
    assert " ov " in a("network", "ls").stdout and " br " in a("network", "ls").stdout
    a("network", "rm", "br")
    etcd.start()  # back: everything converges
    a("network", "rm", "ov")
    assert " ov " not in b("network", "ls").stdout
    for p in (a, b):
        p("cluster", "leave")


def test_serve_creates_overlay_networks(pybuild_factory: Any, etcd: EtcdCluster) -> None:
    """``docker network create -d overlay`` against ``pybuild serve`` of a joined root; the
    network is global: another host sees it, the Engine API shows Docker's shape."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))
    from serve_client import Daemon

    a, b = joined(pybuild_factory, etcd, 2)
    d = Daemon(a).start()
    try:
        nid = d.docker("network", "create", "-d", "overlay", "--attachable", "--subnet", "10.9.0.0/24",
                       "viaapi").stdout.strip()
        assert d.docker("network", "ls", "--filter", "name=viaapi", "--format",
                        "{{.Name}} {{.Driver}} {{.Scope}}").stdout.split() == ["viaapi", "overlay", "global"]
        got = json.loads(d.docker("network", "inspect", "viaapi").stdout)[0]
        assert (got["Id"], got["Scope"], got["Attachable"], got["IPAM"]["Config"][0]["Subnet"]) == \
            (nid, "global", True, "10.9.0.0/24")
        [seen] = json.loads(b("network", "inspect", "viaapi").stdout)
        assert seen["Id"] == nid
        r = d.docker("network", "create", "-d", "overlay", "viaapi", check=False)
        assert r.returncode != 0 and "already exists" in r.stderr
        d.docker("network", "rm", "viaapi")
    finally:
        d.stop()
    assert " viaapi " not in b("network", "ls").stdout
    for p in (a, b):
        p("cluster", "leave")
