"""``--cache-from`` when the cache is not what it should be: a missing ref, a corrupt record, a
missing or digest-mismatched blob, a registry answering 500. Each is one warning line and a
correct build from source. Two runners exporting to one ref at once leave a valid cache; an
image Docker built with ``BUILDKIT_INLINE_CACHE=1`` is accepted as a source."""

# ruff: noqa: F811 - the registry fixtures are imported, then named as test parameters
from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "registry"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import build as bt_build  # noqa: E402
from registry_server import (  # noqa: E402,F401 - fixtures come in by import
    Fault,
    FaultProxy,
    Registry,
    fault_proxy,
    plain_registry,
    registry_tmp,
    unique_repo,
)
from test_cache_share import (  # noqa: E402,F401 - the runners and their base image
    base_archive,
    context,
    hits,
    image_digest,
    runner,
    started,
    warnings,
)

from registry.digest import Digest  # noqa: E402

PROJECT = """\
FROM busybox AS deps
RUN echo dep > /dep
FROM busybox
COPY --from=deps /dep /dep
COPY a.txt /a.txt
RUN cat /dep /a.txt > /out
CMD ["cat", "/out"]
"""
STEPS = 4


def assert_built_from_source(b: Any, bt: Any, ev: list[dict[str, Any]], tmp_path: Path, what: str) -> None:
    """One warning naming *what*, and an image with the right files."""
    warned = warnings(ev)
    assert len(warned) == 1 and "\n" not in warned[0] and what in warned[0], warned
    assert "building without it" in warned[0]
    root = bt.rootfs(b, "app:1", tmp_path / "fs")
    assert (root / "out").read_text() == "dep\na1\n"


@pytest.fixture
def exported(pybuild_factory: Callable[[], Any], base_archive: Path, bt: Any, tmp_path: Path,
             fault_proxy: FaultProxy) -> dict[str, Any]:
    a = runner(pybuild_factory, base_archive)
    ctx = context(tmp_path, PROJECT)
    ref = f"{fault_proxy.addr}/{unique_repo('cache')}:cache"
    bt.build(a, ctx, "-t", "app:1", "--cache-to", f"type=registry,ref={ref},mode=max")
    img = a.store().resolve("app:1")
    base = {d.digest for d in a.store().resolve("busybox:latest").manifest.layers}
    return {"a": a, "ctx": ctx, "ref": ref, "digest": str(img.descriptor.digest),
            "layers": [d for d in img.manifest.layers if d.digest not in base]}


def test_a_ref_that_does_not_exist(pybuild_factory: Callable[[], Any], base_archive: Path, bt: Any,
                                   tmp_path: Path, plain_registry: Registry) -> None:
    b = runner(pybuild_factory, base_archive)
    ref = f"{plain_registry.addr}/{unique_repo('nothing')}:cache"
    _, ev = bt.build(b, context(tmp_path, PROJECT), "-t", "app:1", "--cache-from", ref)
    assert len(started(ev)) == STEPS
    assert_built_from_source(b, bt, ev, tmp_path, ref)


def test_a_corrupt_record(pybuild_factory: Callable[[], Any], base_archive: Path, bt: Any,
                          tmp_path: Path, plain_registry: Registry) -> None:
    from registry import mediatypes as mt
    from registry.model import Descriptor, Manifest
    from registry.transfer import remote_end

    ref = f"{plain_registry.addr}/{unique_repo('corrupt')}:cache"
    repo = remote_end(ref).repo
    repo.want_push()
    raw = b'{"schema":1,"records":[{"key":"not-a-key","parent":"","layer":7}],"layers":[]}'
    cfg = Descriptor("application/vnd.pybuild.buildcache.config.v1+json", Digest.of(raw), len(raw))
    repo.push_blob(cfg.digest, cfg.size, lambda off: io.BytesIO(raw[off:]))
    repo.put_manifest(Manifest.build(cfg, []).raw, mt.OCI_MANIFEST, "cache")
    b = runner(pybuild_factory, base_archive)
    _, ev = bt.build(b, context(tmp_path, PROJECT), "-t", "app:1", "--cache-from", ref)
    assert len(started(ev)) == STEPS
    assert_built_from_source(b, bt, ev, tmp_path, "corrupt cache record")


@pytest.mark.parametrize("fault", ["corrupt", "missing"])
def test_a_bad_layer_blob(exported: dict[str, Any], pybuild_factory: Callable[[], Any],
                          base_archive: Path, bt: Any, tmp_path: Path, fault_proxy: FaultProxy,
                          fault: str) -> None:
    """The records load, the steps hit; then a layer the image needs comes back wrong (a flipped
    byte) or not at all: the build starts again without the cache and gives a correct image."""
    layer = exported["layers"][-1]
    path = f"/blobs/{layer.digest}"
    if fault == "corrupt":
        fault_proxy.add(Fault("GET", path, "corrupt", after=20, times=100))
    else:
        fault_proxy.add(Fault("GET", path, "status", status=404, times=100))
    b = runner(pybuild_factory, base_archive)
    _, ev = bt.build(b, exported["ctx"], "-t", "app:1", "--cache-from", exported["ref"])
    assert_built_from_source(b, bt, ev, tmp_path, str(layer.digest))
    assert len(started(ev)) >= 1
    store = b.store()
    for d in store.resolve("app:1").manifest.layers:  # every blob the image names is whole
        assert Digest.of(store.blob_path(d.digest).read_bytes()) == d.digest


def test_a_registry_answering_500(exported: dict[str, Any], pybuild_factory: Callable[[], Any],
                                  base_archive: Path, bt: Any, tmp_path: Path,
                                  fault_proxy: FaultProxy) -> None:
    fault_proxy.add(Fault(None, "/manifests/", "status", status=500, times=100))
    b = runner(pybuild_factory, base_archive)
    _, ev = bt.build(b, exported["ctx"], "-t", "app:1", "--cache-from", exported["ref"])
    assert len(started(ev)) == STEPS
    assert_built_from_source(b, bt, ev, tmp_path, "500")


def test_two_runners_exporting_to_one_ref_at_once(pybuild_factory: Callable[[], Any],
                                                  base_archive: Path, bt: Any, tmp_path: Path,
                                                  plain_registry: Registry) -> None:
    ctx = context(tmp_path, PROJECT)
    ref = f"{plain_registry.addr}/{unique_repo('race')}:cache"
    runners = [runner(pybuild_factory, base_archive) for _ in range(2)]
    procs = [subprocess.Popen([*r.command, "--root", str(r.root), "build", "--progress=plain",
                               "-t", "app:1", "--cache-to", f"type=registry,ref={ref},mode=max",
                               str(ctx)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for r in runners]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    b = runner(pybuild_factory, base_archive)
    _, ev = bt.build(b, ctx, "-t", "app:1", "--cache-from", ref)
    assert warnings(ev) == [] and started(ev) == [] and len(hits(ev)) == STEPS
    assert image_digest(b, "app:1") in {image_digest(r, "app:1") for r in runners}


def test_docker_inline_cache_image_is_accepted(pybuild_factory: Callable[[], Any],
                                               base_archive: Path, bt: Any, tmp_path: Path,
                                               plain_registry: Registry, dockerd: Any) -> None:
    dockerd.docker("load", "-i", str(base_archive))
    ctx = context(tmp_path, PROJECT)
    tag = f"inline-{unique_repo('dk').replace('/', '-')}:1"
    r = dockerd.docker("build", "--network", "none", "--build-arg", "BUILDKIT_INLINE_CACHE=1",
                       "-t", tag, str(ctx), env={"DOCKER_BUILDKIT": "1"}, check=False, timeout=180)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-2000:]
    saved = tmp_path / "docker.tar"
    dockerd.docker("save", "-o", str(saved), tag)
    dockerd.docker("rmi", "-f", tag, check=False)
    c = runner(pybuild_factory, base_archive)
    c("load", "-i", str(saved))
    assert "moby.buildkit.cache.v0" in c.store().resolve(tag).config.data  # BuildKit's inline cache
    ref = f"{plain_registry.addr}/{unique_repo('dk')}:1"
    c("tag", tag, ref)
    c("push", ref)
    b = runner(pybuild_factory, base_archive)
    _, ev = bt_build(b, ctx, "-t", "app:1", "--cache-from", ref)
    assert warnings(ev) == []
    assert (bt.rootfs(b, "app:1", tmp_path / "fs") / "out").read_text() == "dep\na1\n"
