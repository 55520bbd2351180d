"""IPv6 bridge networks (issue 23, item 9; done beside issue 16's network work): ``--ipv6`` with
an IPv6 ``--subnet`` gives each container an IPv6 address on the bridge next to its IPv4 one."""

from __future__ import annotations

import json
import os
from typing import Any


def test_ipv6_bridge_network(busybox: Any) -> None:
    n = os.getpid() % 200
    v6 = f"fd00:16:{n:x}::/64"
    busybox("network", "create", "--ipv6", "--subnet", f"10.{16 + n % 30}.{n}.0/24", "--subnet", v6, "six")
    [net] = json.loads(busybox("network", "inspect", "six").stdout)
    assert net["EnableIPv6"] is True
    assert net["IPAM"]["Config"] == [{"Subnet": f"10.{16 + n % 30}.{n}.0/24", "Gateway": f"10.{16 + n % 30}.{n}.1"},
                                     {"Subnet": v6, "Gateway": f"fd00:16:{n:x}::1"}]
    assert [r.split()[1:] for r in busybox("network", "ls", "--format", "{{.Name}} {{.IPv6}}").stdout.splitlines()
            if r.startswith("six ")] == [["true"]]
    busybox("run", "-d", "--name", "s1", "--network", "six", "busybox", "sleep", "300")
    busybox("run", "-d", "--name", "s2", "--network", "six", "busybox", "sleep", "300")
    try:
        [net] = json.loads(busybox("network", "inspect", "six").stdout)
        addrs = sorted(ep["IPv6Address"] for ep in net["Containers"].values())
        assert addrs == [f"fd00:16:{n:x}::2/64", f"fd00:16:{n:x}::3/64"]
        assert busybox("exec", "s1", "ping", "-6", "-c1", "-W2", f"fd00:16:{n:x}::3").returncode == 0
        assert busybox("exec", "s2", "ping", "-6", "-c1", "-W2", f"fd00:16:{n:x}::1").returncode == 0  # the gateway
        assert f"fd00:16:{n:x}::2/64" in busybox("exec", "s1", "ip", "-6", "addr", "show", "eth0").stdout
    finally:
        busybox("rm", "-f", "s1", "s2")
    busybox("network", "rm", "six")
    # bad input: one line, nothing made
    for argv, message in ((["--ipv6", "bad6"], "needs --ipv6 and an IPv6 --subnet"),
                          (["--subnet", v6, "bad6"], "needs --ipv6 and an IPv6 --subnet"),
                          (["--ipv6", "--subnet", "fd00:1::/130", "bad6"], "invalid subnet")):
        r = busybox("network", "create", *argv, check=False)
        assert r.returncode != 0 and r.stderr.strip().count("\n") == 0 and message in r.stderr, r.stderr
    assert "bad6" not in busybox("network", "ls").stdout
