"""Go's view of the values a template sees (JSON-shaped Python values) and how ``fmt`` prints
them: ``<no value>`` for a missing one, ``<nil>``, ``[a b]``, ``map[k:v]`` with sorted keys,
floats as ``%v`` of a float64 (``1e+06``), and the verbs of ``printf``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence

TYPE_CHECKING = False  # not ``typing``'s: a hot path loads no ``typing`` (~5 ms)
if TYPE_CHECKING:
    from typing import Any


class Missing:
    """Go's invalid ``reflect.Value``: a key a map lacks (printed ``<no value>``)."""

    _instance: Missing | None = None

    def __new__(cls) -> Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<no value>"


MISSING = Missing()


class ConstInt(int):
    """An int written in the template (Go's ``int``, never Docker's ``json.Number``)."""


class ConstFloat(float):
    pass


class ConstStr(str):
    pass


class JsonNumber(str):
    """A number as Docker's inspect fallback decodes JSON (``UseNumber``): Go's ``json.Number``,
    a string type, so it compares, measures and prints as its text."""


def json_view(value: Any) -> Any:
    """*value* as ``encoding/json`` decodes it into ``interface{}`` with ``UseNumber``."""
    if isinstance(value, dict):
        return {k: json_view(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_view(v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return JsonNumber(json.dumps(value))
    return value


class GoStruct(dict[str, "Any"]):  # ("Any" quoted: only checkers import it)
    """A JSON object that is a Go struct in Docker's typed value: printed ``{v1 v2}``, in the
    struct's field order when it is known (``schema``: the fields with their zero values, for
    those the JSON omits when empty), else in the JSON's."""

    schema: tuple[tuple[str, Any], ...] = ()
    pointer = False  # a *T field: fmt prints it &{…} (a template action prints what it points to)

    def fields(self) -> list[tuple[str, Any]]:
        """Name and value of each field, in the struct's order."""
        if not self.schema:
            return list(self.items())
        known = {name for name, _ in self.schema}
        return [(name, self[name] if name in self else _zero(zero)) for name, zero in self.schema] + [
            (k, v) for k, v in self.items() if k not in known]


class GoTime(str):
    """A ``time.Time`` field of Docker's structs (JSON: RFC 3339): printed as Go's
    ``Time.String()``, ``2006-01-02 15:04:05.999999999 -0700 MST``."""

    def go_text(self) -> str:
        m = re.fullmatch(r"(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", self)
        if not m:
            return str(self)
        frac = (m.group(3) or "").rstrip("0").rstrip(".")
        zone = "+0000 UTC" if m.group(4) == "Z" else f"{m.group(4).replace(':', '')} {m.group(4).replace(':', '')}"
        return f"{m.group(1)} {m.group(2)}{frac} {zone}"


_TIMES = frozenset({"LastTagTime"})
_POINTERS = frozenset({"State", "Config", "ContainerConfig", "HostConfig", "NetworkSettings", "Health",
                       "Healthcheck"})

#: the field order of Docker's structs that templates print whole, with the zero value of each
#: ("[]": a nil slice, "map": a nil map), for the fields its JSON omits when empty
_CONFIG = (("Hostname", ""), ("Domainname", ""), ("User", ""), ("AttachStdin", False), ("AttachStdout", False),
           ("AttachStderr", False), ("ExposedPorts", "map"), ("Tty", False), ("OpenStdin", False),
           ("StdinOnce", False), ("Env", "[]"), ("Cmd", "[]"), ("Healthcheck", None), ("ArgsEscaped", False),
           ("Image", ""), ("Volumes", "map"), ("WorkingDir", ""), ("Entrypoint", "[]"), ("NetworkDisabled", False),
           ("MacAddress", ""), ("OnBuild", "[]"), ("Labels", "map"), ("StopSignal", ""), ("StopTimeout", None),
           ("Shell", "[]"))
_SCHEMAS: dict[str, tuple[tuple[str, Any], ...]] = {
    "Config": _CONFIG, "ContainerConfig": _CONFIG,
    "State": (("Status", ""), ("Running", False), ("Paused", False), ("Restarting", False), ("OOMKilled", False),
              ("Dead", False), ("Pid", 0), ("ExitCode", 0), ("Error", ""), ("StartedAt", ""), ("FinishedAt", ""),
              ("Health", None)),
    "RootFS": (("Type", ""), ("Layers", "[]"), ("BaseLayer", "")),
}


def _zero(zero: Any) -> Any:
    return NilSlice() if zero == "[]" else NilMap() if zero == "map" else zero


class NilSlice(list["Any"]):
    """A Go nil slice: printed ``[]``, ``json`` gives ``null``."""


class NilMap(dict[str, "Any"]):
    """A Go nil map: printed ``map[]``, ``json`` gives ``null``."""


def go_type(v: Any, *, raw: bool = False) -> str:
    """The Go type name of *v* in error texts; *raw*: as Docker's inspect fallback decodes JSON
    (its arrays are ``[]interface {}``)."""
    if v is None or v is MISSING:
        return "<nil>"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, JsonNumber):
        return "json.Number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (list, tuple)):
        return "[]string" if v and all(isinstance(x, str) for x in v) and not raw else "[]interface {}"
    if isinstance(v, dict):
        return "map[string]interface {}"
    if callable(v):
        return "func"
    return type(v).__name__


def go_float(f: float, verb: str = "g", prec: int = -1) -> str:
    """``strconv.FormatFloat(f, 'g', -1, 64)`` (what ``%v`` prints), or %e/%f/%g with a precision."""
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if math.isnan(f):
        return "NaN"
    if verb == "f":
        return f"{f:.{6 if prec < 0 else prec}f}"
    if verb in "eE":
        text = f"{f:.{6 if prec < 0 else prec}e}"
        mant, _, power = text.partition("e")
        return f"{mant}{verb}{power[0]}{power[1:].lstrip('0').rjust(2, '0')}"
    if prec >= 0:
        text = f"{f:.{max(prec, 1)}g}"
        if "e" in text:
            mant, _, power = text.partition("e")
            return f"{mant}e{power[0]}{power[1:].lstrip('0').rjust(2, '0')}"
        return text
    # the shortest digits that read back, then Go's choice of %e (exponent < -4 or >= 6)
    if f == 0:
        return "-0" if math.copysign(1, f) < 0 else "0"
    r = repr(f)
    mant, _, exp_text = r.partition("e")
    neg = mant.startswith("-")
    mant = mant.lstrip("-")
    int_part, _, frac = mant.partition(".")
    if frac == "0":
        frac = ""
    digits = (int_part + frac).lstrip("0")
    exp = (int(exp_text) if exp_text else 0) + len(int_part.lstrip("0") or "") - 1
    if not int_part.strip("0"):
        lead = len(frac) - len(frac.lstrip("0"))
        exp = (int(exp_text) if exp_text else 0) - lead - 1
    digits = digits.rstrip("0") or "0"
    if exp < -4 or exp >= 6:
        body = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        out = f"{body}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    elif exp < 0:
        out = "0." + "0" * (-exp - 1) + digits
    elif len(digits) <= exp + 1:
        out = digits + "0" * (exp + 1 - len(digits))
    else:
        out = digits[:exp + 1] + "." + digits[exp + 1:]
    return "-" + out if neg else out


def sprint_value(v: Any, *, top: bool = True) -> str:
    """``fmt.Sprint`` of one value (``%v``)."""
    if v is MISSING:
        return "<no value>" if top else "<nil>"
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return go_float(v)
    if isinstance(v, GoTime):
        return v.go_text()
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(sprint_value(x, top=False) for x in v) + "]"
    if isinstance(v, GoStruct):
        amp = "&" if v.pointer and not top else ""
        return amp + "{" + " ".join(sprint_value(x, top=False) for _, x in v.fields()) + "}"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{sprint_value(v[k], top=False)}" for k in sorted(v)) + "]"
    return str(v)


def typed(value: Any, maps: frozenset[str], nils: Mapping[str, str] | None = None, *, in_map: bool = False,
          name: str = "") -> Any:
    """*value* with each JSON object that is no Go map (reached through a field named in *maps*)
    made a ``GoStruct``, so that it prints as Go prints a struct, and each null of a field named
    in *nils* the nil slice (``"[]"``) or map (``"map"``) it is there."""
    nils = nils or {}
    if isinstance(value, dict):
        items = {k: typed(v, maps, nils, in_map=not in_map and k in maps, name=k) for k, v in value.items()}
        if in_map:
            return items
        for k, v in items.items():
            if v is None and k in nils:
                items[k] = _zero(nils[k])
        out = GoStruct(items)
        out.schema = _SCHEMAS.get(name, ())
        out.pointer = name in _POINTERS
        return out
    if isinstance(value, list):
        return [typed(v, maps, nils) for v in value]
    if isinstance(value, str) and name in _TIMES:
        return GoTime(value)
    return value


def sprint(args: Sequence[Any]) -> str:
    """``fmt.Sprint``: spaces between operands when neither side is a string."""
    out: list[str] = []
    for i, a in enumerate(args):
        if i > 0 and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(sprint_value(a, top=False))
    return "".join(out)


def sprintln(args: Sequence[Any]) -> str:
    return " ".join(sprint_value(a, top=False) for a in args) + "\n"


def go_quote(s: str) -> str:
    """``strconv.Quote``: Go's escapes, printable non-ASCII kept."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "\a\b\f\n\r\t\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                        "\v": "\\v"}[ch])
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif not ch.isprintable() and o > 0x7F:
            out.append(f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


# -- printf ------------------------------------------------------------------------------------
def _bad(verb: str, v: Any) -> str:
    if v is None or v is MISSING:
        return f"%!{verb}(<nil>)"
    return f"%!{verb}({go_type(v)}={sprint_value(v, top=False)})"


def _pad(text: str, width: int | None, minus: bool, zero: bool) -> str:
    if width is None or len(text) >= width:
        return text
    if minus:
        return text + " " * (width - len(text))
    if zero and text[:1] in "+-" and text[1:].replace(".", "").isalnum():
        return text[0] + text[1:].rjust(width - 1, "0")
    if zero:
        return text.rjust(width, "0")
    return text.rjust(width)


def _format_one(verb: str, v: Any, flags: str, width: int | None, prec: int | None) -> str:
    plus, minus, sharp, space, zero = ("+" in flags, "-" in flags, "#" in flags, " " in flags, "0" in flags)
    if isinstance(v, (list, tuple)) and verb != "T":
        # Go applies the verb to each element
        return "[" + " ".join(_format_one(verb, x, flags, width, prec) for x in v) + "]"
    if verb == "v" and plus:
        # %+v names a struct's fields and signs no number
        flags = flags.replace("+", "")
        if isinstance(v, GoStruct):
            return ("&" if v.pointer else "") + "{" + " ".join(f"{k}:" + _format_one("v", x, flags + "+", width, prec).lstrip()
                                  if isinstance(x, GoStruct) else f"{k}:" + _format_one("v", x, flags, width, prec)
                                  for k, x in v.fields()) + "}"
        return _format_one("v", v, flags, width, prec)
    if isinstance(v, GoStruct) and verb != "T":
        return ("&" if v.pointer else "") + "{" + " ".join((f"{k}:" if plus else "") + _format_one(verb, x, flags, width, prec)
                              for k, x in v.fields()) + "}"
    if isinstance(v, dict) and verb != "T":
        return "map[" + " ".join(f"{_format_one(verb, k, flags, width, prec)}:"
                                 f"{_format_one(verb, v[k], flags, width, prec)}" for k in sorted(v)) + "]"
    if verb == "T":
        return _pad(go_type(v), width, minus, False)
    if verb == "v":
        if isinstance(v, float):
            text = go_float(v, "g", -1 if prec is None else prec)
            if plus and v >= 0:
                text = "+" + text
            return _pad(text, width, minus, zero)
        if isinstance(v, int) and not isinstance(v, bool):
            return _format_one("d", v, flags, width, prec)
        if isinstance(v, str) and sharp:
            return _pad(go_quote(v), width, minus, False)
        return _pad(sprint_value(v, top=False), width, minus, False)
    if isinstance(v, bool):
        if verb == "t":
            return _pad("true" if v else "false", width, minus, False)
        return _bad(verb, v)
    if isinstance(v, int):
        if verb in "dbxXoOc" or verb in "qU":
            if verb == "c":
                return _pad(chr(v), width, minus, False)
            if verb == "q":
                return _pad("'" + go_quote(chr(v))[1:-1].replace("'", "\\'") + "'", width, minus, False)
            if verb == "U":
                return _pad(f"U+{v:04X}", width, minus, False)
            base = {"d": "d", "b": "b", "x": "x", "X": "X", "o": "o", "O": "o"}[verb]
            digits = format(abs(v), base)
            if prec is not None:
                digits = digits.rjust(prec, "0") if prec else ("" if v == 0 else digits)
            prefix = ""
            if sharp and verb in "xX":
                prefix = "0x" if verb == "x" else "0X"
            elif sharp and verb == "o" and not digits.startswith("0"):
                prefix = "0"
            elif verb == "O":
                prefix = "0o"
            elif sharp and verb == "b":
                prefix = "0b"
            sign = "-" if v < 0 else ("+" if plus else (" " if space else ""))
            if zero and not minus and width is not None and prec is None:
                return sign + prefix + digits.rjust(width - len(sign) - len(prefix), "0")
            return _pad(sign + prefix + digits, width, minus, False)
        return _bad(verb, v)
    if isinstance(v, float):
        if verb in "eEfFgG":
            kind = verb.lower() if verb in "fF" else verb
            if kind == "G":
                text = go_float(v, "g", -1 if prec is None else prec).upper()
            else:
                text = go_float(v, kind, -1 if prec is None and kind == "g" else (6 if prec is None else prec))
            if plus and v >= 0:
                text = "+" + text
            elif space and v >= 0:
                text = " " + text
            return _pad(text, width, minus, zero)
        return _bad(verb, v)
    if isinstance(v, str):
        if prec is not None:
            v = v[:prec]
        if verb == "s":
            return _pad(v, width, minus, False)
        if verb == "q":
            return _pad(go_quote(v), width, minus, False)
        if verb in "xX":
            data = v.encode("utf-8", "surrogateescape")
            text = data.hex() if not space else " ".join(f"{b:02x}" for b in data)
            return _pad(text.upper() if verb == "X" else text, width, minus, False)
        return _bad(verb, v)
    return _bad(verb, v)


def sprintf(fmt: str, args: Sequence[Any]) -> str:
    """``fmt.Sprintf`` for the values templates hold: flags ``+-# 0``, width, ``.prec``, ``*``,
    the verbs ``v s d q t x X o O b c U e E f F g G T %``; Go's ``%!d(string=x)``,
    ``%!d(MISSING)`` and ``%!(EXTRA …)`` for what does not fit."""
    out: list[str] = []
    i, n, argi = 0, len(fmt), 0
    while i < n:
        c = fmt[i]
        if c != "%":
            j = fmt.find("%", i)
            j = n if j < 0 else j
            out.append(fmt[i:j])
            i = j
            continue
        i += 1
        flags = ""
        while i < n and fmt[i] in "+-# 0":
            flags += fmt[i]
            i += 1
        width: int | None = None
        if i < n and fmt[i] == "*":
            i += 1
            if argi < len(args) and isinstance(args[argi], int):
                width = args[argi]
                if width < 0:
                    flags += "-"
                    width = -width
            argi += 1
        else:
            start = i
            while i < n and fmt[i].isdigit():
                i += 1
            if i > start:
                width = int(fmt[start:i])
        prec: int | None = None
        if i < n and fmt[i] == ".":
            i += 1
            if i < n and fmt[i] == "*":
                i += 1
                prec = args[argi] if argi < len(args) and isinstance(args[argi], int) else None
                argi += 1
            else:
                start = i
                while i < n and fmt[i].isdigit():
                    i += 1
                prec = int(fmt[start:i] or "0")
        if i >= n:
            out.append("%!(NOVERB)")
            break
        verb = fmt[i]
        i += 1
        if verb == "%":
            out.append("%")
            continue
        if argi >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        v = args[argi]
        argi += 1
        out.append(_format_one(verb, None if v is MISSING else v, flags, width, prec))
    if argi < len(args):
        extra = ", ".join("<nil>" if a is None or a is MISSING else f"{go_type(a)}={sprint_value(a, top=False)}"
                          for a in args[argi:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)

