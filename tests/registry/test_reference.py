"""Image references with Docker's normalisation, and the reasons invalid ones are refused."""

from __future__ import annotations

import pytest

from registry.errors import InvalidReference
from registry.reference import Reference

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
