"""``pybuild events`` (also ``system events``): the state root's event log as Docker's client prints
it, past events from ``--since``, then new ones until ``--until`` or Ctrl-C. Parse, one library
call, render.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from builder.base import events as lib
from builder.base.errors import ContainerError, TemplateExecError
from builder.cli import fail, flags
from builder.cli import format as fmt_

#: how often the log is read for new events
POLL = 0.1


def event_line(ev: Mapping[str, Any]) -> str:
    """Docker's line: ``TIME TYPE ACTION ID (k=v, …)``, the time in local time with nine digits,
    the attributes sorted by key."""
    nano = ev.get("timeNano") or int(ev.get("time") or 0) * 10**9
    when = datetime.fromtimestamp(nano // 10**9).astimezone()
    offset = when.strftime("%z")
    zone = "Z" if offset in ("+0000", "") else f"{offset[:3]}:{offset[3:]}"
    stamp = f"{when.strftime('%Y-%m-%dT%H:%M:%S')}.{nano % 10**9:09d}{zone}"
    actor = ev.get("Actor") or {}
    line = f"{stamp} {ev.get('Type', '')} {ev.get('Action', '')} {actor.get('ID', '')}"
    attrs = actor.get("Attributes") or {}
    if attrs:
        line += " (" + ", ".join(f"{k}={attrs[k]}" for k in sorted(attrs)) + ")"
    return line


#: Go's type of an event, as template errors name it
MESSAGE = "*events.Message"
#: the zero ``events.Message`` as its JSON has it (``status``, ``id`` and ``from`` are omitempty;
#: its nil Attributes map indexes quietly, as an empty one)
ZERO: Mapping[str, Any] = {"Type": "", "Action": "", "Actor": {"ID": "", "Attributes": {}}, "scope": "",
                           "time": 0, "timeNano": 0}


class EventView(dict[str, Any]):
    """An event as ``--format`` sees Docker's ``events.Message``: its Go field names (``.ID``,
    ``.Status``, ``.From``, ``.Scope``, ``.Time``, ``.TimeNano``) beside the JSON's keys, which
    ``{{json .}}`` prints."""

    ALIASES = {"ID": "id", "Status": "status", "From": "from", "Scope": "scope", "Time": "time",
               "TimeNano": "timeNano"}
    ZEROS = {"ID": "", "Status": "", "From": "", "Scope": "", "Time": 0, "TimeNano": 0}

    #: the JSON's keys in Go's field order (``{{json .}}`` prints them so)
    ORDER = ("status", "id", "from", "Type", "Action", "Actor", "scope", "time", "timeNano")

    @classmethod
    def of(cls, ev: Mapping[str, Any]) -> EventView:
        return cls({**{k: ev[k] for k in cls.ORDER if k in ev}, **ev})

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key) or key in self.ALIASES

    def __getitem__(self, key: str) -> Any:
        if not super().__contains__(key) and key in self.ALIASES:
            return self.get(self.ALIASES[key], self.ZEROS[key])
        return super().__getitem__(key)


def _seconds(text: str | None) -> float | None:
    from builder.runtime.containers.options import parse_timestamp_ns
    try:
        return None if not text else parse_timestamp_ns(text) / 1e9
    except ContainerError:
        fail(f'failed to parse value as time or duration: "{text}"')  # Docker's client's words, exit 1
        raise


@flags.command("events")
@flags.option("--since", default=None, help="Show all events created since timestamp.")
@flags.option("--until", default=None, help="Stream events until this timestamp.")
@flags.option("-f", "--filter", "filters", multiple=True, help="Filter output based on conditions provided.")
@flags.option("--format", "fmt", default=None, help="Format the output using the given Go template.")
@flags.pass_obj
def events(obj: Any, since: str | None, until: str | None, filters: tuple[str, ...], fmt: str | None) -> None:
    """Get real time events from the server."""
    since_s, until_s = _seconds(since), _seconds(until)
    wanted: dict[str, list[str]] = {}
    for spec in filters:
        key, sep, value = spec.partition("=")
        if not sep:
            fail(f"bad format of filter (expected name=value): {spec}")
        wanted.setdefault(key.strip().lower(), []).append(value)
    try:
        flt = lib.Filters.from_json(json.dumps(wanted))
    except ValueError as e:
        fail(str(e))
    if fmt == "json":
        fmt = "{{json .}}"
    tmpl = None
    if fmt:
        from builder.base.template.shapes import row

        # Docker's client parses the template and runs it over an empty events.Message before
        # it asks for events: a bad one is a usage error (64) whether any event comes or not
        tmpl = fmt_.template(fmt, messages=fmt_.EVENTS)
        fmt_.execute(tmpl, EventView.of(ZERO), options=row(MESSAGE), messages=fmt_.EVENTS)

    def show(ev: Mapping[str, Any]) -> None:
        if tmpl is None:
            flags.echo(event_line(ev))
            return
        try:
            flags.echo(tmpl.execute(EventView.of(ev), options=row(MESSAGE)))
        except TemplateExecError as e:
            # Docker's client: what the template wrote, its newline, then Go's error alone (exit 1)
            flags.echo(e.partial)
            flags.echo(str(e), err=True)
            sys.exit(1)

    # Ctrl-C ends the stream as it ends Docker's client: by the signal, nothing printed
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    reader = lib.Reader(obj.state, from_start=since_s is not None)
    while True:
        for ev in reader.poll():
            t = lib.event_time(ev)
            if since_s is not None and t < since_s:
                continue
            if until_s is not None and t > until_s:
                continue
            if flt.match(ev):
                show(ev)
        sys.stdout.flush()
        if until_s is not None and time.time() > until_s:
            return
        time.sleep(POLL)
