"""Golden build cases: each ``testdata/contexts/<case>/`` is built on the offline busybox base and
its image checked against ``expected.json`` (config, files of the merged layers, layer entries)."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

CASES_DIR = Path(__file__).resolve().parents[2] / "testdata" / "contexts"
CASES = sorted(p.name for p in CASES_DIR.iterdir() if (p / "expected.json").exists())


def prepare(case: str, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    ctx = tmp_path / "ctx"
    shutil.copytree(CASES_DIR / case, ctx, symlinks=True)
    (ctx / "expected.json").unlink()
    expected = json.loads((CASES_DIR / case / "expected.json").read_text())
    return ctx, expected


def build_args_for(expected: dict[str, Any], tmp_path: Path) -> list[str]:
    args: list[str] = []
    for k, v in expected.get("build_args", {}).items():
        args += ["--build-arg", f"{k}={v}"]
    if expected.get("target"):
        args += ["--target", expected["target"]]
    for sid, value in expected.get("secrets", {}).items():
        f = tmp_path / f"secret-{sid}"
        f.write_text(value)
        args += ["--secret", f"id={sid},src={f}"]
    return args


def build_case(busybox: Any, bt: Any, case: str, tmp_path: Path, tag: str,
               *extra: str) -> tuple[Path, dict[str, Any], list[dict[str, Any]]]:
    ctx, expected = prepare(case, tmp_path)
    pre = expected.get("prebuild")
    if pre:
        bt.build(busybox, ctx, "-f", str(ctx / pre["dockerfile"]), "-t", pre["tag"])
    _, events = bt.build(busybox, ctx, "-t", tag, *build_args_for(expected, tmp_path), *extra)
    return ctx, expected, events


def check_file(root: Path, rel: str, want: dict[str, Any]) -> None:
    p = root / rel
    assert os.path.lexists(p), f"{rel} missing from the image"
    st = os.lstat(p)
    kind = want.get("type", "file")
    if kind == "symlink":
        assert stat.S_ISLNK(st.st_mode), f"{rel} is not a symlink"
        assert os.readlink(p) == want["target"]
        return
    for field in ("uid", "gid"):
        if field in want:
            assert getattr(st, f"st_{field}") == want[field], f"{rel}: {field}"
    if kind == "dir":
        assert stat.S_ISDIR(st.st_mode), f"{rel} is not a directory"
        if "mode" in want:
            assert oct(stat.S_IMODE(st.st_mode)) == oct(int(want["mode"], 8)), f"{rel}: mode"
        return
    assert stat.S_ISREG(st.st_mode), f"{rel} is not a regular file"
    if "content" in want:
        assert p.read_text() == want["content"], f"{rel}: unexpected content"
    if "mode" in want:
        assert oct(stat.S_IMODE(st.st_mode)) == oct(int(want["mode"], 8)), f"{rel}: mode"


@pytest.mark.parametrize("case", CASES)
def test_context_case(case: str, busybox: Any, bt: Any, tmp_path: Path) -> None:
    tag = f"case-{case}:latest"
    ctx, expected, events = build_case(busybox, bt, case, tmp_path, tag)
    store = busybox.store()
    img = store.resolve(tag)
    base = store.resolve("busybox:latest")

    cfg = img.config.config
    for k, v in expected.get("config", {}).items():
        if v is None:
            assert cfg.get(k) in (None, [], {}), f"config {k} should be unset, is {cfg.get(k)!r}"
        else:
            assert cfg.get(k) == v, f"config {k}: {cfg.get(k)!r} != {v!r}"
    if "author" in expected:
        assert img.config.data.get("author") == expected["author"]

    # history: one entry per instruction after FROM (plus the base's), layers match non-empty ones
    hist = img.config.history
    non_empty = [h for h in hist if not h.get("empty_layer")]
    assert len(non_empty) == len(img.manifest.layers)
    assert len(img.config.diff_ids) == len(img.manifest.layers)
    for text in expected.get("history_contains", []):
        assert text in [h.get("created_by") for h in hist], f"history lacks {text!r}: {hist}"

    if "new_layers" in expected:
        assert len(img.manifest.layers) - len(base.manifest.layers) == expected["new_layers"]

    root = bt.rootfs(busybox, tag, tmp_path / "rootfs")
    for rel, want in expected.get("files", {}).items():
        check_file(root, rel, want)
    for rel in expected.get("absent", []):
        assert not os.path.lexists(root / rel), f"{rel} should not be in the image"

    if "layer_entries" in expected:
        names = bt.layer_names(busybox, tag)[len(base.manifest.layers):]
        for idx, wanted in expected["layer_entries"].items():
            for w in wanted:
                assert w in names[int(idx)], f"layer {idx} lacks {w}: {names[int(idx)]}"

    if "warning_contains" in expected:
        warnings = [e["text"] for e in events if e["kind"] == "warning"]
        assert any(expected["warning_contains"] in w for w in warnings), warnings

    if "absent_from_blobs" in expected:
        needle = expected["absent_from_blobs"].encode()
        from registry.compression import open_decompressed

        for blob in (busybox.root / "store" / "blobs" / "sha256").iterdir():
            with open(blob, "rb") as f:
                data = open_decompressed(f).read()
            assert needle not in data, f"secret found in blob {blob.name}"
        for dirpath, _dirs, files in os.walk(busybox.root / "cache"):
            for name in files:
                p = Path(dirpath) / name
                if p.is_file() and not p.is_symlink() and "mounts" not in p.parts:
                    assert needle not in p.read_bytes(), f"secret found in {p}"

    for rel, content in expected.get("context_unchanged", {}).items():
        assert (ctx / rel).read_text() == content
