"""``/containers/{id}/archive``: what ``docker cp`` uses. ``HEAD`` stats a path in the container
(``X-Docker-Container-Path-Stat``), ``GET`` streams it out as a tar, ``PUT`` unpacks a tar under
a directory; all through ``builder.runtime.containers.copy``, as ``pybuild cp`` does.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from builder.api.errors import ApiError, bad_request
from builder.api.request import find, state_of
from builder.api.streams import SyncReader, SyncWriter, in_thread
from builder.runtime.containers.options import rfc3339nano

if TYPE_CHECKING:
    from builder.runtime.containers.record import Container

routes = web.RouteTableDef()

#: Go's os.ModeDir, which the docker CLI reads from the stat header's mode
_MODE_DIR = 1 << 31
_MODE_SYMLINK = 1 << 27


def _path(request: web.Request) -> str:
    path = request.query.get("path")
    if not path:
        raise bad_request("path is required: ?path=/in/the/container")
    return path if path.startswith("/") else "/" + path


async def _stat(request: web.Request) -> tuple[Container, str, str, str]:
    """(container, path, kind, the base64 stat header); 404 for a missing path."""
    from builder.runtime.containers import copy

    c = await find(request)
    path = _path(request)
    st = await in_thread(copy.path_stat, state_of(request), c, path)
    if st.kind == "missing":
        raise ApiError(404, f"Could not find the file {path} in container {request.match_info['id']}")
    kind = st.kind
    if kind == "symlink":
        kind = await in_thread(copy.stat_in, state_of(request), c, path)
    name = path.rstrip("/").rsplit("/", 1)[-1] or "/"
    # Go's FileMode: permission bits, with its own type bits (dir 1<<31, symlink 1<<27)
    mode = st.mode & 0o777 | {"dir": _MODE_DIR, "symlink": _MODE_SYMLINK}.get(st.kind, 0)
    stat: dict[str, Any] = {"name": name, "size": st.size, "mode": mode,
                            "mtime": rfc3339nano(ns=st.mtime_ns), "linkTarget": st.link_target}
    return c, path, kind, base64.b64encode(json.dumps(stat).encode()).decode()


@routes.head("/containers/{id}/archive")
async def stat_path(request: web.Request) -> web.Response:
    _c, _p, _k, header = await _stat(request)
    return web.Response(status=200, headers={"X-Docker-Container-Path-Stat": header})


@routes.get("/containers/{id}/archive")
async def get_archive(request: web.Request) -> web.StreamResponse:
    from builder.runtime.containers import copy

    c, path, _kind, header = await _stat(request)
    resp = web.StreamResponse(status=200, headers={"X-Docker-Container-Path-Stat": header,
                                                   "Content-Type": "application/x-tar"})
    await resp.prepare(request)
    writer: Any = SyncWriter(resp, asyncio.get_running_loop())
    try:
        await in_thread(lambda: copy.copy_from(state_of(request), c, path, writer))
        await resp.write_eof()
    except (ConnectionError, RuntimeError):
        pass  # the client left: the copy stopped with its pipe
    return resp


@routes.put("/containers/{id}/archive")
async def put_archive(request: web.Request) -> web.Response:
    from builder.runtime.containers import copy

    c, path, kind, _h = await _stat(request)
    if kind != "dir":
        raise bad_request(f"extraction point is not a directory: {path}")
    reader: Any = SyncReader(request, asyncio.get_running_loop())
    await in_thread(lambda: copy.copy_to(state_of(request), c, reader, path))
    return web.Response(status=200)
