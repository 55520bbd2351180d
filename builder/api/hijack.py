"""Docker's hijacked connections: ``Connection: Upgrade`` + ``Upgrade: tcp`` answered ``101
Switching Protocols``, after which the HTTP connection is a raw two-way byte stream (attach, exec).

``hijack(request)`` sends the 101 (or a plain ``200`` raw stream to a client that did not ask
to upgrade) and takes the connection away from aiohttp's HTTP protocol: the returned ``Hijacked``
reads what the client sends (a half-close is an EOF on reading only, as the Docker CLI does
once its stdin ends) and writes output until ``close()``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import web

RAW_STREAM = "application/vnd.docker.raw-stream"
MULTIPLEXED_STREAM = "application/vnd.docker.multiplexed-stream"


def wants_upgrade(request: web.Request) -> bool:
    return ("upgrade" in request.headers.get("Connection", "").lower()
            and request.headers.get("Upgrade", "").lower() == "tcp")


class _RawProtocol(asyncio.Protocol):
    """The protocol of a hijacked connection: incoming bytes into a queue, flow control out."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.lost = asyncio.Event()
        self._can_write = asyncio.Event()
        self._can_write.set()

    def data_received(self, data: bytes) -> None:
        self.queue.put_nowait(data)

    def eof_received(self) -> bool:
        self.queue.put_nowait(None)
        return True  # a half-close: keep writing to the client

    def connection_lost(self, exc: BaseException | None) -> None:
        self.queue.put_nowait(None)
        self.lost.set()
        self._can_write.set()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()


class Hijacked:
    def __init__(self, transport: asyncio.Transport, protocol: _RawProtocol, *, chunked: bool,
                 response: web.StreamResponse) -> None:
        self.transport = transport
        self.protocol = protocol
        self.response = response
        self._chunked = chunked
        self._eof = False

    @property
    def closed(self) -> bool:
        return self.protocol.lost.is_set() or self.transport.is_closing()

    async def read(self) -> bytes:
        """The next bytes from the client; ``b""`` once it closed its side (or left)."""
        if self._eof:
            return b""
        data = await self.protocol.queue.get()
        if data is None:
            self._eof = True
            return b""
        return data

    async def write(self, data: bytes) -> bool:
        """Send *data*; False if the client is gone."""
        if not data:
            return not self.closed
        if self.closed:
            return False
        if self._chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        self.transport.write(data)
        await self.protocol._can_write.wait()
        return not self.closed

    async def close(self) -> None:
        if self.closed:
            return
        if self._chunked:
            self.transport.write(b"0\r\n\r\n")
        with contextlib.suppress(Exception):
            if self.transport.can_write_eof():
                self.transport.write_eof()
        self.transport.close()

    async def wait_closed(self) -> None:
        await self.protocol.lost.wait()


async def hijack(request: web.Request, *, content_type: str = RAW_STREAM) -> Hijacked:
    """Answer 101 (or 200 without an upgrade request) and take over the connection."""
    upgrade = wants_upgrade(request)
    headers = {"Content-Type": content_type}
    if upgrade:
        headers.update({"Connection": "Upgrade", "Upgrade": "tcp"})
    resp = web.StreamResponse(status=101 if upgrade else 200, headers=headers)
    # no keep-alive: once the handler returns aiohttp closes the connection for good
    resp.force_close()
    if not upgrade:
        resp.enable_chunked_encoding()
    await resp.prepare(request)
    transport = request.transport
    assert transport is not None
    old: Any = request.protocol
    raw = _RawProtocol()
    # bytes the client sent right after the headers are held by aiohttp's protocol
    tail = bytes(getattr(old, "_message_tail", b"") or b"")
    if tail:
        with contextlib.suppress(AttributeError):
            old._message_tail = b""
        raw.data_received(tail)
    transport.set_protocol(raw)
    if not upgrade:
        # aiohttp already wrote the status line and headers; the body is ours, chunked
        return Hijacked(transport, raw, chunked=True, response=resp)
    return Hijacked(transport, raw, chunked=False, response=resp)
