"""The aiohttp application: the routes of every module in ``ROUTE_MODULES``, each at its plain
path and at ``/v{version}/path``, behind the error and API-version middlewares.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

from aiohttp import web

from builder.api import API_VERSION, MIN_API_VERSION
from builder.api.errors import ApiError, Handler, error_middleware
from builder.base.state import StateRoot
from builder.system.engine import version

#: modules of ``builder.api`` holding a ``routes`` RouteTableDef (each must exist)
ROUTE_MODULES: tuple[str, ...] = ("system", "auth", "images", "build", "containers", "attach",
                                 "archive", "exec", "networks", "volumes", "stats", "changes",
                                 "swarm")

_VERSION_PREFIX = "/v{version:[0-9]+[.][0-9]+}"


def _vtuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


@web.middleware
async def version_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse API versions we do not speak, with dockerd's messages."""
    version = request.match_info.get("version")
    if version is not None:
        if _vtuple(version) < _vtuple(MIN_API_VERSION):
            raise ApiError(400, f"client version {version} is too old. Minimum supported API "
                                f"version is {MIN_API_VERSION}, please upgrade your client to a "
                                f"newer version")
        if _vtuple(version) > _vtuple(API_VERSION):
            raise ApiError(400, f"client version {version} is too new. Maximum supported API "
                                f"version is {API_VERSION}")
    response = await handler(request)
    return response


@web.middleware
async def server_header_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if not response.prepared:
        response.headers.setdefault("Api-Version", API_VERSION)
        response.headers.setdefault("Docker-Experimental", "false")
        response.headers.setdefault("Ostype", "linux")
        response.headers["Server"] = f"pybuild/{_pybuild_version()} (linux)"
    return response


def _pybuild_version() -> str:
    return version()


def make_app(state: StateRoot, **opts: Any) -> web.Application:
    """The API application over *state*; *opts* land in ``app["opts"]`` for the handlers."""
    app = web.Application(
        middlewares=[error_middleware, server_header_middleware, version_middleware],
        client_max_size=1024**4,  # /build and /images/load read their bodies as streams
    )
    app["state"] = state
    # set when the daemon stops: long-lived streams (events, follows) end at once, not after
    # the server's shutdown timeout
    app["stopping"] = asyncio.Event()

    async def stopping(app: web.Application) -> None:
        app["stopping"].set()

    app.on_shutdown.append(stopping)
    app["opts"] = dict(opts)
    app["version"] = _pybuild_version()
    for name in ROUTE_MODULES:
        module = importlib.import_module(f"builder.api.{name}")
        for route in module.routes:
            assert isinstance(route, web.RouteDef), route
            kwargs = dict(route.kwargs)
            app.router.add_route(route.method, route.path, route.handler, **kwargs)
            kwargs.pop("name", None)
            app.router.add_route(route.method, _VERSION_PREFIX + route.path, route.handler,
                                 **kwargs)
    return app
