"""Frozen value classes made without ``dataclasses``, and ``JSONValue``, a JSON document's type
(here, in the bottom package, so that ``registry.config`` and ``builder`` share them).

``@frozen`` reads a class's annotated fields (defaults, ``field(default_factory=…)``,
``field(compare=False, repr=False)``) and gives it a keyword-or-positional ``__init__`` (which
calls ``__post_init__``, the place a value checks itself), ``__eq__``/``__hash__`` over the
compared fields, ``__repr__`` and a frozen ``__setattr__``; mypy sees a frozen dataclass
(``dataclass_transform``). Its methods are shared functions, not generated ones: a
``@dataclass`` ``exec``s its own for each class and ``dataclasses`` imports ``inspect``, ~1 ms a
class at import, which the ``ps`` path (the container record: its ``HostConfig``, its image
config's ``ContainerConfig``) cannot afford.
``replace(obj, **changes)`` copies a value (or a dataclass) with some fields changed, checked again.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

# not ``typing.TYPE_CHECKING``: a run or a listing imports no ``typing`` (~5 ms); checkers take
# this constant as theirs
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, TypeAlias, TypeVar, dataclass_transform

    T = TypeVar("T")
else:
    def dataclass_transform(**_options: object) -> object:
        """Only for checkers (mypy sees a ``@frozen`` class as a frozen dataclass): at run time
        an identity decorator, so that making a value loads no ``typing``."""
        return lambda decorated: decorated

#: a JSON document as ``json.loads`` gives it (objects are read as mappings, arrays as sequences)
JSONValue: TypeAlias = "None | bool | int | float | str | Sequence[JSONValue] | Mapping[str, JSONValue]"

_MISSING: Any = object()


class FrozenValueError(AttributeError):
    """A field of a frozen value was assigned (``dataclasses.FrozenInstanceError``'s twin)."""


class _Field:
    __slots__ = ("default", "default_factory", "compare", "repr")

    def __init__(self, default: Any, default_factory: Any, compare: bool, repr: bool) -> None:
        self.default = default
        self.default_factory = default_factory
        self.compare = compare
        self.repr = repr


def field(*, default: Any = _MISSING, default_factory: Callable[[], Any] | None = None,
          compare: bool = True, repr: bool = True) -> Any:
    """A field's options, as ``dataclasses.field``'s of the same names."""
    return _Field(default, default_factory, compare, repr)


def _init(self: Any, *args: Any, **kw: Any) -> None:
    cls = type(self)
    names: tuple[str, ...] = cls.__value_fields__
    given = len(args)
    if given > len(names):
        raise TypeError(f"{cls.__name__}() takes {len(names)} positional arguments but {given} were given")
    for name in names[:given] if kw else ():
        if name in kw:
            raise TypeError(f"{cls.__name__}() got multiple values for argument {name!r}")
    values = self.__dict__  # filled directly (``__setattr__`` refuses): one call for the positionals
    values.update(zip(names, args, strict=False))
    defaults: dict[str, Any] = cls.__value_defaults__
    for name in names[given:]:
        if name in kw:
            values[name] = kw.pop(name)
        elif name in defaults:
            d = defaults[name]
            values[name] = d.default_factory() if isinstance(d, _Field) else d
        else:
            raise TypeError(f"{cls.__name__}() missing required argument: {name!r}")
    if kw:
        raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {next(iter(kw))!r}")
    post = getattr(self, "__post_init__", None)
    if post is not None:
        post()


def _key(self: Any) -> tuple[Any, ...]:
    return tuple(getattr(self, n) for n in type(self).__value_compare__)


def _eq(self: Any, other: object) -> Any:  # bool, or NotImplemented
    if type(other) is not type(self):
        return NotImplemented
    return _key(self) == _key(other)


def _hash(self: Any) -> int:
    return hash(_key(self))


def _repr(self: Any) -> str:
    cls = type(self)
    return f"{cls.__qualname__}({', '.join(f'{n}={getattr(self, n)!r}' for n in cls.__value_repr__)})"


def _frozen(self: Any, name: str, value: Any = None) -> None:
    raise FrozenValueError(f"cannot assign to field {name!r}")


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def frozen(cls: type[T]) -> type[T]:
    """Make *cls* a frozen value (see the module's docstring); fields of a value base come first."""
    names: list[str] = []
    defaults: dict[str, Any] = {}
    compare: list[str] = []
    shown: list[str] = []
    for base in reversed(cls.__mro__[1:]):
        b: Any = base
        if "__value_fields__" in vars(b):
            names += [n for n in b.__value_fields__ if n not in names]
            defaults.update(b.__value_defaults__)
            compare += [n for n in b.__value_compare__ if n not in compare]
            shown += [n for n in b.__value_repr__ if n not in shown]
    for name, kind in vars(cls).get("__annotations__", {}).items():
        if str(kind).startswith(("ClassVar", "typing.ClassVar")):
            continue
        if name not in names:
            names.append(name)
        spec = vars(cls).get(name, _MISSING)
        if isinstance(spec, _Field):
            if spec.default_factory is not None:
                defaults[name] = spec
                delattr(cls, name)
            elif spec.default is not _MISSING:
                defaults[name] = spec.default
                setattr(cls, name, spec.default)
            else:
                delattr(cls, name)
            if spec.compare and name not in compare:
                compare.append(name)
            if spec.repr and name not in shown:
                shown.append(name)
        else:
            if spec is not _MISSING:
                defaults[name] = spec
            elif defaults and name not in defaults and any(n in defaults for n in names):
                raise TypeError(f"{cls.__name__}: non-default field {name!r} follows a default one")
            compare += [name] if name not in compare else []
            shown += [name] if name not in shown else []
    c: Any = cls  # its methods are set here, not declared
    c.__value_fields__ = tuple(names)
    c.__value_defaults__ = defaults
    c.__value_compare__ = tuple(compare)
    c.__value_repr__ = tuple(shown)
    setattr(c, "__match_args__", tuple(names))  # noqa: B010  (mypy: not assignable)
    c.__init__ = _init
    c.__setattr__ = _frozen
    c.__delattr__ = _frozen
    if "__repr__" not in vars(cls):
        c.__repr__ = _repr
    if "__eq__" not in vars(cls):
        c.__eq__ = _eq
        if "__hash__" not in vars(cls):  # explicitly set (None: unhashable) stays
            c.__hash__ = _hash
    return cls


def value_fields(obj: object) -> tuple[str, ...]:
    """The field names of a value (class or instance), in their order."""
    fields: tuple[str, ...] = getattr(obj, "__value_fields__")  # noqa: B009  (not a value: AttributeError)
    return fields


def replace(obj: T, /, **changes: Any) -> T:
    """A copy of *obj* with *changes*, made by its constructor (so checked again), as
    ``dataclasses.replace``; a dataclass instance is handed to that."""
    names = getattr(type(obj), "__value_fields__", None)
    if names is None:  # a dataclass: made by ``dataclasses``, which is loaded then
        made: T = sys.modules["dataclasses"].replace(obj, **changes)
        return made
    for name in changes:
        if name not in names:
            raise TypeError(f"{type(obj).__name__} has no field {name!r}")
    kw = {n: changes[n] if n in changes else getattr(obj, n) for n in names}
    return type(obj)(**kw)


def json_object(d: Mapping[str, Any]) -> dict[str, JSONValue]:
    """*d* (a JSON object read at an edge: a request body, a file) as a typed one; ``ValueError``
    naming the key whose value is no JSON (a set, bytes, an object of a class…)."""
    return {str(k): _json(v, str(k)) for k, v in d.items()}


def _json(v: Any, where: str) -> JSONValue:
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, list | tuple):
        return [_json(x, f"{where}[{i}]") for i, x in enumerate(v)]
    if isinstance(v, Mapping):
        return {str(k): _json(x, f"{where}.{k}") for k, x in v.items()}
    raise ValueError(f"{where}: {type(v).__name__} is not a JSON value")
