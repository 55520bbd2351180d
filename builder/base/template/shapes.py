"""What Docker's typed values look like where their JSON cannot tell. ``docker inspect`` runs a
template on its Go structs first: a map field lacking a key is ``<no value>``, ``index`` of a
``map[string]string`` gives ``""``, a nil slice or map prints ``[]``/``map[]``, a nil pointer the
JSON omits ``<nil>``, a struct ``{a b}``. When that fails it runs the template again over the
JSON as Go decodes it (numbers are ``json.Number`` strings, a missing key is an error), and
that answer (output or error) stands. Names are Docker's field names, wherever they occur."""

from __future__ import annotations

from builder.base.template.exec import Options

TYPE_CHECKING = False  # not ``typing``'s: a hot path loads no ``typing`` (~5 ms)
if TYPE_CHECKING:
    from typing import Any

_STRING_MAPS = frozenset({"Labels", "Options", "DriverOpts", "Data", "Sysctls", "Tmpfs", "StorageOpt",
                          "Annotations"})
_MAPS = _STRING_MAPS | {"Networks", "Ports", "PortBindings", "ExposedPorts", "Volumes", "Containers",
                        "Peers", "Status"}
_NIL_SLICES = frozenset({
    "Entrypoint", "Cmd", "Env", "OnBuild", "Shell", "Mounts", "Binds", "Links", "Dns", "DnsOptions",
    "DnsSearch", "ExtraHosts", "CapAdd", "CapDrop", "GroupAdd", "SecurityOpt", "Devices",
    "DeviceCgroupRules", "DeviceRequests", "Ulimits", "BlkioWeightDevice", "BlkioDeviceReadBps",
    "BlkioDeviceWriteBps", "BlkioDeviceReadIOps", "BlkioDeviceWriteIOps", "Aliases", "VolumesFrom",
    "MaskedPaths", "ReadonlyPaths", "Args", "RepoTags", "RepoDigests", "Layers", "Test",
    "SecondaryIPAddresses", "SecondaryIPv6Addresses", "Warnings"})
_NIL_MAPS = _MAPS - {"Status", "Containers"}
#: (struct, field) → the zero value of a field Docker's JSON omits when it is empty (omitempty)
_OMITTED: dict[tuple[str, str], Any] = {
    **{(config, name): zero for config in ("Config", "ContainerConfig")
       for name, zero in (("ExposedPorts", "map"), ("Shell", "slice"), ("Healthcheck", None), ("StopSignal", ""),
                          ("StopTimeout", None), ("MacAddress", ""), ("ArgsEscaped", False))},
    ("State", "Health"): None,
}

#: ``docker inspect``, ``image inspect``, ``container inspect``, ``network inspect``, ``volume inspect``
INSPECT = Options(missing_key="error", maps=_MAPS, string_maps=_STRING_MAPS,
                  nil_slices=_NIL_SLICES, nil_maps=_NIL_MAPS, omitted=_OMITTED, structs=True,
                  typed_keys=frozenset({"Ports", "PortBindings", "ExposedPorts"}),
                  fallback=Options(missing_key="error", raw=True))


def row(type_name: str) -> Options:
    """A list command's row (``images``, ``ps``…): a Go struct named *type_name* in errors."""
    return Options(struct_type=type_name)
