"""The layer cache (once per diff_id, atomic, concurrent-safe), roots, and diffs of real runs."""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import tarfile
from pathlib import Path

import pytest
from test_sandbox_support import new_id

from builder.base.errors import LayerError
from builder.base.state import StateRoot
from builder.core.rootfs import LayerCache, diff, image_layers, overlay_supported, prepare_root
from builder.core.sandbox import Executor, Process, Spec, default_mounts, etc_mounts


def _layer(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _did(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def test_unpack_once_and_verify(tmp_path: Path) -> None:
    cache = LayerCache(StateRoot.open(tmp_path / "s"))
    raw = _layer({"a": b"1"})
    opened = []

    def opener() -> io.BytesIO:
        opened.append(1)
        return io.BytesIO(raw)

    p1 = cache.unpack(_did(raw), opener)
    p2 = cache.unpack(_did(raw), opener)
    assert p1 == p2 and (p1 / "a").read_bytes() == b"1" and len(opened) == 1
    wrong = "sha256:" + "0" * 64
    with pytest.raises(LayerError, match="hashes to"):
        cache.unpack(wrong, lambda: io.BytesIO(raw))
    assert not cache.has(wrong)
    assert [p.name for p in cache.dir.iterdir() if not p.name.startswith(".")] == [p1.name]
    assert not [p for p in cache.dir.iterdir() if p.name.startswith(".tmp")]
    with pytest.raises(LayerError, match="bad diff_id"):
        cache.path("md5:abc")


def _unpack_in_child(root: str, raw: bytes, q: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    cache = LayerCache(root)
    q.put(str(cache.unpack(_did(raw), lambda: io.BytesIO(raw))))


def test_concurrent_processes_share_one_unpack(tmp_path: Path) -> None:
    raw = _layer({f"f{i}": os.urandom(2048) for i in range(300)})
    ctx = multiprocessing.get_context("fork")
    q: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_unpack_in_child, args=(str(tmp_path), raw, q)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    paths = {q.get() for _ in procs}
    assert len(paths) == 1
    assert len(os.listdir(paths.pop())) == 300
    assert not [p for p in (tmp_path / "layers").iterdir() if p.name.startswith(".tmp")]


def test_overlay_probe_and_copy_fallback(tmp_path: Path) -> None:
    assert overlay_supported(tmp_path) is True
    raw = _layer({"etc/x": b"x", "bin/tool": b"t"})
    cache = LayerCache(tmp_path)
    d = cache.unpack(_did(raw), lambda: io.BytesIO(raw))
    copy = prepare_root([d], tmp_path / "c", overlay=False)
    assert copy.path is not None and (Path(copy.path) / "etc" / "x").read_bytes() == b"x"
    out = io.BytesIO()
    assert diff(copy, out) is False


def _run(state: StateRoot, root: object, script: str, tmp: Path) -> None:
    spec = Spec(process=Process(args=("sh", "-c", script)), root=root,  # type: ignore[arg-type]
                mounts=default_mounts() + etc_mounts(tmp / "etc", hostname="d"), id=new_id())
    r = Executor(state).run(spec)
    assert r.exit_status == 0


@pytest.mark.parametrize("overlay", [True, False])
def test_diff_of_a_run(tmp_path: Path, busybox_tar: Path, overlay: bool) -> None:
    state = StateRoot.open(tmp_path / "s")
    cache = LayerCache(state)
    raw = busybox_tar.read_bytes()
    base = cache.unpack(_did(raw), lambda: io.BytesIO(raw))
    root = prepare_root([base], tmp_path / "c", overlay=overlay)
    _run(state, root, "true", tmp_path)
    out = io.BytesIO()
    assert diff(root, out) is False  # mount points for /proc, /etc/hosts… never show in a diff
    _run(state, root, "mkdir -p /app && echo hi > /app/f && rm /bin/vi && chmod 700 /home/app", tmp_path)
    out = io.BytesIO()
    assert diff(root, out, source_date_epoch=0) is True
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tf:
        members = {m.name: m for m in tf.getmembers()}
    assert {"app", "app/f", "bin/.wh.vi", "home/app"} <= set(members)
    assert "etc/hosts" not in members and "proc" not in members
    assert members["home/app"].mode == 0o700 and members["home/app"].uid == 1000
    assert all(m.mtime == 0 for m in members.values())


def test_image_from_the_store(busybox: object, tmp_path: Path) -> None:
    """An image imported into the local store (``registry``): layers unpacked, then run."""
    store = busybox.store()  # type: ignore[attr-defined]
    image = store.resolve("busybox:latest")
    state = StateRoot.open(busybox.root)  # type: ignore[attr-defined]
    cache = LayerCache(state)
    dirs = image_layers(store, image, cache)
    assert [cache.path(str(d)) for d in image.diff_ids] == dirs
    root = prepare_root(dirs, tmp_path / "c")
    out: list[bytes] = []
    spec = Spec(process=Process(args=("cat", "/etc/hostname")), root=root, id=new_id())
    assert Executor(state).run(spec, stdout=out.append).exit_status == 0
    assert b"".join(out) == b"localhost\n"


def test_no_overlay_environment_forces_the_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from builder.core import rootfs

    raw = _layer({"f": b"1"})
    d = LayerCache(tmp_path).unpack(_did(raw), lambda: io.BytesIO(raw))
    monkeypatch.setattr(rootfs, "_PROBED", {})
    monkeypatch.setenv("PYBUILD_NO_OVERLAY", "1")
    root = prepare_root([d], tmp_path / "c")
    assert not root.is_overlay and root.path is not None and (Path(root.path) / "f").read_bytes() == b"1"
    monkeypatch.setattr(rootfs, "_PROBED", {})
    monkeypatch.delenv("PYBUILD_NO_OVERLAY")
    assert prepare_root([d], tmp_path / "c2").is_overlay
    assert (tmp_path / ".overlay-ok").exists()  # the probe's success is remembered


def _whiteout_layer(files: dict[str, bytes], removed: list[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        for name in removed:
            head, _, base = name.rpartition("/")
            tf.addfile(tarfile.TarInfo(f"{head}/.wh.{base}" if head else f".wh.{base}"))
    return buf.getvalue()


@pytest.mark.parametrize("overlay", [True, False])
def test_an_image_with_a_layer_twice_runs(busybox: object, tmp_path: Path, overlay: bool,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Layers base, A, B, A (one diff_id twice): overlayfs refuses a lowerdir naming one
    directory twice, so only the topmost A is kept; the merged view is the one of applying
    all four in order (A's files win over B's, what B removed of A is back, B's own stays)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "registry"))
    from registry_server import busybox_layer_tar, make_image

    if not overlay:
        monkeypatch.setenv("PYBUILD_NO_OVERLAY", "1")
    a = _layer({"data/shared": b"from-A", "data/a": b"a", "data/gone": b"kept"})
    b = _whiteout_layer({"data/shared": b"from-B", "data/b": b"b"}, ["data/gone"])
    store = busybox.store()  # type: ignore[attr-defined]
    image = make_image(store, "twice:latest", layers=[busybox_layer_tar(), a, b, a])
    assert image.diff_ids[1] == image.diff_ids[3]
    state = StateRoot.open(busybox.root)  # type: ignore[attr-defined]
    cache = LayerCache(state)
    dirs = image_layers(store, image, cache)
    assert dirs == [cache.path(str(image.diff_ids[i])) for i in (0, 2, 3)]
    script = "cd /data && for f in *; do echo $f=$(cat $f); done"
    r = busybox("run", "--rm", "--network", "none", "twice", "sh", "-c", script,  # type: ignore[operator]
                env={"PYBUILD_NO_OVERLAY": "1"} if not overlay else None)
    assert r.stdout.split() == ["a=a", "b=b", "gone=kept", "shared=from-A"]
    # and through the library, on a root made from the list with the repeat still in it
    root = prepare_root([dirs[0], dirs[2], dirs[1], dirs[2]], tmp_path / "c", overlay=overlay)  # base A B A
    assert len(root.layers) == 3
    out: list[bytes] = []
    spec = Spec(process=Process(args=("sh", "-c", script)), root=root, id=new_id())
    assert Executor(state).run(spec, stdout=out.append).exit_status == 0
    assert b"".join(out).split() == [b"a=a", b"b=b", b"gone=kept", b"shared=from-A"]
