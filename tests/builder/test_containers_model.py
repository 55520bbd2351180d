"""Container records, names, option parsing and the json-file log format (no sandbox needed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from builder.base.errors import ContainerError
from builder.base.state import StateRoot
from builder.runtime.containers import lifecycle, names
from builder.runtime.containers.logfile import LogWriter, read_logs
from builder.runtime.containers.options import (
    RestartPolicy,
    merge_env,
    parse_bytes,
    parse_caps,
    parse_cpus,
    parse_duration,
    parse_signal,
    parse_timestamp_ns,
    read_env_file,
    rfc3339nano,
)
from builder.runtime.containers.record import (
    INDEX_FILE,
    Container,
    ContainerStore,
    NoSuchContainer,
    alive,
    proc_start_time,
)
from builder.runtime.containers.recordparts import State
from registry.config import ContainerConfig


@pytest.fixture
def root(tmp_path: Path) -> StateRoot:
    return StateRoot.open(tmp_path / "state")


def make(cs: ContainerStore, name: str | None = None, *, labels: dict[str, str] | None = None,
         state: State | None = None) -> Container:
    def build(cid: str, nm: str) -> Container:
        return Container(id=cid, name=nm, created=rfc3339nano(), image="busybox", image_id="sha256:" + "ab" * 32,
                         path="sh", args=("-c", "sleep 1000"), config=ContainerConfig.from_json({"Labels": labels or {}}),
                         host_config={}, state=state or State())
    return cs.create(build, name=name)


# -- names and IDs -------------------------------------------------------------------------------
def test_ids_are_64_hex_and_short_ids_are_not_all_digits() -> None:
    for _ in range(200):
        cid = names.new_id()
        assert names.is_id(cid)
        assert not cid[:12].isdigit()


def test_random_names_are_adjective_surname() -> None:
    for _ in range(100):
        n = names.random_name()
        adj, _, surname = n.partition("_")
        assert adj in names.ADJECTIVES and surname in names.SURNAMES
        assert names.valid_name(n)
    assert names.random_name(1)[-1].isdigit()


def test_create_find_by_id_prefix_and_name(root: StateRoot) -> None:
    cs = ContainerStore(root)
    a = make(cs, "web")
    b = make(cs)
    assert cs.find("web").id == a.id
    assert cs.find("/web").id == a.id
    assert cs.find(a.id).name == "web"
    assert cs.find(a.id[:12]).id == a.id
    assert cs.find(b.name).id == b.id
    raw = json.loads((cs.dir(a.id) / "container.json").read_text())
    # the keys other modules read (rmi in-use check, volume in-use)
    assert raw["Id"] == a.id and raw["Name"] == "/web" and raw["ImageID"].startswith("sha256:")
    assert raw["Mounts"] == []
    with pytest.raises(NoSuchContainer, match="No such container: nope"):
        cs.find("nope")


def test_name_in_use_and_invalid_names_are_refused(root: StateRoot) -> None:
    cs = ContainerStore(root)
    a = make(cs, "web")
    with pytest.raises(ContainerError, match=f'"/web" is already in use by container "{a.id}"'):
        make(cs, "web")
    with pytest.raises(ContainerError, match="Invalid container name"):
        make(cs, "-bad name")
    assert len(cs.ids()) == 1
    assert not [p for p in cs.path.iterdir() if p.name.startswith(".") and p.name != INDEX_FILE]  # but the name index


def test_names_stay_unique_under_concurrent_creates(root: StateRoot) -> None:
    cs = ContainerStore(root)
    errors: list[Exception] = []

    def worker() -> None:
        try:
            make(cs, "same")
        except ContainerError as e:
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cs.ids()) == 1 and len(errors) == 7


def test_a_record_read_while_it_is_removed_is_whole_or_gone(root: StateRoot) -> None:
    """A removal renames the record's directory away: a reader that got its config just before
    must not then take the missing state file for a fresh container's (exit code 0; `run --rm
    -it` returned 0 for a shell's `exit 3` that way, found in a suite run)."""
    cs = ContainerStore(root)
    seen: set[tuple[str, int]] = set()
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        c = make(cs)
        cs.save_state(c.id, State(status="exited", exit_code=3))
        remover = threading.Thread(target=cs.delete, args=(c.id,))
        remover.start()
        try:
            while True:
                try:
                    st = cs.load(c.id).state
                except NoSuchContainer:
                    break
                seen.add((st.status, st.exit_code))
        finally:
            remover.join()
    assert seen == {("exited", 3)}


def test_rename(root: StateRoot) -> None:
    cs = ContainerStore(root)
    a = make(cs, "one")
    make(cs, "two")
    cs.rename("one", "uno")
    assert cs.find("uno").id == a.id
    with pytest.raises(ContainerError, match="already in use"):
        cs.rename("uno", "two")
    with pytest.raises(NoSuchContainer):
        cs.find("one")


def test_liveness_uses_start_time(root: StateRoot) -> None:
    p = subprocess.Popen(["sleep", "30"])
    try:
        start = proc_start_time(p.pid)
        assert start > 0 and alive(p.pid, start)
        assert not alive(p.pid, start + 1)  # same pid, another process (a reused pid)
    finally:
        p.kill()
        p.wait()
    assert not alive(p.pid, start)


def test_refresh_repairs_a_record_whose_supervisor_died(root: StateRoot) -> None:
    cs = ContainerStore(root)
    sup = subprocess.Popen(["sleep", "30"])
    init = subprocess.Popen(["sleep", "30"])
    st = State(status="running", pid=init.pid, pid_start=proc_start_time(init.pid),
               supervisor_pid=sup.pid, supervisor_start=proc_start_time(sup.pid),
               started_at=rfc3339nano())
    c = make(cs, "victim", state=st)
    assert lifecycle.refresh(cs, cs.load(c.id)).state.status == "running"
    sup.kill()
    sup.wait()
    fixed = lifecycle.refresh(cs, cs.load(c.id))
    init.wait(timeout=5)  # the orphaned container process was killed
    assert fixed.state.status == "exited" and fixed.state.exit_code == 137
    assert cs.load(c.id).state.status == "exited"
    assert lifecycle.list_containers(root) == []
    assert [x.name for x in lifecycle.list_containers(root, all=True)] == ["victim"]


def test_refresh_keeps_the_exit_code_when_the_container_had_ended(root: StateRoot) -> None:
    cs = ContainerStore(root)
    st = State(status="restarting", pid=999999, pid_start=1, supervisor_pid=999998, supervisor_start=1,
               exit_code=3, started_at=rfc3339nano(), finished_at=rfc3339nano())
    c = make(cs, "gone", state=st)
    fixed = lifecycle.refresh(cs, cs.load(c.id))
    assert fixed.state.status == "exited" and fixed.state.exit_code == 3


def test_ps_filters(root: StateRoot) -> None:
    cs = ContainerStore(root)
    make(cs, "alpha", labels={"app": "web", "tier": "front"})
    make(cs, "beta", labels={"app": "db"})
    make(cs, "gamma", state=State(status="exited", exit_code=2))
    F = lifecycle.Filters.parse

    def names_of(*f: str) -> list[str]:
        return sorted(c.name for c in lifecycle.list_containers(root, all=True, filters=F(f)))

    assert names_of("name=al") == ["alpha"]
    assert names_of("name=^b") == ["beta"]
    assert names_of("label=app") == ["alpha", "beta"]
    assert names_of("label=app=db") == ["beta"]
    assert names_of("label=app=web", "label=tier") == ["alpha"]
    assert names_of("status=exited") == ["gamma"]
    assert names_of("exited=2") == ["gamma"]
    assert names_of("status=created", "name=beta") == ["beta"]
    assert names_of("status=created") == ["alpha", "beta"]
    assert [c.name for c in lifecycle.list_containers(root, filters=F(["status=exited"]))] == ["gamma"]
    assert names_of("until=2000-01-01T00:00:00Z") == []
    assert names_of("until=1m", "name=alpha") == []  # created just now: not before a minute ago
    assert len(names_of("until=" + str(int(time.time()) + 60))) == 3
    for bad in ("status=sleepy", "colour=red", "name", "until=someday"):
        with pytest.raises(ContainerError):
            F([bad])


def test_rm_refuses_a_running_container_without_force(root: StateRoot) -> None:
    cs = ContainerStore(root)
    sup = subprocess.Popen(["sleep", "30"])
    try:
        st = State(status="running", pid=sup.pid, pid_start=proc_start_time(sup.pid),
                   supervisor_pid=sup.pid, supervisor_start=proc_start_time(sup.pid))
        make(cs, "busy", state=st)
        with pytest.raises(ContainerError, match='cannot remove container "/busy": container is running'):
            lifecycle.remove(root, "busy")
        assert cs.find("busy")
    finally:
        sup.kill()
        sup.wait()


# -- options -------------------------------------------------------------------------------------
def test_restart_policies() -> None:
    assert RestartPolicy.parse("no") == RestartPolicy("no", 0)
    assert RestartPolicy.parse("on-failure:2") == RestartPolicy("on-failure", 2)
    assert RestartPolicy.parse("always").name == "always"
    for bad in ("sometimes", "always:3", "on-failure:x", "on-failure:-1"):
        with pytest.raises(ContainerError, match="invalid restart policy"):
            RestartPolicy.parse(bad)
    p = RestartPolicy.parse("on-failure:2")
    assert p.should_restart(exit_code=1, restarts=0, stopped_by_user=False)
    assert p.should_restart(exit_code=1, restarts=1, stopped_by_user=False)
    assert not p.should_restart(exit_code=1, restarts=2, stopped_by_user=False)
    assert not p.should_restart(exit_code=0, restarts=0, stopped_by_user=False)
    a = RestartPolicy.parse("unless-stopped")
    assert a.should_restart(exit_code=0, restarts=50, stopped_by_user=False)
    assert not a.should_restart(exit_code=0, restarts=0, stopped_by_user=True)


def test_signals_sizes_cpus_durations_caps() -> None:
    assert parse_signal("SIGTERM") == parse_signal("term") == parse_signal("15") == signal.SIGTERM
    assert parse_signal("SIGRTMIN+0".replace("+0", "")) == signal.SIGRTMIN
    with pytest.raises(ContainerError, match="invalid signal: SIGNOPE"):
        parse_signal("SIGNOPE")
    assert parse_bytes("64m") == 64 << 20 and parse_bytes("1g") == 1 << 30 and parse_bytes("1024") == 1024
    assert parse_bytes("512kb") == 512 << 10
    with pytest.raises(ContainerError, match="invalid memory size"):
        parse_bytes("lots")
    assert parse_cpus("1.5") == 1_500_000_000
    assert parse_duration("1m30s") == 90 * 10**9 and parse_duration("500ms") == 5 * 10**8
    with pytest.raises(ContainerError, match="invalid duration"):
        parse_duration("5 minutes")
    assert parse_caps(["net_admin", "CAP_SYS_TIME", "ALL"]) == ["CAP_NET_ADMIN", "CAP_SYS_TIME", "ALL"]
    with pytest.raises(ContainerError, match="unknown capability"):
        parse_caps(["FLY"])


def test_timestamps() -> None:
    assert parse_timestamp_ns("1700000000") == 1_700_000_000 * 10**9
    assert parse_timestamp_ns("1700000000.5") == 1_700_000_000_500_000_000
    assert parse_timestamp_ns("2023-11-14T22:13:20Z") == 1_700_000_000 * 10**9
    assert parse_timestamp_ns("2023-11-14T22:13:20.25Z") == 1_700_000_000_250_000_000
    assert parse_timestamp_ns("2023-11-15T00:13:20+02:00") == 1_700_000_000 * 10**9
    assert parse_timestamp_ns("10m", now_ns=10**12) == 10**12 - 600 * 10**9
    assert rfc3339nano(ns=1_700_000_000_000_000_001) == "2023-11-14T22:13:20.000000001Z"
    with pytest.raises(ContainerError, match="invalid time"):
        parse_timestamp_ns("yesterday")


def test_env_file_and_merge(tmp_path: Path) -> None:
    f = tmp_path / "env"
    f.write_text("# comment\n\nA=1\nB='quoted'\nFROM_HOST\nMISSING\n")
    assert read_env_file(str(f), environ={"FROM_HOST": "h"}) == ["A=1", "B='quoted'", "FROM_HOST=h"]
    (tmp_path / "bad").write_text("OK=1\nBAD KEY=2\n")
    with pytest.raises(ContainerError, match=r"bad:2: invalid variable name"):
        read_env_file(str(tmp_path / "bad"), environ={})
    with pytest.raises(ContainerError, match="open .*nope"):
        read_env_file(str(tmp_path / "nope"), environ={})
    assert merge_env(["PATH=/bin", "A=1"], ["A=2", "B=3"]) == ["PATH=/bin", "A=2", "B=3"]


# -- logs ----------------------------------------------------------------------------------------
def test_log_writer_writes_docker_json_file_format(tmp_path: Path) -> None:
    p = tmp_path / "c-json.log"
    w = LogWriter(p)
    w.feed("stdout", b"hello\nwor")
    w.feed("stderr", b"oops\n")
    w.feed("stdout", b"ld\npartial")
    w.close()
    lines = [json.loads(x) for x in p.read_text().splitlines()]
    assert [(x["stream"], x["log"]) for x in lines] == [
        ("stdout", "hello\n"), ("stderr", "oops\n"), ("stdout", "world\n"), ("stdout", "partial")]
    for x in lines:
        assert set(x) == {"log", "stream", "time"}
        assert x["time"].endswith("Z") and len(x["time"]) == len("2024-01-01T00:00:00.000000000Z")


def test_read_logs_tail_since_and_follow(tmp_path: Path) -> None:
    p = tmp_path / "c-json.log"
    w = LogWriter(p)
    for i in range(100):
        w.feed("stdout", f"line {i}\n".encode())
    mid = time.time_ns()
    time.sleep(0.01)
    w.feed("stderr", b"late\n")
    assert [e.data for e in read_logs(p, tail=2)] == [b"line 99\n", b"late\n"]
    assert [e.data for e in read_logs(p, tail=0)] == []
    assert len(list(read_logs(p))) == 101
    assert [e.data for e in read_logs(p, since_ns=mid)] == [b"late\n"]
    running = [True]
    got: list[bytes] = []

    def follow() -> None:
        for e in read_logs(p, tail=1, follow=True, still_running=lambda: running[0], poll=0.01):
            got.append(e.data)

    t = threading.Thread(target=follow)
    t.start()
    time.sleep(0.1)
    w.feed("stdout", b"new one\n")
    time.sleep(0.1)
    running[0] = False
    t.join(5)
    w.close()
    assert not t.is_alive()
    assert got == [b"late\n", b"new one\n"]


def test_cli_ps_and_logs_render(root: StateRoot) -> None:
    cs = ContainerStore(root)
    c = make(cs, "shown", state=State(status="exited", exit_code=3, finished_at=rfc3339nano()))
    w = LogWriter(cs.log_path(c.id))
    w.feed("stdout", b"out line\n")
    w.feed("stderr", b"err line\n")
    w.close()
    env = {**os.environ, "PYBUILD_ROOT": str(root.path)}
    exe = [str(Path(sys.executable).parent / "pybuild")]
    r = subprocess.run([*exe, "ps", "-a"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    header, row = r.stdout.splitlines()
    assert header.split() == ["CONTAINER", "ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
    assert row.startswith(c.id[:12]) and "Exited (3)" in row and row.endswith("shown")
    assert '"sh -c sleep 1000"' in row
    r = subprocess.run([*exe, "ps", "-a", "--format", "json", "--no-trunc"], env=env, capture_output=True, text=True)
    d = json.loads(r.stdout)
    assert d["ID"] == c.id and d["State"] == "exited" and d["Names"] == "shown"
    r = subprocess.run([*exe, "ps", "-a", "--format", "table {{.ID}}\t{{.Names}}\t{{.State}}"], env=env,
                       capture_output=True, text=True)
    assert [line.split() for line in r.stdout.splitlines()] == [
        ["CONTAINER", "ID", "NAMES", "STATE"], [c.id[:12], "shown", "exited"]]
    r = subprocess.run([*exe, "ps", "-aq"], env=env, capture_output=True, text=True)
    assert r.stdout == c.id[:12] + "\n"
    r = subprocess.run([*exe, "ps"], env=env, capture_output=True, text=True)
    assert len(r.stdout.splitlines()) == 1
    r = subprocess.run([*exe, "logs", "-t", "shown"], env=env, capture_output=True, text=True)
    assert r.stdout.endswith(" out line\n") and r.stderr.endswith(" err line\n")
    assert r.stdout.split(" ")[0].endswith("Z")
    r = subprocess.run([*exe, "logs", "nope"], env=env, capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip() == "Error: No such container: nope"
    r = subprocess.run([*exe, "container", "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}} {{.Name}}", "shown"],
                       env=env, capture_output=True, text=True)
    assert r.stdout == "exited 3 /shown\n", r.stderr
    r = subprocess.run([*exe, "rename", "shown", "renamed"], env=env, capture_output=True, text=True)
    assert r.returncode == 0
    r = subprocess.run([*exe, "wait", "renamed"], env=env, capture_output=True, text=True)
    assert r.stdout == "3\n"
    r = subprocess.run([*exe, "rm", "renamed"], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "renamed\n", r.stderr
    assert cs.ids() == []
