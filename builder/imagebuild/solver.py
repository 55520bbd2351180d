"""Walks a build graph: cache lookup first, else execution; independent stages in parallel.

Reports progress as ``Event`` values through a callback; each executed step's diff becomes a
layer in the store (``layers.commit_layer``). The image itself is ``assemble``'s. Never prints.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from builder.base.errors import BuildCancelled
from builder.base.state import StateRoot
from builder.core.rootfs import LayerCache
from builder.imagebuild import sha
from builder.imagebuild.assemble import rfc3339
from builder.imagebuild.cache import BuildCache, CacheRecord, chain_parent, replace_file
from builder.imagebuild.context import Tree
from builder.imagebuild.execute.inputs import LayerRef, StepInputs
from builder.imagebuild.graph.ops import ExecSpec, Graph, MkdirSpec, StagePlan, Step
from builder.imagebuild.pool import Pool
from registry import mediatypes as mt
from registry.digest import Digest
from registry.errors import RegistryError
from registry.model import Descriptor
from registry.reference import Reference
from registry.store import Store
from registry.values import field, frozen, replace

TYPE_CHECKING = False  # not ``typing``'s: a build loads no ``typing`` (~6 ms)
if TYPE_CHECKING:
    from typing import IO, Any, Literal

    from builder.imagebuild.cacheshare.artifact import SharedRecord
    from builder.imagebuild.cacheshare.source import CacheSource

#: an empty layer tar, as Go's archive/tar closes one with no entry
EMPTY_TAR = bytes(1024)

if TYPE_CHECKING:
    EventKind = Literal["stage", "start", "cached", "done", "log", "miss", "warning", "error", "export"]


@frozen
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
    #: a ``log`` line's stream: ``stdout`` or ``stderr`` (a RUN's)
    stream: str = "stdout"


Progress = Callable[[Event], None]


@frozen
class StageResult:
    plan: StagePlan
    layers: tuple[LayerRef, ...]
    #: history entries; those this build added may lack "created" until ``dated`` fills it
    history: tuple[dict[str, Any], ...]
    #: how many entries at the start of ``history`` come from the base image
    inherited: int = 0
    #: the records this stage's layers came from, as one digest (``Solver._chain``): what a
    #: stage made FROM this one continues
    chain: str = ""

    @property
    def key(self) -> str:
        return self.plan.key


@frozen
class SolveOptions:
    jobs: int = 2
    no_cache: bool = False
    no_cache_filter: frozenset[str] = frozenset()
    compression: str = "gzip"
    secrets: dict[str, bytes] = field(default_factory=dict)
    #: ``build --ssh``: agent socket by id (started and stopped by the caller)
    ssh: dict[str, str] = field(default_factory=dict)
    explain: bool = True
    #: set by the caller to stop the build: steps not started are skipped, running RUN
    #: processes killed (``pybuild serve`` when its client goes away)
    cancel: threading.Event | None = None
    #: ``--add-host`` entries (``name:ip``) for RUN steps' ``/etc/hosts``
    extra_hosts: tuple[str, ...] = ()
    #: ``--cache-from`` sources (``builder.imagebuild.cacheshare.source``), asked after the local cache
    cache_from: tuple[CacheSource, ...] = ()


Cancelled = BuildCancelled


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
        self._cancel = self.options.cancel if self.options.cancel is not None else threading.Event()
        self.executed: list[str] = []
        self.cached: list[str] = []
        self.created = time.time()
        self._image_stages: set[int] = set()
        self._from_shown: dict[str, int] = {}
        self._used_workspace = False
        #: snapshots whose records another build published first: dropped when this one ends
        self._unpublished: list[str] = []
        #: the content digest of stage results other stages read, by their chain
        self._contents: dict[str, str] = {}
        #: the empty layer by compression, once stored
        self._empty: dict[str, LayerRef] = {}
        #: every step's record as this build took or made it: (stage index, step, record),
        #: what ``--cache-to`` exports
        self.used: list[tuple[int, Step, CacheRecord]] = []
        #: layers of imported records not made local yet, by diff_id
        self._remote: dict[str, tuple[CacheSource, SharedRecord]] = {}
        self._mounts_restored: set[str] = set()

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
        self._reap_workspaces()
        results: dict[int, StageResult] = {}
        pending = {s.index: s for s in needed}
        running = 0
        error: BaseException | None = None
        # the stages run on plain threads (``pool``: no ``concurrent.futures``), at most
        # ``jobs`` at a time, in the order they became ready
        pool = Pool(self.options.jobs, "pybuild-stage")
        with self.cache.using():
            try:
                while pending or running:
                    if error is None:
                        for idx, plan in sorted(pending.items()):
                            if all(d in results for d in plan.deps):
                                pool.submit(partial(self._stage, graph, plan, results), idx)
                                running += 1
                                del pending[idx]
                    if not running:
                        break
                    # in slices (``Pool.ended``): this (main) thread stays responsive to Ctrl-C
                    for job in pool.ended():
                        running -= 1
                        if job.error is None:
                            results[job.tag] = job.value
                            continue
                        if error is None:  # first error wins, the others wait
                            error = job.error
                        self._cancel.set()
                        pending.clear()
                        running -= len(pool.drop())  # a stage no thread started: none will
            except BaseException:
                self._cancel.set()
                pool.close(cancel=True)
                self.drain()
                raise
            finally:
                pool.close(cancel=error is not None)
                if error is not None:
                    self.drain()
                if self._unpublished:
                    for snapshot in self._unpublished:
                        LayerCache(self.state).remove(snapshot)
        if error is not None:
            raise error
        return results

    def drain(self) -> None:
        """Wait until the workspaces of the steps this solver ran are removed. They go in the
        background, so that the build's last steps (the image's assembly, its tags) do not wait
        for them: a failed solve drains before it raises, the caller of a successful one once
        it is done with it (``pipeline.run_build``)."""
        if self._used_workspace:  # (a fully cached build never loads the module)
            from builder.imagebuild.execute.workspace import drain_trash

            drain_trash()

    def _reap_workspaces(self) -> None:
        """The RUN layers of killed builds go with the next build, cached or not (the module
        that knows workspaces is loaded only when one is there)."""
        try:
            names = [n for n in os.listdir(self.state.run) if "build-" in n]
        except OSError:
            return
        if names:
            from builder.imagebuild.fsck import reap_killed_builds

            reap_killed_builds(self.state)

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
            return list(LayerRef.of_image(b.image)), list(plan.base_history)
        return [], []

    def _stage(self, graph: Graph, plan: StagePlan, results: dict[int, StageResult]) -> StageResult:
        layers, history = self._base(plan, results)
        chain = self._base_chain(plan, results, layers)
        reads = self._reads(plan, results)
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
            # (``COPY --link`` is independent of the layers below by design)
            parent = reads if step.linked else chain_parent([chain, reads]) if reads else chain
            rec = None if no_cache else self.cache.get(step.key, parent)
            if rec is not None and rec.snapshot and not self._snapshot_present(rec):
                rec = None
            source = ""
            if rec is None and not no_cache and self.options.cache_from:
                rec, source = self._imported(step.key, parent)
            if rec is not None:
                self.emit(Event("cached", vid, name, plan.display, step.location, source))
                with self._lock:
                    self.cached.append(step.name)
            else:
                self.emit(Event("start", vid, name, plan.display, step.location))
                if self.options.explain and not missed:
                    reason = self._explain(step)
                    if reason:
                        self.emit(Event("miss", vid, name, plan.display, step.location, reason))
                missed = True
                self.ensure_local([*layers, *(lr for d in plan.deps if d in results
                                              for lr in results[d].layers)])
                self._restore_mounts(step)
                t0 = time.monotonic()
                now = rfc3339(graph.epoch if graph.epoch is not None else time.time())
                try:
                    rec = replace(self._execute(graph, plan, step, layers, results, vid, name, now),
                                  parent=parent)
                except Exception as e:
                    self.emit(Event("error", vid, name, plan.display, step.location, str(e),
                                    elapsed=time.monotonic() - t0))
                    raise
                if not self.cache.put(rec) and rec.diff_id is not None:
                    with self._lock:
                        self._unpublished.append(str(rec.diff_id))
                self._remember(step)
                self.emit(Event("done", vid, name, plan.display, step.location,
                                elapsed=time.monotonic() - t0))
                with self._lock:
                    self.executed.append(step.name)
            with self._lock:
                self.used.append((plan.index, step, rec))
            chain = chain_parent([chain, rec.key, str(rec.diff_id), rec.created])
            if graph.epoch is None and rec.created:
                # when the layer was first made: a fully cached rebuild keeps its image ID
                entry["created"] = rec.created
            if rec.snapshot and rec.diff_id is not None:
                layers.append(LayerRef(Descriptor(mt.OCI_LAYER, rec.diff_id, 0), rec.diff_id,
                                       built=True, snapshot=True))
            elif rec.layer is not None and rec.diff_id is not None:
                layers.append(LayerRef(rec.layer, rec.diff_id, built=True))
            elif isinstance(step.payload, MkdirSpec) and step.payload.path == "/":
                entry["empty_layer"] = True  # BuildKit makes no op for WORKDIR /
            else:
                # BuildKit 20.10 keeps a layer for a step that changed nothing: the empty tar
                in_image = not self._image_stages or plan.index in self._image_stages
                layers.append(self._empty_layer(self.options.compression if in_image else "none"))
            history.append(entry)
        inherited = (results[plan.base.stage].inherited if plan.base.kind == "stage"
                     and plan.base.stage is not None else len(plan.base_history))
        return StageResult(plan, tuple(layers), tuple(history), inherited=inherited, chain=chain)

    def _empty_layer(self, compression: str) -> LayerRef:
        """The empty tar (two zero blocks, as Go's archive/tar ends one: diff_id
        ``sha256:5f70bf18…``) in the store, kept by the build cache as step layers are."""
        with self._lock:
            known = self._empty.get(compression)
        if known is not None:
            return known
        from builder.core.layers import commit_layer

        def write(sink: IO[bytes]) -> None:
            sink.write(EMPTY_TAR)

        made = commit_layer(self.store, write, compression)
        assert made is not None
        self.cache.keep_blob(made[0].digest)
        ref = LayerRef(made[0], made[1], built=True)
        with self._lock:
            self._empty[compression] = ref
        return ref

    def _reads(self, plan: StagePlan, results: dict[int, StageResult]) -> str:
        """What a stage's steps may read from other stages (COPY --from, RUN --mount=from): the
        content of each such stage's result, as this build has it. Content, not records: a
        stage rebuilt to the same files (``--no-cache-filter``) leaves later hits alone, as
        BuildKit's content checksums do; a stage built differently by a build running at once
        never lends its copies to this one."""
        base = plan.base.stage if plan.base.kind == "stage" else None
        deps = sorted(d for d in plan.deps if d != base and d in results)
        return chain_parent([f"stage {d} {self._stage_content(results[d])}" for d in deps]) if deps else ""

    def _stage_content(self, result: StageResult) -> str:
        with self._lock:
            known = self._contents.get(result.chain)
        if known is None:
            known = chain_parent(self._layer_content(lr) for lr in result.layers)
            with self._lock:
                self._contents[result.chain] = known
        return known

    def _layer_content(self, lr: LayerRef) -> str:
        """A layer's files (names, types, modes, owners, contents, link targets, xattrs; never
        times) as one digest, remembered by layer id under ``cache/content``."""
        memo = self.state.cache / "content" / lr.diff_id.encoded
        try:
            return memo.read_text()
        except OSError:
            pass
        self.ensure_local([lr])
        store = self.store

        def open_layer() -> Any:
            from registry.compression import open_decompressed

            return open_decompressed(store.open_blob(lr.descriptor.digest))

        cache = LayerCache(self.state)
        path = cache.path(str(lr.diff_id)) if lr.snapshot else cache.unpack(str(lr.diff_id), open_layer)
        value = tree_content(path)
        memo.parent.mkdir(parents=True, exist_ok=True)
        replace_file(memo, value.encode())
        return value

    @staticmethod
    def _base_chain(plan: StagePlan, results: dict[int, StageResult], layers: list[LayerRef]) -> str:
        """Where a stage's chain of records starts: its base image's layers, or the chain of
        the stage it is made FROM.

        A step's record is filed under the chain it ran on (``parent``): the records (layer
        and creation time) of every step below it, as this build took or made them. So a hit
        is taken only with the chain it was made on, and a fully cached rebuild follows one
        build's records from end to end, whatever ran at once (``COPY --link`` aside: it is
        independent of the layers below by design). What a step reads from another stage is
        keyed by that stage's key, as before: what it copied is in its own layer."""
        if plan.base.kind == "stage" and plan.base.stage is not None:
            return results[plan.base.stage].chain
        return chain_parent([plan.base.kind, *(str(lr.diff_id) for lr in layers)])

    def _snapshot_present(self, rec: CacheRecord) -> bool:
        return rec.diff_id is not None and LayerCache(self.state).has(str(rec.diff_id))

    # -- imported records (``--cache-from``) ------------------------------------------------------
    def _imported(self, key: str, parent: str) -> tuple[CacheRecord | None, str]:
        """The first ``--cache-from`` source's record of *key* on *parent*, and its name. Its
        layer stays remote until a step runs on it or the image needs it (``ensure_local``)."""
        for src in self.options.cache_from:
            shared = src.lookup(key, parent)
            if shared is None:
                continue
            rec = shared.record
            if rec.diff_id is None:
                self.cache.put(rec)
            elif rec.snapshot and self._snapshot_present(rec) or \
                    rec.layer is not None and self.store.has_blob(rec.layer.digest):
                src.materialize(self.state, self.store, self.cache, shared)
            else:
                with self._lock:
                    self._remote.setdefault(str(rec.diff_id), (src, shared))
            return rec, src.name
        return None, ""

    def ensure_local(self, layers: list[LayerRef] | tuple[LayerRef, ...]) -> None:
        """Fetch the layers among *layers* that imported records named and this root lacks
        (``CacheImportError`` if a source fails: the caller builds again without it)."""
        for lr in layers:
            with self._lock:
                remote = self._remote.get(str(lr.diff_id))
            if remote is None:
                continue
            src, shared = remote
            src.materialize(self.state, self.store, self.cache, shared)
            with self._lock:
                self._remote.pop(str(lr.diff_id), None)

    def remote_layers(self) -> dict[str, tuple[CacheSource, SharedRecord]]:
        """Imported layers this build used and never fetched, by diff_id (an export mounts them
        from their registry, or fetches them then)."""
        with self._lock:
            return dict(self._remote)

    @property
    def image_stages(self) -> set[int]:
        """The stages whose layers the image carries (``mode=min`` exports only theirs)."""
        return set(self._image_stages)

    def _restore_mounts(self, step: Step) -> None:
        """Before a RUN runs: the cache mounts it uses that the sources carry and this root
        lacks (restored once; a fully cached build fetches none)."""
        if not self.options.cache_from or not isinstance(step.payload, ExecSpec):
            return
        ids = {m.id for m in step.payload.mounts if m.type == "cache"}
        with self._lock:
            ids -= self._mounts_restored
            self._mounts_restored |= ids
        for src in self.options.cache_from if ids else ():
            src.restore_mounts(self.state, self.store, ids)

    @property
    def downloaded(self) -> int:
        """Bytes of blobs fetched from ``--cache-from`` sources."""
        return sum(src.downloaded for src in self.options.cache_from)

    # -- "why did this miss?" --------------------------------------------------------------------
    def _slot_path(self, step: Step) -> Path:
        return self.state.cache / "slots" / f"{step.slot}.json"

    def _remember(self, step: Step) -> None:
        if not step.slot:
            return
        from builder.imagebuild.explain import Slot

        p = self._slot_path(step)
        p.parent.mkdir(parents=True, exist_ok=True)
        replace_file(p, json.dumps(Slot(step.inputs, step.files).to_json(), sort_keys=True).encode())

    def _explain(self, step: Step) -> str:
        """Which input changed since this step (same file, stage, position) last ran."""
        from builder.imagebuild.explain import Slot, explain

        if not step.slot:
            return ""
        try:
            last = Slot.from_json(json.loads(self._slot_path(step).read_bytes()))
        except (OSError, ValueError):
            last = None
        if last is None:
            last = next((d for src in self.options.cache_from
                         if (d := src.slot(step.slot)) is not None), None)
            if last is None:
                return "no previous build of this step"
        return explain(last, step.inputs, step.files)

    # -- executing one filesystem step -----------------------------------------------------------
    def _execute(self, graph: Graph, plan: StagePlan, step: Step, layers: list[LayerRef],
                 results: dict[int, StageResult], vid: int, name: str, now: str) -> CacheRecord:
        def log(line: str) -> None:
            self.emit(Event("log", vid, name, plan.display, step.location, line))

        def log_stderr(line: str) -> None:
            self.emit(Event("log", vid, name, plan.display, step.location, line, stream="stderr"))

        # loaded on the first executed step: a fully cached build never imports execution
        from builder.core.layers import commit_layer
        from builder.imagebuild.execute.step import StepRunner
        from builder.imagebuild.execute.workspace import Workspace

        self._used_workspace = True
        inputs = StepInputs({i: r.layers for i, r in results.items()}, self.options.secrets, log,
                            self._cancel, ssh=self.options.ssh, log_stderr=log_stderr,
                            extra_hosts=self.options.extra_hosts)
        with Workspace(self.state, self.store, [] if step.linked else layers,
                       platform=plan.platform, context=self.context) as ws:
            step.execute(StepRunner(ws, inputs))
            in_image = not self._image_stages or plan.index in self._image_stages
            if not in_image and ws.can_adopt():
                # nothing to tar: the upper dir itself becomes the layer, kept by the step key
                if ws.is_unchanged():
                    return CacheRecord(step.key, None, None, step.created_by, now, dict(step.inputs))
                # one per execution: two builds running this step at once make two snapshots
                # (their contents may differ), and each one's later records name its own
                stand_in = Digest("sha256", chain_parent([step.key, os.urandom(16).hex()]))
                ws.adopt_into_layer_cache(str(stand_in))
                return CacheRecord(step.key, None, stand_in, step.created_by, now,
                                   dict(step.inputs), snapshot=True)
            made = commit_layer(self.store, lambda sink: ws.diff(sink, source_date_epoch=graph.epoch),
                                self.options.compression if in_image else "none")
            if made is None:
                return CacheRecord(step.key, None, None, step.created_by, now, dict(step.inputs))
            layer, diff_id = made
            ws.adopt_into_layer_cache(str(diff_id))
        return CacheRecord(step.key, layer, diff_id, step.created_by, now, dict(step.inputs))


_OVERLAY_XATTRS = ("trusted.overlay.", "user.overlay.")


def tree_content(root: Path) -> str:
    """The digest of a directory tree's entries, times left out (see ``_layer_content``)."""
    h = sha.large()
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted([*dirs, *files]):
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            rel = os.path.relpath(full, root)
            h.update(f"{rel}\0{st.st_mode:o} {st.st_uid} {st.st_gid} {st.st_rdev}\0".encode())
            if stat.S_ISLNK(st.st_mode):
                h.update(os.readlink(full).encode())
            elif stat.S_ISREG(st.st_mode):
                with open(full, "rb") as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
            try:  # (overlayfs's own bookkeeping, origin file handles, is host state: left out)
                attrs = sorted(a for a in os.listxattr(full, follow_symlinks=False)
                               if not a.startswith(_OVERLAY_XATTRS) or a.endswith(".opaque"))
            except OSError:
                attrs = []
            for a in attrs:
                try:
                    h.update(a.encode() + b"=" + os.getxattr(full, a, follow_symlinks=False))
                except OSError:
                    pass
            h.update(b"\n")
    return h.hexdigest()


def _full_name(ref: str) -> str:
    """A FROM reference as BuildKit names its vertex: normalised (``docker.io/library/…``)."""
    try:
        return str(Reference.parse(ref, default_tag=False))
    except RegistryError:
        return ref
