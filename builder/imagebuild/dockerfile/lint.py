"""Lint rules of ``pybuild dockerfile check``, named and worded as Docker's build checks.

Works on the syntax tree (so it can speak about files the typed level would refuse too).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from builder.base.errors import ExpansionError
from builder.imagebuild.dockerfile.instructions import INSTRUCTIONS, Location, suggest
from builder.imagebuild.dockerfile.tree import Node, SyntaxTree
from builder.imagebuild.expand import expand_word, used_names
from registry.errors import RegistryError
from registry.reference import Reference

# Variables a stage has without declaring them: Docker's automatic platform ARGs and proxy
# ARGs, and what nearly every base image sets (we do not resolve the base image here).
_PREDEFINED = frozenset(
    {
        "TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT",
        "BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT",
        "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
        "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy",
        "PATH", "HOME", "HOSTNAME", "TERM",
    }
)  # fmt: skip
# BuildKit's token lists: a secret-looking word between underscores or at either end
_SECRET = re.compile(
    r"(?:^|_)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)(?:_|$)",
    re.IGNORECASE,
)
_NOT_SECRET = re.compile(r"(?:^|_)(?:public|file|version)(?:_|$)", re.IGNORECASE)
_ABSOLUTE = re.compile(r"^(?:/|\$|[A-Za-z]:[\\/])")
_SINGLE = ("cmd", "entrypoint", "healthcheck")
# Which node fields the build expands, per keyword (the syntax-level view of EXPANDED_FIELDS)
_EXPANDED = frozenset(
    {
        "add",
        "copy",
        "env",
        "expose",
        "from",
        "label",
        "stopsignal",
        "user",
        "volume",
        "workdir",
        "arg",
    }
)


@dataclass(frozen=True, slots=True)
class LintWarning:
    """One finding: Docker's ``rule`` name, its ``message`` and where."""

    rule: str
    message: str
    location: Location

    def render(self) -> str:
        """Docker's form: ``WARN: Rule: message (line N)``."""
        return f"WARN: {self.rule}: {self.message} (line {self.location.start_line})"


@dataclass(frozen=True, slots=True)
class CheckConfig:
    """The ``# check=skip=A,B;error=true`` directive."""

    skip: frozenset[str] = frozenset()
    skip_all: bool = False
    error: bool = False

    @classmethod
    def parse(cls, value: str | None) -> CheckConfig:
        if not value:
            return cls()
        skip: set[str] = set()
        skip_all = False
        error = False
        for part in value.split(";"):
            key, _, val = part.strip().partition("=")
            key = key.strip().lower()
            if key == "skip":
                names = {v.strip() for v in val.split(",") if v.strip()}
                if "all" in {n.lower() for n in names}:
                    skip_all = True
                skip |= names
            elif key == "error":
                error = val.strip().lower() == "true"
        return cls(skip=frozenset(skip), skip_all=skip_all, error=error)


def lint(tree: SyntaxTree) -> list[LintWarning]:
    """Every finding for *tree*, in line order, minus those the ``check`` directive skips."""
    config = CheckConfig.parse(tree.directives.check)
    found = sorted(_run_rules(tree), key=lambda w: (w.location.start_line, w.rule))
    if config.skip_all:
        return []
    return [w for w in found if w.rule not in config.skip]


def _loc(tree: SyntaxTree, node: Node) -> Location:
    return Location(tree.filename, node.start_line, node.end_line, node.column)


def _run_rules(tree: SyntaxTree) -> Iterator[LintWarning]:
    escape = tree.directives.escape
    nodes = tree.nodes
    for line in tree.empty_continuation_lines:
        yield LintWarning(
            "NoEmptyContinuation",
            "Empty continuation line",
            Location(tree.filename, line, line, 1),
        )
    # ConsistentInstructionCasing: against the majority of known keywords
    known = [n for n in nodes if n.cmd in INSTRUCTIONS]
    upper = sum(1 for n in known if n.keyword.isupper())
    lower = sum(1 for n in known if n.keyword.islower())
    majority = "uppercase" if upper >= lower else "lowercase"
    for n in known:
        if (majority == "uppercase" and not n.keyword.isupper()) or (
            majority == "lowercase" and not n.keyword.islower()
        ):
            yield LintWarning(
                "ConsistentInstructionCasing",
                f"Command '{n.keyword}' should match the case of the command majority ({majority})",
                _loc(tree, n),
            )

    global_defined: set[str] = set()
    # what the global ARGs hold when no --build-arg is given (for InvalidDefaultArgInFrom)
    global_defaults: dict[str, str] = dict(_PLATFORM_DEFAULTS)
    stages: dict[str, _StageState] = {}
    state: _StageState | None = None

    def close_stage(st: _StageState | None) -> Iterator[LintWarning]:
        if st is None:
            return
        for cmd, seen in st.counts.items():
            for extra in seen[:-1]:
                yield LintWarning(
                    "MultipleInstructionsDisallowed",
                    f"Multiple {cmd.upper()} instructions should not be used in the same stage "
                    "because only the last one will be used",
                    _loc(tree, extra),
                )

    for n in nodes:
        loc = _loc(tree, n)
        if n.cmd == "from":
            yield from close_stage(state)
            args = n.args
            base = args[0] if args else ""
            parent = stages.get(base.lower())
            state = _StageState.inherit(parent)
            from_visible = global_defined | _PREDEFINED
            yield from _undefined(tree, n, base, from_visible, escape, from_line=True)
            if base and "$" in base and not _valid_reference(base, global_defaults, escape):
                yield LintWarning(
                    "InvalidDefaultArgInFrom",
                    f"Default value for ARG {base} results in empty or invalid base image name",
                    loc,
                )
            for flag in n.flags:
                if flag.startswith("--platform="):
                    platform = flag.partition("=")[2]
                    yield from _undefined(tree, n, platform, from_visible, escape, from_line=True)
                    if platform in ("$TARGETPLATFORM", "${TARGETPLATFORM}"):
                        yield LintWarning(
                            "RedundantTargetPlatform",
                            f"Setting platform to predefined {platform} in FROM is redundant as "
                            "this is the default behavior",
                            loc,
                        )
            if len(args) == 3 and args[1].lower() == "as":
                as_word, name = args[1], args[2]
                if (n.keyword.isupper() and not as_word.isupper()) or (
                    n.keyword.islower() and not as_word.islower()
                ):
                    yield LintWarning(
                        "FromAsCasing",
                        f"'{as_word}' and '{n.keyword}' keywords' casing do not match",
                        loc,
                    )
                if name != name.lower():
                    yield LintWarning(
                        "StageNameCasing", f"Stage name '{name}' should be lowercase", loc
                    )
                low = name.lower()
                if low in ("scratch", "context"):
                    yield LintWarning(
                        "ReservedStageName",
                        f'Stage name should not use the same name as reserved stage "{low}"',
                        loc,
                    )
                if low in stages:
                    yield LintWarning(
                        "DuplicateStageName",
                        f'Duplicate stage name "{low}", stage names should be unique',
                        loc,
                    )
                else:
                    stages[low] = state
            continue
        if n.cmd == "maintainer":
            yield LintWarning(
                "MaintainerDeprecated",
                "Maintainer instruction is deprecated in favor of using label",
                loc,
            )
        if n.cmd in ("arg", "env"):
            names = (
                [p.key for p in n.pairs]
                if n.cmd == "env"
                else [w.partition("=")[0] for w in n.args]
            )
            for name in names:
                if _SECRET.search(name) and not _NOT_SECRET.search(name):
                    yield LintWarning(
                        "SecretsUsedInArgOrEnv",
                        f"Do not use ARG or ENV instructions for sensitive data "
                        f'({n.cmd.upper()} "{name}")',
                        loc,
                    )
        if n.cmd in ("env", "label") and any(p.legacy for p in n.pairs):
            yield LintWarning(
                "LegacyKeyValueFormat",
                f'"{n.cmd.upper()} key=value" should be used instead of legacy '
                f'"{n.cmd.upper()} key value" format',
                loc,
            )
        if n.cmd == "expose":
            for port in n.args:
                proto = port.partition("/")[2]
                if proto and proto != proto.lower():
                    yield LintWarning(
                        "ExposeProtoCasing",
                        f"Defined protocol '{port}' in EXPOSE instruction should be lowercase",
                        loc,
                    )
        if state is None:
            if n.cmd == "arg":
                for word in n.args:
                    name, eq, default = word.partition("=")
                    if eq:
                        yield from _undefined(
                            tree, n, default, global_defined | _PREDEFINED, escape
                        )
                        try:
                            global_defaults[name] = expand_word(
                                default, global_defaults, escape=escape
                            )
                        except ExpansionError:
                            global_defaults.pop(name, None)
                    else:
                        global_defaults.pop(name, None)
                    global_defined.add(name)
            continue
        if n.cmd == "shell":
            state.explicit_shell = True
        if n.cmd in ("cmd", "entrypoint") and n.args and not n.json and not state.explicit_shell:
            # an explicit SHELL says the shell form is wanted (Docker's documented escape hatch)
            yield LintWarning(
                "JSONArgsRecommended",
                f"JSON arguments recommended for {n.cmd.upper()} to prevent unintended behavior "
                "related to OS signals",
                loc,
            )
        if n.cmd in _SINGLE:
            state.counts.setdefault(n.cmd, []).append(n)
        if n.cmd in _EXPANDED:
            visible = state.variables | _PREDEFINED
            for text in _expanded_texts(n):
                yield from _undefined(tree, n, text, visible, escape)
        if n.cmd == "arg":
            for word in n.args:
                state.variables.add(word.partition("=")[0])
        elif n.cmd == "env":
            state.variables.update(p.key for p in n.pairs)
            state.env.update(p.key for p in n.pairs)
        elif n.cmd == "workdir" and n.args:
            path = n.args[0]
            if _ABSOLUTE.match(path):
                state.workdir_absolute = True
            elif not state.workdir_absolute:
                yield LintWarning(
                    "WorkdirRelativePath",
                    f'Relative workdir "{path}" can have unexpected results if the base image '
                    "changes",
                    loc,
                )
    yield from close_stage(state)


# The automatic platform ARGs, as a linux/amd64 build sets them.
_PLATFORM_DEFAULTS = {
    "TARGETPLATFORM": "linux/amd64",
    "TARGETOS": "linux",
    "TARGETARCH": "amd64",
    "TARGETVARIANT": "",
    "BUILDPLATFORM": "linux/amd64",
    "BUILDOS": "linux",
    "BUILDARCH": "amd64",
    "BUILDVARIANT": "",
}


def _valid_reference(base: str, env: dict[str, str], escape: str) -> bool:
    """Whether FROM's *base*, expanded with the ARG defaults, is an image reference (or a
    stage name, which is one too); an expression that cannot be expanded is not judged."""
    try:
        name = expand_word(base, env, escape=escape)
    except ExpansionError:
        return True
    try:
        Reference.parse(name)
    except RegistryError:
        return False
    return True


@dataclass
class _StageState:
    """What lint tracks through a stage; a stage built on an earlier one inherits its ENV
    names, its absolute WORKDIR and its SHELL (they live in the image config), not its ARGs."""

    variables: set[str] = field(default_factory=set)
    env: set[str] = field(default_factory=set)
    workdir_absolute: bool = False
    explicit_shell: bool = False
    counts: dict[str, list[Node]] = field(default_factory=dict)

    @classmethod
    def inherit(cls, parent: _StageState | None) -> _StageState:
        if parent is None:
            return cls()
        return cls(
            variables=set(parent.env),
            env=set(parent.env),
            workdir_absolute=parent.workdir_absolute,
            explicit_shell=parent.explicit_shell,
        )


def _expanded_texts(node: Node) -> list[str]:
    if node.cmd in ("env", "label"):
        return [p.value for p in node.pairs if not p.legacy] + [
            p.value for p in node.pairs if p.legacy
        ]
    if node.cmd == "arg":
        return [w.partition("=")[2] for w in node.args if "=" in w]
    if node.cmd in ("add", "copy"):
        return [a for a in node.args if not a.lstrip("0123456789").startswith("<<")]
    return list(node.args)


_WITH_DEFAULT = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?[-+?]")


def _undefined(
    tree: SyntaxTree,
    node: Node,
    text: str,
    visible: set[str] | frozenset[str],
    escape: str,
    *,
    from_line: bool = False,
) -> Iterator[LintWarning]:
    if "$" not in text:
        return
    try:
        _, unset = used_names(text, {name: "" for name in visible}, escape=escape)
    except ExpansionError:
        return
    # a name given a default or an alternative (${v:-x}, ${v+x}, ${v?msg}) is handled by the
    # expression itself
    defaulted = set(_WITH_DEFAULT.findall(text))
    reported: set[str] = set()
    for name in unset:
        if name in defaulted or name in reported or not (name[0].isalpha() or name[0] == "_"):
            continue
        reported.add(name)
        hint = suggest(name, sorted(visible), case_sensitive=True)
        if from_line:
            message = f"FROM argument '{name}' is not declared"
            rule = "UndefinedArgInFrom"
        else:
            message = f"Usage of undefined variable '${name}'"
            rule = "UndefinedVar"
        if hint:
            message += f" (did you mean ${hint}?)" if not from_line else f" (did you mean {hint}?)"
        yield LintWarning(rule, message, _loc(tree, node))
