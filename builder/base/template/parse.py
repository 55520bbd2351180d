"""Lark glue of the Go template engine: the parser of ``grammar/gotemplate.lark`` (built once,
cached by ``grammar.load``) over ``lex.Source`` tokens, an inline transformer making ``nodes``
with Go's parse-time checks, and Lark's errors turned into Go's text (``template: :1: …``).

Imported on the first template parsed only: commands without ``--format`` never load Lark.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from lark import Transformer
from lark.exceptions import UnexpectedInput, UnexpectedToken, VisitError
from lark.lexer import Lexer

from builder.base.errors import TemplateParseError
from builder.base.template import nodes as N
from builder.base.template.constants import parse_number, unquote
from builder.base.template.lex import Source, Tok, item_text
from builder.base.template.values import go_quote
from grammar import load


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
        self.defs: dict[str, tuple[N.Node, ...]] = {}
        self.outer: list[tuple[list[str], int]] = []  # scopes a definition's body set aside

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

    def start(self, c: list[Any]) -> tuple[tuple[N.Node, ...], dict[str, tuple[N.Node, ...]]]:
        return tuple(c[0]), dict(_state().defs)

    def list_empty(self, c: list[Any]) -> list[N.Node]:
        return []

    def list_add(self, c: list[Any]) -> list[N.Node]:
        items: list[N.Node] = c[0]
        if c[1] is not None:  # a definition leaves nothing in place
            items.append(c[1])
        return items

    # -- named templates: a body has its own variables ("$" only) and no enclosing range
    def _enter(self) -> None:
        st = _state()
        st.outer.append((st.vars, st.range_depth))
        st.vars, st.range_depth = ["$"], 0

    def _leave(self) -> None:
        st = _state()
        st.vars, st.range_depth = st.outer.pop()

    def define_open(self, c: list[Any]) -> str:
        if c[0].depth > 0:  # Go reads {{define}} at the top level only
            raise _state().error(c[0], "unexpected <define> in command")
        self._enter()
        return self._name(c[1])

    def define_(self, c: list[Any]) -> None:
        self._leave()
        _state().defs[c[0]] = tuple(c[1])

    def block_rd(self, c: list[Any]) -> Tok:
        self._enter()
        tok: Tok = c[0]
        return tok

    def block_(self, c: list[Any]) -> N.TemplateCall:
        self._leave()
        name = self._name(c[1])
        _state().defs[name] = tuple(c[4])
        return N.TemplateCall(c[1].pos, name, c[2])

    def _name(self, tok: Tok) -> str:
        try:
            return unquote(str(tok))
        except ValueError:
            raise _state().error(tok, "invalid syntax") from None

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
    return go_quote(s)


_BUILDER = _Builder()
_LOCK = threading.Lock()


def parse(text: str, *, funcs: frozenset[str], name: str = "") -> N.Parsed:
    """The nodes of template *text* and of the templates it defines (``{{define}}``,
    ``{{block}}``); a ``TemplateParseError`` with Go's text when it is bad."""
    parser = load("gotemplate", lexer=_TokenFeed, transformer=_BUILDER)
    source = Source(text, name, funcs)
    with _LOCK:
        _LOCAL.state = _State(source, funcs)
        try:
            result: N.Parsed = parser.parse(source)  # type: ignore[assignment]
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
        if isinstance(following, TemplateParseError):
            return following
        if following is not None and following.type not in ("RD", "IF"):
            line = following.line
            return err(f"unexpected {item_text(following.type, str(following))} in {word}")
        if kind == "LD_ELSE" and tok.block in ("define", "block"):
            return err(f"unexpected {{{{else}}}} in {tok.block} clause")
        if kind == "LD_ELSE" and tok.depth > 0:
            return err("expected end; found {{else}}")
        return err(f"unexpected {{{{{word}}}}}")
    if kind == "LD_DEFINE":
        return err("unexpected <define> in command")
    prev = tok.prev
    what = item_text(kind, str(tok))
    if prev in ("LD_ELSE", "LD_END"):
        return err(f"unexpected {what} in {prev[3:].lower()}")
    if prev in ("LD_BREAK", "LD_CONTINUE"):
        return err(f"unexpected {what} in {{{{{prev[3:].lower()}}}}}")
    if prev in ("LD_TEMPLATE", "LD_DEFINE", "LD_BLOCK"):
        return err(f"unexpected {what} in {tok.ctx}")
    if prev == "NAME" and kind == "RD":
        return err(f"missing value for {tok.ctx}")
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


def _token_after(source: Source, tok: Any) -> Tok | TemplateParseError | None:
    """The token that follows *tok*, read again from the text: the lexer's error when reading it
    fails (Go reports that one), None past the end."""
    again = Source(source.text, source.name, source.funcs)
    found = False
    try:
        for t in again.tokens():
            if found:
                return t  # type: ignore[return-value]
            found = t.start_pos == tok.start_pos and t.type == tok.type
    except TemplateParseError as e:
        return e if found else None
    return None
