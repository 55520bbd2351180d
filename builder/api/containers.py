"""Container endpoints: ``/containers/json``, ``create``, ``{id}/start|stop|restart|kill|wait|
rename|pause|unpause``, ``{id}/json``, ``{id}/logs``, ``{id}/top``, ``DELETE``, ``prune``, resize.

Each handler is a thin shell over ``builder.runtime.containers`` (the calls ``pybuild`` makes, on the same
state root); attach and exec live in ``attach`` and ``exec``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from builder.api import attach
from builder.api import exec as _exec
from builder.api.createbody import (
    amendments,
    check_links,
    host_config,
    run_options,
    volumes_from,
)
from builder.api.errors import ApiError, bad_request
from builder.api.networks import endpoint_given, keep_endpoint_given
from builder.api.request import (
    filter_specs,
    find,
    json_body,
    parse_filters,
    qbool,
    qint,
    state_of,
)
from builder.api.streams import STDERR, STDOUT, frame, in_thread
from builder.base import events
from builder.base.errors import ContainerError
from builder.base.values import replace
from builder.runtime.containers.logfile import NO_READING, LogDriver
from builder.runtime.containers.options import parse_signal

if TYPE_CHECKING:
    from builder.base.state import StateRoot
    from builder.runtime.containers.record import Container

routes = web.RouteTableDef()

#: how often a followed log or a wait looks at the container again
POLL = 0.05


# -- list / inspect ----------------------------------------------------------------------------
@routes.get("/containers/json")
async def list_containers(request: web.Request) -> web.Response:
    from builder.runtime.containers import lifecycle

    root = state_of(request)
    filters = parse_filters(request.query.get("filters"))
    show_all = qbool(request, "all")
    limit = qint(request, "limit")
    size = qbool(request, "size")

    def work() -> list[dict[str, Any]]:
        from builder.runtime.containers.inspect import summary

        flt = lifecycle.Filters.parse(filter_specs(filters))
        found = lifecycle.list_containers(root, all=show_all or (limit is not None and limit > 0),
                                          filters=flt)
        if limit is not None and limit > 0:
            found = found[:limit]
        table = lifecycle.network_endpoints(root)
        return [summary(root, c, table=table, size=size) for c in found]

    return web.json_response(await in_thread(work))


def inspect(root: StateRoot, c: Container, *, size: bool = False) -> dict[str, Any]:
    from builder.runtime.containers.inspect import inspect_container

    return inspect_container(root, c, size=size)


@routes.get("/containers/{id}/json")
async def inspect_container(request: web.Request) -> web.Response:
    c = await find(request)
    body = await in_thread(lambda: inspect(state_of(request), c, size=qbool(request, "size")))
    ids = _exec.ids_of(request.app, c.id)
    body["ExecIDs"] = ids or None
    return web.json_response(body)


# -- create ------------------------------------------------------------------------------------
@routes.post("/containers/create")
async def create(request: web.Request) -> web.Response:
    from builder.runtime.containers import service

    root = state_of(request)
    body = await json_body(request, required=True)
    name = request.query.get("name") or None
    o = run_options(body, name)
    amend = amendments(body)
    lc = (body.get("HostConfig") or {}).get("LogConfig") or {}
    try:
        LogDriver.check(lc.get("Type") or None, lc.get("Config"))
    except ContainerError as e:
        raise bad_request(str(e)) from None

    def work() -> Container:
        extra = volumes_from(root, (body.get("HostConfig") or {}).get("VolumesFrom"))
        host = host_config(body, extra)
        check_links(root, host)
        c = service.create(root, o, host=host, amend=amend)
        _keep_endpoint_links(root, c, body)
        return c

    c = await in_thread(work)
    return web.json_response({"Id": c.id, "Warnings": []}, status=201)


def _keep_endpoint_links(root: Any, c: Container, body: dict[str, Any]) -> None:
    """Legacy links given in the ``NetworkingConfig`` endpoint of a user-defined network
    (compose's ``links:``): kept for inspect, and their aliases resolve for this container
    only (the embedded DNS reads them), as dockerd."""
    from builder.runtime.containers.recordparts import JoinedNetwork
    primary = c.host_config.network
    conf = ((body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}).get(primary) or {}
    if conf.get("Links") and primary not in ("bridge", "default", "host", "none"):
        keep_endpoint_given(root, c.id, primary, JoinedNetwork(links=endpoint_given(conf).links))


# -- start / stop / restart / kill --------------------------------------------------------------
@routes.post("/containers/{id}/start")
async def start(request: web.Request) -> web.Response:
    from builder.runtime.containers import service

    root = state_of(request)
    c = await find(request)
    if c.state.running:
        return web.Response(status=304)
    lc = c.host_config.log_config
    try:
        LogDriver.parse(lc.type if lc else None, dict(lc.config) if lc else None)
    except ContainerError as e:  # dockerd: 500 at start for a bad max-size/max-file
        raise ApiError(500, str(e)) from None
    waiting = attach.pending(request.app, c.id)
    c = await in_thread(lambda: service.start(root, c.id, attach_wait=waiting))
    return web.Response(status=204)


@routes.post("/containers/{id}/stop")
async def stop(request: web.Request) -> web.Response:
    from builder.runtime.containers import lifecycle

    root = state_of(request)
    c = await find(request)
    if not c.state.running:
        return web.Response(status=304)
    timeout = qint(request, "t")
    sig = request.query.get("signal") or None
    await in_thread(lambda: lifecycle.stop(root, c.id, timeout=timeout, sig=sig))
    return web.Response(status=204)


@routes.post("/containers/{id}/restart")
async def restart(request: web.Request) -> web.Response:
    from builder.runtime.containers import lifecycle, service

    root = state_of(request)
    c = await find(request)
    timeout = qint(request, "t")
    sig = request.query.get("signal") or None
    if c.state.running:
        c = await in_thread(lambda: lifecycle.stop(root, c.id, timeout=timeout, sig=sig))
    c = await in_thread(lambda: service.start(root, c.id))
    lifecycle.emit(root, c, "restart")
    return web.Response(status=204)


@routes.post("/containers/{id}/kill")
async def kill(request: web.Request) -> web.Response:
    from builder.runtime.containers import lifecycle
    root = state_of(request)
    sig = request.query.get("signal") or "KILL"
    try:
        parse_signal(sig)
    except ContainerError as e:
        raise bad_request(str(e)) from None
    c = await find(request)
    if not c.state.running:
        raise ApiError(409, f"Cannot kill container: {request.match_info['id']}: "
                            f"container {c.id} is not running")
    await in_thread(lambda: lifecycle.kill(root, c.id, sig))
    if parse_signal(sig) == signal.SIGKILL:
        # dockerd answers a KILL once the container is dead: inspect then shows it exited
        # (137) and a DELETE does not meet a running container
        await in_thread(_until_stopped, root, c.id, KILL_WAIT)
    return web.Response(status=204)


#: how long ``POST /kill`` waits for a KILLed container's exit to be recorded
KILL_WAIT = 10.0


def _until_stopped(root: StateRoot, cid: str, timeout: float) -> None:
    from builder.runtime.containers import lifecycle
    from builder.runtime.containers.record import ContainerStore, NoSuchContainer

    cs = ContainerStore(root)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if lifecycle.refresh(cs, cs.load(cid)).state.status not in ("running", "removing"):
                return
        except NoSuchContainer:
            return
        time.sleep(0.02)


# -- wait / rename / pause ---------------------------------------------------------------------
@routes.post("/containers/{id}/wait")
async def wait(request: web.Request) -> web.StreamResponse:
    """Headers go out at once (the client then starts the container), the status at the end;
    a client that leaves ends the wait."""
    from builder.runtime.containers import lifecycle
    from builder.runtime.containers.record import ContainerStore, NoSuchContainer

    root = state_of(request)
    condition = request.query.get("condition") or "not-running"
    if condition not in ("not-running", "next-exit", "removed"):
        raise bad_request(f"invalid condition: {condition!r} (not-running, next-exit or removed)")
    c = await find(request)
    cs = ContainerStore(root)
    before = c.state.finished_at
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)

    def check() -> int | None:
        try:
            now = lifecycle.refresh(cs, cs.load(c.id))
        except NoSuchContainer:
            return lifecycle._last_exit(root, c.id)
        if condition == "removed":
            return None
        if now.state.status == "restarting" and now.state.finished_at != before:
            # an exit the restart policy answers: dockerd's wait returns at it
            return now.state.exit_code
        if now.state.running:
            return None
        if condition == "next-exit" and now.state.finished_at == before:
            return None
        return now.state.exit_code

    while True:
        code = await in_thread(check)
        if code is not None:
            break
        transport = request.transport
        if transport is None or transport.is_closing():
            return resp
        await asyncio.sleep(POLL)
    await resp.write(json.dumps({"StatusCode": code, "Error": None}).encode() + b"\n")
    await resp.write_eof()
    return resp


@routes.post("/containers/{id}/rename")
async def rename(request: web.Request) -> web.Response:
    from builder.runtime.containers import lifecycle

    root = state_of(request)
    new = request.query.get("name")
    if not new:
        raise bad_request("name is required: POST /containers/{id}/rename?name=NEW")
    c = await find(request)
    await in_thread(lambda: lifecycle.rename(root, c.id, new))
    return web.Response(status=204)


@routes.post("/containers/{id}/pause")
async def pause(request: web.Request) -> web.Response:
    from builder.runtime.containers import lifecycle

    c = await find(request)
    await in_thread(lifecycle.pause, state_of(request), c.id)
    return web.Response(status=204)


@routes.post("/containers/{id}/unpause")
async def unpause(request: web.Request) -> web.Response:
    from builder.runtime.containers import lifecycle

    c = await find(request)
    try:
        await in_thread(lifecycle.unpause, state_of(request), c.id)
    except ContainerError as e:
        raise ApiError(409 if "is not paused" in str(e) else 500, str(e)) from None
    return web.Response(status=204)


# -- logs / top --------------------------------------------------------------------------------
@routes.get("/containers/{id}/logs")
async def logs(request: web.Request) -> web.StreamResponse:
    """The json-file log: multiplexed frames, or raw bytes for a TTY container."""
    from builder.runtime.containers import logs

    root = state_of(request)
    c = await find(request)
    want_out, want_err = qbool(request, "stdout"), qbool(request, "stderr")
    if not (want_out or want_err):
        raise bad_request("Bad parameters: you must choose at least one stream")
    if c.host_config.log_config is not None and c.host_config.log_config.type == "none":
        raise ApiError(501, NO_READING)
    stamps = qbool(request, "timestamps")
    tty = bool(c.config.tty)
    stop = False
    try:
        entries = logs.entries(root, c.id, tail=request.query.get("tail"),
                              since=request.query.get("since"), until=request.query.get("until"),
                              follow=qbool(request, "follow"), stop=lambda: stop)
    except ContainerError as e:
        raise bad_request(str(e)) from None

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=256)

    def produce() -> None:
        try:
            for e in entries:
                if stop:
                    return
                if (e.stream == "stderr" and not want_err) or (e.stream != "stderr" and not want_out):
                    continue
                data = (e.time.encode() + b" " if stamps else b"") + e.data
                chunk = data if tty else frame(STDERR if e.stream == "stderr" else STDOUT, data)
                asyncio.run_coroutine_threadsafe(queue.put(chunk), loop).result()
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    resp = web.StreamResponse(status=200)
    # raw bytes for a TTY container, else stdout/stderr frames (what the client demultiplexes)
    resp.content_type = "application/vnd.docker.raw-stream" if tty else "application/vnd.docker.multiplexed-stream"
    await resp.prepare(request)
    fut = loop.run_in_executor(None, produce)
    try:
        while True:
            chunk = await queue.get()
            if chunk is None:
                break
            await resp.write(chunk)
        await resp.write_eof()
    except (ConnectionError, RuntimeError):
        pass  # the client left: stop reading the log
    finally:
        stop = True
        while not fut.done():  # unblock a producer waiting on a full queue
            while not queue.empty():
                queue.get_nowait()
            await asyncio.sleep(0.01)
    return resp


@routes.get("/containers/{id}/top")
async def top(request: web.Request) -> web.Response:
    from builder.runtime.containers.inspect import top as processes

    c = await find(request)
    if not c.state.running:
        raise ApiError(409, f"Container {c.id} is not running")
    return web.json_response(await in_thread(processes, c))


# -- remove / prune ----------------------------------------------------------------------------
@routes.delete("/containers/{id}")
async def remove(request: web.Request) -> web.Response:
    from builder.runtime.containers import lifecycle

    root = state_of(request)
    c = await find(request)
    force, volumes = qbool(request, "force"), qbool(request, "v")
    if c.state.running and not force:
        raise ApiError(409, f"You cannot remove a running container {c.id}. "
                            "Stop the container before attempting removal or force remove")
    await in_thread(lambda: lifecycle.remove(root, c.id, force=force, volumes=volumes))
    return web.Response(status=204)


@routes.delete("/containers/{id}/{link}")
async def remove_link(request: web.Request) -> web.Response:
    """``DELETE /containers/{id}/{link}``, as dockerd: the container the link names is removed
    (``force``, ``v`` as for a remove), or with ``link=1`` only the link; either way the link
    is gone (inspect's ``HostConfig.Links`` keeps it). One it has not: 404 ``No such
    container: NAME/LINK``."""
    from builder.runtime.containers import lifecycle
    from builder.runtime.containers.inspect import link_alias
    from builder.runtime.containers.record import ContainerStore

    root = state_of(request)
    c = await find(request)
    link = request.match_info["link"]
    force, volumes = qbool(request, "force"), qbool(request, "v")

    def work() -> str | None:
        cs = ContainerStore(root)
        with cs.lock(c.id):
            now = cs.load(c.id)
            removed = now.host_config.links_removed
            child = next((x.partition(":")[0].lstrip("/") for x in
                          now.host_config.links if link_alias(x) == link), None)
            if child is None or link in removed:
                return None
            cs.save_config(replace(now, host_config=replace(now.host_config,
                                                            links_removed=(*removed, link))))
            return child

    child = await in_thread(work)
    if child is None:
        raise ApiError(404, f"No such container: {c.name}/{link}")
    if not qbool(request, "link"):
        other = await in_thread(lifecycle.get, root, child)
        if other.state.running and not force:
            raise ApiError(409, f"You cannot remove a running container {other.id}. Stop the "
                                "container before attempting removal or force remove")
        await in_thread(lambda: lifecycle.remove(root, other.id, force=force, volumes=volumes))
    return web.Response(status=204)


@routes.post("/containers/prune")
async def prune(request: web.Request) -> web.Response:
    from builder.runtime.containers import lifecycle

    root = state_of(request)
    filters = parse_filters(request.query.get("filters"))
    for k in filters:
        if k not in ("label", "until"):
            raise bad_request(f"Invalid filter '{k}'")
    flt = lifecycle.Filters.parse(filter_specs(filters))

    def work() -> tuple[list[str], int]:
        # dockerd's SpaceReclaimed: the writable layers (SizeRw) of the containers removed
        sizes = {c.id: lifecycle.sizes(root, c)[0]
                 for c in lifecycle.list_containers(root, all=True, filters=flt)
                 if not c.state.running}
        removed = lifecycle.prune(root, filters=flt)
        return removed, sum(sizes.get(cid, 0) for cid in removed)

    removed, reclaimed = await in_thread(work)
    events.emit(root, "container", "prune", "", {"reclaimed": str(reclaimed)})
    return web.json_response({"ContainersDeleted": removed or None, "SpaceReclaimed": reclaimed})
