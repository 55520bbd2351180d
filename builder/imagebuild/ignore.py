"""``.dockerignore`` matching as Docker's pattern matcher does it, and a pruning context walk.

Patterns: ``*``, ``?``, ``[...]``, ``**``, ``!`` exceptions (last match wins), ``#`` comments.
"""

from __future__ import annotations

import os
import posixpath
import re
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from builder.base.errors import IgnorePatternError
from registry.values import frozen

__all__ = ["IgnoreMatcher", "IgnorePattern", "read_dockerignore"]

# regex characters that mean nothing in a filepath.Match pattern
_REGEX_SPECIAL = frozenset(".+(){}|$")


@frozen
class IgnorePattern:
    """One cleaned pattern: ``text`` without its ``!``; ``exclusion`` for a ``!`` line."""

    text: str
    exclusion: bool
    line: int
    regex: re.Pattern[str]
    parts: tuple[re.Pattern[str] | None, ...]  # one per path segment; None for ``**``


def _clean(path: str) -> str:
    """Go's filepath.Clean for slash paths."""
    return posixpath.normpath(path) if path else "."


def _check_syntax(pattern: str) -> None:
    """Reject what Go's filepath.Match calls a bad pattern: an unclosed or empty ``[``
    class, a bad range, a trailing backslash."""

    def esc(i: int) -> int:
        if i >= len(pattern) or pattern[i] in "-]":
            raise ValueError
        if pattern[i] == "\\":
            i += 1
            if i >= len(pattern):
                raise ValueError
        i += 1
        if i >= len(pattern):
            raise ValueError
        return i

    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= n:
                raise ValueError
            i += 2
            continue
        if ch == "[":
            i += 1
            if i < n and pattern[i] == "^":
                i += 1
            ranges = 0
            while True:
                if i < n and pattern[i] == "]" and ranges > 0:
                    i += 1
                    break
                i = esc(i)
                if pattern[i] == "-":
                    i = esc(i + 1)
                ranges += 1
            continue
        i += 1


def _to_regex(pattern: str) -> str:
    """The regex Docker's matcher builds for *pattern* (without anchors)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            if i < n and pattern[i] == "*":
                i += 1
                if i < n and pattern[i] == "/":
                    i += 1
                out.append(".*" if i >= n else "(?:.*/)?")
            else:
                out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch in _REGEX_SPECIAL:
            out.append("\\" + ch)
        elif ch == "\\":
            if i < n:
                out.append(re.escape(pattern[i]))
                i += 1
            else:
                out.append("\\\\")
        elif ch in "[]":
            out.append(ch)
        else:
            out.append(re.escape(ch) if ch not in "-^!" else ch)
    return "".join(out)


def _compile(text: str) -> re.Pattern[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Python warns on '[[' that Go takes literally
        return re.compile(text, re.DOTALL)


def _make_pattern(text: str, exclusion: bool, line: int) -> IgnorePattern:
    try:
        _check_syntax(text)
        regex = _compile("^" + _to_regex(text) + "(?:/.*)?$")
        parts: list[re.Pattern[str] | None] = []
        for segment in text.split("/"):
            parts.append(None if "**" in segment else _compile("^" + _to_regex(segment) + "$"))
    except (ValueError, re.error):
        raise ValueError(f"syntax error in pattern {text!r}") from None
    return IgnorePattern(text=text, exclusion=exclusion, line=line, regex=regex, parts=tuple(parts))


class IgnoreMatcher:
    """The patterns of one ``.dockerignore``; ``matches(relpath)`` says whether a context path
    is excluded; ``walk(context_dir)`` lists what is sent."""

    def __init__(self, patterns: Iterable[IgnorePattern] = ()) -> None:
        self.patterns: tuple[IgnorePattern, ...] = tuple(patterns)
        self.has_exclusions = any(p.exclusion for p in self.patterns)
        self.visited = 0
        # one pass of C code tells whether any pattern matches at all, which for most paths
        # of a context is the whole answer
        self._any = (
            _compile("|".join(f"(?:{p.regex.pattern})" for p in self.patterns))
            if self.patterns
            else None
        )

    @classmethod
    def from_lines(cls, lines: Iterable[str], *, source: str = ".dockerignore") -> IgnoreMatcher:
        """Read patterns as Docker does: ``#`` in column 1 is a comment, blanks are trimmed,
        a leading ``/`` is dropped, paths are cleaned; a bad pattern raises
        ``IgnorePatternError`` naming *source* and the line."""
        patterns: list[IgnorePattern] = []
        for number, raw in enumerate(lines, 1):
            text = raw.rstrip("\r\n")
            if number == 1:
                text = text.removeprefix("\ufeff")
            if text.startswith("#"):
                continue
            text = text.strip()
            if not text:
                continue
            exclusion = text.startswith("!")
            if exclusion:
                text = text[1:].strip()
                if not text:
                    raise IgnorePatternError(f'{source}:{number}: illegal exclusion pattern: "!"')
            text = _clean(text)
            if len(text) > 1 and text.startswith("/"):
                text = text[1:]
            try:
                patterns.append(_make_pattern(text, exclusion, number))
            except ValueError as e:
                raise IgnorePatternError(f"{source}:{number}: {e}") from None
        return cls(patterns)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> IgnoreMatcher:
        """The patterns of the file at *path*."""
        text = Path(path).read_text(encoding="utf-8", errors="surrogateescape")
        return cls.from_lines(text.split("\n"), source=str(path))

    def _pattern_matches(self, pattern: IgnorePattern, path: str, parents: list[str]) -> bool:
        if pattern.regex.match(path):
            return True
        return any(pattern.regex.match(parent) for parent in parents)

    def matches(self, relpath: str) -> bool:
        """Whether context path *relpath* (slash-separated, relative) is excluded."""
        path = _clean(relpath.replace(os.sep, "/")).lstrip("/") or "."
        parent = posixpath.dirname(path)
        parents: list[str] = []
        if parent:
            segments = parent.split("/")
            parents = ["/".join(segments[: i + 1]) for i in range(len(segments))]
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue
            if self._pattern_matches(pattern, path, parents):
                matched = not pattern.exclusion
        return matched

    def _excluded(self, path: str) -> bool:
        """``matches`` without the parent-directory checks: a pattern that matches a parent
        also matches everything below it (its regex accepts any ``/...`` suffix), so the
        last pattern matching *path* itself decides."""
        if self._any is None or not self._any.match(path):
            return False
        for pattern in reversed(self.patterns):
            if pattern.regex.match(path):
                return not pattern.exclusion
        return False

    def _may_reinclude(self, path: str) -> bool:
        """Could an exclusion pattern match something below excluded directory *path*?"""
        segments = path.split("/")
        for pattern in self.patterns:
            if not pattern.exclusion:
                continue
            possible = True
            for i, segment in enumerate(segments):
                if i >= len(pattern.parts):
                    # the pattern is shorter than the directory: it matched an ancestor,
                    # which the last-match rule already accounted for
                    possible = False
                    break
                part = pattern.parts[i]
                if part is None:
                    break
                if not part.match(segment):
                    possible = False
                    break
            if possible:
                return True
        return False

    def walk(self, context_dir: str | os.PathLike[str]) -> Iterator[str]:
        """The included paths under *context_dir* (files, symlinks and directories, relative,
        slash-separated, sorted per directory). An excluded directory is not entered unless
        an exception (``!``) could re-include something inside it; then only its included
        descendants are yielded. Symlinks are never followed. ``visited`` counts the entries
        looked at by the last walk."""
        root = os.fspath(context_dir)
        self.visited = 0
        stack: list[tuple[str, str]] = [(root, "")]
        while stack:
            directory, prefix = stack.pop()
            try:
                with os.scandir(directory) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError:
                continue
            self.visited += len(entries)
            pushes = []
            for entry in entries:
                rel = prefix + entry.name
                excluded = self._excluded(rel)
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    is_dir = False
                if is_dir:
                    if excluded and not (self.has_exclusions and self._may_reinclude(rel)):
                        continue
                    if not excluded:
                        yield rel
                    pushes.append((entry.path, rel + "/"))
                elif not excluded:
                    yield rel
            stack.extend(reversed(pushes))


def read_dockerignore(
    context_dir: str | os.PathLike[str], dockerfile_name: str | os.PathLike[str] | None = None
) -> IgnoreMatcher:
    """The matcher for a build: ``<Dockerfile>.dockerignore`` beside the Dockerfile when it
    exists (a path relative to *context_dir* or absolute), else ``<context>/.dockerignore``,
    else one that excludes nothing."""
    context = Path(context_dir)
    if dockerfile_name is not None:
        dockerfile = Path(dockerfile_name)
        if not dockerfile.is_absolute():
            dockerfile = context / dockerfile
        specific = dockerfile.with_name(dockerfile.name + ".dockerignore")
        if specific.is_file():
            return IgnoreMatcher.from_file(specific)
    default = context / ".dockerignore"
    if default.is_file():
        return IgnoreMatcher.from_file(default)
    return IgnoreMatcher()
