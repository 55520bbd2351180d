"""The ``pybuild`` command line: commands (``builder.cli.flags``, Docker's flag rules) that parse flags, make one library call, render.

This package is the only place that prints, draws progress or exits. Each command group lives
in its own module and is imported only when invoked, so start-up stays lean.

Room ``builder.cli`` owns the ``pybuild`` command line: parse, one library call, render.
May import: ``builder.base``, ``builder.core``, ``builder.network``, ``builder.imagebuild``, ``builder.runtime``, ``builder.system``, ``builder.api``, ``registry``, ``grammar`` (and anything inside ``builder.cli``); never a room above.
"""

from __future__ import annotations

import _signal
import atexit
import os
import sys

import builder
from builder.base.errors import BuildError, exit_status
from builder.cli import flags
from registry.errors import RegistryError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# command name -> "module:attribute"; the module is imported only when the command runs.
COMMANDS: dict[str, str] = {
    "images": "builder.cli.images:images",
    "image": "builder.cli.images:image",
    "import": "builder.cli.images:import_",
    "tag": "builder.cli.images:tag",
    "rmi": "builder.cli.images:rmi",
    "inspect": "builder.cli.images:inspect",
    "history": "builder.cli.images:history",
    "save": "builder.cli.images:save",
    "load": "builder.cli.images:load",
    "login": "builder.cli.registry:login",
    "logout": "builder.cli.registry:logout",
    "pull": "builder.cli.registry:pull",
    "push": "builder.cli.registry:push",
    "copy": "builder.cli.registry:copy",
    "manifest": "builder.cli.registry:manifest",
    "tags": "builder.cli.registry:tags",
    "ps": "builder.cli.containers:ps",
    "attach": "builder.cli.attach:attach",
    "events": "builder.cli.events:events",
    "logs": "builder.cli.containers:logs",
    "stop": "builder.cli.containers:stop",
    "kill": "builder.cli.containers:kill",
    "start": "builder.cli.containers:start",
    "restart": "builder.cli.containers:restart",
    "rm": "builder.cli.containers:rm",
    "wait": "builder.cli.containers:wait",
    "port": "builder.cli.containers:port",
    "top": "builder.cli.containers:top",
    "rename": "builder.cli.containers:rename",
    "pause": "builder.cli.containers:pause",
    "unpause": "builder.cli.containers:unpause",
    "container": "builder.cli.containers:container",
    "stats": "builder.cli.stats:stats",
    "update": "builder.cli.stats:update",
    "run": "builder.cli.container_run:run",
    "create": "builder.cli.container_run:create",
    "exec": "builder.cli.container_run:exec_",
    "cp": "builder.cli.container_run:cp",
    "diff": "builder.cli.changes:diff",
    "export": "builder.cli.changes:export",
    "commit": "builder.cli.changes:commit",
    "dockerfile": "builder.cli.dockerfile:dockerfile",
    "network": "builder.cli.network:network",
    "cluster": "builder.cli.cluster:cluster",
    "volume": "builder.cli.volume:volume",
    "build": "builder.cli.build:build",
    "builder": "builder.cli.build:builder",
    "serve": "builder.cli.serve:serve",
    "system": "builder.cli.system:system",
    "info": "builder.cli.system:info",
    "version": "builder.cli.system:version",
}


@flags.group("pybuild", cls=flags.LazyGroup, lazy=COMMANDS)
@flags.option(
    "--root",
    type=flags.Path(file_okay=False),
    default=None,
    envvar="PYBUILD_ROOT",
    help="State root (default /var/lib/pybuild as root, ~/.local/share/pybuild otherwise).",
)
@flags.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@flags.option("-v", "--version", is_flag=True, is_eager=True, expose_value=False,
              callback=lambda ctx, _p, v: _print_version(ctx) if v else None,
              help="Print version information and quit.")
@flags.pass_context
def cli(ctx: flags.Context, root: str | None, debug: bool) -> None:
    """pybuild: build, push, pull and run OCI images without a daemon."""
    ctx.obj = Globals(root=root, debug=debug)


def _print_version(ctx: flags.Context) -> None:
    from builder.system import engine as lib

    # Docker's ``Docker version X, build Y`` line
    flags.echo(f"pybuild version {lib.version()}, build {lib.git_commit() or 'unknown'}")
    ctx.exit(0)


class Globals:
    """What every command gets through ``@flags.pass_obj``."""

    def __init__(self, *, root: str | None, debug: bool) -> None:
        self.root_path = root
        self.debug = debug
        self._state: Any = None

    @property
    def state(self) -> Any:
        """The ``builder.base.state.StateRoot``, opened on first use."""
        if self._state is None:
            from builder.base.state import StateRoot

            self._state = StateRoot.open(self.root_path)
        return self._state


def fail(message: str, code: int = 1) -> None:
    """Print ``Error: message`` on stderr and exit with *code*."""
    flags.echo(f"Error: {message}", err=True)
    sys.exit(code)


#: Docker's CLI status for a flag it cannot parse or a command it does not know
USAGE_STATUS = 125


def _usage_error(e: flags.UsageError) -> int:
    """Print a usage error as Docker's CLI does; its exit status. A flag that does not parse,
    or an unknown (sub)command, is 125 (``unknown flag: --x`` / ``See 'pybuild ps --help'.``);
    wrong arguments are 1 (``run``/``create`` say 125 for those too, as Docker)."""
    path = e.ctx.command_path if e.ctx is not None else "pybuild"
    see = f"See '{path} --help'."
    if isinstance(e, (flags.FlagError, flags.NoSuchCommand)):
        flags.echo(f"{e.format_message()}\n{see}", err=True)
        return USAGE_STATUS
    flags.echo(f"Error: {e.format_message()}\n{see}", err=True)
    if isinstance(e, flags.BadParameter) and isinstance(e.param, flags.Option):
        return USAGE_STATUS
    return e.ctx.command.usage_status if e.ctx is not None else 1


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI, turning library errors into one line and a code.

    Called with *argv* (in-process, as tests do) it returns or raises ``SystemExit`` as any
    function would; as the command itself (no *argv*) it ends the process through ``_leave``."""
    if argv is not None:
        _main(argv)
        return
    try:
        _main(sys.argv[1:])
    except SystemExit as e:
        if e.code is not None and not isinstance(e.code, int):
            raise  # a message for Python to print: its own exit
        _leave(e.code or 0)
    _leave(0)


def _leave(code: int) -> None:
    """End the command with *code*, skipping the interpreter's tear-down of every module and
    object (~15 ms, a quarter of a listing's time) when nothing is left that needs it: the
    ``atexit`` functions run (``weakref.finalize``, temporary directories), stdout and stderr are
    flushed, then ``os._exit``. A thread that is not a daemon still running (a thread pool's
    workers) gets Python's usual exit, which waits for it."""
    threading = sys.modules.get("threading")  # not imported: no thread was ever started
    if threading is not None and any(t.is_alive() and not t.daemon for t in threading.enumerate()
                                     if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away: as ``main`` treats it, not an error
        pass
    except OSError:
        code = code or 120  # Python's status when it cannot flush its standard streams
    try:
        sys.stderr.flush()
    except OSError:  # nowhere left to say it: the status above stands
        pass
    os._exit(code)


def _main(args: list[str]) -> None:
    if _signal.getsignal(_signal.SIGINT) is builder._cancelled_at_start:  # see there
        _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    debug = "--debug" in args
    try:
        if os.geteuid() != 0:  # rootless: join the user's namespace first (builder.base.rootless)
            from builder.base import rootless

            rootless.enter()
        cli.main(args, prog_name="pybuild")
    except flags.Exit as e:  # --help, -v: return, as click did, so that a caller in-process goes on
        if e.exit_code:
            sys.exit(e.exit_code)
    except flags.Abort as e:
        # Ctrl-C at a prompt is an Abort; a declined confirmation is one too
        flags.echo("cancelled" if isinstance(e.__context__, KeyboardInterrupt) else "Aborted.", err=True)
        sys.exit(130)
    except flags.NoArgsIsHelp as e:
        assert e.ctx is not None
        flags.echo(e.ctx.get_help())  # a bare `pybuild` or `pybuild image`: help, as Docker
        sys.exit(0)
    except flags.UsageError as e:
        sys.exit(_usage_error(e))
    except BuildError as e:
        if debug:
            raise
        render = getattr(e, "render", None)
        flags.echo(f"Error: {render() if render else e}", err=True)
        sys.exit(exit_status(e))  # by the error's kind: builder.base.errors.EXIT_STATUS
    except RegistryError as e:
        if debug:
            raise
        flags.echo(f"Error: {e}", err=True)
        sys.exit(exit_status(e))
    except KeyboardInterrupt:
        flags.echo("cancelled", err=True)
        sys.exit(130)
    except BrokenPipeError:
        os._exit(0)
