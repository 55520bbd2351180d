"""A big blob's pull in three threads (received; hashed and written; inflated to count the
layer's content size), against the real ``docker-registry``: the same blobs and sizes as a
small one's, a cut resumed, and a failure on either side of a thread leaving the store as it was."""

from __future__ import annotations

import errno
import os
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from registry_server import (
    Fault,
    FaultProxy,
    Registry,
    busybox_layer_tar,
    file_tar,
    make_image,
    unique_repo,
)

from registry import transfer
from registry.client import Backoff
from registry.compression import Pipelined
from registry.digest import Digest
from registry.errors import DigestError, StoreError
from registry.reference import Reference
from registry.store import BlobWriter, Store
from registry.transfer import ends

FAST = {"backoff": Backoff(attempts=6, base=0.05, cap=0.2)}


def big_image(store: Store, name: str) -> Any:
    """busybox, a 12 MB text layer (hex, about half compressible) and an incompressible 9 MB
    one: both layer blobs are past ``PIPELINE_MIN``, the config and busybox are not."""
    text = os.urandom(6 << 20).hex().encode()
    image = make_image(store, name, layers=[busybox_layer_tar(), file_tar("a.txt", text),
                                            file_tar("b.bin", os.urandom(9 << 20))])
    assert [d.size >= ends.PIPELINE_MIN for d in image.layers] == [False, True, True]
    return image


def listing(root: Path) -> list[tuple[str, int]]:
    """Every path under *root* with its size, lock files aside."""
    return sorted((str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1)
                  for p in root.rglob("*") if not p.name.endswith(".lock"))


def stages_alive() -> list[threading.Thread]:
    """The stage threads still running (a ``Pipelined``'s thread keeps its target until done)."""
    return [t for t in threading.enumerate()
            if isinstance(getattr(getattr(t, "_target", None), "__self__", None), Pipelined)]


def pushed(plain_registry: Registry, env: Path) -> tuple[Store, Any, str]:
    src = Store(env / "src")
    image = big_image(src, "big:1")
    repo = unique_repo()
    transfer.push(src, "big:1", f"{plain_registry.addr}/{repo}:v1")
    return src, image, repo


@pytest.mark.parametrize("workers", [1, 3])
def test_big_layers_pull_in_stages_with_their_sizes(plain_registry: Registry, env: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   workers: int) -> None:
    src, image, repo = pushed(plain_registry, env)
    want = [src.content_size(d) for d in image.layers]
    writers: list[tuple[BlobWriter, str]] = []
    write = ends._Storing.write

    def seen(self: ends._Storing, data: bytes) -> int:
        writers.append((self.writer, threading.current_thread().name))
        return write(self, data)

    monkeypatch.setattr(ends._Storing, "write", seen)
    # each blob's store: (in stages, entered, left), the window inside its count as received
    stores: dict[Digest, tuple[bool, float, float]] = {}
    store_blob = ends.StoreEnd._store_blob

    def timed(self: ends.StoreEnd, desc: Any, *args: Any) -> None:
        entered = time.monotonic()
        store_blob(self, desc, *args)
        stores[desc.digest] = (args[-1], entered, time.monotonic())

    monkeypatch.setattr(ends.StoreEnd, "_store_blob", timed)

    def no_reread(*_a: object, **_k: object) -> None:
        raise tarfile.TarError("read again")

    monkeypatch.setattr(tarfile, "open", no_reread)
    dst = Store(env / "dst")
    events: list[transfer.Event] = []
    target = f"{plain_registry.addr}/{repo}:v1"
    pulled = transfer.pull(dst, target, max_concurrent=workers, progress=events.append)
    assert pulled.descriptor.digest == image.descriptor.digest
    for d in [pulled.manifest.config, *pulled.layers]:
        with dst.open_blob(d.digest) as f:
            assert Digest.of_stream(f) == (d.digest, d.size)
    # counted as the bytes passed, by the inflating stage, not read again
    assert [dst.content_size(d) for d in pulled.layers] == want
    assert dst.lookup(target).size == sum(want)
    # a big blob received alone was hashed and written away from the receiving threads (a
    # small one in the thread that received it); of two received at once (3 workers), the
    # one that started second was hashed and written by its own worker
    big = [d.digest for d in pulled.layers[1:]]
    threads = {d: {name for w, name in writers if w.digest == d} for d in big}
    assert all(len(names) == 1 for names in threads.values())
    for d in big:
        by_worker = next(iter(threads[d])).startswith("pybuild-blob")
        assert by_worker == (not stores[d][0]), (d, threads[d], stores[d])
    overlapped = max(stores[d][1] for d in big) < min(stores[d][2] for d in big)
    assert overlapped or workers == 1  # (3 workers: the config and busybox go first)
    assert [stores[d][0] for d in big].count(True) == (1 if overlapped else 2)
    small = {name for w, name in writers if w.size < ends.PIPELINE_MIN}
    assert small and all(n.startswith("pybuild-blob") or n == "MainThread" for n in small)
    assert not stages_alive()
    # progress as before: start, bytes in order up to the size, done, for every blob
    for d in [pulled.manifest.config, *pulled.layers]:
        mine = [e for e in events if e.digest == d.digest]
        assert [mine[0].kind, mine[-1].kind] == ["start", "done"]
        counts = [e.current for e in mine if e.kind == "progress"]
        assert counts == sorted(counts) and counts[-1] == d.size
    assert not list((dst.path / "ingest").iterdir())


def test_big_layer_cut_twice_is_resumed(fault_proxy: FaultProxy, plain_registry: Registry,
                                        env: Path) -> None:
    src, image, repo = pushed(plain_registry, env)
    big = image.layers[2].digest
    fault_proxy.add(Fault("GET", f"/blobs/{big}", "cut", after=5 << 20, times=2))
    dst = Store(env / "dst")
    end = transfer.remote_end(f"{fault_proxy.addr}/{repo}:v1", **FAST)
    result = transfer.copy(end, transfer.StoreEnd(dst, "x:1", Reference.parse("x:1")))
    assert result.descriptor.digest == image.descriptor.digest
    with dst.open_blob(big) as f:
        assert Digest.of_stream(f) == (big, image.layers[2].size)
    assert dst.content_size(image.layers[2]) == src.content_size(image.layers[2])
    assert all(f.times == 0 for f in fault_proxy.faults), fault_proxy.faults


def test_corrupted_big_layer_fails_and_store_unchanged(fault_proxy: FaultProxy,
                                                       plain_registry: Registry, env: Path) -> None:
    _src, image, repo = pushed(plain_registry, env)
    store = Store(env / "dst")
    make_image(store, "base:1")
    before = listing(store.path)
    fault_proxy.add(Fault("GET", f"/blobs/{image.layers[1].digest}", "corrupt",
                          after=6 << 20, times=100))
    with pytest.raises(DigestError, match="digest mismatch"):
        transfer.pull(store, f"{fault_proxy.addr}/{repo}:v1")
    assert listing(store.path) == before


def test_disk_full_in_the_writing_thread_is_one_error_and_store_unchanged(
        plain_registry: Registry, env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writing stage's error reaches the pull (as the store's one-line 'no space left'),
    the receiving stage stops, and nothing of the pull stays behind."""
    _src, image, repo = pushed(plain_registry, env)
    store = Store(env / "dst")
    make_image(store, "base:1")
    before = listing(store.path)
    write = BlobWriter.write

    def full(self: BlobWriter, data: bytes) -> int:
        if self.size + len(data) > 3 << 20:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(self, data)

    monkeypatch.setattr(BlobWriter, "write", full)
    with pytest.raises(StoreError, match=r"no space left on device under .*: writing blob sha256:"):
        transfer.pull(store, f"{plain_registry.addr}/{repo}:v1", max_concurrent=1)
    monkeypatch.setattr(BlobWriter, "write", write)
    assert listing(store.path) == before
    assert not stages_alive()
