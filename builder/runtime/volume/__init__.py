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

# lazy (each name loads its module on first use): the volume commands need the store only, not
# the ``-v`` parsers (``specs``: dataclasses) nor ``provision``. (No module is named as one of
# these names: importing it would make the package's attribute the module.)
_EXPORTS: dict[str, str] = {
    "populate": "builder.runtime.volume.provision:populate",
    "prepare": "builder.runtime.volume.provision:prepare",
    "resolve_in_root": "builder.runtime.volume.provision:resolve_in_root",
    "Mount": "builder.runtime.volume.specs:Mount",
    "MountSpec": "builder.runtime.volume.specs:MountSpec",
    "PROPAGATION": "builder.runtime.volume.specs:PROPAGATION",
    "check_destinations": "builder.runtime.volume.specs:check_destinations",
    "parse_mount": "builder.runtime.volume.specs:parse_mount",
    "parse_tmpfs": "builder.runtime.volume.specs:parse_tmpfs",
    "parse_volume": "builder.runtime.volume.specs:parse_volume",
    "ANONYMOUS_LABEL": "builder.runtime.volume.store:ANONYMOUS_LABEL",
    "DATA": "builder.runtime.volume.store:DATA",
    "InUse": "builder.runtime.volume.store:InUse",
    "NAME_RE": "builder.runtime.volume.store:NAME_RE",
    "RECORD": "builder.runtime.volume.store:RECORD",
    "Volume": "builder.runtime.volume.store:Volume",
    "containers_using": "builder.runtime.volume.store:containers_using",
    "create": "builder.runtime.volume.store:create",
    "filter_volumes": "builder.runtime.volume.store:filter_volumes",
    "get": "builder.runtime.volume.store:get",
    "list_volumes": "builder.runtime.volume.store:list_volumes",
    "prune": "builder.runtime.volume.store:prune",
    "remove": "builder.runtime.volume.store:remove",
}

TYPE_CHECKING = False
if TYPE_CHECKING:
    from builder.runtime.volume.provision import populate, prepare, resolve_in_root
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

if not TYPE_CHECKING:  # mypy would take any name, submodules too, as Any
    from registry.lazy import lazy_exports

    __getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
    del lazy_exports
