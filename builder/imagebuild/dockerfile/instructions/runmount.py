"""``RUN --mount`` specs (BuildKit's ``runmount.go``): the CSV record, its keys and the
``Mount`` it makes, checked per type; values holding ``$`` are expanded first by the caller."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from builder.base.units import parse_size
from builder.imagebuild.dockerfile.instructions.commands import Mount
from builder.imagebuild.dockerfile.instructions.flags import quote, suggest

TYPE_CHECKING = False  # not ``typing``'s: a build loads no ``typing`` (~6 ms)
if TYPE_CHECKING:
    from typing import Any


# --- RUN --mount ---------------------------------------------------------------------------

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")


def _csv_fields(spec: str) -> list[str]:
    """Split one CSV record (``a=1,"b=x,y"``; ``""`` is a quote inside quotes)."""
    fields: list[str] = []
    cur: list[str] = []
    i, n = 0, len(spec)
    at_start = True
    while i < n:
        ch = spec[i]
        if at_start and ch == '"':
            i += 1
            while True:
                if i >= n:
                    raise ValueError(f"invalid mount spec {quote(spec)}: unterminated quote")
                if spec[i] == '"':
                    if i + 1 < n and spec[i + 1] == '"':
                        cur.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                cur.append(spec[i])
                i += 1
            if i < n and spec[i] != ",":
                raise ValueError(f"invalid mount spec {quote(spec)}: extraneous text after a quote")
            at_start = False
            continue
        if ch == ",":
            fields.append("".join(cur))
            cur = []
            at_start = True
        else:
            cur.append(ch)
            at_start = False
        i += 1
    fields.append("".join(cur))
    return fields


def _parse_bool(key: str, value: str) -> bool:
    low = value.lower()
    if low in ("1", "t", "true"):
        return True
    if low in ("0", "f", "false"):
        return False
    raise ValueError(f"invalid value for {key}: {value}")


def parse_mount(spec: str, *, expand: Callable[[str], str] | None = None) -> Mount:
    """Parse one ``--mount`` spec as Docker does; *expand* (the build's ARG/ENV expansion of
    one word) is applied to every value first. Without it, values holding ``$`` are kept
    unvalidated and the result says ``needs_expansion``. Raises ``ValueError``."""
    values: dict[str, Any] = {"type": "bind"}
    options: list[tuple[str, str]] = []
    ro_auto = True
    deferred = False
    for raw_field in _csv_fields(spec):
        key, eq, value = raw_field.partition("=")
        key = key.strip().lower()
        if not eq:
            if key in ("readonly", "ro"):
                values["readonly"], ro_auto = True, False
            elif key in ("readwrite", "rw"):
                values["readonly"], ro_auto = False, False
            elif key == "required":
                values["required"] = True
            elif key == "" and raw_field.strip() == "":
                continue
            else:
                raise ValueError(f"unexpected key '{key}' in '{raw_field}'")
            options.append((key, "true"))
            continue
        if expand is not None:
            value = expand(value)
        options.append((key, value))
        if "$" in value and expand is None:
            deferred = True
            if key in ("target", "dst", "destination"):
                values["target"] = value
            elif key in ("source", "src"):
                values["source"] = value
            elif key in ("from", "id", "env", "type", "sharing"):
                values[{"from": "from_"}.get(key, key)] = value
            continue
        if key == "type":
            low = value.lower()
            if low not in MOUNT_TYPES:
                hint = suggest(low, list(MOUNT_TYPES), case_sensitive=True)
                msg = f"unsupported mount type {quote(value)}"
                raise ValueError(msg + (f" (did you mean {hint}?)" if hint else ""))
            values["type"] = low
        elif key == "from":
            values["from_"] = value
        elif key in ("source", "src"):
            values["source"] = value
        elif key in ("target", "dst", "destination"):
            values["target"] = value
        elif key in ("readonly", "ro"):
            values["readonly"], ro_auto = _parse_bool(key, value), False
        elif key in ("readwrite", "rw"):
            values["readonly"], ro_auto = not _parse_bool(key, value), False
        elif key == "required":
            values["required"] = _parse_bool(key, value)
        elif key == "size":
            size = parse_size(value)
            if size is None:
                raise ValueError(f"invalid size: {quote(value)}")
            values["size"] = size
        elif key == "id":
            values["id"] = value
        elif key == "sharing":
            low = value.lower()
            if low not in ("shared", "private", "locked"):
                raise ValueError(f"unsupported sharing value {quote(value)}")
            values["sharing"] = low
        elif key == "mode":
            try:
                values["mode"] = int(value, 8)
            except ValueError:
                raise ValueError(f"failed to parse mode {quote(value)}") from None
        elif key in ("uid", "gid"):
            if not value.isdigit():
                raise ValueError(f"failed to parse {key} {quote(value)}")
            values[key] = int(value)
        elif key == "env":
            values["env"] = value
        else:
            raise ValueError(f"unexpected key '{key}' in '{raw_field}'")
    mtype = values["type"]
    if not deferred:
        _check_mount(mtype, values)
    if ro_auto:
        values["readonly"] = mtype not in ("cache", "tmpfs")
    return Mount(spec=spec, options=tuple(options), needs_expansion=deferred, **values)


def _check_mount(mtype: str, values: Mapping[str, Any]) -> None:
    if mtype not in ("secret", "ssh", "cache"):
        for key in ("mode", "uid", "gid"):
            if values.get(key) is not None:
                raise ValueError(f"{key} not allowed for {quote(mtype)} type mounts")
    if values.get("required") and mtype not in ("secret", "ssh"):
        raise ValueError(f"unexpected key 'required' for mount type '{mtype}'")
    if values.get("size") is not None and mtype != "tmpfs":
        raise ValueError(f"unexpected key 'size' for mount type '{mtype}'")
    if values.get("sharing") is not None and mtype != "cache":
        raise ValueError(f"invalid cache sharing set for {mtype} mount")
    if values.get("env") is not None and mtype != "secret":
        raise ValueError(f"unexpected key 'env' for mount type '{mtype}'")
    if mtype in ("secret", "ssh"):
        if values.get("from_") is not None:
            raise ValueError(f"{mtype} mounts do not support a from")
        if values.get("source") is not None:
            raise ValueError(f"{mtype} mounts do not support a source")
    if mtype in ("bind", "cache", "tmpfs") and not values.get("target"):
        raise ValueError(f"mount type {quote(mtype)} requires a target")
