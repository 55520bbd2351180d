"""``builder.imagebuild.pool``: the plain threads the solver's stages and a COPY's batches of files
run on (no ``concurrent.futures``, whose ``logging`` cost every build ~15 ms of start-up).

The job limit, the order jobs start and their results, the first error raised once the others
stopped, the queue dropped on cancel, and the solver's use of it: a failed stage cancels the
others and its error is the build's."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from builder.imagebuild.pool import Pool


def test_at_most_workers_run_at_once_in_the_order_submitted() -> None:
    pool = Pool(2, "test-pool")
    lock = threading.Lock()
    now = [0]
    peak = [0]
    started: list[int] = []

    def job(i: int) -> int:
        with lock:
            started.append(i)
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        time.sleep(0.05)
        with lock:
            now[0] -= 1
        return i * i

    jobs = [pool.submit(lambda i=i: job(i), i) for i in range(8)]
    assert pool.close() == []
    assert peak[0] == 2
    assert started[:2] in ([0, 1], [1, 0]) and sorted(started) == list(range(8))
    assert started[2:] == sorted(started[2:])  # a free thread takes the oldest job queued
    assert [j.result() for j in jobs] == [i * i for i in range(8)]
    assert [j.tag for j in jobs] == list(range(8))
    assert not [t for t in threading.enumerate() if t.name.startswith("test-pool")]


def test_threads_start_as_jobs_come_and_are_reused() -> None:
    pool = Pool(4, "test-lazy")
    assert not [t for t in threading.enumerate() if t.name.startswith("test-lazy")]  # none yet
    names = []
    for _ in range(3):  # one at a time: the one idle thread takes each
        job = pool.submit(lambda: threading.current_thread().name)
        while not pool.ended(1.0):
            pass
        names.append(job.result())
    pool.close()
    assert names == ["test-lazy_0"] * 3


def test_ended_reports_each_job_once_as_it_ends() -> None:
    pool = Pool(2, "test-ended")
    go = threading.Event()
    slow = pool.submit(lambda: go.wait(5) and "slow", "slow")
    fast = pool.submit(lambda: "fast", "fast")
    seen = []
    while not seen:
        seen = pool.ended(0.2)
    assert seen == [fast]
    assert pool.ended(0.05) == []  # nothing else ended: the wait timed out
    go.set()
    while not (more := pool.ended(0.2)):
        pass
    assert more == [slow] and slow.result() == "slow"
    pool.close()


def test_an_error_is_kept_for_the_caller_and_the_queue_can_be_dropped() -> None:
    pool = Pool(1, "test-error")
    gate = threading.Event()
    ran: list[str] = []

    def fail() -> None:
        gate.wait(5)
        ran.append("fail")
        raise ValueError("boom")

    bad = pool.submit(fail)
    later = [pool.submit(lambda i=i: ran.append(f"later{i}")) for i in range(3)]
    dropped = pool.drop()  # what no thread started: never runs
    gate.set()
    assert pool.close() == []
    assert dropped == later and ran == ["fail"]
    assert isinstance(bad.error, ValueError)
    with pytest.raises(ValueError, match="boom"):
        bad.result()


def test_close_runs_what_is_queued_unless_cancelled() -> None:
    ran: list[int] = []
    gate = threading.Event()
    pool = Pool(1, "test-close")
    pool.submit(lambda: gate.wait(5))
    for i in range(3):
        pool.submit(lambda i=i: ran.append(i))
    gate.set()
    pool.close()
    assert ran == [0, 1, 2]

    ran.clear()
    gate.clear()
    pool = Pool(1, "test-cancel")
    first = pool.submit(lambda: gate.wait(5))
    rest = [pool.submit(lambda i=i: ran.append(i)) for i in range(3)]
    threading.Timer(0.1, gate.set).start()
    assert pool.close(cancel=True) == rest
    assert first.done and ran == []


def test_copy_batches_raise_the_first_failed_batch(tmp_path: Path) -> None:
    """fileops' ``_Files``: batches of 128 files on the pool; a failed batch's error is raised
    once every batch ended, the first failed in the order they were made."""
    from builder.imagebuild.context import Entry
    from builder.imagebuild.execute.fileops import Ownership, _Files

    src = tmp_path / "src"
    src.mkdir()
    (tmp_path / "dst").mkdir()
    files = _Files(Ownership(None, None, None), keep_owner=False)
    n = files.BATCH * 3
    for i in range(n):
        p = src / f"f{i}"
        p.write_bytes(b"x" * i)
        target = tmp_path / "dst" / f"f{i}"
        if i in (files.BATCH + 5, 2 * files.BATCH + 5):  # batches 1 and 2 fail
            target = tmp_path / f"missing{i}" / "f"
        files.add(Entry(str(p), f"f{i}", p.lstat()), str(target), False)
    with pytest.raises(OSError) as e:
        files.finish(True)
    assert f"missing{files.BATCH + 5}" in str(e.value)
    made = {p.name for p in (tmp_path / "dst").iterdir()}
    # every batch ran, a failed one up to its failure (batch 2 too, after batch 1 had failed)
    assert made == {f"f{i}" for i in range(n) if i % files.BATCH < 5 or i < files.BATCH}
    assert (tmp_path / "dst" / "f7").read_bytes() == b"x" * 7


def test_copy_threads_end_when_the_last_batch_cannot_be_handed_over(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``_Files.finish``: a last batch no thread can take (no thread can start) is an error,
    and the threads already running end before it is raised (a live one would hold up the exit)."""
    from builder.imagebuild.context import Entry
    from builder.imagebuild.execute.fileops import Ownership, _Files

    src = tmp_path / "src"
    src.mkdir()
    (tmp_path / "dst").mkdir()
    monkeypatch.setattr(os, "cpu_count", lambda: 4)  # room for a second thread
    files = _Files(Ownership(None, None, None), keep_owner=False)
    gate = threading.Event()
    make = files._make

    def held(batch: Any) -> None:  # the first batch's thread stays busy until the gate opens
        gate.wait(10)
        make(batch)

    monkeypatch.setattr(files, "_make", held)
    for i in range(files.BATCH + 3):  # one full batch (on a thread), then three files
        p = src / f"f{i}"
        p.write_bytes(b"x")
        files.add(Entry(str(p), f"f{i}", p.lstat()), str(tmp_path / "dst" / f"f{i}"), False)
    opener = threading.Timer(0.3, gate.set)
    opener.start()

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        files.finish(True)
    monkeypatch.undo()
    opener.join()
    assert not [t for t in threading.enumerate() if t.name.startswith("pybuild-copy")]
    assert len(list((tmp_path / "dst").iterdir())) == files.BATCH  # the first batch was made


def test_solver_first_failed_stage_is_the_error_and_stops_the_others(busybox: Any,
                                                                     tmp_path: Path) -> None:
    """Two stages at once: one fails, the other (a long RUN) is cancelled, not waited out; the
    failure raised is the failed RUN's."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM busybox AS slow\nRUN sleep 4242\n"
        "FROM busybox AS bad\nRUN sleep 0.5 && exit 3\n"
        "FROM busybox\nCOPY --from=slow /bin/sh /a\nCOPY --from=bad /bin/sh /b\n")
    t0 = time.monotonic()
    r = subprocess.run([*busybox.command, "--root", str(busybox.root), "build", "--progress=plain",
                        "--jobs", "2", str(ctx)], capture_output=True, text=True, timeout=120)
    assert time.monotonic() - t0 < 60
    assert r.returncode != 0
    assert "exit code: 3" in r.stderr, r.stderr[-2000:]
    out = subprocess.run(["pgrep", "-f", "sleep 4242"], capture_output=True, text=True).stdout
    assert out.strip() == ""


def test_a_build_loads_no_thread_pool_module(tmp_path: Path) -> None:
    """The solver and the COPY's file batches import ``pool``, not ``concurrent.futures``."""
    code = ("import sys; import builder.imagebuild.solver, builder.imagebuild.execute.fileops;"
            "print(sorted(m for m in ('concurrent.futures', 'logging') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.stdout.strip() == "[]"


def test_a_thread_that_cannot_start_leaves_no_job_nor_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = Pool(2, "test-nostart")

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    with pytest.raises(RuntimeError):
        pool.submit(lambda: 1)
    monkeypatch.undo()
    assert pool.drop() == []
    t0 = time.monotonic()
    pool.close()  # no thread counted: nothing to wait for
    assert time.monotonic() - t0 < 0.1
