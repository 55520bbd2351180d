"""The one error tree of ``builder``, split by what a caller (mostly ``cli``) handles.

    BuildError                       base; ``str()`` is a one-line message
    ├── DockerfileSyntaxError        file, line, column (+ the offending line for a caret)
    │   └── InstructionError         the typed level refused an instruction (unknown, bad flag…)
    ├── ExpansionError               a malformed or failing ``${…}`` word expansion
    ├── IgnorePatternError           a bad ``.dockerignore`` pattern, with its line
    ├── ContextError                 a path outside the context, a missing COPY source
    ├── PlanError                    a build that cannot be planned: unknown stage/target, bad flag value (located)
    │   └── InvalidChange            an ``import --change`` line that makes no valid config (the line named)
    ├── StepFailed                   a RUN step exited non-zero: location, exit code, log tail
    ├── BuildCancelled               Ctrl-C or a failed sibling stage stopped the build (exit 130)
    ├── LayerError                   a layer tar that is malformed or reaches outside its root
    ├── SandboxError                 the execution core could not set a process up
    │   ├── CommandNotFound          exit 127: the command does not exist in the image
    │   └── CommandNotExecutable     exit 126: it exists but cannot be run
    ├── ContainerError               container lifecycle: unknown, name in use, running…
    ├── NetworkError                 networks, ports, addresses
    ├── VolumeError                  volumes and mount specs
    └── TemplateError                a ``--format`` Go template, in Go's words (``template: :1: …``)
        ├── TemplateParseError       it does not parse (Docker's inspect exits 64)
        └── TemplateExecError        it fails on a value (``executing "" at <.A>: …``)

``registry.errors.RegistryError`` is the other tree; ``cli`` renders both.

Every class has a ``kind`` (``registry.kinds.ErrorKind``: what the caller does about it); a
raise gives its own where one class covers several (``ContainerError.conflict(...)``).
``builder.api`` maps a kind to an HTTP status; ``exit_status`` below maps it to the CLI's
exit status in one table (the supervisor records a start's failure by it too).
"""

from __future__ import annotations

from builder.base.values import frozen
from registry.errors import RegistryError
from registry.kinds import ErrorKind, Kinded


class BuildError(Kinded):
    """Base of every error raised by ``builder``."""

    kind: ErrorKind = ErrorKind.SYSTEM
    #: raised by the container engine (the runtime, containers, networks, volumes, layers):
    #: Docker's CLI exits 125 when the daemon refuses ``run``/``create``
    engine: bool = False
    #: an exit status a process or a container's start reported, passed on as it is
    #: (the runtime's 126/127, a start's failure)
    reported_status: int | None = None

    @property
    def exit_code(self) -> int:
        """The exit status ``cli`` uses for this error (``exit_status``)."""
        return exit_status(self)


@frozen
class ExitStatus:
    plain: int  # Docker's CLI for a refused request: 1
    engine: int  # the engine refused (``run``/``create``): 125


#: kind -> the CLI's exit status; the one table (Ctrl-C is 130 wherever it comes from)
EXIT_STATUS: dict[ErrorKind, ExitStatus] = {
    ErrorKind.NOT_FOUND: ExitStatus(1, 125),
    ErrorKind.CONFLICT: ExitStatus(1, 125),
    ErrorKind.INVALID: ExitStatus(1, 125),
    ErrorKind.UNAUTHORIZED: ExitStatus(1, 125),
    ErrorKind.FORBIDDEN: ExitStatus(1, 125),
    ErrorKind.UNAVAILABLE: ExitStatus(1, 125),
    ErrorKind.CANCELLED: ExitStatus(130, 130),
    ErrorKind.FAILED: ExitStatus(1, 125),
    ErrorKind.SYSTEM: ExitStatus(1, 125),
}


def exit_status(err: BuildError | RegistryError) -> int:
    """The CLI's exit status for a library error of either tree."""
    if isinstance(err, BuildError):
        if err.reported_status is not None:
            return err.reported_status
        row = EXIT_STATUS[err.kind]
        return row.engine if err.engine else row.plain
    return EXIT_STATUS[err.kind].plain


class DockerfileSyntaxError(BuildError):
    kind = ErrorKind.INVALID

    def __init__(
        self,
        message: str,
        *,
        filename: str = "Dockerfile",
        line: int = 0,
        column: int = 0,
        source_line: str | None = None,
    ) -> None:
        self.message = message
        self.filename = filename
        self.line = line
        self.column = column
        self.source_line = source_line
        super().__init__(f"{filename}:{line}:{column}: {message}")

    def render(self) -> str:
        """The message, then the offending line with a caret under the column."""
        out = str(self)
        if self.source_line is not None:
            out += "\n" + self.source_line + "\n" + " " * max(self.column - 1, 0) + "^"
        return out


class InstructionError(DockerfileSyntaxError):
    pass


class ExpansionError(BuildError):
    kind = ErrorKind.INVALID


class IgnorePatternError(BuildError):
    kind = ErrorKind.INVALID


class ContextError(BuildError):
    kind = ErrorKind.INVALID


class PlanError(BuildError):
    kind = ErrorKind.INVALID


class InvalidChange(PlanError):
    pass


class BuildCancelled(BuildError):
    kind = ErrorKind.CANCELLED


class StepFailed(BuildError):
    kind = ErrorKind.FAILED

    def __init__(
        self, message: str, *, exit_status: int, location: str = "", log_tail: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.exit_status = exit_status
        self.location = location
        self.log_tail = log_tail or []


class LayerError(BuildError):
    kind = ErrorKind.SYSTEM
    engine = True


class SandboxError(BuildError):
    kind = ErrorKind.SYSTEM
    engine = True


class CommandNotFound(SandboxError):
    kind = ErrorKind.NOT_FOUND
    reported_status = 127


class CommandNotExecutable(SandboxError):
    kind = ErrorKind.SYSTEM
    reported_status = 126


class ContainerError(BuildError):
    kind = ErrorKind.SYSTEM
    engine = True


class NetworkError(BuildError):
    kind = ErrorKind.SYSTEM
    engine = True


class VolumeError(BuildError):
    kind = ErrorKind.SYSTEM
    engine = True


class TemplateError(BuildError):
    """A ``--format`` template refused; ``str()`` is Go's own text of the error."""

    kind = ErrorKind.INVALID


class TemplateParseError(TemplateError):
    pass


class TemplateExecError(TemplateError):
    #: what the template had written before it failed (Go writes as it goes)
    partial: str = ""
