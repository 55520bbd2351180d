"""ADD of an http(s) URL: fetched, checked against ``--checksum``, failures reported clearly."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def test_add_url_with_checksum(busybox: Any, bt: Any, http_root: tuple[str, Path], tmp_path: Path) -> None:
    url, www = http_root
    (www / "tool.txt").write_text("downloaded\n")
    digest = hashlib.sha256(b"downloaded\n").hexdigest()
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM busybox\nADD --checksum=sha256:{digest} {url}/tool.txt /opt/\n"
        f"ADD {url}/tool.txt /renamed.txt\n")
    bt.build(busybox, ctx, "-t", "url:1")
    root = bt.rootfs(busybox, "url:1", tmp_path / "fs")
    assert (root / "opt" / "tool.txt").read_text() == "downloaded\n"
    assert (root / "opt" / "tool.txt").stat().st_mode & 0o777 == 0o600
    assert (root / "renamed.txt").read_text() == "downloaded\n"


def test_add_url_checksum_mismatch_and_network_failure(busybox: Any, http_root: tuple[str, Path],
                                                        tmp_path: Path) -> None:
    url, www = http_root
    (www / "tool.txt").write_text("downloaded\n")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM busybox\nADD --checksum=sha256:{'0' * 64} {url}/tool.txt /t\n")
    r = busybox("build", "-t", "bad:1", str(ctx), check=False)
    assert r.returncode == 1
    assert "Dockerfile:2: ADD" in r.stderr and "checksum mismatch" in r.stderr
    (ctx / "Dockerfile").write_text("FROM busybox\nADD http://127.0.0.1:9/nothing /t\n")
    r = busybox("build", "-t", "bad:1", str(ctx), check=False)
    assert r.returncode == 1
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("Error: Dockerfile:2: ADD http://127.0.0.1:9/nothing: download failed")
    (ctx / "Dockerfile").write_text(f"FROM busybox\nADD {url}/missing /t\n")
    r = busybox("build", "-t", "bad:1", str(ctx), check=False)
    assert "HTTP 404" in r.stderr
    repos = [ln.split()[0] for ln in busybox("images").stdout.splitlines()[1:] if ln.strip()]
    assert "bad" not in repos
