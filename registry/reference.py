"""Image references ``[host[:port]/]path[:tag][@digest]`` with Docker Hub normalisation.

``busybox`` → ``docker.io/library/busybox:latest``; parsed and validated once, typed after.
"""

from __future__ import annotations

from itertools import groupby

from registry.digest import Digest
from registry.errors import DigestError, InvalidReference
from registry.values import frozen, replace

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DEFAULT_TAG = "latest"

# Docker's grammar (distribution/reference), checked by the three functions below rather than by
# regular expressions, which ``re`` would compile at every command's first parse (~1.2 ms):
#   component  [a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*
#   domain     (?:LABEL(?:\.LABEL)*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?
#              where LABEL is [a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?
#   tag        [\w][\w.-]{0,127}
_LOWER_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_LABEL_CHARS = _LOWER_ALNUM | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ-")
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")
_MAX_NAME = 255


def _is_component(text: str) -> bool:
    """Lowercase alphanumeric runs joined by one ``.``, one or two ``_``, or ``-``s."""
    runs = [(alnum, "".join(chars)) for alnum, chars in groupby(text, _LOWER_ALNUM.__contains__)]
    return (bool(runs) and runs[0][0] and runs[-1][0]
            and all(alnum or run in (".", "_", "__") or run == "-" * len(run) for alnum, run in runs))


def _is_domain(text: str) -> bool:
    """Dot-separated labels (alphanumerics and inner ``-``s) or a bracketed IPv6 address, then
    an optional ``:port``."""
    host = text
    if text.rfind(":") > text.rfind("]"):
        host, _, port = text.rpartition(":")
        if not (port.isascii() and port.isdigit()):
            return False
    if host.startswith("["):
        return len(host) > 2 and host.endswith("]") and _IPV6_CHARS.issuperset(host[1:-1])
    return all(label and label[0] != "-" and label[-1] != "-" and _LABEL_CHARS.issuperset(label)
               for label in host.split("."))


def _is_tag(text: str) -> bool:
    """1 to 128 word characters, ``.`` or ``-``, the first a word character."""
    return (0 < len(text) <= 128 and (text[0].isalnum() or text[0] == "_")
            and all(c.isalnum() or c in "_.-" for c in text))


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
            if not _is_tag(tag):
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
            if not _is_domain(domain):
                raise InvalidReference(f"invalid reference {text!r}: invalid registry host {domain!r}")
        else:
            domain, path = DOCKER_HUB, rest
        if domain in ("index.docker.io", DOCKER_HUB_API):
            domain = DOCKER_HUB
        if domain == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        for component in path.split("/"):
            if not _is_component(component):
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
        if not _is_tag(tag):
            raise InvalidReference(f"invalid tag {tag!r}")
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: Digest) -> Reference:
        return replace(self, digest=digest)

    def __str__(self) -> str:
        return self.name + self._suffix()
