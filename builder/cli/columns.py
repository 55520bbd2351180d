"""Docker's table layout for listings, on its own so that a command which renders no template
(``volume ls``, ``network ls``, ``cluster ls``) does not load ``builder.cli.format``."""

from __future__ import annotations

from collections.abc import Sequence


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Go ``tabwriter`` with Docker's settings: min width 10, padding 3, last column unpadded."""
    widths = [max(10, max((len(r[i]) for r in [headers, *rows]), default=0) + 3)
              for i in range(len(headers))]
    lines = []
    for r in [headers, *rows]:
        cells = [c.ljust(widths[i]) if i < len(r) - 1 else c for i, c in enumerate(r)]
        lines.append("".join(cells).rstrip())
    return "\n".join(lines)
