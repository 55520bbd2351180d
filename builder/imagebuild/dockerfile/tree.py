"""The syntax tree's records: ``SyntaxTree`` of ``Node`` (with ``Pair`` and ``Heredoc``) and its
``Directives``; what the line pass and the Lark glue build and the typing pass reads.
"""

from __future__ import annotations

from registry.values import frozen

TYPE_CHECKING = False  # not ``typing``'s: a build loads no ``typing`` (~6 ms)
if TYPE_CHECKING:
    from typing import Any


@frozen
class Heredoc:
    """A heredoc: ``name`` is the delimiter with quotes removed; ``content`` is the body verbatim
    (every line with its newline, the delimiter line excluded); ``expand`` is False when the
    delimiter was quoted; ``chomp`` is True for ``<<-``; ``fd`` is the ``3<<EOF`` descriptor (0
    when none)."""

    name: str
    content: str
    expand: bool = True
    chomp: bool = False
    fd: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "content": self.content,
            "expand": self.expand,
            "chomp": self.chomp,
            "fd": self.fd,
        }


@frozen
class Pair:
    """One ENV/LABEL ``key=value`` (raw: quotes and ``$`` kept); ``legacy`` for ``ENV k v``."""

    key: str
    value: str
    legacy: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "value": self.value, "legacy": self.legacy}


@frozen
class Directives:
    """Parser directives: ``escape`` is always set (default ``\\``); the others when given."""

    escape: str = "\\"
    syntax: str | None = None
    check: str | None = None

    def to_json(self) -> dict[str, str]:
        out = {"escape": self.escape}
        if self.syntax is not None:
            out["syntax"] = self.syntax
        if self.check is not None:
            out["check"] = self.check
        return out


@frozen
class Node:
    """One instruction as read, nothing interpreted (see the package docstring)."""

    cmd: str
    keyword: str
    flags: tuple[str, ...]
    args: tuple[str, ...]
    json: bool
    pairs: tuple[Pair, ...]
    heredocs: tuple[Heredoc, ...]
    sub: Node | None
    start_line: int
    end_line: int
    column: int
    original: str

    def to_json(self, *, nested: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "cmd": self.cmd,
            "flags": list(self.flags),
            "args": list(self.args),
            "json": self.json,
        }
        if self.cmd in ("env", "label"):
            out["pairs"] = [p.to_json() for p in self.pairs]
        if self.cmd == "onbuild":
            out["sub"] = self.sub.to_json(nested=True) if self.sub is not None else None
        if not nested:
            out["start_line"] = self.start_line
            out["end_line"] = self.end_line
            out["heredocs"] = [h.to_json() for h in self.heredocs]
            out["original"] = self.original
        return out


@frozen
class SyntaxTree:
    """A parsed Dockerfile: directives, the instruction nodes, and the source lines (for
    carets in error messages). ``empty_continuation_lines`` are the blank lines found inside
    continued instructions (Docker warns about them)."""

    filename: str
    directives: Directives
    nodes: tuple[Node, ...]
    lines: tuple[str, ...]
    empty_continuation_lines: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The ``pybuild dockerfile parse --json`` shape."""
        return {
            "directives": self.directives.to_json(),
            "instructions": [n.to_json() for n in self.nodes],
        }

    def source_line(self, line: int) -> str | None:
        """The text of 1-based *line*, or None outside the file."""
        if 1 <= line <= len(self.lines):
            return self.lines[line - 1]
        return None
