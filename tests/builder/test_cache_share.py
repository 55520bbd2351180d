"""A build cache shared through a registry (``build --cache-to/--cache-from``): two state roots
stand for two CI runners, the registry is the real ``docker-registry`` the tests start."""

# ruff: noqa: F811 - the registry fixtures are imported, then named as test parameters
from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "registry"))

from registry_server import (  # noqa: E402,F401 - fixtures come in by import
    Registry,
    plain_registry,
    registry_tmp,
    unique_repo,
)

DOCKERFILE = """\
FROM busybox AS deps
RUN --mount=type=cache,id=proof,target=/proof echo ran >> /proof/runs; echo dep > /dep
RUN echo more > /more

FROM busybox AS build
COPY --from=deps /dep /dep
COPY a.txt /a.txt
RUN --mount=type=cache,id=proof,target=/proof echo ran >> /proof/runs; cat /dep /a.txt > /out

FROM busybox
COPY --from=build /out /out
COPY b.txt /b.txt
RUN --mount=type=cache,id=proof,target=/proof echo ran >> /proof/runs; cat /b.txt > /b.copy
CMD ["cat", "/out"]
"""


@pytest.fixture(scope="module")
def base_archive(busybox_tar: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One busybox image, as a docker archive every runner loads (the same image ID on each)."""
    from registry import archive
    from registry.reference import Reference
    from registry.store import Store

    d = tmp_path_factory.mktemp("base")
    store = Store(d / "store")
    img = archive.import_rootfs(store, busybox_tar, reference=Reference.parse("busybox:latest"),
                                config={"Cmd": ["sh"]})
    out = d / "busybox.tar"
    with open(out, "wb") as f:
        archive.save_image(store, store.resolve("busybox:latest").descriptor,
                           [Reference.parse("busybox:latest")], f, format=archive.DOCKER_ARCHIVE)
    assert img is not None
    return out


def runner(make: Callable[[], Any], base: Path) -> Any:
    """A fresh state root (a CI runner) with the base image loaded."""
    pyb = make()
    pyb("load", "-i", str(base))
    return pyb


def context(tmp_path: Path, dockerfile: str = DOCKERFILE) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / "a.txt").write_text("a1\n")
    (ctx / "b.txt").write_text("b1\n")
    return ctx


def proof_runs(pyb: Any) -> int:
    """How many RUN steps wrote to the ``proof`` cache mount on this runner (outside any layer)."""
    from builder.imagebuild.cacheshare.source import mount_dir

    f = mount_dir(pyb.state, "proof") / "runs"
    return len(f.read_text().splitlines()) if f.exists() else 0


def started(events: list[dict[str, Any]]) -> list[str]:
    return [e["name"].split("] ", 1)[1] for e in events if e["kind"] == "start"]


def hits(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] == "cached" and " FROM " not in e["name"]]


def warnings(events: list[dict[str, Any]]) -> list[str]:
    return [e["text"] for e in events if e["kind"] == "warning"]


def image_digest(pyb: Any, ref: str) -> str:
    return str(pyb.store().resolve(ref).descriptor.digest)


@pytest.fixture
def exported(pybuild_factory: Callable[[], Any], base_archive: Path, bt: Any, tmp_path: Path,
             plain_registry: Registry) -> dict[str, Any]:
    """Runner A built the project and exported its cache with mode=max."""
    a = runner(pybuild_factory, base_archive)
    ctx = context(tmp_path)
    ref = f"{plain_registry.addr}/{unique_repo('cache')}:cache"
    _, ev = bt.build(a, ctx, "-t", "app:1", "--cache-to", f"type=registry,ref={ref},mode=max")
    assert len(started(ev)) == 8
    assert proof_runs(a) == 3
    return {"a": a, "ctx": ctx, "ref": ref, "digest": image_digest(a, "app:1")}


def test_runner_b_takes_every_step_from_the_registry(exported: dict[str, Any], base_archive: Path,
                                                     pybuild_factory: Callable[[], Any], bt: Any,
                                                     plain_registry: Registry) -> None:
    b = runner(pybuild_factory, base_archive)
    r, ev = bt.build(b, exported["ctx"], "-t", "app:1", "--cache-from", exported["ref"])
    assert warnings(ev) == []
    assert started(ev) == [], [(e["kind"], e["text"]) for e in ev if e["kind"] in ("miss", "warning")]
    assert len(hits(ev)) == 8
    host_repo_tag = exported["ref"]
    assert all(e["text"] == f"registry {host_repo_tag}" for e in hits(ev))
    assert proof_runs(b) == 0  # no RUN ran on B: the cache mount it would write is untouched
    assert image_digest(b, "app:1") == exported["digest"]
    # lazy: the stages no image carries were never downloaded (their layers are not in B's root)
    a_store, b_store = exported["a"].store(), b.store()
    img = b_store.resolve("app:1")
    assert all(b_store.has_blob(d.digest) for d in img.manifest.layers)
    from builder.imagebuild.cacheshare.source import load
    from builder.imagebuild.cacheshare.spec import parse_cache_spec

    shared = load(parse_cache_spec(exported["ref"], export=False), b.state).config
    others = [d for d in shared.layers if d not in img.manifest.layers]
    assert others and not any(b_store.has_blob(d.digest) for d in others)
    # plain progress names the source
    out = b("build", "--progress=plain", "-t", "app:2", str(exported["ctx"]),
            "--cache-from", f"type=registry,ref={exported['ref']}")
    # (the records whose layers B fetched are local now: plain CACHED; the others still say
    # where they come from)
    assert out.stderr.count(" CACHED") == 9
    assert out.stderr.count(f" CACHED (registry {exported['ref']})") == 5
    assert " DONE " not in out.stderr
    assert a_store.resolve("app:1").id == b_store.resolve("app:2").id


def test_one_changed_file_reruns_only_the_steps_after_it(exported: dict[str, Any], base_archive: Path,
                                                          pybuild_factory: Callable[[], Any],
                                                          bt: Any) -> None:
    b = runner(pybuild_factory, base_archive)
    ctx = exported["ctx"]
    (ctx / "b.txt").write_text("b2\n")
    _, ev = bt.build(b, ctx, "-t", "app:1", "--cache-from", exported["ref"])
    assert started(ev) == ["COPY b.txt /b.txt",
                           "RUN --mount=type=cache,id=proof,target=/proof echo ran >> /proof/runs; "
                           "cat /b.txt > /b.copy"]
    assert proof_runs(b) == 1
    # the cache-miss explanation reads the imported record's inputs
    misses = [e["text"] for e in ev if e["kind"] == "miss"]
    assert misses == ["files changed: b.txt"]
    root = bt.rootfs(b, "app:1", Path(str(ctx) + "-fs"))
    assert (root / "b.copy").read_text() == "b2\n"
    assert (root / "out").read_text() == "dep\na1\n"


def test_mode_min_exports_only_the_image_stages(pybuild_factory: Callable[[], Any], base_archive: Path,
                                                bt: Any, tmp_path: Path,
                                                plain_registry: Registry) -> None:
    a = runner(pybuild_factory, base_archive)
    ctx = context(tmp_path)
    ref = f"{plain_registry.addr}/{unique_repo('cache')}:min"
    bt.build(a, ctx, "-t", "app:1", "--cache-to", f"type=registry,ref={ref}")
    b = runner(pybuild_factory, base_archive)
    _, ev = bt.build(b, ctx, "-t", "app:1", "--cache-from", f"type=registry,ref={ref}")
    # the final stage reads the build stage's content: that stage ran again, and from the same
    # files the final stage's records hit
    assert len(started(ev)) == 5
    assert [e["name"].split("] ", 1)[1] for e in hits(ev) if "registry" in e["text"]] == [
        "COPY --from=build /out /out", "COPY b.txt /b.txt",
        "RUN --mount=type=cache,id=proof,target=/proof echo ran >> /proof/runs; cat /b.txt > /b.copy"]
    assert image_digest(b, "app:1") == image_digest(a, "app:1")


def test_the_artifact_is_an_oci_manifest_with_a_config_of_records(exported: dict[str, Any],
                                                                  plain_registry: Registry) -> None:
    import requests

    from registry.reference import Reference

    ref = Reference.parse(exported["ref"])
    base = f"http://{plain_registry.addr}/v2/{ref.path}"
    m = requests.get(f"{base}/manifests/{ref.tag}", timeout=10,
                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert m.status_code == 200
    manifest = m.json()
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.pybuild.buildcache.config.v1+json"
    config = requests.get(f"{base}/blobs/{manifest['config']['digest']}", timeout=10).json()
    assert config["schema"] == 1
    keys = {r["key"] for r in config["records"]}
    local = {rec.key for rec in _local_records(exported["a"])}
    assert keys == local  # the same content keys as the local cache
    text = json.dumps(config)
    assert str(exported["a"].root) not in text  # no host path
    assert all(r["layer"] is None or 0 <= r["layer"] < len(manifest["layers"]) for r in config["records"])
    # every layer in the export's compression (intermediate stages' too)
    assert {d["mediaType"] for d in manifest["layers"]} == {"application/vnd.oci.image.layer.v1.tar+gzip"}
    # skopeo takes it unchanged: the manifest byte for byte, every blob copied to a layout
    import subprocess

    raw = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"],
                         capture_output=True, check=True, timeout=60).stdout
    assert raw == m.content
    layout = exported["ctx"].parent / "skopeo-layout"
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:c"],
                   capture_output=True, check=True, timeout=120)
    for d in [manifest["config"], *manifest["layers"]]:
        assert (layout / "blobs" / "sha256" / d["digest"].split(":")[1]).is_file()


def _local_records(pyb: Any) -> list[Any]:
    from builder.imagebuild.cache import BuildCache

    state = pyb.state
    return [r for r in BuildCache(state.cache, state.image_store()).inputs_index()]
