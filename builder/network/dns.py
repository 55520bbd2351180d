"""The embedded DNS server of a user-defined network (Docker's 127.0.0.11 role), on the gateway.

It answers container names, aliases and short ids (``A``, and ``AAAA`` on an IPv6 network) from the network records as they
are on disk for the networks of the querying container, and forwards anything else upstream.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import signal
import socket
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TTL = 600
QTYPE_A = 1
QTYPE_AAAA = 28
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3
RCODE_FORMERR = 1
UPSTREAM_TIMEOUT = 2.0


@dataclass(frozen=True)
class Question:
    id: int
    flags: int
    name: str  # lower case, no trailing dot
    qtype: int
    qclass: int
    end: int  # offset just past the (first) question


def parse_query(data: bytes) -> Question:
    """The header and first question of a DNS message; ``ValueError`` if malformed."""
    if len(data) < 12:
        raise ValueError("short message")
    qid, flags, qdcount = struct.unpack("!HHH", data[:6])
    if qdcount < 1 or flags & 0x8000:
        raise ValueError("not a query")
    labels, i = [], 12
    while True:
        if i >= len(data):
            raise ValueError("truncated name")
        n = data[i]
        i += 1
        if n == 0:
            break
        if n & 0xC0 or i + n > len(data):
            raise ValueError("bad label")
        labels.append(data[i : i + n].decode("ascii", "replace").lower())
        i += n
    if i + 4 > len(data):
        raise ValueError("truncated question")
    qtype, qclass = struct.unpack("!HH", data[i : i + 4])
    return Question(qid, flags, ".".join(labels), qtype, qclass, i + 4)


def build_response(query: bytes, q: Question, addresses: Sequence[str], rcode: int = 0) -> bytes:
    """A response echoing the question, with one ``A`` (``AAAA``) record per IPv4 (IPv6)
    address (authoritative)."""
    flags = 0x8000 | 0x0400 | (q.flags & 0x0100) | 0x0080 | rcode  # QR AA RD RA
    header = struct.pack("!HHHHHH", q.id, flags, 1, len(addresses), 0, 0)
    out = bytearray(header + query[12 : q.end])
    for a in addresses:
        packed = ipaddress.ip_address(a).packed
        qtype = QTYPE_A if len(packed) == 4 else QTYPE_AAAA
        out += struct.pack("!HHHIH", 0xC00C, qtype, 1, TTL, len(packed)) + packed
    return bytes(out)


def error_response(query: bytes, rcode: int) -> bytes:
    qid = struct.unpack("!H", query[:2])[0] if len(query) >= 2 else 0
    return struct.pack("!HHHHHH", qid, 0x8080 | rcode, 0, 0, 0, 0)


class Names:
    """Name → addresses as seen from one client, read from the network records (cached by mtime)."""

    def __init__(self, networks_dir: Path, network_id: str) -> None:
        self.dir = networks_dir
        self.network_id = network_id
        self._cache: dict[Path, tuple[int, dict[str, Any]]] = {}

    def _records(self) -> list[dict[str, Any]]:
        out = []
        seen = set()
        for p in sorted(self.dir.glob("*.json")):
            seen.add(p)
            try:
                mtime = p.stat().st_mtime_ns
                cached = self._cache.get(p)
                if cached is None or cached[0] != mtime:
                    cached = (mtime, json.loads(p.read_text()))
                    self._cache[p] = cached
                out.append(cached[1])
            except (OSError, ValueError):
                continue
        for gone in set(self._cache) - seen:
            del self._cache[gone]
        return out

    def upstreams(self, client_ip: str) -> list[str]:
        """The client container's own ``--dns`` servers (Docker: its external DNS), if any."""
        for r in self._records():
            if r.get("Id") != self.network_id:
                continue
            for ep in (r.get("Containers") or {}).values():
                if str(ep.get("IPv4Address", "")).partition("/")[0] == client_ip:
                    return [str(x) for x in ep.get("DnsServers") or ()]
        return []

    def lookup(self, client_ip: str, name: str, *, v6: bool = False) -> list[str] | None:
        """Addresses for *name* on the client's user-defined networks (its IPv6 ones with
        *v6*: none for a name on a network without IPv6); None if the name is unknown."""
        records = [r for r in self._records() if r.get("Driver") in ("bridge", "overlay") and r.get("Name") != "bridge"]
        client = None
        for r in records:
            for cid, ep in (r.get("Containers") or {}).items():
                if str(ep.get("IPv4Address", "")).partition("/")[0] == client_ip:
                    client = cid
        scope = [r for r in records if client in (r.get("Containers") or {})] if client else []
        if not scope:
            scope = [r for r in records if r.get("Id") == self.network_id]
        links = self._links(client) if client else {}
        found: list[str] = []
        known = False
        for r in scope:
            net_name = str(r.get("Name", "")).lower()
            wanted = {name}  # the client's legacy link aliases on this network: their targets
            for link in links.get(str(r.get("Name", "")), ()):
                target, _, alias = link.lower().partition(":")
                if name in (alias or target, f"{alias or target}.{net_name}"):
                    wanted.add(target.lstrip("/"))
            # an overlay network's endpoints on other hosts too (the agent keeps them)
            for cid, ep in {**(r.get("RemoteContainers") or {}), **(r.get("Containers") or {})}.items():
                ip = str(ep.get("IPv4Address", "")).partition("/")[0]
                if not ip:
                    continue
                # as dockerd 20.10: the name, the aliases, the short id and the hostname given
                names = {str(n).lower() for n in (ep.get("Name"), *(ep.get("Aliases") or ()),
                                                  ep.get("Hostname")) if n}
                names.add(cid[:12])
                names |= {f"{n}.{net_name}" for n in list(names)}
                if not names & wanted:
                    continue
                known = True
                addr = str(ep.get("IPv6Address", "")).partition("/")[0] if v6 else ip
                if addr and addr not in found:
                    found.append(addr)
        return found if known else None


    def _links(self, cid: str) -> dict[str, list[str]]:
        """network name -> the ``target:alias`` legacy links its endpoint was given (the
        container's record beside the network records: ``NetworkingConfig`` or connect)."""
        try:
            rec = json.loads((self.dir.parent / "containers" / cid / "container.json").read_bytes())
        except (OSError, ValueError):
            return {}
        return {str(n): [str(x) for x in (conf or {}).get("Links") or ()]
                for n, conf in (rec.get("Networks") or {}).items()}


class Server:
    def __init__(self, names: Names, upstreams: Sequence[str]) -> None:
        self.names = names
        self.upstreams = list(upstreams)

    async def answer(self, data: bytes, client_ip: str) -> bytes | None:
        try:
            q = parse_query(data)
        except ValueError:
            return error_response(data, RCODE_FORMERR) if len(data) >= 12 else None
        if q.qclass == 1 and q.qtype in (QTYPE_A, QTYPE_AAAA):
            found = self.names.lookup(client_ip, q.name, v6=q.qtype == QTYPE_AAAA)
            if found is not None:
                # a known container name: its addresses of the family asked (none: an empty,
                # final answer)
                return build_response(data, q, found)
        return await self.forward(data, self.names.upstreams(client_ip) or self.upstreams)

    async def forward(self, data: bytes, upstreams: Sequence[str] | None = None) -> bytes:
        loop = asyncio.get_running_loop()
        for upstream in self.upstreams if upstreams is None else upstreams:
            fut: asyncio.Future[bytes] = loop.create_future()
            try:
                host, _, port = upstream.partition("#")  # "ip" or "ip#port"
                transport, _ = await loop.create_datagram_endpoint(
                    lambda f=fut: _Reply(f), remote_addr=(host, int(port or 53))  # type: ignore[misc]
                )
            except OSError:
                continue
            try:
                transport.sendto(data)
                return await asyncio.wait_for(fut, UPSTREAM_TIMEOUT)
            except (OSError, TimeoutError):
                continue
            finally:
                transport.close()
        return error_response(data, RCODE_SERVFAIL)


class _Reply(asyncio.DatagramProtocol):
    def __init__(self, fut: asyncio.Future[bytes]) -> None:
        self.fut = fut

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.fut.done():
            self.fut.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.fut.done():
            self.fut.set_exception(exc)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        asyncio.get_running_loop().create_task(self._reply(data, addr))

    async def _reply(self, data: bytes, addr: tuple[str, int]) -> None:
        out = await self.server.answer(data, addr[0])
        if out is not None:
            self.transport.sendto(out, addr)


async def _serve(server: Server, udp: socket.socket, tcp: socket.socket | None) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: _Udp(server), sock=udp)

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = struct.unpack("!H", await r.readexactly(2))[0]
                out = await server.answer(await r.readexactly(size), w.get_extra_info("peername")[0])
                if out is None:
                    break
                w.write(struct.pack("!H", len(out)) + out)
                await w.drain()
        except (asyncio.IncompleteReadError, OSError):
            pass
        w.close()

    if tcp is not None:
        srv = await asyncio.start_server(handle, sock=tcp)
        await srv.serve_forever()
    else:
        await asyncio.Event().wait()


def main(argv: list[str]) -> int:
    """``python -m builder.network.dns NETWORKS_DIR NETWORK_ID UDP_FD TCP_FD [UPSTREAM...]``."""
    if len(argv) < 4:
        print(main.__doc__, file=sys.stderr)
        return 2
    networks_dir, network_id, udp_fd, tcp_fd, *upstreams = argv
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, fileno=int(udp_fd))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM, fileno=int(tcp_fd)) if int(tcp_fd) >= 0 else None
    for s in (udp, tcp):
        if s is not None:
            s.setblocking(False)
    server = Server(Names(Path(networks_dir), network_id), upstreams)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        asyncio.run(_serve(server, udp, tcp))
    except (KeyboardInterrupt, SystemExit):
        pass
    return 0


def upstream_servers(resolv_conf: str = "/etc/resolv.conf") -> list[str]:
    """The host's IPv4 nameservers (loopback ones too: this server runs on the host)."""
    out: list[str] = []
    try:
        text = Path(resolv_conf).read_text()
    except OSError:
        return out
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 2 and f[0] == "nameserver":
            try:
                if ipaddress.ip_address(f[1]).version == 4:
                    out.append(f[1])
            except ValueError:
                continue
    return out


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
