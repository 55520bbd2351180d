"""Issue 15: what ``ps``, ``images``, ``inspect`` and ``run`` leave unloaded (a fresh interpreter runs the
command through the CLI's entry and reports ``sys.modules``), and the light replacements that
made it so: ``typing`` (annotation-only names under ``TYPE_CHECKING = False``), ``threading``
(the record's locks are ``_thread``'s), ``datetime`` (``ps`` formats its times from the stored
text, parsed without it; ``images`` and ``inspect`` read theirs with ``builder.base.units.rfc3339_ns``), ``signal`` (its enums: the numbers come from ``_signal``).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
from typing import Any

import pytest

from builder.base.units import rfc3339_ns
from builder.runtime.containers.options import (
    parse_signal,
    parse_timestamp_ns,
    parse_timestamp_text,
    rfc3339nano,
)
from builder.runtime.containers.record import ContainerStore

PROBE = r"""
import json, sys
from builder.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    assert not e.code, e.code
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""

#: modules each listing must not load; a module of ours that imports one at its top brings it
#: back (and every listing pays for it: typing ~4 ms, threading ~1.5, datetime ~2, signal ~1)
OFF_PATH = {
    "ps -a": {"typing", "threading", "datetime", "_datetime", "signal", "shutil", "bz2", "lzma"},
    # the images' times read by builder.base.units.rfc3339_ns, shown with time's strftime
    "images": {"typing", "threading", "shutil", "signal", "datetime", "_datetime"},
    "inspect busybox": {"typing", "threading", "shutil", "signal", "datetime", "_datetime"},
    # a container (its record, its image's date)
    "inspect listed": {"typing", "threading", "signal", "datetime", "_datetime"},
}


def _loaded(busybox: Any, argv: list[str]) -> tuple[str, set[str]]:
    r = subprocess.run([sys.executable, "-c", PROBE, "--root", str(busybox.root), *argv],
                       capture_output=True, text=True, check=True, cwd="/")
    return r.stdout, set(json.loads(r.stderr.strip().splitlines()[-1]))


def test_listings_load_none_of_the_modules_taken_off_their_path(busybox: Any) -> None:
    busybox("create", "--network", "none", "--name", "listed", "busybox", "true")
    busybox("run", "--network", "none", "--name", "done", "busybox", "true")
    try:
        for command, off in OFF_PATH.items():
            out, mods = _loaded(busybox, command.split())
            assert "busybox" in out  # the command ran and printed its rows
            assert "builder.cli" in mods
            back = sorted(mods & off)
            assert not back, f"pybuild {command} loads {back} again"
    finally:
        busybox("rm", "-f", "listed", "done")


def test_the_probe_sees_a_module_loaded(busybox: Any) -> None:
    """The probe itself: ``ps --format`` with a template loads the template engine."""
    _, mods = _loaded(busybox, ["ps", "-a", "--format", "{{.Names}}"])
    assert "builder.base.template" in mods


def test_stored_timestamps_parse_as_the_full_parser_reads_them() -> None:
    """``parse_timestamp_text`` reads the form ``rfc3339nano`` writes by arithmetic (no
    ``datetime``): the same nanoseconds as ``parse_timestamp_ns`` over four centuries, leap
    days and fractions included; any other form goes to the full parser."""
    rng = random.Random(15)
    stamps = [rng.randrange(-2 * 10**18, 8 * 10**18) for _ in range(5000)]
    stamps += [0, 1, 10**9 - 1, 951782400 * 10**9, 1709164800 * 10**9 + 86399 * 10**9]  # leap days
    for ns in stamps:
        text = rfc3339nano(ns=ns)
        assert parse_timestamp_text(text) == ns == parse_timestamp_ns(text), text
    for text in ("2024-05-01T12:00:00+02:00", "2024-05-01T12:00:00.5Z", "2024-05-01", "1700000000"):
        assert parse_timestamp_text(text) == parse_timestamp_ns(text), text
    assert parse_timestamp_text("") == parse_timestamp_text("0001-01-01T00:00:00Z") == 0
    with pytest.raises(ValueError):  # not a date: refused, as the full parser does
        parse_timestamp_text("2024-13-01T00:00:00Z")


def _datetime_ns(text: str) -> int | None:
    """What the images' parser read before: ``datetime.fromisoformat`` (no zone: UTC)."""
    import datetime as dt
    import re

    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?", text)
    if m is None:
        return None
    zone = m.group(3) or "Z"
    try:
        t = dt.datetime.fromisoformat(m.group(1) + ("+00:00" if zone == "Z" else zone))
    except ValueError:
        return None
    whole = (t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(seconds=1)
    return whole * 10**9 + int((m.group(2) or ".0")[1:10].ljust(9, "0"))


def test_rfc3339_by_arithmetic_reads_what_datetime_reads() -> None:
    """``rfc3339_ns`` (``images``, ``inspect``, ``history``: an image's ``created``) reads an
    RFC 3339 time as ``datetime`` did: the same nanoseconds over the whole calendar (fractions of
    any length, ``Z``, offsets, no zone), and None for what names no real time (a 30 February,
    a 13th month, 24 o'clock, a 24-hour offset)."""
    rng = random.Random(21)
    texts = ["2024-02-29T12:00:00Z", "2023-02-29T12:00:00Z", "1900-02-29T00:00:00Z", "2000-02-29T00:00:00Z",
             "0001-01-01T00:00:00Z", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999999-05:30",
             "2024-05-01T12:00:00", "2024-05-01T24:00:00Z", "2024-05-01T12:00:00+24:00", "2024-05-01", ""]
    for _ in range(20000):
        texts.append(f"{rng.randint(0, 9999):04d}-{rng.randint(0, 13):02d}-{rng.randint(0, 32):02d}T"
                     f"{rng.randint(0, 24):02d}:{rng.randint(0, 60):02d}:{rng.randint(0, 60):02d}"
                     + rng.choice(["", f".{rng.randrange(10**12):0{rng.randint(1, 12)}d}"])
                     + rng.choice(["Z", "", "+02:00", "-05:30", "+23:59", "+24:00", "-00:61"]))
    for text in texts:
        assert rfc3339_ns(text) == _datetime_ns(text), text
    assert rfc3339_ns("2024-02-29T12:00:00.5+01:00") == (1709208000 - 3600) * 10**9 + 500_000_000


def test_signal_names_are_those_of_signal_signals() -> None:
    """``parse_signal`` without ``signal``'s enums: every member of ``signal.Signals`` by its
    names (``SIGTERM``, ``TERM``, ``term``), its number; nothing else (``SIG_IGN``, ``NSIG``)."""
    for sig in signal.Signals:
        assert parse_signal(sig.name) == parse_signal(sig.name[3:].lower()) == int(sig)
        assert parse_signal(str(int(sig))) == int(sig)
    for bad in ("SIG_IGN", "SIG_DFL", "SIG_BLOCK", "NSIG", "SIGNOPE", "0", str(signal.NSIG), ""):
        with pytest.raises(Exception, match="invalid signal"):
            parse_signal(bad)


def test_a_record_lock_is_reentrant_in_its_thread_and_excludes_others(busybox: Any) -> None:
    """The record's in-process locks (``_thread``'s, per thread and container): the holder's
    thread takes the lock again; another thread waits, or is refused with ``wait=False``."""
    busybox("create", "--network", "none", "--name", "locked", "busybox", "true")
    try:
        cs = ContainerStore(busybox.state)
        cid = cs.find("locked").id
        seen: list[str] = []

        def other() -> None:
            try:
                with cs.lock(cid, wait=False):
                    seen.append("got it")
            except BlockingIOError:
                seen.append("refused")
            with cs.lock(cid):  # waits for the holder
                seen.append("waited")

        with cs.lock(cid):
            with cs.lock(cid):  # re-entrant
                t = threading.Thread(target=other)
                t.start()
                while not seen:
                    t.join(0.01)
            assert seen == ["refused"]  # still held once: the other thread waits
        t.join(30)
        assert seen == ["refused", "waited"]
    finally:
        busybox("rm", "-f", "locked")


# -- the containers' name index (record.ContainerStore: a name's record in one read) ----------
def _index(busybox: Any) -> dict[str, str]:
    data: dict[str, str] = json.loads((busybox.root / "containers" / ".names.json").read_text())
    return data


def _ids(busybox: Any, *names: str) -> list[str]:
    return [busybox("inspect", "--format", "{{.Id}}", n).stdout.strip() for n in names]


def test_the_name_index_follows_create_rename_and_rm(busybox: Any) -> None:
    busybox("create", "--network", "none", "--name", "ix-a", "busybox", "true")
    busybox("create", "--network", "none", "--name", "ix-b", "busybox", "true")
    a, b = _ids(busybox, "ix-a", "ix-b")
    assert _index(busybox)["ix-a"] == a and _index(busybox)["ix-b"] == b
    busybox("rename", "ix-a", "ix-c")
    assert _index(busybox)["ix-c"] == a and "ix-a" not in _index(busybox)
    r = busybox("create", "--network", "none", "--name", "ix-c", "busybox", "true", check=False)
    assert r.returncode != 0 and f'already in use by container "{a}"' in r.stderr
    r = busybox("rename", "ix-b", "ix-c", check=False)
    assert r.returncode != 0 and f'already in use by container "{a}"' in r.stderr
    busybox("create", "--network", "none", "--name", "ix-a", "busybox", "true")  # free again
    busybox("rm", "ix-c")  # its entry may stay: a record no longer holding it frees the name
    busybox("create", "--network", "none", "--name", "ix-c", "busybox", "true")
    assert busybox("ps", "-a", "--format", "{{.Names}}").stdout.split() == ["ix-c", "ix-a", "ix-b"]
    assert busybox("inspect", "--format", "{{.Name}}", "ix-c").stdout.strip() == "/ix-c"
    busybox("rm", "ix-a", "ix-b", "ix-c")


def test_the_name_index_believes_only_what_the_records_hold(busybox: Any) -> None:
    """A create or rename killed midway leaves the index ahead of the records: an entry whose
    record is missing (or holds another name) frees its name; an index that is gone or
    unreadable (a root from before it) is made again from the records."""
    busybox("create", "--network", "none", "--name", "ix-held", "busybox", "true")
    (held,) = _ids(busybox, "ix-held")
    path = busybox.root / "containers" / ".names.json"
    ghost = "f" * 64
    # a create killed before its record appeared; a rename killed before its config was saved
    path.write_text(json.dumps({**_index(busybox), "ix-ghost": ghost, "ix-renamed": held}))
    busybox("create", "--network", "none", "--name", "ix-ghost", "busybox", "true")
    busybox("create", "--network", "none", "--name", "ix-renamed", "busybox", "true")
    r = busybox("create", "--network", "none", "--name", "ix-held", "busybox", "true", check=False)
    assert r.returncode != 0 and f'already in use by container "{held}"' in r.stderr
    for broken in (None, "not json", "[1, 2]"):
        if broken is None:
            path.unlink()
        else:
            path.write_text(broken)
        assert busybox("inspect", "--format", "{{.Id}}", "ix-held").stdout.strip() == held
        r = busybox("create", "--network", "none", "--name", "ix-held", "busybox", "true", check=False)
        assert r.returncode != 0 and f'already in use by container "{held}"' in r.stderr
        busybox("create", "--network", "none", "busybox", "true")  # a random name: made again
        assert _index(busybox)["ix-held"] == held
    # names of removed records pile up until they outnumber the records: then it is made again
    path.write_text(json.dumps({**_index(busybox), **{f"gone-{i}": ghost for i in range(200)}}))
    busybox("create", "--network", "none", "--name", "ix-last", "busybox", "true")
    assert not [n for n in _index(busybox) if n.startswith("gone-")]
    busybox("rm", *busybox("ps", "-aq").stdout.split())


def test_ids_and_names_are_told_without_a_regex_made_at_import() -> None:
    """``names.is_id`` (64 lowercase hex digits, no regex) and ``valid_name`` (Docker's rule,
    its pattern compiled on first use)."""
    from builder.runtime.containers import names

    assert names.is_id("0123456789abcdef" * 4)
    for bad in ("0123456789abcdef" * 4 + "\n", "A" * 64, "a" * 63, "a" * 65, "a" * 31 + "-" + "a" * 32, ""):
        assert not names.is_id(bad), bad
    assert names.valid_name("ab") and names.valid_name("/a.b_c-1")
    for bad in ("a", "-ab", "a b", "ab/"):
        assert not names.valid_name(bad), bad


@pytest.mark.parametrize("argv", [["run", "--rm", "--network", "none", "busybox", "echo", "ran"],
                                  ["run", "-d", "--network", "none", "busybox", "echo", "ran"]],
                         ids=" ".join)
def test_a_run_loads_neither_typing_nor_signal(busybox: Any, argv: list[str]) -> None:
    """The run path's modules (ours: the CLI's, the containers', the sandbox's) name typing's
    names for checkers only, and the supervisor's handlers are ``_signal``'s. (A warm run: the
    image's layers unpacked by the one before.)"""
    busybox("run", "--rm", "--network", "none", "busybox", "true")
    out, mods = _loaded(busybox, argv)
    assert out.strip() == "ran" or len(out.strip()) == 64  # the output, or the ID of the -d one
    back = sorted(mods & {"typing", "signal"})
    assert not back, f"pybuild {' '.join(argv)} loads {back} again"
    if argv[1] == "-d":
        busybox("wait", out.strip())
        busybox("rm", out.strip())
