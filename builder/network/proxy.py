"""The userland port proxy (docker-proxy's role): relays host ip:port to a container ip:port.

Run detached as ``python -m builder.network.proxy FD/PROTO/IP/PORT...`` with the already-bound
listening sockets inherited as file descriptors, so "port in use" is found before it starts.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys

UDP_IDLE = 90.0


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()


async def _serve_tcp(sock: socket.socket, host: str, port: int) -> None:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection(host, port)
        except OSError:
            w.close()
            return
        await asyncio.gather(_pipe(r, uw), _pipe(ur, w))
        uw.close()
        w.close()

    server = await asyncio.start_server(handle, sock=sock)
    await server.serve_forever()


class _UdpFront(asyncio.DatagramProtocol):
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.transport: asyncio.DatagramTransport | None = None
        self.peers: dict[tuple[str, int], asyncio.DatagramTransport] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram transport here

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        back = self.peers.get(addr)
        if back is not None:
            back.sendto(data)
            return
        asyncio.get_running_loop().create_task(self._open(data, addr))

    async def _open(self, data: bytes, addr: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        front = self

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, reply: bytes, _a: tuple[str, int]) -> None:
                if front.transport is not None:
                    front.transport.sendto(reply, addr)
                timer[0].cancel()
                timer[0] = loop.call_later(UDP_IDLE, close)

        def close() -> None:
            t = front.peers.pop(addr, None)
            if t is not None:
                t.close()

        timer = [loop.call_later(UDP_IDLE, close)]
        transport, _ = await loop.create_datagram_endpoint(Back, remote_addr=self.target)
        self.peers[addr] = transport
        transport.sendto(data)


async def _serve_udp(sock: socket.socket, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: _UdpFront((host, port)), sock=sock)
    await asyncio.Event().wait()


async def _main(specs: list[str]) -> None:
    tasks = []
    for spec in specs:
        fd_s, proto, host, port_s = spec.split("/")
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        sock = socket.socket(socket.AF_INET, kind, fileno=int(fd_s))
        sock.setblocking(False)
        serve = _serve_tcp if proto == "tcp" else _serve_udp
        tasks.append(asyncio.create_task(serve(sock, host, int(port_s))))
    await asyncio.gather(*tasks)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m builder.network.proxy [--id CONTAINER] FD/PROTO/IP/PORT...", file=sys.stderr)
        return 2
    if argv[0] == "--id":  # the container id, only so that `ps` and cleanup can recognise us
        argv = argv[2:]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        asyncio.run(_main(argv))
    except (KeyboardInterrupt, SystemExit):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
