"""Go's printing of the values BuildKit writes into history lines (``%q`` of a ``[]string``,
``time.Duration.String()``, a rune, the HEALTHCHECK struct, a set's ``map[k:{}]``)."""

from __future__ import annotations

import json

from builder.imagebuild import dockerfile as df


def go_list(items: list[str]) -> str:
    """Go's %q of a []string, as BuildKit writes CMD/ENTRYPOINT history: ``["a" "b"]``."""
    return "[" + " ".join(json.dumps(i, ensure_ascii=False) for i in items) + "]"


def go_duration(ns: int | None) -> str:
    """Go's ``time.Duration.String()``: ``30s``, ``1m30s``, ``1h0m0s``, ``500ms``, ``0s``."""
    n = ns or 0
    if n == 0:
        return "0s"
    if n < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if n >= size:
                text = f"{n / size:.9f}".rstrip("0").rstrip(".")
                return text + unit
    secs = n / 1_000_000_000
    h, rem = divmod(int(secs), 3600)
    m = rem // 60
    s = secs - h * 3600 - m * 60
    s_text = f"{s:.9f}".rstrip("0").rstrip(".") + "s"
    if h:
        return f"{h}h{m}m{s_text}"
    if m:
        return f"{m}m{s_text}"
    return s_text


def go_rune(n: int) -> str:
    """Go's ``%q`` of an integer: a quoted character literal."""
    if 32 <= n < 127 and chr(n) not in "'\\":
        return f"'{chr(n)}'"
    return f"'\\x{n:02x}'" if n < 256 else f"'\\u{n:04x}'"


def go_healthcheck(ins: df.Healthcheck) -> str:
    """BuildKit writes the HEALTHCHECK history line with Go's ``%v`` of its config struct."""
    return (f"&{{{go_list(list(ins.test))} {json.dumps(go_duration(ins.interval))} "
            f"{json.dumps(go_duration(ins.timeout))} {json.dumps(go_duration(ins.start_period))} "
            f"{go_rune(ins.retries or 0)}}}")


def go_map_keys(keys: list[str]) -> str:
    return "map[" + " ".join(f"{k}:{{}}" for k in sorted(keys)) + "]"
