"""Executing build steps: a workspace (parent layers + a fresh upper), the file steps, RUN in the
sandbox, all from typed inputs (``StepInputs``, ``LayerRef``), never the solver's state.

Modules: ``inputs`` (light values, imported on cached builds too), ``workspace``, ``fileops``
(COPY/ADD/WORKDIR), ``run`` (RUN), ``step`` (``StepRunner``, the ops' executor). Nothing here
imports the solver.
"""
