"""Request helpers every endpoint module shares: the state root, Docker's query booleans and
integers, ``filters``, the JSON body, and the container ``{id}`` names."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from builder.api.errors import bad_request
from builder.api.streams import in_thread
from builder.base import filters

if TYPE_CHECKING:
    from builder.base.state import StateRoot
    from builder.runtime.containers.record import Container


def state_of(request: web.Request) -> StateRoot:
    return request.app["state"]  # type: ignore[no-any-return]


def qbool(request: web.Request, name: str, default: bool = False) -> bool:
    """Docker's boolean query values: ``1``/``true``/``True`` on, ``0``/``false``/empty off."""
    v = request.query.get(name)
    if v is None:
        return default
    return v.strip().lower() not in ("", "0", "false", "no")


def qint(request: web.Request, name: str) -> int | None:
    v = request.query.get(name)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError:
        raise bad_request(f"invalid value for {name}: {v!r}: not an integer") from None


def parse_filters(text: str | None) -> dict[str, list[str]]:
    """``?filters=`` as ``k -> [v…]`` (``builder.base.filters``); malformed JSON is a 400."""
    try:
        return filters.parse_filters(text)
    except ValueError as e:
        raise bad_request(str(e)) from None


def filter_specs(filters: Mapping[str, list[str]]) -> list[str]:
    return [f"{k}={v}" for k, vs in filters.items() for v in vs]


async def json_body(request: web.Request, *, required: bool = False) -> dict[str, Any]:
    """The request's JSON object; malformed JSON is a 400 naming the problem."""
    raw = await request.read()
    if not raw.strip():
        if required:
            raise bad_request("request body is empty: a JSON object is expected")
        return {}
    try:
        body = json.loads(raw)
    except ValueError as e:
        raise bad_request(f"invalid JSON in the request body: {e}") from None
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise bad_request("invalid request body: a JSON object is expected")
    return body


async def find(request: web.Request) -> Container:
    """The container named by ``{id}`` (404 ``No such container: x`` otherwise)."""
    from builder.runtime.containers import lifecycle

    return await in_thread(lifecycle.get, state_of(request), request.match_info["id"])
