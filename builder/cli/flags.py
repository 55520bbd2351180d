"""The CLI's flag parser: commands, groups, options and arguments declared with decorators, parsed
by Docker's rules (cobra/pflag), at a start-up cost of about a millisecond (click's was 25-30).

The rules: ``-it`` bundles shorthands, ``-p8080:80`` and ``-p=8080:80`` give a shorthand its value,
``--opt=value`` and ``--opt value`` a long flag's; a boolean flag also takes ``--rm=false``; a flag
given again adds to a list (``multiple``) or replaces; ``--`` ends the flags; flags and arguments
mix, except in a group (before its subcommand) and in a command declared ``interspersed=False``
(``run``, ``create``, ``exec``: everything after the first argument is the container's). ``-h`` and
``--help`` print the command's help (``-h`` only where the command has no ``-h`` of its own).
Usage errors carry the context they happened in; ``builder.cli.main`` prints them as Docker does.
The decorator vocabulary is click's, so that a command reads as before.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence

from builder.cli.flagtypes import (
    BOOL,
    FLOAT,
    INT,
    STRING,
    UNPROCESSED,
    Abort,
    BadParameter,
    Choice,
    Exit,
    FlagError,
    IntRange,
    MissingParameter,
    NoArgsIsHelp,
    NoSuchCommand,
    NoSuchOption,
    ParamType,
    Path,
    UsageError,
    go_bool,
    param_type,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    F = TypeVar("F", bound=Callable[..., Any])  # a decorated command: only checkers see it

HELP_NAMES = ("-h", "--help")
__all__ = [  # the vocabulary: what a command module uses as ``flags.X``
    "BOOL", "FLOAT", "INT", "STRING", "UNPROCESSED", "Abort", "Argument", "BadParameter", "Choice",
    "Command", "Context", "Exit", "FlagError", "Group", "IntRange", "LazyGroup", "MissingParameter",
    "NoArgsIsHelp", "NoSuchCommand", "NoSuchOption", "Option", "ParamType", "Parameter", "Path",
    "UsageError", "argument", "command", "confirm", "echo", "go_bool", "group", "option",
    "pass_context", "pass_obj", "prompt",
]


# -- parameters ----------------------------------------------------------------------------------
class Parameter:
    #: what ``helptext`` (which imports nothing of this module) tells parameters apart by
    is_option = False

    __slots__ = ("name", "type", "required", "default", "callback", "is_eager", "expose_value",
                 "multiple", "envvar", "metavar", "help", "nargs")

    def __init__(self, name: str, *, type: Any = None, required: bool = False, default: Any = None,  # noqa: A002
                 callback: Callable[..., Any] | None = None, is_eager: bool = False,
                 expose_value: bool = True, multiple: bool = False, envvar: str | None = None,
                 metavar: str | None = None, help: str | None = None, nargs: int = 1) -> None:  # noqa: A002
        self.name, self.required, self.default = name, required, default
        self.type = param_type(type, default)
        self.callback, self.is_eager, self.expose_value = callback, is_eager, expose_value
        self.multiple, self.envvar, self.metavar, self.help, self.nargs = multiple, envvar, metavar, help, nargs

    def error_hint(self) -> str:
        """How a usage error names this parameter (an option by its flags, an argument by its
        name): each kind says it."""
        raise NotImplementedError

    def convert(self, raw: Any, ctx: Context) -> Any:
        if self.multiple or self.nargs == -1:
            return tuple(self.type.convert(v, self, ctx) for v in raw)
        return self.type.convert(raw, self, ctx)


class Option(Parameter):
    is_option = True

    __slots__ = ("opts", "secondary_opts", "is_flag", "flag_value", "hidden", "show_default")

    def __init__(self, decls: Sequence[str], *, is_flag: bool | None = None, flag_value: Any = None,
                 hidden: bool = False, show_default: bool | None = None, **kw: Any) -> None:
        opts: list[str] = []
        secondary: list[str] = []
        name = None
        for d in decls:
            if not d.startswith("-"):
                name = d
                continue
            first, slash, second = d.partition("/")
            opts.append(first)
            if slash:
                secondary.append(second)
        if name is None:
            longs = [o for o in opts if o.startswith("--")] or opts
            name = longs[0].lstrip("-").replace("-", "_").lower()
        self.opts, self.secondary_opts = opts, secondary
        self.is_flag = bool(secondary) or bool(is_flag)
        self.flag_value = True if self.is_flag and flag_value is None else flag_value
        self.hidden, self.show_default = hidden, show_default
        if self.is_flag and kw.get("default") is None:
            kw["default"] = False
        if self.is_flag and kw.get("type") is None:
            kw["type"] = bool
        super().__init__(name, **kw)

    def error_hint(self) -> str:
        return " / ".join(f"'{o}'" for o in self.opts)

    def flag_name(self) -> str:
        """pflag's name of the flag in its errors: ``-a, --all`` or ``--rm``."""
        shorts = [o for o in self.opts if not o.startswith("--")]
        longs = [o for o in self.opts if o.startswith("--")]
        return ", ".join(shorts[:1] + longs[:1])

    @property
    def takes_value(self) -> bool:
        return not self.is_flag and self.flag_value is None


class Argument(Parameter):
    __slots__ = ()

    def __init__(self, name: str, *, required: bool | None = None, **kw: Any) -> None:
        nargs = kw.get("nargs", 1)
        if required is None:
            required = kw.get("default") is None and nargs > 0
        super().__init__(name, required=required, **kw)

    def human(self) -> str:
        text = self.metavar or self.name.upper()
        if self.nargs == -1:
            text += "..."
        return text if self.required else f"[{text}]"

    def error_hint(self) -> str:
        return f"'{self.metavar or self.name.upper()}{'...' if self.nargs == -1 else ''}'"


# -- the context ---------------------------------------------------------------------------------
class Context:
    """One command's invocation: its parsed values, the object the group made, its parent."""

    def __init__(self, command: Command, *, info_name: str, parent: Context | None = None,
                 obj: Any = None) -> None:
        self.command, self.info_name, self.parent = command, info_name, parent
        self.obj: Any = obj if obj is not None or parent is None else parent.obj
        self.meta: dict[str, Any] = parent.meta if parent is not None else {}
        self.params: dict[str, Any] = {}
        self.args: list[str] = []

    @property
    def command_path(self) -> str:
        return f"{self.parent.command_path} {self.info_name}" if self.parent else self.info_name

    def exit(self, code: int = 0) -> None:
        raise Exit(code)

    def get_help(self) -> str:
        from builder.cli import helptext

        return helptext.render(self)


_stack: list[Context] = []


def get_current_context() -> Context:
    return _stack[-1]


# -- commands ------------------------------------------------------------------------------------
class Command:
    """A command: its parameters, its callback, and how it parses (*interspersed*) and fails
    (*usage_status*: ``run``/``create`` say 125 for every usage error, as Docker's)."""

    is_group = False

    def __init__(self, name: str, callback: Callable[..., Any] | None = None, *,
                 params: list[Parameter] | None = None, help: str | None = None,  # noqa: A002
                 hidden: bool = False, interspersed: bool = True, usage_status: int = 1) -> None:
        self.name, self.callback, self.params, self.help = name, callback, params or [], help
        self.hidden, self.interspersed, self.usage_status = hidden, interspersed, usage_status

    @property
    def short_help(self) -> str:
        first = (self.help or "").strip().split("\n\n")[0]
        return " ".join(first.split())

    def main(self, args: Sequence[str], prog_name: str) -> None:
        ctx = Context(self, info_name=prog_name)
        self.run(ctx, list(args))

    def run(self, ctx: Context, args: list[str]) -> None:
        with _invoking(ctx):
            self.parse_args(ctx, args)
            self.invoke(ctx)

    def invoke(self, ctx: Context) -> Any:
        """The callback with the parsed values (inside ``run``, which makes *ctx* current)."""
        return None if self.callback is None else self.callback(**ctx.params)

    # parsing
    def help_names(self) -> tuple[str, ...]:
        taken = {o for p in self.params if isinstance(p, Option) for o in (*p.opts, *p.secondary_opts)}
        return tuple(n for n in HELP_NAMES if n not in taken)

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        given, order, rest, wants_help = _parse(self, ctx, args)
        if wants_help:
            echo(ctx.get_help())
            raise Exit(0)
        self._process(ctx, given, order, rest)
        return ctx.args

    def _process(self, ctx: Context, given: dict[str, Any], order: list[str], rest: list[str]) -> None:
        args_params = [p for p in self.params if isinstance(p, Argument)]
        ctx.args = _assign(args_params, rest, given, ctx)
        seen = {n: i for i, n in enumerate(order)}
        params = sorted(self.params, key=lambda p: (not p.is_eager, seen.get(p.name, len(seen))))
        for p in params:
            if p.name in given:
                value = p.convert(given[p.name], ctx)
            elif p.envvar and os.environ.get(p.envvar):
                value = p.convert(os.environ[p.envvar], ctx)
            elif p.required:
                raise MissingParameter("", ctx, p)
            elif p.multiple or p.nargs == -1:
                value = tuple(p.default or ())
            else:
                value = p.default
            if p.callback is not None:
                try:
                    value = p.callback(ctx, p, value)
                except BadParameter as e:
                    e.ctx, e.param = e.ctx or ctx, e.param or p
                    raise
            if p.expose_value:
                ctx.params[p.name] = value


def _parse(cmd: Command, ctx: Context, args: list[str]) -> tuple[dict[str, Any], list[str], list[str], bool]:
    """pflag's reading of *args*: the flags' raw values by parameter name (a list for a
    ``multiple`` one), the order they came in, the positional words, and whether help was asked."""
    longs: dict[str, Option] = {}
    shorts: dict[str, Option] = {}
    for q in cmd.params:
        if isinstance(q, Option):
            for o in (*q.opts, *q.secondary_opts):
                (longs if o.startswith("--") else shorts)[o] = q
    help_names = cmd.help_names()
    given: dict[str, Any] = {}
    order: list[str] = []
    rest: list[str] = []
    wants_help = False

    def put(p: Option, value: Any) -> None:
        order.append(p.name)
        if p.multiple:
            given.setdefault(p.name, []).append(value)
        else:
            given[p.name] = value

    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if a == "--":
            rest += args[i:]
            break
        if a.startswith("--"):
            name, eq, value = a.partition("=")
            if name in help_names and not eq:
                wants_help = True
                continue
            p = longs.get(name)
            if p is None:
                raise NoSuchOption(name, a, ctx)
            if p.is_flag:
                on = go_bool(p.flag_name(), value, ctx) if eq else True
                put(p, on if name not in p.secondary_opts else not on)
            elif eq or p.takes_value:
                if not eq and i >= len(args):
                    raise FlagError(f"flag needs an argument: {name}", ctx)
                if not eq:
                    value, i = args[i], i + 1
                put(p, value)
            else:
                put(p, p.flag_value)
        elif a.startswith("-") and len(a) > 1:
            j = 1
            while j < len(a):
                flag = "-" + a[j]
                p = shorts.get(flag)
                tail = a[j + 1:]
                if p is None:
                    if flag in help_names:
                        wants_help, j = True, j + 1
                        continue
                    raise NoSuchOption(flag, "-" + a[j:], ctx)
                if p.is_flag or not p.takes_value:
                    if tail.startswith("="):
                        put(p, go_bool(p.flag_name(), tail[1:], ctx) if p.is_flag else tail[1:])
                        break
                    put(p, p.flag_value)
                    j += 1
                    continue
                value = tail.removeprefix("=")
                if not tail:
                    if i >= len(args):
                        raise FlagError(f"flag needs an argument: {a[j]!r} in {flag}", ctx)
                    value, i = args[i], i + 1
                put(p, value)
                break
        else:
            rest.append(a)
            if not cmd.interspersed:
                rest += args[i:]
                break
    return given, order, rest, wants_help


def _assign(params: list[Argument], rest: list[str], given: dict[str, Any], ctx: Context) -> list[str]:
    """Positional words to arguments, left to right; a ``nargs=-1`` one takes what the ones after
    it leave. Returns what is left over (a group's subcommand and its words)."""
    words = list(rest)
    for i, p in enumerate(params):
        if p.nargs == -1:
            after = sum(1 for q in params[i + 1:] if q.required)
            take = max(0, len(words) - after)
            if take:
                given[p.name] = words[:take]
            words = words[take:]
        elif words:
            given[p.name] = words.pop(0)
    return words


class _invoking:  # noqa: N801 - a context manager used as a statement
    __slots__ = ("ctx",)

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def __enter__(self) -> None:
        _stack.append(self.ctx)

    def __exit__(self, kind: Any, e: BaseException | None, tb: Any) -> None:
        _stack.pop()
        if isinstance(e, UsageError) and e.ctx is None:
            e.ctx = self.ctx


class Group(Command):
    """A command of commands: its options come before the subcommand's name."""

    is_group = True

    def __init__(self, name: str, callback: Callable[..., Any] | None = None, **kw: Any) -> None:
        kw["interspersed"] = False
        super().__init__(name, callback, **kw)
        self.commands: dict[str, Command] = {}

    def add_command(self, cmd: Command, name: str | None = None) -> None:
        self.commands[name or cmd.name] = cmd

    def list_commands(self, ctx: Context) -> list[str]:
        return sorted(self.commands)

    def get_command(self, ctx: Context, name: str) -> Command | None:
        return self.commands.get(name)

    def command(self, name: str | None = None, **kw: Any) -> Callable[[Callable[..., Any]], Command]:
        def decorator(f: Callable[..., Any]) -> Command:
            cmd = command(name, **kw)(f)
            self.add_command(cmd)
            return cmd

        return decorator

    def run(self, ctx: Context, args: list[str]) -> None:
        with _invoking(ctx):
            if not args:
                raise NoArgsIsHelp("", ctx)
            rest = self.parse_args(ctx, args)
            if not rest:
                raise NoArgsIsHelp("", ctx)
            name, *sub_args = rest
            sub = self.get_command(ctx, name)
            if sub is None:
                raise NoSuchCommand(name, ctx)
            self.invoke(ctx)
        sub.run(Context(sub, info_name=name, parent=ctx), sub_args)

    def _process(self, ctx: Context, given: dict[str, Any], order: list[str], rest: list[str]) -> None:
        super()._process(ctx, given, order, [])
        ctx.args = rest


class LazyGroup(Group):
    """A group whose subcommands are ``"module:attribute"`` names, imported on first use."""

    def __init__(self, name: str, callback: Callable[..., Any] | None = None, *,
                 lazy: dict[str, str], **kw: Any) -> None:
        super().__init__(name, callback, **kw)
        self.lazy = lazy

    def list_commands(self, ctx: Context) -> list[str]:
        return sorted(set(self.commands) | set(self.lazy))

    def get_command(self, ctx: Context, name: str) -> Command | None:
        if name in self.lazy:
            module_name, attr = self.lazy[name].split(":")
            cmd = getattr(importlib.import_module(module_name), attr)
            assert isinstance(cmd, Command)
            return cmd
        return super().get_command(ctx, name)


# -- decorators ----------------------------------------------------------------------------------
def _params_of(f: Callable[..., Any]) -> list[Parameter]:
    params: list[Parameter] = f.__dict__.setdefault("__cli_params__", [])
    return params


def _name_of(f: Callable[..., Any]) -> str:
    name = f.__name__.lower()
    for suffix in ("_command", "_cmd", "_group", "_grp"):
        name = name.removesuffix(suffix)
    return name.strip("_").replace("_", "-")


def command(name: str | None = None, cls: type[Command] | None = None,
            **kw: Any) -> Callable[[Callable[..., Any]], Command]:
    def decorator(f: Callable[..., Any]) -> Command:
        params = list(reversed(_params_of(f)))
        return (cls or Command)(name or _name_of(f), f, params=params, help=f.__doc__, **kw)

    return decorator


def group(name: str | None = None, cls: type[Group] | None = None,
          **kw: Any) -> Callable[[Callable[..., Any]], Group]:
    def decorator(f: Callable[..., Any]) -> Group:
        params = list(reversed(_params_of(f)))
        return (cls or Group)(name or _name_of(f), f, params=params, help=f.__doc__, **kw)

    return decorator


def option(*decls: str, **kw: Any) -> Callable[[F], F]:
    def decorator(f: F) -> F:
        _params_of(f).append(Option(decls, **kw))
        return f

    return decorator


def argument(name: str, **kw: Any) -> Callable[[F], F]:
    def decorator(f: F) -> F:
        _params_of(f).append(Argument(name, **kw))
        return f

    return decorator


def _passing(f: Callable[..., Any], first: Callable[[Context], Any]) -> Callable[..., Any]:
    def new_func(*args: Any, **kw: Any) -> Any:
        return f(first(get_current_context()), *args, **kw)

    new_func.__name__, new_func.__doc__ = f.__name__, f.__doc__
    new_func.__dict__.update(f.__dict__)
    return new_func


def pass_obj(f: F) -> F:
    """The callback's first argument is the object the top group made (``Globals``)."""
    return _passing(f, lambda ctx: ctx.obj)  # type: ignore[return-value]


def pass_context(f: F) -> F:
    return _passing(f, lambda ctx: ctx)  # type: ignore[return-value]


# -- terminal ------------------------------------------------------------------------------------
def echo(message: Any = None, file: Any = None, nl: bool = True, err: bool = False) -> None:
    """Write *message* and a newline to stdout (stderr with *err*), flushed at once so that the
    two streams interleave as written."""
    out = file if file is not None else (sys.stderr if err else sys.stdout)
    if out is None:
        return
    if isinstance(message, (bytes, bytearray)):
        out.flush()
        out.buffer.write(bytes(message) + (b"\n" if nl else b""))
    else:
        out.write(("" if message is None else str(message)) + ("\n" if nl else ""))
    out.flush()


def _read_line(text: str, hide: bool = False) -> str:
    echo(text, nl=False)
    try:
        if hide:
            import getpass

            return getpass.getpass("")
        return input()
    except (EOFError, KeyboardInterrupt):
        echo()
        raise Abort() from None


def confirm(text: str, default: bool = False, abort: bool = False) -> bool:
    """``text [y/N]: ``; y/yes goes on, n/no or an empty answer takes *default*."""
    while True:
        answer = _read_line(f"{text} [{'Y/n' if default else 'y/N'}]: ").strip().lower()
        if answer in ("y", "yes", "n", "no", ""):
            break
        echo("Error: invalid input", err=True)
    yes = default if not answer else answer in ("y", "yes")
    if abort and not yes:
        raise Abort()
    return yes


def prompt(text: str, hide_input: bool = False) -> str:
    """``text: `` then a line of input, asked again while empty."""
    while True:
        value = _read_line(f"{text}: ", hide=hide_input)
        if value:
            return value
