"""Named volumes under ``<root>/volumes/<name>/{_data,volume.json}`` and the ``-v``/``--mount``/
``--tmpfs`` parsers that turn flags into frozen ``Mount`` records the sandbox applies.

Contract with ``containers``
----------------------------
* ``parse_volume(spec)``, ``parse_mount(spec)``, ``parse_tmpfs(spec)`` → ``MountSpec`` (pure;
  bad syntax is a one-line ``VolumeError``). ``prepare(state, spec, image_rootfs=)`` → ``Mount``:
  creates a missing named or anonymous volume, fills a new empty one from the image's content
  at the mount point (Docker's rule, unless ``nocopy``), creates a missing ``-v`` bind source
  (``--mount`` refuses it). ``check_destinations`` refuses two mounts on one path.
* A container record ``<root>/containers/<id>/container.json`` holds ``"Mounts"``: a list of
  ``Mount.to_record()`` dicts ``{"Type": "volume"|"bind"|"tmpfs", "Name": volume name or "",
  "Source": host path, "Destination": path, "RW": bool, ...}``. ``volume rm``/``prune`` read
  them to refuse or skip volumes in use (or take an ``in_use`` callable instead).
"""

from __future__ import annotations

from builder.runtime.volume.prepare import populate, prepare, resolve_in_root
from builder.runtime.volume.specs import (
    PROPAGATION,
    Mount,
    MountSpec,
    check_destinations,
    parse_mount,
    parse_tmpfs,
    parse_volume,
)
from builder.runtime.volume.store import (
    ANONYMOUS_LABEL,
    DATA,
    NAME_RE,
    RECORD,
    InUse,
    Volume,
    containers_using,
    create,
    filter_volumes,
    get,
    list_volumes,
    prune,
    remove,
)

__all__ = [
    "ANONYMOUS_LABEL",
    "DATA",
    "NAME_RE",
    "PROPAGATION",
    "RECORD",
    "InUse",
    "Mount",
    "MountSpec",
    "Volume",
    "check_destinations",
    "containers_using",
    "create",
    "filter_volumes",
    "get",
    "list_volumes",
    "parse_mount",
    "parse_tmpfs",
    "parse_volume",
    "populate",
    "prepare",
    "prune",
    "remove",
    "resolve_in_root",
]
