"""Container endpoints of ``pybuild serve``, judged by real clients: Debian's ``docker`` CLI and
docker-py, each result compared with what ``pybuild`` itself says about the same state root."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from serve_client import Daemon

#: Debian's docker CLI (20.10), as the serve fixture's ``docker()`` runs it
DOCKER = "/usr/bin/docker"

REPO = Path(__file__).resolve().parents[2]
HTTPD = REPO / "testdata" / "contexts" / "httpd"


def _wait_http(url: str, timeout: float = 20) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return bytes(r.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _ids(text: str) -> set[str]:
    return {line.split()[0] for line in text.splitlines()[1:] if line.strip()}


def test_docker_cli_web_workflow(serve: Daemon) -> None:
    """build (pybuild) -> docker run -d -p -> GET -> ps/logs/exec/inspect/top -> stop -> rm,
    each compared with the same pybuild command."""
    serve.pyb("build", "-q", "-t", "x", str(HTTPD))
    cid = serve.docker("run", "-d", "--name", "web", "-p", "18081:80", "x").stdout.strip()
    assert len(cid) == 64
    try:
        body = _wait_http("http://127.0.0.1:18081/index.html")
        assert body == (HTTPD / "index.html").read_bytes()
        ps_docker = serve.docker("ps", "--no-trunc").stdout
        ps_pyb = serve.pyb("ps", "--no-trunc").stdout
        assert _ids(ps_docker) == _ids(ps_pyb) == {cid}
        assert "0.0.0.0:18081->80/tcp" in ps_docker and "web" in ps_docker
        fmt = "{{.ID}} {{.Names}} {{.Image}} {{.Status}}"
        d_line = serve.docker("ps", "--format", fmt).stdout.split()
        p_line = serve.pyb("ps", "--format", fmt).stdout.split()
        assert d_line[:3] == p_line[:3] == [cid[:12], "web", "x"]
        # logs: httpd logs each request on stderr
        logs_d = serve.docker("logs", "web")
        logs_p = serve.pyb("logs", "web")
        assert "response:200" in logs_d.stderr
        # the image's healthcheck keeps requesting: what docker showed is where pybuild's starts
        assert logs_d.stdout == logs_p.stdout == ""
        assert logs_p.stderr.startswith(logs_d.stderr)
        # exec
        ls_d = serve.docker("exec", "web", "ls", "/var/www").stdout
        assert ls_d == serve.pyb("exec", "web", "ls", "/var/www").stdout
        assert set(ls_d.split()) == {"index.html", "built.txt"}
        r = serve.docker("exec", "web", "sh", "-c", "exit 7", check=False)
        assert r.returncode == 7
        # inspect agrees
        insp = json.loads(serve.docker("inspect", "web").stdout)[0]
        mine = json.loads(serve.pyb("inspect", "web").stdout)[0]
        assert insp["Id"] == mine["Id"] == cid
        assert insp["State"]["Running"] and insp["State"]["Pid"] == mine["State"]["Pid"]
        assert insp["NetworkSettings"]["Ports"]["80/tcp"] == [{"HostIp": "0.0.0.0", "HostPort": "18081"}]
        top = serve.docker("top", "web").stdout
        assert "httpd -f -v -p 80" in top
        serve.docker("stop", "-t", "2", "web")
        assert serve.pyb("ps", "-q").stdout.strip() == ""
        st = json.loads(serve.pyb("inspect", "web").stdout)[0]["State"]
        assert st["Status"] == "exited"
        serve.docker("rm", "web")
        assert serve.pyb("ps", "-aq").stdout.strip() == ""
    finally:
        serve.pyb("rm", "-f", "web", check=False)


def _pty_run(argv: list[str], env: dict[str, str], script: list[tuple[bytes, bytes]],
             timeout: float = 30, winsize: tuple[int, int] | None = None) -> tuple[int, bytes]:
    """Run *argv* on a pty (of *winsize* rows and columns, announced with SIGWINCH too); for
    each (wait_for, send) pair, read until *wait_for* appears then type *send*. Returns the exit
    status and everything read."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - child
        os.execve(argv[0], argv, env)
    if winsize is not None:
        import fcntl
        import signal
        import struct
        import termios

        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", winsize[0], winsize[1], 0, 0))
    out = b""
    deadline = time.monotonic() + timeout
    try:
        for i, (wait_for, send) in enumerate(script):
            if i == 1 and winsize is not None:
                os.kill(pid, signal.SIGWINCH)
            while wait_for not in out:
                if time.monotonic() > deadline:
                    raise AssertionError(f"timed out waiting for {wait_for!r}; got {out!r}")
                r, _, _ = select.select([fd], [], [], 0.5)
                if r:
                    try:
                        out += os.read(fd, 65536)
                    except OSError:
                        raise AssertionError(f"pty closed before {wait_for!r}; got {out!r}") from None
            os.write(fd, send)
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.5)
            if r:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    return os.waitstatus_to_exitcode(status), out


def test_docker_run_rm_it_through_a_pty(serve: Daemon) -> None:
    """``docker run --rm -it busybox sh`` on a pty: type a command, read its output, exit."""
    code, out = _pty_run([DOCKER, "run", "--rm", "-it", "busybox", "sh"], serve.env, [
        (b"# ", b"echo hello-$((6*7))\r"),
        (b"hello-42", b"exit 3\r"),
    ])
    assert b"hello-42" in out, out
    assert code == 3, out
    # --rm: gone, for pybuild too
    deadline = time.monotonic() + 10
    while serve.pyb("ps", "-aq").stdout.strip() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert serve.pyb("ps", "-aq").stdout.strip() == ""


def test_docker_exec_it_through_a_pty(serve: Daemon) -> None:
    serve.docker("run", "-d", "--name", "box", "busybox", "sleep", "300")
    try:
        code, out = _pty_run([DOCKER, "exec", "-it", "box", "sh"], serve.env, [
            (b"# ", b"echo $((7*6))-in-$(hostname)\r"),
            # the client's terminal size reaches the exec's pty (POST /exec/{id}/resize)
            (b"42-in-", b"until [ \"$(stty size)\" = '40 120' ]; do sleep 0.1; done; echo sized-ok\r"),
            (b"sized-ok\r\n", b"exit\r"),
        ], winsize=(40, 120))
        assert code == 0, out
        cid = serve.pyb("ps", "-q").stdout.strip()
        assert f"42-in-{cid}".encode() in out
    finally:
        serve.docker("rm", "-f", "box")


def test_docker_run_rm_attached_output_and_exit_code(serve: Daemon) -> None:
    """Non-interactive ``docker run --rm``: attach, start, the output and the exit code."""
    r = serve.docker("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 5", check=False)
    assert r.returncode == 5, r
    assert r.stdout == "out\n" and r.stderr == "err\n"
    r = serve.docker("run", "-i", "--rm", "busybox", "cat", input="piped through\n")
    assert r.stdout == "piped through\n"
    assert serve.pyb("ps", "-aq").stdout.strip() == ""


def test_docker_py_containers(serve: Daemon) -> None:
    client = serve.client
    c = client.containers.run("busybox", ["sh", "-c", "echo started; sleep 300"], detach=True,
                              name="pyc", labels={"app": "t"})
    try:
        assert c.id in serve.pyb("ps", "-q", "--no-trunc").stdout
        deadline = time.monotonic() + 10
        while b"started" not in c.logs() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.logs() == b"started\n"
        code, out = c.exec_run(["sh", "-c", "echo $((1+2)); exit 4"])
        assert (code, out) == (4, b"3\n")
        listed = client.containers.list(filters={"label": "app=t"})
        assert [x.id for x in listed] == [c.id]
        c.reload()
        assert c.status == "running" and c.name == "pyc"
        c.stop(timeout=1)
        c.reload()
        assert c.status == "exited"
        assert client.containers.get("pyc").attrs["State"]["ExitCode"] == 137
        c.remove()
        assert serve.pyb("ps", "-aq").stdout.strip() == ""
    finally:
        serve.pyb("rm", "-f", "pyc", check=False)


def test_api_errors(serve: Daemon) -> None:
    code, _h, body = serve.api("GET", "/v1.41/containers/nope/json")
    assert (code, json.loads(body)) == (404, {"message": "No such container: nope"})
    code, _h, body = serve.api("POST", "/containers/create", "{not json",
                               headers={"Content-Type": "application/json"})
    assert code == 400 and "invalid JSON" in json.loads(body)["message"]
    code, _h, body = serve.api("POST", "/containers/create?name=dup", {"Image": "busybox", "Cmd": ["true"]})
    assert code == 201
    code, _h, body = serve.api("POST", "/containers/create?name=dup", {"Image": "busybox", "Cmd": ["true"]})
    assert code == 409 and "already in use" in json.loads(body)["message"]
    code, _h, body = serve.api("POST", "/containers/create", {"Image": "nosuchimage:1", "Cmd": ["true"]})
    assert code == 404 and "No such image" in json.loads(body)["message"]
    code, _h, body = serve.api("POST", "/containers/nope/start")
    assert code == 404
    # nothing half-made: one container, the first "dup"
    assert len(serve.pyb("ps", "-aq").stdout.split()) == 1
    serve.pyb("rm", "dup")


def test_concurrent_container_lists(serve: Daemon) -> None:
    import concurrent.futures

    serve.docker("create", "--name", "c1", "busybox", "true")

    def one(_: int) -> tuple[int, Any]:
        code, _h, body = serve.api("GET", "/containers/json?all=1")
        return code, json.loads(body)

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        results = list(pool.map(one, range(50)))
    assert all(code == 200 for code, _ in results)
    assert all([x["Names"] for x in body] == [["/c1"]] for _, body in results)
    serve.pyb("rm", "c1")


def test_client_dropping_mid_logs_follow(serve: Daemon) -> None:
    serve.docker("run", "-d", "--name", "talk", "busybox", "sh", "-c",
                 "while true; do echo tick; sleep 0.1; done")
    try:
        p = subprocess.Popen([DOCKER, "logs", "-f", "talk"], env=serve.env, stdout=subprocess.PIPE)
        assert p.stdout is not None
        assert p.stdout.readline() == b"tick\n"
        p.kill()
        p.wait()
        # and an attach dropped mid-stream
        a = subprocess.Popen([DOCKER, "attach", "--no-stdin", "talk"], env=serve.env, stdout=subprocess.PIPE)
        assert a.stdout is not None
        assert a.stdout.readline() == b"tick\n"
        a.kill()
        a.wait()
        assert serve.api("GET", "/_ping")[0] == 200
        # the container outlives its departed client: its output goes on (no SIGPIPE death)
        n = serve.pyb("logs", "talk").stdout.count("tick")
        deadline = time.monotonic() + 10
        while serve.pyb("logs", "talk").stdout.count("tick") < n + 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert serve.pyb("logs", "talk").stdout.count("tick") >= n + 5
        assert json.loads(serve.pyb("inspect", "talk").stdout)[0]["State"]["Running"] is True
    finally:
        serve.docker("rm", "-f", "talk")


def test_docker_run_host_options(serve: Daemon) -> None:
    """``--add-host``, ``--dns*``, ``--ulimit``, ``--sysctl``, ``--shm-size``, ``--device`` from the
    docker CLI reach the sandbox through the create body's HostConfig, and are checked there."""
    script = ("grep -w db /etc/hosts; grep -v '^#' /etc/resolv.conf; ulimit -n; ulimit -Hn; cat /proc/sys/kernel/shmmax; "
              "df -k /dev/shm | tail -1; (exec 3</dev/myfuse) && echo read-ok; (exec 3<>/dev/myfuse) && echo rw-ok; true")
    out = serve.docker("run", "--rm", "--add-host", "db:10.1.2.3", "--dns", "10.0.0.53", "--dns-search", "example.test",
                       "--dns-option", "ndots:2", "--ulimit", "nofile=1024:2048", "--sysctl", "kernel.shmmax=12345678",
                       "--shm-size", "128m", "--device", "/dev/fuse:/dev/myfuse:r", "busybox", "sh", "-c", script).stdout
    lines = out.splitlines()
    assert lines[:8] == ["10.1.2.3\tdb", "nameserver 10.0.0.53", "search example.test", "options ndots:2",
                         "1024", "2048", "12345678", lines[7]]
    assert lines[7].split()[1] == "131072" and lines[8:] == ["read-ok"]
    import resource

    held = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    r = serve.docker("run", "--rm", "--ulimit", f"nofile=1024:{held + 1}", "busybox", "true", check=False)
    assert r.returncode == 125 and "CAP_SYS_RESOURCE" in r.stderr
    r = serve.docker("run", "--rm", "--device", "/dev/no-such-device", "busybox", "true", check=False)
    assert r.returncode == 125 and "/dev/no-such-device" in r.stderr
    assert serve.pyb("ps", "-aq").stdout.strip() == ""


def test_docker_cli_lifecycle_verbs(serve: Daemon) -> None:
    """create/start -a/restart/kill/wait/rename/top/container prune through the socket, each
    checked against pybuild's view of the same root."""
    cid = serve.docker("create", "--name", "job", "-e", "WHO=api", "-l", "team=a", "busybox",
                       "sh", "-c", "echo hi-$WHO; exit 4").stdout.strip()
    assert serve.pyb("ps", "-aq", "--no-trunc").stdout.split() == [cid]
    assert json.loads(serve.pyb("inspect", "job").stdout)[0]["State"]["Status"] == "created"
    r = serve.docker("start", "-a", "job", check=False)
    assert (r.returncode, r.stdout) == (4, "hi-api\n")
    assert serve.docker("wait", "job").stdout.strip() == "4"
    serve.docker("rename", "job", "job2")
    assert serve.pyb("ps", "-a", "--format", "{{.Names}}").stdout.split() == ["job2"]
    r = serve.docker("rename", "job2", "job2", check=False)
    assert r.returncode != 0
    serve.docker("run", "-d", "--name", "svc", "busybox", "sleep", "300")
    before = json.loads(serve.pyb("inspect", "svc").stdout)[0]["State"]["StartedAt"]
    serve.docker("restart", "-t", "1", "svc")
    after = json.loads(serve.pyb("inspect", "svc").stdout)[0]["State"]
    assert after["Running"] and after["StartedAt"] != before
    assert "sleep 300" in serve.docker("top", "svc").stdout
    serve.docker("kill", "-s", "KILL", "svc")
    assert serve.docker("wait", "svc").stdout.strip() == "137"
    r = serve.docker("kill", "svc", check=False)
    assert r.returncode != 0 and "is not running" in r.stderr
    assert serve.docker("ps", "-a", "-q", "--filter", "exited=137").stdout.split() == \
        serve.pyb("ps", "-a", "-q", "--filter", "exited=137").stdout.split() == [
            serve.pyb("ps", "-aq", "--filter", "name=svc").stdout.strip()]
    out = serve.docker("container", "prune", "-f").stdout
    assert "Deleted Containers" in out
    assert serve.pyb("ps", "-aq").stdout.strip() == ""


def test_pause_unpause_freezes_the_container(serve: Daemon) -> None:
    serve.docker("run", "-d", "--name", "ticker", "busybox", "sh", "-c",
                 "while true; do date +%s%N >> /tmp/t; sleep 0.05; done")
    try:
        serve.docker("pause", "ticker")
        st = json.loads(serve.docker("inspect", "ticker").stdout)[0]["State"]
        assert st["Status"] == "paused" and st["Paused"] is True and st["Running"] is True
        assert "(Paused)" in serve.pyb("ps").stdout
        assert serve.docker("ps", "-q", "--filter", "status=paused").stdout.split() == \
            serve.pyb("ps", "-q", "--filter", "status=paused").stdout.split()
        r = serve.docker("exec", "ticker", "true", check=False)
        assert r.returncode != 0 and "is paused" in r.stderr
        # frozen: nothing is appended meanwhile (read through the container's upper dir)
        cid = serve.pyb("ps", "-q", "--no-trunc").stdout.strip()
        upper = serve.pyb.root / "containers" / cid / "upper" / "tmp" / "t"
        n = len(upper.read_text().splitlines())
        time.sleep(0.5)
        assert len(upper.read_text().splitlines()) == n
        r = serve.docker("pause", "ticker", check=False)
        assert r.returncode != 0 and "already paused" in r.stderr
        serve.pyb("unpause", "ticker")
        deadline = time.monotonic() + 5
        while len(upper.read_text().splitlines()) == n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(upper.read_text().splitlines()) > n
        r = serve.docker("unpause", "ticker", check=False)
        assert r.returncode != 0 and "is not paused" in r.stderr
        # a paused container still stops (thawed to take the signal)
        serve.docker("pause", "ticker")
        serve.docker("stop", "-t", "1", "ticker")
        st = json.loads(serve.pyb("inspect", "ticker").stdout)[0]["State"]
        assert st["Status"] == "exited" and st["Paused"] is False
    finally:
        serve.docker("rm", "-f", "ticker")


def test_bad_create_bodies_leave_nothing(serve: Daemon) -> None:
    """Refused create bodies: 400 with Docker's message shape, and no record, volume or
    network left behind."""
    before_vols = serve.pyb("volume", "ls", "-q").stdout
    for body, words in (
        ({"Image": "busybox", "HostConfig": {"RestartPolicy": {"Name": "sometimes"}}}, "restart"),
        ({"Image": "busybox", "HostConfig": {"PortBindings": {"99999/tcp": [{"HostPort": "1"}]}}}, "port"),
        ({"Image": "busybox", "HostConfig": {"Binds": ["relative/path:/x"]}}, "relative"),
        ({"Image": "busybox", "Cmd": "not-a-list-but-ok", "Env": [7]}, "Env"),
        ({"Cmd": ["true"]}, "Image"),
    ):
        code, _h, data = serve.api("POST", "/containers/create", body)
        msg = json.loads(data)["message"]
        assert code == 400, (body, code, msg)
        assert words.lower() in msg.lower(), (body, msg)
    assert serve.pyb("ps", "-aq").stdout.strip() == ""
    assert serve.pyb("volume", "ls", "-q").stdout == before_vols
    # docker-py's non-detached run: create, start, wait, logs, remove
    assert serve.client.containers.run("busybox", ["echo", "hi"], remove=True) == b"hi\n"
    assert serve.pyb("ps", "-aq").stdout.strip() == ""


def test_logs_tail_since_timestamps_and_listing_options(serve: Daemon) -> None:
    serve.docker("run", "-d", "--name", "lines", "busybox", "sh", "-c",
                 "for i in 1 2 3 4 5; do echo out-$i; echo err-$i >&2; done; sleep 300")
    try:
        deadline = time.monotonic() + 10
        while "err-5" not in serve.pyb("logs", "lines").stderr and time.monotonic() < deadline:
            time.sleep(0.05)
        for args in (["--tail", "2"], ["-t"], ["--tail", "1", "-t"], ["--since", "1h"],
                     ["--since", "2100-01-01T00:00:00Z"]):
            d = serve.docker("logs", *args, "lines")
            p = serve.pyb("logs", *args, "lines")
            assert (d.stdout, d.stderr) == (p.stdout, p.stderr), args
        d = serve.docker("logs", "--tail", "2", "lines")
        assert len((d.stdout + d.stderr).splitlines()) == 2  # the last two lines of both streams
        assert set(serve.docker("logs", "lines").stdout.splitlines()) == {f"out-{i}" for i in range(1, 6)}
        stamped = serve.docker("logs", "-t", "lines").stdout.splitlines()
        assert len(stamped) == 5 and all(line.split(" ", 1)[0].endswith("Z") for line in stamped)
        assert serve.docker("logs", "--since", "2100-01-01T00:00:00Z", "lines").stdout == ""
        # /containers/json: limit (includes stopped ones), size
        serve.docker("create", "--name", "idle", "busybox", "true")
        rows = serve.json("GET", "/containers/json?limit=1&size=1")
        assert [r["Names"] for r in rows] == [["/idle"]] and "SizeRw" in rows[0] and "SizeRootFs" in rows[0]
        rows = serve.json("GET", '/containers/json?filters={"status":{"running":true}}')
        assert [r["Names"] for r in rows] == [["/lines"]]
        code, _h, body = serve.api("GET", '/containers/json?filters={"colour":["red"]}')
        assert code == 400 and "colour" in json.loads(body)["message"]
    finally:
        serve.docker("rm", "-f", "lines", "idle")


def test_detach_keys_then_docker_attach(serve: Daemon) -> None:
    """``run -it`` left with ctrl-p ctrl-q keeps the container running; ``docker attach`` on a
    pty takes the shell back, and its exit ends the container."""
    code, out = _pty_run([DOCKER, "run", "-it", "--name", "det", "busybox", "sh"], serve.env, [
        (b"# ", b"\x10\x11"),
    ])
    assert code == 0, out
    try:
        st = json.loads(serve.pyb("inspect", "det").stdout)[0]["State"]
        assert st["Running"] is True
        code, out = _pty_run([DOCKER, "attach", "det"], serve.env, [
            (b"", b"\r"),  # a fresh prompt first: ash may be awaiting a cursor-position reply
            (b"# ", b"echo back-$((40+2))\r"),
            (b"back-42", b"exit 2\r"),
        ])
        assert b"back-42" in out and code == 2, out
        assert serve.docker("wait", "det").stdout.strip() == "2"
    finally:
        serve.docker("rm", "-f", "det")


def test_docker_cp_both_ways(serve: Daemon, tmp_path: Path) -> None:
    """``docker cp`` through /containers/{id}/archive (HEAD stat, PUT tar, GET tar), checked with
    pybuild exec and pybuild cp on the same container."""
    serve.docker("run", "-d", "--name", "files", "busybox", "sleep", "300")
    try:
        src = tmp_path / "in"
        (src / "sub").mkdir(parents=True)
        (src / "a.txt").write_text("alpha\n")
        (src / "sub" / "b.txt").write_text("beta\n")
        serve.docker("cp", str(src), "files:/tmp/")
        assert serve.pyb("exec", "files", "cat", "/tmp/in/a.txt", "/tmp/in/sub/b.txt").stdout == "alpha\nbeta\n"
        serve.docker("cp", str(src / "a.txt"), "files:/tmp/renamed.txt")
        assert serve.pyb("exec", "files", "cat", "/tmp/renamed.txt").stdout == "alpha\n"
        out = tmp_path / "out"
        serve.docker("cp", "files:/tmp/in", str(out))
        assert (out / "sub" / "b.txt").read_text() == "beta\n"
        serve.pyb("cp", "files:/tmp/in", str(tmp_path / "mine"))
        assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == \
            sorted(p.relative_to(tmp_path / "mine").as_posix() for p in (tmp_path / "mine").rglob("*"))
        r = serve.docker("cp", "files:/no/such/path", str(tmp_path / "x"), check=False)
        assert r.returncode != 0 and "/no/such/path" in r.stderr
        code, _h, _b = serve.api("HEAD", "/containers/files/archive?path=/etc/hostname")
        assert code == 200
    finally:
        serve.docker("rm", "-f", "files")
