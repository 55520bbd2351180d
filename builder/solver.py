"""Walks a build graph: cache lookup first, else execution; independent stages in parallel.

Reports progress as ``Event`` values through a callback; writes layers, then the final config
and manifest, to the store. Never prints.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from builder.cache import BuildCache, CacheRecord
from builder.context import Tree
from builder.errors import BuildCancelled
from builder.graph.ops import Graph, StagePlan, Step
from builder.state import StateRoot
from registry import mediatypes as mt
from registry.compression import LayerEncoder

if TYPE_CHECKING:
    from builder.workspace import Workspace
from registry.digest import Digest
from registry.model import Descriptor, ImageConfig, Manifest
from registry.store import Image, Store

EventKind = Literal["stage", "start", "cached", "done", "log", "miss", "warning", "error", "export"]


@dataclass(frozen=True)
class Event:
    """One progress event. ``id`` numbers the vertex (step) as ``#n`` in plain output."""

    kind: EventKind
    id: int = 0
    name: str = ""
    stage: str = ""
    location: str = ""
    text: str = ""
    elapsed: float = 0.0
    time: float = field(default_factory=time.time)


Progress = Callable[[Event], None]


@dataclass(frozen=True)
class LayerRef:
    descriptor: Descriptor
    diff_id: Digest
    #: made by a build step (so it may be recompressed for the image), not from a base image
    built: bool = False
    #: only unpacked in the layer cache (``diff_id`` is a stand-in): no blob until an image needs it
    snapshot: bool = False


@dataclass(frozen=True)
class StageResult:
    plan: StagePlan
    layers: tuple[LayerRef, ...]
    #: history entries; those this build added may lack "created" until ``dated`` fills it
    history: tuple[dict[str, Any], ...]
    #: how many entries at the start of ``history`` come from the base image
    inherited: int = 0

    @property
    def key(self) -> str:
        return self.plan.key


@dataclass(frozen=True)
class BuildResult:
    image: Image
    stage: StageResult
    executed: tuple[str, ...]  # names of the steps that ran (cache misses)
    cached: tuple[str, ...]

    @property
    def image_id(self) -> Digest:
        return self.image.id


@dataclass
class SolveOptions:
    jobs: int = 2
    no_cache: bool = False
    no_cache_filter: frozenset[str] = frozenset()
    compression: str = "gzip"
    secrets: dict[str, bytes] = field(default_factory=dict)
    explain: bool = True


Cancelled = BuildCancelled


def rfc3339(epoch: float) -> str:
    dt = datetime.fromtimestamp(epoch, UTC)
    if epoch == int(epoch):
        return dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Solver:
    """Builds the stages of one ``Graph`` into layers in *state*'s store."""

    def __init__(self, state: StateRoot, *, options: SolveOptions | None = None,
                 progress: Progress | None = None, context: Tree | None = None) -> None:
        self.state = state
        self.context = context
        self.store: Store = state.image_store()
        self.cache = BuildCache(state.cache, self.store, layers=state.layers)
        self.options = options or SolveOptions()
        self._progress = progress or (lambda e: None)
        self._lock = threading.Lock()
        self._next_id = 0
        self._cancel = threading.Event()
        self.executed: list[str] = []
        self.cached: list[str] = []
        self.created = time.time()
        self._image_stages: set[int] = set()
        self._from_shown: dict[str, int] = {}
        self._used_workspace = False

    # -- events ----------------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        with self._lock:
            self._progress(event)

    def _vertex(self) -> int:
        with self._lock:
            self._next_id += 1
            return self._next_id

    # -- whole build -----------------------------------------------------------------------------
    def solve(self, graph: Graph) -> dict[int, StageResult]:
        """Build every stage the target needs; returns results by stage index."""
        needed = graph.needed()
        # Stages whose layers end up in the image: the target and its FROM ancestors. The
        # others (only copied or mounted from) keep their layers uncompressed, as BuildKit
        # keeps snapshots: nothing spends time compressing what no image will carry.
        self._image_stages = set()
        i: int | None = graph.target
        while i is not None:
            self._image_stages.add(i)
            base = graph.stage(i).base
            i = base.stage if base.kind == "stage" else None
        # BuildKit shows one FROM vertex per image (the same op in every stage using it)
        self._from_shown = {}
        for s in needed:
            if s.base.kind == "image":
                self._from_shown.setdefault(s.base.key, s.index)
        results: dict[int, StageResult] = {}
        pending = {s.index: s for s in needed}
        running: dict[Future[StageResult], int] = {}
        error: BaseException | None = None
        with self.cache.using(), ThreadPoolExecutor(max_workers=max(self.options.jobs, 1)) as pool:
            try:
                while pending or running:
                    if error is None:
                        for idx, plan in sorted(pending.items()):
                            if all(d in results for d in plan.deps):
                                running[pool.submit(self._stage, graph, plan, results)] = idx
                                del pending[idx]
                    if not running:
                        break
                    # a timeout keeps this (main) thread responsive to Ctrl-C: a SIGINT the
                    # kernel hands to a worker thread cannot wake a lock wait without one
                    done, _ = wait(list(running), timeout=0.2, return_when=FIRST_COMPLETED)
                    for fut in done:
                        idx = running.pop(fut)
                        try:
                            results[idx] = fut.result()
                        except BaseException as e:  # noqa: BLE001 - first error wins, others wait
                            if error is None:
                                error = e
                            self._cancel.set()
                            pending.clear()
            except BaseException:
                self._cancel.set()
                raise
            finally:
                if self._used_workspace:  # (a fully cached build never loads the module)
                    from builder.workspace import drain_trash

                    drain_trash()
        if error is not None:
            raise error
        return results

    def build(self, graph: Graph) -> tuple[StageResult, dict[int, StageResult]]:
        results = self.solve(graph)
        return results[graph.target], results

    # -- one stage -------------------------------------------------------------------------------
    def _base(self, plan: StagePlan, results: dict[int, StageResult]) -> tuple[list[LayerRef], list[dict[str, Any]]]:
        b = plan.base
        if b.kind == "stage":
            assert b.stage is not None
            r = results[b.stage]
            return list(r.layers), list(r.history)
        if b.kind == "image":
            assert b.image is not None
            img = b.image
            layers = [LayerRef(d, i) for d, i in zip(img.manifest.layers, img.config.diff_ids, strict=False)]
            return layers, list(plan.base_history)
        return [], []

    def _stage(self, graph: Graph, plan: StagePlan, results: dict[int, StageResult]) -> StageResult:
        layers, history = self._base(plan, results)
        # BuildKit counts only what makes a vertex: FROM an image, then RUN/COPY/ADD/WORKDIR;
        # FROM scratch or an earlier stage shows no line.
        from_image = plan.base.kind == "image"
        total = sum(1 for s in plan.steps if s.changes_fs) + (1 if from_image else 0)
        width = len(str(total))
        label = f"{plan.display} " if plan.name or graph.multi_stage else ""
        n = 1 if from_image else 0
        if from_image and self._from_shown.get(plan.base.key, plan.index) == plan.index:
            self.emit(Event("cached", self._vertex(),
                            f"[{label}{n:>{width}}/{total}] FROM {_full_name(plan.base.name)}",
                            plan.display))
        no_cache = self.options.no_cache or (plan.name or "") in self.options.no_cache_filter \
            or str(plan.index) in self.options.no_cache_filter
        missed = False
        for step in plan.steps:
            if self._cancel.is_set():
                raise Cancelled("build cancelled")
            entry: dict[str, Any] = {"created_by": step.created_by, "comment": step.comment}
            if graph.epoch is not None:
                entry["created"] = rfc3339(graph.epoch)
            if not step.changes_fs:
                if step.history:
                    entry["empty_layer"] = True
                    history.append(entry)
                continue
            n += 1
            name = f"[{label}{n:>{width}}/{total}] {step.name}"
            vid = self._vertex()
            rec = None if no_cache else self.cache.get(step.key)
            if rec is not None and rec.snapshot and not self._snapshot_present(rec):
                rec = None
            if rec is not None:
                self.emit(Event("cached", vid, name, plan.display, step.location))
                with self._lock:
                    self.cached.append(step.name)
            else:
                self.emit(Event("start", vid, name, plan.display, step.location))
                if self.options.explain and not missed:
                    reason = self._explain(step)
                    if reason:
                        self.emit(Event("miss", vid, name, plan.display, step.location, reason))
                missed = True
                t0 = time.monotonic()
                now = rfc3339(graph.epoch if graph.epoch is not None else time.time())
                try:
                    rec = self._execute(graph, plan, step, layers, results, vid, name, now)
                except Exception as e:
                    self.emit(Event("error", vid, name, plan.display, step.location, str(e),
                                    elapsed=time.monotonic() - t0))
                    raise
                self.cache.put(rec)
                self._remember(step)
                self.emit(Event("done", vid, name, plan.display, step.location,
                                elapsed=time.monotonic() - t0))
                with self._lock:
                    self.executed.append(step.name)
            if graph.epoch is None and rec.created:
                # when the layer was first made: a fully cached rebuild keeps its image ID
                entry["created"] = rec.created
            if rec.snapshot and rec.diff_id is not None:
                layers.append(LayerRef(Descriptor(mt.OCI_LAYER, rec.diff_id, 0), rec.diff_id,
                                       built=True, snapshot=True))
            elif rec.layer is not None and rec.diff_id is not None:
                layers.append(LayerRef(rec.layer, rec.diff_id, built=True))
            else:
                entry["empty_layer"] = True
            history.append(entry)
        inherited = (results[plan.base.stage].inherited if plan.base.kind == "stage"
                     and plan.base.stage is not None else len(plan.base_history))
        return StageResult(plan, tuple(layers), tuple(history), inherited=inherited)

    def _snapshot_present(self, rec: CacheRecord) -> bool:
        from builder.rootfs import LayerCache

        return rec.diff_id is not None and LayerCache(self.state).has(str(rec.diff_id))

    # -- "why did this miss?" --------------------------------------------------------------------
    def _slot_path(self, step: Step) -> Path:
        return self.state.cache / "slots" / f"{step.slot}.json"

    def _remember(self, step: Step) -> None:
        if not step.slot:
            return
        import json

        from builder.cache import replace_file

        p = self._slot_path(step)
        p.parent.mkdir(parents=True, exist_ok=True)
        replace_file(p, json.dumps({"inputs": step.inputs, "files": step.files},
                                   sort_keys=True).encode())

    def _explain(self, step: Step) -> str:
        """Which input changed since this step (same file, stage, position) last ran."""
        import json

        if not step.slot:
            return ""
        try:
            last = json.loads(self._slot_path(step).read_bytes())
        except (OSError, ValueError):
            return "no previous build of this step"
        before: dict[str, str] = last.get("inputs") or {}
        now = step.inputs
        reasons = []
        if before.get("instruction") != now.get("instruction"):
            reasons.append(f"instruction changed: {before.get('instruction')!r} -> {now.get('instruction')!r}")
        if before.get("files") != now.get("files"):
            old_files: dict[str, str] = last.get("files") or {}
            changed = sorted(k for k in set(old_files) | set(step.files)
                             if old_files.get(k) != step.files.get(k))
            shown = ", ".join(changed[:5]) + (f" (+{len(changed) - 5} more)" if len(changed) > 5 else "")
            reasons.append(f"files changed: {shown}" if changed else "files changed")
        b_args = json.loads(before.get("args", "{}") or "{}")
        n_args = json.loads(now.get("args", "{}") or "{}")
        for k in sorted(set(b_args) | set(n_args)):
            if b_args.get(k) != n_args.get(k):
                reasons.append(f"build arg {k} changed: {b_args.get(k)!r} -> {n_args.get(k)!r}")
        for k in sorted((set(before) | set(now)) - {"instruction", "files", "args", "parent"}):
            if before.get(k) != now.get(k):
                reasons.append(f"{k} changed")
        if not reasons and before.get("parent") != now.get("parent"):
            reasons.append("the step before it changed")
        if not reasons:
            reasons.append("cache record missing (pruned or --no-cache)")
        return "; ".join(reasons)

    # -- executing one filesystem step -----------------------------------------------------------
    def _execute(self, graph: Graph, plan: StagePlan, step: Step, layers: list[LayerRef],
                 results: dict[int, StageResult], vid: int, name: str, now: str) -> CacheRecord:
        def log(line: str) -> None:
            self.emit(Event("log", vid, name, plan.display, step.location, line))

        from builder import workspace

        self._used_workspace = True
        lowers = [] if workspace.is_linked(step) else layers
        with workspace.Workspace(self.state, self.store, lowers, platform=plan.platform,
                                 context=self.context) as ws:
            workspace.run_step(ws, step, results=results, secrets=self.options.secrets,
                               log=log, cancel=self._cancel)
            in_image = not self._image_stages or plan.index in self._image_stages
            if not in_image and ws.can_adopt():
                # nothing to tar: the upper dir itself becomes the layer, kept by the step key
                if ws.is_unchanged():
                    return CacheRecord(step.key, None, None, step.created_by, now, dict(step.inputs))
                stand_in = Digest("sha256", step.key)
                ws.adopt_into_layer_cache(str(stand_in))
                return CacheRecord(step.key, None, stand_in, step.created_by, now,
                                   dict(step.inputs), snapshot=True)
            comp = self.options.compression if in_image else "none"
            layer, diff_id = self._commit_diff(ws, graph.epoch, comp)
            if diff_id is not None:
                ws.adopt_into_layer_cache(str(diff_id))
        return CacheRecord(step.key, layer, diff_id, step.created_by, now, dict(step.inputs))

    def _commit_diff(self, ws: Workspace, epoch: int | None,
                     comp: str) -> tuple[Descriptor | None, Digest | None]:
        with self.store.lease(), self.store.writer() as w:
            enc = LayerEncoder(w, comp)  # type: ignore[arg-type]
            pipe = _Pipelined(enc)
            try:
                wrote = ws.diff(pipe, source_date_epoch=epoch)
            finally:
                pipe.close()
            enc.close()
            if not wrote:
                return None, None
            digest = w.commit()
            desc = Descriptor(mt.layer_media_type(comp), digest, w.size)
            return desc, enc.diff_id

    # -- the image -------------------------------------------------------------------------------
    def _for_image(self, lr: LayerRef, epoch: int | None) -> tuple[Descriptor, Digest]:
        """(descriptor, diff_id) of the layer as the image carries it."""
        if not lr.snapshot:
            return self._in_compression(lr), lr.diff_id
        comp = self.options.compression
        known = self.cache.get_materialized(lr.diff_id, comp)
        if known is not None:
            return known
        from builder.layers import write_diff
        from builder.rootfs import LayerCache

        src = LayerCache(self.state).path(str(lr.diff_id))
        with self.store.lease(), self.store.writer() as w:
            enc = LayerEncoder(w, comp)  # type: ignore[arg-type]
            pipe = _Pipelined(enc)
            try:
                write_diff(src, pipe, source_date_epoch=epoch)  # type: ignore[arg-type]
            finally:
                pipe.close()
            enc.close()
            digest = w.commit()
        desc = Descriptor(mt.layer_media_type(comp), digest, w.size)
        self.cache.put_variant(lr.diff_id, comp, desc, real_diff_id=enc.diff_id)
        return desc, enc.diff_id

    def _in_compression(self, lr: LayerRef) -> Descriptor:
        """The layer as the image carries it: built layers in the requested compression (a
        cached or uncompressed intermediate one is re-encoded once, and remembered)."""
        comp = self.options.compression
        if not lr.built or mt.layer_compression(lr.descriptor.media_type) == comp:
            return lr.descriptor
        known = self.cache.get_variant(lr.diff_id, comp)
        if known is not None:
            return known
        desc, diff_id = _recompress(self.store, lr.descriptor, comp)
        if diff_id != lr.diff_id:
            raise BuildCancelled(f"layer {lr.diff_id} re-encoded to different content {diff_id}")
        self.cache.put_variant(lr.diff_id, comp, desc)
        return desc

    def assemble(self, graph: Graph, result: StageResult, *, labels: dict[str, str] | None = None) -> Image:
        """Write the final config and manifest for *result* to the store (untagged)."""
        plan = result.plan
        data = dict(plan.config)
        cfg = dict(data.get("config") or {})
        if labels:
            cfg["Labels"] = {**(cfg.get("Labels") or {}), **labels}
        data["config"] = cfg
        history = dated(result.history, result.inherited, rfc3339(
            graph.epoch if graph.epoch is not None else self.created))
        data["created"] = (history[-1].get("created") if len(history) > result.inherited else None) \
            or rfc3339(graph.epoch if graph.epoch is not None else self.created)
        data["history"] = history
        layers = [self._for_image(lr, graph.epoch) for lr in result.layers]
        data["rootfs"] = {"type": "layers", "diff_ids": [str(i) for _, i in layers]}
        config = ImageConfig.build(data)
        cdesc = Descriptor(mt.OCI_CONFIG, config.digest, config.size)
        manifest = Manifest.build(cdesc, [d for d, _ in layers])
        desc = self.store.put_image(manifest, config)
        return Image(desc, manifest, config)


def _full_name(ref: str) -> str:
    """A FROM reference as BuildKit names its vertex: normalised (``docker.io/library/…``)."""
    from registry.errors import RegistryError
    from registry.reference import Reference

    try:
        return str(Reference.parse(ref, default_tag=False))
    except RegistryError:
        return ref


def dated(history: tuple[dict[str, Any], ...], inherited: int, now: str) -> list[dict[str, Any]]:
    """*history* with a time on every entry this build added, as BuildKit's exporter dates
    them: an empty entry takes the time of the layer before it, those before the first new
    layer take that layer's, and with no new layer at all every one is the build's time."""
    out = [dict(h) for h in history]
    new = out[inherited:]
    first = next((h["created"] for h in new if h.get("created")), now)
    last = first
    for h in new:
        if h.get("created"):
            last = h["created"]
        else:
            h["created"] = last
    # the OCI History field order, as BuildKit writes it: created, created_by, comment, empty_layer
    order = ("created", "created_by", "comment", "empty_layer")
    for i, h in enumerate(new, start=inherited):
        out[i] = {k: h[k] for k in order if k in h} | {k: v for k, v in h.items() if k not in order}
    return out


class _Pipelined:
    """A write sink that hands 1 MiB batches to a thread running *sink*: the tar of a diff is
    made (files read, headers packed) while the previous batch is hashed and compressed
    (hashlib and ISA-L release the GIL), so a big layer uses both cores."""

    BATCH = 1 << 20

    def __init__(self, sink: Any) -> None:
        import queue

        self.sink = sink
        self.q: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self.buf = bytearray()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.closed = False

    def _run(self) -> None:
        while (chunk := self.q.get()) is not None:
            if self.error is None:
                try:
                    self.sink.write(chunk)
                except BaseException as e:  # noqa: BLE001 - re-raised in the writer's thread
                    self.error = e

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.error is not None:
            raise self.error
        self.buf += data
        if len(self.buf) >= self.BATCH:
            self.q.put(bytes(self.buf))
            self.buf.clear()
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.buf:
            self.q.put(bytes(self.buf))
            self.buf.clear()
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def _recompress(store: Store, desc: Descriptor, comp: str) -> tuple[Descriptor, Digest]:
    """*desc*'s layer re-encoded with *comp*; returns the new descriptor and its diff_id."""
    from registry.compression import open_decompressed

    with store.lease(), store.writer() as w, store.open_blob(desc.digest) as src:
        enc = LayerEncoder(w, comp)  # type: ignore[arg-type]
        pipe = _Pipelined(enc)
        try:
            reader = open_decompressed(src)
            while chunk := reader.read(1 << 20):
                pipe.write(chunk)
        finally:
            pipe.close()
        enc.close()
        digest = w.commit()
        return Descriptor(mt.layer_media_type(comp), digest, w.size), enc.diff_id


@contextlib.contextmanager
def interruptible(solver: Solver) -> Iterator[None]:
    """Ctrl-C cancels the steps not started yet; running sandboxes are torn down by their owner."""
    try:
        yield
    except KeyboardInterrupt:
        solver._cancel.set()
        raise
