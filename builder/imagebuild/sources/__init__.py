"""Remote sources of ``ADD``: git repositories (``git``) and URLs (``url``): what they resolve to
for a cache key, and how they are fetched; errors as one line naming the source at fault.

Each module loads on first use (``sources.git``, ``sources.url``): a build that executes a COPY
or a RUN needs neither git's processes nor TLS and sockets."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_MODULES = {"git": "builder.imagebuild.sources.git", "url": "builder.imagebuild.sources.url"}

if TYPE_CHECKING:
    from builder.imagebuild.sources import git, url


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return importlib.import_module(module)  # (which sets it on this package: once)


__all__ = ["git", "url"]
