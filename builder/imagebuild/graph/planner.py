"""Typed Dockerfile stages → ``StagePlan``s of ops with cache keys, by Docker's semantics.

Expands words in the ARG/ENV scope, resolves FROM/--from images, selects and checksums
context files, runs ONBUILD triggers, and computes each stage's image config up front.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence

from builder.base.errors import BuildError, ContextError, ExpansionError, PlanError
from builder.imagebuild import dockerfile as df
from builder.imagebuild.context import Tree, clean
from builder.imagebuild.expand import Scope, expand_display, expand_word, expand_words
from builder.imagebuild.graph.copyplan import CopyPlanning
from builder.imagebuild.graph.gotext import go_healthcheck, go_list, go_map_keys
from builder.imagebuild.graph.ops import (
    Base,
    ExecSpec,
    Graph,
    Location,
    MkdirSpec,
    MountSpec,
    StagePlan,
    Step,
    key_of,
)
from registry.config import ContainerConfig
from registry.model import Platform
from registry.store import Image
from registry.values import field, frozen

TYPE_CHECKING = False  # not ``typing``'s: a build loads no ``typing`` (~6 ms)
if TYPE_CHECKING:
    from typing import Any

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PROXY_ARGS = frozenset({
    "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
    "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy",
})

#: resolve an image reference to an ``Image`` (store, else pull) or raise
ImageResolver = Callable[[str, str], Image]


@frozen
class PlanOptions:
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    platform: Platform = field(default_factory=Platform.host)
    #: the platform the build runs on (``BUILDPLATFORM``); None: ``platform``
    build_platform: Platform | None = None
    epoch: int | None = None
    network: str | None = None
    #: an identity for "why did this miss?" records: the Dockerfile's absolute path
    origin: str = ""


def platform_args(p: Platform, build: Platform | None = None) -> dict[str, str]:
    """BuildKit's automatic platform ARGs: target *p*, build platform *build* (else *p*)."""
    out: dict[str, str] = {}
    for prefix, q in (("TARGET", p), ("BUILD", build or p)):
        out[f"{prefix}PLATFORM"] = str(q)
        out[f"{prefix}OS"] = q.os
        out[f"{prefix}ARCH"] = q.architecture
        out[f"{prefix}VARIANT"] = q.variant or ""
    return out


class Planner:
    """Plans the stages a target needs (and only those), each once."""

    def __init__(self, dockerfile: df.Dockerfile, *, context: Tree | None,
                 resolve_image: ImageResolver, options: PlanOptions) -> None:
        self.df = dockerfile
        self.context = context
        self.resolve_image = resolve_image
        self.opts = options
        self.escape = dockerfile.directives.escape
        self.plans: dict[int, StagePlan] = {}
        self.consumed: set[str] = set()
        self.warnings: list[str] = []
        auto = platform_args(options.platform, options.build_platform)
        self.scope = Scope(build_args={**auto, **dict(options.build_args)})
        for a in dockerfile.global_args:
            self.consumed.add(a.name)
            default = self._expand(a.default, self.scope.for_from(), a) if a.default is not None else None
            self.scope.declare_global(a.name, default)
        # automatic platform ARGs are visible to FROM lines without a declaration
        for k, v in auto.items():
            self.scope.global_args.setdefault(k, v)

    # -- helpers -------------------------------------------------------------------------------
    def _err(self, ins: df.Instruction | None, message: str) -> PlanError:
        loc = f"{ins.location}: " if ins is not None else ""
        return PlanError(f"{loc}{message}")

    def _expand(self, text: str, env: Mapping[str, str], ins: df.Instruction) -> str:
        try:
            return expand_word(text, env, escape=self.escape)
        except ExpansionError as e:
            raise self._err(ins, str(e)) from None

    def _expand_words(self, text: str, env: Mapping[str, str], ins: df.Instruction) -> list[str]:
        try:
            return expand_words(text, env, escape=self.escape)
        except ExpansionError as e:
            raise self._err(ins, str(e)) from None

    def find_stage(self, ref: str, before: int) -> df.Stage | None:
        st = self.df.stage(ref)
        if st is not None and st.index < before:
            return st
        return None

    # -- entry -----------------------------------------------------------------------------------
    def graph(self) -> Graph:
        if self.opts.target is not None:
            target = self.df.stage(self.opts.target)
            if target is None or (self.opts.target.isdigit() and target.name is not None
                                  and target.name != self.opts.target):
                target = next((s for s in self.df.stages if s.name == self.opts.target.lower()), None)
            if target is None:
                raise PlanError(f"target stage {json.dumps(self.opts.target)} could not be found")
        else:
            target = self.df.stages[-1]
        self._plan(target.index)
        unused = sorted(set(self.opts.build_args) - self.consumed - PROXY_ARGS
                        - set(platform_args(self.opts.platform)) - {"SOURCE_DATE_EPOCH"})
        if unused:
            self.warnings.append(
                f"One or more build-args [{' '.join(unused)}] were not consumed")
        return Graph(tuple(self.plans[i] for i in sorted(self.plans)), target.index,
                     tuple(self.warnings), self.opts.epoch, multi_stage=len(self.df.stages) > 1)

    def _plan(self, index: int, chain: tuple[int, ...] = ()) -> StagePlan:
        if index in self.plans:
            return self.plans[index]
        if index in chain:
            raise PlanError(f"circular dependency between stages at stage {index}")
        stage = self.df.stages[index]
        plan = _StageBuilder(self, stage, chain + (index,)).run()
        self.plans[index] = plan
        return plan


class _StageBuilder(CopyPlanning):
    """Walks one stage's instructions, keeping the config and the filesystem key."""

    p: Planner

    def __init__(self, planner: Planner, stage: df.Stage, chain: tuple[int, ...]) -> None:
        self.p = planner
        self.stage = stage
        self.chain = chain
        self.deps: set[int] = set()
        self.steps: list[Step] = []
        self.display = stage.name or f"stage-{stage.index}"
        #: ARGs declared in the stage, in order, as BuildKit lists them before a RUN in history
        self.declared: list[str] = []
        self.ordinal = 0
        self.inherited_env: tuple[tuple[str, str], ...] = ()

    # -- base ------------------------------------------------------------------------------------
    def _base(self) -> tuple[Base, dict[str, Any], tuple[dict[str, Any], ...]]:
        st = self.stage
        name = self.p._expand(st.base, self.p.scope.for_from(), st.from_)
        if not name:
            raise self.p._err(st.from_, "base name (FROM) should not be blank")
        if st.platform:
            want = self.p._expand(st.platform, self.p.scope.for_from(), st.from_)
            try:
                plat = Platform.parse(want)
            except ValueError as e:
                raise self.p._err(st.from_, str(e)) from None
            self.platform = plat
        if name.lower() == "scratch":
            p = self.platform
            # BuildKit's empty image: PATH set and WorkingDir "/" (Docker 20.10 records both)
            cfg: dict[str, Any] = {"architecture": p.architecture, "os": p.os, "config": {
                "Env": [f"PATH={DEFAULT_PATH}"], "WorkingDir": "/"}}
            if p.variant:
                cfg["variant"] = p.variant
            return Base("scratch", key_of("scratch", str(p)), name="scratch"), cfg, ()
        ref = self.p.find_stage(name, st.index)
        if ref is not None:
            dep = self.p._plan(ref.index, self.chain)
            self.deps.add(ref.index)
            self.platform = dep.platform if not st.platform else self.platform
            cfg = json.loads(json.dumps(dep.config))
            # BuildKit (Docker 20.10) starts a stage made FROM another one from that stage's
            # build state: its ARG values stay in the environment under the config's ENV
            self.inherited_env = dep.build_env
            return Base("stage", dep.key, stage=ref.index, name=name), cfg, ()
        image = self._image(name, st.from_, self.platform if st.platform else None)
        cfg = {k: v for k, v in image.config.data.items() if k not in ("rootfs", "history", "created")}
        cfg = json.loads(json.dumps(cfg))
        cfg.setdefault("config", {})
        return (Base("image", key_of("image", str(image.id)), image=image, name=name), cfg,
                tuple(image.config.history))

    def _image(self, ref: str, ins: df.Instruction, platform: Platform | None = None) -> Image:
        try:
            if platform is not None:  # FROM --platform
                return self.p.resolve_image(ref, str(ins.location), platform)  # type: ignore[call-arg]
            return self.p.resolve_image(ref, str(ins.location))
        except BuildError:
            raise
        except Exception as e:  # noqa: BLE001 - registry errors become a located one-liner
            raise self.p._err(ins, f"{ref}: {e}") from None

    # -- run ---------------------------------------------------------------------------------------
    def run(self) -> StagePlan:
        self.platform = self.p.opts.platform
        base, cfg, base_history = self._base()
        self.base = base
        self.key = base.key
        self.cfg = cfg
        self.config = ContainerConfig.from_json(cfg.get("config") or {})
        env_pairs = [tuple(e.split("=", 1)) if "=" in e else (e, "") for e in self.config.env or ()]
        self.scope = self.p.scope.new_stage(self.inherited_env)
        for k, v in env_pairs:
            self.scope.set_env(k, v)
        triggers = list(self.config.on_build or ())
        if base.kind != "scratch":
            self.config = self.config.with_(on_build=None)
        instructions: list[df.Instruction] = []
        for t in triggers:
            try:
                sub = df.load(f"FROM scratch\n{t}\n", filename=f"ONBUILD trigger of {base.name}")
            except BuildError as e:
                raise self.p._err(self.stage.from_, f"bad ONBUILD trigger {t!r}: {e}") from None
            instructions.extend(sub.stages[0].instructions)
        instructions.extend(self.stage.instructions)
        for ins in instructions:
            self._instruction(ins)
        env = self.config.env or ()
        if not any(e.startswith("PATH=") for e in env):
            self.config = self.config.with_(env=[f"PATH={DEFAULT_PATH}", *env])
        cfg["config"] = self.config.to_json()
        return StagePlan(self.stage.index, self.stage.name, base, tuple(self.steps), cfg,
                         base_history, frozenset(self.deps), self.platform,
                         tuple(self.scope.env.items()))

    def _vars(self) -> dict[str, str]:
        return self.scope.variables()

    def _x(self, text: str, ins: df.Instruction) -> str:
        return self.p._expand(text, self._vars(), ins)

    def _slot(self) -> str:
        self.ordinal += 1
        return key_of("slot", self.p.opts.origin, self.display, self.ordinal)

    def _meta(self, ins: df.Instruction, created_by: str, name: str | None = None) -> None:
        self.steps.append(Step("meta", self.key, name or ins.original, str(ins.location),
                               created_by, None, slot=self._slot()))

    def _set_env(self, key: str, value: str) -> None:
        """Set *key* in the config's Env (in its place if it is there, as Docker) and the scope."""
        env = list(self.config.env or ())
        at = next((i for i, e in enumerate(env) if e.split("=", 1)[0] == key), None)
        if at is None:
            env.append(f"{key}={value}")
        else:
            env[at] = f"{key}={value}"
        self.config = self.config.with_(env=env)
        self.scope.set_env(key, value)

    def _shell(self) -> list[str]:
        return list(self.config.shell or ("/bin/sh", "-c"))

    def _proxy_args(self) -> dict[str, str]:
        return {k: v for k, v in sorted(self.p.opts.build_args.items()) if k in PROXY_ARGS}

    def _cwd(self) -> str:
        return self.config.working_dir or "/"

    def _abs(self, path: str) -> str:
        if path.startswith("/"):
            return path
        base = self._cwd()
        return (base.rstrip("/") + "/" + path) if path not in ("", ".") else base.rstrip("/") + "/"

    # -- instructions ----------------------------------------------------------------------------
    def _instruction(self, ins: df.Instruction) -> None:  # noqa: C901 - one branch per keyword
        if isinstance(ins, df.Arg):
            self.p.consumed.add(ins.name)
            default = self._x(ins.default, ins) if ins.default is not None else None
            self.scope.declare_arg(ins.name, default)
            # every declaration, a repeated one too, as BuildKit lists them before a RUN
            self.declared.append(ins.name)
            # BuildKit's history line shows the Dockerfile's default, never a --build-arg value
            self._meta(ins, f"ARG {ins.name}" + (f"={default}" if default is not None else ""))
        elif isinstance(ins, df.Env):
            # every word is expanded against the environment before the instruction, as
            # Docker does: ``ENV A=new B=$A`` gives B the old A
            pairs = [(self._x(pair.key, ins), self._x(pair.value, ins)) for pair in ins.pairs]
            for k, v in pairs:
                self._set_env(k, v)
            self._meta(ins, "ENV " + " ".join(f"{k}={v}" for k, v in pairs))
        elif isinstance(ins, df.Label):
            labels = dict(self.config.labels or {})
            shown = []
            for pair in ins.pairs:
                k = self._x(pair.key, ins)
                v = self._x(pair.value, ins)
                labels[k] = v
                shown.append(f"{k}={v}")
            self.config = self.config.with_(labels=labels)
            self._meta(ins, "LABEL " + " ".join(shown))
        elif isinstance(ins, df.Maintainer):
            self.cfg["author"] = ins.name
            self._meta(ins, f"MAINTAINER {ins.name}")
        elif isinstance(ins, df.Expose):
            ports = dict.fromkeys(self.config.exposed_ports or ())
            new = []
            for word in ins.ports:
                for p in self.p._expand_words(word, self._vars(), ins):
                    num, _, proto = p.partition("/")
                    lo, dash, hi = num.partition("-")
                    if not lo.isdigit() or (dash and not hi.isdigit()) or (dash and int(hi) < int(lo)):
                        raise self.p._err(ins, f"invalid containerPort: {num}")
                    # a range is every port in it, as Docker records it
                    for port in range(int(lo), int(hi if dash else lo) + 1):
                        key = f"{port}/{(proto or 'tcp').lower()}"
                        ports[key] = None
                        new.append(key)
            self.config = self.config.with_(exposed_ports=ports)
            self._meta(ins, "EXPOSE " + go_map_keys(new))
        elif isinstance(ins, df.Volume):
            vols = dict.fromkeys(self.config.volumes or ())
            new = []
            for word in ins.paths:
                for v in self.p._expand_words(word, self._vars(), ins):
                    if not v:
                        raise self.p._err(ins, "VOLUME specified can not be an empty string")
                    vols[v] = None
                    new.append(v)
            self.config = self.config.with_(volumes=vols)
            self._meta(ins, "VOLUME [" + " ".join(new) + "]")
        elif isinstance(ins, df.User):
            user = self._x(ins.user, ins)
            self.config = self.config.with_(user=user)
            self._meta(ins, f"USER {user}")
        elif isinstance(ins, df.Stopsignal):
            sig = self._x(ins.signal, ins)
            self.config = self.config.with_(stop_signal=sig)
            self._meta(ins, f"STOPSIGNAL {sig}")
        elif isinstance(ins, df.Shell):
            self.config = self.config.with_(shell=ins.shell)
            self._meta(ins, "SHELL " + "[" + " ".join(ins.shell) + "]")
        elif isinstance(ins, df.Cmd):
            cmd = self._command(ins.command, ins.shell_form)
            self.config = self.config.with_(cmd=cmd)
            self._meta(ins, f"CMD {go_list(cmd)}")
        elif isinstance(ins, df.Entrypoint):
            ep = self._command(ins.command, ins.shell_form)
            self.config = self.config.with_(entrypoint=ep or None)
            # Docker: setting ENTRYPOINT resets a CMD inherited from the base image
            if not getattr(self, "_cmd_set_here", False):
                self.config = self.config.with_(cmd=None)
            self._meta(ins, f"ENTRYPOINT {go_list(ep)}")
        elif isinstance(ins, df.Healthcheck):
            hc: dict[str, Any] = {"Test": list(ins.test)}
            for f_, k in (("interval", "Interval"), ("timeout", "Timeout"),
                          ("start_period", "StartPeriod"), ("start_interval", "StartInterval"),
                          ("retries", "Retries")):
                v = getattr(ins, f_)
                if v:
                    hc[k] = v
            self.config = self.config.with_(healthcheck=hc)
            self._meta(ins, "HEALTHCHECK " + go_healthcheck(ins))
        elif isinstance(ins, df.Onbuild):
            self.config = self.config.with_(on_build=[*(self.config.on_build or ()), ins.trigger])
            # BuildKit records a trigger in the config only, with no history entry
            self.steps.append(Step("meta", self.key, ins.original, str(ins.location),
                                   f"ONBUILD {ins.trigger}", None, slot=self._slot(), history=False))
        elif isinstance(ins, df.Workdir):
            path = self._x(ins.path, ins)
            wd = os.path.normpath(self._abs(path))
            wd = "/" + wd.lstrip("/")
            self.config = self.config.with_(working_dir=wd)
            self._fs(ins, "mkdir", MkdirSpec(wd, self.config.user or ""),
                     f"WORKDIR {wd}", {"instruction": f"WORKDIR {wd}"}, comment_buildkit=False)
        elif isinstance(ins, df.Run):
            self._run(ins)
        elif isinstance(ins, df.Copy):  # Add derives from Copy
            self._copy(ins)
        elif isinstance(ins, df.From):
            raise self.p._err(ins, "FROM inside a stage")
        else:
            raise self.p._err(ins, f"unsupported instruction {ins.keyword}")
        if isinstance(ins, df.Cmd):
            self._cmd_set_here = True

    def _command(self, command: tuple[str, ...], shell_form: bool) -> list[str]:
        if shell_form:
            return [*self._shell(), command[0] if command else ""]
        return list(command)

    def _fs(self, ins: df.Instruction, kind: str, payload: Any, created_by: str,
            inputs: dict[str, str], *, files: dict[str, str] | None = None,
            comment_buildkit: bool = True, parent: str | None = None) -> None:
        parent_key = self.key if parent is None else parent
        inputs = {"parent": parent_key, **inputs}
        if self.p.opts.epoch is not None:
            # the layer's tar clamps times to it: a record made without it is another layer
            inputs["source_date_epoch"] = str(self.p.opts.epoch)
        self.key = key_of("step", kind, inputs)
        name = self._display(ins)
        self.steps.append(Step(kind, self.key, name, str(ins.location),  # type: ignore[arg-type]
                               created_by + (" # buildkit" if comment_buildkit else ""),
                               payload, inputs, files or {}, self._slot()))

    def _display(self, ins: df.Instruction) -> str:
        """The step's name as BuildKit shows it: the keyword upper-cased, the rest of the line
        with the stage's variables expanded (quotes kept, unset names left as written)."""
        keyword, _, rest = ins.original.strip().partition(" ")
        try:
            rest = expand_display(rest, self._vars(), escape=self.p.escape)
        except ExpansionError:
            pass
        name = f"{keyword.upper()} {rest}".rstrip()
        return name if len(name) < 200 else name[:197] + "..."

    def _history_args(self) -> str:
        """``|N K=V ...`` before a RUN's command in history, as BuildKit writes it: every ARG
        declaration of the stage, in order, with the name's value in the build environment
        (an ENV's if one set it last; empty when it has none)."""
        if not self.declared:
            return ""
        env = self.scope.env
        pairs = [f"{k}={env.get(k, '')}" for k in self.declared]
        return f"|{len(pairs)} " + " ".join(pairs) + " "

    # -- RUN ---------------------------------------------------------------------------------------
    def _run(self, ins: df.Run) -> None:
        files: list[tuple[str, str, int]] = []
        if ins.shell_form:
            line = ins.command[0] if ins.command else ""
            if ins.heredocs:
                only = line.strip()
                if len(ins.heredocs) == 1 and re.fullmatch(r"<<-?['\"]?\w+['\"]?", only):
                    script = ins.heredocs[0].content
                    if script.startswith("#!"):
                        # a script with its own interpreter runs as a file, as BuildKit does
                        path = f"/dev/pipes/{ins.heredocs[0].name}"
                        files.append((path, script, 0o755))
                        script = ""
                else:
                    script = line + "\n" + "".join(
                        h.content + ("" if h.content.endswith("\n") else "\n") + h.name + "\n"
                        for h in ins.heredocs)
                argv = [files[0][0]] if files else [*self._shell(), script]
            else:
                argv = [*self._shell(), line]
        else:
            argv = list(ins.command)
        # the build environment (ENV and valued ARGs, the last setting of a name winning)
        env = [f"{k}={v}" for k, v in self.scope.env.items()]
        if "PATH" not in self.scope.env:
            env.insert(0, f"PATH={DEFAULT_PATH}")
        run_env = env + [f"{k}={v}" for k, v in self._proxy_args().items() if k not in self.scope.env]
        mounts = tuple(self._mount(m, ins) for m in ins.mounts)
        network = ins.network or self.p.opts.network or "default"
        spec = ExecSpec(tuple(argv), tuple(run_env), self._cwd(), self.config.user or "",
                        network, mounts, ins.security or "sandbox", tuple(files))
        created_by = "RUN " + self._history_args() + " ".join(argv)
        mount_inputs = []
        for m in mounts:
            d = m.canonical()
            src = m.source
            if src is not None and src.stage is not None:
                d["from"] = self.p.plans[src.stage].key
            elif src is not None and src.image is not None:
                d["from"] = str(src.image.id)
            elif src is not None:
                d["from"] = self._context_checksum([src.path or "."], ins)[0]
            mount_inputs.append(d)
        inputs = {
            "instruction": "RUN " + json.dumps(argv) + (json.dumps(files) if files else ""),
            "args": self._history_args(),
            "env": json.dumps(env),
            "cwd": spec.cwd,
            "user": spec.user,
            "network": network,
            "mounts": json.dumps(mount_inputs, sort_keys=True),
            "security": spec.security,
        }
        if mounts:
            # the layer holds the missing mount points (as BuildKit's): not so before
            inputs["mount_points"] = "in-layer"
        self._fs(ins, "exec", spec, created_by, inputs)

    def _mount(self, m: df.Mount, ins: df.Run) -> MountSpec:
        if m.needs_expansion:
            try:
                m = df.parse_mount(m.spec, expand=lambda w: self._x(w, ins))
            except ValueError as e:
                raise self.p._err(ins, f"invalid --mount {m.spec}: {e}") from None
        if m.type not in ("bind", "cache", "tmpfs", "secret", "ssh"):
            raise self.p._err(ins, f"unsupported --mount type {m.type!r} in {m.spec}")
        target = m.target or ""
        if m.type == "secret" and not target and m.env is None:
            target = "/run/secrets/" + (m.id or os.path.basename(m.source or ""))
        if not target and m.type not in ("secret", "ssh"):  # ssh: BuildKit's default when run
            raise self.p._err(ins, f"invalid --mount {m.spec}: target is required")
        if target and not target.startswith("/"):
            target = self._abs(target)
        source: Location | None = None
        if m.from_ and m.type in ("bind", "cache"):
            ref = self.p.find_stage(m.from_, self.stage.index)
            if ref is not None:
                self.p._plan(ref.index, self.chain)
                self.deps.add(ref.index)
                source = Location("stage", m.source or "", stage=ref.index)
            else:
                source = Location("image", m.source or "", image=self._image(m.from_, ins))
        elif m.type == "bind":
            if self.p.context is None or self.p.context.root is None:
                raise self.p._err(ins, "bind mount from the context, but the build has no context")
            try:
                source = Location("context", clean(m.source or ""))
            except ContextError as e:
                raise self.p._err(ins, str(e)) from None
        readonly = m.readonly if m.type == "bind" else False
        if m.type == "bind" and not any(k in ("rw", "readwrite") for k, _ in m.options):
            readonly = True
        mode = m.mode
        return MountSpec(
            type=m.type,  # type: ignore[arg-type]
            target=target, source=source, readonly=readonly,
            id=m.id or (target if m.type == "cache" else m.source or ""),
            sharing=m.sharing or "shared", uid=m.uid, gid=m.gid, mode=mode, size=m.size,
            required=m.required, env=m.env,
        )


def plan(dockerfile: df.Dockerfile, *, context: Tree | None, resolve_image: ImageResolver,
         options: PlanOptions) -> Graph:
    """The graph for ``options.target`` (default: the last stage) of *dockerfile*."""
    return Planner(dockerfile, context=context, resolve_image=resolve_image, options=options).graph()


#: what ``docker import/commit --change`` takes: the instructions that only change the config
_CONFIG_INSTRUCTIONS: tuple[type[df.Instruction], ...] = (
    df.Cmd, df.Entrypoint, df.Env, df.Expose, df.Healthcheck, df.Label, df.Onbuild, df.Stopsignal,
    df.User, df.Volume, df.Workdir)


def apply_config(config: Mapping[str, Any], instructions: Sequence[df.Instruction],
                 env: Mapping[str, str] | None = None) -> tuple[dict[str, Any], list[str]]:
    """*instructions* (config-only ones, as ``--change`` takes) applied in order to the container config
    *config* (``Cmd``, ``Env``…) as a build applies them, words expanded from *env* and the
    config's ENV; returns the new config and each one's history ``created_by``.

    ``docker import/commit --change``. Raises ``PlanError`` naming the instruction."""
    for ins in instructions:
        if not isinstance(ins, _CONFIG_INSTRUCTIONS):
            raise PlanError(f"{ins.location}: {ins.keyword.upper()} is not a valid change command")
    # the stage walker itself, on a stage of its own: one code path for builds and changes
    planner = Planner(df.load("FROM scratch\n", filename="<config>"), context=None,
                      resolve_image=_no_image, options=PlanOptions())
    stage = _StageBuilder(planner, planner.df.stages[0], ())
    stage.key = key_of("config")
    stage.config = ContainerConfig.from_json(config)
    image_env = list(stage.config.env_map().items())
    stage.scope = planner.scope.new_stage([*(env or {}).items(), *image_env])
    for ins in instructions:
        stage._instruction(ins)
    return stage.config.to_json(), [s.created_by for s in stage.steps]


def _no_image(ref: str, where: str) -> Image:
    raise PlanError(f"{where}: no image lookup in a config change: {ref}")


__all__ = ["PlanError", "PlanOptions", "Planner", "apply_config", "plan", "platform_args"]
