"""Instructions → a DAG of ops (source, exec, copy, mkdir, meta), each with a content-derived key.

``plan(dockerfile, context=…, resolve_image=…, options=…) -> Graph``; the ops live in ``ops``;
``apply_config(config, instructions)`` applies config-only instructions;
``config_from_changes(lines, base=)`` makes a container config of ``import``/``commit --change`` lines.
"""

from __future__ import annotations

from builder.imagebuild.graph.configchanges import config_from_changes
from builder.imagebuild.graph.ops import (
    Base,
    CacheKey,
    CopySource,
    CopySpec,
    ExecSpec,
    Graph,
    Location,
    MkdirSpec,
    MountSpec,
    StagePlan,
    Step,
    key_of,
)
from builder.imagebuild.graph.planner import (
    PlanError,
    PlanOptions,
    apply_config,
    plan,
    platform_args,
)

__all__ = [
    "Base",
    "CacheKey",
    "CopySource",
    "CopySpec",
    "ExecSpec",
    "Graph",
    "Location",
    "MkdirSpec",
    "MountSpec",
    "PlanError",
    "PlanOptions",
    "StagePlan",
    "Step",
    "apply_config",
    "config_from_changes",
    "key_of",
    "plan",
    "platform_args",
]
