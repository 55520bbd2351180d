"""The parsed form of a Go template: frozen nodes as ``text/template/parse`` makes them, each with
its byte offset (for ``template: :1:7: executing …``) and Go's ``String()`` (the ``<…>`` there)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class Dot:
    pos: int

    def __str__(self) -> str:
        return "."


@dataclass(frozen=True, slots=True)
class Nil:
    pos: int

    def __str__(self) -> str:
        return "nil"


@dataclass(frozen=True, slots=True)
class Bool:
    pos: int
    value: bool

    def __str__(self) -> str:
        return "true" if self.value else "false"


@dataclass(frozen=True, slots=True)
class Number:
    """A constant as Go's parser keeps it: the source text, and its int and/or float value
    (a character constant ``'a'`` is an int)."""

    pos: int
    text: str
    int_value: int | None
    float_value: float | None

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class String:
    pos: int
    quoted: str
    value: str

    def __str__(self) -> str:
        return self.quoted


@dataclass(frozen=True, slots=True)
class Field:
    """``.A.B``: fields of dot."""

    pos: int
    names: tuple[str, ...]

    def __str__(self) -> str:
        return "".join("." + n for n in self.names)


@dataclass(frozen=True, slots=True)
class Variable:
    """``$x.A``: a variable and fields of its value."""

    pos: int
    names: tuple[str, ...]

    def __str__(self) -> str:
        return ".".join(self.names)


@dataclass(frozen=True, slots=True)
class Identifier:
    """A function name."""

    pos: int
    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Chain:
    """``(pipeline).A.B`` (or fields of a function's result)."""

    pos: int
    node: Arg
    names: tuple[str, ...]

    def __str__(self) -> str:
        inner = f"({self.node})" if isinstance(self.node, Pipe) else str(self.node)
        return inner + "".join("." + n for n in self.names)


@dataclass(frozen=True, slots=True)
class Command:
    pos: int
    args: tuple[Arg, ...]

    def __str__(self) -> str:
        return " ".join(f"({a})" if isinstance(a, Pipe) else str(a) for a in self.args)


@dataclass(frozen=True, slots=True)
class Pipe:
    """``$x := a | b``: declared (or assigned) variables, then the commands."""

    pos: int
    decls: tuple[str, ...]
    is_assign: bool
    cmds: tuple[Command, ...]

    def __str__(self) -> str:
        head = ", ".join(self.decls) + " := " if self.decls else ""
        return head + " | ".join(str(c) for c in self.cmds)


Arg = Dot | Nil | Bool | Number | String | Field | Variable | Identifier | Chain | Pipe


@dataclass(frozen=True, slots=True)
class Action:
    pos: int
    pipe: Pipe


@dataclass(frozen=True, slots=True)
class Break:
    pos: int


@dataclass(frozen=True, slots=True)
class Continue:
    pos: int


@dataclass(frozen=True, slots=True)
class If:
    """``if`` and ``with`` (``with`` sets dot); an ``else if`` is an If alone in ``orelse``."""

    pos: int
    pipe: Pipe
    body: tuple[Node, ...]
    orelse: tuple[Node, ...]
    is_with: bool = False


@dataclass(frozen=True, slots=True)
class Range:
    pos: int
    pipe: Pipe
    body: tuple[Node, ...]
    orelse: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class TemplateCall:
    """``{{template "name" pipeline}}`` (and the use in place of a ``{{block}}``)."""

    pos: int
    name: str
    pipe: Pipe | None

    def __str__(self) -> str:
        from builder.template.values import go_quote

        return f"{{{{template {go_quote(self.name)}{' ' + str(self.pipe) if self.pipe else ''}}}}}"


Node = Text | Action | Break | Continue | If | Range | TemplateCall

#: a parsed template: its nodes, and the templates it defines by name
Parsed = tuple[tuple[Node, ...], dict[str, tuple[Node, ...]]]
