"""Incremental COPY (``builder.imagebuild.execute.incremental``): a context COPY that ran before
on the same layers starts from its previous layer. Its layer must be the very one a copy from
scratch makes: same tar bytes, same digests, for additions, changes, deletions, mode, owner,
mtime and xattr changes, a symlink and a hard link, ``.dockerignore``, ``--chown``/``--chmod``,
in the image and in a stage only copied from; and the build cache behaves as before."""

from __future__ import annotations

import os
import shutil
import zlib
from pathlib import Path
from typing import Any

DOCKERFILE = """\
FROM busybox AS side
COPY src/ /side/

FROM busybox
WORKDIR /app
COPY src/ ./src/
COPY --chown=1:2 --chmod=640 src/ ./owned/
COPY src/keep.txt src/change.txt ./files/
COPY --from=side /side/ ./fromside/
RUN cat src/change.txt > /seen
"""

EPOCH = "1500000000"  # after the context's mtimes (kept), before the build's (clamped)
OLD = 1_000_000_000


def _write(p: Path, data: str | bytes, mode: int = 0o644) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    os.chmod(p, mode)


def _age(ctx: Path) -> None:
    """Every mtime in the past (before EPOCH), each path its own, so the layer shows them."""
    for p in ctx.rglob("*"):
        t = OLD + zlib.crc32(str(p.relative_to(ctx)).encode()) % 1_000_000
        os.utime(p, ns=(t * 10**9 + 123, t * 10**9 + 123), follow_symlinks=False)


def make_ctx(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    src = ctx / "src"
    (ctx / "Dockerfile").parent.mkdir(parents=True)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / ".dockerignore").write_text("src/ignored*\n")
    _write(src / "keep.txt", "keep\n")
    _write(src / "change.txt", "before\n")
    _write(src / "gone.txt", "gone\n")
    _write(src / "mode.sh", "#!/bin/sh\n", 0o644)
    _write(src / "touched.txt", "same bytes\n")
    _write(src / "attr.txt", "attr\n")
    os.setxattr(src / "attr.txt", "user.note", b"one")
    _write(src / "ignored.txt", "never copied\n")
    for i in range(300):  # more than a batch of the threaded copy
        _write(src / "many" / f"f{i:03d}", f"{i}\n" * (i % 7))
    _write(src / "sub" / "deep" / "d.txt", "deep\n")
    _write(src / "olddir" / "x.txt", "x\n")
    os.link(src / "keep.txt", src / "hard")
    (src / "link").symlink_to("keep.txt")
    (src / "empty").mkdir()
    _age(ctx)
    return ctx


def change(ctx: Path) -> None:
    src = ctx / "src"
    _write(src / "change.txt", "after, longer\n")
    (src / "gone.txt").unlink()
    _write(src / "new.txt", "new\n")
    os.chmod(src / "mode.sh", 0o755)
    os.setxattr(src / "attr.txt", "user.note", b"two")
    _write(src / "many" / "f150", "changed\n")
    (src / "many" / "f151").unlink()
    shutil.rmtree(src / "olddir")
    _write(src / "newdir" / "y.txt", "y\n")
    (src / "link").unlink()
    (src / "link").symlink_to("change.txt")
    _write(src / "ignored2.txt", "never copied either\n")
    _age(ctx)
    os.utime(src / "touched.txt", (OLD - 5, OLD - 5))  # only its mtime: the layer has it


def diff_ids(pyb: Any, ref: str) -> list[str]:
    return [str(d) for d in pyb.store().resolve(ref).config.diff_ids]


def test_incremental_copy_makes_the_layer_a_fresh_copy_makes(
        busybox: Any, bt: Any, pybuild_factory: Any, busybox_tar: Path, tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    env = {"SOURCE_DATE_EPOCH": EPOCH}
    bt.build(busybox, ctx, "-t", "inc:1", env=env)
    first = diff_ids(busybox, "inc:1")
    copies = busybox.root / "cache" / "copies"
    assert len(os.listdir(copies)) == 4  # each context COPY left its record
    change(ctx)
    _, ev = bt.build(busybox, ctx, "-t", "inc:2", env=env)
    # (the stage reads the side stage, changed: its WORKDIR runs again too, as before)
    assert [e["name"].split("] ", 1)[1] for e in ev if e["kind"] == "start"] == [
        "COPY src/ /side/", "WORKDIR /app", "COPY src/ ./src/", "COPY --chown=1:2 --chmod=640 src/ ./owned/",
        "COPY src/keep.txt src/change.txt ./files/", "COPY --from=side /side/ ./fromside/",
        "RUN cat src/change.txt > /seen"]
    incremental = diff_ids(busybox, "inc:2")
    # it started from the last layer: an unchanged file is the previous layer's inode
    layers = busybox.root / "layers"
    new_copy = layers / incremental[2].split(":")[1]
    old_copy = layers / first[2].split(":")[1]
    assert (new_copy / "app/src/keep.txt").stat().st_ino == (old_copy / "app/src/keep.txt").stat().st_ino
    assert (new_copy / "app/src/change.txt").stat().st_ino != (old_copy / "app/src/change.txt").stat().st_ino
    assert not (new_copy / "app/src/gone.txt").exists()
    assert not (new_copy / "app/src/olddir").exists()

    # the same context built from scratch on another root: the very same layers
    other = pybuild_factory()
    shutil.copytree(busybox.root / "store", other.root / "store")
    bt.build(other, ctx, "-t", "inc:2", env=env)
    assert diff_ids(other, "inc:2") == incremental
    assert other.store().resolve("inc:2").id == busybox.store().resolve("inc:2").id

    fs = bt.rootfs(busybox, "inc:2", tmp_path / "fs")
    assert (fs / "seen").read_text() == "after, longer\n"
    assert (fs / "app/src/many/f150").read_text() == "changed\n"
    assert not (fs / "app/src/many/f151").exists()
    assert os.readlink(fs / "app/src/link") == "change.txt"
    assert os.stat(fs / "app/src/mode.sh").st_mode & 0o777 == 0o755
    assert os.stat(fs / "app/owned/keep.txt").st_mode & 0o777 == 0o640
    assert not (fs / "app/src/ignored2.txt").exists()

    # the cache as before: nothing changed, nothing runs; a change undone hits the first records
    _, ev = bt.build(busybox, ctx, "-t", "inc:3", env=env)
    assert bt.executed(ev) == []
    assert diff_ids(busybox, "inc:3") == incremental


def test_copy_back_and_forth_keeps_the_layers(busybox: Any, bt: Any, tmp_path: Path) -> None:
    """Changes undone, done again, a file turned into a directory and back: every incremental
    layer is the one of the build from scratch of that same context (the first build of it)."""
    ctx = make_ctx(tmp_path)
    env = {"SOURCE_DATE_EPOCH": EPOCH}
    src = ctx / "src"
    seen: dict[str, list[str]] = {}
    states = ["a", "b", "a", "c", "b"]
    for n, state in enumerate(states):
        shutil.rmtree(src / "flip", ignore_errors=True)
        if (src / "flip").exists() or (src / "flip").is_symlink():
            (src / "flip").unlink()
        if state == "a":
            _write(src / "flip", "file\n")
        elif state == "b":
            _write(src / "flip" / "inner", "dir\n")
        else:
            (src / "flip").symlink_to("keep.txt")
        _write(src / "state.txt", state)
        _age(ctx)
        # --no-cache: each build runs its copies (incrementally from the last one's layer)
        bt.build(busybox, ctx, "-t", f"flip:{n}", "--no-cache", env=env)
        ids = diff_ids(busybox, f"flip:{n}")
        if state in seen:
            assert ids == seen[state], (n, state)
        seen[state] = ids
    assert len({tuple(v) for v in seen.values()}) == 3


def test_an_edited_copy_starts_from_scratch(busybox: Any, bt: Any, tmp_path: Path) -> None:
    """The same slot on the same layers with another destination: nothing of the previous
    layer is kept (not even the directory it made for its destination)."""
    ctx = make_ctx(tmp_path)
    (ctx / "Dockerfile").write_text("FROM busybox\nWORKDIR /app\nCOPY src/ ./src/\n")
    bt.build(busybox, ctx, "-t", "ed:1")
    (ctx / "Dockerfile").write_text("FROM busybox\nWORKDIR /app\nCOPY src/ ./other/\n")
    _, ev = bt.build(busybox, ctx, "-t", "ed:2")
    assert [e["name"].split("] ", 1)[1] for e in ev if e["kind"] == "start"] == [
        "COPY src/ ./other/"]
    fs = bt.rootfs(busybox, "ed:2", tmp_path / "fs")
    assert (fs / "app/other/keep.txt").read_text() == "keep\n"
    assert not (fs / "app/src").exists()
