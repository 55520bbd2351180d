"""Exec and attach through ``pybuild serve``: the hijacked connection (101 Switching Protocols,
then raw bytes both ways), stdin half-close, detached exec, resize, and container events from
the CLI and the daemon alike."""

from __future__ import annotations

import json
import socket
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from serve_client import Daemon


def _read_until(sock: socket.socket, needle: bytes, timeout: float = 15) -> bytes:
    sock.settimeout(timeout)
    out = b""
    deadline = time.monotonic() + timeout
    while needle not in out and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        out += chunk
    return out


def _raw(serve: Daemon, method: str, path: str, body: bytes = b"") -> tuple[socket.socket, bytes]:
    """One request with ``Upgrade: tcp`` on a raw socket: the socket and the response head."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(serve.sock)
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
              f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    head = b""
    s.settimeout(15)
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            break
        head += chunk
    return s, head


def test_exec_stdin_half_close_and_inspect(serve: Daemon) -> None:
    serve.docker("run", "-d", "--name", "box", "busybox", "sleep", "300")
    try:
        # the Docker CLI: stdin copied, then half-closed; cat sees EOF and exits
        r = serve.docker("exec", "-i", "box", "sh", "-c", "cat; echo done-$?", input="line one\nline two\n")
        assert r.stdout == "line one\nline two\ndone-0\n"
        # the same on a raw hijacked connection: 101, multiplexed frames back
        code, _h, body = serve.api("POST", "/containers/box/exec",
                                   {"Cmd": ["sh", "-c", "read x; echo got-$x; echo e >&2; exit 3"],
                                    "AttachStdin": True, "AttachStdout": True, "AttachStderr": True})
        assert code == 201
        exec_id = json.loads(body)["Id"]
        s, head = _raw(serve, "POST", f"/exec/{exec_id}/start", b'{"Detach": false, "Tty": false}')
        assert head.startswith(b"HTTP/1.1 101 ") and b"upgrade: tcp" in head.lower()
        s.sendall(b"hello\n")
        s.shutdown(socket.SHUT_WR)
        data = _read_until(s, b"__never__")
        s.close()
        frames = []
        while data:
            kind, size = data[0], int.from_bytes(data[4:8], "big")
            frames.append((kind, data[8:8 + size]))
            data = data[8 + size:]
        assert (1, b"got-hello\n") in frames and (2, b"e\n") in frames
        info = serve.json("GET", f"/exec/{exec_id}/json")
        assert info["ExitCode"] == 3 and info["Running"] is False and info["ContainerID"]
        # started twice: refused
        code, _h, _b = serve.api("POST", f"/exec/{exec_id}/start", {"Detach": True})
        assert code == 409
        code, _h, body = serve.api("GET", "/exec/nope/json")
        assert code == 404 and json.loads(body) == {"message": "No such exec instance: nope"}
    finally:
        serve.docker("rm", "-f", "box")
    code, _h, body = serve.api("POST", "/containers/box/exec", {"Cmd": ["true"]})
    assert code == 404


def test_exec_detached_and_not_running(serve: Daemon) -> None:
    serve.docker("run", "-d", "--name", "box", "busybox", "sleep", "300")
    try:
        serve.docker("exec", "-d", "box", "sh", "-c", "sleep 0.2; echo later > /tmp/mark")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = serve.docker("exec", "box", "cat", "/tmp/mark", check=False)
            if r.returncode == 0:
                break
            time.sleep(0.1)
        assert r.stdout == "later\n"
        r = serve.docker("exec", "box", "/no/such/cmd", check=False)
        assert r.returncode in (126, 127) and "no/such/cmd" in (r.stdout + r.stderr)
        serve.docker("stop", "-t", "1", "box")
        r = serve.docker("exec", "box", "true", check=False)
        assert r.returncode != 0 and "is not running" in r.stderr
    finally:
        serve.docker("rm", "-f", "box")


def test_attach_to_running_container_with_stdin(serve: Daemon) -> None:
    """docker-py's attach socket on a ``-i`` container: what we send comes back from cat."""
    client = serve.client
    c = client.containers.run("busybox", ["cat"], detach=True, stdin_open=True, name="echo")
    try:
        sock = client.api.attach_socket(c.id, params={"stdin": 1, "stdout": 1, "stream": 1})
        raw = sock._sock
        raw.sendall(b"ping-pong\n")
        out = _read_until(raw, b"ping-pong\n")
        assert out[8:] == b"ping-pong\n" and out[0] == 1
        raw.close()
        # the client left; the container and the daemon carry on
        c.reload()
        assert c.status == "running"
        assert serve.api("GET", "/_ping")[0] == 200
        assert serve.pyb("logs", "echo").stdout == "ping-pong\n"
    finally:
        c.remove(force=True)


def test_container_resize_reaches_its_terminal(serve: Daemon) -> None:
    client = serve.client
    c = client.containers.run("busybox", ["sh", "-c", "while true; do stty size; sleep 0.1; done"],
                              detach=True, tty=True, name="tty")
    try:
        client.api.resize(c.id, height=33, width=101)
        deadline = time.monotonic() + 10
        while b"33 101" not in c.logs() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert b"33 101" in c.logs()
        code, _h, body = serve.api("POST", "/containers/tty/resize?h=x&w=1")
        assert code == 400
    finally:
        c.remove(force=True)


def test_events_from_cli_and_daemon(serve: Daemon) -> None:
    since = int(time.time()) - 1
    serve.pyb("run", "--rm", "--name", "fromcli", "busybox", "true")
    serve.docker("run", "--rm", "--name", "fromapi", "busybox", "true")
    serve.docker("network", "create", "evnet")
    serve.docker("network", "rm", "evnet")
    serve.docker("volume", "create", "evvol")
    serve.docker("volume", "rm", "evvol")
    until = int(time.time()) + 1
    evs = list(serve.client.events(since=since, until=until, decode=True))
    seen = [(e["Type"], e["Action"], e["Actor"]["Attributes"].get("name", e["Actor"]["ID"])) for e in evs]
    for name in ("fromcli", "fromapi"):
        for action in ("create", "start", "die", "destroy"):
            assert ("container", action, name) in seen, (action, name, seen)
    assert ("network", "create", "evnet") in seen and ("network", "destroy", "evnet") in seen
    assert ("volume", "create", "evvol") in seen and ("volume", "destroy", "evvol") in seen
    die = next(e for e in evs if e["Action"] == "die" and e["Actor"]["Attributes"]["name"] == "fromapi")
    assert die["Actor"]["Attributes"]["exitCode"] == "0" and die["Actor"]["Attributes"]["image"] == "busybox"
