"""Volume endpoints: list, create, inspect, remove, prune, over ``builder.runtime.volume`` (the calls
``pybuild volume`` makes, on the same state root and locks)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from builder.api.errors import bad_request
from builder.api.request import json_body, parse_filters, qbool, state_of
from builder.api.streams import in_thread
from builder.base import events
from builder.base.filters import labels_match

routes = web.RouteTableDef()


def _json(vol: Any) -> dict[str, Any]:
    d: dict[str, Any] = vol.to_json()
    d.setdefault("Status", None)
    return d


@routes.get("/volumes")
async def list_volumes(request: web.Request) -> web.Response:
    from builder.runtime import volume as V

    filters = parse_filters(request.query.get("filters"))
    for k in filters:
        if k not in ("name", "label", "dangling", "driver"):
            raise bad_request(f"Invalid filter '{k}'")
    root = state_of(request)

    def work() -> list[dict[str, Any]]:
        vols = V.list_volumes(root)
        users = V.containers_using(root)
        out = []
        for v in vols:
            ok = True
            for k, values in filters.items():
                if not values:
                    continue
                if k == "name":
                    ok = any(x in v.name for x in values)
                elif k == "driver":
                    ok = v.driver in values
                elif k == "dangling":
                    ok = any((x in ("1", "true")) == (not users.get(v.name)) for x in values)
                else:
                    ok = labels_match(v.labels, values)  # every label given, as dockerd
                if not ok:
                    break
            if ok:
                out.append(_json(v))
        return out

    return web.json_response({"Volumes": await in_thread(work), "Warnings": None})


@routes.post("/volumes/create")
async def create(request: web.Request) -> web.Response:
    from builder.runtime import volume as V

    body = await json_body(request)
    root = state_of(request)
    name = body.get("Name") or None
    vol = await in_thread(lambda: V.create(
        root, name, driver=str(body.get("Driver") or "local"),
        labels={str(k): str(v) for k, v in (body.get("Labels") or {}).items()},
        options={str(k): str(v) for k, v in (body.get("DriverOpts") or {}).items()}))
    return web.json_response(_json(vol), status=201)


@routes.get("/volumes/{name}")
async def inspect(request: web.Request) -> web.Response:
    from builder.runtime import volume as V

    vol = await in_thread(V.get, state_of(request), request.match_info["name"])
    return web.json_response(_json(vol))


@routes.delete("/volumes/{name}")
async def remove(request: web.Request) -> web.Response:
    from builder.runtime import volume as V

    root = state_of(request)
    name = request.match_info["name"]
    await in_thread(lambda: V.remove(root, name, force=qbool(request, "force")))
    return web.Response(status=204)


@routes.post("/volumes/prune")
async def prune(request: web.Request) -> web.Response:
    """API 1.41: every unused volume (``all=true`` is the default before 1.42)."""
    from builder.runtime import volume as V

    filters = parse_filters(request.query.get("filters"))
    labels: list[str] = []
    all_volumes = True
    for k, values in filters.items():
        if k == "label":
            labels += values
        elif k == "all":
            all_volumes = any(v in ("1", "true") for v in values)
        else:
            raise bad_request(f"Invalid filter '{k}'")
    root = state_of(request)
    removed, space = await in_thread(lambda: V.prune(root, all_volumes=all_volumes, label_filters=labels))
    events.emit(root, "volume", "prune", "", {"reclaimed": str(space)})
    return web.json_response({"VolumesDeleted": removed or None, "SpaceReclaimed": space})
