"""The context's hash memo (``builder.imagebuild.context.HashMemo``): one file per directory of hashed
files, so a cached build writes nothing, a changed file rewrites its directory's memo only,
and a build never reads another context's memo."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from builder.imagebuild.context import HashMemo


def _hash_all(memo: HashMemo, files: list[Path]) -> list[str]:
    return [memo.sha256(str(f), os.lstat(f)) for f in files]


def _state(d: Path) -> dict[str, tuple[int, int]]:
    return {f.name: (f.stat().st_ino, f.stat().st_mtime_ns) for f in d.iterdir()}


def test_memo_writes_only_what_changed(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    files = []
    for sub in ("a", "b"):
        (ctx / sub).mkdir(parents=True)
        for i in range(3):
            f = ctx / sub / f"f{i}"
            f.write_text(f"{sub}{i}\n")
            files.append(f)
    path = tmp_path / "cache" / "filehash.json"
    path.parent.mkdir()
    path.write_text("{}")  # the single file an older pybuild kept
    memo = HashMemo(path)
    digests = _hash_all(memo, files)
    assert digests == [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    memo.save()
    shards = tmp_path / "cache" / "filehash"
    assert len(list(shards.iterdir())) == 2  # one per directory
    assert not path.exists()
    before = _state(shards)

    again = HashMemo(path)  # a fully cached build: every hash served, nothing written
    assert _hash_all(again, files) == digests
    again.save()
    assert _state(shards) == before

    (ctx / "b" / "f1").write_text("changed, and longer\n")
    third = HashMemo(path)
    new = _hash_all(third, files)
    assert new[4] == hashlib.sha256(b"changed, and longer\n").hexdigest()
    assert new[:4] + new[5:] == digests[:4] + digests[5:]
    third.save()
    after = _state(shards)
    assert len(after) == 2 and sum(after[k] != before[k] for k in after) == 1


def test_forget_drops_a_gone_context_only(tmp_path: Path) -> None:
    keep, gone = tmp_path / "keep", tmp_path / "upload"
    (gone / "sub").mkdir(parents=True)
    keep.mkdir()
    files = [keep / "k", gone / "g", gone / "sub" / "s"]
    for f in files:
        f.write_text(f.name)
    path = tmp_path / "cache" / "filehash.json"
    memo = HashMemo(path)
    _hash_all(memo, files)
    memo.save()
    assert len(list((tmp_path / "cache" / "filehash").iterdir())) == 3
    later = HashMemo(path)  # as serve's cleanup: a fresh memo, the upload already removed
    later.forget(str(gone))
    later.save()
    left = list((tmp_path / "cache" / "filehash").iterdir())
    assert len(left) == 1 and left[0].read_bytes().startswith(b'"' + str(keep).encode() + b'"\n')


def test_a_damaged_memo_is_a_miss(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("data")
    path = tmp_path / "filehash.json"
    memo = HashMemo(path)
    memo.sha256(str(f), os.lstat(f))
    memo.save()
    for shard in (tmp_path / "filehash").iterdir():
        shard.write_bytes(b"not json")
    assert HashMemo(path).sha256(str(f), os.lstat(f)) == hashlib.sha256(b"data").hexdigest()
