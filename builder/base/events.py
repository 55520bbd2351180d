"""The event log: what happened to images, containers, networks and volumes, as Docker's events.

Append-only JSON lines in ``<root>/events/events.jsonl``, written by whichever process acted (a
CLI command or the daemon), so ``GET /events`` sees both. One ``write`` per line on an
``O_APPEND`` descriptor keeps lines whole between writers. Past ``MAX_BYTES`` the log is rotated
once (``events.jsonl.1``), so it stays bounded; readers notice the new file by its inode.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from builder.base.filters import parse_filters
from builder.base.values import field, frozen

TYPE_CHECKING = False  # not ``typing``'s: a hot path loads no ``typing`` (~5 ms)
if TYPE_CHECKING:
    from typing import Any

    from builder.base.state import StateRoot

MAX_BYTES = 4 * 1024 * 1024

#: the event types Docker has (and we emit)
TYPES = ("container", "image", "network", "volume", "daemon", "builder")


def log_path(state: StateRoot) -> Path:
    return state.path / "events" / "events.jsonl"


def emit(state: StateRoot, type: str, action: str, actor_id: str,
         attributes: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Append one event and return it. Never raises: losing an event must not fail the action."""
    now = time.time_ns()
    attrs = {str(k): str(v) for k, v in (attributes or {}).items()}
    event: dict[str, Any] = {
        "Type": type, "Action": action,
        "Actor": {"ID": actor_id, "Attributes": attrs},
        "scope": "local", "time": now // 1_000_000_000, "timeNano": now,
    }
    if type in ("container", "image"):
        # the pre-1.22 fields, still filled by dockerd and read by older clients
        event.update({"status": action, "id": actor_id})
        if type == "container" and "image" in attrs:
            event["from"] = attrs["image"]
    line = (json.dumps(event, separators=(",", ":")) + "\n").encode()
    try:
        path = log_path(state)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, line)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if size > MAX_BYTES:
            _rotate(path)
    except OSError:
        pass
    return event


def image_changes(state: StateRoot, lines: Iterable[str]) -> None:
    """Events for ``rmi``/``prune`` result lines: ``Untagged: NAME`` -> ``untag``,
    ``Deleted: ID`` -> ``delete`` (either case)."""
    for line in lines:
        kind, _, what = line.partition(": ")
        action = {"untagged": "untag", "deleted": "delete"}.get(kind.lower())
        if action and what:
            emit(state, "image", action, what, {"name": what})


def _rotate(path: Path) -> None:
    from registry.store import file_lock

    with file_lock(path.with_suffix(".lock")):
        try:
            if path.stat().st_size > MAX_BYTES:
                os.replace(path, path.with_name(path.name + ".1"))
        except FileNotFoundError:
            pass


@frozen
class Filters:
    """Docker's event filters (``type``, ``event``, ``image``, ``container``, ``network``,
    ``volume``, ``label``, ``scope``); each key's values are OR-ed, the keys AND-ed. A ``frozen``
    value, not a dataclass: every command that acts loads this module to emit its events."""

    values: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, text: str | None) -> Filters:
        """``{"type": ["image"]}`` or the older ``{"type": {"image": true}}`` form."""
        out = parse_filters(text)
        known = {"type", "event", "image", "container", "network", "volume", "label", "scope",
                 "daemon", "plugin", "node", "service", "secret", "config"}
        for k in out:
            if k not in known:
                raise ValueError(f"Invalid filter '{k}'")
        return cls(out)

    def match(self, event: Mapping[str, Any]) -> bool:
        actor = event.get("Actor") or {}
        attrs = actor.get("Attributes") or {}
        ident = str(actor.get("ID", ""))
        typ = event.get("Type", "")
        for key, wanted in self.values.items():
            if not wanted:
                continue
            if key == "type":
                ok = typ in wanted
            elif key == "event":
                action = str(event.get("Action", ""))
                ok = action in wanted or action.split(":")[0] in wanted
            elif key == "scope":
                ok = event.get("scope", "local") in wanted
            elif key == "label":
                ok = any(_label_match(attrs, w) for w in wanted)
            elif key in ("container", "network", "volume", "image"):
                if key == "image" and typ == "container":
                    ok = attrs.get("image", "") in wanted
                elif typ != key:
                    ok = False
                else:
                    ok = any(w in (ident, attrs.get("name", "")) or (
                        len(w) >= 3 and ident.removeprefix("sha256:").startswith(
                            w.removeprefix("sha256:"))) for w in wanted)
            else:
                ok = False
            if not ok:
                return False
        return True


def _label_match(attrs: Mapping[str, str], wanted: str) -> bool:
    key, eq, value = wanted.partition("=")
    return key in attrs and (not eq or attrs[key] == value)


class Reader:
    """Reads the log from a position on: ``poll()`` returns events written since the last call.

    Starts at the beginning of the rotated and current files (for ``since``) or at the end.
    """

    def __init__(self, state: StateRoot, *, from_start: bool = True) -> None:
        self.path = log_path(state)
        self._inode: int | None = None
        self._offset = 0
        self._pending = b""
        self._backlog: list[dict[str, Any]] = []
        if from_start:
            self._backlog = list(_read_lines(self.path.with_name(self.path.name + ".1")))
        else:
            try:
                st = self.path.stat()
                self._inode, self._offset = st.st_ino, st.st_size
            except FileNotFoundError:
                pass

    def poll(self) -> list[dict[str, Any]]:
        out, self._backlog = self._backlog, []
        try:
            with open(self.path, "rb") as f:
                ino = os.fstat(f.fileno()).st_ino
                if ino != self._inode:
                    if self._inode is not None and self._offset and not out:
                        # rotated under us: finish the old file (now .1) first
                        out.extend(_read_lines(self.path.with_name(self.path.name + ".1"),
                                               skip=self._offset))
                    self._inode, self._offset, self._pending = ino, 0, b""
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return out
        self._offset += len(data)
        data = self._pending + data
        lines = data.split(b"\n")
        self._pending = lines.pop()
        out.extend(_parse(lines))
        return out


def _parse(lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if not line.strip():
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict):
            yield ev


def _read_lines(path: Path, *, skip: int = 0) -> Iterator[dict[str, Any]]:
    try:
        with open(path, "rb") as f:
            f.seek(skip)
            data = f.read()
    except FileNotFoundError:
        return
    yield from _parse(data.split(b"\n"))


def parse_time(text: str | None) -> float | None:
    """A ``since``/``until`` value: unix seconds (``1700000000`` or ``1700000000.123456789``)
    or RFC 3339; None when absent."""
    if text is None or text == "":
        return None
    try:
        return float(text)
    except ValueError:
        pass
    from datetime import datetime  # run --rm and run -d parse no time: their budget bars datetime

    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ValueError(f"invalid timestamp: {text!r}") from None


def event_time(event: Mapping[str, Any]) -> float:
    nano = event.get("timeNano")
    if isinstance(nano, int):
        return nano / 1e9
    return float(event.get("time", 0))


def history(state: StateRoot, *, since: float | None = None, until: float | None = None,
            filters: Filters | None = None) -> list[dict[str, Any]]:
    """Past events in ``[since, until]`` that match *filters*, oldest first."""
    reader = Reader(state, from_start=True)
    out = []
    for ev in reader.poll():
        t = event_time(ev)
        if since is not None and t < since:
            continue
        if until is not None and t > until:
            continue
        if filters is None or filters.match(ev):
            out.append(ev)
    return out
