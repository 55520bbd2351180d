"""The lenient level: Docker's line rules feeding ``grammar/dockerfile.lark``, giving a ``SyntaxTree``.

Directives, escape character, continuations, heredoc bodies and raw arguments, as BuildKit reads them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator, Iterator

from builder.base.errors import DockerfileSyntaxError
from builder.imagebuild.dockerfile.tree import Directives, Heredoc, Node, Pair, SyntaxTree
from builder.imagebuild.expand import ExpansionError, heredoc_names
from grammar import load

TYPE_CHECKING = False  # not ``typing``'s: a build loads no ``typing`` (~6 ms)
if TYPE_CHECKING:
    from typing import Any

# Go's unicode.IsSpace: Python's str.isspace also counts \x1c-\x1f, Go does not.
GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
_GO_SPACE_SET = frozenset(GO_SPACE)
# Docker splits the keyword and whitespace-delimited arguments on ASCII blanks only. (The
# patterns are texts, compiled by ``re`` on their first use: a cached build parses nothing.)
_WHITESPACE = r"[\t\v\f\r ]+"
_GO_WORD = "[^" + GO_SPACE + "]+"
_QUOTED_WORD = "(?:[^" + GO_SPACE + "\"']+|\"[^\"]*(?:\"|\\Z)|'[^']*(?:'|\\Z))+"
_DIRECTIVE = "#[" + GO_SPACE + r"]*([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*\Z"
_KNOWN_DIRECTIVES = ("syntax", "escape", "check")

# keyword -> how Docker reads its arguments (BuildKit's dispatch table)
_ARG_FORMS: dict[str, str] = {
    "add": "json_or_words",
    "copy": "json_or_words",
    "volume": "json_or_words",
    "arg": "name_or_pair",
    "cmd": "json_or_text",
    "entrypoint": "json_or_text",
    "run": "json_or_text",
    "shell": "json_or_text",
    "env": "pairs",
    "label": "pairs",
    "expose": "words",
    "from": "words",
    "healthcheck": "health",
    "maintainer": "text",
    "stopsignal": "text",
    "user": "text",
    "workdir": "text",
    "onbuild": "sub",
}
_HEREDOC_COMMANDS = frozenset({"add", "copy", "run"})


def parse(text: str, *, filename: str = "Dockerfile") -> SyntaxTree:
    """Read *text* as Docker does; raise ``DockerfileSyntaxError`` only for what cannot be read."""
    # Lark is imported only here: a rebuild that finds its typed Dockerfile in the build's
    # parse cache (``builder.imagebuild.pipeline``) never pays for it.
    from lark.exceptions import LarkError

    from builder.imagebuild.dockerfile.larkglue import TREE_BUILDER, LineLexer
    source = _Source(text, filename)
    parser = load("dockerfile", lexer=LineLexer, transformer=TREE_BUILDER)
    try:
        result: Any = parser.parse(source)  # type: ignore[arg-type,unused-ignore]
    except LarkError as e:
        # the line pass only emits sequences the grammar accepts (the property tests hold
        # it to that); should one slip through, it is still reported as a syntax error
        line = getattr(getattr(e, "token", None), "line", 1)
        raise source.error(f"cannot parse this instruction ({type(e).__name__})", line) from e
    directives: list[tuple[str, str]] = result[0]
    nodes: list[Node] = result[1]
    if not nodes:
        last = max(len(source.lines), 1)
        raise DockerfileSyntaxError(
            "file with no instructions",
            filename=filename,
            line=last,
            column=1,
            source_line=source.lines[last - 1] if source.lines else "",
        )
    values: dict[str, str] = dict(directives)
    return SyntaxTree(
        filename=filename,
        directives=Directives(
            escape=source.escape, syntax=values.get("syntax"), check=values.get("check")
        ),
        nodes=tuple(nodes),
        lines=tuple(source.lines),
        empty_continuation_lines=tuple(source.empty_continuations),
    )


# --- the line pass -------------------------------------------------------------------------


class _Tok:
    """A token for the LALR parser: its ``type``, a display ``value`` and a structured
    ``payload`` (the items of an argument form, a heredoc, a line range). Lark's parser only
    reads ``type`` (and the position fields when it builds its end token); this is much
    cheaper to make than a ``lark.Token``, which matters at one token per argument form."""

    __slots__ = ("type", "value", "payload", "line")

    start_pos = 0
    column = 1
    end_line = 1
    end_column = 1
    end_pos = 0

    def __init__(self, kind: str, value: str, line: int, payload: Any = None) -> None:
        self.type = kind
        self.value = value
        self.line = line
        self.payload = payload

    def __repr__(self) -> str:
        return f"_Tok({self.type!r}, {self.value!r})"


_tok = _Tok


def _go_trim_space(s: str) -> str:
    return s.strip(GO_SPACE)


def _go_quote(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


class _Source:
    """The text of one Dockerfile being read, with the state of the line pass."""

    def __init__(self, text: str, filename: str) -> None:
        if text.startswith("\ufeff"):
            text = text[1:]
        self.filename = filename
        # Docker splits on \n only and strips any trailing \r\n run from each line.
        raw = text.split("\n")
        if raw and raw[-1] == "":
            raw.pop()
        self.raw = [line + "\n" for line in raw]
        if self.raw and not text.endswith("\n"):
            self.raw[-1] = self.raw[-1][:-1]
        self.lines = [line.rstrip("\r\n") for line in self.raw]
        self.escape = "\\"
        self.empty_continuations: list[int] = []
        self._directives_done = False
        self._seen_directives: set[str] = set()

    def error(self, message: str, line: int, column: int = 1) -> DockerfileSyntaxError:
        source_line = self.lines[line - 1] if 1 <= line <= len(self.lines) else ""
        return DockerfileSyntaxError(
            message, filename=self.filename, line=line, column=column, source_line=source_line
        )

    def column_of(self, needle: str, start: int, end: int, default: int = 1) -> tuple[int, int]:
        """(line, column) of the first *needle* in lines start..end, else (start, default)."""
        for n in range(start, min(end, len(self.lines)) + 1):
            i = self.lines[n - 1].find(needle)
            if i >= 0:
                return n, i + 1
        return start, default

    def _directive(self, text: str, line: int) -> tuple[str, str] | None:
        if self._directives_done:
            return None
        m = re.match(_DIRECTIVE, text)
        if m is None or m.group(1).lower() not in _KNOWN_DIRECTIVES:
            self._directives_done = True
            return None
        key = m.group(1).lower()
        if key in self._seen_directives:
            raise self.error(f"only one {key} parser directive can be used", line)
        self._seen_directives.add(key)
        value = m.group(2)
        if key == "escape":
            if value not in ("`", "\\"):
                raise self.error(f"invalid escape token '{value}' does not match ` or \\", line)
            self.escape = value
        return key, value

    def _trim_continuation(self, text: str) -> tuple[str, bool]:
        """Docker's continuation rule: the escape character ends the line (blanks after it
        allowed), alone or after anything but another escape character (``foo\\\\`` is an
        escaped backslash, not a continuation). Returns (the line without its continuation
        character, whether the instruction ends here)."""
        stripped = text.rstrip(" \t")
        escape = self.escape
        if not stripped.endswith(escape):
            return text, True
        body = stripped[:-1]
        if body.endswith(escape):
            return text, True
        return body, False

    def tokens(self) -> Iterator[_Tok]:
        # the hottest loop of the parser: method calls are inlined on purpose
        lines = self.lines
        total = len(lines)
        i = 0
        while i < total:
            raw = lines[i]
            stripped = raw.lstrip(GO_SPACE)
            i += 1
            start = i
            if not self._directives_done:
                directive = self._directive(stripped, start)
                if directive is not None:
                    yield _tok("DIRECTIVE", directive[0], start, directive)
            if not stripped or stripped[0] == "#":
                continue
            escape = self.escape
            body = stripped.rstrip(" \t")
            if body.endswith(escape) and not body[:-1].endswith(escape):
                parts = [body[:-1]]
                eol = False
            else:
                parts = [stripped]
                eol = True
            while not eol and i < total:
                raw = lines[i]
                i += 1
                if not self._directives_done:
                    self._directive(raw, i)
                left = raw.lstrip(GO_SPACE)
                if not left:
                    self.empty_continuations.append(i)
                    continue
                if left[0] == "#":
                    continue
                text, eol = self._trim_continuation(raw)
                parts.append(text)
            line = "".join(parts) if len(parts) > 1 else parts[0]
            trimmed = line.strip(GO_SPACE)
            if not trimmed:
                continue
            end = i
            column = len(lines[start - 1]) - len(stripped) + 1
            cmd, flags, rest = _split_trimmed(trimmed)
            low = cmd.lower()
            pending: list[_Tok] = [_tok("KEYWORD", cmd, start, (start, end, column, line))]
            if flags:
                pending.append(_tok("FLAGS", flags[0], start, flags))
            heredoc_cmd, is_json = self._arguments(
                pending, low, _ARG_FORMS.get(low, "ignore"), rest, start, end
            )
            yield from pending
            if heredoc_cmd in _HEREDOC_COMMANDS and not is_json and "<<" in line:
                i = yield from self._heredocs(line, i, start, end)

    def _arguments(
        self, out: list[_Tok], cmd: str, kind: str, rest: str, start: int, end: int
    ) -> tuple[str, bool]:
        """Append the argument tokens of one instruction; return (the command that decides
        heredocs, whether it used the exec form)."""
        if kind == "json_or_text" or kind == "json_or_words":
            if not rest:
                return cmd, False
            items = self._json(rest, start, end)
            if items is not None:
                out.append(_tok("EXEC_FORM", rest, start, items))
                return cmd, True
            if kind == "json_or_text":
                out.append(_tok("TEXT", rest, start))
            else:
                out.append(_tok("WORDS", rest, start, re.split(_WHITESPACE, rest)))
        elif kind == "words":
            if rest:
                out.append(_tok("WORDS", rest, start, re.split(_WHITESPACE, rest)))
        elif kind == "text":
            if rest:
                out.append(_tok("TEXT", rest, start))
        elif kind == "name_or_pair":
            words = parse_words(rest, self.escape)
            if words:
                out.append(_tok("WORDS", rest, start, words))
        elif kind == "pairs":
            self._pairs(out, cmd.upper(), rest, start, end)
        elif kind == "health":
            self._health(out, rest, start, end)
        elif kind == "sub":
            if rest:
                sub_cmd, sub_flags, sub_rest = _split_command(rest)
                sub_kind = _ARG_FORMS.get(sub_cmd.lower(), "ignore")
                column = self.column_of(sub_cmd, start, start)[1] if sub_cmd else 1
                out.append(_tok("SUB_OPEN", "", start))
                out.append(_tok("KEYWORD", sub_cmd, start, (start, end, column, rest)))
                if sub_flags:
                    out.append(_tok("FLAGS", sub_flags[0], start, sub_flags))
                used = self._arguments(out, sub_cmd.lower(), sub_kind, sub_rest, start, end)
                out.append(_tok("SUB_CLOSE", "", end))
                return used
        return cmd, False

    def _json(self, rest: str, start: int, end: int) -> list[str] | None:
        try:
            return parse_json_array(rest)
        except _NotStringArray:
            line, column = self.column_of("[", start, end)
            raise self.error(
                "when using JSON array syntax, arrays must be comprised of strings only",
                line,
                column,
            ) from None

    def _pairs(self, out: list[_Tok], keyword: str, rest: str, start: int, end: int) -> None:
        words = parse_words(rest, self.escape)
        if not words:
            return
        if "=" not in words[0]:
            parts = re.split(_WHITESPACE, rest, maxsplit=1)
            if len(parts) < 2:
                line, column = self.column_of(parts[0], start, end)
                raise self.error(f"{keyword} must have two arguments", line, column)
            out.append(_tok("LEGACY_PAIR", rest, start, [Pair(parts[0], parts[1], True)]))
            return
        pairs: list[Pair] = []
        for word in words:
            if "=" not in word:
                line, column = self.column_of(word, start, end)
                raise self.error(
                    f"Syntax error - can't find = in {_go_quote(word)}. "
                    "Must be of the form: name=value",
                    line,
                    column,
                )
            key, value = word.split("=", 1)
            pairs.append(Pair(key, value, False))
        out.append(_tok("PAIRS", rest, start, pairs))

    def _health(self, out: list[_Tok], rest: str, start: int, end: int) -> None:
        sep = 0
        while sep < len(rest) and rest[sep] not in _GO_SPACE_SET:
            sep += 1
        if sep == 0:
            return
        nxt = sep
        while nxt < len(rest) and rest[nxt] in _GO_SPACE_SET:
            nxt += 1
        out.append(_tok("HEALTH_TYPE", rest[:sep], start))
        self._arguments(out, "healthcheck", "json_or_text", rest[nxt:], start, end)

    def _heredocs(self, line: str, i: int, start: int, end: int) -> Generator[_Tok, None, int]:
        """Read the bodies of the heredocs named on *line* from line index *i*; return the
        index after the last terminator (via ``yield from``)."""
        try:
            found = heredoc_names(line)
        except ExpansionError as e:
            lno, column = self.column_of("<<", start, end)
            raise self.error(str(e), lno, column) from None
        for name, expand, chomp, fd in found:
            body: list[str] = []
            terminated = False
            while i < len(self.raw):
                raw = self.raw[i]
                i += 1
                candidate = raw.rstrip("\r\n")
                if chomp:
                    candidate = candidate.lstrip("\t")
                if candidate == name:
                    terminated = True
                    break
                body.append(raw)
            if not terminated:
                lno, column = self.column_of("<<", start, end)
                raise self.error("unterminated heredoc", lno, column)
            heredoc = Heredoc(name=name, content="".join(body), expand=expand, chomp=chomp, fd=fd)
            yield _tok("HEREDOC", name, end, heredoc)
        return i


def _split_command(line: str) -> tuple[str, list[str], str]:
    """Docker's splitCommand: (keyword, flags, rest of the line)."""
    return _split_trimmed(_go_trim_space(line))


def _split_trimmed(line: str) -> tuple[str, list[str], str]:
    parts = re.split(_WHITESPACE, line, maxsplit=1)
    if len(parts) < 2:
        return parts[0], [], ""
    rest, flags = _extract_flags(parts[1])
    return parts[0], flags, _go_trim_space(rest)


def _extract_flags(line: str) -> tuple[str, list[str]]:
    """Leading ``--flag`` words (quotes and backslashes processed, as Docker does) and the
    rest of the line."""
    stripped = line.lstrip(GO_SPACE)
    if not stripped.startswith("--"):
        return stripped, []
    if "'" not in line and '"' not in line and "\\" not in line:
        # nothing quoted or escaped: flag words are blank-separated words
        plain: list[str] = []
        for m in re.finditer(_GO_WORD, line):
            token = m.group()
            if not token.startswith("--"):
                return line[m.start() :], plain
            if token == "--":
                return line[m.end() :], plain
            plain.append(token)
        return "", plain
    words: list[str] = []
    n = len(line)
    pos = 0
    while True:
        while pos < n and line[pos] in _GO_SPACE_SET:
            pos += 1
        if pos >= n:
            return "", words
        if not line.startswith("--", pos):
            return line[pos:], words
        word: list[str] = []
        blank_ok = False
        quote = ""
        while pos < n:
            ch = line[pos]
            if quote:
                if ch == quote:
                    quote = ""
                elif ch == "\\":
                    if pos + 1 == n:
                        quote = ""
                    else:
                        pos += 1
                        word.append(line[pos])
                else:
                    word.append(ch)
                pos += 1
                continue
            if ch in _GO_SPACE_SET:
                break
            if ch in "'\"":
                quote = ch
                blank_ok = True
            elif ch == "\\":
                if pos + 1 < n:
                    pos += 1
                    word.append(line[pos])
            else:
                word.append(ch)
            pos += 1
        text = "".join(word)
        if pos < n and text == "--":
            return line[pos:], words
        if text != "--" and (blank_ok or text):
            words.append(text)
        if pos >= n:
            return "", words


def parse_words(rest: str, escape: str = "\\") -> list[str]:
    """Docker's parseWords: whitespace-separated words, quotes and escapes kept as written
    (used for ENV/LABEL pairs and ARG)."""
    if escape not in rest:
        # no escapes: a word is a run of non-blanks and quoted spans (quotes kept; an
        # unterminated quote runs to the end of the line)
        return re.findall(_QUOTED_WORD, rest)
    words: list[str] = []
    word: list[str] = []
    in_word = False
    quote = ""
    blank_ok = False
    n = len(rest)
    pos = 0
    while pos < n:
        ch = rest[pos]
        if not in_word:
            if ch in _GO_SPACE_SET:
                pos += 1
                continue
            in_word = True
        if quote:
            if ch == quote:
                quote = ""
            if ch == escape and quote != "'":
                if pos + 1 == n:
                    quote = ""
                    pos += 1
                    continue
                word.append(ch)
                pos += 1
                ch = rest[pos]
            word.append(ch)
            pos += 1
            continue
        if ch in _GO_SPACE_SET:
            if blank_ok or word:
                words.append("".join(word))
            word = []
            blank_ok = False
            in_word = False
            pos += 1
            continue
        if ch in "'\"":
            quote = ch
            blank_ok = True
        if ch == escape:
            if pos + 1 == n:
                pos += 1
                continue
            word.append(ch)
            pos += 1
            ch = rest[pos]
        word.append(ch)
        pos += 1
    if in_word and (blank_ok or word):
        words.append("".join(word))
    return words


class _NotStringArray(Exception):
    pass


class _NotJSON(Exception):
    pass


def _reject_constant(name: str) -> Any:
    raise _NotJSON(name)  # Go's JSON has no NaN/Infinity


def _finite_number(text: str) -> Any:
    # Go decodes JSON numbers as float64 and fails (not our error) on overflow
    if float(text) in (float("inf"), float("-inf")):
        raise _NotJSON(text)
    return None


_DECODER = json.JSONDecoder(
    parse_constant=_reject_constant, parse_float=_finite_number, parse_int=_finite_number
)
_LONE_SURROGATE = "[\ud800-\udfff]"


def parse_json_array(rest: str) -> list[str] | None:
    """The exec form as Docker decides it: the items of a JSON array of strings, None when
    *rest* is not a JSON array (shell form then); ``_NotStringArray`` when it is an array
    holding anything but strings (a nested array, a number...)."""
    rest = rest.lstrip(GO_SPACE)
    if not rest.startswith("["):
        return None
    try:
        value = _DECODER.decode(rest)
    except (ValueError, _NotJSON, RecursionError):
        return None
    if not isinstance(value, list):
        return None
    items: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise _NotStringArray()
        # Go replaces unpaired surrogate escapes with U+FFFD
        items.append(re.sub(_LONE_SURROGATE, "\ufffd", item))
    return items
