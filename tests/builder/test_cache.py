"""``builder.imagebuild.cache.BuildCache`` on its own: records, blob links, damage, concurrency, prune."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

from builder.imagebuild.cache import BuildCache, CacheRecord
from registry import mediatypes as mt
from registry.digest import Digest
from registry.model import Descriptor
from registry.store import Store


def make(tmp_path: Path) -> tuple[BuildCache, Store]:
    store = Store(tmp_path / "store")
    return BuildCache(tmp_path / "cache", store), store


def layer(store: Store, data: bytes) -> tuple[Descriptor, Digest]:
    d = store.put_bytes(data)
    return Descriptor(mt.OCI_LAYER, d, len(data)), Digest.of(data)


def test_put_get_roundtrip_and_miss(tmp_path: Path) -> None:
    cache, store = make(tmp_path)
    desc, diff = layer(store, b"layer-one")
    rec = CacheRecord("k1", desc, diff, "RUN x # buildkit", "2026-01-01T00:00:00Z", {"parent": "p"})
    cache.put(rec)
    got = cache.get("k1")
    assert got == rec and got.inputs == {"parent": "p"} and got.created == rec.created
    assert cache.get("k2") is None
    empty = CacheRecord("k3", None, None, "RUN true # buildkit")
    cache.put(empty)
    assert cache.get("k3") == empty
    assert cache.referenced_blobs() == {desc.digest}


def test_damaged_record_is_a_miss(tmp_path: Path) -> None:
    cache, store = make(tmp_path)
    desc, diff = layer(store, b"x")
    cache.put(CacheRecord("abcd", desc, diff, "c"))
    path = tmp_path / "cache" / "records" / "ab" / "abcd.json"
    path.write_bytes(b"{not json")
    assert cache.get("abcd") is None


def test_blob_gone_from_store_and_cache_is_a_miss(tmp_path: Path) -> None:
    cache, store = make(tmp_path)
    desc, diff = layer(store, b"y")
    cache.put(CacheRecord("k", desc, diff, "c"))
    store.gc()  # nothing references it: the store drops it, our link keeps it
    assert not store.has_blob(desc.digest)
    assert cache.get("k") is not None and store.has_blob(desc.digest)
    store.gc()
    (tmp_path / "cache" / "blobs" / "sha256" / desc.digest.encoded).unlink()
    assert cache.get("k") is None


def _writer(root: str, n: int) -> None:
    cache, store = make(Path(root))
    for i in range(50):
        desc, diff = layer(store, f"blob-{i}".encode())
        cache.put(CacheRecord(f"key{i:03d}", desc, diff, f"writer {n}"))
        got = cache.get(f"key{i:03d}")
        assert got is not None and got.layer == desc


def test_concurrent_writers_never_expose_partial_records(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), n)) for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    cache, _ = make(tmp_path)
    assert len(list(cache.inputs_index())) == 50


def test_prune_keep_storage_drops_least_recently_used(tmp_path: Path) -> None:
    cache, store = make(tmp_path)
    for i in range(4):
        desc, diff = layer(store, bytes([i]) * 1000)
        cache.put(CacheRecord(f"k{i}", desc, diff, "c"))
        old = time.time() - 1000 + i
        os.utime(tmp_path / "cache" / "records" / f"k{i}"[:2] / f"k{i}.json", (old, old))
    res = cache.prune(keep_storage=2000)
    assert res.records == 2
    assert cache.get("k0") is None and cache.get("k1") is None
    assert cache.get("k2") is not None and cache.get("k3") is not None
    assert res.freed == 2000  # nothing else referenced those layers
    assert cache.usage() == 2000
    res = cache.prune(all=True)
    assert res.records == 2 and cache.usage() == 0
    assert not any(store.has_blob(Digest.of(bytes([i]) * 1000)) for i in range(4))


def test_prune_default_keeps_recent_records(tmp_path: Path) -> None:
    cache, store = make(tmp_path)
    desc, diff = layer(store, b"recent")
    cache.put(CacheRecord("k", desc, diff, "c"))
    assert cache.prune().records == 0
    assert cache.get("k") is not None



def test_prune_drops_parsed_dockerfiles_unused_for_48_hours(tmp_path: Path) -> None:
    from builder.imagebuild.dockerfile.parsecache import load_cached

    cache, _store = make(tmp_path)
    parsed = tmp_path / "cache" / "dockerfiles"
    load_cached("FROM a\n", filename="Dockerfile", directory=parsed)
    (old,) = parsed.glob("*.pickle")
    load_cached("FROM b\n", filename="Dockerfile", directory=parsed)
    (recent,) = set(parsed.glob("*.pickle")) - {old}
    three_days_ago = time.time() - 72 * 3600
    os.utime(old, (three_days_ago, three_days_ago))
    res = cache.prune()
    assert not old.exists() and recent.exists()
    assert res.freed > 0
    # a hit marks the entry used: it survives a default prune however old it was
    os.utime(recent, (three_days_ago, three_days_ago))
    load_cached("FROM b\n", filename="Dockerfile", directory=parsed)
    cache.prune()
    assert recent.exists()


def test_prune_drops_incremental_copy_records(tmp_path: Path) -> None:
    """``cache/copies`` (an incremental COPY's record of what it made, which can name 200,000
    paths) goes with the rest of the build cache: unused for 48 hours by default, all with -a."""
    from builder.base.state import StateRoot
    from builder.imagebuild.execute.incremental import Previous

    cache, _store = make(tmp_path)
    state = StateRoot(tmp_path)
    assert state.cache == cache.path
    old, recent = Previous(state, "old", [], "COPY a /"), Previous(state, "recent", [], "COPY b /")
    old.save("0" * 64, {"a": "x"})
    recent.save("1" * 64, {"b": "y"})
    three_days_ago = time.time() - 72 * 3600
    os.utime(old.file, (three_days_ago, three_days_ago))
    assert cache.prune().freed > 0
    assert not old.file.exists() and recent.file.exists()
    cache.prune(all=True)
    assert not recent.file.exists()
