"""Image references ``[host[:port]/]path[:tag][@digest]`` with Docker Hub normalisation.

``busybox`` → ``docker.io/library/busybox:latest``; parsed and validated once, typed after.
"""

from __future__ import annotations

import re

from registry.digest import Digest
from registry.errors import DigestError, InvalidReference
from registry.values import frozen, replace

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DEFAULT_TAG = "latest"

# pattern texts, compiled by ``re`` on first use and cached there: a command that parses no
# reference (or none with a registry host) compiles none of them at import
_COMPONENT = r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$"
_DOMAIN = (
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$"
)
_TAG = r"^[\w][\w.-]{0,127}$"
_MAX_NAME = 255


@frozen  # (no dataclass made at import: every image command parses these)
class Reference:
    domain: str
    path: str
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str, *, default_tag: bool = True) -> Reference:
        """Parse and normalise; a reference with neither tag nor digest gets ``:latest``."""
        if not text:
            raise InvalidReference("invalid reference format: empty reference")
        rest = text
        digest: Digest | None = None
        if "@" in rest:
            rest, _, dtext = rest.partition("@")
            try:
                digest = Digest.parse(dtext)
            except DigestError as e:
                raise InvalidReference(f"invalid reference {text!r}: {e}") from None
        tag: str | None = None
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > slash:
            rest, tag = rest[:colon], rest[colon + 1 :]
            if not re.match(_TAG, tag):
                raise InvalidReference(f"invalid reference {text!r}: invalid tag {tag!r}")
        if not rest:
            raise InvalidReference(f"invalid reference {text!r}: empty repository name")
        first, sep, remainder = rest.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
            if first != first.lower() and "." not in first and ":" not in first:
                raise InvalidReference(
                    f"invalid reference {text!r}: repository name must be lowercase"
                )
            domain, path = first, remainder
            if not re.match(_DOMAIN, domain):
                raise InvalidReference(f"invalid reference {text!r}: invalid registry host {domain!r}")
        else:
            domain, path = DOCKER_HUB, rest
        if domain in ("index.docker.io", DOCKER_HUB_API):
            domain = DOCKER_HUB
        if domain == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        for component in path.split("/"):
            if not re.match(_COMPONENT, component):
                why = ("repository name must be lowercase" if component.lower() != component
                       else f"invalid repository name component {component!r}")
                raise InvalidReference(f"invalid reference {text!r}: {why}")
        if len(domain) + 1 + len(path) > _MAX_NAME:
            raise InvalidReference(f"invalid reference {text!r}: repository name longer than 255")
        if tag is None and digest is None and default_tag:
            tag = DEFAULT_TAG
        return cls(domain, path, tag, digest)

    @property
    def name(self) -> str:
        """``domain/path``: the repository, fully qualified."""
        return f"{self.domain}/{self.path}"

    @property
    def registry(self) -> str:
        """The host to talk to: Docker Hub's API host for ``docker.io``."""
        return DOCKER_HUB_API if self.domain == DOCKER_HUB else self.domain

    @property
    def familiar_name(self) -> str:
        """The repository as Docker shows it: ``busybox``, ``user/app``, ``host:5000/a``."""
        if self.domain == DOCKER_HUB:
            return self.path.removeprefix("library/")
        return self.name

    @property
    def familiar(self) -> str:
        return self.familiar_name + self._suffix()

    def _suffix(self) -> str:
        s = f":{self.tag}" if self.tag else ""
        if self.digest:
            s += f"@{self.digest}"
        return s

    def with_tag(self, tag: str) -> Reference:
        if not re.match(_TAG, tag):
            raise InvalidReference(f"invalid tag {tag!r}")
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: Digest) -> Reference:
        return replace(self, digest=digest)

    def __str__(self) -> str:
        return self.name + self._suffix()
