"""``/containers/{id}/attach`` (hijacked) and ``/containers/{id}/resize``: the client's raw stream
joined to the container's supervisor through its attach socket (``builder.runtime.containers.attach``).

An attach made before ``start`` (what ``docker run`` does) is counted here until it reaches the
supervisor; ``start`` passes that count on, and the container's first run waits for those
clients, so none of its output is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from builder.api.errors import ApiError, bad_request
from builder.api.hijack import MULTIPLEXED_STREAM, RAW_STREAM, Hijacked, hijack
from builder.api.request import find, qbool, qint, state_of
from builder.api.streams import STDERR, STDOUT, frame, in_thread
from builder.runtime.containers import attach as lib
from builder.runtime.containers.logfile import read_logs

if TYPE_CHECKING:
    from builder.base.state import StateRoot
    from builder.runtime.containers.record import Container

routes = web.RouteTableDef()

#: app -> container id -> attaches waiting for the container to start
_PENDING: weakref.WeakKeyDictionary[web.Application, dict[str, int]] = weakref.WeakKeyDictionary()
#: how often a waiting attach looks for the supervisor's socket
POLL = 0.02
#: how long an attach to a running container waits for its socket to answer
RUNNING_GRACE = 3.0


def pending(app: web.Application, cid: str) -> int:
    """How many attaches wait for *cid* to start (``start`` makes the supervisor wait for them)."""
    return _PENDING.get(app, {}).get(cid, 0)


def socket_path(root: StateRoot, cid: str) -> object:
    from builder.runtime.containers.record import ContainerStore

    return ContainerStore(root).dir(cid) / lib.SOCKET_NAME


async def _connect(request: web.Request, c: Container, conn: Hijacked) -> socket.socket | None:
    """The supervisor's attach socket once the container runs; None if the client left first
    (or a running container has no socket: started in the foreground by ``pybuild run``)."""
    path = Path(str(socket_path(state_of(request), c.id)))
    table = _PENDING.setdefault(request.app, {})
    table[c.id] = table.get(c.id, 0) + 1
    registered = True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RUNNING_GRACE if c.state.running else None
    try:
        while True:
            try:
                return lib.connect(path)
            except (FileNotFoundError, ConnectionRefusedError):
                pass
            if conn.closed:
                return None
            if deadline is not None and loop.time() > deadline:
                return None
            await asyncio.sleep(POLL)
    finally:
        if registered:
            table[c.id] -= 1
            if not table[c.id]:
                del table[c.id]




async def join(conn: Hijacked, sock: socket.socket, *, stdin: bool, stdout: bool, stderr: bool,
               tty: bool, detach_keys: bytes | None = None) -> None:
    """Carry bytes both ways until the run ends, the client leaves or types *detach_keys*
    (dockerd applies them to a terminal's input only)."""
    escape = lib.EscapeFilter(detach_keys) if detach_keys and tty and stdin else None
    detached = asyncio.Event()
    sock.setblocking(False)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    writer.write(lib.frame(lib.HELLO, json.dumps({"stdin": stdin, "stdout": stdout,
                                                  "stderr": stderr}).encode()))

    async def upstream() -> None:
        while True:
            data = await conn.read()
            if not data:
                if not conn.closed:
                    writer.write(lib.frame(lib.CLOSE_STDIN))
                    await writer.drain()
                return
            if escape is not None:
                data, detach = escape.feed(data)
                if data:
                    writer.write(lib.frame(lib.STDIN, data))
                    await writer.drain()
                if detach:
                    detached.set()
                    return
            elif stdin:
                writer.write(lib.frame(lib.STDIN, data))
                await writer.drain()

    async def downstream() -> None:
        while True:
            try:
                head = await reader.readexactly(5)
                kind, size = int(head[0]), int.from_bytes(head[1:], "big")
                payload = await reader.readexactly(size) if size else b""
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            out = payload if tty else frame(STDERR if kind == lib.STDERR else STDOUT, payload)
            if not await conn.write(out):
                return

    up = asyncio.ensure_future(upstream())
    down = asyncio.ensure_future(downstream())
    lost = asyncio.ensure_future(conn.wait_closed())
    gone = asyncio.ensure_future(detached.wait())
    try:
        await asyncio.wait([down, lost, gone], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (up, down, lost, gone):
            t.cancel()
        for t in (up, down, lost, gone):
            with contextlib.suppress(BaseException):
                await t
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


@routes.post("/containers/{id}/attach")
async def attach(request: web.Request) -> web.StreamResponse:
    c = await find(request)
    want_in, want_out, want_err = qbool(request, "stdin"), qbool(request, "stdout"), qbool(request, "stderr")
    stream, logs = qbool(request, "stream"), qbool(request, "logs")
    if not (stream or logs):
        raise bad_request("Bad parameters: you must choose at least one of stream or logs")
    tty = bool(c.config.tty)
    keys = lib.DEFAULT_DETACH_KEYS
    if request.query.get("detachKeys"):
        try:
            keys = lib.parse_detach_keys(request.query["detachKeys"])
        except ValueError as e:
            raise bad_request(f"Invalid detach keys ({request.query['detachKeys']}) provided: {e}") from None
    conn = await hijack(request, content_type=RAW_STREAM if tty else MULTIPLEXED_STREAM)
    try:
        if logs:
            await _replay_logs(state_of(request), c, conn, stdout=want_out, stderr=want_err, tty=tty)
        if stream:
            sock = await _connect(request, c, conn)
            if sock is not None:
                await join(conn, sock, stdin=want_in, stdout=want_out, stderr=want_err, tty=tty,
                           detach_keys=keys)
    finally:
        await conn.close()
    return conn.response


async def _replay_logs(root: StateRoot, c: Container, conn: Hijacked, *, stdout: bool, stderr: bool,
                       tty: bool) -> None:
    from builder.runtime.containers.record import ContainerStore

    entries = await in_thread(lambda: list(read_logs(ContainerStore(root).log_path(c.id))))
    for e in entries:
        err = e.stream == "stderr"
        if (err and not stderr) or (not err and not stdout):
            continue
        if not await conn.write(e.data if tty else frame(STDERR if err else STDOUT, e.data)):
            return


@routes.post("/containers/{id}/resize")
async def resize(request: web.Request) -> web.Response:
    c = await find(request)
    h, w = qint(request, "h"), qint(request, "w")
    if h is None or w is None or h < 0 or w < 0:
        raise bad_request("resize needs h and w, non-negative integers")
    if not c.state.running:
        raise ApiError(409, f"Container {c.id} is not running")

    path = Path(str(socket_path(state_of(request), c.id)))

    def send() -> None:
        try:
            s = lib.connect(path)
        except OSError:
            raise ApiError(409, f"cannot resize container {c.id}: no terminal of ours to resize") from None
        with s:
            s.sendall(lib.frame(lib.HELLO, b'{"control": true, "stdout": false, "stderr": false}')
                      + lib.frame(lib.RESIZE, f"{h} {w}".encode()))

    await in_thread(send)
    return web.Response(status=200)
