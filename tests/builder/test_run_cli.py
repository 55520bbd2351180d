"""``pybuild run`` in the foreground (issue 4's acceptance through the one registered command), on an
image imported into the store from the offline busybox tar.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_sandbox_support import (
    all_pybuild_cgroups,
    assert_no_new_cgroups,
    descendants,
    mountinfo,
    tree_digest,
)

REPO = Path(__file__).resolve().parents[2]
_BIN = Path(sys.executable).parent / "pybuild"
CLI = [str(_BIN)] if _BIN.exists() else [sys.executable, "-m", "builder.cli"]

ISOLATION = r"""
echo "pid=$$"
echo "hostname=$(hostname)"
echo "links=$(ip -o link | awk -F': ' '{print $2}' | tr '\n' ' ')"
set -- /proc/[0-9]*; echo "procs=$#"
grep -q /work /proc/self/mountinfo && echo host-mounts-visible
[ "$(head -c 1 /proc/kcore 2>/dev/null | wc -c)" -gt 0 ] && echo kcore-readable
mount -t tmpfs x /tmp 2>/dev/null && echo mount-worked
(echo 1 > /proc/sys/kernel/domainname) 2>/dev/null && echo proc-sys-writable
echo "id=$(id)"
echo "env=$FOO,$HOSTNAME,$BAR"
echo "cwd=$(pwd)"
echo data > /home/app/written && echo wrote
"""


@pytest.fixture
def guard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Mounts, cgroups and our child processes are back to what they were."""
    scope = str(tmp_path_factory.getbasetemp())
    mounts, cgroups, children = mountinfo(scope), all_pybuild_cgroups(), descendants()
    yield
    assert mountinfo(scope) == mounts
    assert_no_new_cgroups(cgroups)
    assert descendants() == children


def leftovers(root: Path) -> list[Path]:
    """What a run left under the state root: files under ``run/`` (the remembered overlay probe
    and empty per-kind directories are no leftovers) and container records."""
    run = root / "run"
    files = [p for p in run.rglob("*") if not p.is_dir() and p.name != ".overlay-ok"] if run.exists() else []
    # container records are directories named by ID (dot-files are bookkeeping: the overlay
    # probe, exit codes of --rm containers kept for `wait`)
    records = [p for p in (root / "containers").iterdir() if not p.name.startswith(".")] \
        if (root / "containers").exists() else []
    return files + records


def run(busybox: Any, *args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "--root", str(busybox.root), "run", *args], capture_output=True, text=True,
                          input=input, timeout=timeout, cwd=REPO)


def test_isolation_through_the_command(busybox: Any, tmp_path: Path, guard: None) -> None:
    layers_before = tree_digest(busybox.root / "layers") if (busybox.root / "layers").exists() else ""
    env_file = tmp_path / "env"
    env_file.write_text("# comment\nBAR=from-file\n\n")
    r = run(busybox, "--rm", "--network", "none", "--hostname", "clibox", "-u", "app", "-e", "FOO=foo", "--env-file", str(env_file),
             "-w", "/home/app", "busybox", "sh", "-c", ISOLATION)
    assert r.returncode == 0, r.stderr
    lines = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    assert lines["pid"] == "1" and lines["hostname"] == "clibox"
    assert lines["links"].split() == ["lo"]  # a new net namespace with only loopback
    assert lines["procs"] == "1"  # only the shell: the host's processes are invisible
    for bad in ("host-mounts-visible", "kcore-readable", "mount-worked", "proc-sys-writable"):
        assert bad not in r.stdout
    assert lines["id"] == "uid=1000(app) gid=1000(app) groups=50(staff),1000(app)"
    assert lines["env"] == "foo,clibox,from-file" and lines["cwd"] == "/home/app"
    assert "wrote" in r.stdout
    # the write went to the container's own layer: the layer cache holds no trace of it
    layer_dirs = list((busybox.root / "layers").iterdir())
    assert not any((d / "home" / "app" / "written").exists() for d in layer_dirs)
    if layers_before:
        assert tree_digest(busybox.root / "layers") == layers_before
    assert not leftovers(busybox.root)


@pytest.mark.parametrize("code", [0, 3])
def test_exit_codes(busybox: Any, code: int, guard: None) -> None:
    r = run(busybox, "busybox", "sh", "-c", f"exit {code}")
    assert r.returncode == code


def test_oom_gives_137(busybox: Any, guard: None) -> None:
    r = run(busybox, "--memory", "64m", "busybox", "dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1")
    assert r.returncode == 137


def test_pids_limit_and_entrypoint(busybox: Any, guard: None) -> None:
    r = run(busybox, "--pids-limit", "10", "--entrypoint", "sh", "busybox", "-c",
             "sh -c 'while :; do sleep 600 & done' 2>/dev/null; set -- /proc/[0-9]*; echo $#")
    assert r.returncode == 0 and int(r.stdout) <= 10


def _line(fd: int) -> str:
    buf = b""
    deadline = time.monotonic() + 15
    while not buf.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, buf
        chunk = os.read(fd, 1)
        assert chunk, buf
        buf += chunk
    return buf.decode().strip()


@pytest.mark.parametrize(("sig", "name"), [(signal.SIGTERM, "TERM"), (signal.SIGINT, "INT")])
def test_signals_reach_the_container(busybox: Any, sig: int, name: str, guard: None) -> None:
    script = f'trap "echo got-{name}; exit 42" {name}; echo ready; while :; do sleep 0.05; done'
    p = subprocess.Popen([*CLI, "--root", str(busybox.root), "run", "busybox", "sh", "-c", script],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        assert p.stdout is not None
        assert _line(p.stdout.fileno()) == "ready"
        p.send_signal(sig)
        assert _line(p.stdout.fileno()) == f"got-{name}"
        assert p.wait(15) == 42
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        assert p.stdout is not None and p.stderr is not None
        p.stdout.close()
        p.stderr.close()


def test_runtime_runc_gives_the_same_results(busybox: Any, guard: None) -> None:
    script = ISOLATION.replace("echo data > /home/app/written && echo wrote", "exit 3")
    ours = run(busybox, "--rm", "--network", "none", "--hostname", "twin", "-u", "app", "-e", "FOO=x", "busybox", "sh", "-c", script)
    runc = run(busybox, "--rm", "--network", "none", "--runtime", "runc", "--hostname", "twin", "-u", "app", "-e", "FOO=x",
                "busybox", "sh", "-c", script)
    assert ours.returncode == runc.returncode == 3
    assert ours.stdout == runc.stdout
    oom = run(busybox, "--runtime", "runc", "--memory", "64m", "busybox", "dd", "if=/dev/zero",
               "of=/dev/null", "bs=200M", "count=1")
    assert oom.returncode == 137


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--pull", "never", "nosuch:latest", "true"], 125, "No such image: nosuch:latest"),
    (["busybox", "no-such-command"], 127, 'exec: "no-such-command": executable file not found'),
    (["busybox", "/etc/passwd"], 126, "permission denied"),
    (["--network", "nosuch", "busybox", "true"], 125, "network nosuch not found"),
    (["-p", "1:2:3:4", "busybox", "true"], 125, "invalid"),
    (["--memory", "lots", "busybox", "true"], 125, "invalid memory size 'lots'"),
    (["--env-file", "/nonexistent/env", "busybox", "true"], 125, "/nonexistent/env"),
    (["-u", "ghost", "busybox", "true"], 125, "unable to find user ghost"),
    (["--runtime", "/nonexistent/runc", "busybox", "true"], 125, "OCI runtime"),
    (["--cap-add", "NOT_A_CAP", "busybox", "true"], 125, "unknown capability"),
])
def test_bad_input(busybox: Any, args: list[str], code: int, message: str, guard: None) -> None:
    r = run(busybox, "--rm", *args)
    assert r.returncode == code, r.stderr
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not leftovers(busybox.root)


def test_registered_pybuild_run_uses_the_core(busybox: Any, guard: None) -> None:
    r = busybox("run", "--rm", "--network", "none", "--hostname", "reg", "busybox", "sh", "-c",
                "echo $$ $(hostname) $(ip -o link | wc -l); exit 3", check=False)
    assert r.returncode == 3, r.stderr
    assert r.stdout.split() == ["1", "reg", "1"]


def test_tty_and_interactive(busybox: Any, guard: None) -> None:
    """-it on a terminal: the container gets a pty of our size; what we type reaches it."""
    from builder.base.syscalls import real

    master, slave = os.openpty()
    real().set_winsize(slave, 33, 101)
    p = subprocess.Popen([*CLI, "--root", str(busybox.root), "run", "-i", "-t", "busybox", "sh", "-c",
                          "test -t 0 && echo is-a-tty; stty size; read line; echo got:$line"],
                         stdin=slave, stdout=slave, stderr=slave, cwd=REPO, start_new_session=True)
    os.close(slave)
    out = b""
    try:
        deadline = time.monotonic() + 30
        sent = False
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            if not sent and b"33 101" in out:
                os.write(master, b"hello\r")
                sent = True
            if p.poll() is not None and not ready:
                break
        assert p.wait(15) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
    text = out.decode(errors="replace")
    assert "is-a-tty" in text and "33 101" in text and "got:hello" in text


def test_sigkill_of_the_container_gives_137(busybox: Any, guard: None) -> None:
    p = subprocess.Popen([*CLI, "--root", str(busybox.root), "run", "busybox", "sh", "-c", "echo ready; sleep 60"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        assert p.stdout is not None
        assert _line(p.stdout.fileno()) == "ready"
        # the container's init: the shell, or `sleep` when the shell exec'd its last command
        inits = [pid for pid, comm in descendants(p.pid) if comm in ("sh", "sleep")]
        assert inits
        os.kill(min(inits), signal.SIGKILL)  # the first made: PID 1 of the sandbox
        assert p.wait(15) == 137
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
            from builder.base.state import StateRoot
            from builder.core.sandbox import reap_stale

            time.sleep(0.5)
            reap_stale(StateRoot.open(busybox.root))
        assert p.stdout is not None and p.stderr is not None
        p.stdout.close()
        p.stderr.close()


def test_a_killed_foreground_run_is_cleaned_up(busybox: Any, guard: None) -> None:
    """The CLI of ``run --rm`` killed with SIGKILL: its container dies with it, and the next
    command that looks (``ps -a``) finds it dead and does what ``--rm`` would have done."""
    p = subprocess.Popen([*CLI, "--root", str(busybox.root), "run", "--rm", "--network", "none",
                          "busybox", "sh", "-c", "echo ready; sleep 60"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        assert p.stdout is not None
        assert _line(p.stdout.fileno()) == "ready"
        p.kill()
        p.wait(15)
        deadline = time.monotonic() + 15
        while descendants() and time.monotonic() < deadline:  # the container follows its CLI
            time.sleep(0.05)
        r = busybox("ps", "-a", "-q")
        assert r.stdout.strip() == ""
        assert not leftovers(busybox.root)
    finally:
        assert p.stdout is not None and p.stderr is not None
        p.stdout.close()
        p.stderr.close()
