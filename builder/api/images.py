"""Image endpoints: ``/images/json``, ``/images/create`` (pull, or import with ``fromSrc``),
``/images/{name}/push|tag|json|history|get``, ``DELETE /images/{name}``, ``/images/prune``,
``/images/get`` and ``/images/load``: the library calls of ``pybuild images/pull/push/…``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, BinaryIO, cast

from aiohttp import web

from builder.api.auth import registry_auth
from builder.api.errors import bad_request, message_of, not_found
from builder.api.request import parse_filters
from builder.api.streams import (
    JsonStream,
    SyncReader,
    SyncWriter,
    error_message,
    in_thread,
    pump,
)
from builder.base import events
from builder.base.errors import BuildError
from builder.base.state import StateRoot
from builder.base.units import human_size
from registry.errors import InvalidReference, NotFound, RegistryError
from registry.model import Platform
from registry.reference import Reference

routes = web.RouteTableDef()

_CONFIGS = frozenset({"application/vnd.oci.image.config.v1+json",
                      "application/vnd.docker.container.image.v1+json"})
#: at most this often a "Downloading"/"Pushing" line per blob (the last one always goes)
PROGRESS_EVERY = 0.1


def _state(request: web.Request) -> StateRoot:
    state: StateRoot = request.app["state"]
    return state


def _flag(request: web.Request, name: str, default: bool = False) -> bool:
    v = request.query.get(name)
    if v is None:
        return default
    return v.lower() not in ("", "0", "false", "no")


def _filters(request: web.Request) -> dict[str, list[str]]:
    return parse_filters(request.query.get("filters"))


@routes.get("/images/json")
async def list_images(request: web.Request) -> web.Response:
    filters = _filters(request)
    if request.query.get("filter"):  # the pre-1.28 reference filter
        filters.setdefault("reference", []).append(request.query["filter"])
    from builder.runtime import images as library

    return web.json_response(await in_thread(
        lambda: library.summaries(_state(request).image_store(), filters=filters)))


# -- pull / import ------------------------------------------------------------------------------
def _bar(current: int, total: int) -> str:

    if total <= 0:
        return human_size(current)
    width = 50
    filled = min(width, int(width * current / total))
    arrow = "=" * max(filled - 1, 0) + (">" if filled else "")
    return f"[{arrow:<{width}}] {human_size(current)}/{human_size(total)}"


class _Progress:
    """Transfer ``Event``s into Docker's ``{"status", "progressDetail", "id"}`` messages."""

    def __init__(self, emit: Callable[[dict[str, Any]], None], *, push: bool) -> None:
        self.emit = emit
        self.push = push
        self._last: dict[str, float] = {}

    def __call__(self, ev: Any) -> None:
        if ev.media_type in _CONFIGS or ev.kind in ("manifest",):
            return
        if ev.kind == "retry":
            self.emit({"status": f"Retrying: {ev.detail}"})
            return
        if ev.digest is None:
            return
        ident = ev.digest.short
        if ev.kind == "start":
            self.emit({"status": "Preparing" if self.push else "Pulling fs layer",
                       "progressDetail": {}, "id": ident})
        elif ev.kind == "progress":
            now = time.monotonic()
            if now - self._last.get(ident, 0) < PROGRESS_EVERY and ev.current < ev.size:
                return
            self._last[ident] = now
            self.emit({"status": "Pushing" if self.push else "Downloading",
                       "progressDetail": {"current": ev.current, "total": ev.size},
                       "progress": _bar(ev.current, ev.size), "id": ident})
        elif ev.kind == "exists":
            self.emit({"status": "Layer already exists" if self.push else "Already exists",
                       "progressDetail": {}, "id": ident})
        elif ev.kind == "mounted":
            self.emit({"status": f"Mounted from {ev.detail}", "progressDetail": {}, "id": ident})
        elif ev.kind == "done":
            if self.push:
                self.emit({"status": "Pushed", "progressDetail": {}, "id": ident})
            else:
                self.emit({"status": "Download complete", "progressDetail": {}, "id": ident})
                self.emit({"status": "Pull complete", "progressDetail": {}, "id": ident})


def _pull_reference(from_image: str, tag: str) -> Reference:
    if not from_image:
        raise bad_request("fromImage or fromSrc is required")
    try:
        if tag:
            if tag.startswith("sha256:"):
                return Reference.parse(f"{from_image}@{tag}")
            return Reference.parse(f"{from_image}:{tag}")
        return Reference.parse(from_image)
    except InvalidReference as e:
        raise bad_request(f"invalid reference format: {e}") from None


async def _stream_call(request: web.Request, work: Callable[[Callable[[dict[str, Any]], None]],
                                                            Any]) -> tuple[JsonStream, Any]:
    """Run *work* streaming its messages. A failure before the first message is raised (so it
    gets its own status code); after it, it travels in the stream, as dockerd does."""
    stream = JsonStream(request)
    try:
        result = await pump(stream, work)
    except Exception as e:  # noqa: BLE001 - mapped as the middleware maps it
        if not stream.started:
            raise
        await stream.send(error_message(message_of(e)))
        return stream, None
    return stream, result


@routes.post("/images/create")
async def create_image(request: web.Request) -> web.StreamResponse:
    q = request.query
    if q.get("fromSrc"):
        return await _import(request)
    ref = _pull_reference(q.get("fromImage", ""), q.get("tag", ""))
    creds = registry_auth(request.headers)
    platform = None
    if q.get("platform"):
        try:
            platform = Platform.parse(q["platform"])
        except ValueError as e:
            raise bad_request(str(e)) from None
    state = _state(request)

    def work(emit: Callable[[dict[str, Any]], None]) -> Any:
        from registry.transfer import ClientOptions, pull_result

        # the first line goes with the first blob: a pull that fails before (unknown
        # repository, registry down) still gets its own status code, as from dockerd
        said = False

        def say(obj: dict[str, Any]) -> None:
            nonlocal said
            if not said:
                said = True
                emit({"status": f"Pulling from {ref.familiar_name}",
                      "id": ref.tag or str(ref.digest)})
            emit(obj)

        options = ClientOptions(credentials=creds)
        _img, result = pull_result(state.image_store(), str(ref), platform=platform,
                                   progress=_Progress(say, push=False),
                                   client_options=options)
        if not said:
            say({"status": f"Digest: {result.digest}"})
        else:
            emit({"status": f"Digest: {result.digest}"})
        status = "Downloaded newer image for" if result.copied else "Image is up to date for"
        emit({"status": f"Status: {status} {ref.familiar}"})
        events.emit(state, "image", "pull", ref.familiar, {"name": ref.familiar})
        return result

    stream, _result = await _stream_call(request, work)
    return await stream.finish()


async def _import(request: web.Request) -> web.StreamResponse:
    """``docker import``: ``fromSrc=-`` takes the rootfs tar from the body; ``changes`` are
    Dockerfile lines, as ``pybuild import -c``."""
    from registry import archive
    q = request.query
    if q["fromSrc"] != "-":
        raise bad_request("fromSrc: only '-' (the request body) is supported, not a URL")
    ref = None
    if q.get("repo"):
        ref = _pull_reference(q["repo"], q.get("tag", ""))
    from builder.imagebuild.graph import config_from_changes

    # a bad change is refused (400, naming the line) before the body is read
    config = config_from_changes(request.query.getall("changes", []))
    platform = None
    if q.get("platform"):
        try:
            platform = Platform.parse(q["platform"])
        except ValueError as e:
            raise bad_request(str(e)) from None
    state = _state(request)
    loop = asyncio.get_running_loop()
    body = cast(BinaryIO, SyncReader(request, loop))
    imported = await in_thread(lambda: archive.import_rootfs(
        state.image_store(), body, reference=ref, config=config,
        message=q.get("message") or None,
        platform=platform, source_name="-"))
    image_id = str(imported.config.digest)
    events.emit(state, "image", "import", image_id, {"name": ref.familiar if ref else image_id})
    stream = JsonStream(request)
    await stream.send({"status": image_id})
    return await stream.finish()


# -- push / tag -------------------------------------------------------------------------------
def _name(request: web.Request) -> str:
    return request.match_info["name"]


@routes.post("/images/{name:.+}/push")
async def push_image(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    name = _name(request)
    tag = request.query.get("tag", "")
    try:
        base = Reference.parse(name, default_tag=False)
    except InvalidReference as e:
        raise bad_request(f"invalid reference format: {e}") from None
    if tag:
        target = Reference.parse(f"{base.name}:{tag}")
    elif base.tag or base.digest:
        target = Reference.parse(name)
    else:
        target = Reference.parse(name)  # dockerd pushes every tag; :latest is what we push
    creds = registry_auth(request.headers)
    store = state.image_store()
    try:
        await in_thread(store.lookup, str(target))
    except NotFound:
        raise not_found(f"An image does not exist locally with the tag: {target.familiar}") from None

    def work(emit: Callable[[dict[str, Any]], None]) -> Any:
        from registry.transfer import ClientOptions, push

        emit({"status": f"The push refers to repository [{target.name}]"})
        options = ClientOptions(credentials=creds)
        result = push(store, str(target), str(target), progress=_Progress(emit, push=True),
                      client_options=options)
        t = target.tag or "latest"
        d = result.descriptor
        emit({"status": f"{t}: digest: {d.digest} size: {d.size}"})
        emit({"progressDetail": {}, "aux": {"Tag": t, "Digest": str(d.digest), "Size": d.size}})
        events.emit(state, "image", "push", target.familiar, {"name": target.familiar})
        return result

    stream, _result = await _stream_call(request, work)
    return await stream.finish()


@routes.post("/images/{name:.+}/tag")
async def tag_image(request: web.Request) -> web.Response:
    state = _state(request)
    repo = request.query.get("repo", "")
    tag = request.query.get("tag", "")
    if not repo:
        raise bad_request("repository name (repo) is required")
    try:
        target = Reference.parse(f"{repo}:{tag}" if tag else repo)
    except InvalidReference as e:
        raise bad_request(f"invalid reference format: {e}") from None
    if target.digest is not None:
        raise bad_request(f"refusing to create a tag with a digest reference: {repo}")
    store = state.image_store()
    source = _name(request)

    def tag_it() -> str:
        store.tag(source, target)
        return str(store.lookup(str(target)).image_id)

    image_id = await in_thread(tag_it)
    events.emit(state, "image", "tag", image_id, {"name": target.familiar})
    return web.Response(status=201)


# -- inspect / history --------------------------------------------------------------------------
@routes.get("/images/{name:.+}/json")
async def inspect_image(request: web.Request) -> web.Response:
    from builder.runtime import images as library

    store = _state(request).image_store()
    return web.json_response(await in_thread(library.inspect, store, _name(request)))


@routes.get("/images/{name:.+}/history")
async def image_history(request: web.Request) -> web.Response:
    from builder.runtime import images as library

    store = _state(request).image_store()
    return web.json_response(await in_thread(library.history, store, _name(request)))


# -- remove / prune -----------------------------------------------------------------------------
def _deletions(lines: list[str]) -> list[dict[str, str]]:
    out = []
    for line in lines:
        kind, _, what = line.partition(": ")
        out.append({kind.capitalize(): what})
    return out


@routes.delete("/images/{name:.+}")
async def remove_image(request: web.Request) -> web.Response:
    from builder.runtime import images as library

    state = _state(request)
    name = _name(request)
    force = _flag(request, "force")
    noprune = _flag(request, "noprune")

    def remove() -> list[str]:
        lines = library.remove(state, name, force=force)
        if not noprune:
            state.image_store().gc(wait=False)
        return lines

    lines = await in_thread(remove)  # the library's events
    return web.json_response(_deletions(lines))


@routes.post("/images/prune")
async def prune_images(request: web.Request) -> web.Response:
    from builder.runtime import images as library

    state = _state(request)
    filters = _filters(request)
    for key in filters:
        if key not in ("dangling",):
            raise bad_request(f"Invalid filter '{key}'")
    dangling = filters.get("dangling", ["true"])
    all_ = any(v.lower() in ("false", "0") for v in dangling)
    report = await in_thread(lambda: library.prune(state, all=all_))
    deleted = _deletions(list(report.deleted))  # the library's events
    return web.json_response({"ImagesDeleted": deleted or None,
                              "SpaceReclaimed": report.freed})


# -- save / load --------------------------------------------------------------------------------
async def _save(request: web.Request, names: list[str]) -> web.StreamResponse:
    from registry import archive

    state = _state(request)
    store = state.image_store()
    if not names:
        raise bad_request("names: at least one image is required")

    def check() -> None:
        for n in names:
            store.lookup(n)

    await in_thread(check)  # a missing image is a 404, before any byte of the tar
    response = web.StreamResponse(status=200)
    response.content_type = "application/x-tar"
    response.enable_chunked_encoding()
    await response.prepare(request)
    out = cast(BinaryIO, SyncWriter(response, asyncio.get_running_loop()))
    try:
        await in_thread(lambda: archive.save(store, names, out))
    except (ConnectionError, RuntimeError):
        return response  # the client went away: nothing of ours to undo
    for n in names:
        events.emit(state, "image", "save", n, {"name": n})
    await response.write_eof()
    return response


@routes.get("/images/get")
async def save_images(request: web.Request) -> web.StreamResponse:
    return await _save(request, request.query.getall("names", []))


@routes.get("/images/{name:.+}/get")
async def save_image(request: web.Request) -> web.StreamResponse:
    return await _save(request, [_name(request)])


@routes.post("/images/load")
async def load_images(request: web.Request) -> web.StreamResponse:
    from registry import archive

    state = _state(request)
    # ``quiet`` only silences progress bars in dockerd (the CLI sets it whenever its output
    # is not a terminal): the "Loaded image" lines always go
    body = cast(BinaryIO, SyncReader(request, asyncio.get_running_loop()))
    stream = JsonStream(request)
    try:
        loaded = await in_thread(lambda: archive.load(state.image_store(), body, source="request"))
    except (BuildError, RegistryError) as e:
        # as dockerd: a bad or truncated archive fails inside a 200 stream, as errorDetail
        await stream.send(error_message(message_of(e)))
        return await stream.finish()
    for item in loaded:
        if item.reference is not None:
            line = f"Loaded image: {item.reference.familiar}\n"
            events.emit(state, "image", "load", item.reference.familiar,
                        {"name": item.reference.familiar})
        else:
            line = f"Loaded image ID: {item.image_id}\n"
            events.emit(state, "image", "load", str(item.image_id), {"name": str(item.image_id)})
        await stream.send({"stream": line})
    return await stream.finish()
