""""Why did this miss?": which input of a step changed since it last ran (its slot's record,
local or imported from a ``--cache-from`` source), in one line. Loaded on a build's first
executed step: ``Slot`` is a frozen value, not a dataclass (no ``dataclasses``, ``inspect``)."""

from __future__ import annotations

import json
from collections.abc import Mapping

from registry.values import field, frozen

TYPE_CHECKING = False  # not ``typing``'s: the one-file build's start-up loads no ``typing`` here
if TYPE_CHECKING:
    from typing import Any


@frozen
class Slot:
    """A step's inputs and file checksums when it last ran: its slot record, a JSON object
    ``{"inputs": {…}, "files": {…}}`` (``<cache>/slots/<slot>.json``, or an entry of a shared
    cache config's ``slots``)."""

    inputs: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"inputs": dict(self.inputs), "files": dict(self.files)}

    @classmethod
    def from_json(cls, doc: object) -> Slot | None:
        """The slot *doc* holds; None when it is not a slot record."""
        if not isinstance(doc, dict):
            return None
        inputs, files = doc.get("inputs") or {}, doc.get("files") or {}
        if not isinstance(inputs, dict) or not isinstance(files, dict):
            return None
        return cls(inputs, files)


def explain(last: Slot, now: Mapping[str, str], files: Mapping[str, str]) -> str:
    """*last*: the slot record of the step's previous run; *now*, *files*: the step's inputs and
    file checksums in this build."""
    before = last.inputs
    reasons = []
    if before.get("instruction") != now.get("instruction"):
        reasons.append(f"instruction changed: {before.get('instruction')!r} -> {now.get('instruction')!r}")
    if before.get("files") != now.get("files"):
        old_files = last.files
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
