"""Every index.json, manifest and config the store writes (and the layouts in our oci-archives)
validates against the vendored OCI image-spec JSON schemas (testdata/oci-schema)."""

from __future__ import annotations

import json
import tarfile
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from registry import archive
from registry import mediatypes as mt
from registry.digest import Digest
from registry.model import Descriptor, ImageConfig, Manifest
from registry.reference import Reference
from registry.store import Store

SCHEMAS = Path(__file__).resolve().parents[2] / "testdata" / "oci-schema"


def _retrieve(uri: str) -> Resource[Any]:
    # The schemas $ref siblings by file name ("defs.json", "content-descriptor.json"); their
    # "id"s put them under different base URIs, so resolve by the last path segment.
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    return Resource.from_contents(json.loads((SCHEMAS / name).read_text()), default_specification=DRAFT4)


REGISTRY: Registry[Any] = Registry(retrieve=_retrieve)  # type: ignore[call-arg]


def validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft4Validator)
    v: jsonschema.protocols.Validator = cls(schema, registry=REGISTRY)
    return v


INDEX = validator("image-index-schema.json")
MANIFEST = validator("image-manifest-schema.json")
CONFIG = validator("config-schema.json")
LAYOUT = validator("image-layout-schema.json")


def check_times(config: dict[str, Any]) -> None:
    """``format: date-time`` is not asserted by jsonschema without extras: check it here."""
    for t in [config.get("created"), *(h.get("created") for h in config.get("history", []))]:
        if t is not None:
            assert datetime.fromisoformat(t.replace("Z", "+00:00")), t


def validate_layout(root: Path) -> int:
    """Validate oci-layout, index.json and every manifest/index/config reachable; returns count."""
    LAYOUT.validate(json.loads((root / "oci-layout").read_bytes()))
    index = json.loads((root / "index.json").read_bytes())
    INDEX.validate(index)
    checked = 1
    stack = list(index["manifests"])
    while stack:
        d = stack.pop()
        raw = (root / "blobs" / d["digest"].replace(":", "/")).read_bytes()
        assert str(Digest.of(raw)) == d["digest"]
        doc = json.loads(raw)
        if mt.is_index(d["mediaType"]):
            INDEX.validate(doc)
            stack.extend(doc["manifests"])
        else:
            MANIFEST.validate(doc)
            config = json.loads((root / "blobs" / doc["config"]["digest"].replace(":", "/")).read_bytes())
            CONFIG.validate(config)
            check_times(config)
        checked += 1
    return checked


def test_the_validators_reject_what_is_wrong() -> None:
    with pytest.raises(jsonschema.ValidationError):
        MANIFEST.validate({"schemaVersion": 2, "config": {"mediaType": "x/y", "size": 1,
                                                          "digest": "nocolon"}, "layers": []})
    with pytest.raises(jsonschema.ValidationError):  # via defs-descriptor.json -> defs.json
        INDEX.validate({"schemaVersion": 2, "manifests": [
            {"mediaType": mt.OCI_MANIFEST, "size": 1, "digest": "sha256:" + "0" * 64,
             "annotations": {"k": 1}}]})
    with pytest.raises(jsonschema.ValidationError):
        CONFIG.validate({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []},
                         "config": {"ExposedPorts": {"80/tcp": "not an object"}}})


def test_store_documents_validate(busybox: Any, busybox_tar: Path, tmp_path: Path) -> None:
    store: Store = busybox.store()
    archive.import_rootfs(store, busybox_tar, reference=Reference.parse("full:1"), config={
        "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["/bin/sh", "-c", "echo hi"], "Env": ["A=1", "B=2"],
        "Labels": {"a": "b", "c": "d e"}, "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
        "User": "app", "Volumes": {"/data": {}, "/logs": {}}, "WorkingDir": "/srv",
        "StopSignal": "SIGINT", "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 5000000000},
        "OnBuild": ["RUN echo hi"]})
    archive.import_rootfs(store, busybox_tar)  # untagged
    store.tag("busybox", Reference.parse("localhost:5000/a/b:c"))
    # an image from a docker-archive (the manifest is made here) and a gzip-layer one
    saved = tmp_path / "d.tar"
    with open(saved, "wb") as f:
        archive.save(store, ["busybox"], f)
    other = Store(tmp_path / "other")
    with open(saved, "rb") as f:
        archive.load(other, f)
    assert validate_layout(other.path) == 2
    assert validate_layout(store.path) == 5
    for name in ("full:1", "busybox"):
        config = store.resolve(name).config
        CONFIG.validate(json.loads(config.raw))


def test_oci_archive_layout_validates(busybox: Any, tmp_path: Path) -> None:
    store: Store = busybox.store()
    out = tmp_path / "o.tar"
    with open(out, "wb") as f:
        archive.save(store, ["busybox"], f, format=archive.OCI_ARCHIVE)
    layout = tmp_path / "layout"
    with tarfile.open(out) as tf:
        tf.extractall(layout, filter="data")
    assert validate_layout(layout) == 2
    saved = tmp_path / "d.tar"
    with open(saved, "wb") as f:
        archive.save(store, ["busybox"], f)
    dlayout = tmp_path / "dlayout"
    with tarfile.open(saved) as tf:
        tf.extractall(dlayout, filter="data")
    assert validate_layout(dlayout) == 2


def test_manifest_built_by_the_model_validates() -> None:
    config = ImageConfig.build({"architecture": "arm64", "os": "linux",
                                "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64]}})
    m = Manifest.build(Descriptor(mt.OCI_CONFIG, config.digest, config.size),
                       [Descriptor(mt.OCI_LAYER_ZSTD, Digest.parse("sha256:" + "2" * 64), 10)],
                       annotations={"org.opencontainers.image.title": "x"})
    MANIFEST.validate(json.loads(m.raw))
    CONFIG.validate(json.loads(config.raw))
