"""Lazy package exports: a package's public names, imported from their modules on first use
(PEP 562 module ``__getattr__``), so that importing the package itself loads nothing else."""

from __future__ import annotations

import sys

# not ``typing``: importing it would cost ``import builder`` ~5 ms (see registry/__init__.py)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any


def lazy_exports(namespace: dict[str, Any], exports: Mapping[str, str]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for the package whose globals are *namespace*;
    *exports* maps each public name to ``"module:attribute"``, or to ``"module"`` for the
    module itself (a subpackage loaded on first use)."""
    package = namespace["__name__"]

    def getattr_(name: str) -> Any:
        target = exports.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attr = target.partition(":")
        __import__(module)
        value = getattr(sys.modules[module], attr) if attr else sys.modules[module]
        namespace[name] = value  # once: later lookups do not come here
        return value

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return getattr_, dir_
