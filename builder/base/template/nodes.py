"""The parsed form of a Go template: frozen nodes as ``text/template/parse`` makes them, each with
its byte offset (for ``template: :1:7: executing …``) and Go's ``String()`` (the ``<…>`` there).

Frozen values (``builder.base.values.frozen``), not dataclasses nor NamedTuples: every
``--format`` loads them (from the parse cache), a dataclass execs its generated methods at import
and a NamedTuple needs ``typing``. Equal by class and fields; tell nodes apart by class
(``isinstance``)."""

from __future__ import annotations

from builder.base.template.values import go_quote
from builder.base.values import frozen


@frozen
class Text:
    text: str


@frozen
class Dot:
    pos: int

    def __str__(self) -> str:
        return "."


@frozen
class Nil:
    pos: int

    def __str__(self) -> str:
        return "nil"


@frozen
class Bool:
    pos: int
    value: bool

    def __str__(self) -> str:
        return "true" if self.value else "false"


@frozen
class Number:
    """A constant as Go's parser keeps it: the source text, and its int and/or float value
    (a character constant ``'a'`` is an int)."""

    pos: int
    text: str
    int_value: int | None
    float_value: float | None

    def __str__(self) -> str:
        return self.text


@frozen
class String:
    pos: int
    quoted: str
    value: str

    def __str__(self) -> str:
        return self.quoted


@frozen
class Field:
    """``.A.B``: fields of dot."""

    pos: int
    names: tuple[str, ...]

    def __str__(self) -> str:
        return "".join("." + n for n in self.names)


@frozen
class Variable:
    """``$x.A``: a variable and fields of its value."""

    pos: int
    names: tuple[str, ...]

    def __str__(self) -> str:
        return ".".join(self.names)


@frozen
class Identifier:
    """A function name."""

    pos: int
    name: str

    def __str__(self) -> str:
        return self.name


@frozen
class Chain:
    """``(pipeline).A.B`` (or fields of a function's result)."""

    pos: int
    node: Arg
    names: tuple[str, ...]

    def __str__(self) -> str:
        inner = f"({self.node})" if isinstance(self.node, Pipe) else str(self.node)
        return inner + "".join("." + n for n in self.names)


@frozen
class Command:
    pos: int
    args: tuple[Arg, ...]

    def __str__(self) -> str:
        return " ".join(f"({a})" if isinstance(a, Pipe) else str(a) for a in self.args)


@frozen
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


@frozen
class Action:
    pos: int
    pipe: Pipe


@frozen
class Break:
    pos: int


@frozen
class Continue:
    pos: int


@frozen
class If:
    """``if`` and ``with`` (``with`` sets dot); an ``else if`` is an If alone in ``orelse``."""

    pos: int
    pipe: Pipe
    body: tuple[Node, ...]
    orelse: tuple[Node, ...]
    is_with: bool = False


@frozen
class Range:
    pos: int
    pipe: Pipe
    body: tuple[Node, ...]
    orelse: tuple[Node, ...]


@frozen
class TemplateCall:
    """``{{template "name" pipeline}}`` (and the use in place of a ``{{block}}``)."""

    pos: int
    name: str
    pipe: Pipe | None

    def __str__(self) -> str:
        return f"{{{{template {go_quote(self.name)}{' ' + str(self.pipe) if self.pipe else ''}}}}}"


Node = Text | Action | Break | Continue | If | Range | TemplateCall

#: a parsed template: its nodes, and the templates it defines by name
Parsed = tuple[tuple[Node, ...], dict[str, tuple[Node, ...]]]
