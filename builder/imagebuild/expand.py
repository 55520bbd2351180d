"""Shell-word expansion as Docker's builder does it: ``$v``, ``${v:-w}``, ``${v#p}``, quotes, escapes.

Also word splitting, and the ARG/ENV scope rules the build applies between instructions.

Public API:

* ``expand_word(text, env, *, escape="\\\\") -> str``: one word, quotes removed (Docker's
  ``ProcessWord``: used for ENV/LABEL values, USER, WORKDIR, FROM, STOPSIGNAL, ARG defaults...).
* ``expand_words(text, env, *, escape="\\\\") -> list[str]``: the words of *text*, unquoted
  whitespace (also inside an unquoted expansion) separating them (Docker's ``ProcessWords``:
  ADD/COPY/VOLUME/EXPOSE arguments).
* ``Scope``: the variables an instruction sees (global ARGs for FROM, then per stage one
  build environment that ENV and valued ARGs set, the last one winning), as BuildKit keeps it.

``env`` is any mapping of names to values; a name missing from it is unset. Positional and
special parameters (``$1``, ``$@``, ``$#``...) are unset unless *env* holds them. Errors raise
``ExpansionError``, e.g. ``failed to process "${v:x}": unsupported modifier (:x) in
substitution``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping

from builder.base.errors import ExpansionError
from registry.values import field, frozen

__all__ = [
    "ExpansionError",
    "Scope",
    "expand_word",
    "expand_words",
    "heredoc_names",
    "parse_heredoc_word",
    "used_names",
]

_EOF = ""
# Go's unicode.IsSpace
_SPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)
_SPECIAL = frozenset("@*#?-$!0")


class _Failure(Exception):
    """An expansion error before the ``failed to process`` prefix is added."""


class _Words:
    """Docker's word accumulator: unquoted blanks split words, quoted text never does (an
    empty quoted string makes no word of its own, as in Docker)."""

    __slots__ = ("word", "words", "in_word")

    def __init__(self) -> None:
        self.word = ""
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch in _SPACE:
            if self.in_word and self.word:
                self.words.append(self.word)
                self.word = ""
                self.in_word = False
        else:
            self.add_raw_char(ch)

    def add_raw_char(self, ch: str) -> None:
        self.word += ch
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def add_raw_string(self, text: str) -> None:
        self.word += text
        self.in_word = True

    def result(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
            self.word = ""
            self.in_word = False
        return self.words


class _Lexer:
    """One pass over one word (Docker's ``shellWord``)."""

    def __init__(
        self,
        text: str,
        env: Mapping[str, str],
        *,
        escape: str,
        raw_quotes: bool = False,
        raw_escapes: bool = False,
        skip_unset: bool = False,
    ) -> None:
        self.text = text
        self.pos = 0
        self.env = env
        self.escape = escape
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_unset = skip_unset
        self.used: list[str] = []
        self.unset: list[str] = []

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else _EOF

    def next(self) -> str:
        if self.pos >= len(self.text):
            return _EOF
        ch = self.text[self.pos]
        self.pos += 1
        return ch

    def get(self, name: str) -> tuple[str, bool]:
        self.used.append(name)
        if name in self.env:
            return self.env[name], True
        self.unset.append(name)
        return "", False

    def process(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        saved = self.raw_escapes
        self.raw_escapes = raw_escapes
        try:
            return self._process(stop)
        finally:
            self.raw_escapes = saved

    def _process(self, stop: str) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if stop and ch == stop:
                self.pos += 1
                return "".join(result), words.result()
            if ch == "$":
                tmp = self.dollar()
                result.append(tmp)
                words.add_string(tmp)
            elif ch == "'":
                tmp = self.single_quote()
                result.append(tmp)
                words.add_raw_string(tmp)
            elif ch == '"':
                tmp = self.double_quote()
                result.append(tmp)
                words.add_raw_string(tmp)
            else:
                self.pos += 1
                if ch == self.escape:
                    if self.raw_escapes:
                        words.add_raw_char(ch)
                        result.append(ch)
                    ch = self.next()
                    if ch == _EOF:
                        break
                    words.add_raw_char(ch)
                else:
                    words.add_char(ch)
                result.append(ch)
        if stop:
            raise _Failure(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.result()

    def single_quote(self) -> str:
        result: list[str] = []
        ch = self.next()
        if self.raw_quotes:
            result.append(ch)
        while True:
            ch = self.next()
            if ch == _EOF:
                raise _Failure(
                    "unexpected end of statement while looking for matching single-quote"
                )
            if ch == "'":
                if self.raw_quotes:
                    result.append(ch)
                return "".join(result)
            result.append(ch)

    def double_quote(self) -> str:
        result: list[str] = []
        ch = self.next()
        if self.raw_quotes:
            result.append(ch)
        while True:
            ch = self.peek()
            if ch == _EOF:
                raise _Failure(
                    "unexpected end of statement while looking for matching double-quote"
                )
            if ch == '"':
                self.next()
                if self.raw_quotes:
                    result.append(ch)
                return "".join(result)
            if ch == "$":
                result.append(self.dollar())
                continue
            ch = self.next()
            if ch == self.escape:
                after = self.peek()
                if after == _EOF:
                    continue
                if after in ('"', "$", self.escape):
                    if self.raw_escapes:
                        result.append(ch)
                    ch = self.next()
            result.append(ch)

    def name(self) -> str:
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if not out and ch.isdecimal():
                while self.pos < len(self.text) and self.text[self.pos].isdecimal():
                    out.append(self.text[self.pos])
                    self.pos += 1
                return "".join(out)
            if not out and ch in _SPECIAL:
                self.pos += 1
                return ch
            if not (ch.isalpha() or ch.isdecimal() or ch == "_"):
                break
            out.append(ch)
            self.pos += 1
        return "".join(out)

    def dollar(self) -> str:
        self.next()
        if self.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            value, found = self.get(name)
            if not found and self.skip_unset:
                return "$" + name
            return value
        self.next()
        ch = self.peek()
        if ch == _EOF:
            raise _Failure("syntax error: missing '}'")
        if ch in "{}:":
            raise _Failure("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        if ch == _EOF:
            # Docker reports "unsupported modifier (\ufffd)" here; say what is wrong instead
            raise _Failure("syntax error: missing '}'")
        mod = ch
        null_is_unset = False
        if ch == "}":
            value, found = self.get(name)
            if not found and self.skip_unset:
                return "${" + name + "}"
            return value
        if ch == ":":
            null_is_unset = True
            ch = self.next()
            mod += ch
        if ch in ("+", "-", "?", "#", "%") or null_is_unset:
            raw = ch in ("#", "%")
            if null_is_unset and raw:
                raise _Failure(f"unsupported modifier ({mod}) in substitution")
            word = self._until("}", raw)
            value, found = self.get(name)
            if self.skip_unset and not found:
                return "${" + name + mod + word + "}"
            if ch == "-":
                return word if not found or (null_is_unset and value == "") else value
            if ch == "+":
                return "" if not found or (null_is_unset and value == "") else word
            if ch == "?":
                if not found:
                    raise _Failure(f"{name}: {word or 'is not allowed to be unset'}")
                if null_is_unset and value == "":
                    raise _Failure(f"{name}: {word or 'is not allowed to be empty'}")
                return value
            if ch in ("%", "#"):
                greedy = word.startswith(ch)
                if greedy:
                    word = word[1:]
                if ch == "%":
                    return _trim_suffix(word, value, greedy)
                return _trim_prefix(word, value, greedy)
            raise _Failure(f"unsupported modifier ({mod}) in substitution")
        if ch == "/":
            replace_all = self.peek() == "/"
            if replace_all:
                self.next()
            pattern = self._until("/", True, missing="syntax error: missing '/' in ${}")
            replacement = self._until("}", True)
            value, found = self.get(name)
            if self.skip_unset and not found:
                return "${" + name + "/" + pattern + "/" + replacement + "}"
            regex = _pattern_regex(pattern, greedy=True, anchored=False)
            if replace_all:
                return regex.sub(lambda _m: replacement, value)
            return regex.sub(lambda _m: replacement, value, count=1)
        if self.skip_unset:
            return "${" + name + "}"
        raise _Failure(f"unsupported modifier ({mod}) in substitution")

    def _until(self, stop: str, raw: bool, missing: str = "syntax error: missing '}'") -> str:
        try:
            word, _ = self.process(stop, raw)
        except _Failure:
            if self.peek() == _EOF:
                raise _Failure(missing) from None
            raise
        return word


def _pattern_regex(pattern: str, *, greedy: bool, anchored: bool) -> re.Pattern[str]:
    """A shell pattern (``*``, ``?``, backslash escapes) as a regex, as Docker converts it;
    ``[`` is literal there too."""
    out = ["^"] if anchored else []
    star = ".*" if greedy else ".*?"
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append(star)
            continue
        if ch == "?":
            out.append(".")
            continue
        if ch == "\\":
            if i < n and pattern[i] == "}":
                continue
            nxt = pattern[i] if i < n else ""
            i += 1
            if nxt not in ("*", "?", "\\"):
                raise _Failure(
                    f"invalid pattern ({pattern}) in substitution: invalid escape '\\{nxt}'"
                )
            ch = nxt
        out.append(re.escape(ch))
    return re.compile("".join(out))


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    m = _pattern_regex(pattern, greedy=greedy, anchored=True).search(value)
    return value[m.end() :] if m else value


def _reverse_pattern(pattern: str) -> str:
    tokens: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i != len(pattern) - 1:
            tokens.append(pattern[i : i + 2])
            i += 2
        else:
            tokens.append(pattern[i])
            i += 1
    return "".join(reversed(tokens))


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    # the shortest/longest rightmost match is the leftmost match on the reversed strings
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]


def _run(
    text: str,
    env: Mapping[str, str],
    *,
    escape: str,
    raw_quotes: bool = False,
    raw_escapes: bool = False,
    skip_unset: bool = False,
) -> tuple[str, list[str], _Lexer]:
    if escape not in ("\\", "`"):
        raise ValueError(f"escape must be \\ or `, not {escape!r}")
    lexer = _Lexer(
        text,
        env,
        escape=escape,
        raw_quotes=raw_quotes,
        raw_escapes=raw_escapes,
        skip_unset=skip_unset,
    )
    try:
        word, words = lexer.process(_EOF, raw_escapes)
    except _Failure as e:
        raise ExpansionError(f"failed to process {_go_quote(text)}: {e}") from None
    return word, words, lexer


def _go_quote(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def expand_word(text: str, env: Mapping[str, str], *, escape: str = "\\") -> str:
    """*text* as one word: variables expanded, quotes and escapes removed."""
    return _run(text, env, escape=escape)[0]


def expand_words(text: str, env: Mapping[str, str], *, escape: str = "\\") -> list[str]:
    """*text* split into words on unquoted whitespace (including whitespace produced by an
    unquoted expansion), each expanded and unquoted; empty words are dropped."""
    return _run(text, env, escape=escape)[1]


def expand_display(text: str, env: Mapping[str, str], *, escape: str = "\\") -> str:
    """*text* with variables expanded for display, as BuildKit names a step: quotes and
    escapes kept, unset names left as written."""
    return _run(text, env, escape=escape, raw_quotes=True, raw_escapes=True, skip_unset=True)[0]


def used_names(
    text: str, env: Mapping[str, str], *, escape: str = "\\"
) -> tuple[list[str], list[str]]:
    """(names *text* refers to, those of them unset in *env*), in order of use; for lint."""
    lexer = _run(text, env, escape=escape)[2]
    return lexer.used, lexer.unset


_HEREDOC = re.compile(r"(\d*)<<(-?)([^<]*)\Z")
_SPECIAL_IN_WORD = re.compile("[\"'\\\\$" + "".join(sorted(_SPACE)) + "]")
_BLANKS = re.compile("[" + "".join(sorted(_SPACE)) + "]+")
_QUOTE_ESCAPE_DOLLAR = re.compile(r"[\"'\\$]")


def parse_heredoc_word(word: str) -> tuple[str, bool, bool, int] | None:
    """(name, expand, chomp, fd) when *word* is a heredoc marker (``<<EOF``, ``<<-"EOF"``,
    ``3<<EOF``), else None. ``expand`` is False when any part of the name was quoted."""
    m = _HEREDOC.match(word)
    if m is None or not m.group(3):
        return None
    rest = m.group(3)
    fd = int(m.group(1)) if m.group(1) else 0
    if not _SPECIAL_IN_WORD.search(rest):
        # nothing for the lexer to do: the name is the word itself, unquoted
        return rest, True, m.group(2) == "-", fd
    _, words, _ = _run(rest, {}, escape="\\", skip_unset=True)
    if len(words) != 1:
        return None
    _, raw_words, _ = _run(rest, {}, escape="\\", skip_unset=True, raw_quotes=True)
    name = words[0]
    raw = raw_words[0] if raw_words else ""
    expand = name.count("'") + name.count('"') == raw.count("'") + raw.count('"')
    return name, expand, m.group(2) == "-", fd


def heredoc_names(line: str) -> list[tuple[str, bool, bool, int]]:
    """The heredocs a RUN/COPY/ADD line opens, in order (Docker splits the whole line into
    words with quotes and escapes kept, and every word starting with ``<<`` or ``N<<``
    names one)."""
    if not _QUOTE_ESCAPE_DOLLAR.search(line):
        # no quotes, escapes or $: the lexer would only split on blanks
        words = [w for w in _BLANKS.split(line) if w]
    else:
        try:
            _, words, _ = _run(
                line, {}, escape="\\", raw_quotes=True, raw_escapes=True, skip_unset=True
            )
        except ExpansionError:
            return []
    found = []
    for word in words:
        heredoc = parse_heredoc_word(word)
        if heredoc is not None:
            found.append(heredoc)
    return found


# --- scope ---------------------------------------------------------------------------------


@frozen
class Scope:
    """The variables visible to the instruction being built, by Docker's rules.

    ``global_args``: ARGs declared before the first FROM with their values (defaults or
    ``--build-arg``); only FROM lines see them, unless a stage redeclares the name with a
    bare ``ARG name`` (it then gets the global value). In a stage, ``ARG`` declares (value:
    ``--build-arg`` over default over the global value). ``env`` is the stage's environment as
    BuildKit's build state holds it (what RUN gets and words expand against): the base's ENV,
    then each ``ENV`` and each ``ARG`` that has a value, in order, the last one setting a name
    winning (``ENV C=e`` then ``ARG C=a`` gives ``a``); an ``ARG`` with no value changes nothing.
    A name set again moves to the end, as BuildKit's state list does.
    """

    build_args: Mapping[str, str] = field(default_factory=dict)
    global_args: dict[str, str] = field(default_factory=dict)
    args: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    def declare_global(self, name: str, default: str | None) -> None:
        """A global ``ARG name[=default]`` (default already expanded against the globals)."""
        if name in self.build_args:
            self.global_args[name] = self.build_args[name]
        elif default is not None:
            self.global_args[name] = default
        else:
            self.global_args.pop(name, None)

    def for_from(self) -> dict[str, str]:
        """What a FROM line sees: the global ARGs."""
        return dict(self.global_args)

    def new_stage(self, image_env: Iterable[tuple[str, str]] = ()) -> Scope:
        """The scope at the start of a stage: the base image's ENV, no ARG yet."""
        return Scope(
            build_args=self.build_args,
            global_args=dict(self.global_args),
            env=dict(image_env),
        )

    def declare_arg(self, name: str, default: str | None) -> str | None:
        """A stage ``ARG name[=default]`` (default already expanded in this scope); returns
        the value it gets, if any."""
        if name in self.build_args:
            value: str | None = self.build_args[name]
        elif default is not None:
            value = default
        else:
            value = self.global_args.get(name)
        if value is not None:
            self.args[name] = value
            self._set(name, value)
        return value

    def set_env(self, name: str, value: str) -> None:
        self._set(name, value)

    def _set(self, name: str, value: str) -> None:
        self.env.pop(name, None)
        self.env[name] = value

    def variables(self) -> dict[str, str]:
        """What an instruction of the stage sees (and a RUN step's environment, in order)."""
        return dict(self.env)
