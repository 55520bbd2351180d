"""HTTP/1.1 for the registry client on the standard library's ``http.client``: a small pool of
keep-alive connections per host, redirects (a blob sent to storage on another host loses the
``Authorization`` header, as ``requests`` drops it), bodies streamed both ways without a copy,
timeouts, proxies from ``HTTP(S)_PROXY``/``NO_PROXY`` (as ``requests`` reads them), an
``ssl.SSLContext`` per https host, made on its first connection (``http.client`` imports ``ssl``
itself; a plain-HTTP registry never loads a CA bundle).

``Session.request`` answers a ``Response`` or raises ``HTTPFailure`` (a connection that failed:
refused, unresolved, TLS, reset, timed out), which ``registry.client.http`` maps to the error
tree. ``Session(tls_for=...)`` asks for each https host's ``TLSSettings``.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import os
import select
import socket
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from registry.client.tls import TLSSettings

if TYPE_CHECKING:
    import ssl

REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10
#: an unread body up to this size is read so that its connection can serve the next request
DRAIN_MAX = 64 << 10

Params = dict[str, str] | list[tuple[str, str]] | None


class HTTPFailure(Exception):
    """A request that got no answer. ``kind``: ``refused``, ``resolve``, ``verify`` (a certificate
    not trusted), ``tls`` (another TLS failure, such as a server that does not speak TLS),
    ``proxy`` (a proxy URL of a scheme other than http), ``other`` (reset, timeout, closed early)."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text)
        self.kind = kind


def failure(e: BaseException) -> HTTPFailure:
    """Classify an exception of ``socket``, ``ssl`` or ``http.client``."""
    if isinstance(e, HTTPFailure):
        return e
    text = str(e) or type(e).__name__
    if isinstance(e, ConnectionRefusedError):
        return HTTPFailure("refused", text)
    if isinstance(e, socket.gaierror):
        return HTTPFailure("resolve", text)
    ssl = _ssl_module()
    if ssl is not None and isinstance(e, ssl.SSLCertVerificationError):
        return HTTPFailure("verify", text)
    if ssl is not None and isinstance(e, ssl.SSLError):
        return HTTPFailure("tls", text)
    return HTTPFailure("other", text)


def _ssl_module() -> Any:
    return sys.modules.get("ssl")  # only a TLS connection can have raised one of its errors


class Sent:
    """What was sent last for a response (after redirects): its method, URL and headers."""

    __slots__ = ("method", "url", "headers")

    def __init__(self, method: str, url: str, headers: dict[str, str]) -> None:
        self.method = method
        self.url = url
        self.headers = headers


class Response:
    """An answer: ``status_code``, ``reason``, ``headers`` (case-insensitive ``get``), the
    ``request`` sent; the body through ``read(n)`` (streamed) or ``content``/``json()``."""

    def __init__(self, raw: http.client.HTTPResponse, conn: http.client.HTTPConnection,
                 pool: _Pool, request: Sent) -> None:
        self.raw = raw
        self.status_code = raw.status
        self.reason = raw.reason
        self.headers = raw.msg
        self.request = request
        self._conn: http.client.HTTPConnection | None = conn
        self._pool = pool
        self._content: bytes | None = None

    def read(self, n: int) -> bytes:
        """Up to *n* bytes of the body (fewer only at its end); the connection goes back to
        the pool once the body is read to its end."""
        try:
            data = self.raw.read(n)
        except (OSError, http.client.HTTPException) as e:
            self.close()
            raise failure(e) from None
        if self.raw.isclosed():
            self._finished()
        return data

    @property
    def content(self) -> bytes:
        if self._content is None:
            chunks = []
            while data := self.read(1 << 20):
                chunks.append(data)
            self._content = b"".join(chunks)
        return self._content

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def links(self) -> dict[str, dict[str, str]]:
        """The ``Link`` header by ``rel``: ``{"next": {"url": "…", "rel": "next"}}``."""
        out: dict[str, dict[str, str]] = {}
        for part in (self.headers.get("Link") or "").split(","):
            url, _, params = part.strip().partition(";")
            link = {"url": url.strip().strip("<>")}
            for p in params.split(";"):
                key, _, value = p.partition("=")
                if key.strip():
                    link[key.strip().lower()] = value.strip().strip("'\"")
            if link["url"]:
                out[link.get("rel") or link["url"]] = link
        return out

    def _finished(self) -> None:
        """The body ended: whole (the connection back to the pool) or cut short (closed)."""
        if self._conn is not None:
            if self.raw.length:  # bytes still due: the server closed early
                self._conn.close()
            else:
                self._pool.put(self._conn)
            self._conn = None

    def close(self) -> None:
        """Done with the response: its connection serves the next request if the body was read
        (or is short enough to read now), else it is closed."""
        if self._conn is None:
            return
        length = self.raw.length
        if not self.raw.isclosed() and length is not None and length <= DRAIN_MAX:
            try:
                self.raw.read()
            except (OSError, http.client.HTTPException):
                self.raw.close()
        if self.raw.isclosed():
            self._finished()
            return
        self.raw.close()
        self._conn.close()
        self._conn = None


class _Pool:
    """Idle keep-alive connections to one origin (through one proxy, with one TLS setting),
    at most ``size`` kept (more are opened when more requests run at once)."""

    def __init__(self, make: Callable[[], http.client.HTTPConnection], size: int) -> None:
        self.make = make
        self.size = size
        self.idle: list[http.client.HTTPConnection] = []
        self.lock = threading.Lock()

    def get(self) -> tuple[http.client.HTTPConnection, bool]:
        """A connection and whether it was used before (a kept one the server closed meanwhile
        is dropped here)."""
        while True:
            with self.lock:
                conn = self.idle.pop() if self.idle else None
            if conn is None:
                return self.make(), False
            if conn.sock is not None and not _dropped(conn.sock):
                return conn, True
            conn.close()

    def put(self, conn: http.client.HTTPConnection) -> None:
        with self.lock:
            if len(self.idle) < self.size:
                self.idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()


def _dropped(sock: socket.socket) -> bool:
    """An idle connection the server closed (or sent something on) is readable."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _env(name: str) -> str | None:
    """A proxy variable as ``urllib`` reads it for ``requests``: the lower-case name when it is
    set (empty: no proxy), else the upper-case one."""
    lower = os.environ.get(name)
    return lower if lower is not None else os.environ.get(name.upper())


def proxy_for(url: urllib.parse.SplitResult) -> str | None:
    """The proxy URL for a request (``https_proxy``/``http_proxy``, else ``all_proxy``), or None
    when there is none or ``no_proxy`` names the host: a suffix of the name (with or without
    the port), an IP address or a CIDR block, or ``*``."""
    proxy = _env(f"{url.scheme}_proxy") or _env("all_proxy")
    if not proxy:
        return None
    host = url.hostname or ""
    no_proxy = os.environ.get("no_proxy") or os.environ.get("NO_PROXY") or ""  # as requests reads it
    for entry in (e.strip() for e in no_proxy.replace(" ", ",").split(",")):
        if not entry:
            continue
        if entry == "*":
            return None
        try:
            if ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False):
                return None
            continue
        except ValueError:
            pass
        bare = entry.lstrip(".")
        if host == bare or host.endswith(entry) or host.endswith("." + bare) or \
                f"{host}:{url.port}".endswith(entry):
            return None
    return proxy if "://" in proxy else "http://" + proxy


def _proxy_auth(proxy: urllib.parse.SplitResult) -> dict[str, str]:
    """``Proxy-Authorization`` for the ``user:password@`` of a proxy URL, if it has one."""
    if proxy.username is None:
        return {}
    cred = f"{urllib.parse.unquote(proxy.username)}:{urllib.parse.unquote(proxy.password or '')}"
    return {"Proxy-Authorization": "Basic " + base64.b64encode(cred.encode()).decode()}


class Session:
    """Requests over pooled connections; thread-safe. ``tls_for(netloc)`` gives the TLS settings
    of an https host (asked once per host)."""

    def __init__(self, *, tls_for: Callable[[str], TLSSettings] | None = None, pool_size: int = 16,
                 headers: dict[str, str] | None = None) -> None:
        self.tls_for = tls_for
        self.pool_size = pool_size
        self.headers = dict(headers or {})
        self._pools: dict[tuple[str, str, str | None], _Pool] = {}
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()

    # -- connections ---------------------------------------------------------------------------
    def _context(self, netloc: str) -> ssl.SSLContext:
        with self._lock:
            ctx = self._contexts.get(netloc)
        if ctx is None:
            settings = self.tls_for(netloc) if self.tls_for else TLSSettings()
            try:
                ctx = settings.context()
            except OSError as e:  # ssl.SSLError is one: a CA or client certificate file unusable
                files = [*settings.cas, *(settings.cert or ())]
                raise HTTPFailure("tls", f"cannot load {', '.join(files) or 'the system CAs'}: {e}") from None
            with self._lock:
                self._contexts[netloc] = ctx
        return ctx

    def _pool(self, url: urllib.parse.SplitResult, timeout: float) -> tuple[_Pool, str | None]:
        proxy = proxy_for(url)
        key = (url.scheme, url.netloc, proxy)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = _Pool(lambda: self._connect(url, proxy, timeout),
                                                self.pool_size)
        return pool, proxy

    def _connect(self, url: urllib.parse.SplitResult, proxy: str | None,
                 timeout: float) -> http.client.HTTPConnection:
        host, port = url.hostname or "", url.port
        conn: http.client.HTTPConnection
        if proxy is None:
            if url.scheme == "https":
                conn = http.client.HTTPSConnection(host, port, timeout=timeout,
                                                   context=self._context(url.netloc))
            else:
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
            return conn
        p = urllib.parse.urlsplit(proxy)
        if p.scheme != "http":
            raise HTTPFailure("proxy", f"proxy {proxy}: only http:// proxies are supported")
        if url.scheme == "https":  # a CONNECT tunnel through the proxy, TLS inside it
            conn = http.client.HTTPSConnection(p.hostname or "", p.port or 80, timeout=timeout,
                                               context=self._context(url.netloc))
            conn.set_tunnel(host, port or 443, headers=_proxy_auth(p))
        else:  # the absolute URL to the proxy (``_send`` adds its credentials to each request)
            conn = http.client.HTTPConnection(p.hostname or "", p.port or 80, timeout=timeout)
        return conn

    # -- requests ------------------------------------------------------------------------------
    def request(self, method: str, url: str, *, headers: dict[str, str] | None = None,
                body: bytes | Iterable[bytes] | None = None, params: Params = None,
                timeout: float = 60.0, stream: bool = False, redirects: bool = True) -> Response:
        """Send, following redirects unless told not to: 303 (and 301/302 of a POST) becomes a
        body-less GET as browsers and ``requests`` do; another host gets no ``Authorization``.
        Without *stream* the body is read at once."""
        if params:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(params)
        h = {**self.headers, **(headers or {})}
        for _ in range(MAX_REDIRECTS + 1):
            resp = self._send(method, url, h, body, timeout)
            location = resp.headers.get("Location")
            if resp.status_code not in REDIRECTS or not location or not redirects:
                break
            resp.close()
            new = urllib.parse.urljoin(url, location)
            if urllib.parse.urlsplit(new).netloc != urllib.parse.urlsplit(url).netloc:
                h.pop("Authorization", None)
            if resp.status_code == 303 or (resp.status_code in (301, 302) and method == "POST"):
                method, body = ("GET" if method != "HEAD" else method), None
                h = {k: v for k, v in h.items() if k not in ("Content-Length", "Content-Type")}
            url = new
        else:
            raise HTTPFailure("other", f"more than {MAX_REDIRECTS} redirects from {url}")
        if not stream:
            resp.content  # noqa: B018 - read now, the connection back in the pool
        return resp

    def _send(self, method: str, url: str, headers: dict[str, str],
              body: bytes | Iterable[bytes] | None, timeout: float) -> Response:
        parts = urllib.parse.urlsplit(url)
        pool, proxy = self._pool(parts, timeout)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        h = dict(headers)
        if proxy is not None and parts.scheme == "http":
            target = urllib.parse.urlunsplit(parts._replace(fragment=""))
            h.update(_proxy_auth(urllib.parse.urlsplit(proxy)))
        if body is not None and not isinstance(body, bytes) and "Content-Length" not in h \
                and hasattr(body, "__len__"):
            h["Content-Length"] = str(len(body))  # type: ignore[arg-type]
        for fresh_retry in range(2):
            conn, reused = pool.get()
            try:
                conn.request(method, target, body=body, headers=h)
                raw = conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                # a kept connection the server closed just as we sent: once more on a new one
                if reused and fresh_retry == 0 and isinstance(
                        e, (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected)):
                    continue
                raise failure(e) from None
            except BaseException:  # the body's source failed: the request is half sent
                conn.close()
                raise
            return Response(raw, conn, pool, Sent(method, url, h))
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()
