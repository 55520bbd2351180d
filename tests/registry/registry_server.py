"""Real registries for tests: Debian's ``docker-registry`` (distribution 2.8) on loopback ports.

Four configurations (plain HTTP, TLS, htpasswd basic auth, token auth with a JWT token server
run here), plus ``FaultProxy``, a loopback TCP proxy that cuts, corrupts and fails requests.

Use the pytest fixtures at the bottom (``plain_registry``, ``tls_registry``, ``basic_registry``,
``token_registry``: session-scoped, each started once; ``registry_factory`` for a private one;
``fault_proxy`` in front of a fresh plain registry). Every process and thread started here is
stopped by the fixture that started it, and by an ``atexit`` hook should a test run be killed.

    def test_x(plain_registry):
        ref = f"{plain_registry.addr}/my/repo:tag"          # 127.0.0.1:PORT/my/repo:tag

Tests share a session registry, so each test should use its own repository names
(``unique_repo()``).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import datetime as dt
import hashlib
import http.server
import json
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"
SERVICE = "pybuild-test-registry"
ISSUER = "pybuild-test-issuer"

_live: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_live):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unique_repo(prefix: str = "test") -> str:
    return f"{prefix}/{uuid.uuid4().hex[:10]}"


# -- TLS material ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TLSFiles:
    ca_cert: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path


def _name(cn: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.TraditionalOpenSSL,
                                   serialization.NoEncryption()))


def self_signed(key: Any, cn: str, *, ca: bool = True) -> Any:
    """A self-signed certificate for *key* (a CA, or the token server's signing cert)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))


def make_tls(directory: Path) -> TLSFiles:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, as PEM files."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = self_signed(ca_key, "pybuild test CA")
    now = dt.datetime.now(dt.UTC)

    def issue(cn: str, usage: Any, san: list[Any] | None) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca.subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
             .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return key, b.sign(ca_key, hashes.SHA256())

    skey, scert = issue("127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH,
                        [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    ckey, ccert = issue("pybuild test client", ExtendedKeyUsageOID.CLIENT_AUTH, None)
    pem = serialization.Encoding.PEM
    files = TLSFiles(directory / "ca.crt", directory / "server.crt", directory / "server.key",
                     directory / "client.cert", directory / "client.key")
    files.ca_cert.write_bytes(ca.public_bytes(pem))
    files.cert.write_bytes(scert.public_bytes(pem))
    files.key.write_bytes(_pem_key(skey))
    files.client_cert.write_bytes(ccert.public_bytes(pem))
    files.client_key.write_bytes(_pem_key(ckey))
    return files


def htpasswd_line(user: str, password: str) -> str:
    """A bcrypt htpasswd line, as ``htpasswd -Bbn`` writes it (the registry accepts only bcrypt)."""
    import bcrypt

    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}"


# -- token server ------------------------------------------------------------------------------
def libtrust_key_id(public_key: Any) -> str:
    """The ``kid`` distribution's token verifier indexes its trusted keys by (libtrust's KeyID):
    sha256 of the DER SubjectPublicKeyInfo, first 240 bits, base32, in 12 groups of 4 joined by ':'."""
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
    return ":".join(b32[i:i + 4] for i in range(0, 48, 4))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenUser:
    password: str
    actions: frozenset[str]  # granted on every repository the client asks for
    refresh_token: str = field(default_factory=lambda: uuid.uuid4().hex)


class TokenServer:
    """The Docker token flow (as Docker Hub runs it): ``GET realm?service=&scope=`` with optional
    basic credentials, or an OAuth2 ``POST`` (password or refresh_token grant), answers a JWT
    signed with an ES256 key whose certificate is the registry's ``rootcertbundle``.

    Users get exactly the actions in their ``TokenUser.actions``: a pull-only user asking for
    ``pull,push`` gets a token for ``pull`` only, which the registry refuses for a push.
    Anonymous clients get ``anonymous_actions`` (none by default). ``requests`` logs every call.
    """

    def __init__(self, directory: Path, users: dict[str, TokenUser], *,
                 anonymous_actions: frozenset[str] = frozenset(), expires_in: int = 300) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        self.users = users
        self.anonymous_actions = anonymous_actions
        self.expires_in = expires_in
        self.requests: list[dict[str, Any]] = []
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.kid = libtrust_key_id(self._key.public_key())
        directory.mkdir(parents=True, exist_ok=True)
        self.root_cert = directory / "token-root.crt"
        self.root_cert.write_bytes(self_signed(self._key, "pybuild token issuer", ca=False)
                                   .public_bytes(serialization.Encoding.PEM))
        server = self
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _make_token_handler(server))
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def sign(self, subject: str, access: list[dict[str, Any]]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "kid": self.kid}
        claims = {"iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": now + self.expires_in,
                  "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        signing_input = (_b64url(json.dumps(header).encode()) + "." +
                         _b64url(json.dumps(claims).encode()))
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)  # JWS wants r||s, 32 bytes each
        return signing_input + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def grant(self, user: str | None, scopes: list[str]) -> list[dict[str, Any]]:
        allowed = self.users[user].actions if user else self.anonymous_actions
        access = []
        for scope in scopes:
            for one in scope.split(" "):
                kind, _, rest = one.partition(":")
                name, _, actions = rest.rpartition(":")
                if kind != "repository" or not name:
                    continue
                granted = sorted(set(actions.split(",")) & allowed)
                access.append({"type": kind, "name": name, "actions": granted})
        return access


def _make_token_handler(server: TokenServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _issue(self, user: str | None, q: dict[str, list[str]], offline: bool) -> None:
            if q.get("service", [SERVICE])[0] != SERVICE:
                self._reply(400, {"error": "invalid service"})
                return
            scopes = q.get("scope", [])
            server.requests.append({"user": user, "scopes": scopes, "method": self.command})
            body: dict[str, Any] = {"token": server.sign(user or "", server.grant(user, scopes)),
                                    "expires_in": server.expires_in,
                                    "issued_at": dt.datetime.now(dt.UTC).isoformat()}
            body["access_token"] = body["token"]
            if offline and user:
                body["refresh_token"] = server.users[user].refresh_token
            self._reply(200, body)

        def do_GET(self) -> None:  # noqa: N802
            url = urllib.parse.urlsplit(self.path)
            q = urllib.parse.parse_qs(url.query)
            user = None
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Basic "):
                name, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
                u = server.users.get(name)
                if u is None or u.password != pw:
                    self._reply(401, {"errors": [{"code": "UNAUTHORIZED",
                                                  "message": "incorrect username or password"}]})
                    return
                user = name
            self._issue(user, q, q.get("offline_token", ["false"])[0] == "true")

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(length).decode())
            grant = form.get("grant_type", [""])[0]
            user: str | None = None
            if grant == "password":
                name = form.get("username", [""])[0]
                u = server.users.get(name)
                if u is None or u.password != form.get("password", [""])[0]:
                    self._reply(401, {"error": "invalid_grant"})
                    return
                user = name
            elif grant == "refresh_token":
                token = form.get("refresh_token", [""])[0]
                user = next((n for n, u in server.users.items() if u.refresh_token == token), None)
                if user is None:
                    self._reply(401, {"error": "invalid_grant"})
                    return
            else:
                self._reply(400, {"error": "unsupported_grant_type"})
                return
            q = {"service": form.get("service", [SERVICE]),
                 "scope": [s for v in form.get("scope", []) for s in v.split(" ")]}
            self._issue(user, q, form.get("access_type", [""])[0] == "offline")

    return Handler


# -- the registry ------------------------------------------------------------------------------
@dataclass
class Registry:
    """A running ``docker-registry``: ``addr`` is ``127.0.0.1:PORT`` as references spell it."""

    port: int
    root: Path
    proc: subprocess.Popen[bytes]
    tls: TLSFiles | None = None
    users: dict[str, str] = field(default_factory=dict)
    token: TokenServer | None = None
    log: Path | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.addr}"

    def certs_d(self, directory: Path, *, client: bool = False) -> Path:
        """Lay out ``directory/<addr>/ca.crt`` (and client cert/key) as ``PYBUILD_CERTS_D`` wants."""
        assert self.tls is not None
        d = directory / self.addr
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.tls.ca_cert, d / "ca.crt")
        if client:
            shutil.copy(self.tls.client_cert, d / "client.cert")
            shutil.copy(self.tls.client_key, d / "client.key")
        return directory

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        _live.discard(self.proc)
        if self.token is not None:
            self.token.stop()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_registry(directory: Path, *, tls: bool = False, users: dict[str, str] | None = None,
                   token: TokenServer | None = None, client_certs: bool = False) -> Registry:
    """Start ``docker-registry`` with storage and config under *directory*; wait until it answers.

    ``tls``: serve HTTPS with a fresh CA (``Registry.tls``); ``client_certs`` also requires a
    client certificate from that CA. ``users``: htpasswd basic auth. ``token``: bearer auth
    against the given ``TokenServer``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    files = make_tls(directory / "tls") if tls else None
    for _attempt in range(5):
        port = free_port()
        http_cfg: dict[str, Any] = {"addr": f"127.0.0.1:{port}", "secret": uuid.uuid4().hex,
                                    "headers": {"X-Content-Type-Options": ["nosniff"]}}
        if files:
            http_cfg["tls"] = {"certificate": str(files.cert), "key": str(files.key)}
            if client_certs:
                http_cfg["tls"]["clientcas"] = [str(files.ca_cert)]
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(directory / "data")},
                        "delete": {"enabled": True},
                        "maintenance": {"uploadpurging": {"enabled": False}},
                        "redirect": {"disable": True}},
            "http": http_cfg,
        }
        if users:
            htpasswd = directory / "htpasswd"
            htpasswd.write_text("".join(htpasswd_line(u, p) + "\n" for u, p in users.items()))
            config["auth"] = {"htpasswd": {"realm": "pybuild-test", "path": str(htpasswd)}}
        if token:
            config["auth"] = {"token": {"realm": token.realm, "service": SERVICE, "issuer": ISSUER,
                                        "rootcertbundle": str(token.root_cert)}}
        # JSON is YAML: no YAML writer needed.
        (directory / "config.yml").write_text(json.dumps(config, indent=2))
        log = directory / "registry.log"
        with open(log, "ab") as logf:
            proc = subprocess.Popen([REGISTRY_BIN, "serve", str(directory / "config.yml")],
                                    stdout=logf, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        _live.add(proc)
        reg = Registry(port, directory, proc, files, dict(users or {}), token, log)
        if _wait_ready(reg):
            return reg
        reg.token = None  # keep the token server for the next attempt
        reg.stop()
    raise RuntimeError(f"docker-registry did not start; see {directory / 'registry.log'}")


def _wait_ready(reg: Registry, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reg.proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", reg.port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


# -- fault-injecting proxy ---------------------------------------------------------------------
@dataclass
class Fault:
    """One fault, applied to the next ``times`` requests that match ``method`` and ``path`` (a
    regex searched in the request target).

    ``action``: ``status`` answers ``status`` itself (with ``Retry-After: retry_after`` if set)
    without asking the registry; ``cut`` forwards the request and closes the client connection
    after ``after`` bytes of the response body; ``cut_request`` forwards only ``after`` bytes of
    the request body, then closes both sides; ``corrupt`` flips the response body byte at
    offset ``after`` (every time, unless ``times`` says otherwise); ``slow`` relays the request
    and response bodies ``after`` bytes at a time, one piece every 50 ms (a slow link).
    """

    method: str | None
    path: str
    action: str
    status: int = 500
    retry_after: str | None = None
    after: int = 0
    times: int = 1
    hits: int = 0

    def matches(self, method: str, target: str) -> bool:
        return (self.times > 0 and (self.method is None or self.method == method)
                and re.search(self.path, target) is not None)


class FaultProxy:
    """A loopback HTTP/1.1 proxy in front of a plain-HTTP registry, injecting ``faults``.

    Clients talk to ``addr`` as if it were the registry (the Host header is passed through, so
    the registry's upload ``Location`` URLs point back at the proxy). ``log`` records
    ``(method, target, status or action)`` of each request.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.faults: list[Fault] = []
        self.log: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = int(self._sock.getsockname()[1])
        self._stopped = False
        self._conns: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def add(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
            self.log.clear()

    def stop(self) -> None:
        self._stopped = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        for c in list(self._conns):
            with contextlib.suppress(OSError):
                c.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _take_fault(self, method: str, target: str) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if f.matches(method, target):
                    f.times -= 1
                    f.hits += 1
                    return f
        return None

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb", buffering=1 << 16)
        try:
            if reader.peek(1)[:1] == b"\x16":
                # A TLS ClientHello: refuse it as an HTTP-only server does, so https-first
                # clients fall back to http at once.
                conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
                return
            while True:
                head = _read_head(reader)
                if head is None:
                    return
                method, target = head[0].split(" ")[:2]
                headers = head[1:]
                fault = self._take_fault(method, target)
                if fault is not None and fault.action == "status":
                    _drain_body(reader, headers)
                    self.log.append((method, target, str(fault.status)))
                    _send_status(conn, fault)
                    continue
                if not self._forward(conn, reader, method, target, headers, fault):
                    return
        except OSError:
            return
        finally:
            self._conns.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def _forward(self, conn: socket.socket, reader: Any, method: str, target: str,
                 headers: list[str], fault: Fault | None) -> bool:
        up = socket.create_connection(("127.0.0.1", self.upstream_port))
        try:
            kept = [h for h in headers if not h.lower().startswith(("connection:", "keep-alive:"))]
            up.sendall((f"{method} {target} HTTP/1.1\r\n" + "".join(h + "\r\n" for h in kept)
                        + "Connection: close\r\n\r\n").encode("latin-1"))
            limit = fault.after if fault is not None and fault.action == "cut_request" else None
            pace = fault.after if fault is not None and fault.action == "slow" else None
            if not _copy_body(reader, headers, up, limit, pace):
                self.log.append((method, target, "cut_request"))
                return False
            upr = up.makefile("rb", buffering=1 << 16)
            rhead = _read_head(upr)
            if rhead is None:
                return False
            status = rhead[0].split(" ")[1]
            conn.sendall(("\r\n".join(rhead) + "\r\n\r\n").encode("latin-1"))
            sent = 0
            while chunk := upr.read1(pace or 1 << 16):
                if pace:
                    time.sleep(0.05)
                if fault is not None and fault.action == "cut" and sent + len(chunk) >= fault.after:
                    conn.sendall(chunk[: max(fault.after - sent, 0)])
                    self.log.append((method, target, "cut"))
                    with contextlib.suppress(OSError):
                        conn.shutdown(socket.SHUT_RDWR)
                    return False
                if fault is not None and fault.action == "corrupt" and sent <= fault.after < sent + len(chunk):
                    b = bytearray(chunk)
                    b[fault.after - sent] ^= 0xFF
                    chunk = bytes(b)
                conn.sendall(chunk)
                sent += len(chunk)
            self.log.append((method, target, status))
            return True
        finally:
            up.close()


def _read_head(reader: Any) -> list[str] | None:
    lines: list[str] = []
    while True:
        line = reader.readline(65536)
        if not line:
            return None
        line = line.rstrip(b"\r\n").decode("latin-1")
        if not line:
            if lines:
                return lines
            continue
        lines.append(line)


def _header(headers: list[str], name: str) -> str | None:
    for h in headers:
        k, _, v = h.partition(":")
        if k.strip().lower() == name:
            return v.strip()
    return None


def _copy_body(reader: Any, headers: list[str], out: socket.socket | None, limit: int | None,
               pace: int | None = None) -> bool:
    """Relay a request body (Content-Length or chunked); False if *limit* cut it short. With
    *pace*, *pace* bytes at a time, one piece every 50 ms."""
    sent = 0

    def emit(data: bytes) -> bool:
        nonlocal sent
        if pace:
            time.sleep(0.05)
        if limit is not None and sent + len(data) > limit:
            if out is not None:
                out.sendall(data[: limit - sent])
            return False
        if out is not None:
            out.sendall(data)
        sent += len(data)
        return True

    if (_header(headers, "transfer-encoding") or "").lower() == "chunked":
        while True:
            size_line = reader.readline()
            size = int(size_line.split(b";")[0], 16)
            data = reader.read(size + 2)
            if not emit(size_line + data):
                return False
            if size == 0:
                return True
    remaining = int(_header(headers, "content-length") or 0)
    while remaining:
        data = reader.read(min(remaining, pace or 1 << 16))
        if not data:
            return False
        remaining -= len(data)
        if not emit(data):
            return False
    return limit is None or sent <= limit


def _drain_body(reader: Any, headers: list[str]) -> None:
    _copy_body(reader, headers, None, None)


def _send_status(conn: socket.socket, fault: Fault) -> None:
    code = {429: "TOOMANYREQUESTS", 500: "UNKNOWN", 502: "UNKNOWN", 503: "UNAVAILABLE"}.get(
        fault.status, "UNKNOWN")
    body = json.dumps({"errors": [{"code": code, "message": f"injected {fault.status}"}]}).encode()
    reason = {429: "Too Many Requests", 500: "Internal Server Error"}.get(fault.status, "Error")
    extra = f"Retry-After: {fault.retry_after}\r\n" if fault.retry_after else ""
    conn.sendall((f"HTTP/1.1 {fault.status} {reason}\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body)


# -- helpers for tests -------------------------------------------------------------------------
_BUSYBOX_TAR: bytes | None = None
_BUSYBOX_LOCK = threading.Lock()


def busybox_layer_tar() -> bytes:
    """The busybox rootfs of ``testdata/mkbusybox.py`` as an uncompressed tar (made once)."""
    global _BUSYBOX_TAR
    with _BUSYBOX_LOCK:
        if _BUSYBOX_TAR is None:
            import importlib.util
            import io

            spec = importlib.util.spec_from_file_location(
                "mkbusybox", Path(__file__).resolve().parents[2] / "testdata" / "mkbusybox.py")
            assert spec and spec.loader
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            buf = io.BytesIO()
            mod.make_tar(buf)
            _BUSYBOX_TAR = buf.getvalue()
        return _BUSYBOX_TAR


def file_tar(name: str, data: bytes) -> bytes:
    """A tar with one regular file (mtime 0, root-owned): a small deterministic layer."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        ti.mode = 0o644
        tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def make_image(store: Any, reference: str | None, *, layers: list[bytes] | None = None,
               platform: Any = None, compression: str = "gzip", docker: bool = False,
               cmd: list[str] | None = None) -> Any:
    """Write an image into a ``registry.store.Store`` with the store API only: the busybox
    layer (unless *layers* is given) plus *layers* (tar bytes), compressed with
    ``LayerEncoder``; tagged *reference* if given. Returns the ``registry.store.Image``."""
    import io

    from registry import mediatypes as mt
    from registry.compression import LayerEncoder
    from registry.model import Descriptor, ImageConfig, Manifest, Platform
    from registry.reference import Reference

    plat = platform or Platform("linux", "amd64")
    tars = [busybox_layer_tar()] if layers is None else list(layers)
    descs: list[Any] = []
    diff_ids: list[str] = []
    for tar in tars:
        out = io.BytesIO()
        enc = LayerEncoder(out, compression)
        enc.write(tar)
        enc.close()
        digest = store.put_bytes(out.getvalue())
        assert digest == enc.digest
        descs.append(Descriptor(mt.layer_media_type(compression, docker=docker), enc.digest, enc.size))
        diff_ids.append(str(enc.diff_id))
    config = ImageConfig.build({
        **plat.to_dict(), "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": cmd or ["/bin/sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "test"} for _ in tars]})
    cdesc = Descriptor(mt.DOCKER_CONFIG if docker else mt.OCI_CONFIG, config.digest, config.size)
    manifest = Manifest.build(cdesc, descs, media_type=mt.DOCKER_MANIFEST if docker else mt.OCI_MANIFEST)
    desc = store.put_image(manifest, config)
    store.add(desc, Reference.parse(reference) if reference else None)
    return store.image(desc)


def catalog(reg: Registry, session: requests.Session | None = None) -> list[str]:
    """The registry's repositories (plain registries only): a cross-check independent of us."""
    r = (session or requests).get(f"{reg.url}/v2/_catalog", timeout=10)
    r.raise_for_status()
    return list(r.json().get("repositories") or [])


# -- pytest fixtures ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def registry_tmp() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="pybuild-registries-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def plain_registry(registry_tmp: Path) -> Iterator[Registry]:
    with start_registry(registry_tmp / "plain") as reg:
        yield reg


@pytest.fixture(scope="session")
def tls_registry(registry_tmp: Path) -> Iterator[Registry]:
    with start_registry(registry_tmp / "tls", tls=True) as reg:
        yield reg


BASIC_USERS = {"alice": "wonderland-1", "bob": "builder-2"}


@pytest.fixture(scope="session")
def basic_registry(registry_tmp: Path) -> Iterator[Registry]:
    """htpasswd basic auth; users in ``BASIC_USERS``."""
    with start_registry(registry_tmp / "basic", users=BASIC_USERS) as reg:
        yield reg


TOKEN_USERS = {"alice": ("wonderland-1", frozenset({"pull", "push"})),
               "reader": ("read-only-3", frozenset({"pull"}))}


@pytest.fixture(scope="session")
def token_registry(registry_tmp: Path) -> Iterator[Registry]:
    """Bearer token auth: ``alice`` may pull and push, ``reader`` only pull, anonymous nothing;
    ``token_registry.token`` is the ``TokenServer`` (its ``requests`` log is shared)."""
    users = {n: TokenUser(pw, actions) for n, (pw, actions) in TOKEN_USERS.items()}
    token = TokenServer(registry_tmp / "token-server", users)
    with start_registry(registry_tmp / "token", token=token) as reg:
        yield reg


@pytest.fixture()
def registry_factory(tmp_path: Path) -> Iterator[Any]:
    """``registry_factory(**start_registry kwargs)``: private registries, stopped after the test."""
    started: list[Registry] = []

    def make(**kwargs: Any) -> Registry:
        reg = start_registry(tmp_path / f"registry-{len(started)}", **kwargs)
        started.append(reg)
        return reg

    yield make
    for reg in started:
        reg.stop()


@pytest.fixture()
def fault_proxy(plain_registry: Registry) -> Iterator[FaultProxy]:
    """A ``FaultProxy`` in front of the session's plain registry, with no faults yet."""
    proxy = FaultProxy(plain_registry.port)
    yield proxy
    proxy.stop()


__all__ = ["Registry", "TokenServer", "TokenUser", "FaultProxy", "Fault", "TLSFiles",
           "start_registry", "make_tls", "htpasswd_line", "libtrust_key_id", "free_port",
           "unique_repo", "catalog", "BASIC_USERS", "TOKEN_USERS", "busybox_layer_tar", "file_tar",
           "make_image"]
