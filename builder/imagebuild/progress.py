"""A build's progress as BuildKit's plain output (``#n name``, ``#n 0.123 log``, ``#n DONE 0.1s``):
the one renderer of those lines, for ``pybuild build --progress plain`` and ``POST /build``'s
stream (light: ``build --help`` and ``builder prune`` load it with the CLI's build module)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from builder.imagebuild.solver import Event


class PlainProgress:
    """BuildKit's plain output (``pybuild build --progress plain`` and ``POST /build``'s stream): ``#n name``, ``#n 0.123 log line``, ``#n DONE 0.1s``/``CACHED``."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.t0 = time.monotonic()
        self.started: dict[int, float] = {}

    def __call__(self, e: Event) -> None:
        w = self.out.write
        if e.kind in ("start", "cached", "done") and e.id not in self.started:
            self.started[e.id] = time.monotonic()
            w(f"\n#{e.id} {e.name}\n")
        if e.kind == "cached":
            w(f"#{e.id} CACHED ({e.text})\n" if e.text else f"#{e.id} CACHED\n")
        elif e.kind == "done":
            w(f"#{e.id} DONE {e.elapsed:.1f}s\n")
        elif e.kind == "log":
            w(f"#{e.id} {time.monotonic() - self.started.get(e.id, self.t0):.3f} {e.text}\n")
        elif e.kind == "miss":
            w(f"#{e.id} cache miss: {e.text}\n")
        elif e.kind == "warning":
            w(f"WARNING: {e.text}\n")
        elif e.kind == "error":
            w(f"#{e.id} ERROR: {e.text}\n")
        elif e.kind == "export":
            w(f"#{e.id or 0} {e.text}\n")
        self.out.flush()

    def close(self) -> None:
        """Nothing to end: each line is written and flushed as its event comes (the progress
        interface's ``close`` ends a bar display)."""
