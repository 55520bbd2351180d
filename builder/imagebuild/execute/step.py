"""``StepRunner``: the ``graph.ops.StepExecutor`` that runs ops on one workspace with typed inputs."""

from __future__ import annotations

from builder.imagebuild.execute import fileops
from builder.imagebuild.execute.inputs import StepInputs
from builder.imagebuild.execute.run import run_exec
from builder.imagebuild.execute.workspace import Workspace
from builder.imagebuild.graph.ops import CopySpec, ExecSpec, MkdirSpec, Step


class StepRunner:
    """Runs each op the graph hands it on *ws*: RUN in the sandbox, file steps from Python."""

    def __init__(self, ws: Workspace, inputs: StepInputs) -> None:
        self.ws = ws
        self.inputs = inputs

    def run(self, step: Step, spec: ExecSpec) -> None:
        run_exec(self.ws, step, spec, self.inputs)

    def copy(self, step: Step, spec: CopySpec) -> None:
        fileops.copy_step(self.ws, step, spec, self.inputs)

    def mkdir(self, step: Step, spec: MkdirSpec) -> None:
        fileops.mkdir_step(self.ws, step, spec)
