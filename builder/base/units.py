"""Docker's go-units text: decimal sizes (``1.23MB``) and human durations (``About a minute``),
shared by the library (a container's ``Status``) and the CLI's tables; and the one parser of
each of byte sizes (``64m``, go-units ``RAMInBytes``) and Go durations (``1m30s``)."""

from __future__ import annotations

import json
import re

_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
# patterns compiled on first use (``re``'s cache), not at import: every command loads this
# module, few parse a size or a duration
_SIZE = r"(?i)(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)"
_DURATION = r"[-+]?(?:0|(?:(?:\d+\.?\d*|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+)\Z"
_DURATION_PART = r"(\d*)(?:\.(\d*))?(ns|us|µs|μs|ms|s|m|h)"
_DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


def parse_size(text: str) -> int | None:
    """``64m``, ``1.5g``, ``512KiB``, ``1024`` -> bytes in binary units (go-units
    ``RAMInBytes``); None when *text* is not a size (each caller words its own error)."""
    m = re.fullmatch(_SIZE, text.strip())
    if m is None:
        return None
    return int(float(m.group(1)) * 1024 ** " kmgtp".index((m.group(2) or " ").lower()))


def parse_go_duration(text: str) -> int:
    """Go's ``time.ParseDuration`` (``1m30s``, ``1.5h``, ``250ms``) in nanoseconds;
    ``ValueError`` in Go's words."""
    if not re.match(_DURATION, text):
        raise ValueError(f"time: invalid duration {_q(text)}")
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    total = 0
    for whole, frac, unit in re.findall(_DURATION_PART, body):
        scale = _DURATION_UNITS[unit]
        total += int(whole or "0") * scale
        if frac:
            total += int(frac) * scale // 10 ** len(frac)
    if total > 2**63 - 1:
        raise ValueError(f"time: invalid duration {_q(text)}")
    return sign * total


def _q(s: str) -> str:
    """Go's %q, near enough for messages."""
    return json.dumps(s, ensure_ascii=False)


def human_size(size: float, precision: int = 3) -> str:
    """go-units ``HumanSizeWithPrecision``: decimal units, *precision* significant digits."""
    i = 0
    while size >= 1000 and i < len(_UNITS) - 1:
        size /= 1000
        i += 1
    return f"{size:.{precision}g}{_UNITS[i]}"


def binary_size(size: float) -> str:
    """go-units ``BytesSize``: binary units, 4 significant digits (``1.5MiB``)."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    i = 0
    while size >= 1024 and i < len(units) - 1:
        size /= 1024
        i += 1
    return f"{size:.4g}{units[i]}"


def human_duration(seconds: float) -> str:
    """go-units ``HumanDuration``."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


# RFC 3339 as images and Docker write it: a fraction of any length, ``Z``, a ``±hh:mm`` offset
# or no zone at all (UTC)
_RFC3339 = r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?"
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def rfc3339_ns(text: str) -> int | None:
    """An RFC 3339 timestamp in nanoseconds since the epoch (a longer fraction truncated); None
    when *text* is not one or names no real time. By arithmetic, without ``datetime`` (~2 ms at
    import), which the listings (``ps``, ``images``, ``inspect``) do not load."""
    m = re.fullmatch(_RFC3339, text)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if (not year or not 1 <= month <= 12 or not 1 <= day <= _MONTH_DAYS[month - 1]
            or (month == 2 and day == 29 and not leap) or hour > 23 or minute > 59 or second > 59):
        return None
    secs = ((days_from_civil(year, month, day) * 24 + hour) * 60 + minute) * 60 + second
    zone = m.group(8) or "Z"
    if zone != "Z":
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23:  # (datetime takes 61 minutes, and so do we)
            return None
        secs -= (1 if zone[0] == "+" else -1) * (hours * 60 + minutes) * 60
    return secs * 10**9 + int((m.group(7) or "0")[:9].ljust(9, "0"))


def rfc3339_seconds(text: str | None) -> float | None:
    """An RFC 3339 timestamp in Unix seconds (``rfc3339_ns``); None when absent or not one."""
    ns = rfc3339_ns(text) if text else None
    return None if ns is None else ns / 10**9


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a proleptic Gregorian date: ``time.gmtime``'s inverse, which
    ``time`` lacks (``calendar.timegm`` loads ``datetime``). H. Hinnant's ``days_from_civil``:
    years start in March, so that February's length falls at a year's end."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month - 3 if month > 2 else month + 9) + 2) // 5 + day - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
