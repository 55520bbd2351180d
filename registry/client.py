"""The OCI distribution API over ``requests``: ping, auth, manifests, streamed blobs with resume,
monolithic and chunked uploads with resume, cross-repository mounts, tags, retries with backoff.

``RegistryClient`` is one registry host (scheme, TLS, credentials, pooled session); its
``repository(path)`` is a ``Repository``, the remote end of ``registry.transfer.copy``.
"""

from __future__ import annotations

import contextlib
import email.utils
import ipaddress
import os
import random
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from registry import mediatypes as mt
from registry.auth import Authenticator, Credentials, DockerConfig, scope_for
from registry.digest import Digest
from registry.errors import (
    BlobUnknown,
    Denied,
    DigestError,
    ManifestUnknown,
    NameUnknown,
    NotFound,
    RegistryError,
    TooManyRequests,
    TransportError,
    Unauthorized,
)
from registry.reference import Reference

if TYPE_CHECKING:
    import requests

MANIFEST_ACCEPT = ", ".join([mt.OCI_INDEX, mt.OCI_MANIFEST, mt.DOCKER_MANIFEST_LIST, mt.DOCKER_MANIFEST])
USER_AGENT = "pybuild/0.1"
READ_CHUNK = 1 << 20
#: blobs up to ``MONOLITHIC_MAX`` go up in one PUT; larger ones in PATCH chunks of ``chunk_size``
#: (distribution 2.8 costs a lot per PATCH, so chunks are large; they only bound what a
#: failure makes us send again)
MONOLITHIC_MAX = 16 << 20
DEFAULT_CHUNK = 128 << 20
MAX_MANIFEST = 4 << 20
DEFAULT_CERTS_DIRS = ("/etc/pybuild/certs.d", "/etc/docker/certs.d")

#: (attempt, wait seconds, error) after a failure that will be retried
RetryHook = Callable[[int, float, RegistryError], None]


# -- TLS ---------------------------------------------------------------------------------------
def certs_dirs() -> list[Path]:
    """``$PYBUILD_CERTS_D`` (a ``:``-separated list), else ``/etc/pybuild/certs.d`` then Docker's."""
    env = os.environ.get("PYBUILD_CERTS_D")
    return [Path(p) for p in (env.split(os.pathsep) if env else DEFAULT_CERTS_DIRS) if p]


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def insecure_registries() -> set[str]:
    """``$PYBUILD_INSECURE_REGISTRIES``: comma-separated ``host[:port]`` allowed over plain HTTP
    or with unverified TLS, as Docker's ``insecure-registries`` daemon setting."""
    return {h.strip() for h in os.environ.get("PYBUILD_INSECURE_REGISTRIES", "").split(",") if h.strip()}


_bundles: dict[tuple[str, ...], str] = {}
_bundle_lock = threading.Lock()


def _ca_bundle(cas: tuple[str, ...]) -> str:
    """System CAs plus a registry's own ``*.crt`` in one file, as Docker adds them to the pool."""
    with _bundle_lock:
        if cas not in _bundles:
            import certifi

            parts = [Path(certifi.where()).read_bytes()] + [Path(c).read_bytes() for c in cas]
            fd, path = tempfile.mkstemp(prefix="pybuild-ca-", suffix=".pem")
            with os.fdopen(fd, "wb") as f:
                f.write(b"\n".join(parts))
            import atexit

            atexit.register(_unlink_quietly, path)
            _bundles[cas] = path
        return _bundles[cas]


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@dataclass(frozen=True)
class TLSSettings:
    """``requests`` keyword arguments for one host: ``verify`` and a client ``cert``."""

    verify: bool | str = True
    cert: tuple[str, str] | None = None

    @classmethod
    def for_host(cls, host: str, *, verify: bool = True) -> TLSSettings:
        cas: list[str] = []
        cert: tuple[str, str] | None = None
        for base in certs_dirs():
            d = base / host
            if not d.is_dir():
                continue
            for f in sorted(d.iterdir()):
                if f.suffix == ".crt":
                    cas.append(str(f))
                elif f.suffix == ".cert" and (d / (f.stem + ".key")).is_file():
                    cert = (str(f), str(d / (f.stem + ".key")))
            break  # the first directory that knows the host wins, as in Docker
        v: bool | str = verify
        if verify and cas:
            v = _ca_bundle(tuple(cas))
        return cls(v, cert)

    def kwargs(self) -> dict[str, Any]:
        d: dict[str, Any] = {"verify": self.verify}
        if self.cert:
            d["cert"] = self.cert
        return d


# -- errors ------------------------------------------------------------------------------------
def _retry_after(value: str | None) -> float | None:
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


def error_for(resp: requests.Response, what: str, *, host: str, name: str) -> RegistryError:
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
        return Unauthorized(f"unauthorized: authentication required for {where}; run pybuild login {host}")
    if s == 403 or code == "DENIED":
        return Denied(f"denied: requested access to {where} is denied" + (f" ({message})" if message else ""))
    if s == 429 or code == "TOOMANYREQUESTS":
        return TooManyRequests(f"toomanyrequests: {host} rate limit reached ({what})",
                               retry_after=_retry_after(resp.headers.get("Retry-After")))
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


def _transport_error(e: Exception, url: str) -> TransportError:
    import requests as rq

    if isinstance(e, rq.exceptions.SSLError):
        return TransportError(f"TLS error talking to {url}: {_short(e)}", retryable=False)
    return TransportError(f"connection error talking to {url}: {_short(e)}", retryable=True)


def _short(e: Exception) -> str:
    text = str(e)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "certificate verify failed (add the CA to certs.d or use --tls-verify=false)"
    return text if len(text) < 200 else text[:200] + "…"


@dataclass(frozen=True)
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


# -- the client --------------------------------------------------------------------------------
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
        import requests
        from requests.adapters import HTTPAdapter

        self.host = host
        self.tls_verify = tls_verify
        if not tls_verify:
            import urllib3

            # The user asked for unverified TLS: do not warn on every request.
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self.backoff = backoff or Backoff()
        self.chunk_size = chunk_size
        self.monolithic_max = min(monolithic_max, chunk_size)
        self.timeout = timeout
        self.on_retry = on_retry
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        if credentials is None:
            credentials = DockerConfig.load().get(Reference.parse(f"{host}/x").domain)
        self.credentials = credentials
        self.auth = Authenticator(self.session, host, credentials, tls=self._tls_kwargs)
        self._base: str | None = None
        self._lock = threading.Lock()
        self._tls: dict[str, TLSSettings] = {}

    # -- plumbing ------------------------------------------------------------------------------
    def _tls_kwargs(self, url: str) -> dict[str, Any]:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "https":
            return {}
        netloc = parts.netloc
        if netloc not in self._tls:
            verify = self.tls_verify or netloc != self.host
            self._tls[netloc] = TLSSettings.for_host(netloc, verify=verify)
        return self._tls[netloc].kwargs()

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
        import requests as rq

        schemes = ["https", "http"] if self.http_allowed else ["https"]
        last: Exception | None = None
        for scheme in schemes:
            url = f"{scheme}://{self.host}/v2/"
            for attempt in range(self.backoff.attempts):
                try:
                    r = self.session.get(url, timeout=self.timeout, **self._tls_kwargs(url))
                except rq.exceptions.SSLError as e:
                    last = e
                    if "CERTIFICATE_VERIFY_FAILED" in str(e) or scheme == "http":
                        raise _transport_error(e, url) from None
                    break  # not TLS at all: try plain HTTP if allowed
                except rq.RequestException as e:
                    last = e
                    break
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
        raise _transport_error(last, f"{schemes[0]}://{self.host}/v2/")

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
    ) -> requests.Response:
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
              params: dict[str, str] | None, stream: bool) -> requests.Response:
        import requests as rq

        url = path_or_url if "://" in path_or_url else self.base + path_or_url
        for auth_round in range(2):
            h = dict(headers or {})
            authz = self.auth.header(scopes)
            if authz:
                h["Authorization"] = authz
            body = data() if callable(data) else data
            try:
                resp = self.session.request(method, url, headers=h, data=body, params=params,
                                            stream=stream, timeout=self.timeout, allow_redirects=True,
                                            **self._tls_kwargs(url))
            except rq.RequestException as e:
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

    def repository(self, path: str) -> Repository:
        return Repository(self, path)

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


@dataclass(frozen=True)
class Fetched:
    """A manifest or index as the registry served it: exact bytes, media type, digest."""

    raw: bytes
    media_type: str
    digest: Digest


class Repository:
    """One repository of a registry: the calls ``transfer.copy`` needs from a remote end."""

    def __init__(self, client: RegistryClient, path: str) -> None:
        self.client = client
        self.path = path
        self._actions = {"pull"}
        self._extra: set[str] = set()

    @property
    def host(self) -> str:
        return self.client.host

    @property
    def scopes(self) -> frozenset[str]:
        return frozenset({scope_for(self.path, self._actions), *self._extra})

    def want_push(self) -> None:
        self._actions.add("push")

    def _req(self, method: str, path_or_url: str, what: str, **kw: Any) -> requests.Response:
        return self.client.request(method, path_or_url, scopes=kw.pop("scopes", self.scopes),
                                   what=what, name=self.path, **kw)

    def _url(self, tail: str) -> str:
        return f"/v2/{self.path}/{tail}"

    # -- manifests -----------------------------------------------------------------------------
    def get_manifest(self, ref: str | Digest) -> Fetched:
        """The manifest or index at a tag or digest, its digest verified against the bytes."""
        what = f"manifest {self.host}/{self.path}{'@' if isinstance(ref, Digest) else ':'}{ref}"
        resp = self._req("GET", self._url(f"manifests/{ref}"), what,
                         headers={"Accept": MANIFEST_ACCEPT}, stream=True)
        try:
            declared = int(resp.headers.get("Content-Length") or 0)
            if declared > MAX_MANIFEST:
                raise RegistryError(f"{what}: manifest of {declared} bytes is too large")
            raw = resp.raw.read(MAX_MANIFEST + 1, decode_content=True)
        except Exception as e:
            import requests as rq
            import urllib3

            if isinstance(e, (rq.RequestException, urllib3.exceptions.HTTPError, OSError)):
                raise TransportError(f"{what}: {e}") from None
            raise
        finally:
            resp.close()
        media_type = (resp.headers.get("Content-Type") or "").split(";")[0].strip()
        if isinstance(ref, Digest):
            h = ref.new_hasher()
            h.update(raw)
            if h.hexdigest() != ref.encoded:
                raise DigestError(f"{what}: manifest content does not match its digest")
            digest = ref
        else:
            digest = Digest.of(raw)
            header = resp.headers.get("Docker-Content-Digest")
            if header:
                try:
                    expected = Digest.parse(header)
                except DigestError:
                    expected = digest
                if expected.algorithm == "sha256" and expected != digest:
                    raise DigestError(f"{what}: manifest content does not match the digest the registry "
                                      f"announced ({expected})")
        return Fetched(raw, media_type, digest)

    def has_manifest(self, ref: str | Digest) -> bool:
        try:
            self._req("HEAD", self._url(f"manifests/{ref}"), f"manifest {self.path}:{ref}",
                      headers={"Accept": MANIFEST_ACCEPT})
        except NotFound:
            return False
        return True

    def put_manifest(self, raw: bytes, media_type: str, ref: str | Digest) -> Digest:
        resp = self._req("PUT", self._url(f"manifests/{ref}"),
                         f"manifest {self.host}/{self.path}:{ref}",
                         headers={"Content-Type": media_type}, data=raw, ok=(201, 200, 202))
        digest = Digest.of(raw)
        header = resp.headers.get("Docker-Content-Digest")
        if header and Digest.parse(header) != digest:
            raise DigestError(f"registry stored manifest {header}, we sent {digest}")
        return digest

    def tags(self, *, page_size: int = 1000) -> list[str]:
        """Every tag, following the registry's ``Link: <…>; rel="next"`` pages."""
        out: list[str] = []
        url: str | None = self._url(f"tags/list?n={page_size}")
        while url:
            resp = self._req("GET", url, f"tags of {self.host}/{self.path}")
            out.extend(resp.json().get("tags") or [])
            url = None
            link = resp.links.get("next", {}).get("url")
            if link:
                url = urllib.parse.urljoin(self.client.base + "/", link)
        return out

    # -- blobs ---------------------------------------------------------------------------------
    def has_blob(self, digest: Digest) -> bool:
        try:
            self._req("HEAD", self._url(f"blobs/{digest}"), f"blob {digest}")
        except NotFound:
            return False
        return True

    def open_blob(self, digest: Digest, size: int | None = None, offset: int = 0) -> BlobReader:
        """A stream of the blob's bytes from *offset*, resuming with a Range request when the
        connection drops. The caller verifies the digest (the store's writer does)."""
        return BlobReader(self, digest, size, offset)

    def mount_blob(self, digest: Digest, source: str) -> bool:
        """Ask for a cross-repository mount from *source* (a repository on this registry).
        True if mounted; False if the registry declined (an upload session it opened is cancelled)."""
        self._extra.add(scope_for(source, {"pull"}))
        resp = self._req("POST", self._url("blobs/uploads/"), f"mount of {digest} from {source}",
                         params={"mount": str(digest), "from": source}, ok=(201, 202))
        if resp.status_code == 201:
            return True
        loc = resp.headers.get("Location")
        if loc:
            with contextlib.suppress(RegistryError):
                self._req("DELETE", self._abs(loc), "cancel upload", ok=(204, 200, 404), retries=False)
        return False

    def _abs(self, location: str) -> str:
        return urllib.parse.urljoin(self.client.base + self._url("blobs/uploads/"), location)

    def _start_upload(self) -> str:
        resp = self._req("POST", self._url("blobs/uploads/"), f"upload to {self.host}/{self.path}",
                         ok=(202,))
        loc = resp.headers.get("Location")
        if not loc:
            raise TransportError(f"{self.host}: upload started without a Location", retryable=False)
        return self._abs(loc)

    def push_blob(self, digest: Digest, size: int, open_at: Callable[[int], BinaryIO],
                  on_bytes: Callable[[int], None] | None = None) -> None:
        """Upload a blob: one PUT up to ``monolithic_max``, else PATCH chunks; after a failed chunk,
        continue from the offset the registry reports, or start a new upload if it lost it."""
        backoff = self.client.backoff
        for attempt in range(backoff.attempts):
            location = self._start_upload()
            try:
                if size <= self.client.monolithic_max:
                    self._put(location, digest, _Body(open_at, 0, size, on_bytes))
                else:
                    self._chunked(location, digest, size, open_at, on_bytes)
                return
            except TransportError as err:
                if not err.retryable or attempt + 1 >= backoff.attempts:
                    raise
                self.client._sleep(attempt, err)
            except _UploadLost as lost:
                if attempt + 1 >= backoff.attempts:
                    raise lost.error from None
                self.client._sleep(attempt, lost.error)

    def _put(self, location: str, digest: Digest, body: _Body | None) -> None:
        headers = {"Content-Type": "application/octet-stream"}
        if body is None:
            headers["Content-Length"] = "0"
        resp = self._req("PUT", location, f"blob {digest}", params={"digest": str(digest)},
                         headers=headers, data=body, ok=(201, 204), retries=body is None)
        got = resp.headers.get("Docker-Content-Digest")
        if got and got != str(digest):
            raise DigestError(f"registry stored blob {got}, we sent {digest}")

    def _chunked(self, location: str, digest: Digest, size: int,
                 open_at: Callable[[int], BinaryIO], on_bytes: Callable[[int], None] | None) -> None:
        offset = 0
        failures = 0
        chunk = self.client.chunk_size
        while offset < size:
            n = min(chunk, size - offset)
            try:
                resp = self._req(
                    "PATCH", location, f"blob {digest}", data=_Body(open_at, offset, n, on_bytes),
                    headers={"Content-Type": "application/octet-stream",
                             "Content-Range": f"{offset}-{offset + n - 1}"},
                    ok=(202,), retries=False)
                location = self._abs(resp.headers.get("Location") or location)
                offset += n
                failures = 0
            except NotFound as err:  # the registry lost the session
                raise _UploadLost(err) from None
            except TransportError as err:
                if err.status in (400, 416):
                    raise _UploadLost(err) from None
                if not err.retryable:
                    raise
                failures += 1
                if failures >= self.client.backoff.attempts:
                    raise
                self.client._sleep(failures - 1, err)
                offset, location = self._upload_status(location, err)
                if on_bytes:
                    on_bytes(offset)
        try:
            self._put(location, digest, None)
        except NotFound as err:  # BLOB_UPLOAD_UNKNOWN
            raise _UploadLost(err) from None
        except TransportError as err:
            if err.status in (400, 416):  # DIGEST_INVALID, BLOB_UPLOAD_INVALID
                raise _UploadLost(err) from None
            raise

    def _upload_status(self, location: str, cause: RegistryError) -> tuple[int, str]:
        """Where the registry's upload session stands: the next offset to send."""
        try:
            resp = self._req("GET", location, "upload status", ok=(204,), retries=True)
        except (NotFound, TransportError) as e:
            raise _UploadLost(cause if isinstance(e, NotFound) else e) from None
        rng = resp.headers.get("Range", "")
        start, _, end = rng.partition("-")
        try:
            # distribution says "0-0" for an empty upload (it never reports a 1-byte one
            # differently), so "0-0" means start from 0.
            offset = int(end) + 1 if end and (start, end) != ("0", "0") else 0
        except ValueError:
            raise _UploadLost(cause) from None
        return offset, self._abs(resp.headers.get("Location") or location)


class _UploadLost(Exception):
    """The registry no longer knows an upload session: start a new one."""

    def __init__(self, error: RegistryError) -> None:
        super().__init__(str(error))
        self.error = error


class _Body:
    """A request body of ``length`` bytes from ``open_at(offset)``, in large chunks, with a known
    length (so ``requests`` sends Content-Length, not chunked encoding) and progress reports."""

    def __init__(self, open_at: Callable[[int], BinaryIO], offset: int, length: int,
                 on_bytes: Callable[[int], None] | None) -> None:
        self._open_at = open_at
        self._offset = offset
        self._length = length
        self._on_bytes = on_bytes

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        left = self._length
        pos = self._offset
        with self._open_at(self._offset) as f:
            while left > 0:
                data = f.read(min(READ_CHUNK, left))
                if not data:
                    raise RegistryError(f"blob source ended {left} bytes early")
                left -= len(data)
                pos += len(data)
                yield data
                if self._on_bytes:
                    self._on_bytes(pos)


class BlobReader:
    """A blob download: ``read()`` streams; a dropped connection is resumed with
    ``Range: bytes=N-`` (up to the client's retry budget without progress)."""

    def __init__(self, repo: Repository, digest: Digest, size: int | None, offset: int = 0) -> None:
        self._repo = repo
        self.digest = digest
        self.size = size
        self.pos = offset
        self._resp: requests.Response | None = None
        self._failures = 0
        self.resumes = 0

    def _open(self) -> None:
        headers = {"Range": f"bytes={self.pos}-"} if self.pos else {}
        resp = self._repo._req("GET", self._repo._url(f"blobs/{self.digest}"), f"blob {self.digest}",
                               headers=headers, stream=True, ok=(200, 206))
        if self.pos and resp.status_code == 200:
            # The server ignored the range: skip what we already have.
            skip = self.pos
            while skip:
                got = resp.raw.read(min(skip, READ_CHUNK))
                if not got:
                    raise TransportError(f"blob {self.digest}: short response")
                skip -= len(got)
        self._resp = resp

    def read(self, n: int = READ_CHUNK) -> bytes:
        import requests as rq
        import urllib3

        if self.size is not None and self.pos >= self.size:
            return b""
        while True:
            try:
                if self._resp is None:
                    self._open()
                assert self._resp is not None
                data = self._resp.raw.read(n if n > 0 else READ_CHUNK)
                if not data and self.size is not None and self.pos < self.size:
                    raise TransportError(f"blob {self.digest}: connection closed at byte {self.pos}")
            except (TransportError, urllib3.exceptions.HTTPError, rq.RequestException, OSError) as e:
                err = e if isinstance(e, TransportError) else TransportError(
                    f"blob {self.digest}: {_short(e)} at byte {self.pos}")
                self.close()
                if not err.retryable or self._failures + 1 >= self._repo.client.backoff.attempts:
                    raise err from None
                self._repo.client._sleep(self._failures, err)
                self._failures += 1
                self.resumes += 1
                continue
            if data:
                self._failures = 0
            self.pos += len(data)
            return bytes(data)

    def close(self) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def client_for(reference: Reference, *, tls_verify: bool = True, **kwargs: Any) -> RegistryClient:
    """A ``RegistryClient`` for the registry a reference names, with its stored credentials."""
    return RegistryClient(reference.registry, tls_verify=tls_verify,
                          credentials=kwargs.pop("credentials", None) or
                          DockerConfig.load().get(reference.domain), **kwargs)
