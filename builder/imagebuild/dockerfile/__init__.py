"""The Dockerfile front end: the lenient syntax tree and the strict typed instructions.

Runs ``grammar/dockerfile.lark`` over a line pass; values stay unexpanded (see ``expand``).

Two levels, as Docker (BuildKit's ``parser`` and ``instructions``) has them:

**Syntax tree** (lenient): ``parse(text, *, filename="Dockerfile") -> SyntaxTree``.

* ``SyntaxTree.directives``: ``Directives(escape, syntax, check)`` (``# escape=`` etc., only at
  the top of the file, before any comment, blank line or instruction).
* ``SyntaxTree.nodes``: one ``Node`` per instruction, in order, each with ``cmd`` (keyword
  lowercased, unknown keywords too), ``keyword`` (as written), ``flags`` (the ``--name[=value]``
  words in order, quotes removed as Docker does, a ``--`` separator dropped), ``args`` (raw
  words, see the ``parse --json`` rules in issue 3), ``json`` (exec form used), ``pairs``
  (``Pair(key, value, legacy)`` for ENV/LABEL), ``heredocs`` (``Heredoc(name, content,
  expand, chomp, fd)``, content verbatim), ``sub`` (ONBUILD's nested ``Node``),
  ``start_line``/``end_line`` (1-based, inclusive; continuation lines in, heredoc bodies out),
  ``column`` (1-based column of the keyword) and ``original`` (Docker's joined line: the
  instruction with continuations removed).
* ``SyntaxTree.to_json()``: the dict printed by ``pybuild dockerfile parse --json``.
* Raises ``DockerfileSyntaxError`` only for what cannot be read: no instructions, ENV/LABEL
  key without value, a non-string item (e.g. a nested array) in exec form, an unterminated
  heredoc, a bad or repeated parser directive.

**Typed instructions** (strict): ``load(text, *, filename) -> Dockerfile`` or
``typed(tree) -> Dockerfile``.

* ``Dockerfile.directives``, ``Dockerfile.global_args`` (``Arg`` before the first FROM),
  ``Dockerfile.stages`` (``Stage(index, base, name, platform, from_, instructions,
  location)``; ``base`` is the raw image word, ``name`` lowercased or None).
* Every instruction is a frozen dataclass deriving from ``Instruction`` with ``location``
  (``Location(filename, start_line, end_line, column)``) and ``original`` text:
  ``From Run Cmd Entrypoint Shell Env Label Expose Copy Add Volume User Workdir Arg Onbuild
  Stopsignal Healthcheck Maintainer`` (fields documented on each class).
* ``Run.mounts`` are ``Mount`` records parsed from the raw ``--mount`` specs; a value holding
  ``$`` is kept as written and validated when the build calls
  ``parse_mount(spec, expand=...)`` with its ARG/ENV scope.
* ``EXPANDED_FIELDS`` / ``expanded_fields(instruction)``: which fields the build expands
  with ``builder.imagebuild.expand`` in the ARG/ENV scope (Docker: ADD COPY ENV EXPOSE FROM LABEL
  STOPSIGNAL USER VOLUME WORKDIR, ARG defaults, RUN ``--mount`` values, ONBUILD when
  triggered; RUN/CMD/ENTRYPOINT/SHELL/HEALTHCHECK are never expanded by the builder).
* Raises ``InstructionError`` (a ``DockerfileSyntaxError`` with file, line and column):
  unknown instruction (with a "did you mean" hint), a flag the instruction does not take or
  a bad flag value, a wrong argument count, a HEALTHCHECK type other than CMD/NONE,
  ``ONBUILD ONBUILD``/``FROM``/``MAINTAINER``, SHELL not in exec form, a reused stage name.

**Lint**: ``lint(tree) -> list[LintWarning]`` (rule, message, location; Docker's rule names),
used by ``pybuild dockerfile check``; ``LintWarning.render()`` gives Docker's
``WARN: Rule: message (line N)``. The ``# check=skip=...;error=true`` directive is honoured.

Where we differ from Docker, on purpose:

* Sequences are tuples (frozen records), not lists.
* A continued instruction that joins to nothing (a lone ``\\`` line) is skipped; Docker makes
  an instruction with an empty keyword of it.
* ``RUN`` with no command is an error here; ONBUILD triggers are typed (and so checked)
  when the Dockerfile is loaded, not when a child image triggers them.
* ``${v`` (a missing ``}`` right after the name) says ``missing '}'``; Docker prints an
  ``unsupported modifier`` with a replacement character.
* "Did you mean" ties, which Docker breaks by map order, go to the closest match counting
  transpositions, then alphabetically.
* A duplicate stage name is both the ``DuplicateStageName`` warning and a typed error.
"""

from __future__ import annotations

import importlib

from builder.imagebuild.dockerfile.syntax import parse
from builder.imagebuild.dockerfile.tree import Directives, Heredoc, Node, Pair, SyntaxTree

TYPE_CHECKING = False  # not ``typing``'s: a build loads no ``typing`` (~6 ms)
if TYPE_CHECKING:
    from typing import Any

    from builder.imagebuild.dockerfile.instructions import (
        EXPANDED_FIELDS,
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
        Mount,
        Onbuild,
        Run,
        Shell,
        Stage,
        Stopsignal,
        User,
        Volume,
        Workdir,
        expanded_fields,
        load,
        parse_mount,
        typed,
    )
    from builder.imagebuild.dockerfile.lint import LintWarning, lint

# The typed level and lint are imported on first use: ``parse`` alone (the CLI's
# ``dockerfile parse``) then skips creating some thirty dataclasses at start-up.
_LAZY = {
    "LintWarning": "builder.imagebuild.dockerfile.lint",
    "lint": "builder.imagebuild.dockerfile.lint",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name, "builder.imagebuild.dockerfile.instructions")
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "EXPANDED_FIELDS",
    "Add",
    "Arg",
    "Cmd",
    "Copy",
    "Directives",
    "Dockerfile",
    "Entrypoint",
    "Env",
    "Expose",
    "From",
    "Healthcheck",
    "Heredoc",
    "Instruction",
    "Label",
    "LintWarning",
    "Location",
    "Maintainer",
    "Mount",
    "Node",
    "Onbuild",
    "Pair",
    "Run",
    "Shell",
    "Stage",
    "Stopsignal",
    "SyntaxTree",
    "User",
    "Volume",
    "Workdir",
    "expanded_fields",
    "lint",
    "load",
    "parse",
    "parse_mount",
    "typed",
]
