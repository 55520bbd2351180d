"""Progress events of a transfer (``Event``, ``Progress``) and its result (``CopyResult``)."""

from __future__ import annotations

from collections.abc import Callable

from registry.digest import Digest
from registry.model import Descriptor
from registry.values import frozen


@frozen
class Event:
    """A progress report. ``kind``: ``start`` (a blob begins; ``size`` known), ``progress``
    (``current`` bytes of ``size``), ``exists`` (the destination had it), ``mounted`` (mounted
    from ``detail``), ``done`` (a blob finished), ``retry`` (``detail`` says what failed),
    ``manifest`` (a manifest or index was written: ``digest``, ``detail`` = tag or "")."""

    kind: str
    digest: Digest | None = None
    size: int = 0
    current: int = 0
    media_type: str = ""
    detail: str = ""


Progress = Callable[[Event], None]


def no_progress(_: Event) -> None:
    pass


@frozen
class CopyResult:
    """``digest``: what the source reference resolved to (an index digest when a platform was
    chosen from it, as Docker reports); ``descriptor``: the root written at the destination."""

    digest: Digest
    descriptor: Descriptor
    copied: int = 0
    existing: int = 0
    mounted: int = 0
    bytes: int = 0


