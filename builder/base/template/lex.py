"""The lexer of Go's text/template, as ``text/template/parse/lex.go`` scans (Go 1.19): text,
``{{ }}`` actions with ``{{-``/``-}}`` trim markers, comments, and the items inside an action.

It feeds ``grammar/gotemplate.lark`` (through ``parse``): spaces are dropped, since what they
decide is settled here, as Go's parser settles it while reading them: a field right after a term
is a chain (``.A.B``, ``$x.A``, ``(…).A``), and two operands with nothing between them are Go's
``unexpected … in operand``. ``{{`` is joined with a keyword after it (``{{end``, ``{{else``…)
so that one token of look-ahead tells a block's end from the next action. Each token remembers
the pipeline it is in and what came before it, for Go's wording of a syntax error.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field

from lark import Token

from builder.base.errors import TemplateParseError
from builder.base.template.constants import parse_number
from builder.base.template.values import go_quote

KEYWORDS = {"block", "break", "continue", "define", "else", "end", "if", "range", "nil", "template", "with"}
#: keywords that may follow ``{{`` (joined with it into one token)
OPENERS = {"if", "range", "with", "else", "end", "break", "continue", "define", "template", "block"}
#: tokens that end an operand: a field right after one of them is a chain
TERM_END = {"FIELD", "VARIABLE", "IDENT", "DOT", "NIL", "BOOL", "NUMBER", "CHARCONST", "STRING", "RAWSTRING",
            "RPAREN"}
#: tokens that start an operand
TERM_START = {"FIELD", "VARIABLE", "IDENT", "DOT", "NIL", "BOOL", "NUMBER", "CHARCONST", "STRING", "RAWSTRING",
              "LPAREN"}
_SPACE = " \t\r\n"


class Tok(Token):
    """A Lark token with what Go's error messages need: the byte offset in the template
    (``pos``), the pipeline context it was read in and the kind of the token before it."""

    pos: int
    node_pos: int
    ctx: str
    prev: str
    depth: int
    block: str


def _alnum(c: str) -> bool:
    return c == "_" or c.isalpha() or c.isdigit()


@dataclass
class Source:
    """One template's text; ``tokens()`` is what the Lark lexer hands the parser."""

    text: str
    name: str = ""
    #: the functions defined (Go's parser checks a name when it reads it); None: not checked here
    funcs: frozenset[str] | None = None
    #: the byte offset of each character (Go's positions are bytes)
    _offsets: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        offsets, n = [], 0
        for ch in self.text:
            offsets.append(n)
            n += len(ch.encode("utf-8", "surrogatepass"))
        offsets.append(n)
        self._offsets = offsets

    def byte_pos(self, index: int) -> int:
        return self._offsets[index]

    def line_at(self, index: int) -> int:
        return self.text.count("\n", 0, index) + 1

    def error(self, index: int, message: str) -> TemplateParseError:
        line = self.line_at(index)
        start = self._action_line
        if start and start != line:
            # Go names where an action began when its error is on a later line
            message += f" started at {self.name}:{start}" if message.endswith(" action") else \
                f" in action started at {self.name}:{start}"
        return TemplateParseError(f"template: {self.name}:{line}: {message}")

    _action_line = 0

    # -- the scan --------------------------------------------------------------------------
    def tokens(self) -> Iterator[Token]:
        text, i, n = self.text, 0, len(self.text)
        self.depth = 0  # open if/range/with/define/block blocks, for "unexpected {{end}}"
        self.blocks: list[str] = []  # their keywords, innermost last
        trim_next = False
        while i < n:
            j = text.find("{{", i)
            end = n if j < 0 else j
            chunk = text[i:end]
            if trim_next:
                stripped = chunk.lstrip(_SPACE)
                i += len(chunk) - len(stripped)
                chunk = stripped
                trim_next = False
            if j >= 0 and text[j + 2:j + 3] == "-" and text[j + 3:j + 4] in tuple(_SPACE):
                chunk = chunk.rstrip(_SPACE)
            if chunk:
                yield self._tok("TEXT", chunk, i, "", "")
            if j < 0:
                return
            i, trim_next = yield from self._action(j)

    def _tok(self, kind: str, value: str, index: int, ctx: str, prev: str) -> Tok:
        line = self.line_at(index)
        t = Tok(kind, value, index, line, 0, line, 0, index + len(value))
        t.pos, t.ctx, t.prev, t.depth = self.byte_pos(index), ctx, prev, self.depth
        t.block = self.blocks[-1] if self.blocks else ""
        t.node_pos = t.pos
        return t

    def _at_right(self, i: int) -> tuple[bool, bool]:
        """(at ``}}``, with a ``-`` trim marker before it)"""
        text = self.text
        if text[i:i + 1] in tuple(_SPACE) and text[i + 1:i + 2] == "-" and text.startswith("}}", i + 2):
            return True, True
        return text.startswith("}}", i), False

    def _action(self, start: int) -> Generator[Token, None, tuple[int, bool]]:
        """From ``{{`` at *start* to the end of its action; returns (next index, trim after)."""
        text, n = self.text, len(self.text)
        i = start + 2
        self._action_line = 0
        if text[i:i + 1] == "-" and text[i + 1:i + 2] in tuple(_SPACE) and i + 1 < n:
            i += 2
        if text.startswith("/*", i):
            close = text.find("*/", i + 2)
            if close < 0:
                raise self.error(start, "unclosed comment")
            k = close + 2
            at, trim = self._at_right(k)
            if not at:
                raise self.error(start, "comment ends before closing delimiter")
            return k + (4 if trim else 2), trim
        # the keyword right after "{{" (spaces allowed) is joined with it
        k = i
        while k < n and text[k] in _SPACE and not self._at_right(k)[0]:
            k += 1
        m = re.match(r"[A-Za-z_]\w*", text[k:])
        ctx, prev = "command", "LD"
        first = "LD"
        if m and m.group(0) in OPENERS and self._terminator(k + m.end()):
            word = m.group(0)
            first = "LD_" + word.upper()
            ctx = {"template": "template clause", "define": "define clause", "block": "block clause"}.get(word, word)
            if word in ("if", "range", "with", "define", "block"):
                yield self._tok(first, text[start:k + m.end()], start, ctx, "")
                self.depth += 1
                self.blocks.append(word)
            else:
                if word == "end":
                    self.depth -= 1
                yield self._tok(first, text[start:k + m.end()], start, ctx, "")
                if word == "end" and self.blocks:
                    self.blocks.pop()
            i = k + m.end()
            prev = first
        else:
            yield self._tok("LD", text[start:i], start, ctx, "")
        self._action_line = self.line_at(start)
        stack: list[str] = []  # contexts of open parentheses
        spaced = True
        while True:
            at, trim = self._at_right(i)
            if at:
                if stack:
                    raise self.error(i, "unclosed left paren")
                yield self._tok("RD", "}}", i + (2 if trim else 0), ctx, prev)
                self._action_line = 0
                return i + (4 if trim else 2), trim
            if i >= n:
                raise self.error(i, "unclosed action")
            c = text[i]
            if c in _SPACE:
                i += 1
                spaced = True
                continue
            self._chain_at = None
            kind, value, j = self._item(i, prev)
            if kind == "FIELD" and not spaced and prev in TERM_END:
                kind = "CHAIN"
                self._chain_at = i
            if kind == "CHAIN" and prev in ("DOT", "NIL", "BOOL", "NUMBER", "CHARCONST", "STRING", "RAWSTRING"):
                raise self.error(i, f"unexpected . after term {_go_quote(self._last_value)}")
            if not spaced and prev in TERM_END and kind in TERM_START:
                raise self.error(i, f"unexpected {item_text(kind, value)} in operand")
            if kind == "NUMBER":
                # Go's parser reads a constant before the token after it
                try:
                    parse_number(0, value)
                except ValueError as e:
                    raise self.error(i, str(e)) from None
            if kind == "IDENT" and self.funcs is not None and value not in self.funcs \
                    and prev not in ("LD_ELSE", "LD_END", "LD_BREAK", "LD_CONTINUE", "LD_TEMPLATE", "LD_DEFINE",
                                     "LD_BLOCK"):
                raise self.error(i, f"function {_go_quote(value)} not defined")
            if kind == "RPAREN" and not stack:
                # Go's lexer emits the ")" before its error: the parser may refuse it first
                yield self._tok(kind, value, i, ctx, prev)
                raise self.error(i, "unexpected right paren U+0029 ')'")
            cur_ctx = stack[-1] if stack else ctx
            tok = self._tok(kind, value, i, cur_ctx, prev)
            tok.node_pos = self.byte_pos(self._chain_at if self._chain_at is not None else i)
            if kind == "LPAREN":
                stack.append("parenthesized pipeline")
            elif kind == "RPAREN":
                stack.pop()
            yield tok
            self._last_value = value
            # the name after template/define/block is no operand
            prev = "NAME" if prev in ("LD_TEMPLATE", "LD_DEFINE", "LD_BLOCK") and kind in ("STRING", "RAWSTRING") \
                else kind
            spaced = False
            i = j

    _last_value = ""
    _chain_at: int | None = None

    def _scan_number(self, i: int) -> int:
        """Go's ``scanNumber`` from *i*: where the number ends (a sign alone is one, which
        ``newNumber`` refuses); a letter or digit right after it is ``bad number syntax``."""
        text, n = self.text, len(self.text)
        j = i + (text[i:i + 1] in ("+", "-"))
        digits = "0123456789_"
        if text[j:j + 1] == "0":
            j += 1
            prefix = text[j:j + 1]
            if prefix and prefix in "xX":
                digits, j = "0123456789abcdefABCDEF_", j + 1
            elif prefix and prefix in "oO":
                digits, j = "01234567_", j + 1
            elif prefix and prefix in "bB":
                digits, j = "01_", j + 1

        def run(j: int, chars: str) -> int:
            while j < n and text[j] in chars:
                j += 1
            return j

        j = run(j, digits)
        if text[j:j + 1] == ".":
            j = run(j + 1, digits)
        exponent = "eE" if len(digits) == 11 else "pP" if len(digits) == 23 else ""
        if exponent and text[j:j + 1] and text[j] in exponent:
            j += 1 + (text[j + 1:j + 2] in ("+", "-"))
            j = run(j, "0123456789_")
        j += text[j:j + 1] == "i"
        if j < n and _alnum(text[j]):
            raise self.error(i, f"bad number syntax: {_go_quote(text[i:j + 1])}")
        return j

    def _terminator(self, i: int) -> bool:
        c = self.text[i:i + 1]
        return c == "" or c in _SPACE or c in ".,|:()" or self.text.startswith("}}", i)

    def _item(self, i: int, prev: str) -> tuple[str, str, int]:
        """The item at *i* inside an action: (kind, text, end index)."""
        text, n = self.text, len(self.text)
        c = text[i]
        if c == "=":
            return "ASSIGN", "=", i + 1
        if c == ":":
            if text[i + 1:i + 2] != "=":
                raise self.error(i, "expected :=")
            return "DECLARE", ":=", i + 2
        if c == "|":
            return "PIPE", "|", i + 1
        if c == "(":
            return "LPAREN", "(", i + 1
        if c == ")":
            return "RPAREN", ")", i + 1
        if c == ",":
            return "COMMA", ",", i + 1
        if c == '"':
            j = i + 1
            while True:
                if j >= n or text[j] == "\n":
                    raise self.error(i, "unterminated quoted string")
                if text[j] == "\\":
                    if j + 1 >= n or text[j + 1] == "\n":
                        raise self.error(i, "unterminated quoted string")
                    j += 2
                    continue
                if text[j] == '"':
                    return "STRING", text[i:j + 1], j + 1
                j += 1
        if c == "`":
            j = text.find("`", i + 1)
            if j < 0:
                raise self.error(i, "unterminated raw quoted string")
            return "RAWSTRING", text[i:j + 1], j + 1
        if c == "'":
            j = i + 1
            while True:
                if j >= n or text[j] == "\n":
                    raise self.error(i, "unterminated character constant")
                if text[j] == "\\":
                    j += 2
                    continue
                if text[j] == "'":
                    return "CHARCONST", text[i:j + 1], j + 1
                j += 1
        if c in ".$" and not (c == "." and text[i + 1:i + 2].isdigit()):
            j = i + 1
            if c == "." and self._terminator(j):
                return "DOT", ".", j
            while j < n and _alnum(text[j]):
                j += 1
            if not self._terminator(j):
                raise self.error(i, f"bad character {_unicode_name(text[j])}")
            # ".A.B", "$x.A": Go chains the fields that follow without a space into one node,
            # placed where the second one starts
            while text[j:j + 1] == "." and _alnum(text[j + 1:j + 2]) and not text[j + 1].isdigit():
                if self._chain_at is None:
                    self._chain_at = j
                j += 1
                while j < n and _alnum(text[j]):
                    j += 1
                if not self._terminator(j):
                    raise self.error(i, f"bad character {_unicode_name(text[j])}")
            return ("VARIABLE" if c == "$" else "FIELD"), text[i:j], j
        if c in "+-." or c.isdigit():
            j = self._scan_number(i)
            if text[j:j + 1] in ("+", "-"):  # a complex constant, 1+2i: Go's only use of this
                j = self._scan_number(j)
                if text[j - 1] != "i":
                    raise self.error(i, f"bad number syntax: {_go_quote(text[i:j])}")
            return "NUMBER", text[i:j], j
        if _alnum(c):
            j = i
            while j < n and _alnum(text[j]):
                j += 1
            if not self._terminator(j):
                raise self.error(i, f"bad character {_unicode_name(text[j])}")
            word = text[i:j]
            if word in KEYWORDS:
                return word.upper(), word, j
            if word in ("true", "false"):
                return "BOOL", word, j
            return "IDENT", word, j
        if c.isprintable() and ord(c) < 128:
            return "CHAR", c, i + 1
        raise self.error(i, f"unrecognized character in action: {_unicode_name(c)}")


def _unicode_name(c: str) -> str:
    """Go's ``%#U``: ``U+0022 '"'``."""
    return f"U+{ord(c):04X} '{c}'" if c.isprintable() else f"U+{ord(c):04X}"


def _go_quote(s: str) -> str:
    """Go's ``%q`` of a string."""
    return go_quote(s)


def item_text(kind: str, value: str) -> str:
    """How Go's ``item.String()`` shows a token in an error: keywords (and ``.``/``nil``) in
    angle brackets, the rest quoted, long ones cut at 10 characters."""
    if kind == "$END":
        return "EOF"
    if kind.startswith("LD_"):
        return _go_quote("{{")
    if kind in ("DOT", "NIL") or kind.lower() in KEYWORDS:
        return f"<{value}>"
    if len(value) > 10:
        return _go_quote(value[:10]) + "..."
    return _go_quote(value)
