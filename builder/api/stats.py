"""``GET /containers/{id}/stats`` (one answer, or JSON lines once a second) and
``POST /containers/{id}/update``: thin shells over ``builder.runtime.containers.stats``."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from aiohttp import web

from builder.api.errors import ApiError, bad_request
from builder.api.request import find, json_body, qbool, state_of
from builder.api.streams import in_thread
from builder.base.errors import ContainerError
from builder.runtime.containers.options import RestartPolicy

routes = web.RouteTableDef()


@routes.get("/containers/{id}/stats")
async def stats(request: web.Request) -> web.StreamResponse:
    from builder.runtime.containers import stats as lib

    root = state_of(request)
    c = await find(request)
    one_shot = qbool(request, "one-shot")
    if not qbool(request, "stream", True):
        return web.json_response(await in_thread(lambda: lib.stats(root, c.id, one_shot=one_shot)))
    if one_shot:
        raise bad_request("cannot have stream=true and one-shot=true")
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    samples = lib.stream(root, c.id)
    while True:
        s = await in_thread(next, samples, None)
        if s is None:
            break
        try:
            await response.write(json.dumps(s).encode() + b"\n")
        except (ConnectionError, RuntimeError):
            break  # the client went away
    samples.close()
    with contextlib.suppress(ConnectionError, RuntimeError):  # the client went away
        await response.write_eof()
    return response


#: UpdateConfig fields a client may send that pybuild does not apply: refused when set, not ignored
UNSUPPORTED = ("CpuPeriod", "CpuQuota", "CpuRealtimePeriod", "CpuRealtimeRuntime", "CpusetCpus", "CpusetMems",
               "MemoryReservation", "KernelMemory", "KernelMemoryTCP", "BlkioWeight", "BlkioWeightDevice",
               "BlkioDeviceReadBps", "BlkioDeviceWriteBps", "BlkioDeviceReadIOps", "BlkioDeviceWriteIOps",
               "CpuCount", "CpuPercent", "MemorySwappiness", "OomKillDisable", "Devices", "DeviceCgroupRules")


def _int(body: dict[str, Any], key: str) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise bad_request(f"invalid {key} {v!r}: an integer is expected")
    return v


@routes.post("/containers/{id}/update")
async def update(request: web.Request) -> web.Response:
    from builder.runtime.containers import stats as lib
    from builder.runtime.containers.record import NoSuchContainer

    body = await json_body(request)
    for key in UNSUPPORTED:
        if body.get(key):
            raise bad_request(f"{key} is not supported by pybuild update (Memory, MemorySwap, NanoCpus, "
                              "CpuShares, PidsLimit and RestartPolicy are)")
    policy = None
    rp = body.get("RestartPolicy")
    if isinstance(rp, dict) and rp.get("Name"):
        try:
            policy = RestartPolicy.parse(str(rp["Name"]))
        except ContainerError as e:
            raise bad_request(str(e)) from None
        count = rp.get("MaximumRetryCount") or 0
        if not isinstance(count, int) or count < 0 or (count and policy.name != "on-failure"):
            raise bad_request(f"invalid RestartPolicy.MaximumRetryCount {count!r}: a count >= 0, for on-failure only")
        policy = RestartPolicy(policy.name, count)
    # Docker's UpdateConfig: 0 leaves a limit as it is; PidsLimit 0 or -1 lifts it
    change = lib.Update(
        memory=_int(body, "Memory") or None, memory_swap=_int(body, "MemorySwap") or None,
        nano_cpus=_int(body, "NanoCpus") or None, cpu_shares=_int(body, "CpuShares") or None,
        pids_limit=_int(body, "PidsLimit"), restart_policy=policy)
    c = await find(request)
    try:
        _c, warnings = await in_thread(lib.update, state_of(request), c.id, change)
    except ContainerError as e:
        if isinstance(e, NoSuchContainer):  # removed meanwhile: the 404 of every endpoint
            raise
        raise ApiError(500 if str(e).startswith("Cannot update") else 400, str(e)) from None
    return web.json_response({"Warnings": warnings})
