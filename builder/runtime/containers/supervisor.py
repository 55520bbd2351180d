"""The per-container supervisor (conmon's role): holds the sandbox, logs its output, records
its exit, applies the restart policy, runs the healthcheck, and tears everything down.

``Supervisor.run()`` is what a detached supervisor runs (``builder.runtime.containers.detached``
forks it) and what a foreground ``run`` executes in-process, with the caller's terminal
attached.
"""

from __future__ import annotations

import _signal  # not signal (its enums, ~1 ms at import): numbers and handlers are enough
import contextlib
import os
import time
from collections.abc import Callable

from builder.base.errors import BuildError, ContainerError
from builder.base.state import StateRoot
from builder.base.values import frozen, replace
from builder.runtime.containers import lifecycle, repair, runtime
from builder.runtime.containers.logfile import LogWriter
from builder.runtime.containers.options import RestartPolicy, rfc3339nano
from builder.runtime.containers.record import (
    EXIT_PREFIX,
    Container,
    ContainerStore,
    NoSuchContainer,
    alive,
    proc_start_time,
)
from builder.runtime.containers.recordparts import Health, HealthProbe, State

TYPE_CHECKING = False
if TYPE_CHECKING:
    import threading
    from typing import Any

    from builder.runtime.containers.attach import AttachServer
    from registry.store import Image

#: Docker's restart back-off: 100 ms doubling, reset after a run of 10 s or more
BACKOFF_START = 0.1
BACKOFF_MAX = 60.0
BACKOFF_RESET_AFTER = 10.0

#: how long a start waits for the clients that asked to attach before it (``attach_wait``)
ATTACH_WAIT = 10.0

#: signals a foreground ``run`` forwards to the container (Docker's --sig-proxy)
PROXY_SIGNALS = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT, _signal.SIGUSR1, _signal.SIGUSR2)


@frozen
class Attach:
    """A foreground run's terminal: where output goes and whether stdin/a tty are wired."""

    stdin: int | None  # fd to read from (``-i``), else None
    stdout: int
    stderr: int


@frozen
class Started:
    ok: bool
    exit_code: int = 0
    error: str = ""


class Supervisor:
    def __init__(self, root: StateRoot, cid: str, *, attach: Attach | None = None,
                 attach_wait: int = 0, image: Image | None = None) -> None:
        self.root = root
        self.attach_wait = attach_wait
        #: a detached supervisor's attach socket (``builder.runtime.containers.attach``)
        self.server: AttachServer | None = None
        self.cs = ContainerStore(root)
        self.cid = cid
        self.attach = attach
        #: the container's image as its creator resolved it (a foreground run): the first start
        #: builds its spec from it instead of looking it up again
        self.image = image
        self.me = os.getpid()
        self.me_start = proc_start_time(self.me)
        #: set when the supervisor itself is told to end (SIGTERM): no restart then
        self.terminating = False

    # -- state helpers -------------------------------------------------------------------------
    def _update(self, fn: Callable[[State], State]) -> State:
        return self.cs.update_state(self.cid, fn)

    def _stop_requested(self) -> bool:
        if self.terminating:
            return True
        try:
            st = self.cs.load(self.cid).state  # raises once the record is gone (rm -f)
        except ContainerError:
            return True
        return st.stopped_by_user or st.status == "removing"

    # -- the loop ------------------------------------------------------------------------------
    def _set(self, **changes: Any) -> State:
        return self.cs.update_state(self.cid, lambda s: replace(s, **changes))

    def run(self, ready: Callable[[Started], None]) -> int:
        """Start the container and supervise it until it ends for good; returns its exit code.
        *ready* is called once, after the first start succeeded or failed.

        Each start happens under the container's lock, from the claim of the record to its
        ``running`` state: ``rm -f``, ``stop`` and ``kill`` wait for it, then see a container
        fully started; a record removed (or marked for removal) meanwhile is not started."""
        try:
            c = self.cs.load(self.cid)
            log = LogWriter(self.cs.log_path(self.cid))
        except (ContainerError, OSError):
            ready(Started(False, 125, f"No such container: {self.cid}"))
            return 125
        policy = c.host_config.restart_policy
        if self.attach is None:
            # only a detached supervisor serves attach clients (socket, threads): a foreground
            # run has its terminal, and does not import them (``spawn`` did before its fork)
            from builder.runtime.containers.attach import SOCKET_NAME, AttachServer

            with contextlib.suppress(OSError):
                # as dockerd: a TTY's stdin stays open when its client leaves (detach, attach again)
                # its clients are accepted once the start is reported (they wait in the
                # socket's backlog meanwhile), unless the start waits for some
                self.server = AttachServer(self.cs.dir(self.cid) / SOCKET_NAME,
                                           stdin_once=bool(c.config.stdin_once and not c.config.tty),
                                           accept=bool(self.attach_wait))
        server = self.server
        first = True
        backoff = BACKOFF_START
        exit_code = 0
        removed = False
        try:
            while True:
                began = time.monotonic()
                stdin_r: int | None = None
                if server is not None:
                    if c.config.open_stdin:
                        stdin_r, stdin_w = os.pipe()
                        server.set_target(stdin_w, None)
                    if first and self.attach_wait:
                        # who attached before `start` (docker run) must see all the output
                        server.wait_clients(self.attach_wait, ATTACH_WAIT)
                hc = runtime.healthcheck_of(c)
                try:
                    word, proc, failure = self._start_locked(c, log, stdin_r, first=first, hc=hc)
                except NoSuchContainer:
                    word, proc, failure = "gone", None, None
                if proc is None:
                    if server is not None:
                        server.end_run()
                    if stdin_r is not None:
                        os.close(stdin_r)
                if word == "other":  # two `start`s at once: the first supervisor keeps it
                    ready(Started(True))
                    return 0
                if word in ("gone", "removing"):
                    msg = (f"No such container: {self.cid}" if word == "gone" else
                           f"container {self.cid} is marked for removal and cannot be started")
                    if first:
                        ready(Started(False, 125, msg))
                    removed = True
                    return 125 if first else exit_code
                if word == "stopped":  # stopped during the restart back-off
                    break
                if failure is not None:
                    code, msg = failure
                    if first:
                        ready(Started(False, code, msg))
                    return code
                assert proc is not None
                if self.terminating:  # told to end (SIGTERM) while it started: end it now
                    proc.sandbox.kill(_signal.SIGKILL)
                lifecycle.emit(self.root, c, "start")
                if first:
                    ready(Started(True))
                    first = False
                if server is not None:
                    server.accept_clients()
                if self.attach is not None and c.config.tty:
                    follow_window_size(proc.sandbox)
                if server is not None and c.config.tty:
                    server.set_resize(proc.sandbox.resize)
                end_health = self._start_health(c, hc) if hc is not None else None
                removing = False
                try:
                    outcome = proc.wait()
                finally:
                    if end_health is not None:
                        end_health()
                    log.flush()
                    if server is not None:
                        server.end_run()
                    if stdin_r is not None:
                        os.close(stdin_r)
                    removing = self._end_run(c)
                exit_code = outcome.exit_status
                if outcome.oom_killed:
                    lifecycle.emit(self.root, c, "oom")
                lifecycle.emit(self.root, c, "die", exitCode=str(exit_code))
                if removing:
                    # `rm -f` ended it: its remover holds the lock, tears down and deletes the
                    # record, then waits for us to end before its `destroy` (Docker's order:
                    # kill, die, destroy); nothing is left for us to record
                    removed = True
                    break
                try:
                    restart = self._record_exit(outcome, policy)
                except NoSuchContainer:  # removed (`rm -f`) while it ran
                    removed = True
                    break
                if not restart:
                    break
                if time.monotonic() - began >= BACKOFF_RESET_AFTER:
                    backoff = BACKOFF_START
                if self._sleep_unless_stopped(backoff):
                    with contextlib.suppress(NoSuchContainer):
                        self._set(status="exited", supervisor_pid=0, supervisor_start=0)
                    break
                backoff = min(backoff * 2, BACKOFF_MAX)
                try:
                    c = self.cs.load(self.cid)
                except NoSuchContainer:
                    removed = True
                    break
        finally:
            log.close()
            if server is not None:
                server.close()
        if removed:
            reap_children(REAP_WAIT)
        if c.host_config.auto_remove and not removed:
            # `wait` on an --rm container must still learn the exit code
            with contextlib.suppress(OSError):
                (self.root.containers / f"{EXIT_PREFIX}{self.cid}").write_text(str(exit_code))
            with contextlib.suppress(BuildError):
                lifecycle.destroy(self.root, self.cs.load(self.cid), volumes=True)
        return exit_code

    def _end_run(self, c: Container) -> bool:
        """Undo a run that ended: remember its networks for a next start, tear its sandbox and
        endpoints down. Not when ``rm -f`` ended it (returns True then): its remover holds the
        lock and tears the same persisted state down itself (two teardowns at once only slowed
        each other, and the remover then waits for this supervisor to end)."""
        with contextlib.suppress(Exception):
            # (a record its remover deleted already reads as no state: its directory is gone)
            if self.cs.load_state(self.cid).status == "removing" or not self.cs.dir(self.cid).is_dir():
                return True
        if not c.host_config.auto_remove:  # --rm: no next start to join them again
            with contextlib.suppress(Exception):
                lifecycle.remember_networks(self.root, self.cs.load(self.cid))
        with contextlib.suppress(Exception):
            runtime.teardown(self.root, c, self.cs.load_state(self.cid))
        return False

    def _start_locked(self, c: Container, log: LogWriter, stdin_r: int | None, *, first: bool,
                      hc: runtime.HealthConfig | None,
                      ) -> tuple[str, runtime.Launched | None, tuple[int, str] | None]:
        """One start, under the container's lock: (what happened, the launched container, the
        failure's exit code and message). Raises ``NoSuchContainer`` if the record is gone."""
        with self.cs.lock(self.cid):
            st = self.cs.load_state(self.cid)
            if st.status == "removing":
                return "removing", None, None
            if st.supervisor_pid != self.me and alive(st.supervisor_pid, st.supervisor_start):
                return "other", None, None
            if not first and (st.stopped_by_user or self.terminating):
                st = replace(st, status="exited", supervisor_pid=0, supervisor_start=0)
                self.cs.save_state(self.cid, st)
                return "stopped", None, None
            # a start or a supervisor killed before us left things half made: undo them first
            st = repair.repair_locked(self.cs, c.with_state(st))
            claimed = replace(st, supervisor_pid=self.me, supervisor_start=self.me_start)
            if first:
                claimed = replace(claimed, stopped_by_user=False, error="")
            self.cs.save_state(self.cid, claimed)
            image, self.image = self.image, None  # a restart looks it up again
            try:
                proc = runtime.launch(self.root, c, stdout=self._sink(log, "stdout"),
                                      stderr=self._sink(log, "stderr"),
                                      attach_stdin=self.attach.stdin if self.attach else stdin_r,
                                      image=image)
            except Exception as e:  # noqa: BLE001 - any failure to start is reported, not raised
                code = e.exit_code if isinstance(e, BuildError) else 125
                msg = str(e) if isinstance(e, BuildError) else f"{type(e).__name__}: {e}"
                if first:
                    failed = replace(claimed, status="created", error=msg, pid=0, pid_start=0,
                                     supervisor_pid=0, supervisor_start=0)
                else:
                    failed = replace(claimed, status="exited", error=msg, exit_code=code, pid=0,
                                     pid_start=0, supervisor_pid=0, supervisor_start=0,
                                     finished_at=rfc3339nano())
                self.cs.save_state(self.cid, failed)
                return "failed", None, (code, msg)
            self.cs.save_state(self.cid, replace(
                claimed, status="running", pid=proc.pid, pid_start=proc_start_time(proc.pid),
                started_at=rfc3339nano(), exit_code=0, oom_killed=False, error="",
                sandbox=proc.persisted(), endpoints=proc.endpoints,
                health=Health() if hc is not None else None))
            return "started", proc, None

    def _record_exit(self, outcome: Any, policy: RestartPolicy) -> bool:
        """The end of a run in the record, under the lock; whether the policy restarts it."""
        exit_code = outcome.exit_status
        with self.cs.lock(self.cid):
            st = self.cs.load_state(self.cid)
            if st.status == "removing":  # its remover was killed: whoever locks next finishes
                self.cs.save_state(self.cid, replace(st, pid=0, pid_start=0, supervisor_pid=0,
                                                     supervisor_start=0))
                return False
            with contextlib.suppress(ContainerError):  # `update --restart` changes it live
                policy = self.cs.load(self.cid).host_config.restart_policy
            restart = policy.should_restart(exit_code=exit_code, restarts=st.restart_count,
                                            stopped_by_user=st.stopped_by_user or self.terminating)
            st = replace(
                st, status="restarting" if restart else "exited", exit_code=exit_code,
                oom_killed=outcome.oom_killed, finished_at=rfc3339nano(), pid=0, pid_start=0,
                sandbox=None, endpoints={}, paused=False,
                restart_count=st.restart_count + int(restart),
                supervisor_pid=self.me if restart else 0,
                supervisor_start=self.me_start if restart else 0)
            self.cs.save_state(self.cid, st)
        return restart

    def _sink(self, log: LogWriter, stream: str) -> Callable[[bytes], None]:
        """Each chunk of output goes to the log, and to our terminal when attached."""
        out = None
        if self.attach is not None:
            out = self.attach.stdout if stream == "stdout" else self.attach.stderr

        server = self.server
        kind = 0
        if server is not None:
            from builder.runtime.containers.attach import STDERR, STDOUT

            kind = STDOUT if stream == "stdout" else STDERR

        def sink(data: bytes) -> None:
            log.feed(stream, data)
            if server is not None:
                server.broadcast(kind, data)
            if out is not None:
                with contextlib.suppress(OSError):
                    _write_all(out, data)

        return sink

    def _sleep_unless_stopped(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._stop_requested():
                return True
            time.sleep(min(0.05, max(deadline - time.monotonic(), 0)))
        return self._stop_requested()

    # -- healthcheck ---------------------------------------------------------------------------
    def _start_health(self, c: Container, hc: runtime.HealthConfig) -> Callable[[], None]:
        """Run the healthcheck in a thread until the returned function is called (it stops the
        thread and waits for it)."""
        # only a container with a healthcheck runs a thread: run --rm loads no threading (run -d
        # does, for its attach server)
        import threading

        stop = threading.Event()
        t = threading.Thread(target=self._health_loop, args=(c, hc, stop), daemon=True)
        t.start()

        def end() -> None:
            stop.set()
            t.join()
        return end

    def _health_loop(self, c: Container, hc: runtime.HealthConfig, stop: threading.Event) -> None:
        began = time.monotonic()
        while not stop.wait(hc.interval):
            start = rfc3339nano()
            try:
                code, output = runtime.exec_capture(self.root, self.cs.load(self.cid), hc.test, timeout=hc.timeout)
            except BuildError as e:
                code, output = -1, str(e)
            end = rfc3339nano()
            in_grace = time.monotonic() - began < hc.start_period
            entry = HealthProbe(start, end, code, output[-4096:])

            before: list[str] = []

            def apply(s: State, code: int = code, entry: HealthProbe = entry,
                      in_grace: bool = in_grace, before: list[str] = before) -> State:
                h = s.health or Health()
                before[:] = [h.status]
                log = (*h.log, entry)[-5:]
                if code == 0:
                    return replace(s, health=Health("healthy", 0, log))
                if in_grace:
                    return replace(s, health=Health(h.status, h.failing_streak, log))
                streak = h.failing_streak + 1
                status = "unhealthy" if streak >= hc.retries else h.status
                return replace(s, health=Health(status, streak, log))

            with contextlib.suppress(ContainerError):
                now = self._update(apply).health
                if now is not None and before and now.status != before[0]:
                    # as dockerd: an event when the status changes (docker events
                    # --filter event=health_status)
                    lifecycle.emit(self.root, c, f"health_status: {now.status}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            time.sleep(0.001)
            continue
        view = view[n:]


# -- detached supervisors ---------------------------------------------------------------------
#: how long a supervisor whose container was removed waits for its children to end
REAP_WAIT = 2.0


def reap_children(timeout: float) -> None:
    """Reap this process's children as they end, until it has none or *timeout* passed. A
    removal (``rm -f``) kills what the run started (a rootless container's slirp4netns, the
    sandbox's helper) but cannot reap it, not being its parent; reaped here, none outlives the
    remover's wait for this supervisor as a zombie (left to init, it showed in ``ps`` for a
    moment after ``rm -f`` returned)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            if time.monotonic() >= deadline:
                return
            time.sleep(0.002)


# -- a foreground run -------------------------------------------------------------------------
def run_foreground(root: StateRoot, cid: str, *, interactive: bool, tty_mode: bool,
                   on_started: Callable[[Started], None], image: Image | None = None) -> int:
    """``run`` without ``-d``: supervise in this process with our stdio attached; signals we
    receive go to the container; a terminal is put in raw mode for ``-t``. *image*: the
    container's, as ``create`` resolved it."""
    attach = Attach(stdin=0 if interactive else None, stdout=1, stderr=2)
    sup = Supervisor(root, cid, attach=attach, image=image)

    pending: list[int] = []  # signals that came before the container ran: delivered at start

    def forward(signum: int, frame: Any) -> None:
        st = sup.cs.load_state(cid)
        if st.pid and st.status == "running":
            with contextlib.suppress(ProcessLookupError):
                os.kill(st.pid, signum)
        else:
            pending.append(signum)

    def started(s: Started) -> None:
        on_started(s)
        st = sup.cs.load_state(cid)
        while s.ok and pending and st.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(st.pid, pending.pop(0))

    old = {s: _signal.signal(s, forward) for s in PROXY_SIGNALS}
    saved_tty = None
    if tty_mode and interactive and os.isatty(0):
        import termios
        import tty

        saved_tty = termios.tcgetattr(0)
        tty.setraw(0, termios.TCSANOW)  # TCSAFLUSH would drop typed-ahead input
    try:
        return sup.run(started)
    finally:
        if saved_tty is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, saved_tty)
        for s, h in old.items():
            _signal.signal(s, h)


def follow_window_size(sandbox: Any) -> None:
    """Our terminal's size onto the container's pty, now and on every SIGWINCH."""
    stdio = getattr(sandbox, "_stdio", None)  # the executor keeps the pty master there
    master = getattr(stdio, "pty_master", None)
    if master is None or not os.isatty(0):
        return
    from builder.base.syscalls import real

    sys_ = real()

    def resize(*_: Any) -> None:
        with contextlib.suppress(OSError):
            rows, cols = sys_.get_winsize(0)
            sys_.set_winsize(master, rows, cols)

    resize()
    _signal.signal(_signal.SIGWINCH, resize)
