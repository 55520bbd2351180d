"""``registry.transfer.copy`` against real ``docker-registry`` servers: round trips in every
configuration, skipped and mounted blobs, multi-platform indexes, skopeo/umoci as judges, faults."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from registry_server import (
    BASIC_USERS,
    TOKEN_USERS,
    Fault,
    FaultProxy,
    Registry,
    busybox_layer_tar,
    file_tar,
    make_image,
    unique_repo,
)

from registry import mediatypes as mt
from registry import transfer
from registry.auth import Credentials, DockerConfig
from registry.client import Backoff
from registry.digest import Digest
from registry.errors import DigestError, ManifestUnknown, NotFound, Unauthorized
from registry.model import Index, Manifest, Platform
from registry.reference import Reference
from registry.store import Store

CONFIGS = ["plain_registry", "tls_registry", "basic_registry", "token_registry"]


def trust(reg: Registry, env: Path) -> None:
    """Make *reg* usable from this test: its CA in certs.d, its credentials in config.json."""
    if reg.tls:
        reg.certs_d(env / "certs.d")
    if reg.users:
        user = next(iter(reg.users))
        DockerConfig.load().store(reg.addr, Credentials(user, reg.users[user]))
    if reg.token:
        DockerConfig.load().store(reg.addr, Credentials("alice", TOKEN_USERS["alice"][0]))


def two_layer_image(store: Store, name: str, **kw: Any) -> Any:
    """busybox + a random 200 kB layer, so every test pushes blobs nobody else has."""
    return make_image(store, name, layers=[busybox_layer_tar(),
                                           file_tar("data.bin", os.urandom(200_000))], **kw)


def listing(root: Path) -> list[tuple[str, int]]:
    """Every path under *root* with its size, lock files aside (taking a lock changes nothing)."""
    return sorted((str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1)
                  for p in root.rglob("*") if not p.name.endswith(".lock"))


def blobs_ok(store: Store, image: Any) -> None:
    for d in [image.manifest.config, *image.layers]:
        assert store.has_blob(d.digest)
        with store.open_blob(d.digest) as f:
            assert Digest.of_stream(f) == (d.digest, d.size)


@pytest.mark.parametrize("config", CONFIGS)
def test_round_trip_push_pull_identical_digests(config: str, request: pytest.FixtureRequest,
                                                env: Path) -> None:
    reg: Registry = request.getfixturevalue(config)
    trust(reg, env)
    src = Store(env / "src")
    image = two_layer_image(src, "app:1")
    target = f"{reg.addr}/{unique_repo()}:v1"

    events: list[transfer.Event] = []
    pushed = transfer.push(src, "app:1", target, progress=events.append)
    assert pushed.descriptor.digest == image.descriptor.digest
    assert pushed.copied == 3 and pushed.existing == 0
    assert {e.kind for e in events} >= {"start", "progress", "done", "manifest"}

    dst = Store(env / "dst")
    pulled = transfer.pull(dst, target)
    assert pulled.descriptor.digest == image.descriptor.digest
    assert pulled.id == image.id and pulled.diff_ids == image.diff_ids
    blobs_ok(dst, pulled)
    assert dst.resolve(target).descriptor.digest == image.descriptor.digest

    # A second push uploads nothing: every blob is reported as existing.
    events.clear()
    again = transfer.push(src, "app:1", target, progress=events.append)
    assert (again.copied, again.existing, again.mounted) == (0, 3, 0)
    assert [e.kind for e in events if e.digest != image.descriptor.digest] == ["exists"] * 3


@pytest.mark.parametrize("config", ["plain_registry", "token_registry"])
def test_push_to_second_repository_mounts_blobs(config: str, request: pytest.FixtureRequest,
                                                env: Path) -> None:
    reg: Registry = request.getfixturevalue(config)
    trust(reg, env)
    store = Store(env / "store")
    image = two_layer_image(store, "app:1")
    first, second = f"{reg.addr}/{unique_repo('a')}:1", f"{reg.addr}/{unique_repo('b')}:1"
    transfer.push(store, "app:1", first)
    events: list[transfer.Event] = []
    result = transfer.push(store, "app:1", second, progress=events.append)
    assert (result.copied, result.mounted) == (0, 3)
    mounted = [e for e in events if e.kind == "mounted"]
    assert {e.detail for e in mounted} == {Reference.parse(first).path}
    fresh = Store(env / "fresh")
    assert transfer.pull(fresh, second).descriptor.digest == image.descriptor.digest


def test_registry_to_registry_copy_mounts_within_a_registry(plain_registry: Registry,
                                                            env: Path) -> None:
    store = Store(env / "store")
    image = two_layer_image(store, "app:1")
    a = f"{plain_registry.addr}/{unique_repo()}:1"
    b = f"{plain_registry.addr}/{unique_repo()}:2"
    transfer.push(store, "app:1", a)
    result = transfer.copy(transfer.parse_end(a), transfer.parse_end("docker://" + b))
    assert result.mounted == 3 and result.descriptor.digest == image.descriptor.digest


def _multi_platform(store: Store, name: str) -> tuple[Index, dict[str, Any]]:
    images = {}
    for arch in ("amd64", "arm64"):
        images[arch] = make_image(store, None, platform=Platform("linux", arch),
                                  layers=[busybox_layer_tar(), file_tar("arch", arch.encode())])
    index = Index.build([images[a].descriptor.with_platform(Platform("linux", a))
                         for a in ("amd64", "arm64")])
    desc = store.put_manifest(index)
    store.add(desc, Reference.parse(name))
    return index, images


def test_multi_platform_index_copy_then_pull_right_platform(plain_registry: Registry,
                                                            env: Path) -> None:
    store = Store(env / "store")
    index, images = _multi_platform(store, "multi:1")
    target = f"{plain_registry.addr}/{unique_repo()}:multi"
    result = transfer.copy(transfer.StoreEnd(store, "multi:1"), transfer.parse_end(target),
                           all_platforms=True)
    assert result.descriptor.digest == index.digest

    for arch in ("arm64", "amd64"):
        dst = Store(env / f"pull-{arch}")
        img = transfer.pull(dst, target, platform=Platform("linux", arch))
        assert img.descriptor.digest == images[arch].descriptor.digest
        assert img.config.platform.architecture == arch
        # Only that platform's blobs came down.
        other = images["amd64" if arch == "arm64" else "arm64"]
        assert not dst.has_blob(other.layers[1].digest)
    with pytest.raises(NotFound, match="no matching manifest for linux/s390x"):
        transfer.pull(Store(env / "none"), target, platform=Platform("linux", "s390x"))
    everything = Store(env / "all")
    transfer.pull(everything, target, all_platforms=True)
    assert everything.resolve(target).descriptor.digest == images[Platform.host().architecture].descriptor.digest
    assert everything.lookup(target).descriptor.digest == index.digest


def test_oci_layout_round_trip_judged_by_umoci(env: Path) -> None:
    store = Store(env / "store")
    image = two_layer_image(store, "app:1")
    layout = env / "layout"
    transfer.copy(transfer.StoreEnd(store, "app:1"), transfer.parse_end(f"oci:{layout}:v1"))
    assert sorted(p.name for p in layout.iterdir()) == ["blobs", "index.json", "oci-layout"]
    assert _validate_layout(layout, "v1").digest == image.descriptor.digest
    index = json.loads((layout / "index.json").read_bytes())
    assert index["manifests"][0]["annotations"] == {"org.opencontainers.image.ref.name": "v1"}
    out = subprocess.run(["umoci", "stat", "--json", "--image", f"{layout}:v1"],
                         capture_output=True, text=True, check=True)
    assert len(json.loads(out.stdout)["history"]) == 2
    back = Store(env / "back")
    dst = transfer.StoreEnd(back, "again:1", Reference.parse("again:1"))
    result = transfer.copy(transfer.parse_end(f"oci:{layout}:v1"), dst)
    assert result.descriptor.digest == image.descriptor.digest
    blobs_ok(back, back.resolve("again:1"))


SCHEMAS = Path(__file__).resolve().parents[2] / "testdata" / "oci-schema"


def schema_validate(doc: Any, schema_file: str) -> None:
    """Validate a JSON document against the vendored OCI image-spec schema (refs resolved
    from the same directory)."""
    from jsonschema import Draft4Validator
    from referencing import Registry as SchemaRegistry
    from referencing import Resource
    from referencing.jsonschema import DRAFT4

    def retrieve(uri: str) -> Resource[Any]:
        name = uri.rsplit("/", 1)[-1].split("#")[0]
        return Resource.from_contents(json.loads((SCHEMAS / name).read_text()),
                                      default_specification=DRAFT4)

    schema = json.loads((SCHEMAS / schema_file).read_text())
    Draft4Validator(schema, registry=SchemaRegistry(retrieve=retrieve)).validate(doc)


def _validate_layout(layout: Path, tag: str) -> Manifest:
    """An OCI layout validates: schemas for oci-layout, index, manifest and config; every blob
    hashes to its name; the tag resolves; umoci reads it."""
    schema_validate(json.loads((layout / "oci-layout").read_bytes()), "image-layout-schema.json")
    for blob in (layout / "blobs" / "sha256").iterdir():
        with open(blob, "rb") as f:
            assert Digest.of_stream(f)[0] == Digest("sha256", blob.name)
    index = json.loads((layout / "index.json").read_bytes())
    schema_validate(index, "image-index-schema.json")
    entry = next(e for e in index["manifests"]
                 if e["annotations"]["org.opencontainers.image.ref.name"] == tag)
    raw = (layout / "blobs" / "sha256" / Digest.parse(entry["digest"]).encoded).read_bytes()
    schema_validate(json.loads(raw), "image-manifest-schema.json")
    manifest = Manifest.parse(raw, entry["mediaType"])
    config = (layout / "blobs" / "sha256" / manifest.config.digest.encoded).read_bytes()
    schema_validate(json.loads(config), "config-schema.json")
    subprocess.run(["umoci", "stat", "--image", f"{layout}:{tag}"], capture_output=True, check=True)
    return manifest


@pytest.mark.parametrize("docker", [False, True], ids=["oci", "docker-v2"])
def test_skopeo_pulls_what_we_pushed(docker: bool, plain_registry: Registry, env: Path) -> None:
    store = Store(env / "store")
    image = two_layer_image(store, "app:1", docker=docker)
    target = f"{plain_registry.addr}/{unique_repo()}:v1"
    transfer.push(store, "app:1", target)
    layout = env / "skopeo-layout"
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{target}",
                    f"oci:{layout}:v1"], check=True, capture_output=True, timeout=120)
    manifest = _validate_layout(layout, "v1")
    assert [d.digest for d in manifest.layers] == [d.digest for d in image.layers]
    if not docker:  # skopeo keeps an OCI manifest byte for byte (a Docker one it converts)
        assert manifest.digest == image.descriptor.digest
        assert manifest.config.digest == image.manifest.config.digest
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{target}"],
                         check=True, capture_output=True, timeout=60).stdout
    assert Digest.of(raw) == image.descriptor.digest


def test_we_pull_what_skopeo_pushed(plain_registry: Registry, env: Path) -> None:
    store = Store(env / "store")
    two_layer_image(store, "app:1")
    layout = env / "layout"
    transfer.copy(transfer.StoreEnd(store, "app:1"), transfer.parse_end(f"oci:{layout}:v1"))
    target = f"{plain_registry.addr}/{unique_repo()}:skopeo"
    # skopeo converts to Docker schema 2 here, so the digest is skopeo's own manifest's.
    subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", "--format", "v2s2",
                    f"oci:{layout}:v1", f"docker://{target}"], check=True, capture_output=True,
                   timeout=120)
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{target}"],
                         check=True, capture_output=True, timeout=60).stdout
    assert json.loads(raw)["mediaType"] == mt.DOCKER_MANIFEST
    dst = Store(env / "dst")
    pulled = transfer.pull(dst, target)
    assert pulled.descriptor.digest == Digest.of(raw)
    assert dst.read_blob(pulled.descriptor.digest) == raw
    blobs_ok(dst, pulled)
    # ...and round-trips: pushed back by us to another repository, the same bytes.
    again = f"{plain_registry.addr}/{unique_repo()}:back"
    assert transfer.push(dst, target, again).descriptor.digest == Digest.of(raw)
    raw2 = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{again}"],
                          check=True, capture_output=True, timeout=60).stdout
    assert raw2 == raw


def test_unknown_tag_and_repository_are_not_found(plain_registry: Registry, env: Path) -> None:
    store = Store(env / "store")
    two_layer_image(store, "app:1")
    repo = unique_repo()
    transfer.push(store, "app:1", f"{plain_registry.addr}/{repo}:v1")
    with pytest.raises(ManifestUnknown, match="not found: manifest unknown"):
        transfer.pull(store, f"{plain_registry.addr}/{repo}:nope")
    with pytest.raises(NotFound, match="not found"):
        transfer.pull(store, f"{plain_registry.addr}/{unique_repo()}:v1")


def test_pull_only_token_cannot_push(token_registry: Registry, env: Path) -> None:
    DockerConfig.load().store(token_registry.addr, Credentials("reader", TOKEN_USERS["reader"][0]))
    store = Store(env / "store")
    two_layer_image(store, "app:1")
    with pytest.raises(Unauthorized, match=f"unauthorized: .*{token_registry.addr}"):
        transfer.push(store, "app:1", f"{token_registry.addr}/{unique_repo()}:v1")
    # The token server was asked for push and granted pull only.
    asked = [r for r in token_registry.token.requests if r["user"] == "reader"]  # type: ignore[union-attr]
    assert any("push" in s for r in asked for s in r["scopes"])


def test_anonymous_pull_from_token_registry_is_unauthorized(token_registry: Registry,
                                                            env: Path) -> None:
    with pytest.raises(Unauthorized, match="run pybuild login"):
        transfer.pull(Store(env / "s"), f"{token_registry.addr}/{unique_repo()}:v1")


def test_basic_auth_wrong_password_is_unauthorized(basic_registry: Registry, env: Path) -> None:
    DockerConfig.load().store(basic_registry.addr, Credentials("alice", "wrong"))
    with pytest.raises(Unauthorized, match="unauthorized"):
        transfer.pull(Store(env / "s"), f"{basic_registry.addr}/{unique_repo()}:v1")
    assert BASIC_USERS["alice"] != "wrong"


# -- faults --------------------------------------------------------------------------------------
FAST = {"backoff": Backoff(attempts=6, base=0.05, cap=0.2)}


def _proxy_ref(proxy: FaultProxy, repo: str, tag: str = "v1") -> str:
    return f"{proxy.addr}/{repo}:{tag}"


def test_pull_survives_cuts_500s_and_429(fault_proxy: FaultProxy, plain_registry: Registry,
                                        env: Path) -> None:
    store = Store(env / "store")
    big = file_tar("big.bin", os.urandom(3 << 20))
    image = make_image(store, "app:1", layers=[busybox_layer_tar(), big])
    repo = unique_repo()
    transfer.push(store, "app:1", f"{plain_registry.addr}/{repo}:v1")
    big_digest = image.layers[1].digest
    fault_proxy.add(
        Fault("GET", "/manifests/", "status", status=500, times=2),
        Fault("GET", "/manifests/", "cut", after=50, times=1),
        Fault("GET", f"/blobs/{big_digest}", "cut", after=1 << 20, times=2),
        Fault("GET", "/blobs/", "status", status=429, retry_after="1", times=1),
    )
    events: list[transfer.Event] = []
    dst = Store(env / "dst")
    end = transfer.remote_end(_proxy_ref(fault_proxy, repo), **FAST)
    started = time.monotonic()
    result = transfer.copy(end, transfer.StoreEnd(dst, "x:1", Reference.parse("x:1")),
                           progress=events.append)
    assert time.monotonic() - started >= 1.0  # Retry-After was honoured
    assert result.descriptor.digest == image.descriptor.digest
    blobs_ok(dst, dst.resolve("x:1"))
    assert all(f.times == 0 for f in fault_proxy.faults), fault_proxy.faults
    # Resumed with Range requests, not restarted: the big blob came down about once.
    cut = [e for e in fault_proxy.log if e[2] == "cut" and "/blobs/" in e[1]]
    assert len(cut) == 2
    assert sum(1 for e in events if e.kind == "retry") >= 4


def test_push_survives_failed_and_cut_chunks(fault_proxy: FaultProxy, plain_registry: Registry,
                                             env: Path) -> None:
    store = Store(env / "store")
    image = make_image(store, "app:1", layers=[busybox_layer_tar(),
                                               file_tar("big.bin", os.urandom(3 << 20))])
    repo = unique_repo()
    fault_proxy.add(
        Fault("PATCH", "/blobs/uploads/", "status", status=500, times=1),
        Fault("PATCH", "/blobs/uploads/", "cut_request", after=100_000, times=1),
        Fault("HEAD", "/blobs/", "status", status=429, retry_after="0", times=2),
        Fault("PUT", "/manifests/", "status", status=502, times=1),
    )
    end = transfer.remote_end(_proxy_ref(fault_proxy, repo), chunk_size=512 << 10, **FAST)
    events: list[transfer.Event] = []
    result = transfer.copy(transfer.StoreEnd(store, "app:1"), end, progress=events.append,
                           max_concurrent=2)
    assert result.descriptor.digest == image.descriptor.digest
    assert all(f.times == 0 for f in fault_proxy.faults), fault_proxy.faults
    patches = [e for e in fault_proxy.log if e[0] == "PATCH"]
    assert len(patches) > 5  # the big layer went up in chunks
    # After the failed chunk the client asked the registry where the upload stood.
    assert any(m == "GET" and "/blobs/uploads/" in t for m, t, _ in fault_proxy.log)
    # Straight from the registry (no proxy): the content is right.
    dst = Store(env / "dst")
    pulled = transfer.pull(dst, f"{plain_registry.addr}/{repo}:v1")
    assert pulled.descriptor.digest == image.descriptor.digest
    blobs_ok(dst, pulled)


def test_corrupted_blob_fails_with_digest_error_and_store_unchanged(
        fault_proxy: FaultProxy, plain_registry: Registry, env: Path) -> None:
    store = Store(env / "store")
    make_image(store, "base:1")
    pushed = Store(env / "pushed")
    image = two_layer_image(pushed, "app:1")
    repo = unique_repo()
    transfer.push(pushed, "app:1", f"{plain_registry.addr}/{repo}:v1")
    before = listing(store.path)
    fault_proxy.add(Fault("GET", f"/blobs/{image.layers[1].digest}", "corrupt", after=1000,
                          times=100))
    with pytest.raises(DigestError, match="digest mismatch"):
        transfer.pull(store, _proxy_ref(fault_proxy, repo), tls_verify=True)
    assert listing(store.path) == before
    with pytest.raises(NotFound):
        store.lookup(_proxy_ref(fault_proxy, repo))


def test_corrupted_manifest_is_rejected(fault_proxy: FaultProxy, plain_registry: Registry,
                                        env: Path) -> None:
    store = Store(env / "store")
    image = two_layer_image(store, "app:1")
    repo = unique_repo()
    transfer.push(store, "app:1", f"{plain_registry.addr}/{repo}:v1")
    fault_proxy.add(Fault("GET", "/manifests/", "corrupt", after=5, times=100))
    dst = Store(env / "dst")
    with pytest.raises(DigestError):
        transfer.pull(dst, f"{fault_proxy.addr}/{repo}@{image.descriptor.digest}")
    with pytest.raises(DigestError):
        transfer.pull(dst, _proxy_ref(fault_proxy, repo))
    assert not dst.has_blob(image.descriptor.digest)


# -- archives ------------------------------------------------------------------------------------
def test_oci_archive_both_ways_judged_by_skopeo(plain_registry: Registry, env: Path) -> None:
    store = Store(env / "store")
    image = two_layer_image(store, "app:1")
    archive = env / "app.oci.tar"
    transfer.copy(transfer.StoreEnd(store, "app:1"), transfer.parse_end(f"oci-archive:{archive}:v1"))
    assert sorted(p.name for p in env.iterdir() if p.name.startswith(".")) == []  # no staging left
    raw = subprocess.run(["skopeo", "inspect", "--raw", f"oci-archive:{archive}:v1"],
                         check=True, capture_output=True, timeout=60).stdout
    assert Digest.of(raw) == image.descriptor.digest
    # skopeo writes one; we read it, straight to a registry.
    theirs = env / "skopeo.oci.tar"
    subprocess.run(["skopeo", "copy", f"oci-archive:{archive}:v1", f"oci-archive:{theirs}:t"],
                   check=True, capture_output=True, timeout=60)
    target = f"{plain_registry.addr}/{unique_repo()}:v1"
    result = transfer.copy(transfer.parse_end(f"oci-archive:{theirs}:t"),
                           transfer.parse_end(target, role="destination"))
    assert result.descriptor.digest == image.descriptor.digest
    assert transfer.pull(Store(env / "dst"), target).descriptor.digest == image.descriptor.digest


def test_docker_archive_destination_and_source(plain_registry: Registry, env: Path) -> None:
    store = Store(env / "store")
    image = two_layer_image(store, "app:1")
    target = f"{plain_registry.addr}/{unique_repo()}:v1"
    transfer.push(store, "app:1", target)
    archive = env / "app.docker.tar"
    transfer.copy(transfer.parse_end(target),
                  transfer.parse_end(f"docker-archive:{archive}:app:saved", role="destination"))
    info = json.loads(subprocess.run(["skopeo", "inspect", f"docker-archive:{archive}"], check=True,
                                     capture_output=True, timeout=60).stdout)
    assert len(info["Layers"]) == 2
    back = Store(env / "back")
    transfer.copy(transfer.parse_end(f"docker-archive:{archive}:app:saved"),
                  transfer.StoreEnd(back, "back:1", Reference.parse("back:1")))
    assert back.resolve("back:1").diff_ids == image.diff_ids
    with pytest.raises(NotFound, match="no such image in the archive"):
        transfer.copy(transfer.parse_end(f"docker-archive:{archive}:other:1"),
                      transfer.StoreEnd(back, "x:1", Reference.parse("x:1")))


def test_archive_destination_in_missing_directory_writes_nothing(env: Path) -> None:
    from registry.errors import ArchiveError

    store = Store(env / "store")
    two_layer_image(store, "app:1")
    with pytest.raises(ArchiveError, match="does not exist"):
        transfer.copy(transfer.StoreEnd(store, "app:1"),
                      transfer.parse_end(f"oci-archive:{env}/missing/x.tar"))
    assert not (env / "missing").exists()


def test_pull_by_digest_of_an_index_is_found_again(plain_registry: Registry, env: Path) -> None:
    store = Store(env / "store")
    index, images = _multi_platform(store, "multi:1")
    repo = f"{plain_registry.addr}/{unique_repo()}"
    transfer.copy(transfer.StoreEnd(store, "multi:1"), transfer.parse_end(f"{repo}:m"),
                  all_platforms=True)
    dst = Store(env / "dst")
    by_digest = f"{repo}@{index.digest}"
    img = transfer.pull(dst, by_digest, platform=Platform("linux", "arm64"))
    assert img.descriptor.digest == images["arm64"].descriptor.digest
    assert dst.resolve(by_digest).descriptor.digest == images["arm64"].descriptor.digest


def test_layout_with_several_images_needs_a_tag(env: Path) -> None:
    store = Store(env / "store")
    two_layer_image(store, "a:1")
    two_layer_image(store, "b:1")
    layout = env / "layout"
    for name, tag in (("a:1", "one"), ("b:1", "two")):
        transfer.copy(transfer.StoreEnd(store, name), transfer.parse_end(f"oci:{layout}:{tag}"))
    with pytest.raises(NotFound, match="several images; name a tag"):
        transfer.copy(transfer.parse_end(f"oci:{layout}"), transfer.parse_end(f"oci:{env}/x"))
    with pytest.raises(NotFound, match="no such tag"):
        transfer.copy(transfer.parse_end(f"oci:{layout}:three"), transfer.parse_end(f"oci:{env}/x"))
    assert len(json.loads((layout / "index.json").read_text())["manifests"]) == 2
    assert not (env / "x").exists()  # the failed copies left no half-made layout
    with pytest.raises(NotFound, match="is not an OCI layout"):
        transfer.copy(transfer.parse_end(f"oci:{env}/nowhere:1"), transfer.StoreEnd(store, "a:1"))
    assert not (env / "nowhere").exists()


def test_a_pull_parses_its_reference_once(plain_registry: Registry, env: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Text is parsed at the edge, once; a ``Reference`` goes through pull, the remote end and
    the store end as the value it is (no str -> parse round trips on the way)."""
    src = Store(env / "src")
    image = two_layer_image(src, "app:1")
    target = f"{plain_registry.addr}/{unique_repo()}:v1"
    transfer.push(src, "app:1", Reference.parse(target))
    parsed: list[str] = []
    real = Reference.parse.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Reference], text: str, *args: Any, **kw: Any) -> Reference:
        if text.endswith(target.rpartition("/")[2]):
            parsed.append(text)
        return real(cls, text, *args, **kw)  # type: ignore[no-any-return]

    monkeypatch.setattr(Reference, "parse", classmethod(counting))
    ref = real(Reference, target)
    pulled = transfer.pull(Store(env / "a"), ref)
    assert pulled.descriptor.digest == image.descriptor.digest and pulled.reference is ref
    assert parsed == []
    transfer.pull(Store(env / "b"), target)
    assert parsed == [target]


def test_pull_counts_layer_sizes_as_they_arrive(plain_registry: Registry, env: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A pull counts each layer's content size (the image's SIZE) while downloading it: the
    store does not read the layers again through tarfile to tag the image."""
    import tarfile

    src = Store(env / "src")
    made = two_layer_image(src, "app:1")
    target = f"{plain_registry.addr}/{unique_repo()}:v1"
    transfer.push(src, "app:1", target)
    want = [src.content_size(d) for d in made.layers]

    def no_reread(*_a: object, **_k: object) -> None:
        raise tarfile.TarError("read again")

    monkeypatch.setattr(tarfile, "open", no_reread)
    dst = Store(env / "dst")
    pulled = transfer.pull(dst, target)
    blobs_ok(dst, pulled)
    assert [dst.content_size(d) for d in pulled.layers] == want
    assert dst.lookup(target).size == sum(want)
