"""Output shaped like Docker's CLI: go-units sizes and durations, tabwriter tables, and the
subset of Go templates people pass to ``--format``/``-f``.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import click

# re-exported: the CLI's modules take them from here
from builder.units import human_duration as human_duration
from builder.units import human_size as human_size


def parse_time(text: str | None) -> datetime | None:
    """An RFC 3339 timestamp (nanoseconds allowed) or None."""
    if not text:
        return None
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?$", text)
    if not m:
        return None
    frac = (m.group(2) or "")[:7]
    zone = m.group(3) or "Z"
    try:
        return datetime.fromisoformat(m.group(1) + frac + ("+00:00" if zone == "Z" else zone))
    except ValueError:
        return None


def since(text: str | None) -> str:
    t = parse_time(text)
    if t is None:
        return "N/A"
    return human_duration((datetime.now(UTC) - t).total_seconds()) + " ago"


def created_at(text: str | None) -> str:
    """Go's ``time.Time.String()`` as ``docker images --format '{{.CreatedAt}}'`` shows it."""
    t = parse_time(text)
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S +0000 UTC") if t else ""


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Go ``tabwriter`` with Docker's settings: min width 10, padding 3, last column unpadded."""
    widths = [max(10, max((len(r[i]) for r in [headers, *rows]), default=0) + 3)
              for i in range(len(headers))]
    lines = []
    for r in [headers, *rows]:
        cells = [c.ljust(widths[i]) if i < len(r) - 1 else c for i, c in enumerate(r)]
        lines.append("".join(cells).rstrip())
    return "\n".join(lines)


def go_value(v: Any) -> str:
    """How Go's text/template prints a value."""
    if v is None:
        return "<no value>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + " ".join(go_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{go_value(v[k])}" for k in sorted(v)) + "]"
    return str(v)


_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}")


def render_template(template: str, obj: Any) -> str:
    """The subset of Go templates people pass to ``--format``: ``{{.A.B}}``, ``{{json .A}}``,
    ``{{index .A "k"}}``, ``{{join .A ","}}``, ``{{upper .A}}``, ``{{lower .A}}``."""

    def path(expr: str) -> Any:
        if expr == ".":
            return obj
        if not expr.startswith("."):
            raise click.UsageError(f"template: unsupported expression {expr!r}")
        value = obj
        for part in expr[1:].split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value

    def action(m: re.Match[str]) -> str:
        words = re.findall(r'"[^"]*"|\S+', m.group(1))
        if not words:
            return ""
        fn, args = (words[0], words[1:]) if not words[0].startswith(".") else ("", words)
        if fn == "" and len(args) == 1:
            return go_value(path(args[0]))
        if fn == "json" and len(args) == 1:
            return str(json.dumps(path(args[0]), separators=(",", ":")))
        if fn in ("upper", "lower") and len(args) == 1:
            s = go_value(path(args[0]))
            return s.upper() if fn == "upper" else s.lower()
        if fn == "index" and len(args) == 2:
            base = path(args[0])
            return go_value(base.get(args[1].strip('"')) if isinstance(base, dict) else None)
        if fn == "join" and len(args) == 2:
            sep: str = args[1].strip('"')
            return sep.join(go_value(x) for x in path(args[0]) or [])
        raise click.UsageError(f"template: unsupported action {{{{{m.group(1)}}}}}")

    return _ACTION.sub(action, template.replace("\\t", "\t").replace("\\n", "\n"))


def format_rows(fmt: str, rows: list[dict[str, Any]], headers: dict[str, str]) -> str:
    """``--format``: ``json`` (one object a line), ``table [TEMPLATE]`` or a bare TEMPLATE."""
    if fmt == "json":
        return "\n".join(json.dumps(r, separators=(",", ":")) for r in rows)
    if fmt.startswith("table"):
        template = fmt[len("table"):].strip()
        fields = re.findall(r"\{\{\s*\.(\w+)\s*\}\}", template)
        cells = [render_template(template, r).split("\t") for r in rows]
        head = [headers.get(f, f.upper()) for f in fields]
        return table(head, cells)
    return "\n".join(render_template(fmt, r) for r in rows)


@contextlib.contextmanager
def output_stream(path: str | None, *, failure: str = "") -> Iterator[BinaryIO]:
    """``-o FILE`` (``save``, ``export``): written beside FILE and renamed when whole, so a
    failure leaves nothing; no path or ``-``: stdout, refused when it is a terminal (Docker's
    message). A FILE that cannot be created is a one-line error, after *failure*."""
    import os
    import tempfile

    from builder.cli import fail

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
