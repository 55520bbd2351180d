"""``POST /build``: the classic builder's API over ``builder.imagebuild.pipeline.run_build`` (``builder.build``).

The body is the context as a tar (plain or compressed), unpacked into a private directory under
the state root (no path may leave it; device nodes are refused) and removed after the build.
Output is Docker's stream: ``{"stream": text}`` lines (our plain progress), then
``{"aux": {"ID": ...}}`` and the ``Successfully built/tagged`` lines docker-py reads; a failure
after the first line travels as ``{"error", "errorDetail"}``. A client that goes away cancels
the build (as dockerd does): nothing is tagged, a running RUN step is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, cast

from aiohttp import web

from builder.api.auth import registry_config
from builder.api.errors import ApiError, bad_request, message_of
from builder.api.streams import JsonStream, SyncReader, error_message, in_thread, pump
from builder.base.errors import BuildError, DockerfileSyntaxError
from builder.base.state import StateRoot
from registry.errors import RegistryError
from registry.model import Platform
from registry.values import replace

routes = web.RouteTableDef()

#: the wrapping of a RUN's stderr in the stream, as dockerd's
RED, RESET = "\x1b[91m", "\x1b[0m"

#: how often a running build checks that its client is still there
CANCEL_POLL = 0.2


def _json_map(request: web.Request, name: str) -> dict[str, str]:
    text = request.query.get(name)
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except ValueError:
        raise bad_request(f"invalid {name}: not JSON") from None
    if not isinstance(raw, dict):
        raise bad_request(f"invalid {name}: not a JSON object")
    # a null build-arg value means "from the environment" in the CLI; the client resolved it
    return {str(k): str(v) for k, v in raw.items() if v is not None}


def _cache_from(request: web.Request) -> tuple[str, ...]:
    """``cachefrom``: a JSON list of image references (the docker CLI's ``--cache-from``), each
    a registry cache source as BuildKit takes a bare reference (its inline records, or a cache
    manifest ``--cache-to type=registry`` wrote); one that cannot be read is a warning line and
    the build goes on without it, as dockerd skips an image it cannot find. Not a list of
    strings: dockerd's 500."""
    text = request.query.get("cachefrom")
    if not text:
        return ()
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise ApiError(500, f"invalid cachefrom: {e}") from None
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise ApiError(500, "json: cannot unmarshal cachefrom into Go value of type []string")
    return tuple(x for x in raw if x)


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true", "yes")


def unpack_context(stream: BinaryIO, dest: Path) -> None:
    """Unpack a (maybe compressed) tar stream into *dest*, refusing what would leave it."""
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                if member.isdev():
                    raise bad_request(f"build context: {member.name}: device files are not "
                                      f"allowed in a context")
                if member.islnk():  # a hard link must name a file of the context itself
                    target = os.path.realpath(os.path.join(dest, member.linkname))
                    if os.path.commonpath([target, str(dest.resolve())]) != str(dest.resolve()):
                        raise bad_request(f"build context: {member.name}: hard link to "
                                          f"{member.linkname!r} outside the context")
                try:
                    tar.extract(member, dest, filter="tar")
                except tarfile.FilterError as e:
                    raise bad_request(f"build context: {e}") from None
    except tarfile.ReadError as e:
        raise bad_request(f"build context is not a tar archive: {e}") from None
    except EOFError:
        raise bad_request("build context: unexpected end of the tar archive") from None


def _dockerfile_path(ctx: Path, name: str) -> str:
    """The Dockerfile named relative to the context, never outside it."""
    path = (ctx / (name or "Dockerfile")).resolve()
    if not path.is_relative_to(ctx.resolve()):
        raise bad_request(f"dockerfile {name!r}: outside the build context")
    if not name and not path.exists() and (ctx / "dockerfile").exists():
        path = (ctx / "dockerfile").resolve()
    if not path.is_file():
        raise bad_request(f"Cannot locate specified Dockerfile: {name or 'Dockerfile'}")
    return str(path)


class _Lines(io.TextIOBase):
    """A text sink for ``PlainProgress``: each write becomes a ``{"stream": ...}`` message."""

    def __init__(self, emit: Callable[[dict[str, Any]], None]) -> None:
        self._emit = emit

    def write(self, s: str) -> int:
        if s:
            self._emit({"stream": s})
        return len(s)

    def flush(self) -> None:
        pass


@routes.post("/build")
async def build(request: web.Request) -> web.StreamResponse:
    from builder.imagebuild.pipeline import BuildRequest

    state: StateRoot = request.app["state"]
    q = request.query
    if q.get("remote"):
        raise bad_request("remote build contexts (git or URL) are not supported; send the "
                          "context as the request body")
    tags = tuple(t for t in q.getall("t", []) if t)
    build_args = _json_map(request, "buildargs")
    labels = _json_map(request, "labels")
    quiet = _flag(request, "q")
    auth = registry_config(request.headers)
    if q.get("platform"):
        try:
            Platform.parse(q["platform"])
        except ValueError as e:
            raise bad_request(str(e)) from None
    extra_hosts = tuple(h for h in q.getall("extrahosts", []) if h)
    cache_from = _cache_from(request)
    network = q.get("networkmode") or None
    if network == "default":
        network = None

    tmp = Path(tempfile.mkdtemp(prefix="build-", dir=state.area("tmp")))
    ctx = tmp / "context"
    ctx.mkdir()
    try:
        body = cast(BinaryIO, SyncReader(request, asyncio.get_running_loop()))
        await in_thread(unpack_context, body, ctx)
        dockerfile = _dockerfile_path(ctx, q.get("dockerfile", ""))
        req = BuildRequest(
            context=str(ctx), dockerfile=dockerfile, tags=tags, build_args=build_args,
            target=q.get("target") or None, no_cache=_flag(request, "nocache"), labels=labels,
            jobs=os.cpu_count() or 1, platform=q.get("platform") or None, network=network,
            extra_hosts=extra_hosts, cache_from=cache_from,
            registry_auth=dict(auth), cancel=threading.Event())
        stream = JsonStream(request)
        failed_steps: list[str] = []
        watcher = asyncio.create_task(_cancel_when_gone(request, stream, req.cancel))

        def work(emit: Callable[[dict[str, Any]], None]) -> Any:
            from builder.imagebuild.pipeline import run_build
            from builder.imagebuild.progress import PlainProgress

            plain = None if quiet else PlainProgress(cast(Any, _Lines(emit)))

            def progress(e: Any) -> None:
                if e.kind == "error":
                    failed_steps.append(e.name)
                if plain is not None:
                    if e.kind == "log" and e.stream == "stderr":
                        # as dockerd's classic builder: a RUN's stderr in red
                        e = replace(e, text=f"{RED}{e.text}{RESET}")
                    plain(e)

            outcome = run_build(state, req, progress=progress)
            image_id = str(outcome.image_id)
            if quiet:
                emit({"stream": image_id + "\n"})
            emit({"aux": {"ID": image_id}})
            if not quiet:
                emit({"stream": f"Successfully built {outcome.image_id.short}\n"})
                for t in outcome.tags:
                    emit({"stream": f"Successfully tagged {t}\n"})
            return outcome

        try:
            await pump(stream, work)  # run_build tags, and records the events
        except Exception as e:  # noqa: BLE001 - mapped as the middleware maps it
            watcher.cancel()
            # as dockerd: past the Dockerfile's parse, a failure (a base image not pulled, an
            # ADD or COPY source) travels in the 200 stream as errorDetail
            in_stream = isinstance(e, (BuildError, RegistryError)) and not isinstance(
                e, (DockerfileSyntaxError, ApiError))
            if not stream.started and not in_stream:
                raise
            code = getattr(e, "exit_status", None)
            text = message_of(e)
            if code is not None and failed_steps:
                text = run_failure(failed_steps[-1], int(code)) or text
            detail = error_message(text)
            if code is not None:
                detail["errorDetail"]["code"] = code
            await stream.send(detail)
            return await stream.finish()
        watcher.cancel()
        return await stream.finish()
    finally:
        await in_thread(_cleanup, state, tmp)


_STEP_RE = re.compile(r"^\[[^\]]*\] RUN\s+(.*)$", re.S)


def run_failure(step_name: str, code: int) -> str | None:
    """dockerd's words for a RUN that exited non-zero, from the step's name (``[2/3] RUN x``):
    ``The command '/bin/sh -c x' returned a non-zero code: N`` (an exec form's argv joined)."""
    m = _STEP_RE.match(step_name)
    if not m:
        return None
    cmd = m.group(1).strip()
    while cmd.startswith("--"):  # RUN flags (--mount, --network…) are not the command
        cmd = cmd.split(None, 1)[1] if " " in cmd else ""
    text = f"/bin/sh -c {cmd}"
    if cmd.startswith("["):
        with contextlib.suppress(ValueError):
            argv = json.loads(cmd)
            if isinstance(argv, list) and all(isinstance(a, str) for a in argv):
                text = " ".join(argv)
    return f"The command '{text}' returned a non-zero code: {code}"


async def _cancel_when_gone(request: web.Request, stream: JsonStream,
                            cancel: threading.Event) -> None:
    """Cancel the build when its client goes away or the daemon stops, as dockerd does: steps
    not started are skipped, a running RUN is killed, nothing is tagged."""
    stopping: asyncio.Event = request.app["stopping"]
    while True:
        transport = request.transport
        if stream.closed or transport is None or transport.is_closing() or stopping.is_set():
            cancel.set()
            return
        await asyncio.sleep(CANCEL_POLL)


def _cleanup(state: StateRoot, tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)
    from builder.imagebuild.context import HashMemo

    memo = HashMemo(state.cache / "filehash.json")
    memo.forget(str(tmp.resolve()))
    memo.save()
