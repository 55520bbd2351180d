"""A ``SyntaxTree`` to typed instructions and stages (BuildKit's ``instructions/parse.go``):
each instruction's flags, argument counts and forms checked, values left unexpanded."""

from __future__ import annotations

import re
from collections.abc import Callable

from builder.base.units import parse_go_duration
from builder.imagebuild.dockerfile.instructions.commands import (
    Add,
    Arg,
    Cmd,
    Copy,
    Dockerfile,
    Entrypoint,
    Env,
    Expose,
    From,
    Healthcheck,
    Instruction,
    Label,
    Location,
    Maintainer,
    Onbuild,
    Run,
    Shell,
    Stage,
    Stopsignal,
    User,
    Volume,
    Workdir,
)
from builder.imagebuild.dockerfile.instructions.flags import (
    Flags,
    at_least_one,
    error_at,
    exactly_one,
    no_flags,
    quote,
    suggest,
)
from builder.imagebuild.dockerfile.instructions.runmount import parse_mount
from builder.imagebuild.dockerfile.syntax import parse
from builder.imagebuild.dockerfile.tree import Heredoc, Node, Pair, SyntaxTree
from builder.imagebuild.expand import ExpansionError, parse_heredoc_word

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
                    raise error_at(
                        tree, node, f"duplicate stage name {quote(first.name)}", after=node.args[2]
                    )
                names[first.name] = first
            stages.append((first, []))
            continue
        if not stages:
            raise error_at(tree, node, "no build stage in current context")
        stages[-1][1].extend(made)
    if not stages:
        last = tree.nodes[-1]
        raise error_at(tree, last, "dockerfile contains no stages to build")
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



def _typed_node(tree: SyntaxTree, node: Node, heredocs: tuple[Heredoc, ...]) -> list[Instruction]:
    loc = Location(tree.filename, node.start_line, node.end_line, node.column)
    orig = node.original
    cmd = node.cmd
    if cmd not in INSTRUCTIONS:
        hint = suggest(node.keyword, list(INSTRUCTIONS))
        msg = f"unknown instruction: {node.keyword}"
        if hint:
            msg += f" (did you mean {hint}?)"
        raise error_at(tree, node, msg)
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
            raise error_at(
                tree,
                node,
                f"invalid name for build stage: {quote(args[2])}, name can't start with a number "
                "or contain symbols",
                after=args[2],
            )
    elif len(args) != 1:
        raise error_at(tree, node, "FROM requires either one or three arguments")
    flags = Flags(tree, node)
    flags.declare("platform", "string")
    flags.parse()
    return [From(loc, orig, base=args[0], name=name, platform=flags.string("platform"))]


_NETWORKS = ("default", "none", "host")
_SECURITY = ("sandbox", "insecure")


def _run(
    tree: SyntaxTree, node: Node, loc: Location, orig: str, heredocs: tuple[Heredoc, ...]
) -> list[Instruction]:
    flags = Flags(tree, node)
    flags.declare("mount", "strings")
    flags.declare("network", "string")
    flags.declare("security", "string")
    flags.parse()
    network = flags.string("network")
    if network is not None and network not in _NETWORKS:
        raise error_at(tree, node, f"unsupported network mode {quote(network)}", after="--network")
    security = flags.string("security")
    if security is not None and security not in _SECURITY:
        raise error_at(tree, node, f"unsupported security mode {quote(security)}", after="--security")
    mounts = []
    for spec in flags.strings("mount"):
        try:
            mounts.append(parse_mount(spec))
        except ValueError as e:
            raise error_at(tree, node, str(e), after="--mount") from None
    if not node.args:
        raise error_at(tree, node, "RUN requires at least one argument")
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
        no_flags(tree, node)
        if kind is Entrypoint and not node.args and not node.json:
            # BuildKit since moby/buildkit#1862 (``ENTRYPOINT []`` still clears it)
            at_least_one(tree, node, 0)
        return [kind(loc, orig, command=tuple(node.args), shell_form=not node.json)]

    return handler


def _shell(
    tree: SyntaxTree, node: Node, loc: Location, orig: str, _h: tuple[Heredoc, ...]
) -> list[Instruction]:
    no_flags(tree, node)
    if not node.args:
        raise error_at(tree, node, "SHELL requires at least one argument")
    if not node.json:
        raise error_at(tree, node, "SHELL requires the arguments to be in JSON form")
    return [Shell(loc, orig, shell=tuple(node.args))]


def _pairs(tree: SyntaxTree, node: Node) -> tuple[Pair, ...]:
    no_flags(tree, node)
    at_least_one(tree, node, len(node.pairs))
    for pair in node.pairs:
        if not pair.key:
            raise error_at(tree, node, f"{node.cmd.upper()} names can not be blank")
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
    at_least_one(tree, node, len(node.args))
    no_flags(tree, node)
    # Docker keeps the ports sorted (as strings)
    return [Expose(loc, orig, ports=tuple(sorted(node.args)))]


def _copy_like(kind: type[Copy]) -> _Handler:
    is_add = kind is Add

    def handler(
        tree: SyntaxTree, node: Node, loc: Location, orig: str, heredocs: tuple[Heredoc, ...]
    ) -> list[Instruction]:
        keyword = "ADD" if is_add else "COPY"
        if len(node.args) < 2:
            raise error_at(
                tree,
                node,
                f"{keyword} requires at least two arguments, but only one was provided. "
                "Destination could not be determined.",
            )
        flags = Flags(tree, node)
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
            raise error_at(
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
    at_least_one(tree, node, len(node.args))
    no_flags(tree, node)
    for path in node.args:
        if not path.strip():
            raise error_at(tree, node, "VOLUME specified can not be an empty string")
    return [Volume(loc, orig, paths=tuple(node.args))]


def _user(
    tree: SyntaxTree, node: Node, loc: Location, orig: str, _h: tuple[Heredoc, ...]
) -> list[Instruction]:
    value = exactly_one(tree, node)
    no_flags(tree, node)
    return [User(loc, orig, user=value)]


def _workdir(
    tree: SyntaxTree, node: Node, loc: Location, orig: str, _h: tuple[Heredoc, ...]
) -> list[Instruction]:
    value = exactly_one(tree, node)
    no_flags(tree, node)
    return [Workdir(loc, orig, path=value)]


def _stopsignal(
    tree: SyntaxTree, node: Node, loc: Location, orig: str, _h: tuple[Heredoc, ...]
) -> list[Instruction]:
    # BuildKit never parses STOPSIGNAL's flags: they are ignored, not refused
    return [Stopsignal(loc, orig, signal=exactly_one(tree, node))]


def _maintainer(
    tree: SyntaxTree, node: Node, loc: Location, orig: str, _h: tuple[Heredoc, ...]
) -> list[Instruction]:
    value = exactly_one(tree, node)
    no_flags(tree, node)
    return [Maintainer(loc, orig, name=value)]


def _arg(
    tree: SyntaxTree, node: Node, loc: Location, orig: str, _h: tuple[Heredoc, ...]
) -> list[Instruction]:
    no_flags(tree, node)
    at_least_one(tree, node, len(node.args))
    out: list[Instruction] = []
    for word in node.args:
        name, eq, value = word.partition("=")
        if not name:
            raise error_at(tree, node, "ARG names can not be blank", after=word)
        out.append(Arg(loc, orig, name=name, default=value if eq else None))
    return out


_ONBUILD_PREFIX = re.compile(r"^\s*ONBUILD\s*", re.IGNORECASE)


def _onbuild(
    tree: SyntaxTree, node: Node, loc: Location, orig: str, heredocs: tuple[Heredoc, ...]
) -> list[Instruction]:
    sub = node.sub
    if sub is None:
        raise error_at(tree, node, "ONBUILD requires at least one argument")
    no_flags(tree, node)
    trigger = sub.cmd.upper()
    if trigger == "ONBUILD":
        raise error_at(
            tree, node, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed", after=sub.keyword
        )
    if trigger in ("FROM", "MAINTAINER"):
        raise error_at(
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
        raise error_at(tree, node, "HEALTHCHECK requires at least one argument")
    kind = node.args[0].upper()
    rest = node.args[1:]
    if kind == "NONE":
        if rest:
            raise error_at(tree, node, "HEALTHCHECK NONE takes no arguments")
        return [Healthcheck(loc, orig, test=("NONE",))]
    flags = Flags(tree, node)
    for name in ("interval", "timeout", "start-period", "start-interval", "retries"):
        flags.declare(name, "string")
    flags.parse()
    if kind != "CMD":
        raise error_at(
            tree, node, f"Unknown type {quote(kind)} in HEALTHCHECK (try CMD)", after=node.args[0]
        )
    if not rest:
        raise error_at(tree, node, "Missing command after HEALTHCHECK CMD")
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
            raise error_at(tree, node, str(e), after=f"--{name}") from None
        if d != 0 and d < 1_000_000:
            raise error_at(
                tree, node, f"Interval {quote(name)} cannot be less than 1ms", after=f"--{name}"
            )
        durations[name] = d
    retries: int | None = None
    raw_retries = flags.string("retries")
    if raw_retries:
        if not re.fullmatch(r"[-+]?\d+", raw_retries) or not -(2**31) <= int(raw_retries) < 2**31:
            raise error_at(
                tree,
                node,
                f"strconv.ParseInt: parsing {quote(raw_retries)}: invalid syntax",
                after="--retries",
            )
        retries = int(raw_retries)
        if retries < 0:
            raise error_at(tree, node, f"--retries cannot be negative ({retries})", after="--retries")
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
