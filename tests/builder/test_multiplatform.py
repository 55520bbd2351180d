"""Multi-platform images on one host: an arm64 base imported with ``import --platform``, RUN
and ``run`` of it through qemu-user-static (binfmt_misc, fix-binary flag), ``build --platform
a,b`` into an OCI index (BuildKit's automatic args, a ``FROM --platform=$BUILDPLATFORM`` stage
once, per-platform cache keys), and the store's commands on the index (inspect, rmi, save/load).

The arm64 base is Debian's ``busybox-static:arm64`` (``make install`` fetches it into
``testdata/arm64/busybox``).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import build, executed  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ARM64_BUSYBOX = REPO / "testdata" / "arm64" / "busybox"


def _mkbusybox() -> Any:
    spec = importlib.util.spec_from_file_location("mkbusybox_mp", REPO / "testdata" / "mkbusybox.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def arm64_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The busybox rootfs with Debian's arm64 binary in place of the host's."""
    assert ARM64_BUSYBOX.is_file(), f"{ARM64_BUSYBOX} is missing: run `make install`"
    mod = _mkbusybox()
    plain = mod.make_rootfs

    def arm64_rootfs(dest: Path) -> Path:
        root = plain(dest)
        shutil.copy2(ARM64_BUSYBOX, root / "bin" / "busybox")
        return root

    mod.make_rootfs = arm64_rootfs
    path = tmp_path_factory.mktemp("busybox-arm64") / "busybox-arm64.tar"
    mod.make_tar(path)
    return path


def make_multi(pyb: Any, busybox_tar: Path, arm64_tar: Path, tag: str = "base:multi") -> None:
    """``base:amd64`` and ``base:arm64`` imported with ``--platform``, and *tag* their index."""
    from builder.base.platforms import store_index
    from registry.reference import Reference

    pyb("import", "--platform", "linux/amd64", str(busybox_tar), "base:amd64")
    pyb("import", "--platform", "linux/arm64", str(arm64_tar), "base:arm64")
    store = pyb.store()
    store_index(store, [store.resolve("base:amd64"), store.resolve("base:arm64")],
                [Reference.parse(tag)])


@pytest.fixture
def multi(pybuild: Any, busybox_tar: Path, arm64_tar: Path) -> Iterator[Any]:
    make_multi(pybuild, busybox_tar, arm64_tar)
    yield pybuild


def test_import_platform_runs_through_qemu_and_info_shows_it(pybuild: Any, arm64_tar: Path,
                                                            tmp_path: Path) -> None:
    pybuild("import", "--platform", "linux/arm64", str(arm64_tar), "arm:1")
    got = json.loads(pybuild("image", "inspect", "arm:1").stdout)[0]
    assert (got["Architecture"], got["Os"]) == ("arm64", "linux")
    assert pybuild("run", "--rm", "arm:1", "uname", "-m").stdout == "aarch64\n"
    assert pybuild("run", "--rm", "--platform", "linux/arm64", "arm:1", "uname", "-m").stdout == "aarch64\n"
    assert "Emulated Platforms: linux/arm64" in pybuild("info").stdout
    # a RUN step of the foreign image, in the build sandbox
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM arm:1\nRUN uname -m > /arch && cat /arch\n")
    r, events = build(pybuild, ctx, "--platform", "linux/arm64", "-t", "built:arm")
    assert any(e["kind"] == "log" and "aarch64" in e["text"] for e in events)
    assert pybuild("run", "--rm", "built:arm", "cat", "/arch").stdout == "aarch64\n"
    # the local image is arm64: asked for amd64 with --pull never, Docker's refusal
    r2 = pybuild("run", "--rm", "--platform", "linux/amd64", "--pull", "never", "arm:1", "true",
                 check=False)
    assert r2.returncode == 125  # the engine's refusal, as docker run
    assert ("image with reference arm:1 was found but does not match the specified platform: "
            "wanted linux/amd64, actual: linux/arm64") in r2.stderr


def test_foreign_run_without_the_emulator_says_what_to_install(pybuild: Any, arm64_tar: Path,
                                                               tmp_path: Path) -> None:
    """A host without qemu-user-static: no binfmt_misc entry and no Debian binfmt.d rule (the
    two directories ``builder.base.binfmt`` reads, pointed at empty ones)."""
    pybuild("import", "--platform", "linux/arm64", str(arm64_tar), "arm:1")
    (tmp_path / "binfmt").mkdir()
    (tmp_path / "conf").mkdir()
    env = {"PYBUILD_BINFMT_MISC": str(tmp_path / "binfmt"), "PYBUILD_BINFMT_CONF": str(tmp_path / "conf")}
    r = pybuild("run", "--rm", "arm:1", "uname", "-m", check=False, env=env)
    assert r.returncode == 125
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "install qemu-user-static" in lines[0] and "linux/arm64" in lines[0]
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM arm:1\nRUN uname -m\n")
    r = pybuild("build", "--platform", "linux/arm64", str(ctx), check=False, env=env)
    assert r.returncode != 0 and "install qemu-user-static" in r.stderr


DOCKERFILE = """\
FROM --platform=$BUILDPLATFORM base:multi AS build
RUN uname -m > /built-on && echo compiled
ARG TARGETARCH
RUN echo "cross-compiled for $TARGETARCH on $(uname -m)" > /cross
FROM base:multi
ARG TARGETPLATFORM TARGETOS TARGETARCH TARGETVARIANT BUILDPLATFORM BUILDOS BUILDARCH
COPY --from=build /built-on /cross /
RUN uname -m > /arch && echo "$TARGETPLATFORM|$TARGETOS|$TARGETARCH|$TARGETVARIANT|$BUILDPLATFORM|$BUILDOS|$BUILDARCH" > /args
"""


def test_two_platform_build_is_an_index_of_the_right_images(multi: Any, tmp_path: Path) -> None:
    from registry import mediatypes as mt
    from registry.model import Index

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    _, events = build(multi, ctx, "--platform", "linux/amd64,linux/arm64", "-t", "app:1")
    ran = executed(events)
    # the build stage's own step ran once, natively; the step using TARGETARCH once per target
    assert sum("echo compiled" in n for n in ran) == 1
    assert sum("cross-compiled" in n for n in ran) == 2
    # each target's RUN ran (arm64 never took amd64's result from the cache)
    assert sum("uname -m > /arch" in n for n in ran) == 2

    store = multi.store()
    record = store.lookup("app:1")
    # Docker's shapes, as BuildKit's exporter writes them by default: a manifest list of
    # schema 2 manifests
    assert record.descriptor.media_type == mt.DOCKER_MANIFEST_LIST
    index = Index.parse(store.read_blob(record.descriptor.digest), record.descriptor.media_type)
    assert [str(d.platform) for d in index.manifests] == ["linux/amd64", "linux/arm64"]
    assert {d.media_type for d in index.manifests} == {mt.DOCKER_MANIFEST}
    for d, arch in zip(index.manifests, ("amd64", "arm64"), strict=True):
        cfg = store.image(d).config.data
        assert (cfg["architecture"], cfg["os"], cfg.get("variant")) == (arch, "linux", None)

    def cat(platform: str, path: str) -> str:
        return str(multi("run", "--rm", "--platform", platform, "app:1", "cat", path).stdout)

    assert cat("linux/arm64", "/arch") == "aarch64\n"
    assert cat("linux/amd64", "/arch") == "x86_64\n"
    assert cat("linux/arm64", "/built-on") == "x86_64\n"  # the build stage ran on the build platform
    assert cat("linux/arm64", "/cross") == "cross-compiled for arm64 on x86_64\n"
    assert cat("linux/arm64", "/args") == "linux/arm64|linux|arm64||linux/amd64|linux|amd64\n"
    assert cat("linux/amd64", "/args") == "linux/amd64|linux|amd64||linux/amd64|linux|amd64\n"
    # without --platform, run picks the host's image of the index
    assert multi("run", "--rm", "app:1", "cat", "/arch").stdout == "x86_64\n"

    # both platforms again, unchanged: fully cached, the same index
    _, again = build(multi, ctx, "--platform", "linux/amd64,linux/arm64", "-t", "app:1")
    assert executed(again) == []
    assert store.lookup("app:1").descriptor.digest == record.descriptor.digest
    # --no-cache: every step runs again, the build-platform stage still once
    _, fresh = build(multi, ctx, "--no-cache", "--platform", "linux/amd64,linux/arm64", "-t", "app:1")
    ran = executed(fresh)
    assert sum("echo compiled" in n for n in ran) == 1
    assert sum("uname -m > /arch" in n for n in ran) == 2
    # --output type=oci of several platforms: the index with both
    archive = tmp_path / "app.tar"
    build(multi, ctx, "--platform", "linux/amd64,linux/arm64", "-o", f"type=oci,dest={archive}")
    with tarfile.open(archive) as tf:
        top = json.loads(tf.extractfile("index.json").read())  # type: ignore[union-attr]
    assert [m["digest"] for m in top["manifests"]] == [str(store.lookup("app:1").descriptor.digest)]


def test_index_inspect_rmi_save_load(multi: Any, tmp_path: Path, pybuild_factory: Any) -> None:
    def arch(*args: str) -> str:
        return str(multi("image", "inspect", "-f", "{{.Architecture}}", *args).stdout.strip())

    assert arch("base:multi") == "amd64"
    # images: one row per name; --tree shows an index's platforms under it
    listing = multi("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert sorted(listing) == ["base:amd64", "base:arm64", "base:multi"]
    tree = multi("images", "--tree").stdout.splitlines()
    at = next(i for i, line in enumerate(tree) if line.startswith("base:multi "))
    assert tree[at + 1].startswith("├─ linux/amd64 ") and tree[at + 2].startswith("└─ linux/arm64 ")
    assert arch("--platform", "linux/arm64", "base:multi") == "arm64"
    r = multi("image", "inspect", "--platform", "linux/s390x", "base:multi", check=False)
    assert r.returncode != 0

    # save and load the whole index (every platform), into a fresh root
    archive = tmp_path / "multi.tar"
    multi("save", "-o", str(archive), "base:multi")
    other = pybuild_factory()
    other("load", "-i", str(archive))
    assert other("run", "--rm", "--platform", "linux/arm64", "base:multi", "uname", "-m").stdout == "aarch64\n"
    assert other("run", "--rm", "base:multi", "uname", "-m").stdout == "x86_64\n"

    # rmi of one platform keeps the other (not while a container uses it); of the last one,
    # the image
    cid = multi("create", "--platform", "linux/arm64", "base:multi", "true").stdout.strip()
    r = multi("rmi", "--platform", "linux/arm64", "base:multi", check=False)
    assert r.returncode != 0 and f"image is being used by container {cid[:12]}" in r.stderr
    multi("rm", cid)
    out = multi("rmi", "--platform", "linux/arm64", "base:multi").stdout
    assert out.startswith("Deleted: sha256:")
    assert multi("image", "inspect", "--platform", "linux/arm64", "base:multi", check=False).returncode != 0
    assert arch("--platform", "linux/amd64", "base:multi") == "amd64"
    r = multi("rmi", "--platform", "linux/arm64", "base:multi", check=False)
    assert r.returncode != 0 and "No such image: base:multi" in r.stderr
    assert "Untagged: base:multi" in multi("rmi", "--platform", "linux/amd64", "base:multi").stdout
    assert multi("image", "inspect", "base:multi", check=False).returncode != 0
