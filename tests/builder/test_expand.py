"""The word expander against the table in ``testdata/expand_cases.json`` (Docker's rules),
plus the heredoc-marker reader and the ARG/ENV scope."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.base.errors import BuildError, ExpansionError
from builder.imagebuild.expand import (
    Scope,
    expand_word,
    expand_words,
    parse_heredoc_word,
    used_names,
)

DATA = json.loads(
    (Path(__file__).resolve().parents[2] / "testdata" / "expand_cases.json").read_text("utf-8")
)
ENV: dict[str, str] = DATA["env"]
CASES: list[dict[str, Any]] = DATA["cases"]


def test_table_size_and_error_share() -> None:
    assert len(CASES) >= 200
    assert sum(1 for c in CASES if "error" in c) >= 25


@pytest.mark.parametrize("case", CASES, ids=[c["in"] or "<empty>" for c in CASES])
def test_table(case: dict[str, Any]) -> None:
    escape = case.get("escape", "\\")
    if "error" in case:
        with pytest.raises(ExpansionError) as info:
            expand_word(case["in"], ENV, escape=escape)
        assert case["error"] in str(info.value)
        assert str(info.value).startswith(f"failed to process {json.dumps(case['in'])}: ")
        with pytest.raises(ExpansionError):
            expand_words(case["in"], ENV, escape=escape)
    elif "words" in case:
        assert expand_words(case["in"], ENV, escape=escape) == case["words"]
    else:
        assert expand_word(case["in"], ENV, escape=escape) == case["word"]


def test_expansion_error_is_a_build_error() -> None:
    assert issubclass(ExpansionError, BuildError)


def test_bad_escape_character_is_refused() -> None:
    with pytest.raises(ValueError):
        expand_word("x", {}, escape="!")


def test_used_names_reports_unset() -> None:
    used, unset = used_names("$a ${b:-x} $c", {"a": "1"})
    assert used == ["a", "b", "c"]
    assert unset == ["b", "c"]


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("<<EOF", ("EOF", True, False, 0)),
        ("<<-EOF", ("EOF", True, True, 0)),
        ('<<"EOF"', ("EOF", False, False, 0)),
        ("<<'EOF'", ("EOF", False, False, 0)),
        ('<<E"O"F', ("EOF", False, False, 0)),
        ("3<<EOF", ("EOF", True, False, 3)),
        ("10<<-X", ("X", True, True, 10)),
        ("<<", None),
        ("<<<EOF", None),
        ("a<<EOF", None),
        ("<<'two words'", ("two words", False, False, 0)),
        ("plain", None),
    ],
)
def test_heredoc_words(word: str, expected: tuple[str, bool, bool, int] | None) -> None:
    assert parse_heredoc_word(word) == expected


def test_scope_global_args_only_reach_from_unless_redeclared() -> None:
    scope = Scope(build_args={"B": "from-cli"})
    scope.declare_global("A", "global")
    scope.declare_global("B", "default")
    scope.declare_global("C", None)
    assert scope.for_from() == {"A": "global", "B": "from-cli"}
    stage = scope.new_stage(image_env=[("PATH", "/bin")])
    assert stage.variables() == {"PATH": "/bin"}
    stage.declare_arg("A", None)  # redeclared: takes the global value
    stage.declare_arg("B", "stage-default")  # --build-arg wins over the default
    stage.declare_arg("D", "d")
    stage.declare_arg("E", None)  # declared, no value: stays unset
    assert stage.variables() == {"PATH": "/bin", "A": "global", "B": "from-cli", "D": "d"}
    stage.set_env("D", "env wins")
    assert stage.variables()["D"] == "env wins"
    assert expand_word("${E-unset}", stage.variables()) == "unset"


def test_scope_the_last_of_env_and_arg_wins() -> None:
    """BuildKit's build environment: an ARG with a value after an ENV of the same name sets
    it (``ARG C=arg-c`` after ``ENV C=env-c``), a bare ARG changes nothing, a name set
    again moves to the end (the order RUN gets)."""
    stage = Scope(build_args={"D": "given-d"}).new_stage(image_env=[("PATH", "/bin")])
    stage.set_env("C", "env-c")
    stage.set_env("D", "env-d")
    assert stage.declare_arg("C", "arg-c") == "arg-c"
    assert stage.declare_arg("D", None) == "given-d"
    assert stage.variables() == {"PATH": "/bin", "C": "arg-c", "D": "given-d"}
    stage.set_env("F", "1")
    assert stage.declare_arg("F", None) is None
    assert stage.variables()["F"] == "1"
    stage.set_env("PATH", "/usr/bin")
    assert list(stage.variables()) == ["C", "D", "F", "PATH"]


_PIECES = st.sampled_from(
    [
        "$",
        "{",
        "}",
        ":",
        "-",
        "+",
        "?",
        "#",
        "%",
        "/",
        "'",
        '"',
        "\\",
        "`",
        " ",
        "v",
        "x",
        "1",
        "@",
        "*",
        "[",
        "]",
    ]
)


@settings(max_examples=800, deadline=None)
@given(
    st.lists(st.one_of(_PIECES, st.text(max_size=3)), max_size=16).map("".join),
    st.sampled_from(["\\", "`"]),
)
def test_any_text_expands_or_raises_expansion_error(text: str, escape: str) -> None:
    try:
        word = expand_word(text, ENV, escape=escape)
    except ExpansionError:
        with pytest.raises(ExpansionError):
            expand_words(text, ENV, escape=escape)
        return
    assert isinstance(word, str)
    words = expand_words(text, ENV, escape=escape)
    assert all(w for w in words)
