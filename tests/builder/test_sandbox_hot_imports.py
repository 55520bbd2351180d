"""The sandbox's run path stays cheap (issue 15): its modules import no ``typing`` at run time,
and a start does not read every running sandbox of its state root (the stale-sandbox sweep
runs at most once every ``SWEEP_EVERY`` seconds per root, a start reaps its own id's leftover
at once). Real sandboxes, real files: what a start opens is seen by an audit hook in a fresh
interpreter.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_sandbox_support import HostSnapshot, new_id

from builder.base.state import StateRoot
from builder.core.rootfs import Root, prepare_root
from builder.core.sandbox import Executor, Process, Spec, default_mounts
from builder.core.sandbox.handle import SWEEP_STAMP

REPO = Path(__file__).resolve().parents[2]

#: the modules ``run --rm``/``run -d``/``rm -f``/``ps`` load from the sandbox, the root, the
#: layers, libc's calls and the network package's read API, and those a bridge run adds
RUN_PATH = ("builder.core.sandbox.executor", "builder.core.sandbox.seccomp", "builder.core.sandbox.handle",
            "builder.core.sandbox.cgroups", "builder.core.sandbox.delegated", "builder.core.rootfs",
            "builder.core.layers.view", "builder.network.records", "builder.network.core")
OURS = ("builder.core", "builder.base.syscalls", "builder.network.records", "builder.network")

#: which module imports each of the standard library modules named (an import statement of one
#: already loaded counts too)
IMPORTERS = r"""
import builtins, importlib, json, sys
WATCHED = ("typing", "threading", "selectors", "signal")
seen = {w: set() for w in WATCHED}
real = builtins.__import__
def watch(name, globals=None, locals=None, fromlist=(), level=0):
    top = name.partition(".")[0]
    if top in seen:
        seen[top].add((globals or {}).get("__name__", "?"))
    return real(name, globals, locals, fromlist, level)
builtins.__import__ = watch
for m in sys.argv[1:]:
    importlib.import_module(m)
print(json.dumps({w: sorted(s) for w, s in seen.items()}))
"""
#: the sandbox's own modules (the network package's bridge code runs threads of its own)
SANDBOX = ("builder.core", "builder.base.syscalls", "builder.network.records")


def test_the_run_path_imports_no_typing() -> None:
    """Every import statement of the run path's modules is seen (one already loaded too): none
    of ours names ``typing`` (annotation-only names sit under a ``TYPE_CHECKING`` constant), and
    none of the sandbox's ``threading`` (its two threads come from ``_thread``), ``selectors``
    (output is pumped with ``select.poll``) or ``signal`` (the numbers of ``_signal`` are enough)."""
    r = subprocess.run([sys.executable, "-c", IMPORTERS, *RUN_PATH], capture_output=True, text=True,
                       timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    importers = json.loads(r.stdout)
    assert [m for m in importers["typing"] if m.startswith(OURS)] == []
    sandbox = importers["threading"] + importers["selectors"] + importers["signal"]
    assert [m for m in sandbox if m.startswith(SANDBOX)] == []


# -- the per-start sweep -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> StateRoot:
    return StateRoot.open(tmp_path_factory.mktemp("hot-state"))


@pytest.fixture
def root(busybox_layer: Path, tmp_path: Path) -> Root:
    return prepare_root([busybox_layer], tmp_path / "c1")


def _spec(root: Root, *args: str, id: str | None = None) -> Spec:
    return Spec(process=Process(args=args), root=root, mounts=default_mounts(), hostname="box", id=id or new_id())


#: one ``true`` sandbox started and waited for in a fresh interpreter, with what it opened and
#: listed (audit events) printed
START = r"""
import json, os, sys
from pathlib import Path
from builder.base.state import StateRoot
from builder.core.rootfs import prepare_root
from builder.core.sandbox import Executor, Process, Spec, default_mounts
state_path, layer, where, sid = sys.argv[1:]
state = StateRoot.open(state_path)
root = prepare_root([Path(layer)], Path(where))
seen = []
def hook(event, args):
    if event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes, os.PathLike)):
        seen.append(os.fsdecode(args[0]))
sys.addaudithook(hook)
spec = Spec(process=Process(args=("true",)), root=root, mounts=default_mounts(), hostname="box", id=sid)
res = Executor(state).run(spec)
sys.addaudithook(lambda *a: None)
print(json.dumps({"status": res.exit_status, "seen": seen}))
"""


def _start_elsewhere(state: StateRoot, busybox_layer: Path, tmp_path: Path) -> list[str]:
    where = tmp_path / new_id()
    r = subprocess.run([sys.executable, "-c", START, str(state.path), str(busybox_layer), str(where), new_id()],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == 0
    return list(out["seen"])


def test_a_start_reads_no_running_sandbox_until_the_sweep_is_due(
    state: StateRoot, root: Root, busybox_layer: Path, tmp_path: Path, host: HostSnapshot
) -> None:
    running = [Executor(state).start(_spec(root, "sleep", "60"), stdout=subprocess.DEVNULL) for _ in range(3)]
    try:
        stamp = state.path / SWEEP_STAMP
        assert stamp.exists()  # the first of them swept, and said when
        theirs = [str(state.run / sb.id) for sb in running] + [f"/proc/{sb.pid}/" for sb in running]

        def touched(seen: list[str]) -> list[str]:
            return [p for p in seen if any(p == t or p.startswith(t.rstrip("/") + "/") for t in theirs)]

        now = time.time()
        os.utime(stamp, (now, now))  # (however slow the machine: the sweep is not due)
        seen = _start_elsewhere(state, busybox_layer, tmp_path)
        assert seen  # the hook saw the start's own files
        assert touched(seen) == []
        assert str(state.run) not in seen  # nor listed the run dirs
        # once the sweep is due, a start sweeps again: it reads each running sandbox's state
        old = time.time() - 3600
        os.utime(stamp, (old, old))
        seen = _start_elsewhere(state, busybox_layer, tmp_path)
        assert {str(state.run / sb.id / "state.json") for sb in running} <= set(seen)
        assert time.time() - stamp.stat().st_mtime < 600  # and said when
        assert all(sb.alive() for sb in running)  # a live sandbox is never taken for a stale one
    finally:
        for sb in running:
            sb.kill(signal.SIGKILL)
            sb.wait(10)


def test_a_start_takes_its_own_ids_leftover_at_once(
    state: StateRoot, root: Root, busybox_layer: Path, tmp_path: Path, host: HostSnapshot
) -> None:
    """A restart under the id of a sandbox whose owner was killed (SIGKILL): the sweep is not
    due, yet the start tears the leftover down and runs."""
    sid = new_id()
    r_fd, w_fd = os.pipe()
    owner = os.fork()
    if owner == 0:  # pragma: no cover - the doomed owner
        try:
            sb = Executor(state).start(_spec(root, "sleep", "60", id=sid), stdout=subprocess.DEVNULL)
            os.write(w_fd, f"{sb.pid}\n".encode())
            time.sleep(60)
        finally:
            os._exit(1)
    os.close(w_fd)
    with os.fdopen(r_fd) as f:
        init_pid = int(f.readline())
    os.kill(owner, signal.SIGKILL)
    os.waitpid(owner, 0)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{init_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not Path(f"/proc/{init_pid}").exists()  # it died with its owner
    assert (state.run / sid / "state.json").exists()  # and nobody tore it down yet
    now = time.time()
    os.utime(state.path / SWEEP_STAMP, (now, now))  # the sweep is not due
    res = Executor(state).run(_spec(root, "true", id=sid))
    assert res.exit_status == 0
    assert not (state.run / sid).exists()
