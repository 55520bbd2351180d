"""``pybuild build`` and ``pybuild builder prune``: flags in, one library call, progress drawn.

Progress: a live view on a terminal, ``#n`` lines as BuildKit prints them otherwise, or raw JSON.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from builder.base import units
from builder.base.errors import StepFailed
from builder.cli import Globals, flags
from builder.cli.dockerfile import check_option

TYPE_CHECKING = False  # not ``typing``'s: a build loads no ``typing`` (~6 ms)
if TYPE_CHECKING:
    from typing import Any, TextIO

    from builder.imagebuild.solver import Event


# -- progress renderers ----------------------------------------------------------------------------
class JsonProgress:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, e: Event) -> None:
        d = {"kind": e.kind, "id": e.id, "name": e.name, "stage": e.stage, "location": e.location,
             "text": e.text, "elapsed": round(e.elapsed, 6), "time": e.time}
        self.out.write(json.dumps(d, sort_keys=True) + "\n")
        self.out.flush()

    def close(self) -> None:
        pass


class TtyProgress:
    """A live view redrawn in place: one line per step (status, elapsed, CACHED), the last log
    lines of running steps under them."""

    TAIL = 6

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.t0 = time.monotonic()
        self.steps: dict[int, dict[str, Any]] = {}
        self.warnings: list[str] = []
        self.lines_drawn = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def __call__(self, e: Event) -> None:
        with self.lock:
            s = self.steps.setdefault(e.id, {"name": e.name, "state": "", "start": time.monotonic(),
                                             "elapsed": None, "logs": [], "miss": ""})
            if e.kind == "start":
                s["state"] = "running"
            elif e.kind == "cached":
                s["state"] = f"CACHED ({e.text})" if e.text else "CACHED"
            elif e.kind == "done":
                s["state"] = "DONE"
                s["elapsed"] = e.elapsed
            elif e.kind == "log":
                s["logs"] = (s["logs"] + [e.text])[-self.TAIL:]
            elif e.kind == "miss":
                s["miss"] = e.text
            elif e.kind == "error":
                s["state"] = "ERROR"
            elif e.kind == "warning":
                self.warnings.append(e.text)
            elif e.kind == "export":
                s["name"] = e.text
                s["state"] = "DONE"

    def _render(self) -> list[str]:
        import shutil  # a terminal's progress only: a build's budget bars shutil (its archives)

        width = shutil.get_terminal_size((100, 20)).columns
        now = time.monotonic()
        lines = [f"[+] Building {now - self.t0:.1f}s"]
        for _id, s in sorted(self.steps.items()):
            if not s["name"]:
                continue
            el = s["elapsed"] if s["elapsed"] is not None else now - s["start"]
            state = s["state"]
            mark = state if state.startswith("CACHED") else f"{el:.1f}s"
            prefix = " => " if state == "DONE" or state.startswith("CACHED") else " => ERROR " if state == "ERROR" else " => "
            text = f"{prefix}{s['name']}"
            lines.append(text[: max(width - len(mark) - 2, 10)].ljust(max(width - len(mark) - 1, 10)) + mark)
            if state == "running":
                if s["miss"]:
                    lines.append(f" => => # cache miss: {s['miss']}"[: width - 1])
                for log in s["logs"]:
                    lines.append(f" => => # {log}"[: width - 1])
        return lines

    def _draw(self) -> None:
        with self.lock:
            lines = self._render()
            buf = ""
            if self.lines_drawn:
                buf += f"\x1b[{self.lines_drawn}F"
            for line in lines:
                buf += "\x1b[2K" + line + "\n"
            buf += "\x1b[J"  # the view may have shrunk: clear what was drawn below it
            self.lines_drawn = len(lines)
            self.out.write(buf)
            self.out.flush()

    def _loop(self) -> None:
        while not self.stop.wait(0.1):
            self._draw()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self._draw()
        for w in self.warnings:
            self.out.write(f"WARNING: {w}\n")
        self.out.flush()


def make_progress(mode: str, quiet: bool) -> Any:
    if quiet:
        return None
    out = sys.stderr
    if mode == "auto":
        mode = "tty" if out.isatty() and os.environ.get("TERM") != "dumb" else "plain"
    if mode == "tty":
        return TtyProgress(out)
    if mode == "rawjson":
        return JsonProgress(out)
    # here, not at the top: the CLI modules the listings load keep it out of their start-up
    from builder.imagebuild.progress import PlainProgress

    return PlainProgress(out)


# -- sizes -----------------------------------------------------------------------------------------
def parse_size(text: str) -> int:
    size = units.parse_size(text)
    if size is None:
        raise flags.BadParameter(f"invalid size {text!r} (e.g. 512MB, 2GB)")
    return size


# -- commands --------------------------------------------------------------------------------------
@flags.command("build")
@check_option
@flags.argument("context", metavar="PATH|-")
@flags.option("-t", "--tag", "tags", multiple=True, help="Name and optionally a tag (name:tag).")
@flags.option("-f", "--file", "dockerfile", default=None, help="Dockerfile (default PATH/Dockerfile; - for stdin).")
@flags.option("--build-arg", "build_args", multiple=True, help="Set a build-time variable (K=V or K).")
@flags.option("--target", default=None, help="The stage to build.")
@flags.option("--no-cache", is_flag=True, help="Do not use the cache.")
@flags.option("--no-cache-filter", "no_cache_filter", multiple=True, help="Do not cache these stages.")
@flags.option("--label", "labels", multiple=True, help="Set metadata (K=V).")
@flags.option("--progress", type=flags.Choice(["auto", "tty", "plain", "rawjson"]), default="auto")
@flags.option("-q", "--quiet", is_flag=True, help="Print only the image ID.")
@flags.option("--iidfile", default=None, help="Write the image ID to this file.")
@flags.option("-o", "--output", "outputs", multiple=True,
              help="type=oci|docker|tar,dest=FILE or type=local,dest=DIR.")
@flags.option("--secret", "secrets", multiple=True, help="id=ID[,src=FILE|,env=VAR].")
@flags.option("--ssh", "ssh", multiple=True,
              help="SSH agent socket or keys for RUN --mount=type=ssh: default|ID[=SOCKET|KEY[,KEY]].")
@flags.option("--jobs", "-j", type=int, default=None, help="Stages built in parallel (default: cores).")
@flags.option("--compression", type=flags.Choice(["gzip", "zstd", "uncompressed"]), default="gzip")
@flags.option("--cache-from", "cache_from", multiple=True,
              help="Cache source: type=registry,ref=REF | type=local,src=DIR | REF.")
@flags.option("--cache-to", "cache_to", multiple=True,
              help="Cache export: type=registry,ref=REF[,mode=min|max][,compression=gzip|zstd]"
                   "[,cache-mounts=true] | type=local,dest=DIR | type=inline.")
@flags.option("--platform", default=None,
              help="Target platform(s): os/arch[/variant][,…] (several: an image index).")
@flags.option("--push", is_flag=True, help="Push the tags once built.")
@flags.option("--network", default=None, help="Default network mode of RUN (default|none|host).")
@flags.option("--isolation", type=flags.Choice(["default", "oci", "chroot"]), default="default",
              help="RUN's isolation: chroot (Buildah's) where user namespaces are not allowed.")
@flags.pass_obj
def build(g: Globals, context: str, tags: tuple[str, ...], dockerfile: str | None,
          build_args: tuple[str, ...], target: str | None, no_cache: bool,
          no_cache_filter: tuple[str, ...], labels: tuple[str, ...], progress: str, quiet: bool,
          iidfile: str | None, outputs: tuple[str, ...], secrets: tuple[str, ...],
          jobs: int | None, compression: str, platform: str | None, network: str | None,
          ssh: tuple[str, ...], push: bool, cache_from: tuple[str, ...],
          cache_to: tuple[str, ...], isolation: str) -> None:
    """Build an image from a Dockerfile and a context directory."""
    from builder.imagebuild.pipeline import BuildRequest, parse_outputs, parse_secrets, run_build

    if isolation == "chroot":  # read by the sandbox (builder.core.sandbox.spec.build_namespaces)
        from builder.core.sandbox.spec import (
            BARE_CHROOT_WARNING,
            CHROOT_WARNING,
            ISOLATION_ENV,
            bare_chroot,
        )

        os.environ[ISOLATION_ENV] = "chroot"
        flags.echo(BARE_CHROOT_WARNING if bare_chroot() else CHROOT_WARNING, err=True)

    args: dict[str, str] = {}
    for a in build_args:
        k, sep, v = a.partition("=")
        if not sep:
            if k not in os.environ:
                continue  # Docker: a bare name takes the environment's value, if any
            v = os.environ[k]
        args[k] = v
    label_map: dict[str, str] = {}
    for lab in labels:
        k, _, v = lab.partition("=")
        label_map[k] = v
    stdin_text = None
    if context == "-" or dockerfile == "-":
        stdin_text = sys.stdin.read()
    req = BuildRequest(
        context=None if context == "-" else context,
        dockerfile=dockerfile,
        dockerfile_text=stdin_text,
        tags=tuple(tags),
        build_args=args,
        target=target,
        no_cache=no_cache,
        no_cache_filter=frozenset(no_cache_filter),
        labels=label_map,
        outputs=parse_outputs(outputs),
        secrets=parse_secrets(secrets),
        ssh=tuple(ssh),
        jobs=jobs or os.cpu_count() or 1,
        compression="none" if compression == "uncompressed" else compression,
        platform=platform,
        network=network,
        cache_from=tuple(cache_from),
        cache_to=tuple(cache_to),
    )
    renderer = make_progress(progress, quiet)
    try:
        outcome = run_build(g.state, req, progress=renderer)
    except StepFailed as e:
        if renderer is not None:
            renderer.close()
            renderer = None
        # Docker's failure block: the step, then the last lines it printed
        flags.echo("------", err=True)
        flags.echo(f" > {e.location}:", err=True)
        for line in e.log_tail:
            flags.echo(f"{line}", err=True)
        flags.echo("------", err=True)
        raise
    finally:
        if renderer is not None:
            renderer.close()
    if push:
        from builder.base.platforms import push_tags

        push_tags(g.state, outcome.tags)
    if iidfile:
        with open(iidfile, "w") as f:
            f.write(str(outcome.image_id))
    if quiet:
        flags.echo(str(outcome.image_id))
    else:
        flags.echo(f"Built {outcome.image_id}" + (f" as {', '.join(outcome.tags)}" if outcome.tags else ""),
                   err=True)


@flags.group("builder")
def builder_group() -> None:
    """Manage the build cache."""


@builder_group.command("prune")
@flags.option("-a", "--all", "all_", is_flag=True, help="Remove all build cache, not just old records.")
@flags.option("--keep-storage", default=None, help="Keep at most this much cache (e.g. 1GB).")
@flags.option("-f", "--force", is_flag=True, help="Do not prompt (accepted for Docker compatibility).")
@flags.pass_obj
def prune(g: Globals, all_: bool, keep_storage: str | None, force: bool) -> None:
    """Remove build cache records and the layers only they held (and what killed builds left)."""
    from builder.imagebuild.cache import BuildCache
    from builder.system.engine import prune_killed_builds

    state = g.state
    cache = BuildCache(state.cache, state.image_store(), layers=state.layers)
    keep = parse_size(keep_storage) if keep_storage is not None else None
    freed = prune_killed_builds(state)
    res = cache.prune(all=all_, keep_storage=keep)
    from builder.imagebuild.fsck import reap_unused_layers

    freed += reap_unused_layers(state)  # layers only the pruned records named
    flags.echo(f"Deleted build cache objects: {res.records}")
    flags.echo(f"Total reclaimed space: {units.human_size(res.freed + freed, 4)}")  # go-units HumanSize


builder = builder_group
