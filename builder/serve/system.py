"""System endpoints: ``/_ping``, ``/version``, ``/info``, ``/events`` (streamed), ``/system/df``."""

from __future__ import annotations

import asyncio
import os
import platform
import socket
import time
from typing import Any

from aiohttp import web

from builder import events
from builder.serve import API_VERSION, MIN_API_VERSION
from builder.serve.errors import bad_request
from builder.serve.streams import JsonStream, in_thread
from builder.state import StateRoot

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


def _arch() -> str:
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(m, m)


def version_info(app: web.Application) -> dict[str, Any]:
    version = str(app["version"])
    details = {"ApiVersion": API_VERSION, "Arch": _arch(), "BuildTime": "", "Experimental": "false",
               "GitCommit": "", "GoVersion": f"python{platform.python_version()}",
               "KernelVersion": platform.release(), "MinAPIVersion": MIN_API_VERSION,
               "Os": "linux"}
    return {
        "Platform": {"Name": "pybuild"},
        "Components": [{"Name": "Engine", "Version": version, "Details": details}],
        "Version": version,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": details["GoVersion"],
        "Os": "linux",
        "Arch": _arch(),
        "KernelVersion": platform.release(),
        "BuildTime": "",
    }


@routes.get("/version")
async def version(request: web.Request) -> web.Response:
    return web.json_response(version_info(request.app))


def _cgroup_version() -> str:
    return "2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "1"


def _mem_total() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


def _counts(state: StateRoot) -> dict[str, int]:
    from builder.containers import lifecycle

    out = {"Containers": 0, "ContainersRunning": 0, "ContainersPaused": 0,
           "ContainersStopped": 0}
    for c in lifecycle.list_containers(state, all=True):
        out["Containers"] += 1
        if c.state.running:
            out["ContainersRunning"] += 1
        else:
            out["ContainersStopped"] += 1
    # one per image ID, however many tags it has (as dockerd counts)
    out["Images"] = len({str(r.image_id or r.descriptor.digest)
                         for r in state.image_store().images()})
    return out


def info(state: StateRoot, app: web.Application) -> dict[str, Any]:
    """Docker's ``/info`` object, with what pybuild has (the rest in its zero form)."""
    counts = _counts(state)
    return {
        "ID": _daemon_id(state),
        **counts,
        "Driver": "overlay",
        "DriverStatus": [["Backing Filesystem", "overlayfs"]],
        "DockerRootDir": str(state.path),
        "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "macvlan", "null"],
                    "Authorization": None, "Log": ["json-file"]},
        "MemoryLimit": True, "SwapLimit": False, "KernelMemory": False, "CpuCfsPeriod": True,
        "CpuCfsQuota": True, "CPUShares": True, "CPUSet": True, "PidsLimit": True,
        "IPv4Forwarding": True, "BridgeNfIptables": True, "BridgeNfIp6tables": True,
        "Debug": False, "NFd": len(os.listdir("/proc/self/fd")),
        "OomKillDisable": False, "NGoroutines": 0, "SystemTime": time.strftime(
            "%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime()),
        "LoggingDriver": "json-file", "CgroupDriver": "cgroupfs",
        "CgroupVersion": _cgroup_version(), "NEventsListener": 0,
        "KernelVersion": platform.release(), "OperatingSystem": _os_name(), "OSVersion": "",
        "OSType": "linux", "Architecture": platform.machine(), "IndexServerAddress":
            "https://index.docker.io/v1/",
        "RegistryConfig": {"AllowNondistributableArtifactsCIDRs": [],
                           "AllowNondistributableArtifactsHostnames": [],
                           "InsecureRegistryCIDRs": ["127.0.0.0/8"], "IndexConfigs": {},
                           "Mirrors": []},
        "NCPU": os.cpu_count() or 1, "MemTotal": _mem_total(), "GenericResources": None,
        "HttpProxy": os.environ.get("HTTP_PROXY", ""), "HttpsProxy":
            os.environ.get("HTTPS_PROXY", ""), "NoProxy": os.environ.get("NO_PROXY", ""),
        "Name": socket.gethostname(), "Labels": [], "ExperimentalBuild": False,
        "ServerVersion": str(app["version"]), "Runtimes": {"runc": {"path": "runc"}},
        "DefaultRuntime": "runc", "Swarm": {"NodeID": "", "NodeAddr": "",
                                            "LocalNodeState": "inactive", "ControlAvailable":
                                                False, "Error": "", "RemoteManagers": None},
        "LiveRestoreEnabled": True, "Isolation": "", "InitBinary": "",
        "ContainerdCommit": {"ID": "", "Expected": ""}, "RuncCommit": {"ID": "", "Expected": ""},
        "InitCommit": {"ID": "", "Expected": ""}, "SecurityOptions": [],
        "Warnings": None,
    }


def _daemon_id(state: StateRoot) -> str:
    """A stable ID for this state root (dockerd keeps one in its root too)."""
    import uuid

    path = state.path / "engine-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        ident = str(uuid.uuid4()).upper()
        tmp = path.with_name(f".engine-id.{os.getpid()}")
        tmp.write_text(ident + "\n")
        try:
            os.link(tmp, path)  # first writer wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        return path.read_text().strip()


@routes.get("/info")
async def info_handler(request: web.Request) -> web.Response:
    state: StateRoot = request.app["state"]
    return web.json_response(await in_thread(info, state, request.app))


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
        await asyncio.sleep(EVENTS_POLL)
    return await stream.finish()


def disk_usage(state: StateRoot) -> dict[str, Any]:
    """``/system/df``: images (with how many containers use each), containers with their
    sizes, volumes with theirs; the build cache is not itemised (``BuildCache`` empty)."""
    from builder.containers import inspect as cinspect
    from builder.containers import lifecycle
    from builder.serve.images import image_summaries
    from builder.volume import store as volumes

    containers = lifecycle.list_containers(state, all=True)
    table = lifecycle.network_endpoints(state)
    images = image_summaries(state)
    per_image: dict[str, int] = {}
    for c in containers:
        per_image[c.image_id] = per_image.get(c.image_id, 0) + 1
    for img in images:
        img["Containers"] = per_image.get(img["Id"], 0)
    layers: set[str] = set()
    store = state.image_store()
    size = 0
    for rec in store.images():
        try:
            image = store.image(rec.descriptor)
        except Exception:  # noqa: BLE001 - an entry that does not resolve adds nothing
            continue
        for layer in image.layers:
            if str(layer.digest) not in layers:
                layers.add(str(layer.digest))
                size += layer.size
    users = volumes.containers_using(state)
    vols = []
    for v in volumes.list_volumes(state):
        d = v.to_json()
        d["UsageData"] = {"Size": volumes._du(v.mountpoint) if v.mountpoint.exists() else 0,
                          "RefCount": len(users.get(v.name, []))}
        vols.append(d)
    return {"LayersSize": size, "Images": images,
            "Containers": [cinspect.summary(state, c, table=table, size=True)
                           for c in containers],
            "Volumes": vols, "BuildCache": []}


@routes.get("/system/df")
async def system_df(request: web.Request) -> web.Response:
    return web.json_response(await in_thread(disk_usage, request.app["state"]))
