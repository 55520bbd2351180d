"""A container's state machine under its record's lock: who is alive (pid + start time), the
repair of a record whose supervisor died (a half-made start included) and the removal.

created -> starting (created + a claimed supervisor) -> running -> restarting/exited -> removing
-> gone. A start holds the lock from its claim to ``running``; ``rm`` from ``removing`` to gone;
whoever takes the lock and finds a dead owner's state repairs it (``lifecycle.refresh``).
"""

from __future__ import annotations

import _signal  # not signal (its enums, ~1 ms): the numbers are enough
import contextlib
import os
import select
import time
from collections.abc import Callable

from builder.base.values import replace
from builder.runtime.containers import runtime
from builder.runtime.containers.options import rfc3339nano
from builder.runtime.containers.record import Container, ContainerStore, alive
from builder.runtime.containers.recordparts import State


def supervisor_alive(state: State) -> bool:
    return alive(state.supervisor_pid, state.supervisor_start)


def init_alive(state: State) -> bool:
    return alive(state.pid, state.pid_start)


def wait_gone(pid: int, start: int, timeout: float) -> bool:
    """Whether process *pid* (started at *start*) is gone within *timeout* seconds: woken by
    its pidfd the moment it exits (no polling with sleeps), re-checked against its start time
    (a zombie counts as gone, a reused pid too)."""
    deadline = time.monotonic() + timeout
    try:
        fd = os.pidfd_open(pid)
    except OSError:  # already gone (or a kernel without pidfds: then the short sleeps below)
        fd = -1
    try:
        delay = 0.002
        while alive(pid, start):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if fd >= 0:
                select.select([fd], [], [], min(left, 1.0))
                if alive(pid, start):  # readable yet alive: a zombie's siblings, or a reused pid
                    time.sleep(min(delay, left))
                    delay = min(delay * 2, 0.05)
            else:
                time.sleep(min(delay, left))
                delay = min(delay * 2, 0.05)
        return True
    finally:
        if fd >= 0:
            os.close(fd)


def repair_locked(cs: ContainerStore, c: Container) -> State:
    """Under *c*'s lock: if its supervisor is dead, kill what it left running, tear down from
    the persisted state (and what an interrupted start may not have recorded) and save the
    state it ends in: ``exited`` (137 if it was running) or, for a first start that never
    finished, ``created``. Returns the state, repaired or as it was."""
    st = c.state
    if not (st.running or st.starting or st.status == "removing") or supervisor_alive(st):
        return st
    killed = False
    if init_alive(st):
        # the supervisor died under the container: nobody would reap or log it any more
        with contextlib.suppress(ProcessLookupError):
            os.kill(st.pid, _signal.SIGKILL)
        killed = True
        wait_gone(st.pid, st.pid_start, 5.0)
    runtime.teardown(cs.root, c, st, crashed=True)
    _reap_dead_unpacks(cs)  # a layer the killed start was unpacking
    if st.status == "removing":
        return st
    if st.starting:
        st = replace(st, supervisor_pid=0, supervisor_start=0, sandbox=None, endpoints={},
                     error=st.error or "the start was interrupted: its supervisor ended")
        cs.save_state(c.id, st)
        return st
    # a container still marked running died with its supervisor (the sandbox's helper kills
    # it on the supervisor's death, or we just did): that is a SIGKILL, 137. A restarting
    # one had already ended and recorded its own code.
    was_running = st.status == "running"
    st = replace(
        st,
        status="exited",
        exit_code=137 if killed or was_running else st.exit_code,
        error=st.error or "supervisor ended unexpectedly",
        finished_at=rfc3339nano() if was_running else st.finished_at,
        pid=0,
        pid_start=0,
        supervisor_pid=0,
        supervisor_start=0,
        sandbox=None,
        endpoints={},
        paused=False,
    )
    cs.save_state(c.id, st)
    return st


def remove_locked(cs: ContainerStore, c: Container, *, volumes: bool,
                  killing: Callable[[Container], None] | None = None) -> tuple[Container, bool]:
    """Under *c*'s lock: mark it ``removing``, kill its processes, tear down, delete it; the
    record as it went, and whether a process had to be killed (*killing* is called just
    before: the ``kill`` event, ahead of the ``die`` its supervisor records once woken by the
    end). Its supervisor, if any, sees the record ``removing`` (or gone) and ends."""
    was = c.state
    crashed = (was.running or was.starting or was.status == "removing") and not supervisor_alive(was)
    st = replace(was, status="removing", stopped_by_user=True)
    cs.save_state(c.id, st)
    killed = init_alive(st)
    if killed:
        if killing is not None:
            killing(c.with_state(st))
        with contextlib.suppress(ProcessLookupError):
            os.kill(st.pid, _signal.SIGKILL)
        wait_gone(st.pid, st.pid_start, 10.0)
    runtime.teardown(cs.root, c, st, crashed=crashed)
    runtime.remove_storage(cs.root, c, volumes=volumes)
    _reap_dead_unpacks(cs)  # a layer a killed create or start was unpacking
    cs.delete(c.id)
    return c.with_state(st), killed


def _reap_dead_unpacks(cs: ContainerStore) -> None:
    # the names alone, by prefix: a pathlib glob compiles its pattern into a regex (~0.7 ms
    # of every rm); ``rootfs`` (``.tmp-`` is its ``_UNPACK_PREFIX``) only when there is one
    try:
        with os.scandir(cs.root.layers) as entries:
            if not any(e.name.startswith(".tmp-") for e in entries):
                return
    except FileNotFoundError:
        return
    from builder.core.rootfs import reap_dead_unpacks

    reap_dead_unpacks(cs.root.layers)


def reap_supervisor(st: State) -> None:
    """After a removal: the supervisor ends once it finds the record gone; one that does not
    within a few seconds is killed."""
    if not st.supervisor_pid or st.supervisor_pid == os.getpid():
        return
    if not wait_gone(st.supervisor_pid, st.supervisor_start, 5.0):
        with contextlib.suppress(ProcessLookupError):
            os.kill(st.supervisor_pid, _signal.SIGKILL)
        wait_gone(st.supervisor_pid, st.supervisor_start, 5.0)
