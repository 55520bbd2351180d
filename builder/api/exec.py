"""Exec endpoints: ``/containers/{id}/exec`` (create), ``/exec/{id}/start`` (hijacked stream, or
detached), ``/exec/{id}/json`` and ``/exec/{id}/resize``.

The daemon runs an exec'd process itself, through ``builder.runtime.containers.runtime.exec_start`` as
``pybuild exec`` does, each in a thread of its own that lives as long as the process (the exec
helper dies with the thread that forked it). Exec instances are the daemon's session objects,
as in dockerd: they live in memory, a finished one for ``KEEP_FINISHED`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from builder.api.errors import ApiError, bad_request
from builder.api.hijack import MULTIPLEXED_STREAM, RAW_STREAM, hijack
from builder.api.request import find, json_body, qint, state_of
from builder.api.streams import STDERR, STDOUT, frame
from builder.base import events
from builder.base.errors import BuildError

routes = web.RouteTableDef()

KEEP_FINISHED = 300.0


@dataclass
class ExecInstance:
    id: str
    container_id: str
    argv: list[str]
    env: list[str]
    user: str | None
    workdir: str | None
    tty: bool
    privileged: bool
    attach_stdin: bool
    attach_stdout: bool
    attach_stderr: bool
    running: bool = False
    started: bool = False
    exit_code: int | None = None
    pid: int = 0
    finished: float = 0.0
    handle: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def to_json(self) -> dict[str, Any]:
        return {
            "CanRemove": False, "ContainerID": self.container_id, "DetachKeys": "", "ID": self.id,
            "ExitCode": self.exit_code, "OpenStdin": self.attach_stdin, "OpenStdout": self.attach_stdout,
            "OpenStderr": self.attach_stderr, "Running": self.running, "Pid": self.pid,
            "ProcessConfig": {"arguments": self.argv[1:], "entrypoint": self.argv[0],
                              "privileged": self.privileged, "tty": self.tty, "user": self.user or ""},
        }


_EXECS: weakref.WeakKeyDictionary[web.Application, dict[str, ExecInstance]] = weakref.WeakKeyDictionary()


def _table(app: web.Application) -> dict[str, ExecInstance]:
    table = _EXECS.setdefault(app, {})
    now = time.monotonic()
    for k in [k for k, v in table.items() if v.finished and now - v.finished > KEEP_FINISHED]:
        del table[k]
    return table


def ids_of(app: web.Application, cid: str) -> list[str]:
    """The exec instances of a container (``inspect``'s ``ExecIDs``)."""
    return [e.id for e in _table(app).values() if e.container_id == cid and e.running]


def _get(request: web.Request) -> ExecInstance:
    ex = _table(request.app).get(request.match_info["id"])
    if ex is None:
        raise ApiError(404, f"No such exec instance: {request.match_info['id']}")
    return ex


@routes.post("/containers/{id}/exec")
async def create(request: web.Request) -> web.Response:
    body = await json_body(request, required=True)
    c = await find(request)
    if c.state.status != "running":
        raise ApiError(409, f"Container {c.id} is not running")
    if c.state.paused:
        raise ApiError(409, f"Container {c.id} is paused, unpause the container before exec")
    cmd = body.get("Cmd")
    if isinstance(cmd, str):
        cmd = [cmd]
    if not cmd or not isinstance(cmd, list) or not all(isinstance(x, str) for x in cmd):
        raise bad_request("No exec command specified")
    env = body.get("Env") or []
    if not isinstance(env, list) or not all(isinstance(x, str) and "=" in x for x in env):
        raise bad_request("invalid Env: a list of KEY=VALUE strings is expected")
    workdir = body.get("WorkingDir") or None
    if workdir is not None and not str(workdir).startswith("/"):
        raise bad_request(f"the working directory '{workdir}' is invalid, it needs to be an absolute path")
    ex = ExecInstance(
        id=secrets.token_hex(32), container_id=c.id, argv=list(cmd), env=list(env),
        user=body.get("User") or None, workdir=workdir, tty=bool(body.get("Tty")),
        privileged=bool(body.get("Privileged")), attach_stdin=bool(body.get("AttachStdin")),
        attach_stdout=bool(body.get("AttachStdout")), attach_stderr=bool(body.get("AttachStderr")),
    )
    _table(request.app)[ex.id] = ex
    events.emit(state_of(request), "container", f"exec_create: {' '.join(ex.argv)}", c.id,
                {"name": c.name, "image": c.image, "execID": ex.id})
    return web.json_response({"Id": ex.id}, status=201)


@routes.get("/exec/{id}/json")
async def inspect(request: web.Request) -> web.Response:
    return web.json_response(_get(request).to_json())


@routes.post("/exec/{id}/resize")
async def resize(request: web.Request) -> web.Response:
    ex = _get(request)
    h, w = qint(request, "h"), qint(request, "w")
    if h is None or w is None or h < 0 or w < 0:
        raise bad_request("resize needs h and w, non-negative integers")
    if not ex.running or ex.handle is None:
        raise ApiError(409, f"Exec {ex.id} is not running")
    with contextlib.suppress(OSError):
        ex.handle.resize(h, w)
    return web.Response(status=201)


def _run(root: Any, ex: ExecInstance, *, stdin: int | None, out: Any, err: Any,
         started: threading.Event, failure: list[BaseException]) -> None:
    """The exec's thread: start, wait, record the exit code."""
    from builder.runtime.containers import execs

    try:
        try:
            c, process = execs.prepare(root, ex.container_id, ex.argv, env=ex.env, user=ex.user,
                                       workdir=ex.workdir, tty=ex.tty, privileged=ex.privileged,
                                       environ={})
            h = execs.start(root, c, process, stdout=out, stderr=err, stdin=stdin)
        except (BuildError, ApiError) as e:
            ex.exit_code = e.exit_code if isinstance(e, BuildError) else 126
            failure.append(e)
            return
        finally:
            started.set()
        ex.handle, ex.pid, ex.running = h, h.pid, True
        try:
            r = h.wait()
            ex.exit_code = r.exit_status
        except BuildError:
            ex.exit_code = 137
    finally:
        if stdin is not None:
            with contextlib.suppress(OSError):
                os.close(stdin)
        ex.running = False
        ex.finished = time.monotonic()
        started.set()


@routes.post("/exec/{id}/start")
async def start(request: web.Request) -> web.StreamResponse:
    body = await json_body(request)
    ex = _get(request)
    root = state_of(request)
    with ex.lock:
        if ex.started:
            raise ApiError(409, f"Exec {ex.id} has already been started" if not ex.running
                           else f"Exec {ex.id} is already running")
        ex.started = True
    detach = bool(body.get("Detach"))
    if "Tty" in body:
        ex.tty = bool(body.get("Tty")) or ex.tty
    loop = asyncio.get_running_loop()
    started = threading.Event()
    failure: list[BaseException] = []
    c_name = ex.container_id
    if detach:
        # owned by a helper that outlives this request (and the daemon), as `pybuild exec -d`
        from builder.runtime.containers import execs

        def detached() -> None:
            c, process = execs.prepare(root, ex.container_id, ex.argv, env=ex.env, user=ex.user,
                                       workdir=ex.workdir, tty=ex.tty, privileged=ex.privileged,
                                       environ={})
            execs.start_detached(root, c, process)

        await loop.run_in_executor(None, detached)
        ex.exit_code = None
        events.emit(root, "container", f"exec_start: {' '.join(ex.argv)}", c_name, {"execID": ex.id})
        return web.Response(status=200)
    queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()
    gone = False

    def sink(kind: int, wanted: bool) -> Any:
        def put(data: bytes) -> None:
            if wanted and not gone:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, data))
        return put

    stdin_r: int | None = None
    stdin_w: int | None = None
    if ex.attach_stdin:
        stdin_r, stdin_w = os.pipe()
    conn = await hijack(request, content_type=RAW_STREAM if ex.tty else MULTIPLEXED_STREAM)

    def run() -> None:
        try:
            _run(root, ex, stdin=stdin_r, out=sink(STDOUT, ex.attach_stdout),
                 err=sink(STDERR, ex.attach_stderr), started=started, failure=failure)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    t = threading.Thread(target=run, daemon=True, name=f"exec-{ex.id[:12]}")
    t.start()
    events.emit(root, "container", f"exec_start: {' '.join(ex.argv)}", c_name, {"execID": ex.id})

    async def upstream() -> None:
        nonlocal stdin_w
        while True:
            data = await conn.read()
            if not data or stdin_w is None:
                break
            try:
                await loop.run_in_executor(None, _write_all, stdin_w, data)
            except OSError:
                break
        if stdin_w is not None:
            os.close(stdin_w)
            stdin_w = None

    def hang_up() -> None:
        # the client left: as on a terminal hangup, the exec'd process gets SIGHUP
        nonlocal gone
        gone = True
        h = ex.handle
        if h is not None and ex.running:
            with contextlib.suppress(Exception):
                h.kill(signal.SIGHUP)

    up = asyncio.ensure_future(upstream())
    lost = asyncio.ensure_future(conn.wait_closed())
    try:
        while True:
            get = asyncio.ensure_future(queue.get())
            await asyncio.wait([get, lost], return_when=asyncio.FIRST_COMPLETED)
            if not get.done():
                get.cancel()
                hang_up()
                break
            item = get.result()
            if item is None:
                break
            kind, data = item
            if not await conn.write(data if ex.tty else frame(kind, data)):
                hang_up()
                break
        if failure and not gone:
            msg = f"OCI runtime exec failed: {failure[0]}\r\n".encode()
            await conn.write(msg if ex.tty else frame(STDOUT, msg))
    finally:
        gone = True
        for task in (up, lost):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if stdin_w is not None:
            with contextlib.suppress(OSError):
                os.close(stdin_w)
        await conn.close()
    events.emit(root, "container", "exec_die", c_name, {"execID": ex.id, "exitCode": str(ex.exit_code)})
    return conn.response


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
