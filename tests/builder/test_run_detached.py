"""Acceptance of the container lifecycle through the ``pybuild`` CLI, on real namespaces,
overlayfs, bridges, iptables and cgroups: the seed web workflow, names across a user network,
volumes, exec (with a pty), restart policies, OOM, --rm, supervisor loss, and bad input."""

from __future__ import annotations

import glob
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_containers_images import HTTPD_INDEX, make_httpd_image, make_image

from builder.base.state import StateRoot

PYBUILD = str(Path(sys.executable).parent / "pybuild")


@dataclass
class Env:
    root: StateRoot

    @property
    def environ(self) -> dict[str, str]:
        e = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        e["PYBUILD_ROOT"] = str(self.root.path)
        return e

    def pb(self, *args: str, check: bool = True, timeout: float = 60,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([PYBUILD, *args], env=self.environ, capture_output=True, text=True,
                           timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise AssertionError(f"pybuild {' '.join(args)} exited {r.returncode}: {r.stderr}")
        return r

    def state(self, name: str) -> dict[str, object]:
        out: dict[str, object] = json.loads(self.pb("container", "inspect", name).stdout)[0]
        return out


def _mounts() -> str:
    return Path("/proc/self/mountinfo").read_text()


def _leftovers(root: StateRoot, ids: list[str]) -> list[str]:
    """Everything a container may leave on the host, for the given container ids."""
    bad = [line for line in _mounts().splitlines()
           if str(root.path) in line and any(cid in line for cid in ids)]
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    for cid in ids:
        bad += [f"cgroup {p}" for p in glob.glob(f"/sys/fs/cgroup/*/*/{cid}*")]
        bad += [f"rule {r}" for r in rules.splitlines() if cid[:12] in r]
        bad += [f"netns {p}" for p in glob.glob(str(root.run / "netns" / cid))]
    for p in (root.containers).glob("*/state.json"):
        if p.parent.name not in ids:
            continue
        st = json.loads(p.read_text())
        for key in ("pid", "supervisor_pid"):
            if st.get(key) and Path(f"/proc/{st[key]}").exists():
                bad.append(f"process {st[key]} of {p.parent.name}")
    # veths of this root's networks: the network records name their bridges
    for net in root.networks.glob("*.json"):
        for cid, ep in (json.loads(net.read_text()).get("Containers") or {}).items():
            if cid in ids and ep.get("HostVeth") and ep["HostVeth"] in links:
                bad.append(f"veth {ep['HostVeth']} of {cid[:12]}")
    return bad


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    root = StateRoot.open(tmp_path / "state")
    make_image(root, "busybox:latest")
    make_httpd_image(root, "web:test")
    e = Env(root)
    yield e
    # whatever a test left running goes, then the networks (bridges, rules) of this root
    ids = [p.name for p in root.containers.iterdir() if len(p.name) == 64] if root.containers.is_dir() else []
    for cid in ids:
        e.pb("rm", "-f", "-v", cid, check=False)
    from builder import network

    nets = [json.loads(p.read_text()) for p in root.networks.glob("*.json")] if root.networks.is_dir() else []
    network.reset(root)
    assert _leftovers(root, ids) == []
    assert [line for line in _mounts().splitlines() if str(root.path) in line] == []
    # and nothing of this root's networks: no bridge, no rule
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    for net in nets:
        assert f"pybuild:{net['Id'][:12]}" not in rules
        if net.get("Bridge"):
            assert f" {net['Bridge']}:" not in links


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return str(r.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _wait_for(cond: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


# -- the seed workflow -------------------------------------------------------------------------
TESTDATA = Path(__file__).resolve().parents[2] / "testdata"


def test_seed_web_workflow(env: Env) -> None:
    env.pb("build", "-q", "-t", "web:built", str(TESTDATA / "contexts" / "httpd"))
    cid = env.pb("run", "-d", "--name", "web", "-p", "18080:80", "web:built").stdout.strip()
    assert len(cid) == 64
    assert _get("http://127.0.0.1:18080/") == (TESTDATA / "contexts" / "httpd" / "index.html").read_text()
    assert _get("http://127.0.0.1:18080/built.txt") == "built by pybuild build\n"  # its RUN step
    # the image's HEALTHCHECK runs on its schedule
    _wait_for(lambda: "(healthy)" in env.pb("ps").stdout, timeout=15)
    ps = env.pb("ps").stdout.splitlines()
    assert len(ps) == 2 and ps[1].startswith(cid[:12]) and ps[1].endswith("web")
    assert "0.0.0.0:18080->80/tcp" in ps[1] and "Up " in ps[1]
    assert env.pb("port", "web").stdout == "80/tcp -> 0.0.0.0:18080\n"
    _wait_for(lambda: "response:200" in env.pb("logs", "web").stderr)
    st = env.state("web")
    sup = st["State"]["Pid"]  # type: ignore[index]
    assert Path(f"/proc/{sup}").exists()
    # busybox httpd as PID 1 ignores SIGTERM: stop falls back to SIGKILL after the timeout
    t0 = time.monotonic()
    assert env.pb("stop", "-t", "1", "web").stdout == "web\n"
    assert 0.9 < time.monotonic() - t0 < 8
    st = env.state("web")
    assert st["State"]["Status"] == "exited" and st["State"]["ExitCode"] == 137  # type: ignore[index]
    assert "Exited (137)" in env.pb("ps", "-a").stdout
    assert env.pb("rm", "web").stdout == "web\n"
    assert env.pb("ps", "-a", "-q").stdout == ""
    assert _leftovers(env.root, [cid]) == []
    with pytest.raises(OSError):
        urllib.request.urlopen("http://127.0.0.1:18080/", timeout=1)


def test_user_network_names_and_isolation(env: Env) -> None:
    env.pb("network", "create", "appnet")
    env.pb("network", "create", "othernet")
    try:
        env.pb("run", "-d", "--name", "srv", "--network", "appnet", "--network-alias", "www", "web:test")
        out = env.pb("run", "--rm", "--network", "appnet", "busybox", "wget", "-qO-", "http://srv/").stdout
        assert out == HTTPD_INDEX
        out = env.pb("run", "--rm", "--network", "appnet", "busybox", "wget", "-qO-", "http://www/").stdout
        assert out == HTTPD_INDEX
        ip = env.state("srv")["NetworkSettings"]["Networks"]["appnet"]["IPAddress"]  # type: ignore[index]
        assert ip
        r = env.pb("run", "--rm", "--network", "othernet", "busybox", "wget", "-T", "2", "-qO-",
                   "http://srv/", check=False)
        assert r.returncode != 0  # not even resolvable
        r = env.pb("run", "--rm", "--network", "othernet", "busybox", "wget", "-T", "2", "-qO-",
                   f"http://{ip}/", check=False)
        assert r.returncode != 0  # and not reachable by address
        r = env.pb("network", "rm", "appnet", check=False)
        assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1
        # connected later, the container stays on othernet across a restart (as in Docker)
        env.pb("network", "connect", "othernet", "srv")
        env.pb("restart", "-t", "0", "srv")
        assert env.pb("ps", "--format", "{{.Networks}}").stdout == "appnet,othernet\n"
        out = env.pb("run", "--rm", "--network", "othernet", "busybox", "wget", "-qO-", "http://srv/").stdout
        assert out == HTTPD_INDEX
    finally:
        env.pb("rm", "-f", "srv", check=False)
        env.pb("network", "rm", "appnet", "othernet", check=False)


def test_named_volume_outlives_its_writer(env: Env) -> None:
    env.pb("run", "--name", "writer", "--network", "none", "-v", "data:/data", "busybox",
           "sh", "-c", "echo persisted > /data/f")
    r = env.pb("volume", "rm", "data", check=False)
    assert r.returncode != 0 and "in use" in r.stderr
    env.pb("rm", "writer")
    out = env.pb("run", "--rm", "--network", "none", "-v", "data:/data:ro", "busybox", "cat", "/data/f").stdout
    assert out == "persisted\n"
    env.pb("volume", "rm", "data")


def test_rm_removes_anonymous_volumes(env: Env) -> None:
    make_image(env.root, "withvol:test", config={"Volumes": {"/data": {}}, "Cmd": ["sh"]},
               files={"/data/seed": "from the image\n"})
    out = env.pb("run", "--rm", "--network", "none", "withvol:test", "cat", "/data/seed").stdout
    assert out == "from the image\n"  # a new volume is filled from the image
    assert env.pb("volume", "ls", "-q").stdout == ""
    env.pb("run", "--name", "keep", "--network", "none", "withvol:test", "true")
    assert len(env.pb("volume", "ls", "-q").stdout.split()) == 1
    env.pb("rm", "-v", "keep")
    assert env.pb("volume", "ls", "-q").stdout == ""


# -- exec --------------------------------------------------------------------------------------
def test_exec_sees_processes_and_filesystem(env: Env) -> None:
    env.pb("run", "-d", "--name", "box", "--network", "none", "-e", "FROM_RUN=1", "busybox",
           "sh", "-c", "echo made > /tmp/made; exec sleep 1000")
    _wait_for(lambda: env.pb("exec", "box", "cat", "/tmp/made", check=False).stdout == "made\n")
    ps = env.pb("exec", "box", "ps").stdout
    assert "sleep 1000" in ps and " 1 root " in ps.replace("    ", " ")
    assert env.pb("exec", "-e", "X=2", "-w", "/var", "-u", "app", "box", "sh", "-c",
                  "echo $FROM_RUN $X $(pwd) $(id -u)").stdout == "1 2 /var 1000\n"
    assert env.pb("exec", "box", "sh", "-c", "exit 7", check=False).returncode == 7
    r = env.pb("exec", "box", "nosuch", check=False)
    assert r.returncode == 127 and "nosuch" in r.stderr
    assert "sleep 1000" in env.pb("top", "box").stdout
    # -it under a pty driven from here
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - child
        os.environ.update(env.environ)
        os.execv(PYBUILD, [PYBUILD, "exec", "-it", "box", "sh"])
    try:
        from builder.base.syscalls import real

        real().set_winsize(fd, 33, 101)  # our terminal's size reaches the exec'd process
        # `tty` names the terminal only when it is one of the container's own /dev/pts
        os.write(fd, b"echo $((6*7)); [ -t 0 ] && echo on-a-tty; echo tty=$(tty); stty size; exit 5\n")
        buf = _read_pty(fd)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    assert b"\r\n42\r\n" in buf and b"on-a-tty" in buf and b"33 101" in buf
    assert re.search(rb"tty=/dev/pts/\d+\r\n", buf), buf
    assert os.waitstatus_to_exitcode(status) == 5
    env.pb("kill", "box")
    assert env.state("box")["State"]["Status"] in ("exited", "running")
    _wait_for(lambda: env.state("box")["State"]["Status"] == "exited")  # type: ignore[index]
    r = env.pb("exec", "box", "true", check=False)
    assert r.returncode == 1 and "is not running" in r.stderr


def _read_pty(fd: int, seconds: float = 20) -> bytes:
    """What a pty master gives until the other side closes (EIO/EOF) or *seconds* pass."""
    buf = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.5)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf


def test_run_it_under_a_pty(env: Env) -> None:
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - child
        os.environ.update(env.environ)
        os.execv(PYBUILD, [PYBUILD, "run", "--rm", "-it", "--network", "none", "busybox", "sh"])
    try:
        from builder.base.syscalls import real

        real().set_winsize(fd, 41, 99)
        os.write(fd, b"echo $((7*6))xyz; echo tty=$(tty); stty size; exit 3\n")
        buf = _read_pty(fd)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    assert b"42xyz" in buf and b"41 99" in buf
    assert re.search(rb"tty=/dev/pts/\d+\r\n", buf), buf
    assert os.waitstatus_to_exitcode(status) == 3
    assert env.pb("ps", "-aq").stdout == ""  # --rm


# -- policies and limits -------------------------------------------------------------------------
def test_restart_on_failure_restarts_exactly_twice(env: Env) -> None:
    env.pb("run", "-d", "--name", "flaky", "--network", "none", "--restart", "on-failure:2",
           "busybox", "sh", "-c", "echo attempt; exit 3")
    _wait_for(lambda: env.state("flaky")["State"]["Status"] == "exited")  # type: ignore[index]
    st = env.state("flaky")
    assert st["RestartCount"] == 2 and st["State"]["ExitCode"] == 3  # type: ignore[index]
    assert env.pb("logs", "flaky").stdout == "attempt\n" * 3
    assert env.pb("wait", "flaky").stdout == "3\n"


def test_restart_always_comes_back_after_a_kill_but_not_after_stop(env: Env) -> None:
    env.pb("run", "-d", "--name", "phoenix", "--network", "none", "--restart", "always",
           "busybox", "sleep", "1000")
    pid = env.state("phoenix")["State"]["Pid"]  # type: ignore[index]
    os.kill(int(pid), signal.SIGKILL)  # the process dies on its own: the policy restarts it
    _wait_for(lambda: env.state("phoenix")["RestartCount"] == 1
              and env.state("phoenix")["State"]["Status"] == "running")  # type: ignore[index]
    env.pb("stop", "-t", "0", "phoenix")
    time.sleep(0.5)
    assert env.state("phoenix")["State"]["Status"] == "exited"  # type: ignore[index]


def test_memory_limit_oom_is_reported(env: Env) -> None:
    r = env.pb("run", "--name", "hog", "--network", "none", "--memory", "64m", "busybox",
               "sh", "-c", "head -c 300m /dev/zero | tail", check=False)
    assert r.returncode == 137
    st = env.state("hog")
    assert st["State"]["OOMKilled"] is True and st["State"]["ExitCode"] == 137  # type: ignore[index]
    assert st["HostConfig"]["Memory"] == 64 << 20  # type: ignore[index]


def test_rm_flag_removes_the_container(env: Env) -> None:
    assert env.pb("run", "--rm", "--network", "none", "busybox", "sh", "-c", "echo hi; exit 4",
                  check=False).returncode == 4
    cid = env.pb("run", "-d", "--rm", "--network", "none", "busybox", "sh", "-c", "exit 6").stdout.strip()
    assert env.pb("wait", cid).stdout == "6\n"
    _wait_for(lambda: env.pb("ps", "-aq").stdout == "")


def test_supervisor_killed_state_is_repaired(env: Env) -> None:
    env.pb("run", "-d", "--name", "orphan", "-p", f"{_free_port()}:80", "web:test")
    st = json.loads(next(env.root.containers.glob("*/state.json")).read_text())
    os.kill(st["supervisor_pid"], signal.SIGKILL)
    _wait_for(lambda: not Path(f"/proc/{st['pid']}").exists())
    out = env.pb("ps", "-a").stdout
    assert "Exited (137)" in out and "orphan" in out
    assert env.pb("ps", "-q").stdout == ""
    assert _leftovers(env.root, [p.name for p in env.root.containers.iterdir() if len(p.name) == 64]) == []
    env.pb("start", "orphan")  # and it can run again
    assert env.state("orphan")["State"]["Status"] == "running"  # type: ignore[index]
    env.pb("rm", "-f", "orphan")


# -- the other verbs ---------------------------------------------------------------------------
def test_cp_both_ways_running_and_stopped(env: Env, tmp_path: Path) -> None:
    env.pb("run", "-d", "--name", "files", "--network", "none", "busybox", "sleep", "1000")
    src = tmp_path / "in.txt"
    src.write_text("from host\n")
    env.pb("cp", str(src), "files:/tmp/")
    assert env.pb("exec", "files", "cat", "/tmp/in.txt").stdout == "from host\n"
    env.pb("cp", "files:/etc/passwd", str(tmp_path / "pw"))
    assert (tmp_path / "pw").read_text().startswith("root:x:0:0")
    env.pb("cp", "files:/etc", str(tmp_path / "etc-copy"))
    assert (tmp_path / "etc-copy" / "group").exists()
    # tar streams both ways with "-"
    import io
    import tarfile

    out = subprocess.run([PYBUILD, "cp", "files:/etc/group", "-"], env=env.environ, capture_output=True,
                         check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(out)) as tf:
        assert tf.getnames() == ["group"]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        data = b"streamed in\n"
        ti = tarfile.TarInfo("streamed.txt")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    subprocess.run([PYBUILD, "cp", "-", "files:/tmp"], env=env.environ, input=buf.getvalue(), check=True,
                   capture_output=True)
    assert env.pb("exec", "files", "cat", "/tmp/streamed.txt").stdout == "streamed in\n"
    # owners: the caller's by default, the container's with -a; a symlink stays a symlink
    env.pb("exec", "files", "sh", "-c", "echo o > /tmp/owned; chown 1000:1000 /tmp/owned; ln -s /etc /tmp/evil")
    env.pb("cp", "files:/tmp/owned", str(tmp_path / "o1"))
    env.pb("cp", "-a", "files:/tmp/owned", str(tmp_path / "o2"))
    assert (tmp_path / "o1").stat().st_uid == os.getuid() and (tmp_path / "o2").stat().st_uid == 1000
    env.pb("cp", "files:/tmp/evil", str(tmp_path / "link"))
    assert os.readlink(tmp_path / "link") == "/etc"
    env.pb("stop", "-t", "0", "files")
    env.pb("cp", "files:/tmp/in.txt", str(tmp_path / "back.txt"))
    assert (tmp_path / "back.txt").read_text() == "from host\n"
    env.pb("cp", str(src), "files:/root/again.txt")
    r = env.pb("cp", "files:/nope", str(tmp_path / "x"), check=False)
    assert r.returncode != 0 and "/nope" in r.stderr
    env.pb("start", "files")
    assert env.pb("exec", "files", "cat", "/root/again.txt").stdout == "from host\n"


def test_rename_kill_restart_wait_prune_and_filters(env: Env) -> None:
    env.pb("run", "-d", "--name", "a1", "--network", "none", "-l", "tier=front", "busybox", "sleep", "1000")
    env.pb("run", "--name", "b1", "--network", "none", "-l", "tier=back", "busybox", "true")
    env.pb("rename", "a1", "a2")
    assert env.pb("ps", "--format", "{{.Names}}").stdout == "a2\n"
    assert env.pb("ps", "-a", "--filter", "label=tier=back", "--format", "{{.Names}} {{.State}}").stdout == "b1 exited\n"
    assert env.pb("ps", "-a", "--filter", "status=running", "-q").stdout.strip() == env.state("a2")["Id"][:12]  # type: ignore[index]
    rows = [json.loads(x) for x in env.pb("ps", "-a", "--format", "json").stdout.splitlines()]
    assert {r["Names"] for r in rows} == {"a2", "b1"}
    started = env.state("a2")["State"]["StartedAt"]  # type: ignore[index]
    env.pb("restart", "-t", "0", "a2")
    st = env.state("a2")
    assert st["State"]["Status"] == "running" and st["State"]["StartedAt"] != started  # type: ignore[index]
    env.pb("kill", "-s", "TERM", "a2")  # sleep as PID 1 has no TERM handler: nothing happens
    time.sleep(0.3)
    assert env.state("a2")["State"]["Status"] == "running"  # type: ignore[index]
    env.pb("kill", "a2")
    assert env.pb("wait", "a2").stdout == "137\n"
    out = env.pb("container", "prune", "-f").stdout
    assert out.startswith("Deleted Containers:") and env.pb("ps", "-aq").stdout == ""


def test_healthcheck_status_in_ps_and_inspect(env: Env) -> None:
    env.pb("run", "-d", "--name", "doc", "--network", "none", "--health-cmd", "test -f /tmp/ok",
           "--health-interval", "200ms", "--health-retries", "2", "busybox", "sleep", "1000")
    _wait_for(lambda: env.state("doc")["State"]["Health"]["Status"] == "unhealthy")  # type: ignore[index]
    assert "(unhealthy)" in env.pb("ps").stdout
    env.pb("exec", "doc", "touch", "/tmp/ok")
    _wait_for(lambda: env.state("doc")["State"]["Health"]["Status"] == "healthy")  # type: ignore[index]
    assert "(healthy)" in env.pb("ps").stdout
    assert env.pb("ps", "--filter", "health=healthy", "-q").stdout.strip()


def test_logs_options(env: Env) -> None:
    env.pb("run", "--name", "talker", "--network", "none", "busybox", "sh", "-c",
           "for i in 1 2 3 4 5; do echo out$i; done; echo err >&2")
    r = env.pb("logs", "talker")
    assert r.stdout == "out1\nout2\nout3\nout4\nout5\n" and r.stderr == "err\n"
    assert env.pb("logs", "--tail", "2", "talker").stdout == "out5\n"
    stamped = env.pb("logs", "-t", "--tail", "1", "talker").stderr
    assert stamped.endswith("Z err\n")
    assert env.pb("logs", "--since", "1m", "talker").stdout.count("\n") == 5
    assert env.pb("logs", "--until", "2000-01-01T00:00:00Z", "talker").stdout == ""
    raw = (env.root.containers / env.state("talker")["Id"] / f"{env.state('talker')['Id']}-json.log")  # type: ignore[operator]
    first = json.loads(raw.read_text().splitlines()[0])
    assert first["log"] == "out1\n" and first["stream"] == "stdout" and first["time"].endswith("Z")
    # -f on a running container returns when it ends
    env.pb("run", "-d", "--name", "slow", "--network", "none", "busybox", "sh", "-c",
           "echo a; sleep 1; echo b")
    assert env.pb("logs", "-f", "slow", timeout=20).stdout == "a\nb\n"


def test_image_config_is_honoured(env: Env) -> None:
    make_image(env.root, "cfg:test", config={
        "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo $GREETING from $(pwd) as $(id -un)"],
        "Env": ["PATH=/bin:/usr/bin", "GREETING=hello"], "WorkingDir": "/var/www", "User": "app",
        "StopSignal": "SIGUSR1", "Labels": {"from": "image"}})
    out = env.pb("run", "--rm", "--network", "none", "cfg:test").stdout
    assert out == "hello from /var/www as app\n"
    out = env.pb("run", "--rm", "--network", "none", "-e", "GREETING=hi", "-u", "root", "cfg:test",
                 "echo $GREETING $(id -un)").stdout
    assert out == "hi root\n"
    out = env.pb("run", "--rm", "--network", "none", "--entrypoint", "echo", "cfg:test", "plain").stdout
    assert out == "plain\n"
    cid = env.pb("create", "--name", "made", "--network", "none", "--stop-timeout", "3", "cfg:test").stdout.strip()
    st = env.state("made")
    assert st["Id"] == cid and st["State"]["Status"] == "created"  # type: ignore[index]
    assert st["Config"]["StopSignal"] == "SIGUSR1" and st["Config"]["StopTimeout"] == 3  # type: ignore[index]
    assert st["Config"]["Labels"] == {"from": "image"}  # type: ignore[index]
    assert env.pb("start", "-a", "made").stdout == "hello from /var/www as app\n"
    # top-level inspect falls back to the container
    assert json.loads(env.pb("inspect", "made").stdout)[0]["Id"] == cid


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "code", "message"), [
    (["run", "--pull", "never", "nosuchimage"], 125, "No such image: nosuchimage"),
    (["run", "-p", "80:80:80:80", "busybox"], 125, "invalid publish spec"),
    (["run", "-p", "99999:80", "busybox"], 125, "invalid host port"),
    (["run", "-v", "a:b:c:d", "busybox"], 125, "invalid mount specification"),
    (["run", "-v", "/nonexistent-src:rel", "busybox"], 125, "invalid mount specification"),
    (["run", "--restart", "sometimes", "busybox"], 125, "invalid restart policy"),
    (["run", "--rm", "--restart", "always", "busybox"], 125, "Conflicting options: --restart and --rm"),
    (["run", "--memory", "lots", "busybox"], 125, "invalid memory size"),
    (["run", "--network", "none", "busybox", "/no/such/cmd"], 127, "no such file or directory"),
    (["run", "--network", "none", "busybox", "/etc/passwd"], 126, "/etc/passwd"),
    (["rm", "nosuch"], 1, "No such container: nosuch"),
])
def test_bad_input_is_one_line_with_dockers_code(env: Env, args: list[str], code: int, message: str) -> None:
    r = env.pb(*args, check=False)
    assert r.returncode == code, r.stderr
    assert message in r.stderr
    assert len([x for x in r.stderr.splitlines() if x.startswith("Error")]) == 1  # one error line
    assert not list(env.root.path.glob("run/*/state.json"))


def test_name_in_use_port_in_use_and_rm_running(env: Env) -> None:
    port = _free_port()
    env.pb("run", "-d", "--name", "taken", "-p", f"{port}:80", "web:test")
    r = env.pb("run", "-d", "--name", "taken", "busybox", check=False)
    assert r.returncode == 125 and 'The container name "/taken" is already in use' in r.stderr
    before = len(list(env.root.containers.iterdir()))
    r = env.pb("run", "-d", "-p", f"{port}:80", "web:test", check=False)
    assert r.returncode == 125 and str(port) in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # Docker leaves the failed container Created; nothing of its network stays
    created = [c.split()[0] for c in env.pb("ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.State}}").stdout.splitlines()
               if c.endswith(" created")]
    assert len(created) == 1 and len(list(env.root.containers.iterdir())) == before + 1
    assert _leftovers(env.root, created) == []
    r = env.pb("rm", "taken", check=False)
    assert r.returncode == 1 and "container is running" in r.stderr
    env.pb("rm", "-f", "taken")
    assert env.pb("ps", "-q").stdout == ""


def test_publish_all_container_and_host_networks(env: Env) -> None:
    env.pb("run", "-d", "--name", "pa", "-P", "web:test")
    line = env.pb("port", "pa", "80").stdout.strip()
    host_port = int(line.rpartition(":")[2])
    assert _get(f"http://127.0.0.1:{host_port}/") == HTTPD_INDEX
    assert f"0.0.0.0:{host_port}->80/tcp" in env.pb("ps").stdout
    # another container in pa's network namespace reaches it on loopback
    out = env.pb("run", "--rm", "--network", "container:pa", "busybox", "wget", "-qO-", "http://127.0.0.1/").stdout
    assert out == HTTPD_INDEX
    host = env.pb("run", "--rm", "--network", "host", "busybox", "hostname").stdout.strip()
    assert host == os.uname().nodename
    r = env.pb("rmi", "web:test", check=False)
    assert r.returncode != 0 and env.state("pa")["Id"][:12] in r.stderr  # type: ignore[index]
    r = env.pb("port", "pa", "81", check=False)
    assert r.returncode != 0 and "No public port '81/tcp'" in r.stderr


def test_stop_signal_and_a_killed_init(env: Env) -> None:
    env.pb("run", "-d", "--name", "polite", "--network", "none", "--stop-signal", "USR1", "busybox", "sh", "-c",
           'trap "echo got USR1; exit 0" USR1; echo ready; while true; do sleep 0.1; done')
    _wait_for(lambda: env.pb("logs", "polite").stdout == "ready\n")
    t0 = time.monotonic()
    env.pb("stop", "polite")  # the default 10 s timeout is not needed: the trap ends it
    assert time.monotonic() - t0 < 5
    assert env.pb("logs", "polite").stdout == "ready\ngot USR1\n"
    assert env.state("polite")["State"]["ExitCode"] == 0  # type: ignore[index]
    env.pb("run", "-d", "--name", "victim", "--network", "none", "busybox", "sleep", "1000")
    os.kill(int(env.state("victim")["State"]["Pid"]), signal.SIGKILL)  # type: ignore[index]
    _wait_for(lambda: env.state("victim")["State"]["Status"] == "exited")  # type: ignore[index]
    assert env.state("victim")["State"]["ExitCode"] == 137  # type: ignore[index]
    assert "Exited (137)" in env.pb("ps", "-a", "--filter", "name=victim").stdout


def test_detached_container_on_runc(env: Env) -> None:
    t0 = time.monotonic()
    env.pb("run", "-d", "--name", "viarunc", "--network", "none", "--runtime", "runc", "busybox",
           "sh", "-c", "echo up; exec sleep 1000")
    assert time.monotonic() - t0 < 10  # `run -d` returns while the container runs
    assert env.state("viarunc")["State"]["Status"] == "running"  # type: ignore[index]
    assert "sleep 1000" in env.pb("exec", "viarunc", "ps").stdout
    _wait_for(lambda: env.pb("logs", "viarunc").stdout == "up\n")
    env.pb("stop", "-t", "1", "viarunc")
    assert env.state("viarunc")["State"]["ExitCode"] == 137  # type: ignore[index]
    env.pb("rm", "viarunc")


def test_a_killed_foreground_rm_run_is_cleaned_up_by_ps(env: Env) -> None:
    p = subprocess.Popen([PYBUILD, "run", "--rm", "--name", "fg", "--network", "none", "busybox",
                          "sleep", "1000"], env=env.environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: "fg" in env.pb("ps", "--format", "{{.Names}}").stdout)
    finally:
        p.kill()  # SIGKILL: the CLI was the container's supervisor
        p.wait()
        assert p.stdout is not None and p.stderr is not None
        p.stdout.close()
        p.stderr.close()
    _wait_for(lambda: env.pb("ps", "-a", "-q").stdout == "")
    assert not any(x.name[:1] != "." for x in env.root.containers.iterdir() if x.is_dir())


def test_capabilities_privileged_and_limits(env: Env) -> None:
    def sh(*flags: str, script: str) -> str:
        return env.pb("run", "--rm", "--network", "none", *flags, "busybox", "sh", "-c", script).stdout

    assert sh(script="chown 1 /tmp && echo chowned") == "chowned\n"
    assert sh("--cap-drop", "CHOWN", script="chown 1 /tmp 2>/dev/null || echo refused") == "refused\n"
    assert sh(script="mount -t tmpfs x /tmp 2>/dev/null || echo refused") == "refused\n"
    assert sh("--cap-add", "SYS_ADMIN", script="mount -t tmpfs x /tmp && echo mounted") == "mounted\n"
    assert sh("--privileged", script="mount -t tmpfs x /tmp && echo mounted") == "mounted\n"
    r = env.pb("run", "--rm", "--network", "none", "--pids-limit", "5", "busybox", "sh", "-c",
               "for i in 1 2 3 4 5 6 7 8; do sleep 600 & done; echo all-forked", check=False)
    assert "can't fork" in r.stderr and "all-forked" not in r.stdout
    # --init: tini is PID 1 and the command its child
    ps = env.pb("run", "--rm", "--network", "none", "--init", "busybox", "ps", "-o", "pid,args").stdout
    assert "1 /sbin/docker-init -- ps -o pid,args" in " ".join(ps.split())
    env.pb("create", "--name", "lim", "--cpus", "0.5", "--memory", "32m", "--pids-limit", "9", "busybox")
    hc = env.state("lim")["HostConfig"]
    assert (hc["NanoCpus"], hc["Memory"], hc["PidsLimit"]) == (500_000_000, 32 << 20, 9)  # type: ignore[index]


def test_run_flags_reach_the_container(env: Env, tmp_path: Path) -> None:
    envfile = tmp_path / "env"
    envfile.write_text("# settings\nFROM_FILE=yes\nSHARED=file\n")
    src = tmp_path / "bind"
    src.mkdir()
    (src / "h").write_text("host data\n")
    out = env.pb(
        "run", "--rm", "--network", "none", "--hostname", "box1", "-w", "/var/www", "-u", "app",
        "--env-file", str(envfile), "-e", "SHARED=flag", "--read-only", "-v", f"{src}:/mnt/bind:ro",
        "--tmpfs", "/scratch:size=1m", "-l", "a=b", "busybox", "sh", "-c",
        "echo $(hostname) $(pwd) $(id -un) $FROM_FILE $SHARED; cat /mnt/bind/h; "
        "touch /mnt/bind/x 2>/dev/null || echo bind-ro; touch /x 2>/dev/null || echo root-ro; "
        "echo ok > /scratch/f && cat /scratch/f; grep -c box1 /etc/hosts").stdout
    assert out == "box1 /var/www app yes flag\nhost data\nbind-ro\nroot-ro\nok\n1\n"
    # -v with a missing absolute source creates it, --mount refuses it
    made = tmp_path / "made-by-v"
    env.pb("run", "--rm", "--network", "none", "-v", f"{made}:/m", "busybox", "true")
    assert made.is_dir()
    r = env.pb("run", "--rm", "--network", "none", "--mount", f"type=bind,src={tmp_path / 'nope'},dst=/m",
               "busybox", "true", check=False)
    assert r.returncode == 125 and "does not exist" in r.stderr
    assert env.pb("ps", "-aq").stdout == ""


def test_sigterm_to_the_supervisor_ends_the_container_for_good(env: Env) -> None:
    env.pb("run", "-d", "--name", "svc", "--network", "none", "--restart", "always", "busybox", "sleep", "1000")
    st = json.loads(next(env.root.containers.glob("*/state.json")).read_text())
    os.kill(st["supervisor_pid"], signal.SIGTERM)
    _wait_for(lambda: not Path(f"/proc/{st['supervisor_pid']}").exists())
    s = env.state("svc")
    assert s["State"]["Status"] == "exited" and s["State"]["ExitCode"] == 137 and s["RestartCount"] == 0  # type: ignore[index]


def test_concurrent_starts_make_one_supervisor(env: Env) -> None:
    env.pb("create", "--name", "once", "--network", "none", "busybox", "sleep", "1000")
    procs = [subprocess.Popen([PYBUILD, "start", "once"], env=env.environ, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    st = env.state("once")
    assert st["State"]["Status"] == "running"  # type: ignore[index]
    top = env.pb("top", "once").stdout
    assert top.count("sleep 1000") == 1
    sleeps = subprocess.run(["pgrep", "-f", "-x", "sleep 1000"], capture_output=True, text=True).stdout.split()
    assert str(st["State"]["Pid"]) in sleeps  # type: ignore[index]


def test_missing_image_is_pulled(env: Env, tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "registry_server", Path(__file__).resolve().parents[1] / "registry" / "registry_server.py")
    assert spec and spec.loader
    rs = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("registry_server", rs)
    spec.loader.exec_module(rs)
    with rs.start_registry(tmp_path / "registry") as reg:
        ref = f"{reg.addr}/pulled/web:1"
        env.pb("tag", "web:test", ref)
        env.pb("push", ref)
        other = Env(StateRoot.open(tmp_path / "other"))
        try:
            r = other.pb("run", "--rm", "--network", "none", ref, "cat", "/var/www/index.html")
            assert r.stdout == HTTPD_INDEX
            assert f"Unable to find image '{ref}' locally" in r.stderr
            assert other.pb("images", "-q").stdout.strip()  # it stays in the store
            r = other.pb("run", "--rm", "--network", "none", "--pull", "always", ref, "true")
            assert "Unable to find" not in r.stderr
            r = other.pb("run", "--rm", "--network", "none", f"{reg.addr}/pulled/nosuch:1", "true",
                         check=False)
            assert r.returncode == 125
            assert [x for x in r.stderr.splitlines() if x.startswith("Error")] == [
                x for x in r.stderr.splitlines() if "pull of" in x]
        finally:
            from builder import network

            network.reset(other.root)


def test_sizes_of_the_writable_layer(env: Env) -> None:
    env.pb("run", "--name", "sz", "--network", "none", "busybox", "sh", "-c", "head -c 100000 /dev/zero > /big")
    assert env.pb("ps", "-a", "-s", "--format", "{{.Size}}").stdout.startswith("100kB (virtual ")
    st = json.loads(env.pb("container", "inspect", "-s", "sz").stdout)[0]
    assert st["SizeRw"] == 100000 and st["SizeRootFs"] > st["SizeRw"]
