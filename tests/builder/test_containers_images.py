"""Test images for the container tests, made offline with the store API: the busybox rootfs
from ``testdata/mkbusybox.py`` as one layer, plus optional extra files and a config."""

from __future__ import annotations

import importlib.util
import io
import sys
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from builder.base.state import StateRoot
from registry import mediatypes as mt
from registry.digest import Digest
from registry.model import Descriptor, ImageConfig, Manifest, Platform
from registry.reference import Reference

TESTDATA = Path(__file__).resolve().parents[2] / "testdata"
_BUSYBOX_TAR: bytes | None = None


def busybox_tar() -> bytes:
    global _BUSYBOX_TAR
    if _BUSYBOX_TAR is None:
        spec = importlib.util.spec_from_file_location("mkbusybox", TESTDATA / "mkbusybox.py")
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        sys.modules.setdefault("mkbusybox", mod)
        spec.loader.exec_module(mod)
        buf = io.BytesIO()
        mod.make_tar(buf)
        _BUSYBOX_TAR = buf.getvalue()
    return _BUSYBOX_TAR


def files_tar(files: Mapping[str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        dirs: set[str] = set()
        for path in sorted(files):
            parts = path.strip("/").split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    ti = tarfile.TarInfo(d)
                    ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                    tf.addfile(ti)
            data = files[path]
            raw = data.encode() if isinstance(data, str) else data
            ti = tarfile.TarInfo(path.strip("/"))
            ti.size, ti.mode = len(raw), 0o755 if path.startswith(("/bin", "/usr")) else 0o644
            tf.addfile(ti, io.BytesIO(raw))
    return buf.getvalue()


def make_image(root: StateRoot, ref: str, *, config: Mapping[str, Any] | None = None,
               files: Mapping[str, bytes | str] | None = None) -> str:
    """Store an image ``busybox layer [+ files layer]`` with *config*; returns its ID."""
    store = root.image_store()
    layers = [busybox_tar()] + ([files_tar(files)] if files else [])
    descs, diff_ids = [], []
    for blob in layers:
        d = store.put_bytes(blob)
        descs.append(Descriptor(mt.OCI_LAYER, d, len(blob)))
        diff_ids.append(str(Digest.of(blob)))
    p = Platform.host()
    cfg = ImageConfig.build({
        "architecture": p.architecture, "os": p.os, "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": ["sh"], **(config or {})},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "test"} for _ in layers],
    })
    store.put_bytes(cfg.raw)
    manifest = Manifest.build(Descriptor(mt.OCI_CONFIG, cfg.digest, cfg.size), descs)
    store.put_manifest(manifest)
    store.add(manifest.descriptor(), Reference.parse(ref))
    return str(cfg.digest)


HTTPD_INDEX = "<html><body>hello from pybuild</body></html>\n"


def make_httpd_image(root: StateRoot, ref: str = "web:test") -> str:
    """The seed workflow's web server: busybox httpd serving /var/www, logging requests."""
    return make_image(root, ref, files={"/var/www/index.html": HTTPD_INDEX},
                      config={"Cmd": ["httpd", "-f", "-v", "-p", "80", "-h", "/var/www"],
                              "ExposedPorts": {"80/tcp": {}}, "StopSignal": "SIGTERM"})


def test_made_images_resolve(tmp_path: Path) -> None:
    root = StateRoot.open(tmp_path / "state")
    iid = make_httpd_image(root)
    img = root.image_store().resolve("web:test")
    assert str(img.id) == iid
    assert img.config.config["Cmd"][0] == "httpd" and len(img.layers) == 2
