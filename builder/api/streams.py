"""Streamed answers: newline-delimited JSON progress (pull, push, build, load, events) and
Docker's multiplexed stdout/stderr frames (logs, attach, exec).

A blocking library call runs in the thread pool and reports through a callback; ``pump`` carries
its messages over to the event loop and writes them while the call runs. A client that goes away
mid-stream only stops the writing: the call finishes (so the store is never left half-done) and
the daemon keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")

#: stream numbers of the multiplexed format
STDIN, STDOUT, STDERR, SYSTEM = 0, 1, 2, 3


def frame(stream: int, data: bytes) -> bytes:
    """One multiplexed frame: ``[stream, 0, 0, 0, len(4 bytes, big-endian)]`` then *data*."""
    return struct.pack(">BxxxL", stream, len(data)) + data


def error_message(message: str) -> dict[str, Any]:
    """Docker's in-stream error object (the status line is already sent)."""
    return {"errorDetail": {"message": message}, "error": message}


class JsonStream:
    """A ``200`` answer of JSON objects, one per line, written as they come."""

    def __init__(self, request: web.Request, *, content_type: str = "application/json") -> None:
        self.request = request
        self.response = web.StreamResponse(status=200)
        self.response.content_type = content_type
        self.closed = False  # the client went away: writes are dropped from then on

    async def prepare(self) -> JsonStream:
        self.response.enable_chunked_encoding()
        await self.response.prepare(self.request)
        return self

    @property
    def started(self) -> bool:
        """Whether the status line went out (an error must then travel in the stream)."""
        return self.response.prepared

    async def send(self, obj: dict[str, Any]) -> None:
        """Write one object; the answer starts (200) with the first one."""
        if self.closed:
            return
        try:
            if not self.response.prepared:
                await self.prepare()
            await self.response.write(json.dumps(obj).encode() + b"\r\n")
        except (ConnectionResetError, ConnectionError, RuntimeError):
            self.closed = True

    async def finish(self) -> web.StreamResponse:
        if not self.closed:
            try:
                if not self.response.prepared:
                    await self.prepare()
                await self.response.write_eof()
            except (ConnectionResetError, ConnectionError, RuntimeError):
                self.closed = True
        return self.response


async def in_thread(func: Callable[..., T], *args: Any) -> T:
    """Run a blocking library call in the daemon's thread pool."""
    return await asyncio.get_running_loop().run_in_executor(None, func, *args)


async def pump(stream: JsonStream, work: Callable[[Callable[[dict[str, Any]], None]], T]) -> T:
    """Run ``work(emit)`` in the thread pool, writing every ``emit(obj)`` to *stream* as it comes.

    Returns what *work* returns; its exception is raised after every message before it is sent.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    def emit(obj: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, obj)

    def run() -> T:
        try:
            return work(emit)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    fut = loop.run_in_executor(None, run)
    while True:
        obj = await queue.get()
        if obj is None:
            break
        await stream.send(obj)
    return await fut


class SyncReader:
    """A blocking file-like view of a request body, for a library call in the thread pool."""

    def __init__(self, request: web.Request, loop: asyncio.AbstractEventLoop) -> None:
        self._content = request.content
        self._loop = loop

    def read(self, n: int = -1) -> bytes:
        size = n if n is not None and n >= 0 else 1 << 20
        fut = asyncio.run_coroutine_threadsafe(self._read(size, whole=n is None or n < 0),
                                               self._loop)
        return fut.result()

    async def _read(self, n: int, *, whole: bool) -> bytes:
        if whole:
            return await self._content.read()
        # readexactly-like, but a short body ends with what there is (EOF)
        chunks = []
        while n > 0:
            data = await self._content.read(n)
            if not data:
                break
            chunks.append(data)
            n -= len(data)
        return b"".join(chunks)

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True


class SyncWriter:
    """A blocking file-like writer onto a prepared ``StreamResponse`` (with back-pressure: a
    write returns once the event loop took it). A gone client raises ``ConnectionResetError``
    in the writing thread, which stops the library call."""

    def __init__(self, response: web.StreamResponse, loop: asyncio.AbstractEventLoop) -> None:
        self._response = response
        self._loop = loop

    def write(self, data: bytes | bytearray | memoryview) -> int:
        chunk = bytes(data)
        if chunk:
            asyncio.run_coroutine_threadsafe(self._response.write(chunk), self._loop).result()
        return len(chunk)

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True
