"""``pybuild dockerfile parse|check``: print a Dockerfile's syntax tree, or lint it.

Syntax errors print ``FILE:LINE:COL: message`` and the line with a caret, and exit 1.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable

from builder.base.errors import DockerfileSyntaxError
from builder.cli import flags

TYPE_CHECKING = False  # not ``typing``'s: a build loads no ``typing`` (~6 ms)
if TYPE_CHECKING:
    from typing import Any


def _read(path: str) -> tuple[str, str]:
    """(text, display name) of *path*, ``-`` being stdin."""
    if path == "-":
        data = sys.stdin.buffer.read()
        name = "<stdin>"
    else:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            flags.echo(f"Error: {path}: {e.strerror or e}", err=True)
            sys.exit(1)
        name = path
    return data.decode("utf-8", errors="replace"), name


def _syntax_error(e: DockerfileSyntaxError) -> None:
    flags.echo(e.render(), err=True)
    sys.exit(1)


@flags.group("dockerfile")
def dockerfile() -> None:
    """Read Dockerfiles: print the syntax tree, run the build checks."""


def _dump(node: object) -> str:
    """One node as Docker's ``Node.Dump()`` prints it: ``(copy ["--from=b"] "a" "/b")``."""
    from builder.imagebuild.dockerfile import Node

    assert isinstance(node, Node)
    parts = [node.cmd]
    if node.flags:
        parts.append("[" + " ".join(json.dumps(f) for f in node.flags) + "]")
    parts.extend(json.dumps(a) for a in node.args)
    for p in node.pairs:
        parts.extend((json.dumps(p.key), json.dumps(p.value), json.dumps("" if p.legacy else "=")))
    if node.sub is not None:
        parts.append(_dump(node.sub))
    return "(" + " ".join(parts) + ")"


@dockerfile.command("parse")
@flags.option("--json", "as_json", is_flag=True, help="Print the tree as one JSON object.")
@flags.argument("file", type=str)
def parse_cmd(as_json: bool, file: str) -> None:
    """Print the syntax tree of FILE (- reads standard input)."""
    from builder.imagebuild.dockerfile import parse

    text, name = _read(file)
    try:
        tree = parse(text, filename=name)
    except DockerfileSyntaxError as e:
        _syntax_error(e)
        return
    if as_json:
        flags.echo(json.dumps(tree.to_json(), indent=2, ensure_ascii=False))
        return
    for key, value in tree.directives.to_json().items():
        flags.echo(f"# {key}={value}")
    for node in tree.nodes:
        lines = (
            f"{node.start_line}"
            if node.start_line == node.end_line
            else f"{node.start_line}-{node.end_line}"
        )
        flags.echo(f"{lines}: {_dump(node)}")
        for heredoc in node.heredocs:
            flags.echo(f"    <<{heredoc.name} {json.dumps(heredoc.content)}")


@dockerfile.command("check")
@flags.option("--error", "fail_on_warning", is_flag=True, help="Exit 1 when there are warnings.")
@flags.argument("file", type=str)
def check_cmd(fail_on_warning: bool, file: str) -> None:
    """Run the typed level and the build checks on FILE; print warnings as Docker does."""
    text, name = _read(file)
    run_check(text, name, fail_on_warning=fail_on_warning)


def run_check(text: str, name: str, *, fail_on_warning: bool) -> None:
    """The checks on one Dockerfile's *text*: warnings, then the summary; exits 1 on a syntax
    error, and on warnings when *fail_on_warning* or the file's ``# check=error=true`` says so."""
    from builder.imagebuild.dockerfile import lint, parse, typed
    from builder.imagebuild.dockerfile.lint import CheckConfig

    try:
        tree = parse(text, filename=name)
    except DockerfileSyntaxError as e:
        _syntax_error(e)
        return
    warnings = lint(tree)
    for w in warnings:
        flags.echo(w.render())
    try:
        typed(tree)
    except DockerfileSyntaxError as e:
        _syntax_error(e)
        return
    if warnings:
        n = len(warnings)
        flags.echo(
            f"Check complete, {n} warning{'s' if n != 1 else ''} {'have' if n != 1 else 'has'} been found!"
        )
    else:
        flags.echo("Check complete, no warnings found.")
    if warnings and (fail_on_warning or CheckConfig.parse(tree.directives.check).error):
        sys.exit(1)


def check_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``build --check`` (Docker's ``--call=check``): the build checks on the build's Dockerfile,
    nothing built; exit 1 when there are warnings, as BuildKit's lint result says."""

    @functools.wraps(f)
    def wrapper(*args: Any, check: bool, **kw: Any) -> Any:
        if not check:
            return f(*args, **kw)
        context, path = kw.get("context"), kw.get("dockerfile")
        if path == "-" or context == "-":
            text, name = _read("-")
        else:
            if path is None:
                path = os.path.join(context or ".", "Dockerfile")
            elif not os.path.isabs(path) and not os.path.exists(path) and context:
                path = os.path.join(context, path)
            text, name = _read(path)
        run_check(text, os.path.basename(name) if name != "<stdin>" else "Dockerfile", fail_on_warning=True)
        return None

    return flags.option("--check", is_flag=True,
                        help="Run the build checks on the Dockerfile, without building (exit 1 on warnings).")(wrapper)
