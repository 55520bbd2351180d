"""Lark glue of the Go template engine: the parser of ``grammar/gotemplate.lark`` (built once,
cached by ``grammar.load``) over ``lex.Source`` tokens, an inline transformer making ``nodes``
with Go's parse-time checks, and Lark's errors turned into Go's text (``template: :1: …``).

Imported on the first template parsed only: commands without ``--format`` never load Lark.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

from lark import Transformer
from lark.exceptions import UnexpectedInput, UnexpectedToken, VisitError
from lark.lexer import Lexer

from builder.errors import TemplateParseError
from builder.template import nodes as N
from builder.template.lex import Source, Tok, item_text


class _TokenFeed(Lexer):
    """Lark's custom-lexer interface: *data* is a ``Source``, whose ``tokens()`` it yields."""

    def __init__(self, lexer_conf: Any) -> None:
        pass

    def lex(self, data: Any) -> Iterator[Any]:  # type: ignore[override]
        tokens: Iterator[Any] = data.tokens()
        return tokens


class _State:
    """What Go's parser tracks while it reads one template."""

    def __init__(self, source: Source, funcs: frozenset[str]) -> None:
        self.source = source
        self.funcs = funcs
        self.vars: list[str] = ["$"]
        self.marks: list[int] = []
        self.range_depth = 0

    def error(self, tok: Tok, message: str) -> TemplateParseError:
        return TemplateParseError(f"template: {self.source.name}:{tok.line}: {message}")


_LOCAL = threading.local()


def _state() -> _State:
    state: _State = _LOCAL.state
    return state


def _pipe_arg(node: N.Arg) -> bool:
    return isinstance(node, (N.Bool, N.Dot, N.Nil, N.Number, N.String))


class _Builder(Transformer[Any, Any]):
    """Runs inline in the LALR parser: each reduction makes its node, in reading order, so the
    checks Go makes while parsing fail on the same (first) fault."""

    def start(self, c: list[Any]) -> tuple[N.Node, ...]:
        return tuple(c[0])

    def list_empty(self, c: list[Any]) -> list[N.Node]:
        return []

    def list_add(self, c: list[Any]) -> list[N.Node]:
        items: list[N.Node] = c[0]
        items.append(c[1])
        return items

    def text(self, c: list[Any]) -> N.Text:
        return N.Text(str(c[0]))

    def action(self, c: list[Any]) -> N.Action:
        return N.Action(c[0].pos, c[1])

    def template_(self, c: list[Any]) -> N.TemplateCall:
        name: Tok = c[1]
        try:
            value = unquote(str(name))
        except ValueError:
            raise _state().error(name, "invalid syntax") from None
        pipe = c[2] if len(c) > 3 else None
        return N.TemplateCall(name.pos, value, pipe)

    def break_(self, c: list[Any]) -> N.Break:
        if _state().range_depth == 0:
            raise _state().error(c[0], "{{break}} outside {{range}}")
        return N.Break(c[0].pos)

    def continue_(self, c: list[Any]) -> N.Continue:
        if _state().range_depth == 0:
            raise _state().error(c[0], "{{continue}} outside {{range}}")
        return N.Continue(c[0].pos)

    # -- blocks: a mark on the variable stack at the keyword, popped at the block's end
    def _open(self, c: list[Any]) -> Tok:
        st = _state()
        st.marks.append(len(st.vars))
        tok: Tok = c[0]
        return tok

    if_open = with_open = _open

    def elif_open(self, c: list[Any]) -> Tok:
        return self._open(c[1:])

    def range_open(self, c: list[Any]) -> Tok:
        _state().range_depth += 1
        return self._open(c)

    def _close(self) -> None:
        st = _state()
        del st.vars[st.marks.pop():]

    def if_(self, c: list[Any]) -> N.If:
        self._close()
        return N.If(c[1].pos, c[1], tuple(c[3]), c[4])

    def tail_end(self, c: list[Any]) -> tuple[N.Node, ...]:
        return ()

    def tail_else(self, c: list[Any]) -> tuple[N.Node, ...]:
        return tuple(c[2])

    def tail_elif(self, c: list[Any]) -> tuple[N.Node, ...]:
        self._close()
        return (N.If(c[1].pos, c[1], tuple(c[3]), c[4]),)

    def range_body(self, c: list[Any]) -> tuple[N.Pipe, tuple[N.Node, ...]]:
        _state().range_depth -= 1
        pipe: N.Pipe = c[1]
        if len(pipe.decls) > 2:
            raise _state().error(c[2], "too many declarations in range")
        return pipe, tuple(c[3])

    def range_(self, c: list[Any]) -> N.Range:
        self._close()
        pipe, body = c[0]
        orelse = tuple(c[3]) if len(c) > 3 else ()
        return N.Range(pipe.pos, pipe, body, orelse)

    def with_(self, c: list[Any]) -> N.If:
        self._close()
        orelse = tuple(c[6]) if len(c) > 6 else ()
        return N.If(c[1].pos, c[1], tuple(c[3]), orelse, is_with=True)

    # -- pipelines
    def decl(self, c: list[Any]) -> tuple[list[str], bool, Tok]:
        names = [str(t) for t in c if t.type == "VARIABLE"]
        st = _state()
        if len(names) > 1 and c[0].ctx != "range":
            raise st.error(c[1], f"too many declarations in {c[0].ctx}")
        if c[-1].type == "DECLARE":
            st.vars.extend(names)
        return names, c[-1].type == "ASSIGN", c[0]

    def pipeline(self, c: list[Any]) -> N.Pipe:
        decls: list[str] = []
        is_assign = False
        c = [x for x in c if not (isinstance(x, Tok) and x.type == "PIPE")]
        if len(c) == 2:
            decls, is_assign, first = c[0]
            cmds: list[N.Command] = c[1]
            pos = first.pos
        else:
            cmds = c[0]
            pos = cmds[0].pos
        for i, cmd in enumerate(cmds[1:]):
            if _pipe_arg(cmd.args[0]):
                raise TemplateParseError(f"template: {_state().source.name}:1: "
                                         f"non executable command in pipeline stage {i + 2}")
        return N.Pipe(pos, tuple(decls), is_assign, tuple(cmds))

    def commands(self, c: list[Any]) -> list[N.Command]:
        if len(c) == 1:
            return [c[0]]
        cmds: list[N.Command] = c[0]
        cmds.append(c[2])
        return cmds

    def command(self, c: list[Any]) -> N.Command:
        if len(c) == 1:
            return N.Command(_arg_pos(c[0]), (c[0],))
        cmd: N.Command = c[0]
        return N.Command(cmd.pos, (*cmd.args, c[1]))

    def operand(self, c: list[Any]) -> N.Arg:
        arg: N.Arg = c[0]
        return arg

    def chain(self, c: list[Any]) -> N.Arg:
        node, tok = c
        names = tuple(str(tok)[1:].split("."))
        if isinstance(node, N.Field):
            return N.Field(tok.node_pos, (*node.names, *names))
        if isinstance(node, N.Variable):
            return N.Variable(tok.node_pos, (*node.names, *names))
        return N.Chain(tok.node_pos, node, names)

    # -- terms
    def dot(self, c: list[Any]) -> N.Dot:
        return N.Dot(c[0].pos)

    def nil(self, c: list[Any]) -> N.Nil:
        return N.Nil(c[0].pos)

    def bool(self, c: list[Any]) -> N.Bool:
        return N.Bool(c[0].pos, str(c[0]) == "true")

    def number(self, c: list[Any]) -> N.Number:
        tok: Tok = c[0]
        try:
            return parse_number(tok.pos, str(tok))
        except ValueError as e:
            raise _state().error(tok, str(e)) from None

    def string(self, c: list[Any]) -> N.String:
        tok: Tok = c[0]
        try:
            return N.String(tok.pos, str(tok), unquote(str(tok)))
        except ValueError:
            raise _state().error(tok, "invalid syntax") from None

    def field(self, c: list[Any]) -> N.Field:
        tok: Tok = c[0]
        return N.Field(tok.node_pos, tuple(str(tok)[1:].split(".")))

    def variable(self, c: list[Any]) -> N.Variable:
        tok: Tok = c[0]
        names = tuple(str(tok).split("."))
        if names[0] not in _state().vars:
            raise _state().error(tok, f"undefined variable {_quote(names[0])}")
        return N.Variable(tok.node_pos, names)

    def identifier(self, c: list[Any]) -> N.Identifier:
        tok: Tok = c[0]
        if str(tok) not in _state().funcs:
            raise _state().error(tok, f"function {_quote(str(tok))} not defined")
        return N.Identifier(tok.pos, str(tok))

    def paren(self, c: list[Any]) -> N.Pipe:
        pipe: N.Pipe = c[1]
        return pipe


def _arg_pos(arg: N.Arg) -> int:
    return arg.pos


def _quote(s: str) -> str:
    from builder.template.values import go_quote

    return go_quote(s)


_BUILDER = _Builder()
_LOCK = threading.Lock()


def parse(text: str, *, funcs: frozenset[str], name: str = "") -> tuple[N.Node, ...]:
    """The nodes of template *text*; a ``TemplateParseError`` with Go's text when it is bad."""
    from grammar import load

    parser = load("gotemplate", lexer=_TokenFeed, transformer=_BUILDER)
    source = Source(text, name)
    with _LOCK:
        _LOCAL.state = _State(source, funcs)
        try:
            result: tuple[N.Node, ...] = parser.parse(source)  # type: ignore[assignment]
        except VisitError as e:
            if isinstance(e.orig_exc, TemplateParseError):
                raise e.orig_exc from None
            raise
        except UnexpectedToken as e:
            raise _syntax_error(source, e.token) from None
        except UnexpectedInput as e:  # pragma: no cover - the token feed never leaves input unread
            raise source.error(len(text), str(e).splitlines()[0]) from None
        finally:
            _LOCAL.state = None
    return result


def _syntax_error(source: Source, tok: Any) -> TemplateParseError:
    """Go's message for a token the grammar does not take where it stands."""
    kind = tok.type
    line = getattr(tok, "line", None) or source.line_at(len(source.text))

    def err(message: str) -> TemplateParseError:
        return TemplateParseError(f"template: {source.name}:{line}: {message}")

    if kind == "$END":
        return err("unexpected EOF")
    if kind in ("LD_END", "LD_ELSE"):
        # Go reads the whole {{end}}/{{else}} before it finds it out of place
        following = _token_after(source, tok)
        word = kind[3:].lower()
        if following is not None and following.type not in ("RD", "IF"):
            return err(f"unexpected {item_text(following.type, str(following))} in {word}")
        if kind == "LD_ELSE" and tok.depth > 0:
            return err("expected end; found {{else}}")
        return err(f"unexpected {{{{{word}}}}}")
    if kind in ("LD_DEFINE", "LD_BLOCK"):
        return err(f"{{{{{kind[3:].lower()}}}}} is not supported in --format templates")
    prev = tok.prev
    what = item_text(kind, str(tok))
    if prev in ("LD_ELSE", "LD_END"):
        return err(f"unexpected {what} in {prev[3:].lower()}")
    if prev in ("LD_BREAK", "LD_CONTINUE"):
        return err(f"unexpected {what} in {{{{{prev[3:].lower()}}}}}")
    if prev == "LD_TEMPLATE":
        return err(f"unexpected {what} in template clause")
    if kind == "COMMA" and prev == "VARIABLE" or prev == "COMMA":
        if tok.ctx != "range":
            return err(f"too many declarations in {tok.ctx}")
        if prev == "COMMA":
            return err("range can only initialize variables")
        return err("too many declarations in range")
    if kind in ("RD", "RPAREN") and prev in _OPERAND_END:
        return err(f"unexpected {what} in {tok.ctx}")
    if prev in _OPERAND_END:
        return err(f"unexpected {what} in operand")
    if kind == "RD" or kind == "RPAREN" and tok.ctx == "parenthesized pipeline":
        return err(f"missing value for {tok.ctx}")
    return err(f"unexpected {what} in {tok.ctx}")


_OPERAND_END = frozenset({"FIELD", "VARIABLE", "IDENT", "DOT", "NIL", "BOOL", "NUMBER", "CHARCONST", "STRING",
                          "RAWSTRING", "RPAREN", "CHAIN"})


def _token_after(source: Source, tok: Any) -> Tok | None:
    """The token that follows *tok*, read again from the text (None past its end or a lexer error)."""
    again = Source(source.text, source.name)
    found = False
    try:
        for t in again.tokens():
            if found:
                return t  # type: ignore[return-value]
            found = t.start_pos == tok.start_pos and t.type == tok.type
    except TemplateParseError:
        return None
    return None


# -- constants ---------------------------------------------------------------------------------
_OCTAL = re.compile(r"[+-]?0[0-7_]+")


def parse_number(pos: int, text: str) -> N.Number:
    """A number or character constant as Go's ``newNumber`` reads it."""
    if text.startswith("'"):
        value = unquote(text)
        if len(value) != 1:
            raise ValueError(f"malformed character constant: {text}")
        return N.Number(pos, text, ord(value), float(ord(value)))
    if text.endswith("i"):
        raise ValueError(f"illegal number syntax: {_quote(text)}")
    int_value: int | None = None
    float_value: float | None = None
    try:
        int_value = int(text, 8) if _OCTAL.fullmatch(text) else int(text, 0)
    except ValueError:
        pass
    try:
        body = text.lstrip("+-")
        if body[:2].lower() == "0x":
            float_value = float.fromhex(text) if "p" in text.lower() or "." in text else float(int(text, 16))
        else:
            float_value = float(text)
    except ValueError:
        pass
    if int_value is None and float_value is not None and float_value.is_integer():
        int_value = int(float_value)
    if int_value is None and float_value is None:
        raise ValueError(f"illegal number syntax: {_quote(text)}")
    if float_value is None and int_value is not None:
        float_value = float(int_value)
    return N.Number(pos, text, int_value, float_value)


_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def unquote(text: str) -> str:
    """Go's ``strconv.Unquote`` of a ``"…"``, ```…``` or ``'…'`` literal; ValueError when bad."""
    if text.startswith("`"):
        return text[1:-1].replace("\r", "")
    quote = text[0]
    body = text[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            if ch == quote:
                raise ValueError(text)
            out.append(ch)
            i += 1
            continue
        if i + 1 >= len(body):
            raise ValueError(text)
        e = body[i + 1]
        if e in _ESCAPES:
            out.append(_ESCAPES[e])
            i += 2
        elif e == quote:
            out.append(e)
            i += 2
        elif e in "xuU":
            size = {"x": 2, "u": 4, "U": 8}[e]
            digits = body[i + 2:i + 2 + size]
            if len(digits) != size or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise ValueError(text)
            code = int(digits, 16)
            if e == "x":
                out.append(chr(code))  # a byte: kept as the code point of the same value
            else:
                if code > 0x10FFFF or 0xD800 <= code < 0xE000:
                    raise ValueError(text)
                out.append(chr(code))
            i += 2 + size
        elif e in "01234567":
            digits = body[i + 1:i + 4]
            if len(digits) != 3 or not all(d in "01234567" for d in digits) or int(digits, 8) > 255:
                raise ValueError(text)
            out.append(chr(int(digits, 8)))
            i += 4
        else:
            raise ValueError(text)
    return "".join(out)
