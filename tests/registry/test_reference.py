"""Image references with Docker's normalisation, and the reasons invalid ones are refused."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.errors import InvalidReference
from registry.reference import Reference, _is_component, _is_domain, _is_tag

D = "sha256:" + "a" * 64


@pytest.mark.parametrize("text, full, familiar", [
    ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
    ("user/app", "docker.io/user/app:latest", "user/app:latest"),
    ("docker.io/library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("index.docker.io/library/busybox:x", "docker.io/library/busybox:x", "busybox:x"),
    ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
    ("localhost:5000/a/b:c", "localhost:5000/a/b:c", "localhost:5000/a/b:c"),
    ("host:5000/a/b@" + D, "host:5000/a/b@" + D, "host:5000/a/b@" + D),
    ("ghcr.io/o/r:t@" + D, "ghcr.io/o/r:t@" + D, "ghcr.io/o/r:t@" + D),
    ("127.0.0.1:5000/x", "127.0.0.1:5000/x:latest", "127.0.0.1:5000/x:latest"),
    ("a_b/c__d/e-f.g", "docker.io/a_b/c__d/e-f.g:latest", "a_b/c__d/e-f.g:latest"),
    ("MyHost.example.com/app", "MyHost.example.com/app:latest", "MyHost.example.com/app:latest"),
])
def test_normalisation(text: str, full: str, familiar: str) -> None:
    ref = Reference.parse(text)
    assert str(ref) == full
    assert ref.familiar == familiar
    assert Reference.parse(full) == ref


def test_parts() -> None:
    ref = Reference.parse("busybox")
    assert (ref.domain, ref.path, ref.tag, ref.digest) == ("docker.io", "library/busybox", "latest", None)
    assert ref.registry == "registry-1.docker.io" and ref.name == "docker.io/library/busybox"
    assert ref.familiar_name == "busybox"
    assert Reference.parse("busybox", default_tag=False).tag is None
    assert Reference.parse("x@" + D).tag is None
    assert str(ref.with_tag("1")) == "docker.io/library/busybox:1"
    assert Reference.parse("localhost:5000/a").registry == "localhost:5000"


@pytest.mark.parametrize("text, why", [
    ("UPPER/case", "must be lowercase"),
    ("Busybox", "must be lowercase"),
    ("a@sha256:short", "invalid sha256 digest"),
    ("a@md5:" + "a" * 32, "unsupported digest algorithm"),
    ("", "empty reference"),
    ("a:", "invalid tag"),
    ("a:-x", "invalid tag"),
    ("a:" + "t" * 129, "invalid tag"),
    ("a//b", "invalid repository name component"),
    ("a/b_", "invalid repository name component"),
    ("a b", "invalid"),
    ("-a", "invalid repository name component"),
    (":tag", "empty repository name"),
    ("x" * 256, "longer than 255"),
])
def test_invalid_references(text: str, why: str) -> None:
    with pytest.raises(InvalidReference, match=why) as e:
        Reference.parse(text)
    assert "\n" not in str(e.value)


def test_with_tag_refuses_a_bad_tag() -> None:
    with pytest.raises(InvalidReference):
        Reference.parse("a").with_tag("bad tag")


# Docker's grammar as regular expressions (distribution/reference): the hand-written checks that
# ``registry.reference`` runs instead (no regex compiled by a command's first parse) accept
# exactly what these fully match
GRAMMAR = {
    "component": (_is_component, r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"),
    "domain": (_is_domain, r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
                           r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
                           r"|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"),
    "tag": (_is_tag, r"[\w][\w.-]{0,127}"),
}


@pytest.mark.parametrize("part", sorted(GRAMMAR))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_grammar_checks_match_dockers_patterns(part: str, data: st.DataObject) -> None:
    check, pattern = GRAMMAR[part]
    text = data.draw(st.one_of(
        st.text(alphabet="aZ09._-_:[]/\n é", max_size=12),  # the characters that matter
        st.from_regex(pattern, fullmatch=True),  # valid ones, then a character changed
        st.from_regex(pattern, fullmatch=True).map(lambda t: t[:-1] + "-" if t else t),
    ))
    assert check(text) == bool(re.fullmatch(pattern, text)), text


@pytest.mark.parametrize("text, ok", [
    ("a", True), ("a.b", True), ("a_b", True), ("a__b", True), ("a---b", True), ("a___b", False),
    ("a..b", False), ("a._b", False), ("_a", False), ("a-", False), ("A", False), ("", False),
])
def test_component_examples(text: str, ok: bool) -> None:
    assert _is_component(text) is ok


@pytest.mark.parametrize("text, ok", [
    ("localhost", True), ("localhost:5000", True), ("[::1]", True), ("[::1]:5000", True),
    ("a-b.Example.com", True), ("-a.com", False), ("a-.com", False), ("a..com", False),
    ("host:", False), ("host:5x", False), ("[]", False), ("[::1", False), ("host:５", False),
])
def test_domain_examples(text: str, ok: bool) -> None:
    assert _is_domain(text) is ok


def test_a_trailing_newline_is_refused() -> None:
    """(``re.match`` with ``$`` let ``busybox\\n`` through; Docker refuses it, as we do now.)"""
    for text in ("busybox\n", "busybox:latest\n", "localhost:5000\n/a"):
        with pytest.raises(InvalidReference):
            Reference.parse(text)
