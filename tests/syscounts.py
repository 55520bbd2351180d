"""Kernel counters of the calling thread, for tests that pin how data reaches the kernel."""

from __future__ import annotations

from pathlib import Path


def write_calls() -> int:
    """This thread's ``write(2)`` calls so far, as the kernel counts them (``syscw``)."""
    for line in Path("/proc/thread-self/io").read_text().splitlines():
        if line.startswith("syscw:"):
            return int(line.split()[1])
    raise AssertionError("no syscw in /proc/thread-self/io")
