"""The server core: listeners, versioned paths, ping/version, errors."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from registry_server import free_port, make_tls
from serve_client import DOCKER, uhttp


def test_ping_get_and_head_with_dockers_headers(serve: Any) -> None:
    for path in ("/_ping", "/v1.41/_ping", "/v1.24/_ping"):
        status, headers, body = serve.api("GET", path)
        assert (status, body) == (200, b"OK")
        assert headers["api-version"] == "1.41"
        assert headers["docker-experimental"] == "false"
        assert headers["ostype"] == "linux"
    status, headers, body = serve.api("HEAD", "/_ping")
    assert status == 200 and body == b""
    assert headers["api-version"] == "1.41" and headers["ostype"] == "linux"


def test_version_from_docker_cli_and_docker_py(serve: Any) -> None:
    out = json.loads(serve.docker("version", "--format", "{{json .Server}}").stdout)
    assert out["ApiVersion"] == "1.41"
    assert out["MinAPIVersion"] == "1.24"
    assert out["Os"] == "linux"
    assert out["Components"][0]["Name"] == "Engine"
    v = serve.client.version()
    assert v["ApiVersion"] == "1.41" and v["Version"] == out["Version"]
    assert serve.client.ping() is True


# -- listeners ------------------------------------------------------------------------------------
def test_unix_socket_mode_several_hosts_and_a_live_socket_refused(busybox: Any,
                                                                  serve_factory: Any,
                                                                  tmp_path: Path) -> None:
    second = tempfile.mkdtemp(prefix="pbserve-", dir="/tmp")
    try:
        other = f"{second}/second.sock"
        d = serve_factory(busybox, "--host", f"unix://{other}")
        for sock in (d.sock, other):
            assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660
            assert uhttp(sock, "GET", "/_ping")[2] == b"OK"
        # a second daemon on a socket that answers: refused, and the first keeps it
        r = busybox("serve", "--host", f"unix://{other}", check=False, timeout=30)
        assert r.returncode == 1 and "another daemon is listening" in r.stderr
        assert uhttp(other, "GET", "/_ping")[2] == b"OK"
        d.stop()
        assert not os.path.exists(other)
        # a stale socket file (nobody listens) is replaced
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(other)
        stale.close()
        d2 = serve_factory(busybox, "--host", f"unix://{other}")
        assert uhttp(other, "GET", "/_ping")[2] == b"OK"
        d2.stop()
    finally:
        shutil.rmtree(second, ignore_errors=True)


def test_refused_listeners_start_nothing(busybox: Any, tmp_path: Path) -> None:
    port = free_port()
    sock = tmp_path / "x.sock"
    cases = [
        (["--host", f"tcp://0.0.0.0:{port}"], "non-loopback address needs TLS"),
        (["--host", f"tcp://0.0.0.0:{port}", "--tls", "--tlscert", "/nonexistent",
          "--tlskey", "/nonexistent"], "non-loopback address needs TLS"),
        (["--host", f"tcp://127.0.0.1:{port}", "--tlsverify"],
         "--tlsverify needs --tlscacert, --tlscert and --tlskey"),
        (["--host", f"tcp://127.0.0.1:{port}", "--tlsverify", "--tlscacert", "/nonexistent",
          "--tlscert", "/nonexistent", "--tlskey", "/nonexistent"], "TLS files"),
        (["--host", "ftp://127.0.0.1:21"], "only unix:// and tcp://"),
        (["--host", "127.0.0.1:2375"], "expected unix:///path or tcp://host:port"),
    ]
    for args, message in cases:
        r = busybox("serve", "--host", f"unix://{sock}", *args, check=False, timeout=30)
        assert r.returncode == 1 and message in r.stderr, (args, r.stderr)
        assert r.stderr.count("\n") == 1  # one line, no traceback
        assert not sock.exists()


def test_tcp_with_tls_verifies_client_certificates(busybox: Any, serve_factory: Any,
                                                   tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    tls = make_tls(tmp_path / "tls")
    port = free_port()
    serve_factory(busybox, "--host", f"tcp://127.0.0.1:{port}", "--tlsverify",
                  "--tlscacert", str(tls.ca_cert), "--tlscert", str(tls.cert),
                  "--tlskey", str(tls.key))
    env = {**os.environ, "DOCKER_CONFIG": str(tmp_path / "cfg")}
    env.pop("DOCKER_HOST", None)
    base = [DOCKER, "-H", f"tcp://127.0.0.1:{port}", "--tlsverify", "--tlscacert",
            str(tls.ca_cert)]
    r = subprocess.run([*base, "--tlscert", str(tls.client_cert), "--tlskey",
                        str(tls.client_key), "images", "--format", "{{.Repository}}"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.split() == ["busybox"], r.stderr
    # docker-py over TLS too (requests would let $REQUESTS_CA_BUNDLE replace our CA)
    import docker

    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)

    client = docker.DockerClient(base_url=f"https://127.0.0.1:{port}", version="1.41",
                                 tls=docker.tls.TLSConfig(
                                     client_cert=(str(tls.client_cert), str(tls.client_key)),
                                     ca_cert=str(tls.ca_cert), verify=True))
    try:
        assert client.version()["ApiVersion"] == "1.41"
    finally:
        client.close()
    # no client certificate: the handshake is refused
    ctx = ssl.create_default_context(cafile=str(tls.ca_cert))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
                if not s.recv(100):
                    raise ConnectionResetError("closed without an answer")


def test_plain_tcp_on_loopback_is_allowed_with_a_warning(busybox: Any, serve_factory: Any,
                                                         tmp_path: Path) -> None:
    port = free_port()
    d = serve_factory(busybox, "--host", f"tcp://127.0.0.1:{port}")
    assert "WARNING: listening on tcp://127.0.0.1:" in d.log.read_text()
    env = {**os.environ, "DOCKER_CONFIG": str(tmp_path / "cfg"),
           "DOCKER_HOST": f"tcp://127.0.0.1:{port}"}
    r = subprocess.run([DOCKER, "version", "--format", "{{.Server.APIVersion}}"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "1.41", r.stderr


def test_only_serve_imports_aiohttp(busybox: Any) -> None:
    import sys

    code = ("import sys; from builder.cli import main; "
            f"main(['--root', {str(busybox.root)!r}, 'images', '-q']); "
            "main(['--root', {0!r}, 'serve', '--help']); "
            "print('aiohttp loaded:', 'aiohttp' in sys.modules)").replace(
                "{0!r}", repr(str(busybox.root)))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.splitlines()[-1] == "aiohttp loaded: False", (r.stdout, r.stderr)
    assert "--tlsverify" in r.stdout
