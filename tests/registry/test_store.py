"""The local store: verified atomic blob writes, tags in index.json, lookup, rmi, gc, and
concurrent writers on one root."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from syscounts import write_calls

from registry import mediatypes as mt
from registry.digest import Digest
from registry.errors import BlobUnknown, DigestError, InvalidReference, NotFound, StoreError
from registry.leases import new_temp
from registry.model import Descriptor, ImageConfig, Manifest
from registry.reference import Reference
from registry.store import IMAGE_ID, REF_NAME, WRITE_MAX, Store

REPO = Path(__file__).resolve().parents[2]


def make_image(store: Store, seed: str) -> tuple[Descriptor, ImageConfig]:
    layer = f"layer {seed}".encode() * 1000
    diff_id = store.put_bytes(layer)
    config = ImageConfig.build({"architecture": "amd64", "os": "linux", "created": "2024-05-01T00:00:00Z",
                                "rootfs": {"type": "layers", "diff_ids": [str(diff_id)]},
                                "config": {"Cmd": [seed]}})
    manifest = Manifest.build(Descriptor(mt.OCI_CONFIG, config.digest, config.size),
                              [Descriptor(mt.OCI_LAYER, diff_id, len(layer))])
    return store.put_image(manifest, config), config


def blob_files(store: Store) -> list[str]:
    return sorted(p.name for p in (store.path / "blobs" / "sha256").iterdir())


def test_blob_writes_are_verified_and_atomic(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    d = store.put_bytes(b"hello")
    assert store.read_blob(d) == b"hello" and store.blob_size(d) == 5
    assert store.put_bytes(b"hello") == d  # idempotent
    with pytest.raises(DigestError, match="digest mismatch"):
        store.put_bytes(b"hellO", Digest.of(b"hello2"))
    with pytest.raises(DigestError, match="size"):
        with store.writer() as w:
            w.write(b"abc")
            w.commit(Digest.of(b"abc"), 4)
    with store.writer() as w:  # left without commit: nothing published
        w.write(b"partial")
    assert blob_files(store) == [d.encoded]
    assert list((store.path / "ingest").iterdir()) == []
    with pytest.raises(BlobUnknown):
        store.open_blob(Digest.of(b"nope"))
    (store.path / "blobs" / "sha256" / d.encoded).write_bytes(b"HELLO")
    with pytest.raises(DigestError, match="corrupt"):
        store.read_blob(d)


def test_a_big_write_reaches_the_kernel_in_writes_of_at_most_write_max(tmp_path: Path) -> None:
    # the page cache sizes its folios by the write: big writes cost ~4x here (see WRITE_MAX)
    store = Store(tmp_path / "s")
    data = bytes(range(256)) * (4 * WRITE_MAX // 256 + 1)  # four WRITE_MAX and 256 bytes
    with store.writer() as w:
        before = write_calls()
        w.write(data)
        w.flush()
        calls = write_calls() - before
        d = w.commit(Digest.of(data), len(data))
    assert calls == 5
    assert store.read_blob(d) == data


def test_tagging_an_image_as_it_is_tagged_leaves_the_index_alone(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    one, _ = make_image(store, "one")
    two, _ = make_image(store, "two")
    store.add(one, Reference.parse("app:1"))
    store.add(two, Reference.parse("app:2"))
    index = store.path / "index.json"
    before = index.stat().st_ino
    store.add(one, Reference.parse("app:1"))  # a cached build tags what it tagged
    assert index.stat().st_ino == before
    assert [r.reference and str(r.reference) for r in store.images()] == [
        "docker.io/library/app:1", "docker.io/library/app:2"]
    store.add(two, Reference.parse("app:1"))  # moved: rewritten, the old image dangling
    assert index.stat().st_ino != before
    assert {str(r.reference) if r.reference else r.descriptor.digest for r in store.images()} == {
        "docker.io/library/app:1", "docker.io/library/app:2", one.digest}


def test_new_temp_files_are_fresh_and_private(tmp_path: Path) -> None:
    made = [new_temp(tmp_path, ".index.json.") for _ in range(50)]
    try:
        assert len({name for _, name in made}) == 50
        for fd, name in made:
            assert Path(name).parent == tmp_path and Path(name).name.startswith(".index.json.")
            assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600 and not os.get_inheritable(fd)
    finally:
        for fd, _ in made:
            os.close(fd)


def test_put_manifest_needs_its_blobs(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    m = Manifest.build(Descriptor(mt.OCI_CONFIG, Digest.of(b"{}"), 2), [])
    with pytest.raises(BlobUnknown, match="missing from the store"):
        store.put_manifest(m)


def test_tags_lookup_and_index(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    desc, config = make_image(store, "one")
    store.add(desc, Reference.parse("app:1"))
    store.tag("app:1", Reference.parse("localhost:5000/app:2"))
    index = json.loads((store.path / "index.json").read_bytes())
    names = sorted(m["annotations"][REF_NAME] for m in index["manifests"])
    assert names == ["docker.io/library/app:1", "localhost:5000/app:2"]
    assert index["manifests"][0]["annotations"][IMAGE_ID] == str(config.digest)
    assert json.loads((store.path / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    for text in ("app:1", "docker.io/library/app:1", config.digest.encoded[:12],
                 str(config.digest), config.digest.encoded[:5], f"app@{desc.digest}"):
        assert store.lookup(text).descriptor.digest == desc.digest, text
    image = store.resolve("app:1")
    assert image.id == config.digest and image.config.config == {"Cmd": ["one"]}
    with pytest.raises(NotFound, match="No such image: app:3"):
        store.lookup("app:3")
    with pytest.raises(InvalidReference):
        store.lookup("UPPER/case")


def test_retag_leaves_the_old_image_dangling(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    one, _ = make_image(store, "one")
    two, _ = make_image(store, "two")
    store.add(one, Reference.parse("app:1"))
    store.add(two, Reference.parse("app:1"))
    records = store.images()
    assert [(r.reference, r.descriptor.digest) for r in records] == [
        (None, one.digest), (Reference.parse("app:1"), two.digest)]
    store.add(two, None)  # already tagged: no dangling duplicate
    assert len(store.images()) == 2


def test_remove_and_gc(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    desc, config = make_image(store, "one")
    store.add(desc, Reference.parse("app:1"))
    store.add(desc, Reference.parse("app:2"))
    orphan = store.put_bytes(b"orphan")
    with pytest.raises(StoreError, match="must be forced"):
        store.remove(config.digest.encoded[:12])
    assert store.remove("app:2") == ["Untagged: app:2"]
    assert store.gc() == (1, len(b"orphan"))
    assert not store.has_blob(orphan) and store.has_blob(desc.digest)
    assert store.remove(config.digest.encoded[:7]) == ["Untagged: app:1", f"Deleted: {config.digest}"]
    removed, freed = store.gc()
    assert removed == 3 and freed > 0 and blob_files(store) == []
    with pytest.raises(NotFound):
        store.remove("app:1")


def test_gc_keeps_blobs_under_a_lease_holder(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    d = store.put_bytes(b"in flight")
    code = ("import sys; from registry.store import Store; "
            f"print(Store({str(store.path)!r}).gc())")
    with store.lease():  # a concurrent gc waits for the lease to end
        p = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
        with pytest.raises(subprocess.TimeoutExpired):
            p.wait(timeout=1)
        assert store.has_blob(d)
    out, _ = p.communicate(timeout=30)
    assert out.strip() == "(1, 9)" and not store.has_blob(d)


def test_concurrent_writers_keep_every_tag(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    desc, _ = make_image(store, "base")
    store.add(desc, Reference.parse("base:1"))
    code = """
import sys
from registry.store import Store
from registry.reference import Reference
s = Store(sys.argv[1])
for i in range(15):
    s.tag("base:1", Reference.parse(f"w{sys.argv[2]}:{i}"))
"""
    procs = [subprocess.Popen([sys.executable, "-c", code, str(store.path), str(n)], cwd=REPO)
             for n in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 4
    names = {str(r.reference) for r in store.images()}
    assert len(names) == 1 + 4 * 15
    assert "docker.io/library/w3:14" in names


def test_gc_without_waiting_skips_while_leased(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    d = store.put_bytes(b"in flight")
    code = ("from registry.store import Store; "
            f"print(Store({str(store.path)!r}).gc(wait=False))")
    with store.lease():
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                             text=True, timeout=30).stdout
        assert out.strip() == "(0, 0)" and store.has_blob(d)
    assert store.gc(wait=False) == (1, 9)


def test_concurrent_first_use_of_a_fresh_store(tmp_path: Path) -> None:
    """Processes racing to create the layout never lose each other's index entries."""
    root = tmp_path / "fresh"
    rootfs = tmp_path / "fs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "hostname").write_text("x\n")
    code = """
import sys
from pathlib import Path
from registry import archive
from registry.reference import Reference
from registry.store import Store
archive.import_rootfs(Store(sys.argv[1]), Path(sys.argv[2]), reference=Reference.parse(f"p{sys.argv[3]}:1"))
"""
    procs = [subprocess.Popen([sys.executable, "-c", code, str(root), str(rootfs), str(n)], cwd=REPO)
             for n in range(6)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 6
    names = sorted(str(r.reference) for r in Store(root).images())
    assert names == [f"docker.io/library/p{n}:1" for n in range(6)]
    assert json.loads((root / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}


def test_a_name_that_is_also_an_id_prefix_is_a_reference_first(tmp_path: Path) -> None:
    # Docker: "abc123" is tried as abc123:latest, then as an ID prefix; a full 64-hex or
    # sha256: form is only ever an ID
    store = Store(tmp_path / "s")
    tagged, tagged_config = make_image(store, "tagged")
    other, other_config = make_image(store, "other")
    prefix = other_config.digest.encoded[:12]
    assert not tagged_config.digest.encoded.startswith(prefix)
    store.add(other, None)
    assert store.lookup(prefix).descriptor.digest == other.digest  # no such tag yet: an ID
    store.add(tagged, Reference.parse(f"{prefix}:latest"))
    assert store.lookup(prefix).descriptor.digest == tagged.digest  # now the tag wins
    assert store.lookup(f"{prefix}:latest").descriptor.digest == tagged.digest
    for as_id in (f"sha256:{prefix}", other_config.digest.encoded, str(other_config.digest)):
        assert store.lookup(as_id).descriptor.digest == other.digest, as_id
    with pytest.raises(NotFound, match="No such image: sha256:0000000"):
        store.lookup("sha256:0000000")
    # rmi by the name untags the tagged image; by the same text again, it is the ID
    assert store.remove(prefix) == [f"Untagged: {prefix}:latest", f"Deleted: {tagged_config.digest}"]
    assert store.lookup(prefix).descriptor.digest == other.digest
    assert store.remove(prefix) == [f"Deleted: {other_config.digest}"]
    assert store.images() == []


def test_rmi_of_a_full_id_deletes_even_when_a_tag_reads_the_same(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    one, one_config = make_image(store, "one")
    two, two_config = make_image(store, "two")
    short = one_config.digest.encoded[:12]
    store.add(one, Reference.parse("app:1"))
    store.add(two, Reference.parse(f"{short}:latest"))  # a tag spelled as one's ID prefix
    assert store.remove(f"sha256:{short}") == ["Untagged: app:1", f"Deleted: {one_config.digest}"]
    assert [str(r.reference) for r in store.images()] == [f"docker.io/library/{short}:latest"]
    assert store.remove(short) == [f"Untagged: {short}:latest", f"Deleted: {two_config.digest}"]
    assert store.images() == []
