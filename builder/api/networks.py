"""Network endpoints: list, create, inspect, remove, connect, disconnect, prune, over
``builder.network`` (the calls ``pybuild network`` makes, on the same state root and locks)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from builder.api.errors import ApiError, bad_request
from builder.api.request import json_body, parse_filters, state_of
from builder.api.streams import in_thread
from builder.base import events
from builder.base.errors import NetworkError
from builder.base.filters import labels_match
from builder.base.values import replace

if TYPE_CHECKING:  # serve's start-up budget: the library loads on a request's first use
    from builder.base.state import StateRoot
    from builder.runtime.containers.record import Container
    from builder.runtime.containers.recordparts import JoinedNetwork

routes = web.RouteTableDef()

_FILTERS = ("name", "id", "driver", "label", "type", "scope", "dangling")


def _match(net: Any, key: str, values: list[str]) -> bool:
    if key == "name":
        return any(v in net.name for v in values)
    if key == "id":
        return any(net.id.startswith(v) for v in values)
    if key == "driver":
        return net.driver in values
    if key == "scope":
        return "local" in values
    if key == "type":
        return any(net.predefined == (v == "builtin") for v in values)
    if key == "dangling":
        return any((v in ("1", "true")) == (not net.predefined and not net.containers) for v in values)
    return labels_match(net.labels, values)  # every label given, as dockerd


def _json(net: Any) -> dict[str, Any]:
    d: dict[str, Any] = net.to_json()
    d.pop("DnsPid", None)
    d.pop("Bridge", None)
    d.pop("Parent", None)
    d["ConfigFrom"] = {"Network": ""}
    d["ConfigOnly"] = False
    d["Containers"] = {
        cid: {"Name": ep.get("Name", ""), "EndpointID": ep.get("EndpointID", ""),
              "MacAddress": ep.get("MacAddress", ""), "IPv4Address": ep.get("IPv4Address", ""),
              "IPv6Address": ep.get("IPv6Address", "")}
        for cid, ep in (d.get("Containers") or {}).items()
    }
    return d


@routes.get("/networks")
async def list_networks(request: web.Request) -> web.Response:
    from builder import network as N

    filters = parse_filters(request.query.get("filters"))
    for k in filters:
        if k not in _FILTERS:
            raise bad_request(f"Invalid filter '{k}'")
    for v in filters.get("type", []):
        if v not in ("custom", "builtin"):
            raise bad_request(f"invalid filter: 'type'='{v}'")
    nets = await in_thread(N.list_networks, state_of(request))
    out = [_json(n) for n in nets if all(_match(n, k, vs) for k, vs in filters.items() if vs)]
    return web.json_response(out)


@routes.get("/networks/{id}")
async def inspect(request: web.Request) -> web.Response:
    from builder import network as N

    try:
        net = await in_thread(N.get_network, state_of(request), request.match_info["id"])
    except NetworkError as e:
        if "not found" in str(e):
            raise ApiError(404, f"network {request.match_info['id']} not found") from None
        raise
    return web.json_response(_json(net))


@routes.post("/networks/create")
async def create(request: web.Request) -> web.Response:
    from builder import network as N

    body = await json_body(request, required=True)
    name = body.get("Name")
    if name is not None and not isinstance(name, str):
        raise bad_request("network name is required: Name")
    if not name:  # dockerd's answer, a 500; any other name is taken (spaces, slashes…)
        raise ApiError(500, "invalid name: ")
    configs = ((body.get("IPAM") or {}).get("Config") or [])
    v4 = [c for c in configs if ":" not in str(c.get("Subnet") or "")]
    v6 = [c for c in configs if ":" in str(c.get("Subnet") or "")]
    if len(v4) > 1 or len(v6) > 1:
        raise bad_request("one IPv4 and one IPv6 IPAM config per network at most are supported")
    conf, conf6 = (v4 or [{}])[0], (v6 or [{}])[0]
    root = state_of(request)
    net = await in_thread(lambda: N.create_network(
        root, name, driver=str(body.get("Driver") or "bridge"), subnet=conf.get("Subnet") or None,
        gateway=conf.get("Gateway") or None, enable_ipv6=bool(body.get("EnableIPv6")),
        subnet6=conf6.get("Subnet") or None, gateway6=conf6.get("Gateway") or None, options={str(k): str(v) for k, v in (body.get("Options") or {}).items()},
        labels={str(k): str(v) for k, v in (body.get("Labels") or {}).items()},
        internal=bool(body.get("Internal")), attachable=bool(body.get("Attachable"))))
    return web.json_response({"Id": net.id, "Warning": ""}, status=201)


@routes.delete("/networks/{id}")
async def remove(request: web.Request) -> web.Response:
    from builder import network as N

    root = state_of(request)
    await in_thread(N.remove_network, root, request.match_info["id"])
    return web.Response(status=204)


def _primary(c: Container) -> str:
    return c.host_config.network


def _plan_connect(root: StateRoot, cid: str, net_name: str, aliases: tuple[str, ...],
                  ip: str | None, given: JoinedNetwork) -> None:
    """Record the network (and aliases) a stopped container joins at its next start."""
    from builder.runtime.containers.record import ContainerStore
    from builder.runtime.containers.recordparts import JoinedNetwork

    cs = ContainerStore(root)
    with cs.lock(cid):
        c = cs.load(cid)
        networks = dict(c.networks)
        if net_name == _primary(c):
            hc = c.host_config
            endpoint = replace(hc.endpoint, aliases=tuple(dict.fromkeys([*hc.endpoint.aliases, *aliases])),
                               ipv4_address=ip or hc.endpoint.ipv4_address)
            if given.links or given.driver_opts:  # legacy links (compose reconnects with them): kept as create keeps them
                networks[net_name] = networks.get(net_name, JoinedNetwork()).merged(given)
            cs.save_config(replace(c, host_config=replace(hc, endpoint=endpoint), networks=networks))
            return
        networks[net_name] = JoinedNetwork(aliases=tuple(aliases)).merged(given)
        cs.save_config(replace(c, networks=networks))


def endpoint_given(conf: dict[str, Any]) -> JoinedNetwork:
    """The endpoint's ``Links`` and ``DriverOpts`` as given, kept for inspect as dockerd shows
    them (links on a user-defined network resolve by name, as there)."""
    from builder.runtime.containers.recordparts import JoinedNetwork

    links = conf.get("Links") or []
    opts = conf.get("DriverOpts") or {}
    if not isinstance(links, list) or not all(isinstance(x, str) for x in links):
        raise bad_request("EndpointConfig.Links: a list of name:alias strings")
    if not isinstance(opts, dict):
        raise bad_request("EndpointConfig.DriverOpts: an object of strings")
    return JoinedNetwork(links=tuple(links) if links else None,
                         driver_opts={str(k): str(v) for k, v in opts.items()} if opts else None)


def keep_endpoint_given(root: StateRoot, cid: str, net_name: str, given: JoinedNetwork) -> None:
    from builder.runtime.containers.record import ContainerStore
    from builder.runtime.containers.recordparts import JoinedNetwork

    cs = ContainerStore(root)
    with cs.lock(cid):
        c = cs.load(cid)
        networks = dict(c.networks)
        networks[net_name] = networks.get(net_name, JoinedNetwork()).merged(given)
        cs.save_config(replace(c, networks=networks))


def _plan_disconnect(root: StateRoot, cid: str, net_name: str) -> None:
    """A stopped container leaves a network it would join at start (its own network's aliases
    are dropped: it is joined again, as reconnected, without them)."""
    from builder.runtime.containers.record import ContainerStore

    cs = ContainerStore(root)
    with cs.lock(cid):
        c = cs.load(cid)
        others = {k: v for k, v in c.networks.items() if k != net_name}
        if net_name == _primary(c):
            hc = c.host_config
            host = replace(hc, endpoint=replace(hc.endpoint, aliases=()))
            cs.save_config(replace(c, host_config=host, networks=others))
            return
        if net_name not in c.networks:
            raise ApiError(409, f"container {c.id} is not connected to network {net_name}")
        cs.save_config(replace(c, networks=others))


async def _container(request: web.Request, ref: Any) -> Any:
    from builder.runtime.containers import lifecycle

    if not ref or not isinstance(ref, str):
        raise bad_request("Container is required")
    return await in_thread(lifecycle.get, state_of(request), ref)


@routes.post("/networks/{id}/connect")
async def connect(request: web.Request) -> web.Response:
    from builder import network as N

    body = await json_body(request, required=True)
    root = state_of(request)
    c = await _container(request, body.get("Container"))
    conf = body.get("EndpointConfig") or {}
    aliases = tuple(conf.get("Aliases") or ())
    ip = ((conf.get("IPAMConfig") or {}).get("IPv4Address")) or None
    given = endpoint_given(conf)
    net = await in_thread(N.get_network, root, request.match_info["id"])
    if not c.state.running:
        # as dockerd: a container not running is connected when it starts (compose creates a
        # container, then disconnects and reconnects it with its aliases); on a user-defined
        # network its short id is among them from now on
        if net.user_defined and c.id[:12] not in aliases:
            aliases = (*aliases, c.id[:12])
        await in_thread(_plan_connect, root, c.id, net.name, aliases, ip, given)
        return web.Response(status=200)

    def work() -> None:
        N.shared_netns(root, c.id)
        N.attach(root, c.id, net.id, name=c.name, aliases=aliases, ip=ip,
                 hostname=c.config.hostname or c.id[:12])
        if given.links or given.driver_opts:
            keep_endpoint_given(root, c.id, net.name, given)

    await in_thread(work)
    return web.Response(status=200)


@routes.post("/networks/{id}/disconnect")
async def disconnect(request: web.Request) -> web.Response:
    from builder import network as N

    body = await json_body(request, required=True)
    root = state_of(request)
    c = await _container(request, body.get("Container"))
    net = await in_thread(N.get_network, root, request.match_info["id"])
    if not c.state.running:
        await in_thread(_plan_disconnect, root, c.id, net.name)
        return web.Response(status=200)
    try:
        await in_thread(N.detach, root, c.id, net.id)
    except NetworkError as e:
        if not (bool(body.get("Force")) and "is not connected" in str(e)):
            raise ApiError(409 if "is not connected" in str(e) else 500, str(e)) from None
    return web.Response(status=200)


@routes.post("/networks/prune")
async def prune(request: web.Request) -> web.Response:
    from builder import network as N

    filters = parse_filters(request.query.get("filters"))
    for k in filters:
        if k != "label":
            raise bad_request(f"invalid filter '{k}' (label=KEY[=VALUE] only)")
    root = state_of(request)
    removed = await in_thread(lambda: N.prune_networks(root, label_filters=filters.get("label", [])))
    events.emit(root, "network", "prune", "", {"reclaimed": "0"})
    return web.json_response({"NetworksDeleted": removed or None})


