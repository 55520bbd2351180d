"""The parsed form of a Go template: frozen nodes as ``text/template/parse`` makes them, each with
its byte offset (for ``template: :1:7: executing …``) and Go's ``String()`` (the ``<…>`` there).

NamedTuples, not dataclasses: every ``--format`` loads them (from the parse cache), and a
dataclass execs its generated methods at import. Tell nodes apart by class (``isinstance``):
two nodes of different kinds with the same fields compare equal as tuples."""

from __future__ import annotations

from typing import NamedTuple

from builder.base.template.values import go_quote


class Text(NamedTuple):
    text: str


class Dot(NamedTuple):
    pos: int

    def __str__(self) -> str:
        return "."


class Nil(NamedTuple):
    pos: int

    def __str__(self) -> str:
        return "nil"


class Bool(NamedTuple):
    pos: int
    value: bool

    def __str__(self) -> str:
        return "true" if self.value else "false"


class Number(NamedTuple):
    """A constant as Go's parser keeps it: the source text, and its int and/or float value
    (a character constant ``'a'`` is an int)."""

    pos: int
    text: str
    int_value: int | None
    float_value: float | None

    def __str__(self) -> str:
        return self.text


class String(NamedTuple):
    pos: int
    quoted: str
    value: str

    def __str__(self) -> str:
        return self.quoted


class Field(NamedTuple):
    """``.A.B``: fields of dot."""

    pos: int
    names: tuple[str, ...]

    def __str__(self) -> str:
        return "".join("." + n for n in self.names)


class Variable(NamedTuple):
    """``$x.A``: a variable and fields of its value."""

    pos: int
    names: tuple[str, ...]

    def __str__(self) -> str:
        return ".".join(self.names)


class Identifier(NamedTuple):
    """A function name."""

    pos: int
    name: str

    def __str__(self) -> str:
        return self.name


class Chain(NamedTuple):
    """``(pipeline).A.B`` (or fields of a function's result)."""

    pos: int
    node: Arg
    names: tuple[str, ...]

    def __str__(self) -> str:
        inner = f"({self.node})" if isinstance(self.node, Pipe) else str(self.node)
        return inner + "".join("." + n for n in self.names)


class Command(NamedTuple):
    pos: int
    args: tuple[Arg, ...]

    def __str__(self) -> str:
        return " ".join(f"({a})" if isinstance(a, Pipe) else str(a) for a in self.args)


class Pipe(NamedTuple):
    """``$x := a | b``: declared (or assigned) variables, then the commands."""

    pos: int
    decls: tuple[str, ...]
    is_assign: bool
    cmds: tuple[Command, ...]

    def __str__(self) -> str:
        head = ", ".join(self.decls) + " := " if self.decls else ""
        return head + " | ".join(str(c) for c in self.cmds)


Arg = Dot | Nil | Bool | Number | String | Field | Variable | Identifier | Chain | Pipe


class Action(NamedTuple):
    pos: int
    pipe: Pipe


class Break(NamedTuple):
    pos: int


class Continue(NamedTuple):
    pos: int


class If(NamedTuple):
    """``if`` and ``with`` (``with`` sets dot); an ``else if`` is an If alone in ``orelse``."""

    pos: int
    pipe: Pipe
    body: tuple[Node, ...]
    orelse: tuple[Node, ...]
    is_with: bool = False


class Range(NamedTuple):
    pos: int
    pipe: Pipe
    body: tuple[Node, ...]
    orelse: tuple[Node, ...]


class TemplateCall(NamedTuple):
    """``{{template "name" pipeline}}`` (and the use in place of a ``{{block}}``)."""

    pos: int
    name: str
    pipe: Pipe | None

    def __str__(self) -> str:
        return f"{{{{template {go_quote(self.name)}{' ' + str(self.pipe) if self.pipe else ''}}}}}"


Node = Text | Action | Break | Continue | If | Range | TemplateCall

#: a parsed template: its nodes, and the templates it defines by name
Parsed = tuple[tuple[Node, ...], dict[str, tuple[Node, ...]]]
