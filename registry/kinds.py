"""``ErrorKind``: what a caller does about an error, shared by both error trees.

``registry.errors`` and ``builder.base.errors`` give every class a kind (and a raise a kind of its
own where one class covers several); ``builder.api`` maps a kind to an HTTP status and
``builder.base.errors.exit_status`` to the CLI's exit status, each in one table. The kinds are
moby's ``errdefs`` classes that pybuild raises.
"""

from __future__ import annotations

from enum import Enum

TYPE_CHECKING = False  # not ``typing``'s: a hot path loads no ``typing`` (~5 ms)
if TYPE_CHECKING:
    from typing import Self


class ErrorKind(Enum):
    NOT_FOUND = "not found"  # an image, container, network, volume, file… that does not exist
    CONFLICT = "conflict"  # the state forbids it now: a name in use, not running, in use by…
    INVALID = "invalid argument"  # the request is wrong: a bad flag value, reference, Dockerfile
    UNAUTHORIZED = "unauthorized"  # credentials missing or refused
    FORBIDDEN = "forbidden"  # credentials fine, access refused
    UNAVAILABLE = "unavailable"  # the other side cannot answer now (network, 5xx, 429): retry
    CANCELLED = "cancelled"  # stopped by Ctrl-C or by a failed sibling
    FAILED = "failed"  # what was asked ran and failed (a RUN step exited non-zero)
    SYSTEM = "system"  # our side could not do it (the runtime, the kernel, the store)


class Kinded(Exception):
    """The kind machinery both error trees' bases share: a class's ``kind``, and a raise's own
    where one class covers several (``ContainerError.conflict(...)``, ``.with_kind(k)``)."""

    kind: ErrorKind = ErrorKind.SYSTEM

    def with_kind(self, kind: ErrorKind) -> Self:
        """This error, of *kind* rather than its class's."""
        self.kind = kind
        return self

    @classmethod
    def conflict(cls, message: str) -> Self:
        return cls(message).with_kind(ErrorKind.CONFLICT)

    @classmethod
    def not_found(cls, message: str) -> Self:
        return cls(message).with_kind(ErrorKind.NOT_FOUND)

    @classmethod
    def invalid(cls, message: str) -> Self:
        return cls(message).with_kind(ErrorKind.INVALID)
