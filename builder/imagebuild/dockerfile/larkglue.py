"""The Lark glue of the Dockerfile syntax level: the custom lexer and the inline tree builder.

Kept apart from ``syntax`` so that importing the syntax records does not import Lark; it builds
the records of ``tree`` and never imports ``syntax`` (whose ``parse`` imports it on first use).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lark import Transformer
from lark.lexer import Lexer

from builder.imagebuild.dockerfile.tree import Heredoc, Node, Pair


class LineLexer(Lexer):
    """Feeds the grammar the tokens of the line pass (Lark's custom-lexer interface): *data* is
    the line pass's source object, whose ``tokens()`` yields them."""

    def __init__(self, lexer_conf: Any) -> None:
        pass

    def lex(self, data: Any) -> Iterator[Any]:  # type: ignore[override]
        tokens: Iterator[Any] = data.tokens()
        return tokens


class TreeBuilder(Transformer[Any, Any]):
    """Runs inline in the LALR parser: each reduction makes its ``Node`` directly."""

    def start(self, children: list[Any]) -> tuple[list[tuple[str, str]], list[Node]]:
        directives: list[tuple[str, str]] = []
        nodes: list[Node] = []
        for child in children:
            if child and isinstance(child[0], Node):
                nodes = child
            else:
                directives = child
        return directives, nodes

    def directives(self, children: list[Any]) -> list[tuple[str, str]]:
        if len(children) == 1:
            return [children[0].payload]
        found: list[tuple[str, str]] = children[0]
        found.append(children[1].payload)
        return found

    def instructions(self, children: list[Any]) -> list[Node]:
        if len(children) == 1:
            return [children[0]]
        nodes: list[Node] = children[0]
        nodes.append(children[1])
        return nodes

    def heredocs(self, children: list[Any]) -> list[Heredoc]:
        if len(children) == 1:
            return [children[0].payload]
        found: list[Heredoc] = children[0]
        found.append(children[1].payload)
        return found

    def health(self, children: list[Any]) -> tuple[str, list[str], bool]:
        kind = children[0].value
        if len(children) == 1:
            return ("args", [kind], False)
        form = children[1]
        if form.type == "EXEC_FORM":
            return ("args", [kind, *form.payload], True)
        return ("args", [kind, form.value], False)

    def sub(self, children: list[Any]) -> tuple[str, list[Node], bool]:
        return ("sub", [make_node(children[1:-1])], False)

    def instruction(self, children: list[Any]) -> Node:
        return make_node(children)


def make_node(children: list[Any]) -> Node:
    keyword = children[0]
    start, end, column, original = keyword.payload
    flags: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    pairs: tuple[Pair, ...] = ()
    heredocs: list[Heredoc] = []
    sub: Node | None = None
    is_json = False
    for child in children[1:]:
        if isinstance(child, tuple):
            kind, values, is_json = child
            if kind == "sub":
                sub = values[0]
            else:
                args = tuple(values)
            continue
        if isinstance(child, list):
            heredocs = child
            continue
        t = child.type
        if t == "FLAGS":
            flags = tuple(child.payload)
        elif t == "TEXT":
            args = (child.value,)
        elif t == "WORDS":
            args = tuple(child.payload)
        elif t == "EXEC_FORM":
            args = tuple(child.payload)
            is_json = True
        elif t == "PAIRS" or t == "LEGACY_PAIR":
            pairs = tuple(child.payload)
    return Node(
        cmd=keyword.value.lower(),
        keyword=keyword.value,
        flags=flags,
        args=args,
        json=is_json,
        pairs=pairs,
        heredocs=tuple(heredocs),
        sub=sub,
        start_line=start,
        end_line=end,
        column=column,
        original=original,
    )


# one instance: the grammar loader caches one parser per (lexer, transformer)
TREE_BUILDER = TreeBuilder()
