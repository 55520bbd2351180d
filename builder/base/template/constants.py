"""Go's constants in a template: numbers as ``newNumber`` reads them (ints, floats, hex, octal,
binary, character constants) and ``strconv.Unquote`` of string and character literals."""

from __future__ import annotations

import re

from builder.base.template import nodes as N
from builder.base.template.values import go_quote as _quote

_OCTAL = re.compile(r"[+-]?0[0-7_]+")


def parse_number(pos: int, text: str) -> N.Number:
    """A number or character constant as Go's ``newNumber`` reads it."""
    if text.startswith("'"):
        value = unquote(text)
        if len(value) != 1:
            raise ValueError(f"malformed character constant: {text}")
        return N.Number(pos, text, ord(value), float(ord(value)))
    if text.endswith("i"):
        raise ValueError(f"illegal number syntax: {_quote(text)}")
    int_value: int | None = None
    float_value: float | None = None
    try:
        int_value = int(text, 8) if _OCTAL.fullmatch(text) else int(text, 0)
    except ValueError:
        pass
    try:
        body = text.lstrip("+-")
        if body[:2].lower() == "0x":
            float_value = float.fromhex(text) if "p" in text.lower() or "." in text else float(int(text, 16))
        else:
            float_value = float(text)
    except ValueError:
        pass
    if int_value is None and float_value is not None and float_value.is_integer():
        int_value = int(float_value)
    if int_value is None and float_value is None:
        raise ValueError(f"illegal number syntax: {_quote(text)}")
    if float_value is None and int_value is not None:
        float_value = float(int_value)
    return N.Number(pos, text, int_value, float_value)


_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def unquote(text: str) -> str:
    """Go's ``strconv.Unquote`` of a ``"…"``, ```…``` or ``'…'`` literal; ValueError when bad."""
    if text.startswith("`"):
        return text[1:-1].replace("\r", "")
    quote = text[0]
    body = text[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            if ch == quote:
                raise ValueError(text)
            out.append(ch)
            i += 1
            continue
        if i + 1 >= len(body):
            raise ValueError(text)
        e = body[i + 1]
        if e in _ESCAPES:
            out.append(_ESCAPES[e])
            i += 2
        elif e == quote:
            out.append(e)
            i += 2
        elif e in "xuU":
            size = {"x": 2, "u": 4, "U": 8}[e]
            digits = body[i + 2:i + 2 + size]
            if len(digits) != size or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise ValueError(text)
            code = int(digits, 16)
            if e == "x":
                out.append(chr(code))  # a byte: kept as the code point of the same value
            else:
                if code > 0x10FFFF or 0xD800 <= code < 0xE000:
                    raise ValueError(text)
                out.append(chr(code))
            i += 2 + size
        elif e in "01234567":
            digits = body[i + 1:i + 4]
            if len(digits) != 3 or not all(d in "01234567" for d in digits) or int(digits, 8) > 255:
                raise ValueError(text)
            out.append(chr(int(digits, 8)))
            i += 4
        else:
            raise ValueError(text)
    return "".join(out)
