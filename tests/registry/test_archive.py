"""docker-archive / oci-archive save and load, judged by skopeo and umoci; bad archives refused
with one line and no change to the store; a load killed half-way leaves nothing visible."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Pybuild = Any  # the runner from tests/conftest.py



def store_listing(root: Path) -> list[tuple[str, int]]:
    """Every path under *root* with its size (-1 for a directory), sorted."""
    return sorted((str(p.relative_to(root)), -1 if p.is_dir() else p.lstat().st_size)
                  for p in root.rglob("*"))


def skopeo(*args: str) -> str:
    r = subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def inspect(transport: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(skopeo("inspect", transport))
    return data


def tar_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf if m.isreg()}  # type: ignore[union-attr]


def write_tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tf:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))


def one_line_error(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("Error: ")
    for n in needles:
        assert n in lines[0], lines[0]


# -- save, judged by skopeo and umoci ----------------------------------------------------------
def test_docker_archive_is_read_by_skopeo(busybox: Pybuild, tmp_path: Path) -> None:
    out = tmp_path / "bb.tar"
    busybox("save", "-o", str(out), "busybox")
    image = busybox.store().resolve("busybox")
    info = inspect(f"docker-archive:{out}")
    assert info["Layers"] == [str(d) for d in image.diff_ids]
    assert info["Architecture"] == image.config.data["architecture"]
    raw_config = subprocess.run(["skopeo", "--insecure-policy", "inspect", "--config", "--raw",
                                 f"docker-archive:{out}"], capture_output=True, check=True).stdout
    assert "sha256:" + hashlib.sha256(raw_config).hexdigest() == busybox.image_id
    # by name too, and the Docker 25+ layout with manifest.json naming the tag
    inspect(f"docker-archive:{out}:busybox:latest")
    members = tar_members(out)
    manifest = json.loads(members["manifest.json"])
    assert manifest[0]["RepoTags"] == ["busybox:latest"]
    assert manifest[0]["Config"] == f"blobs/sha256/{busybox.image_id.removeprefix('sha256:')}"
    assert json.loads(members["repositories"])["busybox"]["latest"]


def test_oci_archive_is_read_by_skopeo_and_unpacked_by_umoci(busybox: Pybuild, tmp_path: Path) -> None:
    out = tmp_path / "bb-oci.tar"
    busybox("save", "--format", "oci-archive", "-o", str(out), "busybox:latest")
    record = busybox.store().lookup("busybox")
    assert inspect(f"oci-archive:{out}")["Digest"] == str(record.descriptor.digest)
    assert inspect(f"oci-archive:{out}:busybox:latest")["Digest"] == str(record.descriptor.digest)
    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(out) as tf:
        tf.extractall(layout, filter="data")
    index = json.loads((layout / "index.json").read_text())
    ann = index["manifests"][0]["annotations"]
    assert ann["org.opencontainers.image.ref.name"] == "busybox:latest"
    assert ann["io.containerd.image.name"] == "docker.io/library/busybox:latest"
    bundle = tmp_path / "bundle"
    r = subprocess.run(["umoci", "unpack", "--image", f"{layout}:busybox:latest", str(bundle)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (bundle / "rootfs/bin/busybox").is_file()
    assert os.readlink(bundle / "rootfs/bin/sh") == "busybox"
    runtime = json.loads((bundle / "config.json").read_text())
    assert runtime["process"]["args"] == ["sh"]


def test_save_is_deterministic_and_atomic(busybox: Pybuild, tmp_path: Path) -> None:
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    busybox("save", "-o", str(a), "busybox")
    busybox("save", "-o", str(b), "busybox")
    assert a.read_bytes() == b.read_bytes()
    stdout = busybox("save", "busybox", text=False).stdout
    assert stdout == a.read_bytes()
    r = busybox("save", "-o", str(tmp_path / "c.tar"), "busybox", "nosuch", check=False)
    one_line_error(r, "nosuch")
    assert not (tmp_path / "c.tar").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".c.tar")] == []


# -- skopeo writes, we load, digests round-trip ----------------------------------------------------
def _roundtrip_oci(busybox: Pybuild, tmp_path: Path, pybuild_factory: Callable[[], Pybuild], *,
                   compress: bool) -> None:
    ours = tmp_path / "ours.tar"
    busybox("save", "--format", "oci-archive", "-o", str(ours), "busybox")
    theirs = tmp_path / "skopeo.tar"
    extra = ["--dest-compress", "--dest-compress-format", "gzip"] if compress else []
    skopeo("copy", *extra, f"oci-archive:{ours}", f"oci-archive:{theirs}:busybox:v2")
    want = inspect(f"oci-archive:{theirs}")
    fresh = pybuild_factory()
    r = fresh("load", "-i", str(theirs))
    assert r.stdout.strip() == "Loaded image: busybox:v2"
    record = fresh.store().lookup("busybox:v2")
    assert str(record.descriptor.digest) == want["Digest"]
    assert str(record.image_id) == busybox.image_id
    again = tmp_path / "again.tar"
    fresh("save", "--format", "oci-archive", "-o", str(again), "busybox:v2")
    got = inspect(f"oci-archive:{again}")
    assert (got["Digest"], got["Layers"]) == (want["Digest"], want["Layers"])
    # a docker-archive of it has uncompressed layers named by diff_id, whatever the store holds
    dock = tmp_path / "dock.tar"
    fresh("save", "-o", str(dock), "busybox:v2")
    assert inspect(f"docker-archive:{dock}")["Layers"] == [
        str(d) for d in busybox.store().resolve("busybox").diff_ids]


def test_skopeo_oci_archive_round_trips(busybox: Pybuild, tmp_path: Path,
                                        pybuild_factory: Callable[[], Pybuild]) -> None:
    _roundtrip_oci(busybox, tmp_path, pybuild_factory, compress=False)


def test_skopeo_gzip_oci_archive_round_trips(busybox: Pybuild, tmp_path: Path,
                                             pybuild_factory: Callable[[], Pybuild]) -> None:
    _roundtrip_oci(busybox, tmp_path, pybuild_factory, compress=True)


def test_skopeo_docker_archive_round_trips(busybox: Pybuild, tmp_path: Path, pybuild_factory: Callable[[], Pybuild]) -> None:
    ours = tmp_path / "ours.tar"
    busybox("save", "--format", "oci-archive", "-o", str(ours), "busybox")
    theirs = tmp_path / "skopeo-docker.tar"
    skopeo("copy", f"oci-archive:{ours}", f"docker-archive:{theirs}:busybox:v3")
    want = inspect(f"docker-archive:{theirs}")
    fresh = pybuild_factory()
    assert fresh("load", "-i", str(theirs)).stdout.strip() == "Loaded image: busybox:v3"
    assert str(fresh.store().lookup("busybox:v3").image_id) == busybox.image_id
    again = tmp_path / "again.tar"
    fresh("save", "-o", str(again), "busybox:v3")
    got = inspect(f"docker-archive:{again}")
    assert (got["Digest"], got["Layers"], got["Env"]) == (want["Digest"], want["Layers"], want["Env"])


def test_load_from_stdin_and_reload_is_idempotent(busybox: Pybuild, tmp_path: Path, pybuild_factory: Callable[[], Pybuild]) -> None:
    data = busybox("save", "busybox", text=False).stdout
    fresh = pybuild_factory()
    assert fresh("load", input=data, text=False).stdout == b"Loaded image: busybox:latest\n"
    listing = store_listing(fresh.root / "store")
    fresh("load", input=data, text=False)
    assert store_listing(fresh.root / "store") == listing
    gz = gzip.compress(data, compresslevel=1)
    assert fresh("load", "-q", input=gz, text=False).stdout == b""


def test_untagged_image_loads_by_id(busybox: Pybuild, tmp_path: Path, pybuild_factory: Callable[[], Pybuild]) -> None:
    out = tmp_path / "byid.tar"
    busybox("save", "--format", "oci-archive", "-o", str(out), busybox.image_id[7:19])
    fresh = pybuild_factory()
    assert fresh("load", "-i", str(out)).stdout.strip() == f"Loaded image ID: {busybox.image_id}"
    assert "<none>" in fresh("images").stdout


def test_classic_docker_archive_with_symlinked_layers(busybox_tar: Path, tmp_path: Path, pybuild_factory: Callable[[], Pybuild]) -> None:
    layer = busybox_tar.read_bytes()
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id, diff_id]}}).encode()
    cid = hashlib.sha256(config).hexdigest()
    path = tmp_path / "classic.tar"
    with tarfile.open(path, "w") as tf:
        for name, data in ((f"{'a' * 64}/layer.tar", layer), (f"{cid}.json", config),
                           ("manifest.json", json.dumps([{
                               "Config": f"{cid}.json", "RepoTags": ["old/style:1"],
                               "Layers": [f"{'a' * 64}/layer.tar", f"{'b' * 64}/layer.tar"]}]).encode())):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        link = tarfile.TarInfo(f"{'b' * 64}/layer.tar")
        link.type, link.linkname = tarfile.SYMTYPE, f"../{'a' * 64}/layer.tar"
        tf.addfile(link)
    p = pybuild_factory()
    assert p("load", "-i", str(path)).stdout.strip() == "Loaded image: old/style:1"
    image = p.store().resolve("old/style:1")
    assert str(image.id) == "sha256:" + cid
    assert [str(layer.digest) for layer in image.layers] == [diff_id, diff_id]


# -- bad archives: one line, exit != 0, store unchanged ------------------------------------------
@pytest.fixture
def oci_tar(busybox: Pybuild, tmp_path: Path) -> Path:
    out = tmp_path / "good.tar"
    busybox("save", "--format", "oci-archive", "-o", str(out), "busybox")
    return out


def _refused(busybox: Pybuild, data: bytes, *needles: str, via_stdin: bool = False) -> None:
    before = store_listing(busybox.root / "store")
    if via_stdin:
        r = busybox("load", input=data.decode("latin-1"), check=False)
    else:
        bad = busybox.root.parent / "bad.tar"
        bad.write_bytes(data)
        r = busybox("load", "-i", str(bad), check=False)
    one_line_error(r, *needles)
    assert store_listing(busybox.root / "store") == before


def test_truncated_archive_is_refused(busybox: Pybuild, oci_tar: Path) -> None:
    data = oci_tar.read_bytes()
    _refused(busybox, data[: len(data) // 2], "truncated")
    _refused(busybox, data[: len(data) // 2], "stdin", via_stdin=True)


def test_truncated_at_a_member_boundary_is_refused(busybox: Pybuild, oci_tar: Path) -> None:
    members = tar_members(oci_tar)
    del members["index.json"]
    bad = oci_tar.with_name("noindex.tar")
    write_tar(bad, members)
    _refused(busybox, bad.read_bytes(), "not a docker-archive or oci-archive")


def test_corrupt_tar_is_refused(busybox: Pybuild, oci_tar: Path) -> None:
    data = bytearray(oci_tar.read_bytes())
    data[100:160] = os.urandom(60)  # inside the first header: checksum no longer matches
    _refused(busybox, bytes(data), "invalid or truncated tar archive")
    _refused(busybox, os.urandom(4096), "invalid or truncated tar archive")
    _refused(busybox, b"", "invalid or truncated tar archive")


def test_blob_not_matching_its_digest_is_refused(busybox: Pybuild, oci_tar: Path) -> None:
    members = tar_members(oci_tar)
    layer = next(n for n, d in members.items() if n.startswith("blobs/") and len(d) > 100000)
    data = bytearray(members[layer])
    data[-2000] ^= 0xFF
    members[layer] = bytes(data)
    bad = oci_tar.with_name("flipped.tar")
    write_tar(bad, members)
    _refused(busybox, bad.read_bytes(), "does not match its digest", layer.split("/")[-1][:12])


def test_layer_not_matching_its_diff_id_is_refused(busybox: Pybuild, busybox_tar: Path,
                                                   tmp_path: Path) -> None:
    layer = busybox_tar.read_bytes()
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]}}).encode()
    path = tmp_path / "wrong-diffid.tar"
    write_tar(path, {"layer.tar": layer, "config.json": config, "manifest.json": json.dumps(
        [{"Config": "config.json", "RepoTags": ["x:1"], "Layers": ["layer.tar"]}]).encode()})
    _refused(busybox, path.read_bytes(), "diff_id")


def test_missing_blob_is_refused(busybox: Pybuild, oci_tar: Path) -> None:
    members = tar_members(oci_tar)
    layer = next(n for n, d in members.items() if n.startswith("blobs/") and len(d) > 100000)
    del members[layer]
    bad = oci_tar.with_name("missing.tar")
    write_tar(bad, members)
    _refused(busybox, bad.read_bytes(), "missing blob", layer.split("/")[-1])


def test_bad_name_in_archive_is_refused(busybox: Pybuild, oci_tar: Path) -> None:
    members = tar_members(oci_tar)
    index = json.loads(members["index.json"])
    index["manifests"][0]["annotations"]["io.containerd.image.name"] = "UPPER/case:1"
    members["index.json"] = json.dumps(index).encode()
    bad = oci_tar.with_name("badname.tar")
    write_tar(bad, members)
    _refused(busybox, bad.read_bytes(), "UPPER/case")


def test_kill_9_during_load_leaves_nothing_visible(busybox: Pybuild, tmp_path: Path, pybuild_factory: Callable[[], Pybuild]) -> None:
    rootfs = tmp_path / "big"
    (rootfs / "data").mkdir(parents=True)
    (rootfs / "data" / "random.bin").write_bytes(os.urandom(24 << 20))
    busybox("import", str(rootfs), "big:1")
    archive = tmp_path / "big.tar"
    busybox("save", "-o", str(archive), "big:1")
    fresh = pybuild_factory()
    fresh("load", "-i", str(oci_or_small(busybox, tmp_path)))  # the store exists and has content
    store = fresh.root / "store"
    blobs_before = sorted(p.name for p in (store / "blobs" / "sha256").iterdir())
    index_before = (store / "index.json").read_bytes()
    data = archive.read_bytes()
    proc = subprocess.Popen([*fresh.command, "--root", str(fresh.root), "load"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdin is not None
        proc.stdin.write(data[: len(data) // 2])
        proc.stdin.flush()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait until the layer is being spooled
            spooled = [p for p in (store / "ingest").iterdir() if p.stat().st_size > (4 << 20)]
            if spooled:
                break
            time.sleep(0.05)
        assert spooled, "the load never started spooling"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.stdin:
            with pytest.raises(BrokenPipeError):
                proc.stdin.write(b"x" * 65536)
                proc.stdin.flush()
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
    assert proc.returncode == -signal.SIGKILL
    assert sorted(p.name for p in (store / "blobs" / "sha256").iterdir()) == blobs_before
    assert (store / "index.json").read_bytes() == index_before
    assert fresh("load", "-i", str(archive)).stdout.strip() == "Loaded image: big:1"
    assert fresh.store().resolve("big:1").config.diff_ids == busybox.store().resolve("big:1").diff_ids


def oci_or_small(busybox: Pybuild, tmp_path: Path) -> Path:
    small = tmp_path / "small.tar"
    busybox("save", "-o", str(small), "busybox")
    return small


def test_layer_whose_media_type_lies_is_refused(busybox: Pybuild, oci_tar: Path) -> None:
    members = tar_members(oci_tar)
    index = json.loads(members["index.json"])
    old = index["manifests"][0]["digest"]
    manifest = json.loads(members["blobs/" + old.replace(":", "/")])
    manifest["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
    raw = json.dumps(manifest).encode()
    new = "sha256:" + hashlib.sha256(raw).hexdigest()
    members["blobs/" + new.replace(":", "/")] = raw
    index["manifests"][0].update(digest=new, size=len(raw))
    members["index.json"] = json.dumps(index).encode()
    bad = oci_tar.with_name("lying.tar")
    write_tar(bad, members)
    _refused(busybox, bad.read_bytes(), "is none-compressed, but its media type is")


def test_names_from_bare_tag_ref_names(busybox: Pybuild, tmp_path: Path,
                                       pybuild_factory: Callable[[], Pybuild]) -> None:
    """A ref.name that is only a tag names nothing (as Docker loads it) unless the archive's
    manifest.json gives RepoTags for that config (Docker 25+ writes both files)."""
    out = tmp_path / "d.tar"
    busybox("save", "-o", str(out), "busybox")
    members = tar_members(out)
    index = json.loads(members["index.json"])
    index["manifests"][0]["annotations"] = {"org.opencontainers.image.ref.name": "latest"}
    members["index.json"] = json.dumps(index).encode()
    with_tags = tmp_path / "with-tags.tar"
    write_tar(with_tags, members)
    del members["manifest.json"]
    bare = tmp_path / "bare.tar"
    write_tar(bare, members)
    fresh = pybuild_factory()
    assert fresh("load", "-i", str(with_tags)).stdout == "Loaded image: busybox:latest\n"
    other = pybuild_factory()
    assert other("load", "-i", str(bare)).stdout == f"Loaded image ID: {busybox.image_id}\n"


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_tar_stream_reads_what_tarfile_writes(fmt: int) -> None:
    from registry.archive.tarstream import TarStream

    deep = "d/" + "x" * 60 + "/" + "y" * 30  # > 100 characters with the file name: long-name headers
    files = {f"{deep}/file-{i}": os.urandom(i * 700) for i in range(4)}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name if fmt != tarfile.USTAR_FORMAT else name[-90:])
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        link = tarfile.TarInfo("short-link")
        link.type, link.linkname = tarfile.SYMTYPE, "t" * 120 if fmt != tarfile.USTAR_FORMAT else "t"
        tf.addfile(link)
        d = tarfile.TarInfo("adir")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
    raw = buf.getvalue()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        want = [(m.name, m.type, m.linkname, tf.extractfile(m).read() if m.isreg() else b"")  # type: ignore[union-attr]
                for m in tf]
    got = []
    stream = TarStream(io.BytesIO(raw))
    for m in stream:
        parts: list[bytes] = []
        if m.isreg():
            stream.copy_data(parts.append)
        got.append((m.name, m.type, m.linkname, b"".join(parts)))
    assert got == want
    cut = TarStream(io.BytesIO(raw[:1500]))
    with pytest.raises(tarfile.ReadError, match="unexpected end of data"):
        for _ in cut:
            cut.copy_data(lambda b: None)


def test_several_images_in_one_archive(busybox: Pybuild, busybox_tar: Path, tmp_path: Path,
                                       pybuild_factory: Callable[[], Pybuild]) -> None:
    busybox("import", str(busybox_tar), "other:1", "-c", "USER app")
    busybox("tag", "busybox", "busybox:stable")
    for fmt in ("docker-archive", "oci-archive"):
        out = tmp_path / f"both-{fmt}.tar"
        busybox("save", "--format", fmt, "-o", str(out), "busybox", "other:1")
        for name in ("busybox:latest", "busybox:stable", "other:1"):
            want = busybox.store().resolve(name).id
            raw = subprocess.run(["skopeo", "--insecure-policy", "inspect", "--config", "--raw",
                                  f"{fmt}:{out}:{name}"], capture_output=True, check=True).stdout
            assert "sha256:" + hashlib.sha256(raw).hexdigest() == str(want), (fmt, name)
        fresh = pybuild_factory()
        lines = fresh("load", "-i", str(out)).stdout.splitlines()
        assert sorted(lines) == ["Loaded image: busybox:latest", "Loaded image: busybox:stable",
                                 "Loaded image: other:1"]
        assert fresh.store().resolve("other:1").config.config == {"User": "app"}
