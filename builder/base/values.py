"""Frozen values (``@frozen``, ``field``, ``replace``) and ``JSONValue`` for builder's modules:
``registry.values``' own (the bottom package's, which ``registry.config`` uses too), named here
where builder looks for its base helpers."""

from __future__ import annotations

from registry.values import (
    FrozenValueError,
    JSONValue,
    field,
    frozen,
    json_object,
    replace,
    value_fields,
)

__all__ = ["FrozenValueError", "JSONValue", "field", "frozen", "json_object", "replace", "value_fields"]
