"""``import``/``commit --change`` lines -> an image's container config: each line read by the
Dockerfile front end and applied by the planner's config logic (``planner.apply_config``).

The ``runtime`` (``commit``), ``api`` and ``cli`` (``import``) rooms call ``config_from_changes``.
"""

from __future__ import annotations

import _signal  # not signal: its enums (~1.5 ms of every build's start-up)
import re
from collections.abc import Mapping, Sequence

from builder.base.errors import BuildError, DockerfileSyntaxError, InvalidChange
from builder.imagebuild import dockerfile as df
from builder.imagebuild.graph.planner import apply_config

TYPE_CHECKING = False  # not ``typing``'s: a build loads no ``typing`` (~6 ms)
if TYPE_CHECKING:
    from typing import Any


def config_from_changes(lines: Sequence[str], *, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``import``/``commit --change`` lines -> the container config they make from *base* (none for
    ``import``, the container's for ``commit``), through the Dockerfile front end and the build
    planner (Docker's rules: ENV values expand in later lines). A line that does not parse, or
    makes a config Docker refuses, raises ``InvalidChange`` naming it."""
    if not lines:
        return dict(base or {})
    instructions: list[df.Instruction] = []
    origin: list[str] = []  # the --change line of each instruction
    for line in lines:
        where = f"invalid --change {line!r}"
        try:
            parsed = df.load(f"FROM scratch\n{line}\n", filename="--change")
        except DockerfileSyntaxError as e:
            raise InvalidChange(f"{where}: {e.message}") from None
        except BuildError as e:
            raise InvalidChange(f"{where}: {e}") from None
        if len(parsed.stages) > 1:
            raise InvalidChange(f"{where}: FROM is not a valid change command")
        if not parsed.stages[0].instructions:
            raise InvalidChange(f"{where}: no instruction")
        instructions.extend(parsed.stages[0].instructions)
        origin.extend(line for _ in parsed.stages[0].instructions)

    # each prefix in turn: the line at fault is named, and a value a later line replaces
    # (STOPSIGNAL) is checked too; a handful of lines, so the repeated work is nothing
    config: dict[str, Any] = dict(base or {})
    for n in range(1, len(instructions) + 1):
        try:
            config = apply_config(base or {}, instructions[:n])[0]
        except BuildError as e:
            why: str | None = str(e).removeprefix(f"{instructions[n - 1].location}: ")
        else:
            why = _refused_config(config)
        if why is not None:
            raise InvalidChange(f"invalid --change {origin[n - 1]!r}: {why}")
    return config


#: the names ``signal.Signals`` has (aliases included), read from ``_signal``
_SIGNAL_NAMES = frozenset(n for n in vars(_signal) if n.isupper() and n.startswith("SIG") and not n.startswith("SIG_"))


def _refused_config(config: Mapping[str, Any]) -> str | None:
    """What Docker's ``import --change`` refuses beyond the build planner: a port above 65535,
    an unknown protocol or stop signal."""
    for port in config.get("ExposedPorts") or {}:
        if int(port.partition("/")[0]) > 65535:
            return f"invalid port {port}"
        if port.partition("/")[2] not in ("tcp", "udp", "sctp"):
            return f"invalid port {port}: protocol must be tcp, udp or sctp"
    sig = str(config.get("StopSignal") or "SIGTERM")
    name = sig.upper() if sig.upper().startswith("SIG") else "SIG" + sig.upper()
    if not (0 < int(sig) <= 64 if sig.isdigit() else
            name in _SIGNAL_NAMES or re.fullmatch(r"SIGRTM(IN|AX)([+-]\d+)?", name)):
        return f"invalid signal: {sig}"
    return None


__all__ = ["config_from_changes"]
