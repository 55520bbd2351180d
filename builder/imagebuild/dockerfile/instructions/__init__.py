"""The strict level: frozen typed instructions and stages from a ``SyntaxTree``, as BuildKit's
``instructions`` package reads them (flags, argument counts, forms); values stay unexpanded.

Split as BuildKit splits it: ``commands`` (the records), ``parse`` (``load``/``typed`` and one
parser per instruction), ``flags`` (BFlags, located errors, "did you mean"), ``runmount``
(``RUN --mount`` specs). The names below are this package's API.
"""

from builder.base.units import parse_go_duration
from builder.imagebuild.dockerfile.instructions.commands import (
    EXPANDED_FIELDS,
    Add,
    Arg,
    Cmd,
    Copy,
    Dockerfile,
    Entrypoint,
    Env,
    Expose,
    From,
    Healthcheck,
    Instruction,
    Label,
    Location,
    Maintainer,
    Mount,
    Onbuild,
    Run,
    Shell,
    Stage,
    Stopsignal,
    User,
    Volume,
    Workdir,
    expanded_fields,
)
from builder.imagebuild.dockerfile.instructions.flags import suggest
from builder.imagebuild.dockerfile.instructions.parse import (
    INSTRUCTIONS,
    chomp_heredoc,
    load,
    typed,
)
from builder.imagebuild.dockerfile.instructions.runmount import MOUNT_TYPES, parse_mount

__all__ = [
    "EXPANDED_FIELDS", "INSTRUCTIONS", "MOUNT_TYPES", "Add", "Arg", "Cmd", "Copy", "Dockerfile",
    "Entrypoint", "Env", "Expose", "From", "Healthcheck", "Instruction", "Label", "Location",
    "Maintainer", "Mount", "Onbuild", "Run", "Shell", "Stage", "Stopsignal", "User", "Volume",
    "Workdir", "chomp_heredoc", "expanded_fields", "load", "parse_go_duration", "parse_mount",
    "suggest", "typed",
]
