"""Clients of a ``pybuild serve`` daemon for the tests: ``Daemon`` (start, stop, docker CLI,
docker-py, raw HTTP) and ``uhttp``, one raw HTTP request over a unix socket.

A plain module, not the conftest, so that test files import it by a name no other test
directory uses (``from conftest import ...`` finds whichever conftest came first on sys.path).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

DOCKER = "/usr/bin/docker"


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 60) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def uhttp(sock: str, method: str, path: str, body: bytes | str | dict[str, Any] | None = None,
          headers: dict[str, str] | None = None,
          timeout: float = 120) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request over a unix socket; returns status, headers, whole body."""
    conn = UnixHTTPConnection(sock, timeout=timeout)
    hdrs = dict(headers or {})
    if isinstance(body, dict):
        body = json.dumps(body)
        hdrs.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


class Daemon:
    def __init__(self, pyb: Any, *extra: str) -> None:
        self.pyb = pyb
        self.dir = Path(tempfile.mkdtemp(prefix="pbserve-", dir="/tmp"))
        self.sock = str(self.dir / "api.sock")
        self.host = f"unix://{self.sock}"
        self.config = self.dir / "docker-config"
        self.config.mkdir()
        self.env = {**os.environ, "DOCKER_HOST": self.host, "DOCKER_CONFIG": str(self.config)}
        for k in ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT", "DOCKER_BUILDKIT"):
            self.env.pop(k, None)
        self.log = self.dir / "daemon.log"
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self._client: Any = None

    def start(self, timeout: float = 30) -> Daemon:
        environ = {k: v for k, v in os.environ.items() if k != "PYBUILD_ROOT"}
        # the daemon's own config.json is empty: credentials come from the clients' headers
        environ["DOCKER_CONFIG"] = str(self.dir / "daemon-config")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [*self.pyb.command, "--root", str(self.pyb.root), "serve", "--host", self.host,
                 *self.extra], stdout=log, stderr=subprocess.STDOUT, env=environ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"pybuild serve exited {self.proc.returncode}:\n"
                                     + self.log.read_text())
            try:
                status, _h, body = uhttp(self.sock, "GET", "/_ping", timeout=5)
                if status == 200 and body == b"OK":
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise AssertionError("pybuild serve did not answer /_ping:\n" + self.log.read_text())

    def stop(self) -> None:
        """SIGTERM and wait; check a clean exit and that the socket is gone."""
        if self._client is not None:
            self._client.close()
            self._client = None
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("pybuild serve did not stop on SIGTERM:\n"
                                 + self.log.read_text()) from None
        log = self.log.read_text(errors="replace")
        left = os.path.exists(self.sock)
        shutil.rmtree(self.dir, ignore_errors=True)
        assert code == 0, f"pybuild serve exited {code}:\n{log}"
        assert "Traceback" not in log, log
        assert not left, "the socket outlived the daemon"

    def docker(self, *args: str, check: bool = True, input: bytes | str | None = None,
               text: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[Any]:
        if text and isinstance(input, bytes):
            input = input.decode()
        r = subprocess.run([DOCKER, *args], env=self.env, capture_output=True, text=text,
                           input=input, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {r.returncode}\n"
                                 f"stdout: {r.stdout!r}\nstderr: {r.stderr!r}\n"
                                 f"daemon: {self.log.read_text(errors='replace')[-3000:]}")
        return r

    @property
    def client(self) -> Any:
        if self._client is None:
            import docker

            self._client = docker.DockerClient(base_url=self.host, version="1.41", timeout=120)
        return self._client

    def api(self, method: str, path: str, body: bytes | str | dict[str, Any] | None = None,
            headers: dict[str, str] | None = None,
            timeout: float = 120) -> tuple[int, dict[str, str], bytes]:
        return uhttp(self.sock, method, path, body, headers, timeout)

    def json(self, method: str, path: str, body: Any = None, *, status: int = 200) -> Any:
        code, _h, data = self.api(method, path, body)
        assert code == status, (code, data)
        return json.loads(data) if data else None
