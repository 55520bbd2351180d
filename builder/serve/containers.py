"""Container endpoints: ``/containers/json``, ``create``, ``{id}/start|stop|restart|kill|wait|
rename|pause|unpause``, ``{id}/json``, ``{id}/logs``, ``{id}/top``, ``DELETE``, ``prune``, resize.

Each handler is a thin shell over ``builder.containers`` (the calls ``pybuild`` makes, on the same
state root); attach and exec live in ``attach`` and ``exec``.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from builder import events
from builder.containers.logs import NO_READING, LogDriver
from builder.errors import ContainerError
from builder.serve.errors import ApiError, bad_request
from builder.serve.request import (
    filter_specs,
    find,
    json_body,
    parse_filters,
    qbool,
    qint,
    state_of,
)
from builder.serve.streams import STDERR, STDOUT, frame, in_thread

if TYPE_CHECKING:
    from builder.containers.record import Container
    from builder.state import StateRoot

routes = web.RouteTableDef()

#: how often a followed log or a wait looks at the container again
POLL = 0.05


# -- list / inspect ----------------------------------------------------------------------------
@routes.get("/containers/json")
async def list_containers(request: web.Request) -> web.Response:
    from builder.containers import lifecycle

    root = state_of(request)
    filters = parse_filters(request.query.get("filters"))
    show_all = qbool(request, "all")
    limit = qint(request, "limit")
    size = qbool(request, "size")

    def work() -> list[dict[str, Any]]:
        from builder.containers.inspect import summary

        flt = lifecycle.Filters.parse(filter_specs(filters))
        found = lifecycle.list_containers(root, all=show_all or (limit is not None and limit > 0),
                                          filters=flt)
        if limit is not None and limit > 0:
            found = found[:limit]
        table = lifecycle.network_endpoints(root)
        return [summary(root, c, table=table, size=size) for c in found]

    return web.json_response(await in_thread(work))


def inspect(root: StateRoot, c: Container, *, size: bool = False) -> dict[str, Any]:
    from builder.containers.inspect import inspect_container

    return inspect_container(root, c, size=size)


@routes.get("/containers/{id}/json")
async def inspect_container(request: web.Request) -> web.Response:
    c = await find(request)
    body = await in_thread(lambda: inspect(state_of(request), c, size=qbool(request, "size")))
    from builder.serve import exec as _exec

    ids = _exec.ids_of(request.app, c.id)
    body["ExecIDs"] = ids or None
    return web.json_response(body)


# -- create ------------------------------------------------------------------------------------
def _strings(v: Any, what: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        return (v,)
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise bad_request(f"invalid {what}: a list of strings is expected")
    return tuple(v)


def _host_flags(hc: Mapping[str, Any]) -> dict[str, Any]:
    """``ExtraHosts``, ``Dns*``, ``Ulimits``, ``Sysctls``, ``ShmSize``, ``Devices`` as the
    ``run`` flag texts ``RunOptions`` takes (the library checks them as it checks the CLI's)."""
    try:
        return {
            "add_hosts": _strings(hc.get("ExtraHosts"), "ExtraHosts"),
            "dns": _strings(hc.get("Dns"), "Dns"),
            "dns_search": _strings(hc.get("DnsSearch"), "DnsSearch"),
            "dns_options": _strings(hc.get("DnsOptions"), "DnsOptions"),
            "ulimits": tuple(f"{u['Name']}={int(u['Soft'])}:{int(u['Hard'])}" for u in hc.get("Ulimits") or ()),
            "sysctls": tuple(f"{k}={v}" for k, v in (hc.get("Sysctls") or {}).items()),
            "shm_size": str(int(hc["ShmSize"])) if hc.get("ShmSize") else None,
            "devices": tuple(f"{d['PathOnHost']}:{d.get('PathInContainer') or d['PathOnHost']}:"
                             f"{d.get('CgroupPermissions') or 'rwm'}" for d in hc.get("Devices") or ()),
        }
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise bad_request(f"invalid HostConfig: {type(e).__name__}: {e}") from None


def _mount_spec(m: Mapping[str, Any]) -> str:
    """A ``HostConfig.Mounts`` object as the ``--mount`` text the library parses."""
    typ = str(m.get("Type") or "volume")
    parts = [f"type={typ}"]
    if m.get("Source"):
        parts.append(f"source={m['Source']}")
    if not m.get("Target"):
        raise bad_request("invalid mount config: Target must not be empty")
    parts.append(f"target={m['Target']}")
    if m.get("ReadOnly"):
        parts.append("readonly")
    bind = m.get("BindOptions") or {}
    if bind.get("Propagation"):
        parts.append(f"bind-propagation={bind['Propagation']}")
    vol = m.get("VolumeOptions") or {}
    if vol.get("NoCopy"):
        parts.append("volume-nocopy")
    tmpfs = m.get("TmpfsOptions") or {}
    if tmpfs.get("SizeBytes"):
        parts.append(f"tmpfs-size={tmpfs['SizeBytes']}")
    if tmpfs.get("Mode"):
        parts.append(f"tmpfs-mode={int(tmpfs['Mode']):o}")
    return ",".join(parts)


def _volumes(body: Mapping[str, Any], hc: Mapping[str, Any]) -> tuple[str, ...]:
    """``Binds``, then the anonymous volumes of ``Config.Volumes`` (the CLI's ``-v /path``)
    that no bind or mount already serves, as ``-v`` texts."""
    binds = _strings(hc.get("Binds"), "Binds")
    taken = {b.split(":")[1] if ":" in b else b for b in binds}
    taken |= {str(m.get("Target") or "") for m in hc.get("Mounts") or ()}
    anonymous = tuple(str(v) for v in body.get("Volumes") or {} if str(v) not in taken)
    return binds + anonymous


def run_options(body: Mapping[str, Any], name: str | None) -> Any:
    """Docker's create body (Config + HostConfig + NetworkingConfig) as ``RunOptions``."""
    from builder.containers.create import RunOptions

    hc: Mapping[str, Any] = body.get("HostConfig") or {}
    image = body.get("Image")
    if not image or not isinstance(image, str):
        raise bad_request("config.Image is required: no image given")
    entrypoint = body.get("Entrypoint")
    ep_argv: tuple[str, ...] | None
    if entrypoint is None:
        ep_argv = None
    else:
        ep_argv = _strings(entrypoint, "Entrypoint")
    publish = []
    for key, bindings in (hc.get("PortBindings") or {}).items():
        port = key if "/" in key else f"{key}/tcp"
        for b in bindings or [{}]:
            host_ip = (b or {}).get("HostIp") or ""
            host_port = (b or {}).get("HostPort") or ""
            spec = port
            if host_port or host_ip:
                spec = f"{host_port}:{port}"
                if host_ip:
                    spec = f"{host_ip}:{spec}"
            publish.append(spec)
    rp = hc.get("RestartPolicy") or {}
    restart = str(rp.get("Name") or "no")
    if restart == "on-failure" and rp.get("MaximumRetryCount"):
        restart += f":{int(rp['MaximumRetryCount'])}"
    network = str(hc.get("NetworkMode") or "")
    if network == "default":
        network = ""
    aliases: tuple[str, ...] = ()
    ip = None
    endpoints = (body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
    for net_name, conf in endpoints.items():
        if conf is None:
            continue
        if not network:
            network = net_name
        if net_name == (network or "bridge"):
            aliases = _strings(conf.get("Aliases"), "Aliases")
            ip = ((conf.get("IPAMConfig") or {}).get("IPv4Address")) or None
    tmpfs = tuple(f"{k}:{v}" if v else k for k, v in (hc.get("Tmpfs") or {}).items())
    labels = tuple(f"{k}={v}" for k, v in (body.get("Labels") or {}).items())
    hcheck = body.get("Healthcheck") or {}
    nano_cpus = int(hc.get("NanoCpus") or 0)
    attached = bool(body.get("AttachStdout") or body.get("AttachStderr") or body.get("AttachStdin"))
    return RunOptions(
        image=image,
        command=_strings(body.get("Cmd"), "Cmd"),
        name=name,
        detach=not attached,
        rm=bool(hc.get("AutoRemove")),
        env=_strings(body.get("Env"), "Env"),
        volumes=_volumes(body, hc),
        mounts=tuple(_mount_spec(m) for m in hc.get("Mounts") or ()),
        tmpfs=tmpfs,
        publish=tuple(publish),
        publish_all=bool(hc.get("PublishAllPorts")),
        network=network,
        network_aliases=aliases,
        ip=ip,
        workdir=body.get("WorkingDir") or None,
        user=body.get("User") if body.get("User") else None,
        entrypoint=ep_argv,
        interactive=bool(body.get("OpenStdin")),
        tty=bool(body.get("Tty")),
        hostname=body.get("Hostname") or None,
        memory=str(hc["Memory"]) if hc.get("Memory") else None,
        memory_swap=str(hc["MemorySwap"]) if hc.get("MemorySwap") else None,
        cpu_shares=int(hc["CpuShares"]) if hc.get("CpuShares") else None,
        cpus=str(nano_cpus / 1e9) if nano_cpus else None,
        pids_limit=int(hc["PidsLimit"]) if hc.get("PidsLimit") else None,
        read_only=bool(hc.get("ReadonlyRootfs")),
        cap_add=_strings(hc.get("CapAdd"), "CapAdd"),
        cap_drop=_strings(hc.get("CapDrop"), "CapDrop"),
        privileged=bool(hc.get("Privileged")),
        init=bool(hc.get("Init")),
        restart=restart,
        stop_signal=body.get("StopSignal") or None,
        stop_timeout=body.get("StopTimeout"),
        labels=labels,
        pull="never",  # Docker's API never pulls on create: the client pulls and retries
        health_cmd=None,
        no_healthcheck=list(hcheck.get("Test") or []) == ["NONE"],
        runtime=hc.get("Runtime") if hc.get("Runtime") not in (None, "", "runc", "pybuild") else None,
        **_host_flags(hc),
        environ={},
    ), hcheck, body


def _finish_config(root: StateRoot, c: Container, body: Mapping[str, Any], hcheck: Mapping[str, Any]) -> Container:
    """What the create body says that ``run`` flags cannot: exposed ports, stdin-once, attach
    flags and a healthcheck given as data (written into the record before anyone starts it)."""
    from dataclasses import replace

    from builder.containers.inspect import HOST_CONFIG_ZERO
    from builder.containers.record import ContainerStore
    from registry.config import ContainerConfig

    config = c.config.to_json()
    exposed = dict(config.get("ExposedPorts") or {})
    for k in body.get("ExposedPorts") or {}:
        exposed.setdefault(k if "/" in k else f"{k}/tcp", {})
    config["ExposedPorts"] = exposed
    # an Env entry with no ``=`` is kept, as dockerd records it (unset in the process)
    given = [str(e) for e in body.get("Env") or ()]
    if any("=" not in e for e in given):
        keys = {e.partition("=")[0] for e in given}
        config["Env"] = given + [e for e in config.get("Env") or ()
                                 if e.partition("=")[0] not in keys]
    config["StdinOnce"] = bool(body.get("StdinOnce"))
    for k in ("AttachStdin", "AttachStdout", "AttachStderr"):
        config[k] = bool(body.get(k))
    if hcheck and list(hcheck.get("Test") or []) not in ([], ["NONE"]):
        config["Healthcheck"] = {k: v for k, v in hcheck.items() if v not in (None, 0) or k == "Test"}
    # dockerd's HostConfig fields the record has no flag for, kept as the client gave them so
    # inspect reports them (``VolumesFrom``, ``GroupAdd``, ``CpusetCpus``, ``UTSMode``…)
    hc = body.get("HostConfig") or {}
    host = dict(c.host_config)
    for key, _zero in HOST_CONFIG_ZERO:
        if key not in host and hc.get(key) not in (None, "", 0, [], {}):
            host[key] = hc[key]
    if "LogConfig" in hc and hc["LogConfig"]:
        host["LogConfig"] = {"Type": str(hc["LogConfig"].get("Type") or "json-file"),
                             "Config": dict(hc["LogConfig"].get("Config") or {})}
    updated = replace(c, config=ContainerConfig.from_json(config), host_config=host)
    ContainerStore(root).save_config(updated)
    return updated


@routes.post("/containers/create")
async def create(request: web.Request) -> web.Response:
    from builder.containers import service

    root = state_of(request)
    body = await json_body(request, required=True)
    name = request.query.get("name") or None
    o, hcheck, body = run_options(body, name)
    lc = (body.get("HostConfig") or {}).get("LogConfig") or {}
    try:
        LogDriver.check(lc.get("Type") or None, lc.get("Config"))
    except ContainerError as e:
        raise bad_request(str(e)) from None

    def work() -> Container:
        c = service.create(root, o)
        return _finish_config(root, c, body, hcheck)

    c = await in_thread(work)
    return web.json_response({"Id": c.id, "Warnings": []}, status=201)


# -- start / stop / restart / kill --------------------------------------------------------------
@routes.post("/containers/{id}/start")
async def start(request: web.Request) -> web.Response:
    from builder.containers import service

    root = state_of(request)
    c = await find(request)
    if c.state.running:
        return web.Response(status=304)
    from builder.serve import attach

    lc = c.host_config.get("LogConfig") or {}
    try:
        LogDriver.parse(lc.get("Type"), lc.get("Config"))
    except ContainerError as e:  # dockerd: 500 at start for a bad max-size/max-file
        raise ApiError(500, str(e)) from None
    waiting = attach.pending(request.app, c.id)
    c = await in_thread(lambda: service.start(root, c.id, attach_wait=waiting))
    return web.Response(status=204)


@routes.post("/containers/{id}/stop")
async def stop(request: web.Request) -> web.Response:
    from builder.containers import lifecycle

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
    from builder.containers import lifecycle, service

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
    from builder.containers import lifecycle
    from builder.containers.options import parse_signal

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
    import time

    from builder.containers import lifecycle
    from builder.containers.record import ContainerStore, NoSuchContainer

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
    from builder.containers import lifecycle
    from builder.containers.record import ContainerStore, NoSuchContainer

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
    from builder.containers import lifecycle

    root = state_of(request)
    new = request.query.get("name")
    if not new:
        raise bad_request("name is required: POST /containers/{id}/rename?name=NEW")
    c = await find(request)
    await in_thread(lambda: lifecycle.rename(root, c.id, new))
    return web.Response(status=204)


@routes.post("/containers/{id}/pause")
async def pause(request: web.Request) -> web.Response:
    from builder.containers import lifecycle

    c = await find(request)
    await in_thread(lifecycle.pause, state_of(request), c.id)
    return web.Response(status=204)


@routes.post("/containers/{id}/unpause")
async def unpause(request: web.Request) -> web.Response:
    from builder.containers import lifecycle

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
    from builder.containers import output

    root = state_of(request)
    c = await find(request)
    want_out, want_err = qbool(request, "stdout"), qbool(request, "stderr")
    if not (want_out or want_err):
        raise bad_request("Bad parameters: you must choose at least one stream")
    if (c.host_config.get("LogConfig") or {}).get("Type") == "none":
        raise ApiError(501, NO_READING)
    stamps = qbool(request, "timestamps")
    tty = bool(c.config.tty)
    stop = False
    try:
        entries = output.logs(root, c.id, tail=request.query.get("tail"),
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
    from builder.containers.inspect import top as processes

    c = await find(request)
    if not c.state.running:
        raise ApiError(409, f"Container {c.id} is not running")
    return web.json_response(await in_thread(processes, c))


# -- remove / prune ----------------------------------------------------------------------------
@routes.delete("/containers/{id}")
async def remove(request: web.Request) -> web.Response:
    from builder.containers import lifecycle

    root = state_of(request)
    c = await find(request)
    force, volumes = qbool(request, "force"), qbool(request, "v")
    if c.state.running and not force:
        raise ApiError(409, f"You cannot remove a running container {c.id}. "
                            "Stop the container before attempting removal or force remove")
    await in_thread(lambda: lifecycle.remove(root, c.id, force=force, volumes=volumes))
    return web.Response(status=204)


@routes.post("/containers/prune")
async def prune(request: web.Request) -> web.Response:
    from builder.containers import lifecycle

    root = state_of(request)
    filters = parse_filters(request.query.get("filters"))
    for k in filters:
        if k not in ("label", "until"):
            raise bad_request(f"invalid filter '{k}'")
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
