"""Property: any text parses into instructions or raises ``DockerfileSyntaxError``; the typed
level and lint likewise never fail with anything else."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.base.errors import DockerfileSyntaxError
from builder.imagebuild.dockerfile import lint, parse, typed

# Lines made of Dockerfile-ish pieces, so the interesting paths (continuations, heredocs,
# JSON, flags, directives) are reached far more often than by random characters alone.
PIECES = st.sampled_from(
    [
        "FROM", "from", "RUN", "CMD", "ENV", "LABEL", "COPY", "ADD", "ARG", "ONBUILD",
        "HEALTHCHECK", "SHELL", "EXPOSE", "VOLUME", "USER", "WORKDIR", "STOPSIGNAL",
        "ENTRYPOINT", "MAINTAINER", "AS", "NONE", "CMD-SHELL", " ", "  ", "\t", "\\", "`",
        "#", "# escape=`", "# syntax=x", "# check=skip=all", "=", "a", "b=c", "\"", "'",
        "[", "]", ",", "[\"a\"]", "[\"a\", [\"b\"]]", "[1]", "<<EOF", "<<-EOF", "<<'EOF'",
        "EOF", "\tEOF", "3<<X", "X", "--mount=type=cache,target=/x", "--from=a", "--",
        "--link", "--interval=1s", "$v", "${v:-x}", "${", "}", "\r", "\ufeff", "\u00a0",
    ]
)  # fmt: skip
LINE = st.lists(st.one_of(PIECES, st.text(max_size=4)), max_size=8).map("".join)
DOCKERFILE = st.lists(LINE, max_size=12).map("\n".join)


def _check(text: str) -> None:
    try:
        tree = parse(text)
    except DockerfileSyntaxError as e:
        assert e.line >= 1 and e.column >= 1
        e.render()
        return
    assert tree.nodes
    for node in tree.nodes:
        assert 1 <= node.start_line <= node.end_line
    lint(tree)
    try:
        typed(tree)
    except DockerfileSyntaxError as e:
        assert e.line >= 1 and e.column >= 1


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCKERFILE)
def test_structured_text_parses_or_raises_syntax_error(text: str) -> None:
    _check(text)


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_any_text_parses_or_raises_syntax_error(text: str) -> None:
    _check(text)
