"""Issue 22, item 3: a container is fully started and visible, or fully torn down, whatever
``rm -f``, SIGKILL or Ctrl-C (SIGINT) does at any moment of its start.

Each test is a seeded loop bounded in time (the seed is in the failure message): several
``pybuild run -d -p 127.0.0.1::80 busybox sleep …`` racing ``rm -f $(ps -aq)``, and SIGKILL/
SIGINT of ``run -d`` and of a foreground ``run`` at random moments of their start. After each
round ``ps -a`` must agree with what runs, and nothing of the root may remain on the host (a
process, mount, netns file, run dir, veth, iptables rule or cgroup) beyond what the
containers still running need; once every container is removed, the root is tidy
(``root_tidy.assert_root_tidy``: ``system check`` clean, nothing of the root on the host or on
disk beyond its images; its images saved and run at the end of each test). Real namespaces,
bridges, iptables and cgroups throughout.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from root_tidy import assert_root_tidy

Pybuild = Any  # the runner from tests/conftest.py

#: the command of every container here: finding its processes by command line is exact (the
#: pid makes it this session's: another session may run these tests at the same time)
SLEEP = str(7_000_000 + os.getpid())
#: seconds each test's loop may start new rounds for (each round then finishes)
BUDGET = 32.0
SEED = int(os.environ.get("PYBUILD_RACE_SEED", "22"))


def _popen(pb: Pybuild, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYBUILD_ROOT"}
    return subprocess.Popen([*pb.command, "--root", str(pb.root), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env)


def _ps(pb: Pybuild) -> dict[str, str]:
    """``ps -a``: full id -> status text."""
    out = pb("ps", "-a", "--no-trunc", "--format", "{{.ID}}\t{{.Status}}").stdout
    return dict(line.split("\t", 1) for line in out.splitlines() if line.strip())


def _running_ids(pb: Pybuild) -> set[str]:
    return {cid for cid, status in _ps(pb).items() if status.startswith("Up")}


def _sleepers() -> list[int]:
    """Host pids of the containers' ``sleep SLEEP`` processes (every root's of this session: one
    test runs at a time in it, and the leak guard's scope covers the rest)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        if cmd[:2] == [b"sleep", SLEEP.encode()] and stat.rpartition(")")[2].split()[0] != "Z":
            out.append(int(d))
    return out


def _network_ids(pb: Pybuild) -> list[str]:
    out = []
    for p in (pb.root / "networks").glob("*.json"):
        try:
            out.append(str(json.loads(p.read_text())["Id"]))
        except (OSError, ValueError, KeyError):
            continue
    return out


def _leftovers(pb: Pybuild, ids: set[str], running: set[str]) -> list[str]:
    """What the root still has on the host for the containers *ids* (every one a test made)
    that are not in *running*: each piece named."""
    gone = ids - running
    bad: list[str] = []
    root = str(pb.root)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if root in line and not any(cid in line for cid in running):
            bad.append(f"mount: {' '.join(line.split()[3:5])}")
    for sub in ("run/netns", "run/net", "run"):
        d = pb.root / sub
        if d.is_dir():
            bad += [f"{sub}/{p.name}" for p in d.iterdir() if p.name in gone]
    cdir = pb.root / "containers"
    if cdir.is_dir():
        bad += [f"containers/{p.name}" for p in cdir.iterdir() if p.name.startswith((".tmp-", ".rm-"))]
    links = set(os.listdir("/sys/class/net"))
    nets = _network_ids(pb)
    for cid in gone:
        for nid in nets:
            veth = "pbv" + hashlib.sha256(f"{cid}/{nid}".encode()).hexdigest()[:12]
            if veth in links:
                bad.append(f"veth {veth} of {cid[:12]}")
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True, timeout=30).stdout
    for cid in gone:
        for nid in nets:
            tag = f"pybuild:{nid[:12]}:{cid[:12]}"
            bad += [f"rule {r}" for r in rules.splitlines() if tag in r]
    for hier in Path("/sys/fs/cgroup").iterdir():
        for cid in gone:
            for p in (hier / "pybuild" / cid, hier / "pybuild" / cid[:12]):
                if p.is_dir():
                    bad.append(f"cgroup {p}")
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(cid in cmd for cid in gone):
            bad.append(f"process {d}: {cmd.strip()}")
    return bad


def _settle(pb: Pybuild, ids: set[str]) -> tuple[dict[str, str], set[str], list[str]]:
    """``ps -a`` (which repairs what a killed start left), then the host's view: (ps, running
    ids, leftovers). Retried for a moment: a supervisor that found its record gone, or a
    port proxy being stopped, takes a few milliseconds to end."""
    deadline = time.monotonic() + 10
    while True:
        ps = _ps(pb)
        running = {cid for cid, status in ps.items() if status.startswith("Up")}
        bad = _leftovers(pb, ids | set(ps), running)
        if len(_sleepers()) != len(running):
            bad.append(f"{len(_sleepers())} sleep processes for {len(running)} running containers")
        if not bad or time.monotonic() > deadline:
            return ps, running, bad
        time.sleep(0.2)


def _clean_up(pb: Pybuild, ids: set[str], why: str) -> None:
    left = list(_ps(pb))
    if left:
        pb("rm", "-f", *left)
    _, running, bad = _settle(pb, ids)
    assert not running and not bad, f"{why}: after rm -f of everything: {bad}"
    # the store is whole and nothing of the root is left (its images are saved and run once,
    # at the end of each test: no container operation writes to the store)
    assert_root_tidy(pb, images=False)


def test_rm_force_racing_detached_starts(busybox: Pybuild) -> None:
    """``rm -f $(ps -aq)`` three times while four ``run -d -p`` start: every start either reports
    its container (then it is running and listed, or a later ``rm -f`` named it) or fails
    with a clear word; what ``ps -a`` lists runs, and nothing else is left."""
    pb = busybox
    rng = random.Random(SEED)
    ids: set[str] = set()
    end = time.monotonic() + BUDGET
    rounds = 0
    while time.monotonic() < end:
        rounds += 1
        why = f"seed {SEED}, round {rounds}"
        runs = [_popen(pb, "run", "-d", "-p", "127.0.0.1::80", "busybox", "sleep", SLEEP) for _ in range(4)]
        removed: set[str] = set()
        for _ in range(3):
            time.sleep(rng.uniform(0.2, 1.5))
            listed = pb("ps", "-aq", "--no-trunc").stdout.split()
            if listed:
                r = pb("rm", "-f", *listed, check=False)
                removed.update(r.stdout.split())
                # a container listed then removed by the other `rm` meanwhile is "No such container"
                for line in r.stderr.splitlines():
                    assert "No such container" in line, f"{why}: rm -f: {r.stderr}"
        started: set[str] = set()
        for p in runs:
            out, err = p.communicate(timeout=60)
            if p.returncode == 0:
                started.add(out.strip())
            else:
                assert re.search(r"No such container|marked for removal", err), f"{why}: run -d: {err}"
                assert "Traceback" not in err and "died before" not in err, f"{why}: {err}"
        ids |= started | removed
        ps, running, bad = _settle(pb, ids)
        assert not bad, f"{why}: left behind: {bad}"
        assert set(ps) == running, f"{why}: ps -a lists containers that do not run: {ps}"
        for cid in started:
            assert cid in running or cid in removed, f"{why}: {cid[:12]} was reported started: {ps}"
        _clean_up(pb, ids, why)
    assert rounds >= 2  # a round takes ~10 s on this 2-core host
    assert_root_tidy(pb)


def _kill_round(pb: Pybuild, rng: random.Random, argv: list[str], why: str) -> tuple[int, str]:
    p = _popen(pb, *argv)
    time.sleep(rng.uniform(0.05, 1.6))
    sig = rng.choice((signal.SIGKILL, signal.SIGINT))
    p.send_signal(sig)
    try:
        try:
            _, err = p.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            # a SIGINT forwarded to the container before its shell set its trap is ignored (a
            # pid 1 without a handler, as in Docker): press Ctrl-C again, as a user would
            p.send_signal(sig)
            _, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
        raise AssertionError(f"{why}: pybuild {' '.join(argv)} did not end after {sig.name}") from None
    if "Traceback" in err:
        # Ctrl-C while the interpreter itself still starts (its own modules, site, the script's
        # first import): its report, before any code of pybuild or click ran. From the first
        # line of ``builder`` on, the console script ends a Ctrl-C as ``cancelled``, 130.
        assert sig == signal.SIGINT and err.rstrip().endswith("KeyboardInterrupt"), f"{why}: {err}"
        frames = re.findall(r'File "([^"]+)"', err)
        assert not any(re.search(r"/(builder|registry|click)/", f) for f in frames), f"{why}: {err}"
        assert p.returncode != 0, why
        return 130, err
    return p.returncode, err


def test_kill_of_detached_run_during_its_start(busybox: Pybuild) -> None:
    """SIGKILL or SIGINT of ``run -d`` at a random moment: the supervisor, once forked, goes on
    (as dockerd goes on with a start whose client left), so each container ends running and
    listed, or never created, or ``Created`` with nothing made; ``rm -f`` then leaves nothing."""
    pb = busybox
    rng = random.Random(SEED + 1)
    ids: set[str] = set()
    end = time.monotonic() + BUDGET
    rounds = 0
    while time.monotonic() < end:
        rounds += 1
        why = f"seed {SEED + 1}, round {rounds}"
        _kill_round(pb, rng, ["run", "-d", "-p", "127.0.0.1::80", "busybox", "sleep", SLEEP], why)
        ps, running, bad = _settle(pb, ids)
        ids |= set(ps)
        assert not bad, f"{why}: left behind: {bad}"
        for cid, status in ps.items():
            assert status.startswith(("Up", "Created")), f"{why}: {cid[:12]} is {status!r}"
        _clean_up(pb, ids, why)
    assert rounds >= 3
    assert_root_tidy(pb)


def test_kill_of_foreground_run_during_its_start(busybox: Pybuild) -> None:
    """SIGKILL or SIGINT of a foreground ``run -p`` at a random moment. SIGINT is the
    container's (Docker's sig-proxy): it ends with it, or the run is cancelled before its
    container exists. SIGKILL kills the container's supervisor: the next ``ps`` finds the
    record and tears down what the start made. Either way nothing runs and nothing is left."""
    pb = busybox
    rng = random.Random(SEED + 2)
    ids: set[str] = set()
    end = time.monotonic() + BUDGET
    rounds = 0
    while time.monotonic() < end:
        rounds += 1
        why = f"seed {SEED + 2}, round {rounds}"
        # sleep as pid 1 would ignore the SIGINT forwarded to it (as in Docker): a shell that
        # traps it ends the container, as an application handling Ctrl-C does
        code, err = _kill_round(pb, rng, ["run", "-p", "127.0.0.1::80", "busybox", "sh", "-c",
                                          f"trap 'exit 130' INT; sleep {SLEEP} & wait"], why)
        assert code in (-signal.SIGKILL, 130), f"{why}: exit {code}: {err}"
        ps, running, bad = _settle(pb, ids)
        ids |= set(ps)
        assert not running, f"{why}: the foreground run is gone but its container runs: {ps}"
        assert not bad, f"{why}: left behind: {bad}"
        for cid, status in ps.items():
            assert status.startswith(("Exited", "Created")), f"{why}: {cid[:12]} is {status!r}"
        _clean_up(pb, ids, why)
    assert rounds >= 3
    assert_root_tidy(pb)


def _forked_from(cli: int, root: Path) -> list[int]:
    """The processes a ``run -d`` forked (its supervisor, the sandbox's helper): they carry the
    CLI's command line, naming the root."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) in (cli, os.getpid()):
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(root).encode() in cmd and b"run" in cmd:
            out.append(int(d))
    return out


def test_kill_of_the_supervisor_during_a_detached_start(busybox: Pybuild) -> None:
    """SIGKILL of the detached supervisor (and the sandbox helper it forked) at a random moment
    of a ``run -d``: ``run -d`` reports the start or fails in one line; the next ``ps`` finds
    the half-made start by its dead supervisor (pid + start time) and tears it down, so the
    container is ``Created`` or ``Exited (137)`` with nothing of it left on the host."""
    pb = busybox
    rng = random.Random(SEED + 3)
    ids: set[str] = set()
    end = time.monotonic() + BUDGET
    rounds = 0
    while time.monotonic() < end:
        rounds += 1
        why = f"seed {SEED + 3}, round {rounds}"
        p = _popen(pb, "run", "-d", "-p", "127.0.0.1::80", "busybox", "sleep", SLEEP)
        deadline = time.monotonic() + rng.uniform(0.3, 2.0)
        killed = 0
        while time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.01)
        for pid in _forked_from(p.pid, pb.root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        out, err = p.communicate(timeout=60)
        assert "Traceback" not in err, f"{why}: {err}"
        if p.returncode != 0:
            assert len(err.strip().splitlines()) == 1, f"{why}: {err}"
        ps, running, bad = _settle(pb, ids)
        ids |= set(ps)
        assert not bad, f"{why}: left behind after {killed} kills: {bad}"
        if killed:
            assert not running, f"{why}: its supervisor was killed, yet it runs: {ps}"
        for cid, status in ps.items():
            assert status.startswith(("Up", "Created", "Exited (137)")), f"{why}: {cid[:12]} is {status!r}"
        _clean_up(pb, ids, why)
    assert rounds >= 3
    assert_root_tidy(pb)


def test_stop_racing_detached_starts(busybox: Pybuild) -> None:
    """``stop -t 1 $(ps -aq)`` while three ``run -d -p`` start: a stop waits for a start in
    progress, then stops what it started (a container not claimed yet is just ``Created``,
    and a stop of it does nothing, as in Docker). Each ends ``Up`` or ``Exited``, never half
    started; ``ps -a`` agrees with what runs and the stopped ones leave nothing."""
    pb = busybox
    rng = random.Random(SEED + 4)
    ids: set[str] = set()
    end = time.monotonic() + BUDGET / 2
    rounds = 0
    while time.monotonic() < end:
        rounds += 1
        why = f"seed {SEED + 4}, round {rounds}"
        runs = [_popen(pb, "run", "-d", "-p", "127.0.0.1::80", "busybox", "sleep", SLEEP) for _ in range(3)]
        time.sleep(rng.uniform(0.3, 1.5))
        listed = pb("ps", "-aq", "--no-trunc").stdout.split()
        if listed:
            pb("stop", "-t", "1", *listed)
        started = set()
        for p in runs:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, f"{why}: run -d: {err}"
            started.add(out.strip())
        ids |= started
        ps, running, bad = _settle(pb, ids)
        assert not bad, f"{why}: left behind: {bad}"
        assert set(ps) == started, f"{why}: {ps}"
        for cid, status in ps.items():
            assert status.startswith(("Up", "Exited")), f"{why}: {cid[:12]} is {status!r}"
            assert status.startswith("Up") == (cid in running), why
        _clean_up(pb, ids, why)
    assert rounds >= 2
    assert_root_tidy(pb)


def test_kill_of_rm_force_midway(busybox: Pybuild) -> None:
    """SIGKILL of ``rm -f`` at a random moment of its removal: the record stays ``removing``
    with its lock free, and the next ``ps`` finishes the removal; a container ``rm`` had not
    reached yet still runs. Nothing of a removed container is left."""
    pb = busybox
    rng = random.Random(SEED + 5)
    ids: set[str] = set()
    end = time.monotonic() + BUDGET / 2
    rounds = 0
    while time.monotonic() < end:
        rounds += 1
        why = f"seed {SEED + 5}, round {rounds}"
        cids = [pb("run", "-d", "-p", "127.0.0.1::80", "busybox", "sleep", SLEEP).stdout.strip() for _ in range(2)]
        ids |= set(cids)
        p = _popen(pb, "rm", "-f", *cids)
        time.sleep(rng.uniform(0.2, 1.2))
        p.kill()
        p.communicate(timeout=30)
        ps, running, bad = _settle(pb, ids)
        assert not bad, f"{why}: left behind: {bad}"
        assert set(ps) == running, f"{why}: {ps}"
        _clean_up(pb, ids, why)
    assert rounds >= 2
    assert_root_tidy(pb)
