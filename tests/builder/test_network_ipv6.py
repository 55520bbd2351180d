"""IPv6 bridge networks through the CLI (issue 23, item 9): containers reach each other by
name over IPv6 (the embedded DNS answers ``AAAA``), over TCP on their IPv6 address, show
their IPv6 address in ``inspect``; ``system reset`` leaves no IPv6 address, route or link.
(``test_overlay_ipv6.py`` has create, ``ls``, the addresses given and bad input.)"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any


def _host_v6(prefix: str) -> str:
    out = [subprocess.run(["ip", "-6", *args], capture_output=True, text=True, check=True).stdout
           for args in (["addr"], ["route"])]
    return "".join(line + "\n" for text in out for line in text.splitlines() if prefix in line)


def test_ipv6_by_name_and_reset(busybox: Any) -> None:
    n = os.getpid() % 250
    prefix = f"fd00:23:{n:x}"
    busybox("network", "create", "--ipv6", "--subnet", f"10.232.{n}.0/24", "--subnet", f"{prefix}::/64", "v6net")
    try:
        busybox("run", "-d", "--name", "srv", "--network", "v6net", "busybox", "httpd", "-f", "-p", "8080", "-h", "/etc")
        busybox("run", "-d", "--name", "cli", "--network", "v6net", "busybox", "sleep", "300")
        [c] = json.loads(busybox("inspect", "srv").stdout)
        ep = c["NetworkSettings"]["Networks"]["v6net"]
        assert (ep["GlobalIPv6Address"], ep["GlobalIPv6PrefixLen"], ep["IPv6Gateway"]) == (f"{prefix}::2", 64, f"{prefix}::1")
        bridge = json.loads(busybox("network", "inspect", "v6net").stdout)[0]["Bridge"]
        assert f"{prefix}::1/64" in _host_v6(prefix)  # the bridge carries the IPv6 gateway
        # the embedded DNS: AAAA for a container name (and A still)
        r = busybox("exec", "cli", "nslookup", "-type=aaaa", "srv")
        assert f"{prefix}::2" in r.stdout, r.stdout
        assert f"10.232.{n}.2" in busybox("exec", "cli", "nslookup", "srv").stdout
        assert busybox("exec", "cli", "ping", "-6", "-c1", "-W3", "srv").returncode == 0
        r = busybox("exec", "cli", "wget", "-q", "-O", "-", f"http://[{prefix}::2]:8080/hostname")
        assert r.stdout.strip() == c["Config"]["Hostname"]
        r = busybox("exec", "cli", "cat", "/proc/sys/net/ipv6/conf/all/disable_ipv6")
        assert r.stdout.strip() == "0"
    finally:
        r = busybox("system", "reset", "-f")
    assert "Deleted Networks:" in r.stdout and "v6net" in r.stdout
    assert _host_v6(prefix) == ""  # no address, route or link left
    assert bridge and not os.path.exists(f"/sys/class/net/{bridge}")
