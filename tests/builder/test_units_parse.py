"""The one parser of byte sizes and of Go durations (``builder.base.units``), for every form its
former copies took: ``run --memory/--shm-size``, ``--mount tmpfs-size``, ``RUN --mount size``,
``builder prune --keep-storage``, HEALTHCHECK and ``--health-*`` durations."""

from __future__ import annotations

import pytest

from builder.base.units import parse_go_duration, parse_size


@pytest.mark.parametrize(("text", "want"), [
    ("1024", 1024), ("64m", 64 << 20), ("64M", 64 << 20), ("1g", 1 << 30), ("512kb", 512 << 10),
    ("512KiB", 512 << 10), ("2GB", 2 << 30), ("1.5g", 3 << 29), ("10b", 10), ("1p", 1 << 50),
    (" 64m ", 64 << 20), ("64 m", 64 << 20), ("0", 0),
])
def test_sizes(text: str, want: int) -> None:
    assert parse_size(text) == want


@pytest.mark.parametrize("text", ["", "lots", "m", "-1", "1x", "1.2.3m", "64mbb"])
def test_not_sizes(text: str) -> None:
    assert parse_size(text) is None


def test_go_durations() -> None:
    assert parse_go_duration("1m30s") == 90 * 10**9
    assert parse_go_duration("500ms") == 5 * 10**8
    assert parse_go_duration("1.5h") == 5400 * 10**9
    assert parse_go_duration("0") == 0 and parse_go_duration("-1s") == -(10**9)
    for bad in ("", "5 minutes", "1", "1d"):
        with pytest.raises(ValueError, match="time: invalid duration"):
            parse_go_duration(bad)
