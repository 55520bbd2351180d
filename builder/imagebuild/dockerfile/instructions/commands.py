"""The typed instructions: frozen records of each Dockerfile instruction, stages and the
Dockerfile (BuildKit's ``instructions/commands.go``), and which fields the build expands."""

from __future__ import annotations

from collections.abc import Mapping

from builder.imagebuild.dockerfile.tree import Directives, Heredoc, Pair, SyntaxTree
from registry.values import field, frozen

# --- records -------------------------------------------------------------------------------


@frozen
class Location:
    """Where an instruction is: 1-based inclusive lines (heredoc bodies excluded) and the
    1-based column of its keyword."""

    filename: str
    start_line: int
    end_line: int
    column: int = 1

    def __str__(self) -> str:
        return f"{self.filename}:{self.start_line}"


@frozen
class Instruction:
    """Base of every typed instruction: its ``location`` and Docker's ``original`` line
    (continuations joined, as shown in build output and image history)."""

    location: Location
    original: str

    @property
    def keyword(self) -> str:
        """The instruction keyword in upper case (``RUN``, ``COPY``...)."""
        return type(self).__name__.upper()


@frozen
class From(Instruction):
    """``FROM [--platform=p] base [AS name]``: ``base`` raw (unexpanded); ``name`` lowercased."""

    base: str
    name: str | None = None
    platform: str | None = None


@frozen
class Mount:
    """One ``RUN --mount`` spec. ``options`` keeps every ``key=value`` as written (keys
    lowercased, bare keys such as ``ro`` with the value ``"true"``). When ``needs_expansion``
    (a value holds ``$``), the build must call ``parse_mount(spec, expand=...)`` with its
    scope: fields made from such values are left as written (strings) or None (numbers)."""

    spec: str
    type: str = "bind"
    target: str | None = None
    source: str | None = None
    from_: str | None = None
    readonly: bool = False
    id: str | None = None
    sharing: str | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    required: bool = False
    env: str | None = None
    options: tuple[tuple[str, str], ...] = ()
    needs_expansion: bool = False


@frozen
class Run(Instruction):
    """``RUN``: ``command`` is one string in shell form (``shell_form``; the build prepends
    the stage's SHELL) or the exec-form items; ``heredocs`` are the heredocs of the line."""

    command: tuple[str, ...]
    shell_form: bool
    heredocs: tuple[Heredoc, ...] = ()
    mounts: tuple[Mount, ...] = ()
    network: str | None = None
    security: str | None = None


@frozen
class Cmd(Instruction):
    """``CMD``: like ``Run.command``; an empty exec form ``CMD []`` clears the command."""

    command: tuple[str, ...]
    shell_form: bool


@frozen
class Entrypoint(Instruction):
    """``ENTRYPOINT``: like ``Cmd``."""

    command: tuple[str, ...]
    shell_form: bool


@frozen
class Shell(Instruction):
    """``SHELL ["exe", "arg"...]`` (exec form only)."""

    shell: tuple[str, ...]


@frozen
class Env(Instruction):
    """``ENV``: raw key/value pairs (quotes and ``$`` kept; the build expands both)."""

    pairs: tuple[Pair, ...]


@frozen
class Label(Instruction):
    """``LABEL``: raw key/value pairs."""

    pairs: tuple[Pair, ...]


@frozen
class Expose(Instruction):
    """``EXPOSE``: the raw port words (``80``, ``53/udp``, ``$PORT``)."""

    ports: tuple[str, ...]


@frozen
class Copy(Instruction):
    """``COPY``: ``sources`` are the path words (heredoc sources apart, in ``heredocs``, whose
    ``name`` is the file name and ``content`` already tab-stripped for ``<<-``); ``dest``
    raw. Flags: ``--from --chown --chmod --link --parents --exclude`` (repeatable)."""

    sources: tuple[str, ...]
    dest: str
    heredocs: tuple[Heredoc, ...] = ()
    from_: str | None = None
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    parents: bool = False
    excludes: tuple[str, ...] = ()
    checksum: str | None = None
    keep_git_dir: bool = False
    unpack: bool | None = None


@frozen
class Add(Copy):
    """``ADD``: as ``Copy``; flags ``--chown --chmod --link --keep-git-dir --checksum
    --exclude --unpack`` (no ``--from``/``--parents``)."""


@frozen
class Volume(Instruction):
    """``VOLUME``: raw paths."""

    paths: tuple[str, ...]


@frozen
class User(Instruction):
    """``USER user[:group]`` raw."""

    user: str


@frozen
class Workdir(Instruction):
    """``WORKDIR path`` raw."""

    path: str


@frozen
class Arg(Instruction):
    """One declared ``ARG``: ``name`` and raw ``default`` (None when none is given; ``ARG a
    b=1`` gives two ``Arg`` sharing a location)."""

    name: str
    default: str | None = None


@frozen
class Onbuild(Instruction):
    """``ONBUILD``: ``trigger`` is the raw text after the keyword (what goes into the image
    config); ``instruction`` its typed form."""

    trigger: str
    instruction: Instruction


@frozen
class Stopsignal(Instruction):
    """``STOPSIGNAL`` raw signal (``SIGTERM``, ``9``, ``$SIG``)."""

    signal: str


@frozen
class Healthcheck(Instruction):
    """``HEALTHCHECK``: ``test`` in Docker's config form (``["NONE"]``, ``["CMD", ...]`` or
    ``["CMD-SHELL", "cmd"]``); durations in nanoseconds, None when not given."""

    test: tuple[str, ...]
    interval: int | None = None
    timeout: int | None = None
    start_period: int | None = None
    start_interval: int | None = None
    retries: int | None = None


@frozen
class Maintainer(Instruction):
    """``MAINTAINER name`` (deprecated in favour of a label)."""

    name: str


@frozen
class Stage:
    """A build stage: ``base`` is FROM's raw image word, ``name`` its lowercased ``AS`` name,
    ``instructions`` what follows the FROM (``Arg`` ones included)."""

    index: int
    base: str
    name: str | None
    platform: str | None
    from_: From
    instructions: tuple[Instruction, ...]

    @property
    def location(self) -> Location:
        return self.from_.location


@frozen
class Dockerfile:
    """A typed Dockerfile: directives, ARGs before the first FROM, stages."""

    filename: str
    directives: Directives
    global_args: tuple[Arg, ...]
    stages: tuple[Stage, ...]
    tree: SyntaxTree = field(repr=False, compare=False)

    def stage(self, ref: str) -> Stage | None:
        """The stage named *ref* (case-insensitive) or numbered *ref*, else None."""
        wanted = ref.lower()
        for st in self.stages:
            if st.name == wanted:
                return st
        if ref.isdigit() and int(ref) < len(self.stages):
            return self.stages[int(ref)]
        return None


# Which fields the build expands with ``builder.imagebuild.expand`` in the current ARG/ENV scope, as
# Docker does (instructions absent here are never expanded by the builder: RUN's command,
# CMD, ENTRYPOINT, SHELL, HEALTHCHECK, MAINTAINER). ``Onbuild`` triggers are expanded when
# they run in the child build, by the rules of their own instruction.
EXPANDED_FIELDS: Mapping[type[Instruction], tuple[str, ...]] = {
    From: ("base", "platform"),
    Run: ("mounts",),
    Env: ("pairs",),
    Label: ("pairs",),
    Expose: ("ports",),
    Copy: ("sources", "dest", "from_", "chown", "chmod", "excludes"),
    Add: ("sources", "dest", "chown", "chmod", "excludes", "checksum"),
    Volume: ("paths",),
    User: ("user",),
    Workdir: ("path",),
    Arg: ("default",),
    Stopsignal: ("signal",),
}


def expanded_fields(instruction: Instruction) -> tuple[str, ...]:
    """The field names of *instruction* the build expands (see ``EXPANDED_FIELDS``)."""
    return EXPANDED_FIELDS.get(type(instruction), ())
