"""``--cache-to/--cache-from`` beyond the registry core: an OCI layout (``type=local``), inline
records in the pushed image (and that image under Docker), cache mounts exported and restored,
and a push from runner B that mounts what runner A pushed instead of uploading it."""

# ruff: noqa: F811 - the registry fixtures are imported, then named as test parameters
from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "registry"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from registry_server import (  # noqa: E402,F401 - fixtures come in by import
    FaultProxy,
    Registry,
    fault_proxy,
    plain_registry,
    registry_tmp,
    unique_repo,
)
from test_cache_share import (  # noqa: E402,F401 - the runners and their base image
    DOCKERFILE,
    base_archive,
    context,
    hits,
    image_digest,
    proof_runs,
    runner,
    started,
    warnings,
)

SINGLE = """\
FROM busybox
COPY a.txt /a.txt
RUN cat /a.txt > /a.copy
CMD ["cat", "/a.copy"]
"""


def test_local_layout_export_and_import(pybuild_factory: Callable[[], Any], base_archive: Path,
                                        bt: Any, tmp_path: Path) -> None:
    a = runner(pybuild_factory, base_archive)
    ctx = context(tmp_path)
    layout = tmp_path / "cache-layout"
    bt.build(a, ctx, "-t", "app:1", "--cache-to", f"type=local,dest={layout},mode=max")
    index = json.loads((layout / "index.json").read_text())
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert index["manifests"][0]["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    b = runner(pybuild_factory, base_archive)
    _, ev = bt.build(b, ctx, "-t", "app:1", "--cache-from", f"type=local,src={layout}")
    assert started(ev) == [] and proof_runs(b) == 0
    assert {e["text"] for e in hits(ev)} == {f"local {layout}"}
    assert image_digest(b, "app:1") == image_digest(a, "app:1")


def test_inline_cache_in_the_pushed_image(pybuild_factory: Callable[[], Any], base_archive: Path,
                                          bt: Any, tmp_path: Path, plain_registry: Registry,
                                          dockerd: Any) -> None:
    a = runner(pybuild_factory, base_archive)
    ctx = context(tmp_path, SINGLE)
    target = f"{plain_registry.addr}/{unique_repo('inline')}:1"
    bt.build(a, ctx, "-t", target, "--cache-to", "type=inline")
    config = a.store().resolve(target).config.data
    assert config["io.pybuild.cache.v1"]["records"]
    a("push", target)
    b = runner(pybuild_factory, base_archive)
    _, ev = bt.build(b, ctx, "-t", "app:1", "--cache-from", target)
    assert started(ev) == [] and warnings(ev) == []
    assert {e["text"] for e in hits(ev)} == {f"registry {target}"}
    # the inline image runs under Docker unchanged
    saved = tmp_path / "inline.tar"
    a("save", "-o", str(saved), target)
    dockerd.docker("load", "-i", str(saved))
    out = dockerd.docker("run", "--rm", "--network", "none", target).stdout.decode()
    assert out == "a1\n"
    dockerd.docker("rmi", "-f", target, check=False)


def test_cache_mounts_travel_with_the_cache(pybuild_factory: Callable[[], Any], base_archive: Path,
                                            bt: Any, tmp_path: Path, plain_registry: Registry) -> None:
    a = runner(pybuild_factory, base_archive)
    ctx = context(tmp_path, "FROM busybox\nRUN --mount=type=cache,id=wheels,target=/root/.cache "
                            "mkdir -p /root/.cache/pip && echo wheel-1.0 > /root/.cache/pip/w.whl\n")
    ref = f"{plain_registry.addr}/{unique_repo('mounts')}:cache"
    bt.build(a, ctx, "-t", "fill:1", "--cache-to", f"type=registry,ref={ref},mode=max,cache-mounts=true")
    b = runner(pybuild_factory, base_archive)
    from builder.imagebuild.cacheshare.source import mount_dir

    # a build whose steps mount no cache fetches none
    ctx3 = tmp_path / "ctx3"
    ctx3.mkdir()
    (ctx3 / "Dockerfile").write_text("FROM busybox\nCOPY Dockerfile /d\n")
    _, ev = bt.build(b, ctx3, "-t", "other:1", "--cache-from", f"type=registry,ref={ref}")
    assert started(ev) == ["COPY Dockerfile /d"] and not mount_dir(b.state, "wheels").exists()
    ctx2 = tmp_path / "ctx2"
    ctx2.mkdir()
    (ctx2 / "Dockerfile").write_text(
        "FROM busybox\nRUN --mount=type=cache,id=wheels,target=/root/.cache "
        "cat /root/.cache/pip/w.whl > /seen\n")
    _, ev = bt.build(b, ctx2, "-t", "use:1", "--cache-from", f"type=registry,ref={ref}")
    assert warnings(ev) == []
    assert (bt.rootfs(b, "use:1", tmp_path / "fs") / "seen").read_text() == "wheel-1.0\n"


def test_build_push_from_runner_b_mounts_what_runner_a_pushed(pybuild_factory: Callable[[], Any],
                                                        base_archive: Path, bt: Any, tmp_path: Path,
                                                        fault_proxy: FaultProxy) -> None:
    a = runner(pybuild_factory, base_archive)
    ctx = context(tmp_path)
    ref = f"{fault_proxy.addr}/{unique_repo('cache')}:cache"
    bt.build(a, ctx, "-t", "app:1", "--cache-to", f"type=registry,ref={ref},mode=max")
    b = runner(pybuild_factory, base_archive)
    target = f"{fault_proxy.addr}/{unique_repo('app')}:1"
    fault_proxy.clear()
    _, ev = bt.build(b, ctx, "-t", target, "--cache-from", ref, "--push")
    assert started(ev) == []
    layers = {str(d.digest) for d in b.store().resolve(target).manifest.layers}
    from urllib.parse import unquote

    uploads = [unquote(t) for m, t, _s in fault_proxy.log if m == "PUT" and "/blobs/uploads/" in t]
    mounts = [unquote(t) for m, t, s in fault_proxy.log if m == "POST" and "mount=" in t and s == "201"]
    built = layers - {str(d.digest) for d in a.store().resolve("busybox:latest").manifest.layers}
    assert not any(d in t for t in uploads for d in built)  # no layer A pushed is uploaded again
    assert all(any(d in t for t in mounts) for d in built)


def test_bad_cache_flags_are_one_line_errors(pybuild_factory: Callable[[], Any], base_archive: Path,
                                             tmp_path: Path) -> None:
    a = runner(pybuild_factory, base_archive)
    ctx = context(tmp_path, SINGLE)
    for flag, spec, words in (("--cache-to", "type=s3,ref=x", "unknown type 's3'"),
                              ("--cache-to", "type=registry,ref=r/x:c,mode=all", "mode must be min or max"),
                              ("--cache-to", "type=local", "dest is required"),
                              ("--cache-from", "type=inline", "type=registry,ref=IMAGE"),
                              ("--cache-to", "type=registry,ref=r/x:c,colour=red", "unknown key 'colour'")):
        r = a("build", "-t", "app:1", flag, spec, str(ctx), check=False)
        assert r.returncode != 0
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and f"invalid {flag} {spec!r}" in lines[0] and words in lines[0], r.stderr
    assert a.store().images() and not any("app" in str(i.reference) for i in a.store().images())


def test_zstd_export_of_intermediate_layers(pybuild_factory: Callable[[], Any], base_archive: Path,
                                           bt: Any, tmp_path: Path, plain_registry: Registry) -> None:
    import requests

    from registry.reference import Reference

    a = runner(pybuild_factory, base_archive)
    ctx = context(tmp_path)
    ref = f"{plain_registry.addr}/{unique_repo('zstd')}:cache"
    bt.build(a, ctx, "-t", "app:1", "--cache-to", f"type=registry,ref={ref},mode=max,compression=zstd")
    r = Reference.parse(ref)
    manifest = requests.get(f"http://{plain_registry.addr}/v2/{r.path}/manifests/{r.tag}", timeout=10,
                            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).json()
    kinds = [d["mediaType"] for d in manifest["layers"]]
    image = {str(d.digest) for d in a.store().resolve("app:1").manifest.layers}
    # the image's own layers stay the blobs its manifest names; the other stages' are zstd
    assert all(k.endswith("+zstd") for d, k in zip(manifest["layers"], kinds, strict=True)
               if d["digest"] not in image)
    assert any(k.endswith("+zstd") for k in kinds)
    b = runner(pybuild_factory, base_archive)
    _, ev = bt.build(b, ctx, "-t", "app:1", "--cache-from", ref)
    assert started(ev) == [] and image_digest(b, "app:1") == image_digest(a, "app:1")


def test_reexport_mounts_what_runner_b_never_fetched(pybuild_factory: Callable[[], Any],
                                                     base_archive: Path, bt: Any, tmp_path: Path,
                                                     fault_proxy: FaultProxy) -> None:
    """``--cache-from X --cache-to Y`` on one registry: the layers B never needed (the stages no
    image carries) go from X to Y by cross-repository mount, never through B."""
    from urllib.parse import unquote

    a = runner(pybuild_factory, base_archive)
    ctx = context(tmp_path)
    x = f"{fault_proxy.addr}/{unique_repo('cache')}:x"
    y = f"{fault_proxy.addr}/{unique_repo('cache')}:y"
    bt.build(a, ctx, "-t", "app:1", "--cache-to", f"type=registry,ref={x},mode=max")
    b = runner(pybuild_factory, base_archive)
    fault_proxy.clear()
    _, ev = bt.build(b, ctx, "-t", "app:1", "--cache-from", x,
                     "--cache-to", f"type=registry,ref={y},mode=max")
    assert started(ev) == []
    got = [unquote(t) for m, t, _s in fault_proxy.log if m == "GET" and "/blobs/sha256:" in t]
    mounted = [unquote(t) for m, t, s in fault_proxy.log if m == "POST" and "mount=" in t and s == "201"]
    image = {str(d.digest) for d in b.store().resolve("app:1").manifest.layers}
    mounts = {t.split("mount=")[1].split("&")[0] for t in mounted}
    fetched = {g.rsplit("/", 1)[1] for g in got}
    others = mounts - image  # layers of the stages no image carries: never fetched by B
    assert others and not others & fetched
    assert image <= mounts | {str(d.digest) for d in b.store().resolve("busybox:latest").manifest.layers}
    c = runner(pybuild_factory, base_archive)
    _, ev = bt.build(c, ctx, "-t", "app:1", "--cache-from", y)
    assert started(ev) == [] and image_digest(c, "app:1") == image_digest(a, "app:1")
