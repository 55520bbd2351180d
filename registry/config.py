"""``ContainerConfig``: the ``config`` object of an image configuration (Docker's ``Config``:
User, Env, Cmd, Entrypoint, WorkingDir, ExposedPorts, Volumes, Labels, Healthcheck, …).

A frozen value with a typed field per key Docker defines. Unknown keys, and known keys whose
value has another type than Docker's, are kept raw in ``extra``; ``to_json`` gives back exactly
what ``from_json`` read (same keys, same order, same values), so no digest ever moves.
"""

from __future__ import annotations

from collections.abc import Mapping

from registry.values import field, frozen, replace

TYPE_CHECKING = False  # not ``typing``'s: a hot path loads no ``typing`` (~5 ms)
if TYPE_CHECKING:
    from typing import Any

# the kinds of values: a JSON string, boolean, integer, array of strings, object of strings,
# object whose values are all ``{}`` (a set of keys: ExposedPorts, Volumes), any object
_STR, _BOOL, _INT, _LIST, _STRMAP, _KEYSET, _OBJECT = range(7)

#: JSON key -> (attribute, kind), in Docker's order
SCHEMA: dict[str, tuple[str, int]] = {
    "Hostname": ("hostname", _STR),
    "Domainname": ("domainname", _STR),
    "User": ("user", _STR),
    "AttachStdin": ("attach_stdin", _BOOL),
    "AttachStdout": ("attach_stdout", _BOOL),
    "AttachStderr": ("attach_stderr", _BOOL),
    "ExposedPorts": ("exposed_ports", _KEYSET),
    "Tty": ("tty", _BOOL),
    "OpenStdin": ("open_stdin", _BOOL),
    "StdinOnce": ("stdin_once", _BOOL),
    "Env": ("env", _LIST),
    "Cmd": ("cmd", _LIST),
    "Healthcheck": ("healthcheck", _OBJECT),
    "ArgsEscaped": ("args_escaped", _BOOL),
    "Image": ("image", _STR),
    "Volumes": ("volumes", _KEYSET),
    "WorkingDir": ("working_dir", _STR),
    "Entrypoint": ("entrypoint", _LIST),
    "NetworkDisabled": ("network_disabled", _BOOL),
    "MacAddress": ("mac_address", _STR),
    "OnBuild": ("on_build", _LIST),
    "Labels": ("labels", _STRMAP),
    "StopSignal": ("stop_signal", _STR),
    "StopTimeout": ("stop_timeout", _INT),
    "Shell": ("shell", _LIST),
}
_KEY_OF = {attr: key for key, (attr, _) in SCHEMA.items()}


def _fits(kind: int, v: Any) -> bool:
    if v is None:
        return True  # JSON null: kept as such
    if kind == _STR:
        return isinstance(v, str)
    if kind == _BOOL:
        return isinstance(v, bool)
    if kind == _INT:
        return isinstance(v, int) and not isinstance(v, bool)
    if kind == _LIST:
        return isinstance(v, list) and all(isinstance(x, str) for x in v)
    if kind == _STRMAP:
        return isinstance(v, dict) and all(isinstance(x, str) for x in v.values())
    if kind == _KEYSET:
        return isinstance(v, dict) and all(x == {} and isinstance(x, dict) for x in v.values())
    return isinstance(v, dict)


def _copy(v: Any) -> Any:
    """A deep copy of *v*, JSON data (``copy.deepcopy``'s, without importing ``copy`` and
    ``weakref`` into every ``ps`` and ``run``)."""
    if isinstance(v, dict):
        return {k: _copy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_copy(x) for x in v]
    if isinstance(v, tuple):
        return tuple(_copy(x) for x in v)
    return v


def _typed(kind: int, v: Any) -> Any:
    if v is None:
        return None
    if kind == _LIST:
        return tuple(v)
    if kind == _KEYSET:
        return tuple(v)
    if kind in (_STRMAP, _OBJECT):
        return _copy(v)
    return v


def _json(kind: int, v: Any) -> Any:
    if v is None:
        return None
    if kind == _LIST:
        return list(v)
    if kind == _KEYSET:
        return {k: {} for k in v}
    if kind in (_STRMAP, _OBJECT):
        return _copy(dict(v))
    return v


@frozen
class ContainerConfig:
    """The container defaults an image carries. A field is ``None`` when its key is absent (or
    JSON ``null``: ``keys`` tells which). ``ExposedPorts``/``Volumes`` are their keys
    (``("80/tcp",)``); ``Env``, ``Cmd``… are tuples; ``Labels`` and ``Healthcheck`` mappings."""

    hostname: str | None = None
    domainname: str | None = None
    user: str | None = None
    attach_stdin: bool | None = None
    attach_stdout: bool | None = None
    attach_stderr: bool | None = None
    exposed_ports: tuple[str, ...] | None = None
    tty: bool | None = None
    open_stdin: bool | None = None
    stdin_once: bool | None = None
    env: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    healthcheck: Mapping[str, Any] | None = None
    args_escaped: bool | None = None
    image: str | None = None
    volumes: tuple[str, ...] | None = None
    working_dir: str | None = None
    entrypoint: tuple[str, ...] | None = None
    network_disabled: bool | None = None
    mac_address: str | None = None
    on_build: tuple[str, ...] | None = None
    labels: Mapping[str, str] | None = None
    stop_signal: str | None = None
    stop_timeout: int | None = None
    shell: tuple[str, ...] | None = None
    #: keys that are not Docker's, or whose value is not of Docker's type: kept as read
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: the JSON keys present, in order (a key whose field is None is written as ``null``)
    keys: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> ContainerConfig:
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, v in (data or {}).items():
            known = SCHEMA.get(key)
            if known is not None and _fits(known[1], v):
                values[known[0]] = _typed(known[1], v)
            else:
                extra[key] = _copy(v)
        return cls(**values, extra=extra, keys=tuple(data or {}))

    def to_json(self) -> dict[str, Any]:
        """The JSON object: every key ``from_json`` read, in its order and with its value."""
        out: dict[str, Any] = {}
        for key in self.keys:
            known = SCHEMA.get(key)
            if key in self.extra:
                out[key] = _copy(self.extra[key])
            elif known is not None:
                out[key] = _json(known[1], getattr(self, known[0]))
        return out

    def with_(self, **changes: Any) -> ContainerConfig:
        """A new config with fields changed; ``None`` removes the key. Lists may be given for
        tuple fields and an iterable of keys (or a ``{key: {}}`` mapping) for the key sets."""
        keys = list(self.keys)
        extra = dict(self.extra)
        values: dict[str, Any] = {}
        for attr, v in changes.items():
            key = _KEY_OF.get(attr)
            if key is None:
                raise TypeError(f"ContainerConfig has no field {attr!r}")
            kind = SCHEMA[key][1]
            extra.pop(key, None)
            if v is None:
                if key in keys:
                    keys.remove(key)
            else:
                v = tuple(v) if kind in (_LIST, _KEYSET) else (dict(v) if kind in (_STRMAP, _OBJECT) else v)
                if key not in keys:
                    keys.append(key)
            values[attr] = v
        return replace(self, **values, extra=extra, keys=tuple(keys))

    def get(self, key: str) -> Any:
        """The JSON value of *key* (``None`` when absent), for code that goes by Docker's names."""
        if key in self.extra:
            return _copy(self.extra[key])
        known = SCHEMA.get(key)
        return _json(known[1], getattr(self, known[0])) if known is not None else None

    def env_map(self) -> dict[str, str]:
        """``Env`` as a mapping (a bare ``NAME`` maps to "")."""
        out: dict[str, str] = {}
        for e in self.env or ():
            k, _, v = e.partition("=")
            out[k] = v
        return out
