"""RUN semantics: shell and exec forms, SHELL, USER, WORKDIR, env, networks, mounts, empty diffs."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

DOCKERFILE = """\
FROM busybox AS tools
RUN echo "from tools" > /tool.txt

FROM busybox
ENV GREETING=hi
ARG WHO=world
WORKDIR /work
RUN echo "$GREETING $WHO from $(pwd)" > /env.txt
RUN ["/bin/sh", "-c", "echo exec form > /exec.txt"]
SHELL ["/bin/sh", "-c", "-e"]
RUN echo "shell changed" > /shell.txt
USER app
RUN id -u > /tmp/uid.txt && id -g >> /tmp/uid.txt
USER root
RUN true
RUN --network=none ls /sys/class/net > /net-none.txt
RUN --network=host ls /sys/class/net > /net-host.txt
RUN --mount=type=tmpfs,target=/scratch echo x > /scratch/file && mount | grep -c ' /scratch ' > /tmpfs.txt
RUN --mount=type=bind,from=tools,source=/tool.txt,target=/mnt/tool.txt cat /mnt/tool.txt > /from-stage.txt
RUN --mount=type=cache,target=/c,sharing=locked,uid=1000,gid=1000,mode=0700 stat -c '%u %g %a' /c > /cache-owner.txt
RUN echo data > /a && ln /a /b
"""


def test_run_semantics(busybox: Any, bt: Any, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    bt.build(busybox, ctx, "-t", "run:1")
    root = bt.rootfs(busybox, "run:1", tmp_path / "fs")
    assert (root / "env.txt").read_text() == "hi world from /work\n"
    assert (root / "exec.txt").read_text() == "exec form\n"
    assert (root / "shell.txt").read_text() == "shell changed\n"
    assert (root / "tmp" / "uid.txt").read_text() == "1000\n1000\n"
    assert (root / "tmp" / "uid.txt").stat().st_uid == 1000
    assert (root / "net-none.txt").read_text() == "lo\n"
    # the host's interfaces (other suites add and remove veths meanwhile: compare stable ones)
    seen = set((root / "net-host.txt").read_text().split())
    stable = {p.name for p in Path("/sys/class/net").iterdir() if not p.name.startswith(("pb", "veth"))}
    assert "lo" in seen and len(seen) > 1 and stable <= seen | {n for n in stable if n.startswith("br")}
    assert (root / "tmpfs.txt").read_text() == "1\n"
    assert not (root / "scratch" / "file").exists()
    assert (root / "from-stage.txt").read_text() == "from tools\n"
    assert (root / "cache-owner.txt").read_text() == "1000 1000 700\n"
    assert not (root / "mnt" / "tool.txt").exists()

    store = busybox.store()
    img = store.resolve("run:1")
    hist = [h for h in img.config.history if h.get("created_by", "").startswith("RUN")]
    by_cmd = {h["created_by"]: h for h in hist}
    # RUN true changed nothing but keeps a layer, as BuildKit 20.10 (test_fidelity_judges2)
    assert by_cmd["RUN |1 WHO=world /bin/sh -c -e true # buildkit"].get("empty_layer") is None
    assert len(img.manifest.layers) == sum(1 for h in img.config.history if not h.get("empty_layer"))
    assert "RUN |1 WHO=world /bin/sh -c echo \"$GREETING $WHO from $(pwd)\" > /env.txt # buildkit" in by_cmd
    assert "RUN |1 WHO=world /bin/sh -c echo exec form > /exec.txt # buildkit" in by_cmd

    # the hard link stays a hard link in the last layer
    from registry.compression import open_decompressed

    last = img.manifest.layers[-1]
    with store.open_blob(last.digest) as f, tarfile.open(fileobj=open_decompressed(f), mode="r|") as tf:
        members = {m.name: m for m in tf}
    assert members["a"].isfile() and members["b"].islnk() and members["b"].linkname == "a"


def test_copy_keeps_file_capabilities(busybox: Any, bt: Any, tmp_path: Path) -> None:
    """``security.capability`` (set after chown, which would clear it) reaches the layer."""
    import os

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY --chown=app ping /ping\n")
    (ctx / "ping").write_bytes(b"#!/bin/sh\n")
    cap = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_raw+ep
    os.setxattr(ctx / "ping", "security.capability", cap)
    bt.build(busybox, ctx, "-t", "cap:1")
    from registry.compression import open_decompressed

    store = busybox.store()
    layer = store.resolve("cap:1").manifest.layers[-1]
    with store.open_blob(layer.digest) as f, tarfile.open(fileobj=open_decompressed(f), mode="r|") as tf:
        m = next(m for m in tf if m.name == "ping")
    assert m.uid == 1000
    assert m.pax_headers["SCHILY.xattr.security.capability"].encode("latin-1", "surrogateescape") == cap \
        or m.pax_headers["SCHILY.xattr.security.capability"] == cap.decode("latin-1")
