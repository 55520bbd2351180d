"""``repair.wait_gone``: what ``stop``, ``rm -f`` and a removal's wait for the supervisor use.
It wakes on the process's pidfd when the process exits (no polling with sleeps), and still
tells a reused pid or a zombie from the process it was asked about. Real processes, no mocks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from builder.runtime.containers.record import proc_start_time
from builder.runtime.containers.repair import wait_gone


def _sleeper(seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])


def test_returns_soon_after_the_process_is_killed() -> None:
    p = _sleeper(60)
    try:
        start = proc_start_time(p.pid)
        assert start > 0
        killer = threading.Timer(0.2, os.kill, (p.pid, signal.SIGKILL))
        killer.start()
        t = time.monotonic()
        # our own child stays a zombie until reaped: gone all the same (it runs no more)
        assert wait_gone(p.pid, start, 30.0)
        took = time.monotonic() - t
        killer.join()
        assert 0.15 <= took < 10.0  # woken by the exit, not by the 30 s timeout
    finally:
        p.kill()
        p.wait()


def test_false_when_the_process_outlives_the_timeout() -> None:
    p = _sleeper(60)
    try:
        start = proc_start_time(p.pid)
        t = time.monotonic()
        assert not wait_gone(p.pid, start, 0.3)
        assert time.monotonic() - t >= 0.3
        assert proc_start_time(p.pid) == start  # untouched: wait_gone only waits
    finally:
        p.kill()
        p.wait()


def test_a_gone_or_reused_pid_is_gone_at_once() -> None:
    p = _sleeper(0)
    start = proc_start_time(p.pid)
    p.wait()  # reaped: the pid names no process (or, later, another one)
    t = time.monotonic()
    assert wait_gone(p.pid, start, 30.0)
    # a live pid whose start time is not the one asked about is another process: gone
    assert wait_gone(os.getpid(), proc_start_time(os.getpid()) + 1, 30.0)
    assert time.monotonic() - t < 5.0
