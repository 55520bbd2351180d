"""``build()``: one library call from a build request to a tagged image and its outputs.

Reads the Dockerfile, plans the graph, solves it, writes the image and tags it only when every
step succeeded; exports ``--output`` (oci/docker archives, a tar or a directory of the rootfs).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from builder.base import events
from builder.base.errors import BuildError, ContextError
from builder.base.state import StateRoot
from builder.core.rootfs import prepare_root
from builder.imagebuild.assemble import Assembler
from builder.imagebuild.context import HashMemo, Tree
from builder.imagebuild.dockerfile.parsecache import load_cached
from builder.imagebuild.graph import PlanOptions, plan
from builder.imagebuild.ignore import read_dockerignore
from builder.imagebuild.solver import Event, SolveOptions, Solver
from registry.digest import Digest
from registry.errors import NotFound
from registry.model import Platform
from registry.reference import Reference
from registry.store import Image, Store
from registry.values import field, frozen

TYPE_CHECKING = False  # not ``typing``'s: a build loads no ``typing`` (~6 ms)
if TYPE_CHECKING:
    from typing import Any

    from registry.auth import Credentials


@frozen
class Output:
    type: str  # oci | docker | tar | local | image
    dest: str = ""


@frozen
class BuildRequest:
    context: str | None  # a directory; None: no context (``-``)
    dockerfile: str | None = None  # path (relative to cwd), "-" for dockerfile_text
    dockerfile_text: str | None = None
    tags: tuple[str, ...] = ()
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    no_cache_filter: frozenset[str] = frozenset()
    labels: dict[str, str] = field(default_factory=dict)
    outputs: tuple[Output, ...] = ()
    secrets: dict[str, bytes] = field(default_factory=dict)
    #: ``--ssh`` specs as given (``default``, ``ID=SOCKET``, ``ID=KEY[,KEY]``)
    ssh: tuple[str, ...] = ()
    jobs: int = 2
    compression: str = "gzip"
    platform: str | None = None
    network: str | None = None
    #: ``--add-host`` entries (``name:ip``) in RUN steps' ``/etc/hosts``
    extra_hosts: tuple[str, ...] = ()
    #: registry domain -> ``registry.auth.Credentials`` for pulling base images (the daemon's
    #: ``X-Registry-Config``); a domain not here uses the stored credentials
    registry_auth: dict[str, Credentials] = field(default_factory=dict)
    #: a ``threading.Event`` that stops the build when set (``SolveOptions.cancel``)
    cancel: Any = None
    #: ``--cache-from`` / ``--cache-to`` as BuildKit writes them (``type=registry,ref=…``;
    #: a bare reference for ``cache_from``): ``builder.imagebuild.cacheshare``
    cache_from: tuple[str, ...] = ()
    cache_to: tuple[str, ...] = ()
    #: False: the image is written but neither tagged nor listed (one platform of several)
    record: bool = True


@frozen
class BuildOutcome:
    image: Image
    tags: tuple[str, ...]
    warnings: tuple[str, ...]
    executed: tuple[str, ...]
    cached: tuple[str, ...]
    #: a multi-platform build's image index (``image``: its host platform's, else its first)
    index: Any = None
    #: the stages (indices as text) with no ``FROM --platform``: what each platform of a
    #: multi-platform build runs for itself (the others it shares; ``--no-cache`` runs them once)
    per_platform_stages: frozenset[str] = frozenset()

    @property
    def image_id(self) -> Digest:
        return self.image.id


def parse_outputs(specs: tuple[str, ...] | list[str]) -> tuple[Output, ...]:
    out = []
    for spec in specs:
        fields: dict[str, str] = {}
        for part in spec.split(","):
            k, sep, v = part.partition("=")
            if not sep:
                if not fields and spec == part:
                    fields = {"type": "local", "dest": part}  # ``-o DIR``, as docker build
                    break
                raise BuildError.invalid(f"invalid --output {spec!r}: expected key=value pairs")
            fields[k.strip()] = v.strip()
        kind = fields.get("type", "local")
        if kind not in ("oci", "docker", "tar", "local", "image"):
            raise BuildError.invalid(f"invalid --output {spec!r}: unknown type {kind!r}")
        if kind != "image" and not fields.get("dest"):
            raise BuildError.invalid(f"invalid --output {spec!r}: dest is required")
        out.append(Output(kind, fields.get("dest", "")))
    return tuple(out)


def parse_secrets(specs: tuple[str, ...] | list[str]) -> dict[str, bytes]:
    """``id=x,src=file`` / ``id=x,env=VAR`` / ``id=x`` (env var x, else file x) → values."""
    out: dict[str, bytes] = {}
    for spec in specs:
        fields = dict(p.partition("=")[::2] for p in spec.split(","))
        sid = fields.get("id")
        if not sid:
            raise BuildError.invalid(f"invalid --secret {spec!r}: id is required")
        src = fields.get("src") or fields.get("source")
        env = fields.get("env")
        try:
            if src:
                out[sid] = Path(src).expanduser().read_bytes()
            elif env:
                if env not in os.environ:
                    raise BuildError(f"--secret {spec}: environment variable {env} is not set")
                out[sid] = os.environ[env].encode()
            elif sid in os.environ:
                out[sid] = os.environ[sid].encode()
            else:
                out[sid] = Path(sid).read_bytes()
        except OSError as e:
            raise BuildError(f"--secret {spec}: {e.strerror}: {e.filename}") from None
    return out


class _Ignore:
    """``.dockerignore`` as the context ``Tree`` asks it."""

    def __init__(self, matcher: Any) -> None:
        self.m = matcher

    def __call__(self, rel: str, is_dir: bool) -> bool:
        return bool(self.m.matches(rel))

    def may_reinclude(self, path: str) -> bool:
        return bool(self.m.has_exclusions)


def _read_dockerfile(req: BuildRequest) -> tuple[str, str, str]:
    """(text, display name, identity for miss explanations)."""
    if req.dockerfile == "-" or (req.context is None and req.dockerfile is None):
        if req.dockerfile_text is None:
            raise BuildError("no Dockerfile given on stdin")
        return req.dockerfile_text, "Dockerfile", "stdin"
    if req.dockerfile is not None:
        path = Path(req.dockerfile)
        if not path.is_absolute() and not path.exists() and req.context:
            path = Path(req.context) / req.dockerfile
    else:
        assert req.context is not None
        path = Path(req.context) / "Dockerfile"
        if not path.exists() and (Path(req.context) / "dockerfile").exists():
            path = Path(req.context) / "dockerfile"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BuildError.not_found(f"failed to read dockerfile: open {path}: no such file or directory") from None
    except IsADirectoryError:
        raise BuildError(f"failed to read dockerfile: {path} is a directory") from None
    return text, path.name, str(path.resolve())


def image_resolver(store: Store, platform: Platform,
                   progress: Callable[[str], None] | None = None, *,
                   credentials: Mapping[str, Credentials] | None = None) -> Callable[[str, str], Image]:
    """Store first; else pull with ``registry.transfer`` when it is installed. A third
    argument, ``FROM --platform``'s, overrides *platform*."""
    def resolve(ref: str, where: str, want: Platform | None = None) -> Image:
        return _resolve(ref, where, want or platform)

    def _resolve(ref: str, where: str, platform: Platform) -> Image:
        try:
            img = store.resolve(ref, platform=platform)
            if not img.config.platform.architecture or img.config.platform.matches(platform):
                return img
        except NotFound:
            pass
        try:
            from registry import transfer
        except ImportError:
            raise BuildError.not_found(f"{where}: {ref}: not found locally (and pulling is not available)") from None
        pull = getattr(transfer, "pull", None)
        if pull is None:
            raise BuildError.not_found(f"{where}: {ref}: not found locally (and pulling is not available)")
        if progress is not None:
            progress(f"pulling {ref}")
        try:
            creds = (credentials or {}).get(Reference.parse(ref).domain)
            if creds is not None:
                img = transfer.pull_result(store, ref, platform=platform,
                                           client_options=transfer.ClientOptions(credentials=creds))[0]
            else:
                img = pull(store, ref, platform=platform)
        except Exception as e:  # noqa: BLE001 - a located one-liner for any registry fault
            raise BuildError.not_found(f"{where}: {ref}: not found locally, and pulling failed: {e}") from None
        assert isinstance(img, Image)
        return img

    return resolve


def run_build(state: StateRoot, req: BuildRequest, *, progress: Callable[[Any], None] | None = None) -> BuildOutcome:
    """Plan and solve *req*; tag and export only on success."""
    emit = progress or (lambda e: None)
    host = Platform.host()
    wanted: list[Platform] = []
    if req.platform:
        from builder.base.platforms import build_platforms, parse_platforms

        wanted = parse_platforms(req.platform)
    tags = []
    for t in req.tags:
        try:
            tags.append(Reference.parse(t))
        except Exception as e:  # noqa: BLE001
            raise BuildError.invalid(f"invalid tag {t!r}: {e}") from None
    if len(wanted) > 1:  # one build per platform, then their index under the tags
        done = build_platforms(state, req, wanted, tags,
                               lambda r, wrap: run_build(state, r, progress=wrap(progress)))
        return BuildOutcome(done.image, done.tags, done.warnings, done.executed, done.cached,
                            index=done.index)
    target_platform = wanted[0] if wanted else host
    text, name, origin = _read_dockerfile(req)
    dockerfile = load_cached(text, filename=name, directory=state.cache / "dockerfiles")

    tree: Tree | None = None
    memo = HashMemo(state.cache / "filehash.json")
    if req.context is not None:
        ctx = Path(req.context)
        if not ctx.is_dir():
            raise ContextError(f"unable to prepare context: path {req.context!r} not found")
        dfname = req.dockerfile if req.dockerfile not in (None, "-") else None
        if dfname is not None and not Path(dfname).is_absolute() and not (ctx / dfname).exists():
            dfname = os.path.relpath(Path(dfname).resolve(), ctx.resolve())
        matcher = read_dockerignore(ctx, dfname)
        tree = Tree(ctx.resolve(), excluded=_Ignore(matcher) if matcher.patterns else None,
                    memo=memo, keep_walks=True)

    epoch_text = req.build_args.get("SOURCE_DATE_EPOCH") or os.environ.get("SOURCE_DATE_EPOCH")
    epoch = None
    if epoch_text:
        try:
            epoch = int(epoch_text)
        except ValueError:
            raise BuildError.invalid(f"invalid SOURCE_DATE_EPOCH {epoch_text!r}: seconds since 1970") from None
    store = state.image_store()
    graph = plan(dockerfile, context=tree,
                 resolve_image=image_resolver(store, target_platform, credentials=req.registry_auth),
                 options=PlanOptions(build_args=req.build_args, target=req.target,
                                     platform=target_platform, build_platform=host,
                                     epoch=epoch, network=req.network, origin=origin))
    memo.save()
    for w in graph.warnings:
        emit(Event("warning", text=w))
    ssh_agents = contextlib.ExitStack()
    ssh: dict[str, str] = {}
    if req.ssh:
        from builder.imagebuild.execute.ssh import agents, parse_ssh

        ssh = ssh_agents.enter_context(agents(parse_ssh(req.ssh)))
    cache_from, cache_to = _cache_specs(req)
    sources: list[Any] = []
    if cache_from:
        from builder.imagebuild.cacheshare.source import load_all

        sources = load_all(cache_from, state, lambda text: emit(Event("warning", text=text)))
    with ssh_agents:
        solver, target = _solve(state, req, graph, tree, ssh, sources, progress)
    try:  # (the steps' workspaces are removed meanwhile, in the background)
        assembler = Assembler(store, solver.cache, state.layers, compression=req.compression)

        def assemble(extra: dict[str, Any] | None = None) -> Image:
            return assembler.image({**target.plan.config, **(extra or {})}, target.history,
                                   target.layers, inherited=target.inherited, epoch=graph.epoch,
                                   started=solver.created, labels=req.labels)

        image = assemble()
        if cache_to:
            image = _export_cache(state, store, solver, graph, cache_to, image, assemble, emit)
        names = []
        if not req.record:
            return BuildOutcome(image, (), graph.warnings, tuple(solver.executed), tuple(solver.cached),
                                per_platform_stages=frozenset(str(s.index) for s in dockerfile.stages
                                                              if not s.platform))
        if not any(o.type != "image" for o in req.outputs) or tags:
            for ref in tags:
                store.add(image.descriptor, ref)
                names.append(ref.familiar if hasattr(ref, "familiar") else str(ref))
            if not tags:
                store.add(image.descriptor, None)
        image_id = str(image.id)
        for name in names:
            events.emit(state, "image", "tag", image_id, {"name": name})
        events.emit(state, "image", "build", image_id, {"name": names[0] if names else image_id})
        for out in req.outputs:
            export(state, store, image, tags, out, target.layers, progress=emit)
        return BuildOutcome(image, tuple(names), graph.warnings, tuple(solver.executed), tuple(solver.cached))
    finally:
        solver.drain()


def _cache_specs(req: BuildRequest) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    if not req.cache_from and not req.cache_to:
        return (), ()
    from builder.imagebuild.cacheshare.spec import parse_cache_specs

    return (parse_cache_specs(req.cache_from, export=False),
            parse_cache_specs(req.cache_to, export=True))


def _solve(state: StateRoot, req: BuildRequest, graph: Any, tree: Tree | None,
           ssh: dict[str, str], sources: list[Any], progress: Callable[[Any], None] | None) -> Any:
    """Solve the graph; its layers local. A ``--cache-from`` source that fails while the
    build uses it (a missing or mismatched blob, a registry fault) is a warning, and the build
    starts again without the sources: what it made so far is in the local cache."""
    while True:
        solver = Solver(state, options=SolveOptions(
            jobs=req.jobs, no_cache=req.no_cache, no_cache_filter=req.no_cache_filter,
            compression=req.compression, secrets=req.secrets, cancel=req.cancel, ssh=ssh,
            extra_hosts=req.extra_hosts, cache_from=tuple(sources)),
            progress=progress, context=tree)
        if not sources:
            return solver, solver.build(graph)[0]
        from builder.imagebuild.cacheshare.source import CacheImportError

        try:
            target = solver.build(graph)[0]
            solver.ensure_local(target.layers)
            return solver, target
        except CacheImportError as e:
            solver.drain()
            if progress is not None:
                progress(Event("warning", text=f"cache import failed: {e} (building without it)"))
            sources = []
        except BaseException:
            solver.drain()
            raise


def _export_cache(state: StateRoot, store: Store, solver: Any, graph: Any, specs: tuple[Any, ...],
                  image: Image, assemble: Callable[[dict[str, Any] | None], Image],
                  emit: Callable[[Any], None]) -> Image:
    """Write each ``--cache-to``; ``type=inline`` puts the records in the image's config (the
    image is written again with them). Returns the image to tag."""
    from builder.imagebuild.cacheshare import export as ex
    from builder.imagebuild.cacheshare.artifact import INLINE_KEY
    remote = solver.remote_layers()
    for spec in specs:
        used = [(step, rec) for idx, step, rec in solver.used
                if spec.mode == "max" or spec.type == "inline" or idx in solver.image_stages]
        mounts = ex.cache_mount_ids(graph) if spec.cache_mounts else []
        try:
            config, elsewhere = ex.cache_config(state, store, solver.cache, used, mounts=mounts,
                                                compression=spec.compression, epoch=graph.epoch,
                                                remote=remote)
            if spec.type == "registry":
                ex.to_registry(spec, store, config, elsewhere)
            else:
                ex.fetch_all(store, config, elsewhere)
                if spec.type == "inline":
                    image = assemble({INLINE_KEY: ex.inline(config, image.layers).to_doc()})
                else:
                    ex.to_layout(spec, store, config)
        except BuildError:
            raise
        except Exception as e:  # noqa: BLE001 - a registry or disk fault, as one line
            raise BuildError(f"cache export to {spec.name} failed: {e}") from None
        emit(Event("export", text=f"exporting cache to {spec.name}"))
    return image


def export(state: StateRoot, store: Store, image: Image, tags: list[Reference], out: Output,
           layers: Any, *, progress: Callable[[Any], None]) -> None:
    """Write one ``--output``."""
    if out.type == "image":
        return
    dest = Path(out.dest)
    if out.type in ("oci", "docker"):
        from registry.archive import DOCKER_ARCHIVE, OCI_ARCHIVE, save_image

        with open(dest, "wb") as f:
            save_image(store, image.descriptor, tags, f,
                       format=DOCKER_ARCHIVE if out.type == "docker" else OCI_ARCHIVE)
    elif out.type in ("local", "tar"):
        from builder.imagebuild.execute.workspace import layer_dirs, temp_dir
        dirs = layer_dirs(state, store, list(layers))
        with temp_dir(state.tmp) as tmp:
            root = prepare_root(dirs, tmp / "c", overlay=False)
            assert root.path is not None
            if out.type == "local":
                dest.mkdir(parents=True, exist_ok=True)
                import shutil  # an export's copy only: a build's budget bars shutil (its archives)

                shutil.copytree(root.path, dest, symlinks=True, dirs_exist_ok=True)
            else:
                import tarfile

                with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tf:
                    for p in sorted(Path(root.path).iterdir()):
                        tf.add(p, arcname=p.name)
    progress(Event("export", text=f"exporting to {out.type} {dest}"))
