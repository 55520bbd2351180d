"""What every instruction's parser shares (BuildKit's ``bflag.go``): Docker's BFlags, errors
located at a word of the instruction, argument counts and the "did you mean" hint."""

from __future__ import annotations

import json

from builder.base.errors import InstructionError
from builder.imagebuild.dockerfile.tree import Node, SyntaxTree

TYPE_CHECKING = False  # not ``typing``'s: a build loads no ``typing`` (~6 ms)
if TYPE_CHECKING:
    from typing import Any


def quote(s: str) -> str:
    """Go's %q, near enough for messages."""
    return json.dumps(s, ensure_ascii=False)


def error_at(
    tree: SyntaxTree, node: Node, message: str, *, after: str | None = None
) -> InstructionError:
    """An error at *node*; the column points at *after* (a flag, a word) when it is found on
    the instruction's lines past the keyword, else at the keyword."""
    line, column = node.start_line, node.column
    if after:
        for n in range(node.start_line, node.end_line + 1):
            text = tree.source_line(n) or ""
            skip = node.column - 1 + len(node.keyword) if n == node.start_line else 0
            i = text.find(after, skip)
            if i >= 0:
                line, column = n, i + 1
                break
    return InstructionError(
        message,
        filename=tree.filename,
        line=line,
        column=column,
        source_line=tree.source_line(line),
    )


class Flags:
    """Docker's BFlags: the flags an instruction declares, parsed from the raw words."""

    def __init__(self, tree: SyntaxTree, node: Node) -> None:
        self.tree = tree
        self.node = node
        self.kinds: dict[str, str] = {}
        self.values: dict[str, Any] = {}

    def declare(self, name: str, kind: str) -> None:
        self.kinds[name] = kind

    def parse(self) -> None:
        for raw in self.node.flags:
            name, eq, value = raw[2:].partition("=")
            kind = self.kinds.get(name)
            if kind is None:
                hint = suggest(name, sorted(self.kinds), case_sensitive=True)
                msg = f"unknown flag: {name}"
                if hint:
                    msg += f" (did you mean {hint}?)"
                raise error_at(self.tree, self.node, msg, after=raw)
            if name in self.values and kind != "strings":
                raise error_at(self.tree, self.node, f"duplicate flag specified: {name}", after=raw)
            if kind == "bool":
                if eq and not value:
                    raise error_at(
                        self.tree, self.node, f"missing a value on flag: {name}", after=raw
                    )
                low = value.lower()
                if low in ("true", ""):
                    self.values[name] = True
                elif low == "false":
                    self.values[name] = False
                else:
                    raise error_at(
                        self.tree,
                        self.node,
                        f"expecting boolean value for flag {name}, not: {value}",
                        after=raw,
                    )
            else:
                if not eq:
                    raise error_at(
                        self.tree, self.node, f"missing a value on flag: {name}", after=raw
                    )
                if kind == "strings":
                    self.values.setdefault(name, []).append(value)
                else:
                    self.values[name] = value

    def string(self, name: str) -> str | None:
        value = self.values.get(name)
        return value if isinstance(value, str) else None

    def boolean(self, name: str) -> bool:
        return bool(self.values.get(name, False))

    def strings(self, name: str) -> tuple[str, ...]:
        return tuple(self.values.get(name, ()))


def _edit_distance(a: str, b: str, *, transpositions: bool = False) -> int:
    """Levenshtein distance; with *transpositions*, swapping two neighbours costs 1 (OSA)."""
    rows = [list(range(len(b) + 1))]
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cost = min(rows[-1][j] + 1, cur[j - 1] + 1, rows[-1][j - 1] + (ca != cb))
            if transpositions and i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, rows[-2][j - 2] + 1)
            cur.append(cost)
        rows.append(cur)
    return rows[-1][-1]


def suggest(value: str, options: list[str], *, case_sensitive: bool = False) -> str | None:
    """BuildKit's "did you mean": the first option at edit distance below 3 (the closest
    one wins), in the case style of *value* when matching ignores case; None on an exact
    match (the value was not the problem) or when nothing is close."""
    probe = value if case_sensitive else value.lower()
    best: str | None = None
    best_key = (3, 0, "")
    for option in options:
        candidate = option if case_sensitive else option.lower()
        if candidate == probe:
            return None
        # BuildKit keeps the first option under distance 3 in map order (random); ties are
        # broken here by the transposition-aware distance, then alphabetically
        key = (
            _edit_distance(probe, candidate),
            _edit_distance(probe, candidate, transpositions=True),
            candidate,
        )
        if key[0] < 3 and (best is None or key < best_key):
            best, best_key = candidate, key
    if best is None or case_sensitive:
        return best
    if value == value.lower():
        return best.lower()
    if value == value.upper():
        return best.upper()
    return best


def exactly_one(tree: SyntaxTree, node: Node) -> str:
    if len(node.args) != 1:
        raise error_at(tree, node, f"{node.cmd.upper()} requires exactly one argument")
    return node.args[0]


def at_least_one(tree: SyntaxTree, node: Node, count: int) -> None:
    if count == 0:
        raise error_at(tree, node, f"{node.cmd.upper()} requires at least one argument")


def no_flags(tree: SyntaxTree, node: Node) -> None:
    Flags(tree, node).parse()
