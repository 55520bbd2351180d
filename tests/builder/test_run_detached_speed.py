"""What ``run -d`` and ``rm -f`` changed for their speed keeps Docker's behaviour. Real
``pybuild`` subprocesses, no mocks.

* ``run -d`` forks its supervisor before it creates the container (``detached.Forked``): the
  supervisor loads the sandbox's modules and the attach server meanwhile, so the command's own
  process loads none of them; a creation that fails ends that supervisor unused;
* ``rm -f`` of a running container: ``kill``, ``die`` (its supervisor's, which no longer waits
  for the remover's lock), then ``destroy``, as dockerd orders them;
* a detached run's attach socket is served from its first start on (its clients are accepted
  once the start is reported).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from test_startup_budget import loaded

#: what the supervisor of a detached run loads, and the CLI's own process no longer does
SUPERVISOR_ONLY = {"builder.core.sandbox.executor", "builder.runtime.containers.attach", "socket",
                   "threading"}


def _processes_of(root: Path) -> list[str]:
    """The command lines of the live processes that name the state root *root*."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{d}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if str(root) in cmd and state != "Z":
            out.append(f"{d}: {cmd.strip()}")
    return out


def test_run_d_leaves_the_sandbox_modules_to_its_supervisor(busybox: Any, tmp_path: Path) -> None:
    busybox("run", "--rm", "--network", "none", "busybox", "true")  # warm: its layers unpacked
    argv = ["--root", str(busybox.root), "run", "-d", "--name", "light", "--network", "none",
            "busybox", "sleep", "1000"]
    mods = loaded(argv, tmp_path)
    assert "builder.runtime.containers.supervisor" in mods
    assert not mods & SUPERVISOR_ONLY, sorted(mods & SUPERVISOR_ONLY)
    # and its supervisor, which loaded them, runs the container and serves its attach socket
    assert busybox("inspect", "-f", "{{.State.Running}}", "light").stdout.strip() == "true"
    assert (busybox.root / "containers" / _id(busybox, "light") / "attach.sock").exists()
    busybox("rm", "-f", "light")


def _id(pb: Any, name: str) -> str:
    return str(pb("inspect", "-f", "{{.Id}}", name).stdout.strip())


def test_a_failed_creation_ends_the_supervisor_forked_for_it(busybox: Any) -> None:
    """The supervisor forked before the creation reads that nothing was created and ends: no
    process is left for the root, whatever refused the container."""
    busybox("run", "-d", "--name", "taken", "--network", "none", "busybox", "sleep", "1000")
    for argv, says in ((["--name", "taken"], "already in use"),
                       (["--stop-timeout", "-5"], "invalid --stop-timeout"),
                       (["--pull", "never", "--name", "noimage"], "")):
        image = "nosuch:image" if "noimage" in argv else "busybox"
        r = busybox("run", "-d", "--network", "none", *argv, image, "sleep", "1000", check=False)
        assert r.returncode == 125, r
        assert says in r.stderr
    busybox("rm", "-f", "taken")
    deadline = time.monotonic() + 5  # a supervisor that found its record gone may take a moment
    while _processes_of(busybox.root) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_of(busybox.root) == []
    assert busybox("ps", "-aq").stdout.strip() == ""


def test_rm_f_events_in_dockers_order(busybox: Any) -> None:
    since = str(int(time.time()) - 1)
    for _ in range(3):  # the order is the removal's, not a race's outcome
        busybox("run", "-d", "--name", "ordered", "--network", "none", "busybox", "sleep", "1000")
        busybox("rm", "-f", "ordered")
    until = str(int(time.time()) + 1)
    out = busybox("events", "--since", since, "--until", until, "--filter", "container=ordered",
                  "--format", "{{.Action}}").stdout.split()
    assert out == ["create", "start", "kill", "die", "destroy"] * 3


def test_attach_right_after_run_d_gets_the_output(busybox: Any) -> None:
    """A client that connects as soon as ``run -d`` returned waits in the socket's backlog
    until the supervisor accepts it, then gets what the container writes from then on."""
    cid = busybox("run", "-d", "--network", "none", "busybox", "sh", "-c",
                  "sleep 1; echo one; echo two").stdout.strip()
    r = busybox("attach", cid, timeout=60)
    assert r.stdout.split() == ["one", "two"]
    busybox("rm", "-f", cid)
