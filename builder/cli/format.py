"""Output shaped like Docker's CLI: go-units sizes and durations, tabwriter tables, and
``--format``/``-f`` as Docker's formatter applies a Go template (the engine is
``builder.base.template``, imported only when a template is given): ``table`` prefixes with their
header row, inspect's output and errors, each command's wording of a template error.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from builder.base.errors import TemplateError

# re-exported: the CLI's modules take them from here
from builder.base.units import human_duration as human_duration
from builder.base.units import human_size as human_size
from builder.base.values import frozen
from builder.cli import fail, flags
from builder.cli.columns import table as table

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, BinaryIO, NoReturn

    from builder.base.template import Options, Template


# -- --format: Go templates through builder.base.template ---------------------------------------
@frozen
class FormatMessages:
    """How a command words a template's failure (Docker's commands differ) and its exit codes."""

    parse: str = "template parsing error: "
    execute: str = "template parsing error: "
    parse_code: int = 1
    exec_code: int = 1


#: ``images``, ``network ls``, ``history``, ``stats``, ``system df``…: Docker's formatter
LIST = FormatMessages()
#: ``ps``
PS = FormatMessages(parse="failed to parse template: ", execute="failed to execute template: ")
#: ``inspect`` and every ``… inspect``: a bad template is a usage error (64)
INSPECT = FormatMessages(parse_code=64)
#: ``info``, ``version``: exec errors unprefixed
INFO = FormatMessages(execute="", parse_code=64)
#: ``events``: the template checked over an empty message first, a usage error (64) either way
EVENTS = FormatMessages(parse="Error parsing format: ", execute="Error parsing format: ", parse_code=64, exec_code=64)


def _die(message: str, code: int) -> NoReturn:
    flags.echo(message, err=True)
    sys.exit(code)


@functools.lru_cache(maxsize=16)
def _parsed(text: str, name: str) -> Template:
    from builder.base.template import Template

    return Template(text, name=name)


def template(text: str, *, messages: FormatMessages = LIST, name: str = "") -> Template:
    """*text* parsed (once per process), or Docker's error line and exit."""
    try:
        return _parsed(text, name)
    except TemplateError as e:
        _die(f"{messages.parse}{e}", messages.parse_code)


def execute(tmpl: Template, data: Any, *, options: Options | None = None,
            messages: FormatMessages = LIST) -> str:
    """*tmpl* over *data*, or Docker's error line and exit."""
    try:
        return tmpl.execute(data, options=options)
    except TemplateError as e:
        _die(f"{messages.execute}{e}", messages.exec_code)


def render_template(text: str, obj: Any, *, options: Options | None = None,
                    messages: FormatMessages = LIST, name: str = "") -> str:
    """One value through a ``--format`` template (Go's text/template with Docker's functions)."""
    return execute(template(text, messages=messages, name=name), obj, options=options, messages=messages)


def render_inspect(text: str, objs: Sequence[Any], *, options: Options | None = None) -> tuple[str, list[str]]:
    """``inspect -f``: each object's text (by default Docker's typed-value view of the JSON
    with its JSON fallback, ``shapes.INSPECT``), and the errors of those that failed (Docker
    joins them after the output). A template that does not parse exits 64 first."""
    from builder.base.template.shapes import INSPECT as SHAPE

    tmpl = template(text, messages=INSPECT)
    lines, errors = [], []
    for o in objs:
        try:
            lines.append(tmpl.execute(o, options=options or SHAPE))
        except TemplateError as e:
            errors.append(f"{INSPECT.execute}{e}")
    return "\n".join(lines), errors


def inspect_output(text: str | None, objs: Sequence[Any], errors: Sequence[str] = (), *,
                   options: Options | None = None) -> None:
    """Print ``inspect`` as Docker does: indented JSON, or each object through ``-f``; then the
    errors (lookups and templates), exit 1 if any. With a template and nothing printed, Docker
    prints an empty line. A bad template is refused (exit 64) before anything is printed."""
    if text and text != "json":
        template(text, messages=INSPECT)
    if not text:
        flags.echo(json.dumps(list(objs), indent=4))
        failed = list(errors)
    elif text == "json":  # Docker 23+ (20.10 prints the word): each object as indented JSON
        for o in objs:
            flags.echo(json.dumps(o, indent=4))
        failed = list(errors)
    else:
        out, failed = render_inspect(text, objs, options=options)
        flags.echo(out)
        failed = list(errors) + failed
    if failed:
        _die("\n".join(failed), 1)


class RowMethod:
    """A row's method that takes string arguments, as ``Label "k"`` of Docker's ``ps``,
    ``network ls`` and ``volume ls`` rows; in the header row it shows its argument."""

    arity = 1

    def __init__(self, fn: Callable[[str], str]) -> None:
        self._fn = fn

    def __call__(self, key: str) -> str:
        return self._fn(key)

    @property
    def header(self) -> RowMethod:
        return RowMethod(lambda key: key)


def label_method(labels: dict[str, str]) -> RowMethod:
    return RowMethod(lambda key: labels.get(key, ""))


def _preformat(fmt: str) -> tuple[bool, str]:
    """Docker's ``preFormat``: a ``table`` prefix, spaces trimmed, ``\\t``/``\\n`` unescaped."""
    is_table = fmt.startswith("table")
    text = fmt[len("table"):] if is_table else fmt
    return is_table, text.strip(" ").replace("\\t", "\t").replace("\\n", "\n")


def format_rows(fmt: str, rows: Sequence[dict[str, Any]], headers: dict[str, str], *,
                type_name: str = "", messages: FormatMessages = LIST) -> str:
    """``--format`` of a list command, as Docker's formatter: ``json`` (one object a line, as
    Docker 23+), ``table TEMPLATE`` (a header row of the column titles, tabwriter columns) or a
    bare TEMPLATE, one line a row. *type_name* is the Go type Docker's rows have (for
    ``can't evaluate field X in type T``)."""
    from builder.base.template.shapes import row

    if fmt == "json":
        fmt = "{{json .}}"
    is_table, text = _preformat(fmt)
    tmpl = template(text, messages=messages)
    options = row(type_name) if type_name else None
    body = "".join(execute(tmpl, r, options=options, messages=messages) + "\n" for r in rows)
    if not is_table:
        return body[:-1]
    header = dict(headers)
    for r in rows[:1]:
        for k, v in r.items():
            if callable(v):
                header[k] = v.header  # e.g. ps's ``Label "k"``: the header shows the key
    return tabwrite(tmpl.execute_header(header) + "\n" + body).rstrip("\n")


def tabwrite(text: str, *, minwidth: int = 10, padding: int = 3) -> str:
    """Go's ``text/tabwriter`` as Docker's formatter sets it up (min width 10, padding 3, spaces):
    tab-terminated cells aligned in column blocks of adjacent lines, the last cell of a line
    left as it is."""
    lines = [line.split("\t") for line in text.split("\n")]
    widths: list[int] = []
    out: list[str] = []

    def write(line0: int, line1: int) -> None:
        for i in range(line0, line1):
            parts = []
            for j, cell in enumerate(lines[i]):
                parts.append(cell.ljust(widths[j]) if j < len(widths) else cell)
            out.append("".join(parts))

    def block(line0: int, line1: int) -> None:
        column = len(widths)
        this = line0
        while this < line1:
            if column >= len(lines[this]) - 1:
                this += 1
                continue
            write(line0, this)
            line0 = this
            width = minwidth
            while this < line1 and column < len(lines[this]) - 1:
                width = max(width, len(lines[this][column]) + padding)
                this += 1
            widths.append(width)
            block(line0, this)
            widths.pop()
            line0 = this
        write(line0, line1)

    block(0, len(lines))
    return "\n".join(out)


@contextlib.contextmanager
def output_stream(path: str | None, *, failure: str = "") -> Iterator[BinaryIO]:
    """``-o FILE`` (``save``, ``export``): written beside FILE and renamed when whole, so a
    failure leaves nothing; no path or ``-``: stdout, refused when it is a terminal (Docker's
    message). A FILE that cannot be created is a one-line error, after *failure*."""
    import tempfile

    if path is None or path == "-":
        if sys.stdout.isatty():
            fail("cowardly refusing to save to a terminal. Use the -o flag or redirect")
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    if target.is_dir():
        fail(f"open {path}: is a directory")
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent if str(target.parent) else ".", prefix=f".{target.name}.")
    except OSError as e:
        fail(f"{failure}open {path}: {(e.strerror or str(e)).lower()}")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.chmod(tmp, 0o644)
        os.rename(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
