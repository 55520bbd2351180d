"""The OCI model keeps the exact bytes it was given: digests are over those, never re-serialised."""

from __future__ import annotations

import json

import pytest

from registry import mediatypes as mt
from registry.digest import Digest
from registry.errors import InvalidManifest
from registry.model import (
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    Platform,
    canonical_json,
    parse_manifest_or_index,
)

CFG = Digest.of(b"{}")
LAYER = Digest.of(b"layer")


def test_manifest_keeps_raw_bytes() -> None:
    raw = (b'{\n   "schemaVersion": 2,  "mediaType": "' + mt.DOCKER_MANIFEST.encode() +
           b'", "config": {"mediaType": "' + mt.DOCKER_CONFIG.encode() +
           b'", "size": 2, "digest": "' + str(CFG).encode() + b'"},\n "layers": [{"mediaType": "' +
           mt.DOCKER_LAYER_GZIP.encode() + b'", "size": 5, "digest": "' + str(LAYER).encode() + b'"}]}')
    m = Manifest.parse(raw)
    assert m.raw == raw and m.digest == Digest.of(raw) and m.size == len(raw)
    assert m.digest != Digest.of(canonical_json(json.loads(raw)))
    assert m.media_type == mt.DOCKER_MANIFEST
    assert m.config == Descriptor(mt.DOCKER_CONFIG, CFG, 2)
    assert [layer.digest for layer in m.layers] == [LAYER]
    assert m.descriptor().digest == m.digest


def test_build_is_canonical_and_round_trips() -> None:
    m = Manifest.build(Descriptor(mt.OCI_CONFIG, CFG, 2), [Descriptor(mt.OCI_LAYER_GZIP, LAYER, 5)],
                       annotations={"b": "2", "a": "1"})
    assert m.raw == canonical_json(json.loads(m.raw))
    again = Manifest.parse(m.raw)
    assert again == m and again.annotations == {"a": "1", "b": "2"}


@pytest.mark.parametrize("raw, why", [
    (b"not json", "not valid JSON"),
    (b"[]", "not a JSON object"),
    (b'{"schemaVersion": 1, "config": {}, "layers": []}', "schemaVersion must be 2"),
    (b'{"schemaVersion": 2, "layers": []}', "needs config and layers"),
    (b'{"schemaVersion": 2, "mediaType": "' + mt.OCI_INDEX.encode() + b'", "manifests": []}',
     "not an image manifest"),
    (b'{"schemaVersion": 2, "config": {"mediaType": "x/y", "size": 1, "digest": "sha256:zz"},'
     b' "layers": []}', "invalid descriptor"),
])
def test_invalid_manifests(raw: bytes, why: str) -> None:
    with pytest.raises(InvalidManifest, match=why):
        Manifest.parse(raw)


def test_index_select_and_shape_detection() -> None:
    amd = Descriptor(mt.OCI_MANIFEST, Digest.of(b"amd"), 3, platform=Platform("linux", "amd64"))
    arm = Descriptor(mt.OCI_MANIFEST, Digest.of(b"arm"), 3,
                     platform=Platform("linux", "arm", "v7"))
    index = Index.build([amd, arm])
    assert index.select(Platform("linux", "arm", "v7")) == arm
    assert index.select(Platform("linux", "arm", "v6")) is None
    assert index.select(Platform("linux", "amd64")) == amd
    assert index.select(Platform("windows", "amd64")) is None
    assert isinstance(parse_manifest_or_index(index.raw), Index)
    no_type = json.dumps({"schemaVersion": 2, "manifests": [amd.to_dict()]}).encode()
    assert isinstance(parse_manifest_or_index(no_type), Index)
    m = Manifest.build(Descriptor(mt.OCI_CONFIG, CFG, 2), [])
    assert isinstance(parse_manifest_or_index(m.raw), Manifest)
    with pytest.raises(InvalidManifest, match="needs a manifests list"):
        Index.parse(b'{"schemaVersion": 2}')


def test_descriptor_round_trip_and_annotations() -> None:
    d = Descriptor(mt.OCI_LAYER, LAYER, 5, (("k", "v"),), Platform("linux", "arm64"),
                   ("https://x/y",), "application/x")
    assert Descriptor.from_dict(d.to_dict()) == d
    d2 = d.with_annotations(k=None, n="1")
    assert d2.annotations == (("n", "1"),) and d.annotation("k") == "v"
    assert d.with_platform(None).platform is None


def test_platform_parse_and_str() -> None:
    assert Platform.parse("linux/arm64/v8") == Platform("linux", "arm64", "v8")
    assert str(Platform.parse("linux/amd64")) == "linux/amd64"
    assert Platform.from_dict({"os": "linux", "architecture": "amd64", "os.features": ["a"]}).to_dict() \
        == {"os": "linux", "architecture": "amd64", "os.features": ["a"]}
    with pytest.raises(ValueError):
        Platform.parse("linux")
    assert Platform.host().os == "linux"


def test_image_config() -> None:
    c = ImageConfig.build({"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
                           "config": {"Cmd": ["sh"]}, "history": [{"created_by": "x"}],
                           "rootfs": {"type": "layers", "diff_ids": [str(LAYER)]}})
    assert c.diff_ids == [LAYER] and c.config == {"Cmd": ["sh"]} and c.history == [{"created_by": "x"}]
    assert c.image_id == Digest.of(c.raw) and c.created == "2024-01-01T00:00:00Z"
    assert c.platform == Platform("linux", "amd64")
    c2 = c.with_changes(config={"Cmd": ["true"]}, history=None)
    assert c2.config == {"Cmd": ["true"]} and c2.history == [] and c.config == {"Cmd": ["sh"]}
    assert c2.digest != c.digest
    with pytest.raises(InvalidManifest, match="rootfs must be an object"):
        ImageConfig.parse(b'{"rootfs": []}')
