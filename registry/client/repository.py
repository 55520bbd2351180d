"""``Repository``: one repository of a registry: manifests, tags, blob downloads that resume with
Range requests, monolithic and chunked uploads that resume, cross-repository mounts."""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

from registry.auth import scope_for
from registry.client.http import MANIFEST_ACCEPT, MAX_MANIFEST, READ_CHUNK, short_error
from registry.client.transport import HTTPFailure, Response
from registry.digest import Digest
from registry.errors import (
    DigestError,
    InvalidManifest,
    NotFound,
    RegistryError,
    TransportError,
)
from registry.values import frozen

if TYPE_CHECKING:
    from registry.client.http import RegistryClient


@frozen
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

    def _req(self, method: str, path_or_url: str, what: str, **kw: Any) -> Response:
        return self.client.request(method, path_or_url, scopes=kw.pop("scopes", self.scopes),
                                   what=what, name=self.path, **kw)

    def _url(self, tail: str) -> str:
        return f"/v2/{self.path}/{tail}"

    # -- manifests -----------------------------------------------------------------------------
    def get_manifest(self, ref: str | Digest) -> Fetched:
        """The manifest or index at a tag or digest, its digest verified against the bytes."""
        what = f"manifest {self.host}/{self.path}{'@' if isinstance(ref, Digest) else ':'}{ref}"
        attempt = 0
        while True:
            try:
                resp, raw = self._read_manifest(ref, what)
                break
            except TransportError as err:  # the body broke off: ask again
                if not err.retryable or attempt + 1 >= self.client.backoff.attempts:
                    raise
                self.client._sleep(attempt, err)
                attempt += 1
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

    def _read_manifest(self, ref: str | Digest, what: str) -> tuple[Response, bytes]:
        resp = self._req("GET", self._url(f"manifests/{ref}"), what,
                         headers={"Accept": MANIFEST_ACCEPT}, stream=True)
        try:
            declared = int(resp.headers.get("Content-Length") or 0)
            if declared > MAX_MANIFEST:
                raise InvalidManifest(f"{what}: manifest of {declared} bytes is too large")
            raw = resp.read(MAX_MANIFEST + 1)
            if len(raw) > MAX_MANIFEST:
                raise InvalidManifest(f"{what}: manifest larger than {MAX_MANIFEST} bytes")
            if declared and len(raw) != declared:
                raise TransportError(f"{what}: got {len(raw)} of {declared} bytes")
        except HTTPFailure as e:
            raise TransportError(f"{what}: {short_error(e)}") from None
        finally:
            resp.close()
        return resp, raw

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
    length (so the session sends Content-Length, not chunked encoding) and progress reports."""

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
        self._resp: Response | None = None
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
                got = resp.read(min(skip, READ_CHUNK))
                if not got:
                    raise TransportError(f"blob {self.digest}: short response")
                skip -= len(got)
        self._resp = resp

    def read(self, n: int = READ_CHUNK) -> bytes:
        if self.size is not None and self.pos >= self.size:
            return b""
        while True:
            try:
                if self._resp is None:
                    self._open()
                assert self._resp is not None
                data = self._resp.read(n if n > 0 else READ_CHUNK)
                if not data and self.size is not None and self.pos < self.size:
                    raise TransportError(f"blob {self.digest}: connection closed at byte {self.pos}")
            except (TransportError, HTTPFailure) as e:
                err = e if isinstance(e, TransportError) else TransportError(
                    f"blob {self.digest}: {short_error(e)} at byte {self.pos}")
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
            return data

    def close(self) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


