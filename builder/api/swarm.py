"""What dockerd answers without a swarm: ``/swarm``, ``/nodes``, ``/services``, ``/tasks``,
``/secrets``, ``/configs`` (503, dockerd's words, which clients accept as "no swarm here"), and
``/distribution/{name}/json`` (a registry's manifest descriptor and the platforms it serves).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from builder.api.auth import registry_auth
from builder.api.errors import ApiError, bad_request
from builder.api.streams import in_thread
from registry.auth import Credentials
from registry.errors import InvalidReference
from registry.model import ImageConfig, Index, Manifest, parse_manifest_or_index
from registry.reference import Reference

routes = web.RouteTableDef()

#: dockerd's answer to a manager-only call on a node outside any swarm (status 503)
NOT_A_MANAGER = ('This node is not a swarm manager. Use "docker swarm init" or "docker swarm '
                 'join" to connect this node to swarm and try again.')
#: dockerd's answer to ``POST /swarm/leave`` outside a swarm (status 503)
NOT_IN_SWARM = "This node is not part of a swarm"
#: ours to ``POST /swarm/init`` and ``/swarm/join``: dockerd would make or join one
NO_SWARM_MODE = "pybuild serve has no swarm mode: it cannot init or join a swarm"


async def _not_a_manager(request: web.Request) -> web.Response:
    raise ApiError(503, NOT_A_MANAGER)


async def _not_in_swarm(request: web.Request) -> web.Response:
    raise ApiError(503, NOT_IN_SWARM)


async def _no_swarm_mode(request: web.Request) -> web.Response:
    raise ApiError(503, NO_SWARM_MODE)


routes.post("/swarm/leave")(_not_in_swarm)
routes.post("/swarm/init")(_no_swarm_mode)
routes.post("/swarm/join")(_no_swarm_mode)
for _path, _methods in (
        ("/swarm", ("GET",)), ("/swarm/unlockkey", ("GET",)), ("/swarm/unlock", ("POST",)),
        ("/swarm/update", ("POST",)),
        ("/nodes", ("GET",)), ("/nodes/{id}", ("GET", "DELETE")), ("/nodes/{id}/update", ("POST",)),
        ("/services", ("GET",)), ("/services/create", ("POST",)),
        ("/services/{id}", ("GET", "DELETE")), ("/services/{id}/update", ("POST",)),
        ("/services/{id}/logs", ("GET",)),
        ("/tasks", ("GET",)), ("/tasks/{id}", ("GET",)), ("/tasks/{id}/logs", ("GET",)),
        ("/secrets", ("GET",)), ("/secrets/create", ("POST",)),
        ("/secrets/{id}", ("GET", "DELETE")), ("/secrets/{id}/update", ("POST",)),
        ("/configs", ("GET",)), ("/configs/create", ("POST",)),
        ("/configs/{id}", ("GET", "DELETE")), ("/configs/{id}/update", ("POST",))):
    for _m in _methods:
        routes.route(_m, _path)(_not_a_manager)


def distribution_info(name: str, credentials: Credentials | None) -> dict[str, Any]:
    """dockerd's ``DistributionInspect``: the descriptor of what *name* points at in its
    registry, and the platforms it serves (an index's entries; a manifest's config's)."""
    from registry.transfer.ends import ClientOptions, remote_end

    ref = Reference.parse(name)
    end = remote_end(ref, options=ClientOptions(credentials=credentials))
    fetched = end.repo.get_manifest(ref.digest or ref.tag or "latest")
    doc = parse_manifest_or_index(fetched.raw, fetched.media_type or None)
    platforms: list[dict[str, Any]] = []
    if isinstance(doc, Index):
        platforms = [d.platform.to_dict() for d in doc.manifests if d.platform is not None]
    elif isinstance(doc, Manifest):
        with end.repo.open_blob(doc.config.digest, doc.config.size) as blob:
            raw = b"".join(iter(lambda: blob.read(), b""))
        platforms = [ImageConfig.parse(raw).platform.to_dict()]
    return {"Descriptor": {"mediaType": doc.media_type, "digest": str(fetched.digest),
                           "size": len(fetched.raw)},
            "Platforms": platforms}


@routes.get("/distribution/{name:.+}/json")
async def distribution(request: web.Request) -> web.Response:
    creds = registry_auth(request.headers)
    try:
        return web.json_response(await in_thread(distribution_info, request.match_info["name"],
                                                 creds))
    except InvalidReference as e:
        raise bad_request(str(e)) from None
