"""Remote sources of ``ADD``: git repositories (``git``) and URLs (``url``): what they resolve to
for a cache key, and how they are fetched; errors as one line naming the source at fault.

Each module loads on first use (``sources.git``, ``sources.url``): a build that executes a COPY
or a RUN needs neither git's processes nor TLS and sockets."""

from __future__ import annotations

_MODULES = {"git": "builder.imagebuild.sources.git", "url": "builder.imagebuild.sources.url"}

TYPE_CHECKING = False  # not ``typing``'s: a build loads no ``typing`` (~6 ms)
if TYPE_CHECKING:
    from builder.imagebuild.sources import git, url
else:
    from registry.lazy import lazy_exports

    __getattr__, __dir__ = lazy_exports(globals(), _MODULES)
    del lazy_exports

__all__ = ["git", "url"]
