"""The flag parser's errors and value types (``builder.cli.flags`` re-exports them): what a
usage error carries for ``builder.cli.main`` to print as Docker does, and how a word becomes a value.

    Exit (--help, -v: leave with a code)      Abort (a declined confirmation: "Aborted.", 130)
    UsageError (its context: "See 'pybuild X --help'.")
     ├── FlagError: pflag's words, no "Error:", 125
     │    └── NoSuchOption (unknown flag: --x / unknown shorthand flag: 'z' in -z)
     ├── NoSuchCommand: 125
     ├── NoArgsIsHelp: a bare group, its help, 0
     │    (a number flag's bad value: ``invalid argument "x" for "-n, --last" flag: …``)
     └── BadParameter: "Error: Invalid value for ...", 125 for a flag's value, else the
          └── MissingParameter      command's usage_status (1; run/create 125)
"""

from __future__ import annotations

from collections.abc import Sequence

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


# -- errors --------------------------------------------------------------------------------------
class Exit(Exception):  # noqa: N818 - click's name, read by `main`
    """Leave with *code* (``--help``, ``-v``)."""

    def __init__(self, code: int = 0) -> None:
        super().__init__(code)
        self.exit_code = code


class Abort(Exception):  # noqa: N818
    """A declined confirmation, or the end of input at a prompt."""


class UsageError(Exception):
    """The command line is wrong; printed with ``See 'pybuild X --help'.``, exit 1 (or the
    command's ``usage_status``)."""

    def __init__(self, message: str, ctx: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.ctx = ctx

    def format_message(self) -> str:
        return self.message


class FlagError(UsageError):
    """A flag that does not parse (unknown, without its value, a bad boolean): pflag's words,
    printed without ``Error:``, exit 125."""


class NoSuchOption(FlagError):
    def __init__(self, option_name: str, arg: str, ctx: Any = None) -> None:
        text = (f"unknown flag: {option_name}" if option_name.startswith("--")
                else f"unknown shorthand flag: {option_name[1:]!r} in {arg}")
        super().__init__(text, ctx)
        self.option_name = option_name


class NoSuchCommand(UsageError):
    def __init__(self, command_name: str, ctx: Any) -> None:
        super().__init__(f"{ctx.command_path}: {command_name!r} is not a {ctx.command_path} command.", ctx)
        self.command_name = command_name


class NoArgsIsHelp(UsageError):
    """A bare group: its help on stdout, exit 0 (as Docker)."""


class BadParameter(UsageError):
    """A value that does not convert: ``Invalid value for '-n' / '--last': ...``."""

    def __init__(self, message: str, ctx: Any = None, param: Any = None,
                 param_hint: str | None = None) -> None:
        super().__init__(message, ctx)
        self.param = param
        self.param_hint = param_hint

    def format_message(self) -> str:
        hint = self.param_hint or (self.param.error_hint() if self.param is not None else None)
        return f"Invalid value for {hint}: {self.message}" if hint else f"Invalid value: {self.message}"


class MissingParameter(BadParameter):
    def format_message(self) -> str:
        kind = "option" if hasattr(self.param, "opts") else "argument"
        hint = self.param.error_hint() if self.param is not None else ""
        return f"Missing {kind} {hint}."


# -- value types ---------------------------------------------------------------------------------
class ParamType:
    """Turns a flag's or argument's text into its value; *name* is the help's type word."""

    name = "string"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        return value

    def fail(self, message: str, param: Any = None, ctx: Any = None) -> None:
        raise BadParameter(message, ctx, param)


class _Int(ParamType):
    name = "int"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        try:
            return int(value)
        except ValueError:
            _refuse_flag_value(param, value, "strconv.ParseInt", ctx)
            self.fail(f"{value!r} is not a valid integer.", param, ctx)


class _Float(ParamType):
    name = "float"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        try:
            return float(value)
        except ValueError:
            _refuse_flag_value(param, value, "strconv.ParseFloat", ctx)
            self.fail(f"{value!r} is not a valid float.", param, ctx)


_BOOL_WORDS = {"1": True, "true": True, "t": True, "yes": True, "y": True, "on": True,
               "0": False, "false": False, "f": False, "no": False, "n": False, "off": False}


class _Bool(ParamType):
    name = "bool"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word not in _BOOL_WORDS:
            self.fail(f"{value!r} is not a valid boolean. Recognized values: "
                      f"{', '.join(sorted(_BOOL_WORDS))}", param, ctx)
        return _BOOL_WORDS[word]


class Choice(ParamType):
    def __init__(self, choices: Sequence[str]) -> None:
        self.choices = tuple(choices)

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if value not in self.choices:
            self.fail(f"{value!r} is not one of {', '.join(map(repr, self.choices))}.", param, ctx)
        return value


class IntRange(_Int):
    def __init__(self, min: int | None = None, max: int | None = None) -> None:  # noqa: A002
        self.min, self.max = min, max

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        n = super().convert(value, param, ctx)
        if (self.min is not None and n < self.min) or (self.max is not None and n > self.max):
            lo = "" if self.min is None else f"{self.min}<="
            hi = "" if self.max is None else f"<={self.max}"
            self.fail(f"{n} is not in the range {lo}x{hi}.", param, ctx)
        return n


class Path(ParamType):
    """A path, as given (nothing checked: the command opens it and reports what fails)."""

    def __init__(self, *, file_okay: bool = True, dir_okay: bool = True) -> None:
        self.file_okay, self.dir_okay = file_okay, dir_okay


STRING = UNPROCESSED = ParamType()
INT, FLOAT, BOOL = _Int(), _Float(), _Bool()
_TYPES: dict[Any, ParamType] = {None: STRING, str: STRING, int: INT, float: FLOAT, bool: BOOL}


def param_type(t: Any, default: Any) -> ParamType:
    if isinstance(t, ParamType):
        return t
    if t is None and isinstance(default, (int, float)) and not isinstance(default, bool):
        t = type(default)
    return _TYPES[t]


def go_bool(flag: str, value: str, ctx: Any = None) -> bool:
    """pflag's ``--rm=false``: Go's ``strconv.ParseBool`` words, its error otherwise."""
    if value in _GO_TRUE or value in _GO_FALSE:
        return value in _GO_TRUE
    raise _pflag_refusal(flag, value, "strconv.ParseBool", ctx)


def _pflag_refusal(flag: str, value: Any, parser: str, ctx: Any) -> FlagError:
    """pflag's words for a flag value its Go parser refuses (exit 125, no ``Error:``)."""
    return FlagError(f'invalid argument "{value}" for "{flag}" flag: {parser}: parsing "{value}": '
                     "invalid syntax", ctx)


def _refuse_flag_value(param: Any, value: Any, parser: str, ctx: Any) -> None:
    """A number flag's bad value, as pflag says it; an argument's (no flag name) is left to
    the caller's ``BadParameter``."""
    flag_name = getattr(param, "flag_name", None)
    if flag_name is not None:
        raise _pflag_refusal(flag_name(), value, parser, ctx)
