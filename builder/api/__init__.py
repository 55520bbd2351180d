"""``pybuild serve``: the Docker Engine API over the same library calls as the CLI.

The daemon holds no state of its own: every handler works on the state root the CLI uses, with
the same locks. Only ``pybuild serve`` imports this package (and so aiohttp).

    app      ``make_app``: routes of every module in ``ROUTE_MODULES``, versioned and not
    errors   ``ApiError`` and the middleware mapping library errors to Docker's status codes
    streams  newline-delimited JSON progress and the multiplexed stdout/stderr frame format
    server   listeners: unix sockets (mode 0660), TCP with TLS and client certificates
    system   ``/_ping``, ``/version``, ``/info``, ``/events``, ``/system/df``
    images   ``/images/...``: list, pull, push, tag, inspect, history, remove, prune, save, load
    build    ``/build``: a tar context in, build output streamed out
    auth     ``X-Registry-Auth`` / ``X-Registry-Config`` headers into registry credentials

Room ``builder.api`` owns the Docker Engine API server (``pybuild serve``) over the library calls.
May import: ``builder.base``, ``builder.core``, ``builder.network``, ``builder.imagebuild``, ``builder.runtime``, ``builder.system``, ``registry``, ``grammar`` (and anything inside ``builder.api``); never a room above.
"""

from __future__ import annotations

#: the Engine API version we speak, and the oldest one a client may ask for
from builder.system.engine import API_VERSION, MIN_API_VERSION  # noqa: E402

__all__ = ["API_VERSION", "MIN_API_VERSION"]
