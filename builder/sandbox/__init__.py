"""The execution core: a declarative spec (``spec``) run in Linux namespaces by ``Executor``.

Public surface: ``Spec``, ``Process``, ``Mount``, ``Namespaces``, ``Resources``, ``Rlimit``,
``Root``, ``Executor`` (``run``/``start``/``exec``/``exec_start``), ``Sandbox`` (``pid``,
``wait``, ``kill``, ``teardown``, ``attach``), ``Result``, ``to_oci_bundle``,
``run_oci``/``start_oci`` and spec helpers. Names load lazily (lean CLI start-up).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "Root": "builder.rootfs",
    "Executor": "builder.sandbox.executor", "Result": "builder.sandbox.handle",
    "Sandbox": "builder.sandbox.handle", "reap_stale": "builder.sandbox.handle",
    "teardown_run_dir": "builder.sandbox.handle",
    "run_oci": "builder.sandbox.oci", "start_oci": "builder.sandbox.oci",
    "to_oci_bundle": "builder.sandbox.oci",
    "DEFAULT_CAPS": "builder.sandbox.spec", "Mount": "builder.sandbox.spec",
    "Namespaces": "builder.sandbox.spec", "Process": "builder.sandbox.spec",
    "Resources": "builder.sandbox.spec", "Rlimit": "builder.sandbox.spec", "Spec": "builder.sandbox.spec",
    "capabilities": "builder.sandbox.spec", "default_mounts": "builder.sandbox.spec",
    "etc_mounts": "builder.sandbox.etc",
}

__all__ = [
    "DEFAULT_CAPS", "Executor", "Mount", "Namespaces", "Process", "Resources", "Result", "Rlimit",
    "Root", "Sandbox", "Spec", "capabilities", "default_mounts", "etc_mounts", "reap_stale",
    "run_oci", "start_oci", "teardown_run_dir", "to_oci_bundle",
]

if TYPE_CHECKING:
    from builder.rootfs import Root
    from builder.sandbox.etc import etc_mounts
    from builder.sandbox.executor import Executor
    from builder.sandbox.handle import Result, Sandbox, reap_stale, teardown_run_dir
    from builder.sandbox.oci import run_oci, start_oci, to_oci_bundle
    from builder.sandbox.spec import (
        DEFAULT_CAPS,
        Mount,
        Namespaces,
        Process,
        Resources,
        Rlimit,
        Spec,
        capabilities,
        default_mounts,
    )


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'builder.sandbox' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
