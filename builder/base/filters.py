"""Docker's ``filters`` query value, shared by every list and prune call that takes one (the
API's ``?filters=`` and the event log)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping


def parse_filters(text: str | None) -> dict[str, list[str]]:
    """``{"k": ["v"]}`` or the older ``{"k": {"v": true}}`` form, as ``k -> [v…]``; a value
    that is not a JSON object raises ``ValueError`` naming the problem."""
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise ValueError(f"invalid filters: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError("invalid filters: a JSON object is expected")
    out: dict[str, list[str]] = {}
    for k, v in raw.items():
        if isinstance(v, dict):
            out[str(k)] = [str(x) for x, on in v.items() if on]
        elif isinstance(v, list):
            out[str(k)] = [str(x) for x in v]
        else:
            out[str(k)] = [str(v)]
    return out


def labels_match(labels: Mapping[str, str], wanted: Iterable[str]) -> bool:
    """``label=KEY`` or ``label=KEY=VALUE`` filters: every one holds on *labels*."""
    for f in wanted:
        k, sep, v = f.partition("=")
        if k not in labels or (sep and labels[k] != v):
            return False
    return True
