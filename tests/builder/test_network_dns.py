"""The embedded DNS server in-process: message parsing, names scoped to the client's networks,
forwarding to an upstream (a real UDP server on loopback), malformed queries."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
from pathlib import Path

import pytest

from builder.network import dns


def query(name: str, qtype: int = dns.QTYPE_A, qid: int = 0x1234) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", qtype, 1)


def answers(resp: bytes) -> tuple[int, list[str]]:
    _qid, flags, qd, an = struct.unpack("!HHHH", resp[:8])
    if not qd:
        return flags & 0xF, []
    i = 12
    while resp[i]:
        i += resp[i] + 1
    i += 5
    out = []
    for _ in range(an):
        rtype, _cls, _ttl, rdlen = struct.unpack("!HHIH", resp[i + 2 : i + 12])
        if rtype == dns.QTYPE_A:
            out.append(socket.inet_ntoa(resp[i + 12 : i + 12 + rdlen]))
        i += 12 + rdlen
    return flags & 0xF, out


def record(nid: str, name: str, eps: dict[str, tuple[str, str, list[str]]], driver: str = "bridge") -> dict[str, object]:
    return {
        "Id": nid, "Name": name, "Driver": driver,
        "Containers": {
            cid: {"Name": n, "IPv4Address": f"{ip}/24", "Aliases": al} for cid, (n, ip, al) in eps.items()
        },
    }


@pytest.fixture
def networks(tmp_path: Path) -> Path:
    d = tmp_path / "networks"
    d.mkdir()
    front = record("f" * 64, "front", {"a" * 64: ("web", "10.1.0.2", ["www"]), "b" * 64: ("app", "10.1.0.3", [])})
    back = record("e" * 64, "back", {"b" * 64: ("app", "10.2.0.3", []), "c" * 64: ("db", "10.2.0.4", ["www"])})
    default = record("d" * 64, "bridge", {"9" * 64: ("lonely", "10.3.0.2", [])})
    for r in (front, back, default):
        (d / f"{r['Id']}.json").write_text(json.dumps(r))
    return d


def test_names_scoped_to_the_clients_networks(networks: Path) -> None:
    names = dns.Names(networks, "f" * 64)
    assert names.lookup("10.1.0.2", "app") == ["10.1.0.3"]  # only its address on front
    assert names.lookup("10.1.0.2", "db") is None  # web is not on back
    assert names.lookup("10.1.0.3", "db") == ["10.2.0.4"]  # app is on both
    assert sorted(names.lookup("10.1.0.3", "www") or []) == ["10.1.0.2", "10.2.0.4"]  # an alias on two nets
    assert names.lookup("10.1.0.3", "db.back") == ["10.2.0.4"]
    assert names.lookup("10.1.0.3", "db.front") is None
    assert names.lookup("10.1.0.3", "c" * 12) == ["10.2.0.4"]
    assert names.lookup("10.1.0.2", "lonely") is None  # the default bridge has no names
    assert names.lookup("192.0.2.99", "web") == ["10.1.0.2"]  # unknown client: this network
    # records are re-read when they change
    rec = json.loads((networks / f"{'f' * 64}.json").read_text())
    rec["Containers"]["a" * 64]["IPv4Address"] = "10.1.0.9/24"
    (networks / f"{'f' * 64}.json").write_text(json.dumps(rec))
    assert names.lookup("10.1.0.3", "web") == ["10.1.0.9"]


def test_server_answers_forwards_and_refuses(networks: Path) -> None:
    upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    upstream.bind(("127.0.0.1", 0))
    port = upstream.getsockname()[1]

    def serve() -> None:
        data, addr = upstream.recvfrom(512)
        q = dns.parse_query(data)
        upstream.sendto(dns.build_response(data, q, ["192.0.2.7"]), addr)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    server = dns.Server(dns.Names(networks, "f" * 64), [f"127.0.0.1#{port}"])

    async def ask(data: bytes, client: str = "10.1.0.2") -> bytes | None:
        return await server.answer(data, client)

    resp = asyncio.run(ask(query("WWW")))
    assert resp is not None and resp[:2] == b"\x12\x34"
    assert answers(resp) == (0, ["10.1.0.2"])
    resp = asyncio.run(ask(query("www", dns.QTYPE_AAAA)))
    assert resp is not None and answers(resp) == (0, [])  # known name, no IPv6: empty answer
    resp = asyncio.run(ask(query("example.org")))  # forwarded
    assert resp is not None and answers(resp) == (0, ["192.0.2.7"])
    t.join(5)
    upstream.close()
    dead = dns.Server(dns.Names(networks, "f" * 64), [])
    resp = asyncio.run(dead.answer(query("example.org"), "10.1.0.2"))
    assert resp is not None and answers(resp)[0] == dns.RCODE_SERVFAIL
    assert asyncio.run(ask(b"\x00\x01")) is None  # too short to answer
    bad = asyncio.run(ask(query("x")[:12] + b"\x05ab"))
    assert bad is not None and struct.unpack("!H", bad[2:4])[0] & 0xF == dns.RCODE_FORMERR


def test_parse_query_rejects_malformed() -> None:
    assert dns.parse_query(query("a.b.c")).name == "a.b.c"
    for bad in (b"", query("x")[:13], query("x")[:-2], b"\x00" * 4 + b"\x00\x00" + b"\x00" * 6,
                query("x").replace(b"\x01\x00", b"\x81\x00", 1)):
        with pytest.raises(ValueError):
            dns.parse_query(bad)


def test_upstream_servers_from_resolv_conf(tmp_path: Path) -> None:
    rc = tmp_path / "resolv.conf"
    rc.write_text("search example.org\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 10.0.0.1\n")
    assert dns.upstream_servers(str(rc)) == ["127.0.0.53", "10.0.0.1"]
    assert dns.upstream_servers(str(tmp_path / "missing")) == []
