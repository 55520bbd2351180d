"""The execution core: a declarative spec (``spec``) run in Linux namespaces by ``Executor``.

Public surface: ``Spec``, ``Process``, ``Mount``, ``Namespaces``, ``Resources``, ``Rlimit``,
``Root``, ``Executor`` (``run``/``start``/``exec``/``exec_start``), ``Sandbox`` (``pid``,
``wait``, ``kill``, ``teardown``, ``attach``), ``Result``, ``to_oci_bundle``,
``run_oci``/``start_oci`` and spec helpers. Names load lazily (lean CLI start-up).
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False

_WHERE = {
    "Root": "builder.core.rootfs",
    "Executor": "builder.core.sandbox.executor", "Result": "builder.core.sandbox.handle",
    "Sandbox": "builder.core.sandbox.handle", "reap_stale": "builder.core.sandbox.handle",
    "teardown_run_dir": "builder.core.sandbox.handle",
    "run_oci": "builder.core.sandbox.oci", "start_oci": "builder.core.sandbox.oci",
    "to_oci_bundle": "builder.core.sandbox.oci",
    "DEFAULT_CAPS": "builder.core.sandbox.spec", "Mount": "builder.core.sandbox.spec",
    "Namespaces": "builder.core.sandbox.spec", "Process": "builder.core.sandbox.spec",
    "Resources": "builder.core.sandbox.spec", "Rlimit": "builder.core.sandbox.spec", "Spec": "builder.core.sandbox.spec",
    "capabilities": "builder.core.sandbox.spec", "default_mounts": "builder.core.sandbox.spec",
    "etc_mounts": "builder.core.sandbox.etc",
}

__all__ = [
    "DEFAULT_CAPS", "Executor", "Mount", "Namespaces", "Process", "Resources", "Result", "Rlimit",
    "Root", "Sandbox", "Spec", "capabilities", "default_mounts", "etc_mounts", "reap_stale",
    "run_oci", "start_oci", "teardown_run_dir", "to_oci_bundle",
]

if TYPE_CHECKING:
    from typing import Any

    from builder.core.rootfs import Root
    from builder.core.sandbox.etc import etc_mounts
    from builder.core.sandbox.executor import Executor
    from builder.core.sandbox.handle import Result, Sandbox, reap_stale, teardown_run_dir
    from builder.core.sandbox.oci import run_oci, start_oci, to_oci_bundle
    from builder.core.sandbox.spec import (
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
        raise AttributeError(f"module 'builder.core.sandbox' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
