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
"""

from __future__ import annotations


class BuildError(Exception):
    """Base of every error raised by ``builder``."""

    #: the exit status ``cli`` uses for this error
    exit_code: int = 1


class DockerfileSyntaxError(BuildError):
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
    pass


class IgnorePatternError(BuildError):
    pass


class ContextError(BuildError):
    pass


class PlanError(BuildError):
    pass


class InvalidChange(PlanError):
    pass


class BuildCancelled(BuildError):
    exit_code = 130


class StepFailed(BuildError):
    def __init__(
        self, message: str, *, exit_status: int, location: str = "", log_tail: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.exit_status = exit_status
        self.location = location
        self.log_tail = log_tail or []


class LayerError(BuildError):
    exit_code = 125


class SandboxError(BuildError):
    exit_code = 125


class CommandNotFound(SandboxError):
    exit_code = 127


class CommandNotExecutable(SandboxError):
    exit_code = 126


class ContainerError(BuildError):
    exit_code = 125


class NetworkError(BuildError):
    exit_code = 125


class VolumeError(BuildError):
    exit_code = 125


class TemplateError(BuildError):
    """A ``--format`` template refused; ``str()`` is Go's own text of the error."""


class TemplateParseError(TemplateError):
    pass


class TemplateExecError(TemplateError):
    pass
