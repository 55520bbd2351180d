"""``GET /containers/{id}/changes``, ``GET /containers/{id}/export`` and ``POST /commit``: what
``docker diff``, ``docker export`` and ``docker commit`` use, each one call to
``builder.runtime.containers.changes`` (the calls ``pybuild diff|export|commit`` make).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from builder.api.errors import bad_request
from builder.api.request import find, json_body, qbool, state_of
from builder.api.streams import SyncWriter, in_thread

routes = web.RouteTableDef()


@routes.get("/containers/{id}/changes")
async def container_changes(request: web.Request) -> web.Response:
    from builder.runtime.containers import changes

    c = await find(request)
    return web.json_response(await in_thread(changes.changes, state_of(request), c.id))


@routes.get("/containers/{id}/export")
async def export_container(request: web.Request) -> web.StreamResponse:
    from builder.runtime.containers import changes

    c = await find(request)
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/x-tar"})
    await resp.prepare(request)
    writer: Any = SyncWriter(resp, asyncio.get_running_loop())
    try:
        await in_thread(changes.export, state_of(request), c.id, writer)
        await resp.write_eof()
    except (ConnectionError, RuntimeError):
        pass  # the client left mid-stream
    return resp


@routes.post("/commit")
async def commit(request: web.Request) -> web.Response:
    from builder.runtime.containers import changes, lifecycle

    name = request.query.get("container", "")
    if not name:
        raise bad_request("container is required: ?container=ID")
    c = await in_thread(lifecycle.get, state_of(request), name)  # 404 ``No such container``
    repo, tag = request.query.get("repo", ""), request.query.get("tag", "")
    if tag and not repo:
        raise bad_request(f"invalid reference format: a tag ({tag}) needs a repository")
    reference = f"{repo}:{tag}" if repo and tag else repo or None
    body = await json_body(request)
    image_id = await in_thread(lambda: changes.commit(
        state_of(request), c.id, reference, message=request.query.get("comment", ""),
        author=request.query.get("author", ""), changes=request.query.getall("changes", []),
        config=body or None, pause=qbool(request, "pause", True)))
    return web.json_response({"Id": image_id}, status=201)
