"""``registry.client`` against real registries: TLS with CA and client certificates, scheme choice,
manifests and blobs, ranges, chunked uploads, tag pages, error mapping."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from registry_server import Registry, make_image, unique_repo

from registry import transfer
from registry.client import (
    Backoff,
    RegistryClient,
    Repository,
    certs_dirs,
    is_loopback,
    retry_after,
)
from registry.digest import Digest
from registry.errors import (
    BlobUnknown,
    DigestError,
    ManifestUnknown,
    NameUnknown,
    TooManyRequests,
    TransportError,
)
from registry.store import Store


def test_tls_needs_the_ca_from_certs_d(tls_registry: Registry, certs: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    with RegistryClient(tls_registry.addr) as c, pytest.raises(TransportError, match="certificate verify failed"):
        Repository(c, "x/y").tags()
    with RegistryClient(tls_registry.addr, tls_verify=False) as c:
        assert c.base == f"https://{tls_registry.addr}"
        with pytest.raises(NameUnknown):
            Repository(c, unique_repo()).tags()
    monkeypatch.setenv("PYBUILD_INSECURE_REGISTRIES", f"other:1,{tls_registry.addr}")
    with RegistryClient(tls_registry.addr) as c, pytest.raises(NameUnknown):
        Repository(c, unique_repo()).tags()  # an insecure registry: its certificate is not checked
    monkeypatch.delenv("PYBUILD_INSECURE_REGISTRIES")
    tls_registry.certs_d(certs)
    assert certs_dirs() == [certs]
    with RegistryClient(tls_registry.addr) as c:
        assert c.base == f"https://{tls_registry.addr}"
        with pytest.raises(NameUnknown, match="does not exist"):
            Repository(c, unique_repo()).tags()


def test_client_certificate_from_certs_d(registry_factory: object, certs: Path) -> None:
    reg = registry_factory(tls=True, client_certs=True)  # type: ignore[operator]
    reg.certs_d(certs)
    with RegistryClient(reg.addr) as c, pytest.raises(TransportError):
        Repository(c, "x/y").tags()
    reg.certs_d(certs, client=True)
    with RegistryClient(reg.addr) as c, pytest.raises(NameUnknown):
        Repository(c, unique_repo()).tags()


def test_plain_http_only_for_loopback_or_insecure(monkeypatch: pytest.MonkeyPatch,
                                                  plain_registry: Registry, certs: Path) -> None:
    assert is_loopback("127.0.0.1:5000") and is_loopback("localhost") and is_loopback("[::1]:5000")
    assert not is_loopback("registry.example:5000")
    assert not RegistryClient("registry.example:5000").http_allowed
    monkeypatch.setenv("PYBUILD_INSECURE_REGISTRIES", "registry.example:5000")
    assert RegistryClient("registry.example:5000").http_allowed
    assert RegistryClient("other.example:5000", tls_verify=False).http_allowed
    with RegistryClient(plain_registry.addr) as c:
        assert c.base == f"http://{plain_registry.addr}"  # https tried first, then http


def test_manifests_blobs_ranges_and_errors(plain_registry: Registry, tmp_path: Path,
                                           certs: Path) -> None:
    store = Store(tmp_path / "s")
    image = make_image(store, "app:1")
    repo_name = unique_repo()
    transfer.push(store, "app:1", f"{plain_registry.addr}/{repo_name}:v1")
    with RegistryClient(plain_registry.addr) as c:
        repo = Repository(c, repo_name)
        got = repo.get_manifest("v1")
        assert got.digest == image.descriptor.digest and got.raw == image.manifest.raw
        assert repo.get_manifest(image.descriptor.digest).raw == image.manifest.raw
        assert repo.has_manifest("v1") and not repo.has_manifest("v2")
        layer = image.layers[0]
        assert repo.has_blob(layer.digest)
        with repo.open_blob(layer.digest, layer.size, offset=1000) as r:
            tail = b"".join(iter(lambda: r.read(1 << 16), b""))
        assert tail == store.read_blob(layer.digest)[1000:]
        with pytest.raises(ManifestUnknown, match="not found: manifest unknown"):
            repo.get_manifest("v2")
        missing = Digest.of(b"nothing")
        assert not repo.has_blob(missing)
        with pytest.raises(BlobUnknown), repo.open_blob(missing, 7) as r:
            r.read()
        with pytest.raises(NameUnknown, match=f"{plain_registry.addr}/nope/nope does not exist"):
            Repository(c, "nope/nope").tags()
        with pytest.raises(ManifestUnknown):
            Repository(c, "nope/nope").get_manifest("v1")
        # A manifest fetched by digest must hash to it.
        other = Repository(c, repo_name)
        with pytest.raises((DigestError, ManifestUnknown)):
            other.get_manifest(Digest("sha256", image.descriptor.digest.encoded[::-1]))


def test_chunked_upload_and_tag_pages(plain_registry: Registry, tmp_path: Path, certs: Path) -> None:
    data = os.urandom(700_000)
    digest = Digest.of(data)
    seen: list[int] = []
    with RegistryClient(plain_registry.addr, chunk_size=128 << 10) as c:
        repo = Repository(c, unique_repo())
        repo.want_push()
        repo.push_blob(digest, len(data), lambda off: io.BytesIO(data[off:]), seen.append)
        assert seen[-1] == len(data) and len(seen) >= 6
        with repo.open_blob(digest, len(data)) as r:
            assert b"".join(iter(lambda: r.read(1 << 16), b"")) == data
        store = Store(tmp_path / "s")
        make_image(store, "app:1")
        for tag in ("a", "b", "c", "d", "e"):
            transfer.push(store, "app:1", f"{plain_registry.addr}/{repo.path}:{tag}")
        assert sorted(repo.tags(page_size=2)) == ["a", "b", "c", "d", "e"]


def test_retry_after_and_backoff() -> None:
    assert retry_after("3") == 3.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after(None) is None and retry_after("soon") is None
    b = Backoff(attempts=3, base=1.0, cap=4.0)
    assert b.delay(0, TooManyRequests("x", retry_after=2.5)) == 2.5
    assert 0.5 <= b.delay(0, TransportError("x")) <= 1.0
    assert b.delay(10, TransportError("x")) <= 4.0


def test_unreachable_registry_is_a_transport_error(certs: Path) -> None:
    from registry_server import free_port

    # a refused connection is final (no retries: five attempts would still fail at once)
    with RegistryClient(f"127.0.0.1:{free_port()}", backoff=Backoff(attempts=5)) as c, \
            pytest.raises(TransportError, match="connection refused") as e:
        Repository(c, "x/y").tags()
    assert not e.value.retryable
