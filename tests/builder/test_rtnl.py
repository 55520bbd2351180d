"""``builder.network.rtnl``, our rtnetlink client, judged by iproute2's ``ip -j`` output: what
it makes is what ``ip`` sees, what it reads is what ``ip`` reports, errors carry the errno."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.network import links
from builder.network.rtnl import Netlink


def ip(*args: str, netns: Path | None = None) -> list[dict[str, object]]:
    enter = ["nsenter", f"--net={netns}"] if netns else []
    out = subprocess.run([*enter, "ip", "-j", *args], capture_output=True, text=True, check=True).stdout
    return json.loads(out or "[]")  # type: ignore[no-any-return]


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[Path]:
    p = tmp_path / "ns"
    links.create_netns(p)
    yield p
    links.remove_netns(p)


def test_bridge_veth_address_route_and_alias_as_ip_sees_them(netns: Path) -> None:
    with Netlink() as nl:
        nl.add_bridge("pbtrtnl0")
        try:
            br = nl.link("pbtrtnl0")
            assert br is not None and br.kind == "bridge" and not br.up
            nl.add_addr(br.index, "10.254.77.1", 24)
            nl.set_link(br.index, up=True, alias="pybuild test alias")
            fd = os.open(netns, os.O_RDONLY)
            try:
                nl.add_veth("pbtrtnlv", "pbtrtnlp", peer_netns_fd=fd)
            finally:
                os.close(fd)
            v = nl.link("pbtrtnlv")
            assert v is not None and v.kind == "veth"
            nl.set_link(v.index, master=br.index, up=True)
            shown = ip("-d", "link", "show", "pbtrtnl0")[0]
            assert shown["ifalias"] == "pybuild test alias" and "UP" in shown["flags"]  # type: ignore[operator]
            assert ip("link", "show", "pbtrtnlv")[0]["master"] == "pbtrtnl0"
            assert [(a["local"], a["prefixlen"]) for a in ip("-4", "addr", "show", "pbtrtnl0")[0]["addr_info"]] \
                == [("10.254.77.1", 24)]  # type: ignore[index]
            assert ("pbtrtnl0", "pybuild test alias") in links.tagged_links("pybuild test")
            assert (br.index, "10.254.77.1", 24) in nl.addrs()
            assert ("10.254.77.0", 24, "") in nl.routes()
            with Netlink(netns) as inside:  # the peer, in the namespace: rename, MAC, address, route
                p = inside.link("pbtrtnlp")
                assert p is not None
                inside.set_link(p.index, name="eth0", mac="02:42:0a:fe:4d:02")
                inside.add_addr(p.index, "10.254.77.2", 24)
                inside.set_link(p.index, up=True)
                inside.add_default_route("10.254.77.1")
                assert ("", 0, "10.254.77.1") in inside.routes()
            seen = ip("-4", "addr", "show", "eth0", netns=netns)[0]
            assert ip("link", "show", "eth0", netns=netns)[0]["address"] == "02:42:0a:fe:4d:02"
            assert [a["local"] for a in seen["addr_info"]] == ["10.254.77.2"]  # type: ignore[index]
            routes = subprocess.run(["nsenter", f"--net={netns}", "ip", "route"], capture_output=True,
                                    text=True).stdout
            assert "default via 10.254.77.1 dev eth0" in routes
            nl.del_link(v.index)  # its peer goes with it
            assert nl.link("pbtrtnlv") is None
            inside_now = ip("link", "show", netns=netns)
            assert inside_now and not any(x["ifname"] == "eth0" for x in inside_now)
        finally:
            subprocess.run(["ip", "link", "del", "pbtrtnl0"], capture_output=True)
            subprocess.run(["ip", "link", "del", "pbtrtnlv"], capture_output=True)


def test_errors_carry_the_kernels_errno() -> None:
    with Netlink() as nl:
        assert nl.link("pbtnosuch0") is None  # ENODEV is an answer, not an error
        lo = nl.link("lo")
        assert lo is not None and lo.index == 1
        with pytest.raises(OSError) as e:
            nl.add_bridge("lo")
        assert e.value.errno == errno.EEXIST
        with pytest.raises(OSError) as e:
            nl.del_link(2**31 - 1)
        assert e.value.errno == errno.ENODEV
        # the socket answers in order after an error
        assert {link.name for link in nl.links()} >= {"lo"}


def test_a_missing_namespace_fails_to_open(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Netlink(tmp_path / "nope")
