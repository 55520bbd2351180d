"""What a build's start-up no longer imports, and that the replacements write the same bytes:
history times without ``datetime``, the miss's slot and the diff's records without
``dataclasses``, the ssh relay only for ``RUN --mount=type=ssh`` (the budgets themselves are
``tests/test_startup_budget.py``'s build families)."""

from __future__ import annotations

import random
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from builder.imagebuild.assemble import rfc3339
from builder.imagebuild.explain import Slot, explain

REPO = Path(__file__).resolve().parents[2]


def _datetime_rfc3339(epoch: float) -> str:
    """What ``assemble.rfc3339`` wrote with ``datetime`` before (the bytes it must keep)."""
    dt = datetime.fromtimestamp(epoch, UTC)
    if epoch == int(epoch):
        return dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.mark.parametrize(("epoch", "text"), [
    (0, "1970-01-01T00:00:00Z"),
    (1700000000, "2023-11-14T22:13:20Z"),
    (1700000000.0, "2023-11-14T22:13:20Z"),
    (1700000000.25, "2023-11-14T22:13:20.250000Z"),
    (1733616000.999999, "2024-12-08T00:00:00.999999Z"),
    (1000000000.5, "2001-09-09T01:46:40.500000Z"),
    # microseconds rounded half to even, as datetime.fromtimestamp rounds them
    (0.0000005, "1970-01-01T00:00:00.000000Z"),
    (0.0000015, "1970-01-01T00:00:00.000002Z"),
    (1.9999995, "1970-01-01T00:00:01.999999Z"),
    (1733616000.9999995, "2024-12-08T00:00:01.000000Z"),  # rounded up into the next second
])
def test_history_time_bytes(epoch: float, text: str) -> None:
    assert rfc3339(epoch) == text == _datetime_rfc3339(epoch)


def test_history_time_is_datetimes_for_any_time() -> None:
    r = random.Random(15)
    epochs = [r.uniform(0, 4e9) for _ in range(20000)]
    epochs += [r.randrange(4 * 10**9) + r.randrange(2 * 10**6) / 2e6 for _ in range(20000)]
    assert [rfc3339(e) for e in epochs] == [_datetime_rfc3339(e) for e in epochs]


def test_slot_is_a_frozen_value_that_round_trips() -> None:
    slot = Slot({"instruction": "COPY a /a", "files": "x"}, {"a": "sha256:1"})
    assert "__dataclass_fields__" not in vars(Slot)
    assert Slot.from_json(slot.to_json()) == slot
    assert Slot() == Slot({}, {}) and Slot.from_json([]) is None
    with pytest.raises(AttributeError):
        slot.inputs = {}  # type: ignore[misc]
    assert explain(slot, {"instruction": "COPY a /a", "files": "y"}, {"a": "sha256:2"}) == "files changed: a"


def test_modules_a_step_loads_make_no_dataclass_nor_relay() -> None:
    """The executed step's modules: the diff's records are a plain class, and ``execute.run``
    loads the ssh relay (socket, selectors, subprocess) only for an ssh mount."""
    code = ("import sys\n"
            "import builder.imagebuild.explain, builder.core.layers.diff, builder.imagebuild.execute.run\n"
            "print(sorted(m for m in ('dataclasses', 'inspect', 'socket', 'selectors', 'subprocess',"
            " 'datetime', 'secrets', 'builder.imagebuild.execute.ssh') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert r.stdout.strip() == "[]"


def test_own_sha256_gives_openssls_digests() -> None:
    """``imagebuild.sha``: CPython's own SHA-256 for small inputs, OpenSSL's for large files
    (and once a build has hashed ``OWN_BUDGET`` bytes): the same digests either way."""
    code = r"""
import sys, hashlib as _h
del sys.modules["hashlib"], sys.modules["_hashlib"]  # as a cached build starts: not loaded
from builder.imagebuild import sha
out = []
for data in (b"", b"abc", bytes(range(256)) * 1000):
    out.append(sha.sha256(data).hexdigest() == _h.sha256(data).hexdigest())
out.append("_hashlib" not in sys.modules)  # small inputs: no OpenSSL
h = sha.for_file(100)
h.update(b"x" * 100)
out.append(h.hexdigest() == _h.sha256(b"x" * 100).hexdigest() and "_hashlib" not in sys.modules)
big = sha.for_file(sha.SMALL_FILE + 1)  # a large file: OpenSSL's
out.append(type(big).__module__ != type(h).__module__ or type(big) is not type(h))
out.append("_hashlib" in sys.modules)
print(out)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert r.stdout.strip() == str([True] * 7)


def test_own_sha256_budget_then_openssl(monkeypatch: pytest.MonkeyPatch) -> None:
    from builder.imagebuild import sha

    monkeypatch.setattr(sha, "_spent", [sha.OWN_BUDGET - 10])
    monkeypatch.delitem(sys.modules, "_hashlib", raising=False)
    own = type(sha.sha256())
    assert type(sha.for_file(10)) is own  # within the budget
    assert sha._spent == [sha.OWN_BUDGET]
    assert type(sha.for_file(1)) is not own  # spent: OpenSSL's from now on


def test_stop_signal_names_are_signals() -> None:
    """``--change STOPSIGNAL`` is checked against ``_signal``'s names: ``signal.Signals``' own."""
    import signal

    from builder.imagebuild.graph.configchanges import _SIGNAL_NAMES

    assert _SIGNAL_NAMES == set(signal.Signals.__members__)


def test_the_line_pass_compiles_no_pattern_at_import() -> None:
    """A cached build parses no Dockerfile (the parse cache): the line pass's patterns are texts
    ``re`` compiles on their first use (~2 ms of regular expressions at import before)."""
    import re

    from builder.imagebuild.dockerfile import syntax

    assert [k for k, v in vars(syntax).items() if isinstance(v, re.Pattern)] == []
