"""The build cache seen from ``pybuild build``: what reruns, what does not, and why (events)."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any

DOCKERFILE = """\
FROM busybox
ARG USED=1
RUN echo "used=$USED" > /used
COPY a.txt /a.txt
RUN cat /a.txt > /a.copy
COPY b.txt /b.txt
RUN cat /b.txt > /b.copy
CMD ["cat", "/a.copy", "/b.copy"]
"""


def make_ctx(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "a.txt").write_text("a1\n")
    (ctx / "b.txt").write_text("b1\n")
    return ctx


def runs(events: list[dict[str, Any]]) -> list[str]:
    return [e["name"].split("] ", 1)[1] for e in events if e["kind"] == "start"]


def test_second_build_runs_nothing(busybox: Any, bt: Any, tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    r1, ev1 = bt.build(busybox, ctx, "-t", "c:1")
    assert len(runs(ev1)) == 5
    r2, ev2 = bt.build(busybox, ctx, "-t", "c:2")
    assert runs(ev2) == []
    assert len(bt.cached(ev2)) == 5
    store = busybox.store()
    # same layers, same config: a cached rebuild gives the very same image
    assert store.resolve("c:1").id == store.resolve("c:2").id


def test_changing_a_file_reruns_only_later_steps(busybox: Any, bt: Any, tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    bt.build(busybox, ctx, "-t", "c:1")
    (ctx / "b.txt").write_text("b2\n")
    _, ev = bt.build(busybox, ctx, "-t", "c:2")
    assert runs(ev) == ["COPY b.txt /b.txt", "RUN cat /b.txt > /b.copy"]
    root = bt.rootfs(busybox, "c:2", tmp_path / "fs")
    assert (root / "b.copy").read_text() == "b2\n"
    # touching a file without changing it (mtime only) is no change
    import os

    os.utime(ctx / "a.txt", (1, 1))
    _, ev = bt.build(busybox, ctx, "-t", "c:3")
    assert runs(ev) == []


def test_unused_build_arg_reruns_nothing_used_one_reruns(busybox: Any, bt: Any, tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    bt.build(busybox, ctx, "-t", "c:1")
    _, ev = bt.build(busybox, ctx, "-t", "c:2", "--build-arg", "UNUSED=x")
    assert runs(ev) == []
    assert any("UNUSED" in e["text"] for e in ev if e["kind"] == "warning")
    _, ev = bt.build(busybox, ctx, "-t", "c:3", "--build-arg", "USED=2")
    assert len(runs(ev)) == 5  # the first RUN sees USED, and everything after it is on top


def test_plain_progress_says_why_a_step_missed(busybox: Any, tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    busybox("build", "--progress=plain", "-t", "c:1", str(ctx))
    (ctx / "b.txt").write_text("changed\n")
    out = busybox("build", "--progress=plain", "-t", "c:2", str(ctx)).stderr
    assert "cache miss: files changed: b.txt" in out
    out = busybox("build", "--progress=plain", "--build-arg", "USED=9", "-t", "c:3", str(ctx)).stderr
    assert "cache miss: build arg USED changed: '1' -> '9'" in out
    (ctx / "Dockerfile").write_text(DOCKERFILE.replace("cat /b.txt > /b.copy", "cat /b.txt >/b.copy"))
    out = busybox("build", "--progress=plain", "--build-arg", "USED=9", "-t", "c:4", str(ctx)).stderr
    assert "cache miss: instruction changed" in out
    assert "CACHED" in out


def test_source_date_epoch_gives_identical_digests(busybox: Any, bt: Any, pybuild_factory: Any,
                                                    busybox_tar: Path, tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    bt.build(busybox, ctx, "-t", "r:0")  # records made without the epoch must not be reused
    _, ev = bt.build(busybox, ctx, "-t", "r:1", "--build-arg", "SOURCE_DATE_EPOCH=0")
    assert len(runs(ev)) == 5
    d1 = busybox.store().lookup("r:1").descriptor.digest
    # a second build from scratch (no cache), on another state root, with the env variable
    from registry import archive
    from registry.reference import Reference

    other = pybuild_factory()
    archive.import_rootfs(other.store(), busybox_tar, reference=Reference.parse("busybox:latest"),
                          config={"Cmd": ["sh"]})
    # the base must be the same image for the digests to match: copy ours over
    other_base = other.store().resolve("busybox:latest")
    if other_base.id != busybox.store().resolve("busybox:latest").id:
        import shutil

        shutil.rmtree(other.root / "store")
        shutil.copytree(busybox.root / "store", other.root / "store")
    import os

    os.utime(ctx / "a.txt", (12345, 12345))  # mtimes differ between the two builds
    bt.build(other, ctx, "-t", "r:1", "--no-cache", env={"SOURCE_DATE_EPOCH": "0"})
    d2 = other.store().lookup("r:1").descriptor.digest
    assert d1 == d2
    img = other.store().resolve("r:1")
    assert img.config.created == "1970-01-01T00:00:00Z"


def test_no_cache_and_no_cache_filter(busybox: Any, bt: Any, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM busybox AS one\nRUN echo 1 > /one\n"
        "FROM busybox AS two\nRUN echo 2 > /two\n"
        "FROM busybox\nCOPY --from=one /one /one\nCOPY --from=two /two /two\n")
    bt.build(busybox, ctx, "-t", "m:1")
    _, ev = bt.build(busybox, ctx, "-t", "m:2", "--no-cache-filter", "two")
    # only stage two ignores the cache; what uses it is keyed by its (unchanged) stage key
    assert runs(ev) == ["RUN echo 2 > /two"]
    _, ev = bt.build(busybox, ctx, "-t", "m:3", "--no-cache")
    assert len(runs(ev)) == 4


def test_cache_mount_persists_across_builds(busybox: Any, bt: Any, tmp_path: Path) -> None:
    import shutil

    ctx = tmp_path / "ctx"
    shutil.copytree(Path(__file__).resolve().parents[2] / "testdata" / "contexts" / "cachemount", ctx)
    bt.build(busybox, ctx, "-t", "cm:1")
    bt.build(busybox, ctx, "-t", "cm:2", "--build-arg", "BUMP=1")
    root = bt.rootfs(busybox, "cm:2", tmp_path / "fs")
    assert (root / "count").read_text() == "bump=1 count=2\n"
    assert not (root / "var/cache/counter/n").exists()


def test_concurrent_builds_share_the_cache_safely(busybox: Any, tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    results: list[subprocess.CompletedProcess[str]] = []

    def one(tag: str) -> None:
        results.append(busybox("build", "-q", "-t", tag, str(ctx), check=False))

    threads = [threading.Thread(target=one, args=(f"par:{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.returncode for r in results] == [0, 0, 0], [r.stderr for r in results]
    store = busybox.store()
    layers = {tuple(d.digest for d in store.resolve(f"par:{i}").manifest.layers) for i in range(3)}
    # every build made or reused valid layers; a later build is fully cached
    assert all(len(ls) == 6 for ls in layers)
    r = busybox("build", "--progress=rawjson", "-t", "par:x", str(ctx))
    assert '"kind": "start"' not in r.stderr


def test_prune(busybox: Any, bt: Any, tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    bt.build(busybox, ctx, "-t", "p:1")
    out = busybox("builder", "prune", "--keep-storage", "100GB").stdout
    assert "Deleted build cache objects: 0" in out
    _, ev = bt.build(busybox, ctx, "-t", "p:2")
    assert runs(ev) == []
    busybox("rmi", "p:1", "p:2")
    # the typed Dockerfile was cached by the first build; a default prune keeps a recent entry
    parsed = busybox.root / "cache" / "dockerfiles"
    assert len(list(parsed.glob("*.pickle"))) == 1
    busybox("builder", "prune")
    assert len(list(parsed.glob("*.pickle"))) == 1
    out = busybox("builder", "prune", "--all", "-f").stdout
    assert "Deleted build cache objects: 5" in out
    assert "Total reclaimed space: 0B" not in out
    assert not list((busybox.root / "cache" / "records").glob("*/*.json"))
    assert not list(parsed.iterdir())
    _, ev = bt.build(busybox, ctx, "-t", "p:3")
    assert len(runs(ev)) == 5


def test_cache_survives_store_gc(busybox: Any, bt: Any, tmp_path: Path) -> None:
    """A store gc that does not know the cache takes unreferenced layers: the cache keeps its
    own link and puts the blob back on a hit."""
    ctx = make_ctx(tmp_path)
    bt.build(busybox, ctx, "-t", "g:1")
    store = busybox.store()
    built = [d.digest for d in store.resolve("g:1").manifest.layers[1:]]
    busybox("rmi", "g:1")  # rmi runs the store's gc, which knows nothing of the cache
    store.gc()
    assert not any(store.has_blob(d) for d in built)
    _, ev = bt.build(busybox, ctx, "-t", "g:2")
    assert runs(ev) == []
    img = store.resolve("g:2")
    assert all(store.has_blob(d.digest) for d in img.manifest.layers)
