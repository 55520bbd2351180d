"""The ops a build graph is made of (source, exec, copy, mkdir, meta) and their cache keys.

The solver sees only these: a key, a display name, and ``execute(executor)``, never Dockerfile
syntax. Execution itself lives in ``builder.imagebuild.execute`` (a ``StepExecutor``); this module stays
free of anything Linux-specific.
"""

from __future__ import annotations

import json

from builder.imagebuild import sha
from registry.model import Platform
from registry.store import Image
from registry.values import field, frozen

TYPE_CHECKING = False  # not ``typing``'s: a build loads no ``typing`` (~6 ms)
if TYPE_CHECKING:  # (git, with subprocess, is loaded by the ADD of a repository alone)
    from typing import Any, Literal, Protocol

    from builder.imagebuild.sources.git import GitSource


class CacheKey(str):
    """A content-derived cache key: 64 lowercase hex digits (sha256), validated once.

    A ``str`` so that it is its own canonical form inside the keys made from it."""

    __slots__ = ()

    def __new__(cls, value: str) -> CacheKey:
        if len(value) != 64 or value.strip("0123456789abcdef"):
            raise ValueError(f"not a cache key: {value!r}")
        return super().__new__(cls, value)


def key_of(*parts: Any) -> CacheKey:
    """A cache key: sha256 over the canonical JSON of *parts* (sorted keys, no floats)."""
    raw = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return CacheKey(sha.sha256(raw.encode()).hexdigest())


if TYPE_CHECKING:  # a protocol for the type checker alone
    class StepExecutor(Protocol):
        """What executes ops (``builder.imagebuild.execute.StepRunner``): one call per kind of filesystem op."""

        def run(self, step: Step, spec: ExecSpec) -> None: ...

        def copy(self, step: Step, spec: CopySpec) -> None: ...

        def mkdir(self, step: Step, spec: MkdirSpec) -> None: ...


@frozen
class Base:
    """Where a stage starts: nothing (``scratch``), an image in the store, or an earlier stage."""

    kind: Literal["scratch", "image", "stage"]
    key: CacheKey
    image: Image | None = None
    stage: int | None = None
    name: str = "scratch"  # as written in FROM, expanded


@frozen
class Location:
    """A source path and where it is read from: the build context, an earlier stage's
    filesystem (by stage index) or an image's."""

    kind: Literal["context", "stage", "image"]
    path: str = ""
    stage: int | None = None
    image: Image | None = None

    def __post_init__(self) -> None:
        if (self.kind == "stage") != (self.stage is not None) or \
                (self.kind == "image") != (self.image is not None):
            raise ValueError(f"a {self.kind} location names {'a stage' if self.stage is not None else 'an image'}")


@frozen
class MountSpec:
    """A ``RUN --mount`` with its values expanded and its source resolved."""

    type: Literal["bind", "cache", "tmpfs", "secret", "ssh"]
    target: str
    #: what a bind mount (or a cache mount ``from=``) shows: a path of the context, a stage or an image
    source: Location | None = None
    readonly: bool = True
    id: str = ""
    sharing: str = "shared"
    uid: int | None = None
    gid: int | None = None
    mode: int | None = None
    size: int | None = None
    required: bool = False
    env: str | None = None  # secret exposed as an environment variable

    def canonical(self) -> dict[str, Any]:
        """What the key sees: never a secret's value (it is not known here anyway)."""
        d: dict[str, Any] = {"type": self.type, "target": self.target,
                             "source": self.source.path if self.source else "", "ro": self.readonly}
        if self.type == "cache":
            d |= {"id": self.id, "sharing": self.sharing, "uid": self.uid, "gid": self.gid,
                  "mode": self.mode}
        if self.type == "tmpfs":
            d["size"] = self.size
        if self.type == "secret":
            d = {"type": "secret", "target": self.target, "id": self.id, "env": self.env}
        if self.type == "ssh":  # never the agent's keys: who may connect, and where
            d = {"type": "ssh", "target": self.target, "id": self.id, "uid": self.uid, "gid": self.gid,
                 "mode": self.mode, "required": self.required}
        return d


@frozen
class ExecSpec:
    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    user: str
    network: str = "default"
    mounts: tuple[MountSpec, ...] = ()
    security: str = "sandbox"
    #: files put in place read-only for the process: (path, content, mode) — heredoc scripts
    files: tuple[tuple[str, str, int], ...] = ()

    def execute(self, step: Step, executor: StepExecutor) -> None:
        executor.run(step, self)


@frozen
class CopySource:
    """One source word of COPY/ADD: from the context, a stage, an image, a URL or a heredoc."""

    path: str  # as written: a path or glob, a URL, a heredoc's file name
    origin: Literal["context", "stage", "image", "url", "heredoc", "git"]
    #: where a context, stage or image source is read from (its ``path`` is ``path``)
    location: Location | None = None
    content: str | None = None  # heredoc body, after expansion
    checksum: str | None = None  # ADD --checksum for a URL
    git: GitSource | None = None  # ADD of a git repository: its ref resolved to a commit


@frozen
class CopySpec:
    sources: tuple[CopySource, ...]
    dest: str  # absolute, trailing "/" kept
    chown: str | None = None
    chmod: int | None = None
    link: bool = False
    parents: bool = False
    excludes: tuple[str, ...] = ()
    add: bool = False  # ADD: extract local archives, fetch URLs
    cwd: str = "/"

    def execute(self, step: Step, executor: StepExecutor) -> None:
        executor.copy(step, self)


@frozen
class MkdirSpec:
    path: str
    user: str = ""

    def execute(self, step: Step, executor: StepExecutor) -> None:
        executor.mkdir(step, self)


@frozen
class Step:
    """One op in a stage's chain.

    ``key`` is the stage's filesystem key after the step (unchanged by ``meta``); ``inputs``
    names what went into it so that a miss can say which input changed.
    """

    kind: Literal["exec", "copy", "mkdir", "meta"]
    key: CacheKey
    name: str  # e.g. "RUN echo hi"
    location: str  # "Dockerfile:7"
    created_by: str
    payload: ExecSpec | CopySpec | MkdirSpec | None = None
    inputs: dict[str, str] = field(default_factory=dict, compare=False)
    #: per-file fingerprints of context sources, to say which file changed on a miss
    files: dict[str, str] = field(default_factory=dict, compare=False)
    slot: str = ""
    comment: str = "buildkit.dockerfile.v0"
    #: the filesystem key after the step when it differs from the cache key (``COPY --link``)
    fs_key: CacheKey | None = None
    #: whether the step gets a history entry (ONBUILD does not)
    history: bool = True

    @property
    def after(self) -> CacheKey:
        return self.fs_key if self.fs_key is not None else self.key

    @property
    def changes_fs(self) -> bool:
        return self.kind != "meta"

    @property
    def linked(self) -> bool:
        """``COPY --link``: the step runs on an empty root, independent of the layers below."""
        return isinstance(self.payload, CopySpec) and self.payload.link

    def execute(self, executor: StepExecutor) -> None:
        """Run the op through *executor*; a metadata step has nothing to run."""
        if self.payload is None:
            raise ValueError(f"{self.location}: {self.name} changes no filesystem")
        self.payload.execute(self, executor)


@frozen
class StagePlan:
    index: int
    name: str | None
    base: Base
    steps: tuple[Step, ...]
    #: the image config (architecture, os, config, history of the base) minus layers
    config: dict[str, Any]
    base_history: tuple[dict[str, Any], ...]
    deps: frozenset[int]
    platform: Platform
    #: the build environment at the stage's end (ENV and valued ARGs, in order): where a
    #: stage made FROM this one starts, as BuildKit's build state carries it
    build_env: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> CacheKey:
        return self.steps[-1].after if self.steps else self.base.key

    @property
    def display(self) -> str:
        return self.name or f"stage-{self.index}"


@frozen
class Graph:
    """The stages a target needs, in Dockerfile order; ``target`` is the last one built."""

    stages: tuple[StagePlan, ...]
    target: int
    warnings: tuple[str, ...] = ()
    epoch: int | None = None
    #: the Dockerfile has more than one stage: BuildKit then names unnamed ones ``stage-N``
    multi_stage: bool = False

    def stage(self, index: int) -> StagePlan:
        for s in self.stages:
            if s.index == index:
                return s
        raise KeyError(index)

    def needed(self) -> list[StagePlan]:
        """The target and the stages it depends on, transitively, in Dockerfile order."""
        want: set[int] = set()
        todo = [self.target]
        while todo:
            i = todo.pop()
            if i in want:
                continue
            want.add(i)
            todo.extend(self.stage(i).deps)
        return [s for s in self.stages if s.index in want]
