"""``copy(src, dst)``: the one code path of pull, push and copy, between a registry repository,
the local store and an OCI layout directory; blobs move concurrently and report progress events.

``ends.py`` holds the ends, ``archives.py`` the tarball ends, ``parse.py`` ``parse_end`` (text to
an end), ``copier.py`` the copy itself and
the ``pull``/``push`` library calls others use, ``events.py`` the progress events.
"""

from registry.transfer.copier import NoMatchingManifest, copy, local_tags, pull, pull_result, push
from registry.transfer.ends import (
    DEFAULT_CONCURRENCY,
    BlobSources,
    ClientOptions,
    End,
    LayoutEnd,
    RemoteEnd,
    StoreEnd,
    remote_end,
)
from registry.transfer.events import CopyResult, Event, Progress
from registry.transfer.parse import parse_end

__all__ = ["NoMatchingManifest", "copy", "pull", "pull_result", "push", "parse_end", "remote_end", "Event",
           "CopyResult", "End", "RemoteEnd", "StoreEnd", "LayoutEnd", "BlobSources", "ClientOptions", "local_tags",
           "Progress", "DEFAULT_CONCURRENCY"]
