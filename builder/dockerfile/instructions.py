"""The strict level: frozen typed instructions and stages from a ``SyntaxTree``, as BuildKit's
``instructions`` package reads them (flags, argument counts, forms); values stay unexpanded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from builder.dockerfile.syntax import parse
from builder.dockerfile.tree import Directives, Heredoc, Node, Pair, SyntaxTree
from builder.errors import InstructionError
from builder.units import parse_go_duration, parse_size

# --- records -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Location:
    """Where an instruction is: 1-based inclusive lines (heredoc bodies excluded) and the
    1-based column of its keyword."""

    filename: str
    start_line: int
    end_line: int
    column: int = 1

    def __str__(self) -> str:
        return f"{self.filename}:{self.start_line}"


@dataclass(frozen=True)
class Instruction:
    """Base of every typed instruction: its ``location`` and Docker's ``original`` line
    (continuations joined, as shown in build output and image history)."""

    location: Location
    original: str

    @property
    def keyword(self) -> str:
        """The instruction keyword in upper case (``RUN``, ``COPY``...)."""
        return type(self).__name__.upper()


@dataclass(frozen=True)
class From(Instruction):
    """``FROM [--platform=p] base [AS name]``: ``base`` raw (unexpanded); ``name`` lowercased."""

    base: str
    name: str | None = None
    platform: str | None = None


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True)
class Run(Instruction):
    """``RUN``: ``command`` is one string in shell form (``shell_form``; the build prepends
    the stage's SHELL) or the exec-form items; ``heredocs`` are the heredocs of the line."""

    command: tuple[str, ...]
    shell_form: bool
    heredocs: tuple[Heredoc, ...] = ()
    mounts: tuple[Mount, ...] = ()
    network: str | None = None
    security: str | None = None


@dataclass(frozen=True)
class Cmd(Instruction):
    """``CMD``: like ``Run.command``; an empty exec form ``CMD []`` clears the command."""

    command: tuple[str, ...]
    shell_form: bool


@dataclass(frozen=True)
class Entrypoint(Instruction):
    """``ENTRYPOINT``: like ``Cmd``."""

    command: tuple[str, ...]
    shell_form: bool


@dataclass(frozen=True)
class Shell(Instruction):
    """``SHELL ["exe", "arg"...]`` (exec form only)."""

    shell: tuple[str, ...]


@dataclass(frozen=True)
class Env(Instruction):
    """``ENV``: raw key/value pairs (quotes and ``$`` kept; the build expands both)."""

    pairs: tuple[Pair, ...]


@dataclass(frozen=True)
class Label(Instruction):
    """``LABEL``: raw key/value pairs."""

    pairs: tuple[Pair, ...]


@dataclass(frozen=True)
class Expose(Instruction):
    """``EXPOSE``: the raw port words (``80``, ``53/udp``, ``$PORT``)."""

    ports: tuple[str, ...]


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class Add(Copy):
    """``ADD``: as ``Copy``; flags ``--chown --chmod --link --keep-git-dir --checksum
    --exclude --unpack`` (no ``--from``/``--parents``)."""


@dataclass(frozen=True)
class Volume(Instruction):
    """``VOLUME``: raw paths."""

    paths: tuple[str, ...]


@dataclass(frozen=True)
class User(Instruction):
    """``USER user[:group]`` raw."""

    user: str


@dataclass(frozen=True)
class Workdir(Instruction):
    """``WORKDIR path`` raw."""

    path: str


@dataclass(frozen=True)
class Arg(Instruction):
    """One declared ``ARG``: ``name`` and raw ``default`` (None when none is given; ``ARG a
    b=1`` gives two ``Arg`` sharing a location)."""

    name: str
    default: str | None = None


@dataclass(frozen=True)
class Onbuild(Instruction):
    """``ONBUILD``: ``trigger`` is the raw text after the keyword (what goes into the image
    config); ``instruction`` its typed form."""

    trigger: str
    instruction: Instruction


@dataclass(frozen=True)
class Stopsignal(Instruction):
    """``STOPSIGNAL`` raw signal (``SIGTERM``, ``9``, ``$SIG``)."""

    signal: str


@dataclass(frozen=True)
class Healthcheck(Instruction):
    """``HEALTHCHECK``: ``test`` in Docker's config form (``["NONE"]``, ``["CMD", ...]`` or
    ``["CMD-SHELL", "cmd"]``); durations in nanoseconds, None when not given."""

    test: tuple[str, ...]
    interval: int | None = None
    timeout: int | None = None
    start_period: int | None = None
    start_interval: int | None = None
    retries: int | None = None


@dataclass(frozen=True)
class Maintainer(Instruction):
    """``MAINTAINER name`` (deprecated in favour of a label)."""

    name: str


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
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


# Which fields the build expands with ``builder.expand`` in the current ARG/ENV scope, as
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


# --- entry points --------------------------------------------------------------------------


def load(text: str, *, filename: str = "Dockerfile") -> Dockerfile:
    """Parse and type *text*: ``typed(parse(text, filename=filename))``."""
    return typed(parse(text, filename=filename))


def typed(tree: SyntaxTree) -> Dockerfile:
    """The strict level over *tree*; raise ``InstructionError`` on the first bad instruction."""
    global_args: list[Arg] = []
    stages: list[tuple[From, list[Instruction]]] = []
    names: dict[str, From] = {}
    for node in tree.nodes:
        made = _typed_node(tree, node, node.heredocs)
        if not stages and all(isinstance(m, Arg) for m in made):
            global_args.extend(m for m in made if isinstance(m, Arg))
            continue
        first = made[0]
        if isinstance(first, From):
            if first.name is not None:
                if first.name in names:
                    raise _error(
                        tree, node, f"duplicate stage name {_q(first.name)}", after=node.args[2]
                    )
                names[first.name] = first
            stages.append((first, []))
            continue
        if not stages:
            raise _error(tree, node, "no build stage in current context")
        stages[-1][1].extend(made)
    if not stages:
        last = tree.nodes[-1]
        raise _error(tree, last, "dockerfile contains no stages to build")
    return Dockerfile(
        filename=tree.filename,
        directives=tree.directives,
        global_args=tuple(global_args),
        stages=tuple(
            Stage(
                index=i,
                base=f.base,
                name=f.name,
                platform=f.platform,
                from_=f,
                instructions=tuple(body),
            )
            for i, (f, body) in enumerate(stages)
        ),
        tree=tree,
    )


# --- per instruction -----------------------------------------------------------------------

INSTRUCTIONS = (
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
)


def _q(s: str) -> str:
    """Go's %q, near enough for messages."""
    import json

    return json.dumps(s, ensure_ascii=False)


def _error(
    tree: SyntaxTree, node: Node, message: str, *, after: str | None = None
) -> InstructionError:
    """An error at *node*; the column points at *after* (a flag, a word) when it is found on
    the instruction's lines past the keyword, else at the keyword."""
    line, column = node.start_line, node.column
    if after:
        for n in range(node.start_line, node.end_line + 1):
            text = tree.source_line(n) or ""
            skip = node.column - 1 + len(node.keyword) if n == node.start_line else 0
            i = text.find(after, skip)
            if i >= 0:
                line, column = n, i + 1
                break
    return InstructionError(
        message,
        filename=tree.filename,
        line=line,
        column=column,
        source_line=tree.source_line(line),
    )


class _Flags:
    """Docker's BFlags: the flags an instruction declares, parsed from the raw words."""

    def __init__(self, tree: SyntaxTree, node: Node) -> None:
        self.tree = tree
        self.node = node
        self.kinds: dict[str, str] = {}
        self.values: dict[str, Any] = {}

    def declare(self, name: str, kind: str) -> None:
        self.kinds[name] = kind

    def parse(self) -> None:
        for raw in self.node.flags:
            name, eq, value = raw[2:].partition("=")
            kind = self.kinds.get(name)
            if kind is None:
                hint = suggest(name, sorted(self.kinds), case_sensitive=True)
                msg = f"unknown flag: {name}"
                if hint:
                    msg += f" (did you mean {hint}?)"
                raise _error(self.tree, self.node, msg, after=raw)
            if name in self.values and kind != "strings":
                raise _error(self.tree, self.node, f"duplicate flag specified: {name}", after=raw)
            if kind == "bool":
                if eq and not value:
                    raise _error(
                        self.tree, self.node, f"missing a value on flag: {name}", after=raw
                    )
                low = value.lower()
                if low in ("true", ""):
                    self.values[name] = True
                elif low == "false":
                    self.values[name] = False
                else:
                    raise _error(
                        self.tree,
                        self.node,
                        f"expecting boolean value for flag {name}, not: {value}",
                        after=raw,
                    )
            else:
                if not eq:
                    raise _error(
                        self.tree, self.node, f"missing a value on flag: {name}", after=raw
                    )
                if kind == "strings":
                    self.values.setdefault(name, []).append(value)
                else:
                    self.values[name] = value

    def string(self, name: str) -> str | None:
        value = self.values.get(name)
        return value if isinstance(value, str) else None

    def boolean(self, name: str) -> bool:
        return bool(self.values.get(name, False))

    def strings(self, name: str) -> tuple[str, ...]:
        return tuple(self.values.get(name, ()))


def _edit_distance(a: str, b: str, *, transpositions: bool = False) -> int:
    """Levenshtein distance; with *transpositions*, swapping two neighbours costs 1 (OSA)."""
    rows = [list(range(len(b) + 1))]
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cost = min(rows[-1][j] + 1, cur[j - 1] + 1, rows[-1][j - 1] + (ca != cb))
            if transpositions and i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, rows[-2][j - 2] + 1)
            cur.append(cost)
        rows.append(cur)
    return rows[-1][-1]


def suggest(value: str, options: list[str], *, case_sensitive: bool = False) -> str | None:
    """BuildKit's "did you mean": the first option at edit distance below 3 (the closest
    one wins), in the case style of *value* when matching ignores case; None on an exact
    match (the value was not the problem) or when nothing is close."""
    probe = value if case_sensitive else value.lower()
    best: str | None = None
    best_key = (3, 0, "")
    for option in options:
        candidate = option if case_sensitive else option.lower()
        if candidate == probe:
            return None
        # BuildKit keeps the first option under distance 3 in map order (random); ties are
        # broken here by the transposition-aware distance, then alphabetically
        key = (
            _edit_distance(probe, candidate),
            _edit_distance(probe, candidate, transpositions=True),
            candidate,
        )
        if key[0] < 3 and (best is None or key < best_key):
            best, best_key = candidate, key
    if best is None or case_sensitive:
        return best
    if value == value.lower():
        return best.lower()
    if value == value.upper():
        return best.upper()
    return best


def _exactly_one(tree: SyntaxTree, node: Node) -> str:
    if len(node.args) != 1:
        raise _error(tree, node, f"{node.cmd.upper()} requires exactly one argument")
    return node.args[0]


def _at_least_one(tree: SyntaxTree, node: Node, count: int) -> None:
    if count == 0:
        raise _error(tree, node, f"{node.cmd.upper()} requires at least one argument")


def _no_flags(tree: SyntaxTree, node: Node) -> None:
    _Flags(tree, node).parse()


def _typed_node(tree: SyntaxTree, node: Node, heredocs: tuple[Heredoc, ...]) -> list[Instruction]:
    loc = Location(tree.filename, node.start_line, node.end_line, node.column)
    orig = node.original
    cmd = node.cmd
    if cmd not in INSTRUCTIONS:
        hint = suggest(node.keyword, list(INSTRUCTIONS))
        msg = f"unknown instruction: {node.keyword}"
        if hint:
            msg += f" (did you mean {hint}?)"
        raise _error(tree, node, msg)
    handler = _HANDLERS[cmd]
    return handler(tree, node, loc, orig, heredocs)


_Handler = Callable[[SyntaxTree, Node, Location, str, tuple[Heredoc, ...]], list[Instruction]]
_STAGE_NAME = re.compile(r"[a-z][a-z0-9-_.]*\Z")


def _from(
    tree: SyntaxTree, node: Node, loc: Location, orig: str, _h: tuple[Heredoc, ...]
) -> list[Instruction]:
    args = node.args
    name: str | None = None
    if len(args) == 3 and args[1].lower() == "as":
        name = args[2].lower()
        if not _STAGE_NAME.match(name):
            raise _error(
                tree,
                node,
                f"invalid name for build stage: {_q(args[2])}, name can't start with a number "
                "or contain symbols",
                after=args[2],
            )
    elif len(args) != 1:
        raise _error(tree, node, "FROM requires either one or three arguments")
    flags = _Flags(tree, node)
    flags.declare("platform", "string")
    flags.parse()
    return [From(loc, orig, base=args[0], name=name, platform=flags.string("platform"))]


_NETWORKS = ("default", "none", "host")
_SECURITY = ("sandbox", "insecure")


def _run(
    tree: SyntaxTree, node: Node, loc: Location, orig: str, heredocs: tuple[Heredoc, ...]
) -> list[Instruction]:
    flags = _Flags(tree, node)
    flags.declare("mount", "strings")
    flags.declare("network", "string")
    flags.declare("security", "string")
    flags.parse()
    network = flags.string("network")
    if network is not None and network not in _NETWORKS:
        raise _error(tree, node, f"unsupported network mode {_q(network)}", after="--network")
    security = flags.string("security")
    if security is not None and security not in _SECURITY:
        raise _error(tree, node, f"unsupported security mode {_q(security)}", after="--security")
    mounts = []
    for spec in flags.strings("mount"):
        try:
            mounts.append(parse_mount(spec))
        except ValueError as e:
            raise _error(tree, node, str(e), after="--mount") from None
    if not node.args:
        raise _error(tree, node, "RUN requires at least one argument")
    return [
        Run(
            loc,
            orig,
            command=tuple(node.args),
            shell_form=not node.json,
            heredocs=heredocs,
            mounts=tuple(mounts),
            network=network,
            security=security,
        )
    ]


def _cmd_like(kind: type[Cmd] | type[Entrypoint]) -> _Handler:
    def handler(
        tree: SyntaxTree, node: Node, loc: Location, orig: str, _h: tuple[Heredoc, ...]
    ) -> list[Instruction]:
        _no_flags(tree, node)
        if kind is Entrypoint and not node.args and not node.json:
            # BuildKit since moby/buildkit#1862 (``ENTRYPOINT []`` still clears it)
            _at_least_one(tree, node, 0)
        return [kind(loc, orig, command=tuple(node.args), shell_form=not node.json)]

    return handler


def _shell(
    tree: SyntaxTree, node: Node, loc: Location, orig: str, _h: tuple[Heredoc, ...]
) -> list[Instruction]:
    _no_flags(tree, node)
    if not node.args:
        raise _error(tree, node, "SHELL requires at least one argument")
    if not node.json:
        raise _error(tree, node, "SHELL requires the arguments to be in JSON form")
    return [Shell(loc, orig, shell=tuple(node.args))]


def _pairs(tree: SyntaxTree, node: Node) -> tuple[Pair, ...]:
    _no_flags(tree, node)
    _at_least_one(tree, node, len(node.pairs))
    for pair in node.pairs:
        if not pair.key:
            raise _error(tree, node, f"{node.cmd.upper()} names can not be blank")
    return node.pairs


def _env(
    tree: SyntaxTree, node: Node, loc: Location, orig: str, _h: tuple[Heredoc, ...]
) -> list[Instruction]:
    return [Env(loc, orig, pairs=_pairs(tree, node))]


def _label(
    tree: SyntaxTree, node: Node, loc: Location, orig: str, _h: tuple[Heredoc, ...]
) -> list[Instruction]:
    return [Label(loc, orig, pairs=_pairs(tree, node))]


def _expose(
    tree: SyntaxTree, node: Node, loc: Location, orig: str, _h: tuple[Heredoc, ...]
) -> list[Instruction]:
    _at_least_one(tree, node, len(node.args))
    _no_flags(tree, node)
    # Docker keeps the ports sorted (as strings)
    return [Expose(loc, orig, ports=tuple(sorted(node.args)))]


def _copy_like(kind: type[Copy]) -> _Handler:
    is_add = kind is Add

    def handler(
        tree: SyntaxTree, node: Node, loc: Location, orig: str, heredocs: tuple[Heredoc, ...]
    ) -> list[Instruction]:
        keyword = "ADD" if is_add else "COPY"
        if len(node.args) < 2:
            raise _error(
                tree,
                node,
                f"{keyword} requires at least two arguments, but only one was provided. "
                "Destination could not be determined.",
            )
        flags = _Flags(tree, node)
        flags.declare("chown", "string")
        flags.declare("chmod", "string")
        flags.declare("link", "bool")
        flags.declare("exclude", "strings")
        if is_add:
            flags.declare("keep-git-dir", "bool")
            flags.declare("checksum", "string")
            flags.declare("unpack", "bool")
        else:
            flags.declare("from", "string")
            flags.declare("parents", "bool")
        flags.parse()
        *srcs, dest = node.args
        if _heredoc_marker(dest) is not None:
            raise _error(
                tree, node, f"{keyword} cannot accept a heredoc as a destination", after=dest
            )
        by_name = {h.name: h for h in heredocs}
        sources: list[str] = []
        contents: list[Heredoc] = []
        for src in srcs:
            found = _heredoc_marker(src)  # in exec form too, as Docker does
            if found is None:
                sources.append(src)
                continue
            name, expand, chomp, fd = found
            body = by_name.get(name)
            content = body.content if body is not None else ""
            if chomp:
                content = chomp_heredoc(content)
            contents.append(Heredoc(name=name, content=content, expand=expand, chomp=chomp, fd=fd))
        unpack = flags.values.get("unpack")
        return [
            kind(
                loc,
                orig,
                sources=tuple(sources),
                dest=dest,
                heredocs=tuple(contents),
                from_=flags.string("from"),
                chown=flags.string("chown"),
                chmod=flags.string("chmod"),
                link=flags.boolean("link"),
                parents=flags.boolean("parents"),
                excludes=flags.strings("exclude"),
                checksum=flags.string("checksum"),
                keep_git_dir=flags.boolean("keep-git-dir"),
                unpack=unpack if isinstance(unpack, bool) else None,
            )
        ]

    return handler


_LEADING_TABS = re.compile(r"^\t+", re.MULTILINE)


def _heredoc_marker(word: str) -> tuple[str, bool, bool, int] | None:
    """``parse_heredoc_word``, a word it cannot read being no marker (Docker's
    MustParseHeredoc)."""
    from builder.expand import ExpansionError, parse_heredoc_word

    try:
        return parse_heredoc_word(word)
    except ExpansionError:
        return None


def chomp_heredoc(content: str) -> str:
    """The body of a ``<<-`` heredoc with leading tabs removed from every line."""
    return _LEADING_TABS.sub("", content)


def _volume(
    tree: SyntaxTree, node: Node, loc: Location, orig: str, _h: tuple[Heredoc, ...]
) -> list[Instruction]:
    _at_least_one(tree, node, len(node.args))
    _no_flags(tree, node)
    for path in node.args:
        if not path.strip():
            raise _error(tree, node, "VOLUME specified can not be an empty string")
    return [Volume(loc, orig, paths=tuple(node.args))]


def _user(
    tree: SyntaxTree, node: Node, loc: Location, orig: str, _h: tuple[Heredoc, ...]
) -> list[Instruction]:
    value = _exactly_one(tree, node)
    _no_flags(tree, node)
    return [User(loc, orig, user=value)]


def _workdir(
    tree: SyntaxTree, node: Node, loc: Location, orig: str, _h: tuple[Heredoc, ...]
) -> list[Instruction]:
    value = _exactly_one(tree, node)
    _no_flags(tree, node)
    return [Workdir(loc, orig, path=value)]


def _stopsignal(
    tree: SyntaxTree, node: Node, loc: Location, orig: str, _h: tuple[Heredoc, ...]
) -> list[Instruction]:
    # BuildKit never parses STOPSIGNAL's flags: they are ignored, not refused
    return [Stopsignal(loc, orig, signal=_exactly_one(tree, node))]


def _maintainer(
    tree: SyntaxTree, node: Node, loc: Location, orig: str, _h: tuple[Heredoc, ...]
) -> list[Instruction]:
    value = _exactly_one(tree, node)
    _no_flags(tree, node)
    return [Maintainer(loc, orig, name=value)]


def _arg(
    tree: SyntaxTree, node: Node, loc: Location, orig: str, _h: tuple[Heredoc, ...]
) -> list[Instruction]:
    _no_flags(tree, node)
    _at_least_one(tree, node, len(node.args))
    out: list[Instruction] = []
    for word in node.args:
        name, eq, value = word.partition("=")
        if not name:
            raise _error(tree, node, "ARG names can not be blank", after=word)
        out.append(Arg(loc, orig, name=name, default=value if eq else None))
    return out


_ONBUILD_PREFIX = re.compile(r"^\s*ONBUILD\s*", re.IGNORECASE)


def _onbuild(
    tree: SyntaxTree, node: Node, loc: Location, orig: str, heredocs: tuple[Heredoc, ...]
) -> list[Instruction]:
    sub = node.sub
    if sub is None:
        raise _error(tree, node, "ONBUILD requires at least one argument")
    _no_flags(tree, node)
    trigger = sub.cmd.upper()
    if trigger == "ONBUILD":
        raise _error(
            tree, node, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed", after=sub.keyword
        )
    if trigger in ("FROM", "MAINTAINER"):
        raise _error(
            tree, node, f"{trigger} isn't allowed as an ONBUILD trigger", after=sub.keyword
        )
    made = _typed_node(tree, sub, heredocs)
    text = _ONBUILD_PREFIX.sub("", orig, count=1)
    # the trigger stored in the image carries its heredoc bodies, as Docker stores it
    for heredoc in heredocs:
        text += "\n" + heredoc.content + heredoc.name
    return [Onbuild(loc, orig, trigger=text, instruction=made[0])]


def _healthcheck(
    tree: SyntaxTree, node: Node, loc: Location, orig: str, _h: tuple[Heredoc, ...]
) -> list[Instruction]:
    if not node.args:
        raise _error(tree, node, "HEALTHCHECK requires at least one argument")
    kind = node.args[0].upper()
    rest = node.args[1:]
    if kind == "NONE":
        if rest:
            raise _error(tree, node, "HEALTHCHECK NONE takes no arguments")
        return [Healthcheck(loc, orig, test=("NONE",))]
    flags = _Flags(tree, node)
    for name in ("interval", "timeout", "start-period", "start-interval", "retries"):
        flags.declare(name, "string")
    flags.parse()
    if kind != "CMD":
        raise _error(
            tree, node, f"Unknown type {_q(kind)} in HEALTHCHECK (try CMD)", after=node.args[0]
        )
    if not rest:
        raise _error(tree, node, "Missing command after HEALTHCHECK CMD")
    test = ("CMD", *rest) if node.json else ("CMD-SHELL", " ".join(rest))
    durations: dict[str, int | None] = {}
    for name in ("interval", "timeout", "start-period", "start-interval"):
        value = flags.string(name)
        if value is None or value == "":
            durations[name] = None
            continue
        try:
            d = parse_go_duration(value)
        except ValueError as e:
            raise _error(tree, node, str(e), after=f"--{name}") from None
        if d != 0 and d < 1_000_000:
            raise _error(
                tree, node, f"Interval {_q(name)} cannot be less than 1ms", after=f"--{name}"
            )
        durations[name] = d
    retries: int | None = None
    raw_retries = flags.string("retries")
    if raw_retries:
        if not re.fullmatch(r"[-+]?\d+", raw_retries) or not -(2**31) <= int(raw_retries) < 2**31:
            raise _error(
                tree,
                node,
                f"strconv.ParseInt: parsing {_q(raw_retries)}: invalid syntax",
                after="--retries",
            )
        retries = int(raw_retries)
        if retries < 0:
            raise _error(tree, node, f"--retries cannot be negative ({retries})", after="--retries")
    return [
        Healthcheck(
            loc,
            orig,
            test=test,
            interval=durations["interval"],
            timeout=durations["timeout"],
            start_period=durations["start-period"],
            start_interval=durations["start-interval"],
            retries=retries,
        )
    ]


_HANDLERS: dict[str, _Handler] = {
    "from": _from,
    "run": _run,
    "cmd": _cmd_like(Cmd),
    "entrypoint": _cmd_like(Entrypoint),
    "shell": _shell,
    "env": _env,
    "label": _label,
    "expose": _expose,
    "copy": _copy_like(Copy),
    "add": _copy_like(Add),
    "volume": _volume,
    "user": _user,
    "workdir": _workdir,
    "arg": _arg,
    "onbuild": _onbuild,
    "stopsignal": _stopsignal,
    "healthcheck": _healthcheck,
    "maintainer": _maintainer,
}


# --- RUN --mount ---------------------------------------------------------------------------

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")


def _csv_fields(spec: str) -> list[str]:
    """Split one CSV record (``a=1,"b=x,y"``; ``""`` is a quote inside quotes)."""
    fields: list[str] = []
    cur: list[str] = []
    i, n = 0, len(spec)
    at_start = True
    while i < n:
        ch = spec[i]
        if at_start and ch == '"':
            i += 1
            while True:
                if i >= n:
                    raise ValueError(f"invalid mount spec {_q(spec)}: unterminated quote")
                if spec[i] == '"':
                    if i + 1 < n and spec[i + 1] == '"':
                        cur.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                cur.append(spec[i])
                i += 1
            if i < n and spec[i] != ",":
                raise ValueError(f"invalid mount spec {_q(spec)}: extraneous text after a quote")
            at_start = False
            continue
        if ch == ",":
            fields.append("".join(cur))
            cur = []
            at_start = True
        else:
            cur.append(ch)
            at_start = False
        i += 1
    fields.append("".join(cur))
    return fields


def _parse_bool(key: str, value: str) -> bool:
    low = value.lower()
    if low in ("1", "t", "true"):
        return True
    if low in ("0", "f", "false"):
        return False
    raise ValueError(f"invalid value for {key}: {value}")


def parse_mount(spec: str, *, expand: Callable[[str], str] | None = None) -> Mount:
    """Parse one ``--mount`` spec as Docker does; *expand* (the build's ARG/ENV expansion of
    one word) is applied to every value first. Without it, values holding ``$`` are kept
    unvalidated and the result says ``needs_expansion``. Raises ``ValueError``."""
    values: dict[str, Any] = {"type": "bind"}
    options: list[tuple[str, str]] = []
    ro_auto = True
    deferred = False
    for raw_field in _csv_fields(spec):
        key, eq, value = raw_field.partition("=")
        key = key.strip().lower()
        if not eq:
            if key in ("readonly", "ro"):
                values["readonly"], ro_auto = True, False
            elif key in ("readwrite", "rw"):
                values["readonly"], ro_auto = False, False
            elif key == "required":
                values["required"] = True
            elif key == "" and raw_field.strip() == "":
                continue
            else:
                raise ValueError(f"unexpected key '{key}' in '{raw_field}'")
            options.append((key, "true"))
            continue
        if expand is not None:
            value = expand(value)
        options.append((key, value))
        if "$" in value and expand is None:
            deferred = True
            if key in ("target", "dst", "destination"):
                values["target"] = value
            elif key in ("source", "src"):
                values["source"] = value
            elif key in ("from", "id", "env", "type", "sharing"):
                values[{"from": "from_"}.get(key, key)] = value
            continue
        if key == "type":
            low = value.lower()
            if low not in MOUNT_TYPES:
                hint = suggest(low, list(MOUNT_TYPES), case_sensitive=True)
                msg = f"unsupported mount type {_q(value)}"
                raise ValueError(msg + (f" (did you mean {hint}?)" if hint else ""))
            values["type"] = low
        elif key == "from":
            values["from_"] = value
        elif key in ("source", "src"):
            values["source"] = value
        elif key in ("target", "dst", "destination"):
            values["target"] = value
        elif key in ("readonly", "ro"):
            values["readonly"], ro_auto = _parse_bool(key, value), False
        elif key in ("readwrite", "rw"):
            values["readonly"], ro_auto = not _parse_bool(key, value), False
        elif key == "required":
            values["required"] = _parse_bool(key, value)
        elif key == "size":
            size = parse_size(value)
            if size is None:
                raise ValueError(f"invalid size: {_q(value)}")
            values["size"] = size
        elif key == "id":
            values["id"] = value
        elif key == "sharing":
            low = value.lower()
            if low not in ("shared", "private", "locked"):
                raise ValueError(f"unsupported sharing value {_q(value)}")
            values["sharing"] = low
        elif key == "mode":
            try:
                values["mode"] = int(value, 8)
            except ValueError:
                raise ValueError(f"failed to parse mode {_q(value)}") from None
        elif key in ("uid", "gid"):
            if not value.isdigit():
                raise ValueError(f"failed to parse {key} {_q(value)}")
            values[key] = int(value)
        elif key == "env":
            values["env"] = value
        else:
            raise ValueError(f"unexpected key '{key}' in '{raw_field}'")
    mtype = values["type"]
    if not deferred:
        _check_mount(mtype, values)
    if ro_auto:
        values["readonly"] = mtype not in ("cache", "tmpfs")
    return Mount(spec=spec, options=tuple(options), needs_expansion=deferred, **values)


def _check_mount(mtype: str, values: Mapping[str, Any]) -> None:
    if mtype not in ("secret", "ssh", "cache"):
        for key in ("mode", "uid", "gid"):
            if values.get(key) is not None:
                raise ValueError(f"{key} not allowed for {_q(mtype)} type mounts")
    if values.get("required") and mtype not in ("secret", "ssh"):
        raise ValueError(f"unexpected key 'required' for mount type '{mtype}'")
    if values.get("size") is not None and mtype != "tmpfs":
        raise ValueError(f"unexpected key 'size' for mount type '{mtype}'")
    if values.get("sharing") is not None and mtype != "cache":
        raise ValueError(f"invalid cache sharing set for {mtype} mount")
    if values.get("env") is not None and mtype != "secret":
        raise ValueError(f"unexpected key 'env' for mount type '{mtype}'")
    if mtype in ("secret", "ssh"):
        if values.get("from_") is not None:
            raise ValueError(f"{mtype} mounts do not support a from")
        if values.get("source") is not None:
            raise ValueError(f"{mtype} mounts do not support a source")
    if mtype in ("bind", "cache", "tmpfs") and not values.get("target"):
        raise ValueError(f"mount type {_q(mtype)} requires a target")
