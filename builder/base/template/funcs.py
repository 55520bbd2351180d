"""The functions a ``--format`` template may call: Go's builtins (``and or not len index slice
print printf println eq ne lt le gt ge html js urlquery``) and Docker's (``json split join title
lower upper pad truncate``, docker/cli ``templates/templates.go``), each with Go's parameter types
so that a wrong argument fails as Go says; ``HEADER_FUNCS`` are Docker's stand-ins that keep a
table's header text as it is.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Sequence

from builder.base.template.values import (
    MISSING,
    JsonNumber,
    NilMap,
    NilSlice,
    go_type,
    sprint,
    sprintf,
    sprintln,
)
from builder.base.values import frozen

TYPE_CHECKING = False  # not ``typing``'s: a hot path loads no ``typing`` (~5 ms)
if TYPE_CHECKING:
    from typing import Any


class FuncError(Exception):
    """A function refused its arguments: Go's ``error calling NAME: …``."""


@frozen
class Function:
    """A callable with Go's parameter kinds: ``value`` (a ``reflect.Value``: anything, even a
    missing value), ``any`` (``interface{}``: a missing value arrives as nil), ``string``,
    ``int``, ``strings`` (``[]string``); *variadic* is the kind of ``...`` arguments."""

    params: tuple[str, ...]
    variadic: str | None
    call: Callable[..., Any]
    lazy: bool = False  # and/or: arguments evaluated one at a time, as Go 1.18+


def truth(v: Any) -> bool:
    """Go's ``isTrue``: the zero value of its type is false."""
    if v is MISSING or v is None:
        return False
    if isinstance(v, (bool, int, float)):
        return bool(v)
    if isinstance(v, (str, list, tuple, dict)):
        return len(v) > 0
    return True


def _len(v: Any) -> int:
    if isinstance(v, str):
        return len(v.encode("utf-8", "surrogateescape"))
    if isinstance(v, (list, tuple, dict)):
        return len(v)
    if v is None or v is MISSING:
        raise FuncError("len of nil pointer")
    raise FuncError(f"len of type {go_type(v)}")


def _int_index(x: Any, size: int, *, what: str = "index", cap: int | None = None) -> int:
    if x is MISSING or x is None:
        raise FuncError(f"cannot {what} slice/array with nil")
    if isinstance(x, bool) or not isinstance(x, int):
        raise FuncError(f"cannot {what} slice/array with type {go_type(x)}")
    limit = size if cap is None else cap
    if x < 0 or x > limit or (cap is None and x == size):
        raise FuncError(f"{what} out of range: {x}")
    return x


def _index(item: Any, *indexes: Any) -> Any:
    if item is MISSING or item is None:
        raise FuncError("index of untyped nil")
    for x in indexes:
        if item is None or item is MISSING:
            raise FuncError("index of nil pointer")
        if isinstance(item, dict):
            if x is MISSING or x is None:
                raise FuncError("value is nil; should be of type string")
            if not isinstance(x, str):
                raise FuncError(f"value has type {go_type(x)}; should be string")
            item = item.get(x, MISSING)
        elif isinstance(item, (list, tuple)):
            item = item[_int_index(x, len(item))]
        elif isinstance(item, str):
            data = item.encode("utf-8", "surrogateescape")
            item = data[_int_index(x, len(data))]
        else:
            raise FuncError(f"can't index item of type {go_type(item)}")
    return item


def _slice(item: Any, *indexes: Any) -> Any:
    if item is MISSING or item is None:
        raise FuncError("slice of untyped nil")
    if len(indexes) > 3:
        raise FuncError(f"too many slice indexes: {len(indexes)}")
    if isinstance(item, str):
        if len(indexes) == 3:
            raise FuncError("cannot 3-index slice a string")
        data = item.encode("utf-8", "surrogateescape")
        size = len(data)
    elif isinstance(item, (list, tuple)):
        size = len(item)
    else:
        raise FuncError(f"can't slice item of type {go_type(item)}")
    bounds = [0, size]
    for i, x in enumerate(indexes[:2]):
        bounds[i] = _int_index(x, size, what="slice", cap=size)
    if bounds[0] > bounds[1]:
        raise FuncError(f"invalid slice index: {bounds[0]} > {bounds[1]}")
    if isinstance(item, str):
        return data[bounds[0]:bounds[1]].decode("utf-8", "surrogateescape")
    return list(item[bounds[0]:bounds[1]])


# -- comparisons: Go's basicKind rules ---------------------------------------------------------
def _kind(v: Any) -> str:
    if v is MISSING or v is None:
        return "invalid"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    return "other"


def _eq(a: Any, *others: Any) -> bool:
    if not others:
        raise FuncError("missing argument for comparison")
    ka = _kind(a)
    for b in others:
        kb = _kind(b)
        if ka != kb:
            if ka != "invalid" and kb != "invalid":
                raise FuncError("incompatible types for comparison")
            continue
        if ka == "other":
            if isinstance(a, (list, tuple, dict)) or isinstance(b, (list, tuple, dict)):
                raise FuncError(f"non-comparable type {sprint([b])[1:-1]}: {go_type(b)}")
        if ka == "invalid" or a == b:
            return True
    return False


def _ne(a: Any, b: Any) -> bool:
    return not _eq(a, b)


def _lt(a: Any, b: Any) -> bool:
    ka, kb = _kind(a), _kind(b)
    if ka in ("invalid", "other") or kb in ("invalid", "other"):
        raise FuncError("invalid type for comparison")
    if ka != kb:
        raise FuncError("incompatible types for comparison")
    if ka == "bool":
        raise FuncError("invalid type for comparison")
    return bool(a < b)


def _le(a: Any, b: Any) -> bool:
    return _lt(a, b) or _eq(a, b)


def _gt(a: Any, b: Any) -> bool:
    return not _le(a, b)


def _ge(a: Any, b: Any) -> bool:
    return not _lt(a, b)


# -- escapers ----------------------------------------------------------------------------------
def _eval_args(args: Sequence[Any]) -> str:
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return sprint(args)


def _html(*args: Any) -> str:
    s = _eval_args(args)
    for a, b in (("&", "&amp;"), ("'", "&#39;"), ('"', "&#34;"), ("<", "&lt;"), (">", "&gt;"), ("\0", "\ufffd")):
        s = s.replace(a, b)
    return s


def _js(*args: Any) -> str:
    out = []
    for ch in _eval_args(args):
        if ch in "\\'\"":
            out.append("\\" + ch)
        elif ch in "<>&=":
            out.append(f"\\u{ord(ch):04X}")
        elif ord(ch) < 0x20 or (ord(ch) > 0x7E and not ch.isprintable()):
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return "".join(out)


def _urlquery(*args: Any) -> str:
    return urllib.parse.quote_plus(_eval_args(args), safe="-_.~")


# -- Docker's functions ------------------------------------------------------------------------
def go_json(v: Any) -> str:
    """Docker's ``json``: Go's encoding/json, HTML left unescaped, no trailing newline."""
    if v is MISSING or isinstance(v, (NilSlice, NilMap)):
        return "null"
    if isinstance(v, dict) and any(callable(x) for x in v.values()):
        v = {k: x for k, x in v.items() if not callable(x)}  # a row's methods are no JSON fields
    text = json.dumps(_numbers(v), ensure_ascii=False, separators=(",", ":"))
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _numbers(v: Any) -> Any:
    """json.Number values back to numbers (encoding/json writes them as such), nil slices and
    maps to null."""
    if isinstance(v, JsonNumber):
        return json.loads(v)
    if isinstance(v, (NilSlice, NilMap)):
        return None
    if isinstance(v, dict):
        return {k: _numbers(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_numbers(x) for x in v]
    return v


def _split(s: str, sep: str) -> list[str]:
    return list(s) if sep == "" else s.split(sep)


def _title(s: str) -> str:
    """``strings.Title``: the first letter of each word upper-cased."""
    out, prev_sep = [], True
    for ch in s:
        out.append(ch.upper() if prev_sep else ch)
        prev_sep = not (ch.isalnum() or ch == "_") if ord(ch) < 0x80 else ch.isspace()
    return "".join(out)


def _pad(s: str, prefix: int, suffix: int) -> str:
    return s if s == "" else " " * prefix + s + " " * suffix


def _truncate(s: str, length: int) -> str:
    data = s.encode("utf-8", "surrogateescape")
    if len(data) < length:
        return s
    return data[:length].decode("utf-8", "ignore")


def _same(v: str, *_: Any) -> str:
    return v


FUNCS: dict[str, Function] = {
    "and": Function(("value",), "value", lambda *a: a[-1], lazy=True),
    "or": Function(("value",), "value", lambda *a: a[-1], lazy=True),
    "not": Function(("value",), None, lambda v: not truth(v)),
    "len": Function(("value",), None, _len),
    "index": Function(("value",), "value", _index),
    "slice": Function(("value",), "value", _slice),
    "print": Function((), "any", lambda *a: sprint(a)),
    "printf": Function(("string",), "any", lambda f, *a: sprintf(f, a)),
    "println": Function((), "any", lambda *a: sprintln(a)),
    "eq": Function(("value",), "value", _eq),
    "ne": Function(("value", "value"), None, _ne),
    "lt": Function(("value", "value"), None, _lt),
    "le": Function(("value", "value"), None, _le),
    "gt": Function(("value", "value"), None, _gt),
    "ge": Function(("value", "value"), None, _ge),
    "html": Function((), "any", _html),
    "js": Function((), "any", _js),
    "urlquery": Function((), "any", _urlquery),
    "json": Function(("any",), None, go_json),
    "split": Function(("string", "string"), None, _split),
    "join": Function(("strings", "string"), None, lambda xs, sep: sep.join(xs)),
    "title": Function(("string",), None, _title),
    "lower": Function(("string",), None, str.lower),
    "upper": Function(("string",), None, str.upper),
    "pad": Function(("string", "int", "int"), None, _pad),
    "truncate": Function(("string", "int"), None, _truncate),
}

#: Docker's ``HeaderFunctions``: a table header keeps its text (``pad`` is not replaced)
HEADER_FUNCS: dict[str, Function] = FUNCS | {
    "json": Function(("string",), None, _same),
    "split": Function(("string", "string"), None, _same),
    "join": Function(("string", "string"), None, _same),
    "title": Function(("string",), None, _same),
    "lower": Function(("string",), None, _same),
    "upper": Function(("string",), None, _same),
    "truncate": Function(("string", "int"), None, _same),
}

NAMES = frozenset(FUNCS)
