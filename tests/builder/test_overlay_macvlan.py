"""macvlan through ``run`` (issue 16): two containers on a macvlan network whose parent is a
veth, the other end of which sits in a test namespace standing for the LAN (no ``dummy`` driver
in this kernel)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@pytest.fixture
def lan() -> Iterator[tuple[str, str, str]]:
    """(parent interface, LAN namespace, LAN address) on 10.<n>.77.0/24."""
    tag = f"{os.getpid() % 100000}"
    parent, peer, ns = f"pbmv{tag}", f"pbmw{tag}", f"pbmvlan{tag}"
    subnet = f"10.{200 + os.getpid() % 50}.77"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "link", "add", parent, "type", "veth", "peer", "name", peer, "netns", ns)
        sh("ip", "link", "set", parent, "up")
        sh("ip", "-n", ns, "addr", "add", f"{subnet}.1/24", "dev", peer)
        sh("ip", "-n", ns, "link", "set", peer, "up")
        yield parent, ns, subnet
    finally:
        subprocess.run(["ip", "link", "del", parent], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def test_macvlan_containers_reach_each_other_and_the_lan(busybox: Any, lan: tuple[str, str, str]) -> None:
    parent, ns, subnet = lan
    busybox("network", "create", "-d", "macvlan", "--subnet", f"{subnet}.0/24", "--gateway", f"{subnet}.1",
            "-o", f"parent={parent}", "lan")
    busybox("run", "-d", "--name", "m1", "--network", "lan", "busybox", "sleep", "300")
    busybox("run", "-d", "--name", "m2", "--network", "lan", "--ip", f"{subnet}.50", "busybox", "sleep", "300")
    try:
        assert busybox("exec", "m1", "ping", "-c1", "-W2", "m2").returncode == 0  # by name
        assert busybox("exec", "m2", "ping", "-c1", "-W2", f"{subnet}.1").returncode == 0  # the LAN
        r = subprocess.run(["ip", "netns", "exec", ns, "/bin/busybox", "ping", "-c1", "-W2", f"{subnet}.50"], capture_output=True)
        assert r.returncode == 0  # and the LAN reaches them
        [line] = [x for x in busybox("network", "ls").stdout.splitlines() if " lan " in x]
        assert line.split()[1:] == ["lan", "macvlan", "local"]
    finally:
        busybox("rm", "-f", "m1", "m2")
    busybox("network", "rm", "lan")
    out = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True, check=True).stdout
    assert not [x for x in out.splitlines() if x.startswith("pbm") and not x.startswith(parent)]
