"""Jobs on a few plain threads: the solver's stages and a COPY's batches of files.

Not ``concurrent.futures``: it imports ``logging`` (with ``traceback``, ``tokenize``,
``textwrap``), ~15 ms of every build's start-up (``registry.transfer.copier`` does without it
for the same reason).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

TYPE_CHECKING = False  # not ``typing``'s (see ARCHITECTURE's "Start-up budget")
if TYPE_CHECKING:
    from typing import Any

#: how long the calling (main) thread sleeps at a time: a Ctrl-C whose SIGINT the kernel handed
#: to a worker thread reaches the main thread only when it wakes up
SLICE = 0.2


class Job:
    """One submitted call: ``done`` once it returned or raised (``value`` or ``error``)."""

    __slots__ = ("fn", "tag", "done", "value", "error")

    def __init__(self, fn: Callable[[], Any], tag: Any) -> None:
        self.fn = fn
        self.tag = tag
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


class Pool:
    """Calls run on at most *workers* threads, started as jobs come (none before the first), in
    the order submitted. ``close`` waits for the threads to end; a job not started by then
    runs unless ``close(cancel=True)``."""

    def __init__(self, workers: int, name: str) -> None:
        self.workers = max(workers, 1)
        self.name = name
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # the workers': a job queued, or close
        self._changed = threading.Condition(lock)  # the caller's: a job ended
        self._queue: deque[Job] = deque()
        self._ended: list[Job] = []
        self._threads = 0
        self._idle = 0
        self._closing = False
        # set when the last thread stops: waited on, not joined (a join interrupted by Ctrl-C
        # marks a live thread as stopped in Python 3.11, and it would not be waited for)
        self._stopped = threading.Event()
        self._stopped.set()

    def submit(self, fn: Callable[[], Any], tag: Any = None) -> Job:
        job = Job(fn, tag)
        with self._cond:
            assert not self._closing, "submit after close"
            self._queue.append(job)
            if self._idle:
                self._cond.notify()
            if len(self._queue) <= self._idle or self._threads >= self.workers:
                return job
            self._threads += 1
            self._stopped.clear()
            n = self._threads
        try:
            threading.Thread(target=self._work, name=f"{self.name}_{n - 1}").start()
        except BaseException:  # no thread (RuntimeError): the job is not queued, nor counted
            with self._cond:
                self._queue.remove(job)
                self._threads -= 1
                if not self._threads:
                    self._stopped.set()
            raise
        return job

    def _work(self) -> None:
        try:
            while True:
                with self._cond:
                    self._idle += 1
                    while not self._queue and not self._closing:
                        self._cond.wait()
                    self._idle -= 1
                    if not self._queue:
                        return
                    job = self._queue.popleft()
                try:
                    job.value = job.fn()
                except BaseException as e:  # noqa: BLE001 - handed to the caller
                    job.error = e
                with self._cond:
                    job.done = True
                    self._ended.append(job)
                    self._changed.notify_all()
        finally:
            with self._cond:
                self._threads -= 1
                if not self._threads:
                    self._stopped.set()

    def ended(self, timeout: float = SLICE) -> list[Job]:
        """The jobs that ended since the last call, in the order they ended; waits up to
        *timeout* for one when none has."""
        with self._cond:
            if not self._ended:
                self._changed.wait(timeout)
            ended, self._ended = self._ended, []
        return ended

    def drop(self) -> list[Job]:
        """Take what no thread started yet off the queue (it will not run); returned."""
        with self._cond:
            dropped = list(self._queue)
            self._queue.clear()
        return dropped

    def close(self, *, cancel: bool = False) -> list[Job]:
        """No more jobs: wait (in slices) until the threads have run what is queued and ended;
        *cancel*: what no thread started is dropped (and returned). On Ctrl-C while waiting,
        the queue is dropped, the running jobs waited for, and the interrupt raised."""
        dropped = self.drop() if cancel else []
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        try:
            while not self._stopped.wait(SLICE):
                pass
        except BaseException:
            with self._cond:
                self._queue.clear()
            self._stopped.wait()
            raise
        return dropped
