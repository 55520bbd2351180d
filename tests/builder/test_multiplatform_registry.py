"""Multi-platform images and registries: ``build --platform a,b --push`` pushes an index that
skopeo (``inspect --raw``, ``copy --all``) and the docker CLI's ``manifest inspect`` accept, and
that pulls by platform into a fresh root; an index in Docker Hub's shapes (schema 2 manifests
made by skopeo from two single-platform images, under a manifest list) pulls the host's
platform by default and fails for a missing one with Docker's words, judged against the
private dockerd pulling the same repository (a second registry process over the same storage,
in the daemon's network namespace).
"""

# ruff: noqa: F811 - the registry fixtures are imported, then named as test parameters
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "registry"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from registry_server import (  # noqa: E402,F401 - fixtures come in by import
    REGISTRY_BIN,
    Registry,
    plain_registry,
    registry_tmp,
    unique_repo,
)
from test_multiplatform import DOCKERFILE, arm64_tar, make_multi  # noqa: E402,F401

SKOPEO = ["skopeo", "--insecure-policy"]


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    return {"DOCKER_CONFIG": str(tmp_path / "docker-config"),
            "PYBUILD_CERTS_D": str(tmp_path / "certs.d")}


def skopeo(*args: str) -> str:
    r = subprocess.run([*SKOPEO, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"skopeo {' '.join(args)}: {r.stderr}"
    return r.stdout


def test_pushed_index_is_read_by_skopeo_docker_cli_and_pulls_by_platform(
        pybuild: Any, busybox_tar: Path, arm64_tar: Path, plain_registry: Registry,
        env: dict[str, str], tmp_path: Path, pybuild_factory: Any, dockerd: Any) -> None:
    make_multi(pybuild, busybox_tar, arm64_tar)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    target = f"{plain_registry.addr}/{unique_repo()}:1"
    pybuild("build", "--platform", "linux/amd64,linux/arm64", "-t", target, "--push", str(ctx),
            env=env, timeout=300)

    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{target}"))
    assert raw["mediaType"] == "application/vnd.docker.distribution.manifest.list.v2+json"
    assert [(m["platform"]["os"], m["platform"]["architecture"]) for m in raw["manifests"]] == [
        ("linux", "amd64"), ("linux", "arm64")]
    layout = tmp_path / "layout"
    out = skopeo("copy", "--all", "--src-tls-verify=false", f"docker://{target}", f"oci:{layout}:copied")
    assert "Copying 2 of 2 images in list" in out
    # the docker CLI reads the registry itself (client side): its manifest inspect
    r = dockerd.docker("manifest", "inspect", "--insecure", target,
                       env={"DOCKER_CLI_EXPERIMENTAL": "enabled", **env})
    shown = json.loads(r.stdout)
    assert [m["platform"]["architecture"] for m in shown["manifests"]] == ["amd64", "arm64"]
    assert [m["digest"] for m in shown["manifests"]] == [m["digest"] for m in raw["manifests"]]
    # ours prints what the docker CLI prints, and copies the whole index
    assert pybuild("manifest", "inspect", target, env=env).stdout == r.stdout.decode()
    copied = f"{plain_registry.addr}/{unique_repo()}:copied"
    pybuild("copy", "--all-platforms", target, copied, env=env)
    assert json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{copied}")) == raw

    fresh = pybuild_factory()
    fresh("pull", "--platform", "linux/arm64", target, env=env)
    assert fresh("run", "--rm", target, "cat", "/arch").stdout == "aarch64\n"
    assert fresh("image", "inspect", "-f", "{{.Architecture}}", target).stdout.strip() == "arm64"
    # --all-platforms keeps the index: both platforms run from it
    every = pybuild_factory()
    every("pull", "--all-platforms", target, env=env)
    assert every("run", "--rm", "--platform", "linux/arm64", target, "uname", "-m").stdout == "aarch64\n"
    assert every("run", "--rm", target, "uname", "-m").stdout == "x86_64\n"


def _put_manifest(registry: Registry, repo: str, tag: str, raw: bytes, media_type: str) -> None:
    req = urllib.request.Request(f"{registry.url}/v2/{repo}/manifests/{tag}", data=raw,
                                 method="PUT", headers={"Content-Type": media_type})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 201


@pytest.fixture
def hub_shaped(pybuild: Any, busybox_tar: Path, arm64_tar: Path, plain_registry: Registry,
               env: dict[str, str]) -> Iterator[str]:
    """``REPO:multi`` in Docker Hub's shapes: each platform pushed alone, turned into a schema 2
    manifest by skopeo (``--format v2s2``), and a manifest list over the two."""
    make_multi(pybuild, busybox_tar, arm64_tar)
    repo = unique_repo("hub")
    entries = []
    for arch in ("amd64", "arm64"):
        single = f"{plain_registry.addr}/{repo}:single-{arch}"
        pybuild("push", f"base:{arch}", single, env=env)
        skopeo("copy", "--format", "v2s2", "--src-tls-verify=false", "--dest-tls-verify=false",
               f"docker://{single}", f"docker://{plain_registry.addr}/{repo}:{arch}")
        manifest = skopeo("inspect", "--raw", "--tls-verify=false",
                          f"docker://{plain_registry.addr}/{repo}:{arch}").encode()
        entries.append({"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                        "size": len(manifest), "digest": "sha256:" + hashlib.sha256(manifest).hexdigest(),
                        "platform": {"architecture": arch, "os": "linux"}})
    media_type = "application/vnd.docker.distribution.manifest.list.v2+json"
    raw = json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": entries},
                     indent=3).encode()
    _put_manifest(plain_registry, repo, "multi", raw, media_type)
    yield f"{plain_registry.addr}/{repo}:multi"


@pytest.fixture
def registry_in_dockerd_netns(dockerd: Any, plain_registry: Registry) -> Iterator[None]:
    """The test registry's storage served on the same address inside the private dockerd's
    network namespace (which has only ``lo``), so that the daemon pulls what we pull."""
    assert dockerd.proc is not None
    config = plain_registry.root / "config.yml"
    log = open(plain_registry.root / "netns-registry.log", "ab")
    proc = subprocess.Popen(["nsenter", f"--net=/proc/{dockerd.proc.pid}/ns/net", REGISTRY_BIN,
                             "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(100):  # answers from inside the namespace
            r = subprocess.run(["nsenter", f"--net=/proc/{dockerd.proc.pid}/ns/net", "sh", "-c",
                                f"exec 3<>/dev/tcp/127.0.0.1/{plain_registry.port}"],
                               capture_output=True)
            if r.returncode == 0 or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert proc.poll() is None
        yield
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_hub_shaped_index_pulls_the_host_platform_and_docker_s_error_for_a_missing_one(
        pybuild_factory: Any, hub_shaped: str, env: dict[str, str], dockerd: Any,
        registry_in_dockerd_netns: None) -> None:
    ours = pybuild_factory()
    out = ours("pull", hub_shaped, env=env).stdout
    assert "Status: Downloaded newer image for" in out
    assert ours("image", "inspect", "-f", "{{.Architecture}}", hub_shaped).stdout.strip() == "amd64"
    assert ours("run", "--rm", hub_shaped, "uname", "-m").stdout == "x86_64\n"
    # the judge picks the same platform's image by default
    dockerd.docker("pull", hub_shaped)
    theirs = dockerd.docker("image", "inspect", "-f", "{{.Architecture}} {{.Id}}", hub_shaped)
    mine = ours("image", "inspect", "-f", "{{.Architecture}} {{.Id}}", hub_shaped).stdout
    assert theirs.stdout.decode() == mine

    # a platform the index lacks: Docker's words
    r = ours("pull", "--platform", "linux/s390x", hub_shaped, check=False, env=env)
    judge = dockerd.docker("pull", "--platform", "linux/s390x", hub_shaped, check=False)
    assert r.returncode != 0 and judge.returncode != 0
    # docker pull prints the daemon's message as the stream's last line, with no prefix
    assert judge.stderr.decode().strip().splitlines() == [
        "no matching manifest for linux/s390x in the manifest list entries"]
    assert r.stderr.strip().splitlines() == judge.stderr.decode().strip().splitlines()
    dockerd.docker("rmi", hub_shaped)
