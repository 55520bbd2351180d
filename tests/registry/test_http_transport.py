"""``registry.client.transport`` (the registry client's HTTP on ``http.client``): keep-alive and
the pool, redirects to blob storage on another host (the ``Authorization`` header dropped, as
``requests`` drops it), proxies from the environment (plain and CONNECT, ``NO_PROXY``), TLS with a
local https server (stdlib ``ssl``, certificates from ``registry_server.make_tls``), and a guard:
a ``pull`` and a ``push`` load neither ``requests`` nor ``urllib3`` (nor ``concurrent.futures``)."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import os
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from registry_server import Registry, TLSFiles, make_image, make_tls, unique_repo

from registry import transfer
from registry.auth import Credentials
from registry.client import Backoff, RegistryClient, Repository
from registry.client.transport import HTTPFailure, Session, proxy_for
from registry.digest import Digest
from registry.errors import TransportError
from registry.store import Store

BLOB = os.urandom(300_000)
BLOB_DIGEST = Digest.of(BLOB)


# -- a small origin server: stdlib http.server, HTTP/1.1 keep-alive, optionally TLS -------------
class _Origin(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, answer: Callable[[_Handler], None], tls: ssl.SSLContext | None = None,
                 host: str = "127.0.0.1") -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer = answer
        self.tls = tls
        self.name = host
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        self.connections = 0
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    @property
    def addr(self) -> str:
        return f"{self.name}:{self.server_address[1]}"

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        self.connections += 1
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True)
        return sock, addr

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Origin

    def log_message(self, *args: Any) -> None:
        pass

    def _any(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        self.server.seen.append((self.command, self.path, dict(self.headers.items()), body))
        self.server.answer(self)

    do_GET = do_PUT = do_POST = do_PATCH = do_HEAD = do_DELETE = _any

    def send(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


@contextlib.contextmanager
def origin(answer: Callable[[_Handler], None], **kw: Any) -> Iterator[_Origin]:
    srv = _Origin(answer, **kw)
    try:
        yield srv
    finally:
        srv.stop()


def _server_tls(files: TLSFiles) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(files.cert), str(files.key))
    return ctx


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls(tmp_path_factory.mktemp("https"))


def _trust(certs: Path, files: TLSFiles, *addrs: str) -> None:
    for addr in addrs:
        (certs / addr).mkdir(exist_ok=True)
        (certs / addr / "ca.crt").write_bytes(files.ca_cert.read_bytes())


# -- keep-alive, the pool, bodies ----------------------------------------------------------------
def test_keep_alive_pool_and_bodies(certs: Path) -> None:
    def answer(h: _Handler) -> None:
        if h.path.startswith("/slow"):
            time.sleep(0.02)
        if h.command == "PUT":
            h.send(201, hashlib.sha256(h.server.seen[-1][3]).hexdigest().encode())
        else:
            h.send(200, BLOB if h.path == "/blob" else h.path.encode())

    with origin(answer) as srv:
        s = Session(pool_size=2)
        for i in range(10):
            assert s.request("GET", f"http://{srv.addr}/n{i}").content == f"/n{i}".encode()
        assert srv.connections == 1  # one kept-alive connection served all ten
        # a streamed body, read in pieces, then the connection serves the next request
        r = s.request("GET", f"http://{srv.addr}/blob", stream=True)
        got = b"".join(iter(lambda: r.read(65536), b""))
        assert got == BLOB and srv.connections == 1
        # an upload from an iterable of known length goes with Content-Length (no chunking)
        parts = [BLOB[:100_000], BLOB[100_000:]]

        class Body:
            def __len__(self) -> int:
                return len(BLOB)

            def __iter__(self) -> Iterator[bytes]:
                return iter(parts)

        r = s.request("PUT", f"http://{srv.addr}/up", body=Body(), params={"digest": str(BLOB_DIGEST)})
        assert r.status_code == 201 and r.content.decode() == BLOB_DIGEST.encoded
        method, path, headers, _ = srv.seen[-1]
        assert (method, path) == ("PUT", f"/up?digest={str(BLOB_DIGEST).replace(':', '%3A')}")
        assert headers["Content-Length"] == str(len(BLOB)) and "Transfer-Encoding" not in headers
        # more requests at once than the pool keeps: each gets a connection, two are kept
        errors: list[BaseException] = []

        def worker(k: int) -> None:
            try:
                for j in range(4):
                    assert s.request("GET", f"http://{srv.addr}/slow{k}-{j}").content == \
                        f"/slow{k}-{j}".encode()
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        assert [len(p.idle) for p in s._pools.values()] == [2]
        assert srv.connections <= 1 + 6
        assert s._contexts == {}  # plain HTTP: no TLS context was made (nor a CA bundle read)
        s.close()


def test_a_kept_connection_the_server_closed_is_replaced(certs: Path) -> None:
    def answer(h: _Handler) -> None:
        h.send(200, b"ok")
        h.close_connection = True  # the server drops the connection after answering

    with origin(answer) as srv:
        s = Session()
        for _ in range(3):
            assert s.request("GET", f"http://{srv.addr}/").content == b"ok"
        assert srv.connections == 3
        s.close()


# -- redirects to blob storage on another host ----------------------------------------------------
def _front(storage: _Origin, scheme: str) -> Callable[[_Handler], None]:
    """A registry front that wants Basic auth and sends blob GETs to *storage* (S3-style 307)."""

    def answer(h: _Handler) -> None:
        if "Authorization" not in h.headers:
            h.send(401, b"{}", WWW_Authenticate='Basic realm="front"')
        elif h.path.startswith("/v2/r/p/blobs/sha256:"):
            h.send(307, Location=f"{scheme}://{storage.addr}/bucket/{BLOB_DIGEST.encoded}?sig=x")
        elif h.path == "/v2/r/p/manifests/moved":  # a redirect on the same host keeps auth
            h.send(307, Location="/v2/r/p/manifests/here")
        elif h.path == "/v2/r/p/manifests/here":
            h.send(404, json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "x"}]}).encode())
        else:
            h.send(200, b"{}")

    return answer


def _storage(h: _Handler) -> None:
    h.send(200 if "Authorization" not in h.headers else 400, BLOB)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_redirect_to_storage_drops_authorization(scheme: str, certs: Path, tls_files: TLSFiles) -> None:
    tls = _server_tls(tls_files) if scheme == "https" else None
    with origin(_storage, tls=tls, host="localhost") as storage, \
            origin(_front(storage, scheme), tls=tls) as front:
        if tls:
            _trust(certs, tls_files, front.addr, storage.addr)
        with RegistryClient(front.addr, credentials=Credentials("u", "pw")) as c:
            repo = Repository(c, "r/p")
            with repo.open_blob(BLOB_DIGEST, len(BLOB)) as reader:
                got = b"".join(iter(lambda: reader.read(1 << 16), b""))
            assert got == BLOB
            assert c.base == f"{scheme}://{front.addr}"
            from registry.errors import ManifestUnknown

            with pytest.raises(ManifestUnknown):
                repo.get_manifest("moved")
        blob_gets = [hd for m, p, hd, _ in front.seen if "/blobs/" in p]
        assert blob_gets and all(hd["Authorization"].startswith("Basic ") for hd in blob_gets)
        assert [p.split("?")[0] for m, p, hd, _ in storage.seen] == [f"/bucket/{BLOB_DIGEST.encoded}"]
        assert all("Authorization" not in hd for _, _, hd, _ in storage.seen)
        here = [hd for m, p, hd, _ in front.seen if p.endswith("/manifests/here")]
        assert here and all("Authorization" in hd for hd in here)


def test_storage_elsewhere_is_verified_even_with_tls_verify_false(certs: Path, tls_files: TLSFiles) -> None:
    """--tls-verify=false skips the registry's own certificate check, never another host's."""
    tls = _server_tls(tls_files)
    with origin(_storage, tls=tls, host="localhost") as storage, \
            origin(_front(storage, "https"), tls=tls) as front:
        with RegistryClient(front.addr, credentials=Credentials("u", "pw"), tls_verify=False,
                            backoff=Backoff(attempts=1)) as c, \
                pytest.raises(TransportError, match="certificate verify failed"):
            Repository(c, "r/p").open_blob(BLOB_DIGEST, len(BLOB)).read()
        _trust(certs, tls_files, storage.addr)  # the storage's CA: now it is trusted
        with RegistryClient(front.addr, credentials=Credentials("u", "pw"), tls_verify=False) as c:
            assert Repository(c, "r/p").open_blob(BLOB_DIGEST, len(BLOB)).read(len(BLOB)) == BLOB


# -- TLS -------------------------------------------------------------------------------------------
def test_tls_verify_ca_and_errors(certs: Path, tls_files: TLSFiles) -> None:
    with origin(lambda h: h.send(200, b"hi"), tls=_server_tls(tls_files)) as srv:
        url = f"https://{srv.addr}/x"
        from registry.client.tls import TLSSettings

        with pytest.raises(HTTPFailure) as e:
            Session().request("GET", url)
        assert e.value.kind == "verify"
        assert Session(tls_for=lambda n: TLSSettings(verify=False)).request("GET", url).content == b"hi"
        _trust(certs, tls_files, srv.addr)
        trusted = Session(tls_for=TLSSettings.for_host)
        assert trusted.request("GET", url).content == b"hi"
        assert trusted.request("GET", url).content == b"hi"
        assert list(trusted._contexts) == [srv.addr]  # one context per host, made once
        # a CA file that is no certificate: a TLS error naming it (not retried as a network one)
        (certs / srv.addr / "zz-junk.crt").write_text("not a certificate\n")
        with pytest.raises(HTTPFailure, match="zz-junk.crt") as e:
            Session(tls_for=TLSSettings.for_host).request("GET", url)
        assert e.value.kind == "tls"
        # plain HTTP to the TLS port: the server's handshake fails, a connection error
        with pytest.raises(HTTPFailure):
            Session().request("GET", f"http://{srv.addr}/x", timeout=10)


# -- proxies ---------------------------------------------------------------------------------------
class _Proxy:
    """A forwarding HTTP proxy on loopback: absolute-form requests and CONNECT tunnels; records
    each connection's first request line and its ``Proxy-Authorization``."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.log: list[tuple[str, str | None]] = []
        self._stop = False
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    @property
    def url(self) -> str:
        return f"http://me:secret@127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(65536)
                if not data:
                    return
                head += data
            raw_head, _, rest = head.partition(b"\r\n\r\n")
            lines = raw_head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ")
            auth = next((ln.split(":", 1)[1].strip() for ln in lines[1:]
                         if ln.lower().startswith("proxy-authorization:")), None)
            self.log.append((f"{method} {target}", auth))
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                up = socket.create_connection((host, int(port)))
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if rest:
                    up.sendall(rest)
            else:  # absolute form: to the origin in origin form, then relay the connection
                url = target.split("://", 1)[1]
                hostport, _, path = url.partition("/")
                host, _, port = hostport.rpartition(":")
                up = socket.create_connection((host, int(port)))
                kept = [ln for ln in lines[1:] if not ln.lower().startswith("proxy-authorization:")]
                up.sendall(f"{method} /{path} {version}\r\n".encode("latin-1")
                           + "\r\n".join(kept).encode("latin-1") + b"\r\n\r\n" + rest)
            with up:
                _splice(conn, up)

    def stop(self) -> None:
        self._stop = True
        self.sock.close()
        self._accepting.join(5)


def _splice(a: socket.socket, b: socket.socket) -> None:
    socks = [a, b]
    while True:
        readable, _, _ = select.select(socks, [], [], 30)
        if not readable:
            return
        for s in readable:
            data = s.recv(1 << 16)
            if not data:
                return
            (b if s is a else a).sendall(data)


@pytest.fixture()
def proxy() -> Iterator[_Proxy]:
    p = _Proxy()
    yield p
    p.stop()


def test_proxy_for_reads_the_environment_as_requests_does(monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib.parse as up

    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)

    def p(url: str) -> str | None:
        return proxy_for(up.urlsplit(url))

    assert p("http://reg.example/v2/") is None
    monkeypatch.setenv("HTTP_PROXY", "proxy.example:3128")
    assert p("http://reg.example/v2/") == "http://proxy.example:3128"  # a scheme is assumed
    assert p("https://reg.example/v2/") is None
    monkeypatch.setenv("http_proxy", "http://lower.example:1")  # lower case wins
    assert p("http://reg.example/v2/") == "http://lower.example:1"
    monkeypatch.setenv("ALL_PROXY", "http://all.example:2")
    assert p("https://reg.example/v2/") == "http://all.example:2"
    monkeypatch.setenv("NO_PROXY", "internal.example, 10.0.0.0/8,.corp,reg.example:5000")
    assert p("http://a.internal.example/v2/") is None
    assert p("http://10.1.2.3:5000/v2/") is None
    assert p("http://11.1.2.3/v2/") == "http://lower.example:1"
    assert p("http://x.corp/v2/") is None
    assert p("http://reg.example:5000/v2/") is None and p("http://reg.example:5001/v2/") is not None
    monkeypatch.setenv("no_proxy", "*")
    assert p("http://anything/") is None
    # a proxy of another scheme than http is a clear error, not retried
    monkeypatch.setenv("no_proxy", "")
    monkeypatch.setenv("http_proxy", "socks5://127.0.0.1:1080")
    with RegistryClient("127.0.0.1:9", backoff=Backoff(attempts=5)) as c, \
            pytest.raises(TransportError, match="only http:// proxies are supported") as e:
        _ = c.base
    assert not e.value.retryable


def test_pull_and_push_through_a_proxy(proxy: _Proxy, plain_registry: Registry, tmp_path: Path,
                                       certs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = Store(tmp_path / "src")
    repo = unique_repo("proxy")
    ref = f"{plain_registry.addr}/{repo}:v1"
    image = make_image(src, ref)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    transfer.push(src, ref)
    dst = Store(tmp_path / "dst")
    transfer.pull(dst, ref)
    assert dst.lookup(ref).descriptor.digest == image.descriptor.digest
    lines = [line for line, _ in proxy.log]
    assert f"GET http://{plain_registry.addr}/v2/" in lines
    assert any(line.startswith(f"PUT http://{plain_registry.addr}/v2/{repo}/manifests/v1") or
               line.startswith(f"HEAD http://{plain_registry.addr}/v2/{repo}/") for line in lines)
    assert all(auth == "Basic bWU6c2VjcmV0" for _, auth in proxy.log)  # me:secret
    seen = len(proxy.log)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    transfer.pull(Store(tmp_path / "direct"), ref)
    assert len(proxy.log) == seen  # NO_PROXY: straight to the registry


def test_https_through_a_connect_tunnel(proxy: _Proxy, tls_registry: Registry, tmp_path: Path,
                                        certs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tls_registry.certs_d(certs)
    src = Store(tmp_path / "src")
    ref = f"{tls_registry.addr}/{unique_repo('tunnel')}:v1"
    image = make_image(src, ref)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    transfer.push(src, ref)
    dst = Store(tmp_path / "dst")
    transfer.pull(dst, ref)
    assert dst.lookup(ref).descriptor.digest == image.descriptor.digest
    assert f"CONNECT {tls_registry.addr}" in [line for line, _ in proxy.log]


# -- the guard: no requests/urllib3 on the pull/push path -----------------------------------------
PROBE = r"""
import json, sys
from builder.cli import main
try:
    main(json.loads(sys.argv[1]))
except SystemExit as e:
    if e.code not in (0, None):
        raise
print(json.dumps(sorted(sys.modules)))
"""


def _loaded(argv: list[str]) -> set[str]:
    r = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv)], capture_output=True,
                       text=True, timeout=120, env={k: v for k, v in os.environ.items() if k != "PYBUILD_ROOT"})
    assert r.returncode == 0, r.stderr[-2000:]
    return set(json.loads(r.stdout.strip().splitlines()[-1]))


def test_pull_and_push_load_no_requests_nor_urllib3(plain_registry: Registry, tmp_path: Path,
                                                     certs: Path) -> None:
    root = tmp_path / "root"
    ref = f"{plain_registry.addr}/{unique_repo('guard')}:v1"
    make_image(Store(root / "store"), ref)
    pushed = _loaded(["--root", str(root), "push", "-q", ref])
    pulled = _loaded(["--root", str(tmp_path / "fresh"), "pull", "-q", ref])
    for mods in (pushed, pulled):
        assert "registry.client.transport" in mods and "http.client" in mods
        heavy = sorted(m for m in mods if m.split(".")[0] in ("requests", "urllib3", "certifi",
                                                              "charset_normalizer", "idna"))
        assert heavy == []
        # blobs in parallel on plain threads: neither concurrent.futures nor the logging it imports
        assert not {"concurrent.futures", "logging"} & mods


def test_plain_http_is_asked_first_only_on_a_named_port() -> None:
    """A host without a port is asked https first (its http:// is port 80, another server)."""
    from registry.client.http import _has_port

    assert [_has_port(h) for h in ("reg:5000", "127.0.0.1:80", "[::1]:5000")] == [True] * 3
    assert [_has_port(h) for h in ("reg", "localhost", "[::1]", "reg:x")] == [False] * 4
