"""Rootless limits through a delegated cgroup v2 subtree (issue 17; ``builder.core.sandbox.delegated``).

On the real v2 mount of this host (hybrid: memory, pids and cpu are bound to v1, so the v2 mount
lists no controllers), root delegates a directory to the test's user as systemd's
``user@UID.service`` does (the directory, its ``cgroup.procs`` and ``cgroup.subtree_control``
chowned to the user) and starts the user's command in a cgroup below it: pybuild finds the
delegated directory by walking up from its own cgroup and refuses a limit in one line naming it
and the missing controller. A host with the controllers on v2 (where the limits are written) is
not this one: that path is not exercised here.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_rootless import User, user  # noqa: E402,F401 - the module's ordinary user, by import

from builder.core.sandbox import cgroups  # noqa: E402


@contextlib.contextmanager
def delegated_to(user: User) -> Iterator[tuple[Path, Path]]:  # noqa: F811
    """``(delegated, inner)``: a directory of the real v2 mount delegated to *user* and a cgroup
    below it (root's, not the user's) to start the user's command in; removed at the end."""
    v2 = cgroups.detect().v2
    assert v2 is not None, "no cgroup2 mount on this host"
    top = Path(v2, f"pybuild-test-delegated-{os.getpid()}-{os.urandom(3).hex()}")
    top.mkdir()
    inner = top / "session"
    try:
        for p in (top, top / "cgroup.procs", top / "cgroup.subtree_control"):
            os.chown(p, user.uid, user.gid)
        inner.mkdir()
        yield top, inner
    finally:
        for d in (inner, top):
            deadline = time.monotonic() + 60
            while d.exists():
                try:
                    os.rmdir(d)
                except OSError:  # a process of the test still leaving it (a loaded machine)
                    if time.monotonic() > deadline:
                        left = [f"{pid} {_cmdline(pid)}" for pid in (d / "cgroup.procs").read_text().split()]
                        raise AssertionError(f"{d} cannot be removed; in it: {left}") from None
                    time.sleep(0.05)


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "?"


def pb_in(user: User, cgroup: Path, *args: str) -> subprocess.CompletedProcess[str]:  # noqa: F811
    """``pybuild ARGS`` as *user*, started in *cgroup* (root moves the wrapper there first)."""
    argv = user.argv(str(user.python), "-m", "builder.cli", *args)
    return subprocess.run(["sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec "$@"', "sh", *argv],
                          cwd=user.home, capture_output=True, text=True, timeout=120)


def test_delegated_subtree_without_controllers_refuses_in_one_line(user: User) -> None:  # noqa: F811
    with delegated_to(user) as (top, inner):
        assert (top / "cgroup.controllers").read_text().split() == []  # the host's, not made up
        for flag, value, ctrl in (("--memory", "64m", "memory"), ("--pids-limit", "20", "pids"),
                                  ("--cpus", "0.5", "cpu")):
            r = pb_in(user, inner, "run", "--rm", "--network", "none", flag, value, "busybox", "true")
            assert r.returncode != 0, r.stdout
            assert r.stderr.splitlines() == [
                f"Error: rootless: {flag} needs the {ctrl} controller, and the cgroup v2 subtree "
                f"delegated to this user ({top}) has no {ctrl} controller (cgroup.controllers: empty; "
                f"{ctrl} is bound to cgroup v1 on this host): run as root to set resource limits"], r.stderr
        # without a limit the same user runs there (no cgroup of its own made), and nothing is
        # left in the delegated directory
        r = pb_in(user, inner, "run", "--rm", "--network", "none", "busybox", "true")
        assert r.returncode == 0, r.stderr
        assert not (top / "pybuild").exists()
        assert [p.name for p in top.iterdir() if p.is_dir()] == ["session"]


def test_no_delegated_subtree_says_so(user: User) -> None:  # noqa: F811
    """Started in root's cgroups (nothing delegated): the v1 refusal, as before."""
    r = user.pb("run", "--rm", "--network", "none", "--pids-limit", "20", "busybox", "true", check=False)
    assert r.returncode != 0
    assert r.stderr.splitlines() == [
        "Error: rootless: --pids-limit needs a cgroup it can write, and this host has cgroup v1, whose "
        "hierarchies only root can write: run as root to set resource limits"], r.stderr
