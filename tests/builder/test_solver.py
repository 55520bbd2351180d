"""The solver through the CLI: independent stages in parallel, Ctrl-C, outputs, stdin forms."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

PARALLEL = """\
FROM busybox AS one
RUN sleep 1 && echo one > /one

FROM busybox AS two
RUN sleep 1 && echo two > /two

FROM busybox
COPY --from=one /one /one
COPY --from=two /two /two
CMD ["cat", "/one", "/two"]
"""


def test_independent_stages_run_in_parallel(busybox: Any, bt: Any, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(PARALLEL)
    _, ev = bt.build(busybox, ctx, "-t", "par:1", "--jobs", "2")
    order = [(e["kind"], e["stage"]) for e in ev if e["kind"] in ("start", "done")
             and "RUN" in e["name"]]
    # both RUNs start before either finishes
    assert order[:2] == [("start", "one"), ("start", "two")] or order[:2] == [("start", "two"), ("start", "one")]
    root = bt.rootfs(busybox, "par:1", tmp_path / "fs")
    assert (root / "one").read_text() == "one\n" and (root / "two").read_text() == "two\n"
    # with one job they run one after the other
    _, ev = bt.build(busybox, ctx, "-t", "par:2", "--jobs", "1", "--no-cache")
    order = [e["kind"] for e in ev if e["kind"] in ("start", "done") and "RUN" in e["name"]]
    assert order == ["start", "done", "start", "done"]


def test_ctrl_c_stops_cleanly(busybox: Any, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo started && sleep 6171\n")
    def ours() -> list[str]:  # other suites may mount things meanwhile: look at our root only
        return [ln for ln in Path("/proc/self/mountinfo").read_text().splitlines()
                if str(busybox.root) in ln]

    before = ours()
    p = subprocess.Popen([*busybox.command, "--root", str(busybox.root), "build",
                          "--progress=rawjson", "-t", "int:1", str(ctx)],
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert p.stderr is not None
    for line in p.stderr:
        if '"started"' in line:
            break
    os.killpg(p.pid, signal.SIGINT)
    p.wait(timeout=30)
    assert p.returncode == 130
    assert "int" not in busybox("images").stdout
    assert ours() == before == []
    out = subprocess.run(["pgrep", "-f", "sleep 6171"], capture_output=True, text=True).stdout
    assert out.strip() == ""
    run_dir = busybox.root / "run"
    assert not run_dir.exists() or not [p for p in run_dir.iterdir() if not p.name.startswith(".")]


def test_outputs_iidfile_and_quiet(busybox: Any, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY f /f\nRUN ln -s f /l && mkdir /d\n")
    (ctx / "f").write_text("content\n")
    iid = tmp_path / "iid"
    r = busybox("build", "-q", "--iidfile", str(iid), "-t", "o:1", "--label", "via=cli",
                "-o", f"type=local,dest={tmp_path / 'local'}",
                "-o", f"type=tar,dest={tmp_path / 'fs.tar'}",
                "-o", f"type=oci,dest={tmp_path / 'oci.tar'}",
                "-o", f"type=docker,dest={tmp_path / 'docker.tar'}", str(ctx))
    image_id = r.stdout.strip()
    assert image_id.startswith("sha256:") and len(image_id) == 71
    assert iid.read_text() == image_id
    assert busybox.store().resolve("o:1").config.config["Labels"] == {"via": "cli"}
    assert (tmp_path / "local" / "f").read_text() == "content\n"
    assert os.readlink(tmp_path / "local" / "l") == "f"
    assert (tmp_path / "local" / "bin" / "busybox").exists()
    with tarfile.open(tmp_path / "fs.tar") as tf:
        names = tf.getnames()
    assert "f" in names and "bin/busybox" in names
    with tarfile.open(tmp_path / "oci.tar") as tf:
        index = json.load(tf.extractfile("index.json"))  # type: ignore[arg-type]
    # written by registry.archive (as ``pybuild save`` writes it): the familiar name, and the
    # full one for containerd and Docker 25+
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "o:1"
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == "docker.io/library/o:1"
    with tarfile.open(tmp_path / "docker.tar") as tf:
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == ["o:1"]
    assert manifest[0]["Config"].endswith(image_id.split(":")[1])
    # skopeo reads the oci archive as an independent judge
    sk = subprocess.run(["skopeo", "inspect", "--config", f"oci-archive:{tmp_path / 'oci.tar'}:o:1"],
                        capture_output=True, text=True)
    assert sk.returncode == 0, sk.stderr
    assert json.loads(sk.stdout)["rootfs"]["diff_ids"] == [
        str(d) for d in busybox.store().resolve("o:1").config.diff_ids]


def test_dockerfile_from_stdin_and_no_context(busybox: Any, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f").write_text("from context\n")
    busybox("build", "-q", "-t", "s:1", "-f", "-", str(ctx),
            input="FROM busybox\nCOPY f /f\n")
    assert busybox.store().resolve("s:1")
    # ``-`` as the context: a Dockerfile only; COPY has nothing to copy from
    busybox("build", "-q", "-t", "s:2", "-", input="FROM busybox\nRUN echo ok > /ok\n")
    r = busybox("build", "-t", "s:3", "-", input="FROM busybox\nCOPY f /f\n", check=False)
    assert r.returncode == 1 and "Dockerfile:2: COPY f: no build context" in r.stderr
    # -f naming a file elsewhere, with its own .dockerignore beside it
    other = tmp_path / "elsewhere.Dockerfile"
    other.write_text("FROM busybox\nCOPY . /ctx/\n")
    (tmp_path / "elsewhere.Dockerfile.dockerignore").write_text("f\n")
    busybox("build", "-q", "-t", "s:4", "-f", str(other), str(ctx))
    names = {Path(m).name for layer in _layers(busybox, "s:4") for m in layer}
    assert "f" not in names


def _layers(pyb: Any, ref: str) -> list[list[str]]:
    from registry.compression import open_decompressed

    store = pyb.store()
    out = []
    for d in store.resolve(ref).manifest.layers[1:]:
        with store.open_blob(d.digest) as f, tarfile.open(fileobj=open_decompressed(f), mode="r|") as tf:
            out.append([m.name for m in tf])
    return out


def test_compression_choices(busybox: Any, tmp_path: Path) -> None:
    from registry import mediatypes as mt

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo z > /z\n")
    for comp, media in (("zstd", mt.OCI_LAYER_ZSTD), ("uncompressed", mt.OCI_LAYER),
                        ("gzip", mt.OCI_LAYER_GZIP)):
        busybox("build", "-q", "--no-cache", "--compression", comp, "-t", f"z:{comp}", str(ctx))
        layer = busybox.store().resolve(f"z:{comp}").manifest.layers[-1]
        assert layer.media_type == media


def test_tty_progress_draws_a_live_view(busybox: Any, tmp_path: Path) -> None:
    """--progress=tty on a pipe still draws: step lines, CACHED marks, elapsed times."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo hi > /hi\n")
    busybox("build", "-q", "-t", "t:1", str(ctx))
    t0 = time.monotonic()
    r = busybox("build", "--progress=tty", "-t", "t:2", str(ctx))
    assert time.monotonic() - t0 < 30
    assert "[+] Building" in r.stderr and "CACHED" in r.stderr and "RUN echo hi > /hi" in r.stderr


def test_layers_take_the_requested_compression_even_from_cache(busybox: Any, bt: Any,
                                                                 tmp_path: Path) -> None:
    from registry import mediatypes as mt

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(PARALLEL)
    bt.build(busybox, ctx, "-t", "cz:gzip")
    store = busybox.store()
    gz = store.resolve("cz:gzip")
    assert {d.media_type for d in gz.manifest.layers[1:]} == {mt.OCI_LAYER_GZIP}
    # the stages only copied from keep their layer as a snapshot (unpacked, no blob), and
    # an image that later needs it gets a blob made from the snapshot
    from builder.imagebuild.cache import BuildCache

    records = list(BuildCache(busybox.root / "cache", store).inputs_index())
    snaps = [r for r in records if r.snapshot]
    assert len(snaps) == 2
    assert all((busybox.root / "layers" / r.diff_id.encoded).is_dir() for r in snaps)  # type: ignore[union-attr]
    assert not any(store.has_blob(r.diff_id) for r in snaps if r.diff_id)
    one = bt.build(busybox, ctx, "-t", "cz:one", "--target", "one")[1]
    assert [e for e in one if e["kind"] == "start"] == []
    assert store.resolve("cz:one").manifest.layers[-1].media_type == mt.OCI_LAYER_GZIP
    _, ev = bt.build(busybox, ctx, "-t", "cz:zstd", "--compression", "zstd")
    assert [e for e in ev if e["kind"] == "start"] == []  # all cached, still re-encoded
    zs = store.resolve("cz:zstd")
    assert {d.media_type for d in zs.manifest.layers[1:]} == {mt.OCI_LAYER_ZSTD}
    assert zs.config.diff_ids == gz.config.diff_ids
    root = bt.rootfs(busybox, "cz:zstd", tmp_path / "fs")
    assert (root / "one").read_text() == "one\n"
    root = bt.rootfs(busybox, "cz:one", tmp_path / "fs-one")
    assert (root / "one").read_text() == "one\n" and not (root / "two").exists()
    busybox("builder", "prune", "--all")
    assert not any((busybox.root / "layers" / r.diff_id.encoded).exists() for r in snaps if r.diff_id)
