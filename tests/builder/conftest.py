"""Fixtures of the build tests: build/inspect helpers (the private Docker engine, ``dockerd``,
is ``tests/conftest.py``'s: one per session for every folder).

``build_helpers``: ``build(pyb, ctx, *args)`` → (process, events) with ``--progress=rawjson``,
``rootfs(pyb, ref, dest)`` merges an image's layers into *dest*, ``layer_names(...)``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build(pyb: Any, ctx: Path | str, *args: str, check: bool = True,
          env: dict[str, str] | None = None, input: str | None = None) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    """``pybuild build --progress=rawjson ARGS CTX``; returns the process and its events."""
    r = pyb("build", "--progress=rawjson", *args, str(ctx), check=False, env=env, input=input,
            timeout=300)
    events = []
    other = []
    for line in r.stderr.splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
        else:
            other.append(line)
    if check and r.returncode != 0:
        raise AssertionError(f"build failed ({r.returncode}):\n" + "\n".join(other)
                             + "\n" + "\n".join(e["text"] for e in events if e["kind"] == "log"))
    return r, events


def executed(events: list[dict[str, Any]]) -> list[str]:
    """Names of the steps that ran (not cached)."""
    return [e["name"] for e in events if e["kind"] == "start"]


def cached(events: list[dict[str, Any]]) -> list[str]:
    return [e["name"] for e in events if e["kind"] == "cached" and "FROM" not in e["name"]]


def rootfs(pyb: Any, ref: str, dest: Path) -> Path:
    """The image's layers applied in order onto *dest* (a plain tree, whiteouts applied)."""
    from builder.core.layers import apply_layer

    store = pyb.store()
    img = store.resolve(ref)
    dest.mkdir(parents=True, exist_ok=True)
    for d in img.manifest.layers:
        with store.open_blob(d.digest) as f:
            apply_layer(f, dest, overlay_format=False)
    return dest


def layer_names(pyb: Any, ref: str) -> list[list[str]]:
    """Entry names of each layer of the image, bottom first."""
    from registry.compression import open_decompressed

    store = pyb.store()
    img = store.resolve(ref)
    out = []
    for d in img.manifest.layers:
        with store.open_blob(d.digest) as f, tarfile.open(fileobj=open_decompressed(f), mode="r|") as tf:
            out.append([m.name for m in tf])
    return out


class BuildTools:
    """The helpers above, handed to tests as the ``bt`` fixture."""

    build = staticmethod(build)
    executed = staticmethod(executed)
    cached = staticmethod(cached)
    rootfs = staticmethod(rootfs)
    layer_names = staticmethod(layer_names)


@pytest.fixture
def bt() -> BuildTools:
    return BuildTools()


@pytest.fixture(scope="module")
def busybox_layer(state: Any, busybox_tar: Path) -> Path:
    """The busybox rootfs unpacked once into the layer cache of the module's own ``state``
    fixture (a module-scoped ``StateRoot`` that each sandbox test module defines)."""
    import hashlib

    from builder.core.rootfs import LayerCache

    diff_id = "sha256:" + hashlib.sha256(busybox_tar.read_bytes()).hexdigest()
    return LayerCache(state).unpack(diff_id, lambda: open(busybox_tar, "rb"))


@pytest.fixture
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Mounts, cgroups and processes of the host before the test; asserted the same after."""
    from test_sandbox_support import HostSnapshot

    snap = HostSnapshot(str(tmp_path_factory.getbasetemp()))
    yield snap
    snap.assert_same()
