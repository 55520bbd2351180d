"""The execution core: a declarative spec (``spec``) run in Linux namespaces by ``Executor``.

Public surface: ``Spec``, ``Process``, ``Mount``, ``Namespaces``, ``Resources``, ``Rlimit``,
``Root``, ``Executor`` (``run``/``start``/``exec``), ``Sandbox`` (``pid``, ``wait``, ``kill``,
``teardown``, ``attach``), ``Result``, ``to_oci_bundle``, ``run_oci`` and helpers to build specs.
"""

from __future__ import annotations

from builder.rootfs import Root
from builder.sandbox.etc import etc_mounts
from builder.sandbox.executor import Executor, Result, Sandbox, reap_stale, teardown_run_dir
from builder.sandbox.oci import run_oci, to_oci_bundle
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

__all__ = [
    "DEFAULT_CAPS", "Executor", "Mount", "Namespaces", "Process", "Resources", "Result", "Rlimit",
    "Root", "Sandbox", "Spec", "capabilities", "default_mounts", "etc_mounts", "reap_stale",
    "run_oci", "teardown_run_dir", "to_oci_bundle",
]
