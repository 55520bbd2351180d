"""Named volumes on disk: ``<root>/volumes/<name>/{_data,volume.json}``; create, inspect, list,
remove (refused while in use, from the containers' ``Mounts`` or a callable) and prune.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from builder.base import events
from builder.base.errors import VolumeError
from builder.base.filters import labels_match
from builder.base.state import StateRoot
from builder.base.values import field, frozen

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
ANONYMOUS_LABEL = "com.docker.volume.anonymous"
RECORD = "volume.json"
DATA = "_data"

InUse = Callable[[str], Sequence[str]]


@frozen
class Volume:
    name: str
    mountpoint: Path
    created: str
    driver: str = "local"
    labels: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, str] = field(default_factory=dict)

    @property
    def anonymous(self) -> bool:
        return ANONYMOUS_LABEL in self.labels

    def to_json(self) -> dict[str, Any]:
        """Docker's ``volume inspect`` shape."""
        return {
            "CreatedAt": self.created,
            "Driver": self.driver,
            "Labels": dict(self.labels),
            "Mountpoint": str(self.mountpoint),
            "Name": self.name,
            "Options": dict(self.options),
            "Scope": "local",
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Volume:
        return cls(
            name=str(d["Name"]),
            mountpoint=Path(d["Mountpoint"]),
            created=str(d.get("CreatedAt", "")),
            driver=str(d.get("Driver", "local")),
            labels=dict(d.get("Labels") or {}),
            options=dict(d.get("Options") or {}),
        )


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise VolumeError.invalid(
            f"invalid volume name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, at least 2 characters"
        )


def _load(state: StateRoot, name: str) -> Volume | None:
    try:
        return Volume.from_json(json.loads((state.volumes / name / RECORD).read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError) as e:
        raise VolumeError(f"corrupt volume record {state.volumes / name / RECORD}: {e}") from e


def create(
    state: StateRoot,
    name: str | None = None,
    *,
    driver: str = "local",
    labels: Mapping[str, str] | None = None,
    options: Mapping[str, str] | None = None,
) -> Volume:
    """``volume create``: an existing volume of that name is returned as is (as Docker does)."""
    if driver != "local":
        raise VolumeError(f"volume driver {driver!r} is not supported (only local)")
    if options:
        raise VolumeError(f"unsupported volume options for the local driver: {', '.join(sorted(options))}")
    labels = dict(labels or {})
    if name is None:
        name = secrets.token_hex(32)
        labels.setdefault(ANONYMOUS_LABEL, "")
    _check_name(name)
    with state.lock("volumes"):
        existing = _load(state, name)
        if existing is not None:
            return existing
        root = state.volumes / name
        tmp = state.volumes / f".{name}.{os.getpid()}.creating"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / DATA).mkdir(parents=True)
        os.chmod(tmp / DATA, 0o755)
        vol = Volume(name=name, mountpoint=root / DATA, created=_now(), labels=labels)
        _write_json_atomic(tmp / RECORD, vol.to_json())
        os.rename(tmp, root)  # the volume appears whole or not at all
    _event(state, name, "create")
    return vol


def _event(state: StateRoot, name: str, action: str) -> None:
    """A volume event in the root's event log (``GET /events``), from the CLI or the daemon."""
    events.emit(state, "volume", action, name, {"driver": "local"})


def get(state: StateRoot, name: str) -> Volume:
    vol = _load(state, name) if NAME_RE.match(name) else None
    if vol is None:
        raise VolumeError.not_found(f"no such volume: {name}")
    return vol


def list_volumes(state: StateRoot) -> list[Volume]:
    out = []
    if state.volumes.is_dir():
        for d in sorted(state.volumes.iterdir()):
            if not d.name.startswith(".") and (d / RECORD).exists():
                vol = _load(state, d.name)
                if vol is not None:
                    out.append(vol)
    return out


VOLUME_FILTERS = ("dangling", "name", "label", "driver")


def filter_volumes(state: StateRoot, vols: Sequence[Volume],
                   filters: Mapping[str, Sequence[str]]) -> list[Volume]:
    """``volume ls --filter``: values of one key OR, keys AND (Docker's rule); ``dangling``
    (``true``/``false``/``1``/``0``: no container uses it), ``name`` (a part of it), ``label``
    (``KEY`` or ``KEY=VALUE``), ``driver``. An unknown key or dangling value is a ``VolumeError``."""
    for key, values in filters.items():
        if key not in VOLUME_FILTERS:
            raise VolumeError.invalid(f"Invalid filter '{key}'")
        for v in values if key == "dangling" else ():
            if v.lower() not in ("true", "false", "1", "0"):
                raise VolumeError.invalid(f"Invalid filter 'dangling={v}'")
    users = containers_using(state) if "dangling" in filters else {}

    def one(vol: Volume, key: str, v: str) -> bool:
        if key == "dangling":
            return (vol.name not in users) == (v.lower() in ("true", "1"))
        if key == "name":
            return v in vol.name
        if key == "driver":
            return vol.driver == v
        lk, sep, lv = v.partition("=")
        return lk in vol.labels and (not sep or vol.labels[lk] == lv)

    return [vol for vol in vols if all(any(one(vol, k, v) for v in vs) for k, vs in filters.items() if vs)]


def containers_using(state: StateRoot) -> dict[str, list[str]]:
    """Volume name → ids of containers whose ``container.json`` ``Mounts`` name it."""
    users: dict[str, list[str]] = {}
    if not state.containers.is_dir():
        return users
    for rec in sorted(state.containers.glob("*/container.json")):
        try:
            d = json.loads(rec.read_text())
        except (OSError, ValueError):
            continue
        for m in d.get("Mounts") or ():
            if isinstance(m, Mapping) and m.get("Type") == "volume" and m.get("Name"):
                users.setdefault(str(m["Name"]), []).append(str(d.get("Id") or rec.parent.name))
    return users


def _in_use_fn(state: StateRoot, in_use: InUse | None) -> InUse:
    if in_use is not None:
        return in_use
    users = containers_using(state)
    return lambda name: users.get(name, [])


def remove(state: StateRoot, name: str, *, force: bool = False, in_use: InUse | None = None) -> None:
    """``volume rm``: refused while a container uses it; ``force`` ignores a missing volume only."""
    with state.lock("volumes"):
        vol = _load(state, name) if NAME_RE.match(name) else None
        if vol is None:
            if force:
                return
            raise VolumeError.not_found(f"no such volume: {name}")
        users = _in_use_fn(state, in_use)(name)
        if users:
            raise VolumeError.conflict(
                f"remove {name}: volume is in use - [{', '.join(users)}]"
            )
        _delete(state, name)


def _delete(state: StateRoot, name: str) -> None:
    root = state.volumes / name
    trash = state.volumes / f".{name}.{os.getpid()}.removing"
    os.rename(root, trash)  # gone from listings at once, even if the tree is large
    shutil.rmtree(trash)
    _event(state, name, "destroy")


def prune(
    state: StateRoot, *, all_volumes: bool = False, label_filters: Sequence[str] = (),
    in_use: InUse | None = None,
) -> tuple[list[str], int]:
    """``volume prune``: unused anonymous volumes (all unused with ``all_volumes``), as Docker
    23+; returns the names removed and the bytes reclaimed."""
    removed, space = [], 0
    with state.lock("volumes"):
        used = _in_use_fn(state, in_use)
        for vol in list_volumes(state):
            if not (all_volumes or vol.anonymous) or used(vol.name):
                continue
            if not labels_match(vol.labels, label_filters):
                continue
            space += _du(vol.mountpoint)
            _delete(state, vol.name)
            removed.append(vol.name)
    return removed, space


def _du(path: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for n in filenames + dirnames:
            try:
                total += os.lstat(os.path.join(dirpath, n)).st_blocks * 512
            except OSError:
                pass
    return total
