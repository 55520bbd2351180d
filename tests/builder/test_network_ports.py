"""``-p``/``-P`` parsing and subnet/address management: pure functions, tables of cases."""

from __future__ import annotations

import ipaddress

import pytest

from builder.base.errors import NetworkError
from builder.network import PortMapping, ipam, parse_publish, parse_publish_all, publish_exposed

GOOD = [
    ("80", [PortMapping(80, "tcp", "", 0)]),
    ("8080:80", [PortMapping(80, "tcp", "", 8080)]),
    ("8080:80/udp", [PortMapping(80, "udp", "", 8080)]),
    ("8080:80/TCP", [PortMapping(80, "tcp", "", 8080)]),
    ("127.0.0.1:8080:80", [PortMapping(80, "tcp", "127.0.0.1", 8080)]),
    ("127.0.0.1::80", [PortMapping(80, "tcp", "127.0.0.1", 0)]),
    ("53/udp", [PortMapping(53, "udp", "", 0)]),
    ("7000-7001:8000-8001", [PortMapping(8000, "tcp", "", 7000), PortMapping(8001, "tcp", "", 7001)]),
    ("9000-9001", [PortMapping(9000, "tcp", "", 0), PortMapping(9001, "tcp", "", 0)]),
    ("65535:1", [PortMapping(1, "tcp", "", 65535)]),
]

BAD = [
    ("", "invalid publish spec"),
    (" 80", "invalid publish spec"),
    ("abc", "invalid container port 'abc'"),
    ("80/sctp", "invalid protocol 'sctp'"),
    ("80/", "invalid protocol ''"),
    ("0:80", "invalid host port range '0'"),
    ("70000:80", "invalid host port range '70000'"),
    ("8080:", "no container port"),
    ("8080:0", "invalid container port range '0'"),
    ("1.2.3:8080:80", "invalid host IP '1.2.3'"),
    ("::1:8080:80", "invalid publish spec"),
    ("[::1]:8080:80", "IPv6 host address"),
    ("1:2:3:4", "invalid publish spec '1:2:3:4': expected"),
    ("7000-7002:8000-8001", "ranges differ in size"),
    ("90-80", "invalid container port range '90-80'"),
    ("x:80", "invalid host port 'x'"),
]


@pytest.mark.parametrize(("spec", "want"), GOOD)
def test_parse_publish_good(spec: str, want: list[PortMapping]) -> None:
    assert parse_publish(spec) == want


@pytest.mark.parametrize(("spec", "message"), BAD)
def test_parse_publish_bad(spec: str, message: str) -> None:
    with pytest.raises(NetworkError) as e:
        parse_publish(spec)
    assert message in str(e.value)
    assert "\n" not in str(e.value)
    assert e.value.exit_code == 125


def test_publish_twice_and_exposed() -> None:
    with pytest.raises(NetworkError, match="published twice"):
        parse_publish_all(["8080:80", "8080:81"])
    assert len(parse_publish_all(["8080:80", "8080:80/udp", "80"])) == 3
    assert publish_exposed(["80/tcp", "53/udp", "8000-8001"]) == [
        PortMapping(80, "tcp"),
        PortMapping(53, "udp"),
        PortMapping(8000, "tcp"),
        PortMapping(8001, "tcp"),
    ]
    with pytest.raises(NetworkError, match="invalid exposed port"):
        publish_exposed(["80/sctp"])


def test_choose_subnet_avoids_routes_and_networks() -> None:
    net = ipaddress.IPv4Network
    assert ipam.choose_subnet([net("0.0.0.0/0")], default_network=True) == net("10.88.0.0/16")
    assert ipam.choose_subnet([net("10.88.3.0/24")], default_network=True) == net("10.89.0.0/16")
    assert ipam.choose_subnet([]) == net("10.89.0.0/24")
    assert ipam.choose_subnet([net("10.89.0.0/24"), net("10.89.1.5/32")]) == net("10.89.2.0/24")
    with pytest.raises(NetworkError, match="no free subnet"):
        ipam.choose_subnet([net("10.0.0.0/8")])
    taken = [net(f"10.{b}.0.0/16") for b in range(88, 96)] + [net("10.96.0.0/24")]
    assert ipam.choose_subnet(taken, default_network=True) == net("10.96.1.0/24")


def test_parse_subnet_and_allocate() -> None:
    s, gw = ipam.parse_subnet("192.168.77.0/24", None)
    assert str(gw) == "192.168.77.1"
    assert str(ipam.parse_subnet("192.168.77.0/24", "192.168.77.254")[1]) == "192.168.77.254"
    for subnet, gateway, message in [
        ("192.168.77.1/24", None, "has host bits set"),
        ("fd00::/64", None, "only IPv4"),
        ("10.0.0.0/31", None, "too small"),
        ("nonsense", None, "invalid subnet"),
        ("192.168.77.0/24", "10.0.0.1", "not in subnet"),
        ("192.168.77.0/24", "192.168.77.255", "not a usable address"),
        ("192.168.77.0/24", "bad", "invalid gateway"),
    ]:
        with pytest.raises(NetworkError, match=message):
            ipam.parse_subnet(subnet, gateway)
    assert str(ipam.allocate(s, "192.168.77.1", [])) == "192.168.77.2"
    assert str(ipam.allocate(s, "192.168.77.1", ["192.168.77.2", ""])) == "192.168.77.3"
    assert str(ipam.allocate(s, "192.168.77.1", [], "192.168.77.50")) == "192.168.77.50"
    with pytest.raises(NetworkError, match="already in use"):
        ipam.allocate(s, "192.168.77.1", ["192.168.77.50"], "192.168.77.50")
    with pytest.raises(NetworkError, match="already in use"):
        ipam.allocate(s, "192.168.77.1", [], "192.168.77.1")
    with pytest.raises(NetworkError, match="not a usable address"):
        ipam.allocate(s, "192.168.77.1", [], "10.1.1.1")
    tiny, _ = ipam.parse_subnet("10.9.9.0/30", None)
    assert str(ipam.allocate(tiny, "10.9.9.1", [])) == "10.9.9.2"
    with pytest.raises(NetworkError, match="no free address"):
        ipam.allocate(tiny, "10.9.9.1", ["10.9.9.2"])
    assert ipam.mac_for(ipaddress.IPv4Address("10.89.0.2")) == "02:42:0a:59:00:02"


def test_resolv_conf_drops_loopback_servers() -> None:
    from builder.network.resolution import resolv_content as _resolv_content

    host = "search corp.example\nnameserver 127.0.0.53\nnameserver 10.0.0.2\noptions edns0\n"
    assert _resolv_content(False, host) == "search corp.example\nnameserver 10.0.0.2\noptions edns0\n"
    assert _resolv_content(True, host) == host
    only_local = "nameserver 127.0.0.1\n"
    assert _resolv_content(False, only_local) == "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
