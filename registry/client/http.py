"""``RegistryClient``: one registry host over a pooled ``transport.Session`` (``http.client``):
ping and scheme choice, auth challenges, HTTP status and OCI error codes mapped to
``registry.errors``, retries."""

from __future__ import annotations

import contextlib
import email.utils
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from registry import mediatypes as mt
from registry.auth import Authenticator, Credentials, DockerConfig
from registry.client.tls import (
    TLSSettings,
    insecure_registries,
    is_loopback,
    registry_mirror,
)
from registry.client.transport import HTTPFailure, Response, Session
from registry.errors import (
    BlobUnknown,
    Denied,
    ManifestUnknown,
    NameUnknown,
    NotFound,
    RegistryError,
    TooManyRequests,
    TransportError,
    Unauthorized,
)
from registry.reference import DOCKER_HUB, Reference
from registry.values import frozen

MANIFEST_ACCEPT = ", ".join([mt.OCI_INDEX, mt.OCI_MANIFEST, mt.DOCKER_MANIFEST_LIST, mt.DOCKER_MANIFEST])
USER_AGENT = "pybuild/0.1"
READ_CHUNK = 1 << 20
#: blobs up to ``MONOLITHIC_MAX`` go up in one PUT; larger ones in PATCH chunks of ``chunk_size``
#: (distribution 2.8 costs a lot per PATCH, so chunks are large; they only bound what a
#: failure makes us send again)
MONOLITHIC_MAX = 16 << 20
DEFAULT_CHUNK = 128 << 20
MAX_MANIFEST = 4 << 20

#: (attempt, wait seconds, error) after a failure that will be retried
RetryHook = Callable[[int, float, RegistryError], None]

def retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def error_for(resp: Response, what: str, *, host: str, name: str) -> RegistryError:
    """Map an HTTP error response (status and OCI error codes) into the ``registry.errors`` tree."""
    codes: list[tuple[str, str]] = []
    if resp.request is not None and resp.request.method != "HEAD":
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            for e in resp.json().get("errors") or []:
                codes.append((str(e.get("code") or ""), str(e.get("message") or "")))
    code = codes[0][0] if codes else ""
    message = codes[0][1] if codes else ""
    s = resp.status_code
    where = f"{host}/{name}" if name else host
    if s == 401 or code == "UNAUTHORIZED":
        sent = resp.request is not None and "Authorization" in resp.request.headers
        if sent and (resp.request.headers["Authorization"] or "").startswith("Basic "):
            # the registry refused the credentials themselves (a token's 401 is a scope matter)
            return Unauthorized(f"unauthorized: incorrect username or password for {host}")
        return Unauthorized(f"unauthorized: authentication required for {where}; run pybuild login {host}")
    if s == 403 or code == "DENIED":
        return Denied(f"denied: requested access to {where} is denied" + (f" ({message})" if message else ""))
    if s == 429 or code == "TOOMANYREQUESTS":
        return TooManyRequests(f"toomanyrequests: {host} rate limit reached ({what})",
                               retry_after=retry_after(resp.headers.get("Retry-After")))
    if code == "NAME_UNKNOWN":
        return NameUnknown(f"not found: repository {where} does not exist (NAME_UNKNOWN)")
    if code == "MANIFEST_UNKNOWN" or (s == 404 and "manifest" in what):
        return ManifestUnknown(f"not found: manifest unknown: {what}")
    if code == "BLOB_UNKNOWN" or (s == 404 and "blob" in what):
        return BlobUnknown(f"not found: blob unknown: {what}")
    if s == 404:
        return NotFound(f"not found: {what}")
    detail = f"{code}: {message}" if code else (resp.reason or "")
    if s >= 500:
        return TransportError(f"{host}: HTTP {s} {detail} ({what})", retryable=True, status=s)
    return TransportError(f"{host}: HTTP {s} {detail} ({what})", retryable=False, status=s)


def _transport_error(e: HTTPFailure, url: str) -> TransportError:
    if e.kind in ("verify", "tls"):
        return TransportError(f"TLS error talking to {url}: {short_error(e)}", retryable=False)
    # Nothing listens there, or the name does not resolve: fail at once, as Docker does; resets
    # and timeouts in the middle of a transfer are what retries are for.
    if e.kind == "refused":
        return TransportError(f"cannot reach {url}: connection refused", retryable=False)
    if e.kind == "resolve":
        return TransportError(f"cannot reach {url}: the host name does not resolve", retryable=False)
    if e.kind == "proxy":
        return TransportError(f"cannot reach {url}: {e}", retryable=False)
    return TransportError(f"connection error talking to {url}: {short_error(e)}", retryable=True)


def _has_port(host: str) -> bool:
    """Whether ``host`` (``name[:port]``, ``[v6][:port]``) names its port."""
    _, colon, port = host.rpartition("]")[2].rpartition(":")  # past an IPv6 literal's colons
    return bool(colon) and port.isdigit()


def short_error(e: Exception) -> str:
    text = str(e)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "certificate verify failed (add the CA to certs.d or use --tls-verify=false)"
    return text if len(text) < 200 else text[:200] + "…"


@frozen
class Backoff:
    """Exponential backoff with jitter: ``base * 2**attempt`` up to ``cap``; ``attempts`` tries."""

    attempts: int = 5
    base: float = 0.2
    cap: float = 10.0
    max_retry_after: float = 60.0

    def delay(self, attempt: int, error: RegistryError) -> float:
        if isinstance(error, TooManyRequests) and error.retry_after is not None:
            return float(min(error.retry_after, self.max_retry_after))
        return float(min(self.cap, self.base * 2.0**attempt) * (0.5 + random.random() / 2))


class RegistryClient:
    """One registry host. Thread-safe: blob transfers run from a thread pool over one session.

    Scheme: HTTPS; plain HTTP is tried after HTTPS fails only for loopback hosts, hosts in
    ``$PYBUILD_INSECURE_REGISTRIES``, or with ``tls_verify=False`` (which also skips
    certificate checks), as Docker allows. CAs and client certificates come from
    ``certs_dirs()``.
    """

    def __init__(
        self,
        host: str,
        *,
        credentials: Credentials | None = None,
        tls_verify: bool = True,
        backoff: Backoff | None = None,
        chunk_size: int = DEFAULT_CHUNK,
        monolithic_max: int = MONOLITHIC_MAX,
        timeout: float = 60.0,
        on_retry: RetryHook | None = None,
        pool_size: int = 16,
    ) -> None:
        self.host = host
        self.tls_verify = tls_verify
        self.backoff = backoff or Backoff()
        self.chunk_size = chunk_size
        self.monolithic_max = min(monolithic_max, chunk_size)
        self.timeout = timeout
        self.on_retry = on_retry
        self.session = Session(tls_for=self._tls_settings, pool_size=pool_size,
                               headers={"User-Agent": USER_AGENT})
        if credentials is None:
            credentials = DockerConfig.load().get(Reference.parse(f"{host}/x").domain)
        self.credentials = credentials
        self.auth = Authenticator(self.session, host, credentials)
        self._base: str | None = None
        self._lock = threading.Lock()

    # -- plumbing ------------------------------------------------------------------------------
    def _tls_settings(self, netloc: str) -> TLSSettings:
        """The TLS of an https host (the session asks once per host): --tls-verify=false and
        insecure-registries skip certificate checks for the registry itself (as Docker does);
        a token realm or blob storage elsewhere is always verified."""
        verify = netloc != self.host or (self.tls_verify and self.host not in insecure_registries())
        return TLSSettings.for_host(netloc, verify=verify)

    @property
    def http_allowed(self) -> bool:
        return not self.tls_verify or is_loopback(self.host) or self.host in insecure_registries()

    @property
    def base(self) -> str:
        """``scheme://host``, found by pinging ``/v2/`` once (which also learns the challenge)."""
        with self._lock:
            if self._base is None:
                self._base = self._ping()
            return self._base

    def _ping(self) -> str:
        # A registry that may speak plain HTTP on a port of its own is asked in plain HTTP
        # first (redirects not followed): a TLS port answers that with a 400 (or a redirect, or
        # by closing), and https is tried next, then plain HTTP once more, as Docker falls back.
        # A plain-HTTP registry so costs no TLS context, and the ping's connection is kept. A
        # host without a port is asked https first (port 443; http:// would go to port 80).
        probe = self.http_allowed and _has_port(self.host)
        if probe:
            schemes = ["http", "https", "http"]
        else:
            schemes = ["https", "http"] if self.http_allowed else ["https"]
        last: HTTPFailure | None = None
        for n, scheme in enumerate(schemes):
            url = f"{scheme}://{self.host}/v2/"
            probing = probe and n == 0
            for attempt in range(self.backoff.attempts):
                try:
                    r = self.session.request("GET", url, timeout=self.timeout, redirects=not probing)
                except HTTPFailure as e:
                    if e.kind in ("verify", "proxy"):  # no other scheme would do better
                        raise _transport_error(e, url) from None
                    last = e if scheme == "https" or last is None else last
                    break  # not TLS at all, or nothing there: try the next scheme
                if probing and (r.status_code == 400 or 300 <= r.status_code < 400):
                    break  # a TLS port told of a request in plain HTTP
                if r.status_code in (429,) or r.status_code >= 500:
                    err = error_for(r, "ping", host=self.host, name="")
                    if attempt + 1 < self.backoff.attempts:
                        self._sleep(attempt, err)
                        continue
                    raise err
                if r.status_code == 401:
                    self.auth.set_challenge(r.headers.get("WWW-Authenticate"))
                elif r.status_code != 200:
                    raise TransportError(f"{self.host} is not a registry: GET /v2/ answered HTTP {r.status_code}",
                                         retryable=False, status=r.status_code)
                return f"{scheme}://{self.host}"
        assert last is not None
        raise _transport_error(last, f"https://{self.host}/v2/")

    def _sleep(self, attempt: int, err: RegistryError) -> None:
        wait = self.backoff.delay(attempt, err)
        if self.on_retry:
            self.on_retry(attempt + 1, wait, err)
        time.sleep(wait)

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        scopes: frozenset[str],
        what: str,
        name: str = "",
        headers: dict[str, str] | None = None,
        data: Callable[[], Any] | bytes | None = None,
        params: dict[str, str] | None = None,
        stream: bool = False,
        ok: tuple[int, ...] = (200,),
        retries: bool = True,
    ) -> Response:
        """One API call: auth (answering a 401 challenge once), status mapping, and retries of
        connection errors, 5xx and 429 (honouring ``Retry-After``) when *retries*."""
        attempt = 0
        while True:
            try:
                resp = self._once(method, path_or_url, scopes=scopes, headers=headers, data=data,
                                  params=params, stream=stream)
                if resp.status_code in ok:
                    return resp
                err = error_for(resp, what, host=self.host, name=name)
                resp.close()
            except TransportError as e:
                err = e
            if not (retries and err.retryable) or attempt + 1 >= self.backoff.attempts:
                raise err
            self._sleep(attempt, err)
            attempt += 1

    def _once(self, method: str, path_or_url: str, *, scopes: frozenset[str],
              headers: dict[str, str] | None, data: Callable[[], Any] | bytes | None,
              params: dict[str, str] | None, stream: bool) -> Response:
        url = path_or_url if "://" in path_or_url else self.base + path_or_url
        for auth_round in range(2):
            h = dict(headers or {})
            authz = self.auth.header(scopes)
            if authz:
                h["Authorization"] = authz
            body = data() if callable(data) else data
            try:
                resp = self.session.request(method, url, headers=h, body=body, params=params,
                                            stream=stream, timeout=self.timeout)
            except HTTPFailure as e:
                raise _transport_error(e, url) from None
            if resp.status_code == 401 and auth_round == 0:
                challenge = resp.headers.get("WWW-Authenticate")
                first = self.auth.challenge is None
                self.auth.set_challenge(challenge)
                if self.auth.challenge is None:
                    return resp
                if not first and self.auth.challenge.scheme == "basic" and authz:
                    return resp  # the same credentials again would fail the same way
                self.auth.invalidate(scopes)
                resp.close()
                continue
            return resp
        return resp

    def verify_login(self) -> str | None:
        """Check the credentials against ``/v2/`` (and the token server); returns an identity
        token if the token server issued one. Raises ``Unauthorized`` when refused."""
        _ = self.base
        if self.auth.challenge is None:
            return None
        if self.auth.challenge.scheme == "bearer":
            return self.auth.login_token()
        self.request("GET", "/v2/", scopes=frozenset(), what="login")
        return None

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def client_for(reference: Reference, *, tls_verify: bool = True, **kwargs: Any) -> RegistryClient:
    """A ``RegistryClient`` for the registry a reference names, with its stored credentials
    (``docker.io`` goes to ``$PYBUILD_REGISTRY_MIRROR`` when one is set)."""
    host = (registry_mirror() if reference.domain == DOCKER_HUB else None) or reference.registry
    return RegistryClient(host, tls_verify=tls_verify,
                          credentials=kwargs.pop("credentials", None) or
                          DockerConfig.load().get(reference.domain), **kwargs)
