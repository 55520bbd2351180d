"""FROM and COPY --from an image missing locally pull it from a real registry first."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "registry"))

from registry_server import start_registry  # noqa: E402


@pytest.fixture
def local_registry(tmp_path: Path) -> Iterator[Any]:
    with start_registry(tmp_path / "registry") as reg:
        yield reg


def test_from_pulls_a_missing_base(busybox: Any, pybuild_factory: Any, bt: Any,
                                   local_registry: Any, tmp_path: Path) -> None:
    ref = f"{local_registry.addr}/base/busybox:1"
    busybox("tag", "busybox:latest", ref)
    busybox("push", ref)
    fresh = pybuild_factory()
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {ref}\nRUN echo pulled > /p\nCOPY --from={ref} /etc/passwd /copied-passwd\n")
    bt.build(fresh, ctx, "-t", "pulled:1")
    store = fresh.store()
    assert store.resolve(ref).id == busybox.store().resolve("busybox:latest").id
    root = bt.rootfs(fresh, "pulled:1", tmp_path / "fs")
    assert (root / "p").read_text() == "pulled\n"
    assert (root / "copied-passwd").read_text().startswith("root:x:0:0:")


def test_missing_image_everywhere_is_one_located_line(pybuild: Any, local_registry: Any,
                                                      tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM scratch\nCOPY --from={local_registry.addr}/no/such:1 /x /x\n")
    r = pybuild("build", str(ctx), check=False)
    assert r.returncode == 1
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith(f"Error: Dockerfile:2: {local_registry.addr}/no/such:1: not found locally, "
                           "and pulling failed")
