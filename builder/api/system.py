"""System endpoints: ``/_ping``, ``/version``, ``/info``, ``/events`` (streamed), ``/system/df``."""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

from aiohttp import web

from builder.api import API_VERSION
from builder.api.errors import bad_request
from builder.api.streams import JsonStream, in_thread
from builder.base import events
from builder.base.state import StateRoot
from builder.system import engine as system

routes = web.RouteTableDef()

_PING_HEADERS = {
    "Api-Version": API_VERSION,
    "Docker-Experimental": "false",
    "Ostype": "linux",
    # the classic builder's /build: a client must not try BuildKit's /session on us
    "Builder-Version": "1",
    "Cache-Control": "no-cache, no-store, must-revalidate",
    "Pragma": "no-cache",
}

#: how often a followed /events stream looks at the log for new lines
EVENTS_POLL = 0.1


@routes.get("/_ping")
async def ping(request: web.Request) -> web.Response:
    return web.Response(text="OK", headers=_PING_HEADERS)


@routes.head("/_ping")
async def ping_head(request: web.Request) -> web.Response:
    return web.Response(body=b"", headers=_PING_HEADERS, content_type="text/plain",
                        charset="utf-8")


@functools.cache
def _version_info() -> dict[str, Any]:
    """Fixed for the daemon's life (and computing it runs ``runc --version``)."""
    return system.version_info()


@routes.get("/version")
async def version(request: web.Request) -> web.Response:
    return web.json_response(await in_thread(_version_info))


@routes.get("/info")
async def info_handler(request: web.Request) -> web.Response:
    state: StateRoot = request.app["state"]
    data = await in_thread(system.info, state)
    # the API names the runtime as dockerd does: our execution core answers to ``runc`` (a
    # create asking for ``runc`` gets it, inspect says ``runc``); /version keeps our name
    data["Runtimes"] = {"runc": {"path": "runc"}}
    data["DefaultRuntime"] = "runc"
    return web.json_response(data)


@routes.get("/events")
async def events_handler(request: web.Request) -> web.StreamResponse:
    """Past events from ``since`` (if given), then new ones as they come until ``until``
    (forever when absent), filtered by ``filters``."""
    state: StateRoot = request.app["state"]
    q = request.query
    try:
        since = events.parse_time(q.get("since"))
        until = events.parse_time(q.get("until"))
        filters = events.Filters.from_json(q.get("filters"))
    except ValueError as e:
        raise bad_request(str(e)) from None
    reader = events.Reader(state, from_start=since is not None)
    stream = await JsonStream(request).prepare()
    while not stream.closed:
        for ev in reader.poll():
            t = events.event_time(ev)
            if since is not None and t < since:
                continue
            if until is not None and t > until:
                continue
            if filters.match(ev):
                await stream.send(ev)
        if until is not None and time.time() > until:
            break
        transport = request.transport
        if transport is None or transport.is_closing():
            break
        try:
            await asyncio.wait_for(request.app["stopping"].wait(), EVENTS_POLL)
            break  # the daemon stops
        except TimeoutError:
            pass
    return await stream.finish()


@routes.get("/system/df")
async def system_df(request: web.Request) -> web.Response:
    return web.json_response(await in_thread(system.df, request.app["state"]))
