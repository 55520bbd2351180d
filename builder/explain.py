""""Why did this miss?": which input of a step changed since it last ran (its slot's record,
local or imported from a ``--cache-from`` source), in one line."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def explain(last: Mapping[str, Any], now: Mapping[str, str], files: Mapping[str, str]) -> str:
    """*last*: the slot record (``inputs``, ``files``) of the step's previous run; *now*, *files*:
    the step's inputs and file checksums in this build."""
    before: dict[str, str] = last.get("inputs") or {}
    reasons = []
    if before.get("instruction") != now.get("instruction"):
        reasons.append(f"instruction changed: {before.get('instruction')!r} -> {now.get('instruction')!r}")
    if before.get("files") != now.get("files"):
        old_files: dict[str, str] = last.get("files") or {}
        changed = sorted(k for k in set(old_files) | set(files) if old_files.get(k) != files.get(k))
        shown = ", ".join(changed[:5]) + (f" (+{len(changed) - 5} more)" if len(changed) > 5 else "")
        reasons.append(f"files changed: {shown}" if changed else "files changed")
    b_args, n_args = _args(before.get("args")), _args(now.get("args"))
    for k in sorted(set(b_args) | set(n_args)):
        if b_args.get(k) != n_args.get(k):
            reasons.append(f"build arg {k} changed: {b_args.get(k)!r} -> {n_args.get(k)!r}")
    for k in sorted((set(before) | set(now)) - {"instruction", "files", "args", "parent"}):
        if before.get(k) != now.get(k):
            reasons.append(f"{k} changed")
    if not reasons and before.get("parent") != now.get("parent"):
        reasons.append("the step before it changed")
    if not reasons:
        reasons.append("cache record missing (pruned or --no-cache)")
    return "; ".join(reasons)


def _args(text: str | None) -> dict[str, str]:
    """A step's build args input: a JSON object, or ``K=V`` words (as its history writes them)."""
    try:
        value = json.loads(text or "{}")
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}
    except ValueError:
        return dict(w.partition("=")[::2] for w in (text or "").split())
