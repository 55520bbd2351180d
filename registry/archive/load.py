"""``load``: a docker-archive or oci-archive read as a stream (stdin works), every entry spooled
and verified (digests, sizes, diff_ids) before anything is published to the store.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from dataclasses import dataclass
from typing import Any, BinaryIO

from registry import compression
from registry import mediatypes as mt
from registry.archive.spool import Spool, diff_id_of
from registry.archive.tarstream import TarStream
from registry.digest import Digest
from registry.errors import (
    ArchiveError,
    DigestError,
    InvalidManifest,
    InvalidReference,
    RegistryError,
)
from registry.model import Descriptor, ImageConfig, Index, Manifest, Platform
from registry.reference import Reference
from registry.store import REF_NAME, Store

#: Docker 25+ and containerd name an index.json entry with the full reference here.
CONTAINERD_NAME = "io.containerd.image.name"
_MAX_JSON = 16 << 20
_METADATA = {"manifest.json", "index.json", "oci-layout", "repositories", "VERSION", "json"}


@dataclass
class _Entry:
    name: str
    data: bytes | None = None
    spool: Spool | None = None
    link: str | None = None


class _Received:
    """Every file of an archive by normalised path: small metadata in memory, the rest spooled."""

    def __init__(self, store: Store, source: str) -> None:
        self.store = store
        self.source = source
        self.entries: dict[str, _Entry] = {}

    def receive(self, stream: BinaryIO) -> None:
        try:
            kind, stream = compression.sniff(stream)
            tar = TarStream(compression.open_decompressed(stream, kind))
            for member in tar:
                self._member(tar, member)
        except RegistryError:
            raise
        except (tarfile.TarError, EOFError, OSError, ValueError) as e:
            raise ArchiveError(f"{self.source}: invalid or truncated tar archive: {e}") from None
        except Exception as e:  # a decompressor's own error type
            raise ArchiveError(f"{self.source}: invalid or truncated tar archive: {e}") from None

    def _member(self, tar: TarStream, m: tarfile.TarInfo) -> None:
        name = _norm(m.name)
        if not name or m.isdir():
            return
        old = self.entries.pop(name, None)
        if old and old.spool:
            old.spool.discard()
        if m.issym():
            self.entries[name] = _Entry(name, link=_norm(posixpath.join(posixpath.dirname(name), m.linkname)))
        elif m.islnk():
            self.entries[name] = _Entry(name, link=_norm(m.linkname))
        elif m.isreg():
            if posixpath.basename(name) in _METADATA or ("/" not in name and name.endswith(".json")):
                if m.size > _MAX_JSON:
                    raise ArchiveError(f"{self.source}: {name} is too large ({m.size} bytes)")
                parts: list[bytes] = []
                tar.copy_data(parts.append)
                self.entries[name] = _Entry(name, data=b"".join(parts))
                return
            expected = _blob_digest(name)
            spool = Spool(self.store, expected.algorithm if expected else "sha256")
            self.entries[name] = _Entry(name, spool=spool)
            tar.copy_data(spool.write)
            spool.finish()
            if expected is not None and spool.digest != expected:
                raise DigestError(
                    f"{self.source}: blob {name} does not match its digest (content is {spool.digest})"
                )

    def resolve(self, name: str) -> _Entry | None:
        seen = set()
        entry = self.entries.get(_norm(name))
        while entry is not None and entry.link is not None and entry.name not in seen:
            seen.add(entry.name)
            entry = self.entries.get(entry.link)
        return entry

    def blob_entry(self, digest: Digest) -> _Entry | None:
        return self.resolve(f"blobs/{digest.algorithm}/{digest.encoded}")

    def read(self, name: str) -> bytes:
        entry = self.resolve(name)
        if entry is None:
            raise ArchiveError(f"{self.source}: archive has no {name}")
        if entry.data is not None:
            return entry.data
        assert entry.spool is not None
        if entry.spool.size > _MAX_JSON:
            raise ArchiveError(f"{self.source}: {name} is too large for a JSON document")
        return entry.spool.path.read_bytes()

    def discard(self) -> None:
        for e in self.entries.values():
            if e.spool:
                e.spool.discard()


def _norm(name: str) -> str:
    n = posixpath.normpath("/" + name).lstrip("/")
    return "" if n == "." else n


def _blob_digest(name: str) -> Digest | None:
    parts = name.split("/")
    if len(parts) == 3 and parts[0] == "blobs":
        try:
            return Digest(parts[1], parts[2])
        except DigestError:
            return None
    return None


@dataclass(frozen=True)
class Loaded:
    """One image a load brought in: under a name, or untagged (``reference`` None)."""

    descriptor: Descriptor
    image_id: Digest
    reference: Reference | None


@dataclass
class _Plan:
    """What a verified archive publishes: blobs from the archive, documents we made, names."""

    blobs: dict[Digest, _Entry]
    documents: list[bytes]
    images: list[tuple[Descriptor, Digest, list[Reference]]]


def load(store: Store, stream: BinaryIO, *, source: str = "-") -> list[Loaded]:
    """Load a docker-archive or oci-archive (optionally compressed) from *stream*.

    Nothing becomes visible in the store unless the whole archive reads and verifies.
    """
    with store.lease():
        received = _Received(store, source)
        try:
            received.receive(stream)
            if received.resolve("index.json") is not None:
                plan = _plan_oci(received)
            elif received.resolve("manifest.json") is not None:
                plan = _plan_docker(received)
            else:
                raise ArchiveError(
                    f"{source}: not a docker-archive or oci-archive (no manifest.json or index.json)"
                )
            return _publish(store, plan)
        finally:
            received.discard()


def _publish(store: Store, plan: _Plan) -> list[Loaded]:
    for digest, entry in plan.blobs.items():
        if entry.spool is not None:
            entry.spool.publish(store)
        elif entry.data is not None:
            store.put_bytes(entry.data, digest)
    for raw in plan.documents:
        store.put_bytes(raw)
    out: list[Loaded] = []
    for desc, image_id, refs in plan.images:
        if not refs:
            store.add(desc, None)
            out.append(Loaded(desc, image_id, None))
        for ref in refs:
            store.add(desc, ref)
            out.append(Loaded(desc, image_id, ref))
    return out


def _json(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ArchiveError(f"{what} is not valid JSON: {e}") from None


def _parse_ref(text: str, source: str) -> Reference:
    try:
        return Reference.parse(text)
    except InvalidReference as e:
        raise ArchiveError(f"{source}: bad image name in archive: {e}") from None


def _check_layers(config: ImageConfig, layers: list[_Entry], what: str) -> None:
    """Each layer's uncompressed content must hash to the config's diff_id at its position."""
    diff_ids = config.diff_ids
    if len(diff_ids) != len(layers):
        raise ArchiveError(f"{what}: {len(layers)} layers but the config lists {len(diff_ids)} diff_ids")
    for i, (entry, want) in enumerate(zip(layers, diff_ids, strict=True)):
        if entry.spool is None:
            raise ArchiveError(f"{what}: layer {i} ({entry.name}) is not a layer file")
        if compression.detect(entry.spool.head) == "none":
            got = entry.spool.digest  # uncompressed: the digest is the diff_id
        else:
            got = diff_id_of(entry.spool.path, entry.spool.head, f"{what}: layer {i}")
        if got != want:
            raise DigestError(f"{what}: layer {i} has diff_id {got}, but the config says {want}")


def _plan_oci(received: _Received) -> _Plan:
    src = received.source
    layout = received.resolve("oci-layout")
    if layout is not None and layout.data is not None:
        version = _json(layout.data, f"{src}: oci-layout").get("imageLayoutVersion")
        if version != "1.0.0":
            raise ArchiveError(f"{src}: unsupported OCI layout version {version!r}")
    try:
        top = Index.parse(received.read("index.json"), mt.OCI_INDEX)
    except InvalidManifest as e:
        raise ArchiveError(f"{src}: index.json: {e}") from None
    repo_tags = _docker_repo_tags(received)
    plan = _Plan({}, [], [])
    for desc in top.manifests:
        image_id, config_path = _walk(received, desc, plan, f"{src}: {desc.digest}")
        refs: list[Reference] = []
        full = desc.annotation(CONTAINERD_NAME)
        name = desc.annotation(REF_NAME)
        if full:
            refs.append(_parse_ref(full, src))
        elif name and (":" in name or "/" in name):
            refs.append(_parse_ref(name, src))
        else:
            refs.extend(_parse_ref(t, src) for t in repo_tags.get(config_path, ()))
        plan.images.append((Descriptor(desc.media_type, desc.digest, desc.size), image_id,
                            list(dict.fromkeys(refs))))
    return plan


def _docker_repo_tags(received: _Received) -> dict[str, list[str]]:
    """``manifest.json`` RepoTags by config path (Docker 25+ archives carry both files)."""
    if received.resolve("manifest.json") is None:
        return {}
    items = _json(received.read("manifest.json"), f"{received.source}: manifest.json")
    if not isinstance(items, list):
        return {}
    return {_norm(str(i.get("Config", ""))): list(i.get("RepoTags") or []) for i in items
            if isinstance(i, dict)}


def _need(received: _Received, desc: Descriptor, plan: _Plan, what: str) -> _Entry:
    entry = received.blob_entry(desc.digest)
    if entry is None:
        raise ArchiveError(f"{what}: archive is missing blob {desc.digest}")
    size = entry.spool.size if entry.spool else len(entry.data or b"")
    if size != desc.size:
        raise DigestError(f"{what}: blob {desc.digest} has {size} bytes, the descriptor says {desc.size}")
    plan.blobs[desc.digest] = entry
    return entry


def _walk(received: _Received, desc: Descriptor, plan: _Plan, what: str) -> tuple[Digest, str]:
    """Check *desc* and everything under it; returns the image ID and the config's path."""
    _need(received, desc, plan, what)
    raw = received.read(f"blobs/{desc.digest.algorithm}/{desc.digest.encoded}")
    try:
        if mt.is_index(desc.media_type):
            index = Index.parse(raw, desc.media_type)
            if not index.manifests:
                raise ArchiveError(f"{what}: empty image index")
            chosen = index.select(Platform.host()) or index.manifests[0]
            result = None
            for child in index.manifests:
                r = _walk(received, child, plan, what)
                if child == chosen:
                    result = r
            assert result is not None
            return result
        if not mt.is_manifest(desc.media_type):
            raise ArchiveError(f"{what}: unsupported media type {desc.media_type}")
        manifest = Manifest.parse(raw, desc.media_type)
        _need(received, manifest.config, plan, what)
        config = ImageConfig.parse(received.read(f"blobs/sha256/{manifest.config.digest.encoded}"))
    except InvalidManifest as e:
        raise ArchiveError(f"{what}: {e}") from None
    entries = [_need(received, d, plan, what) for d in manifest.layers]
    for d, entry in zip(manifest.layers, entries, strict=True):
        if mt.is_layer(d.media_type) and entry.spool is not None:
            kind = compression.detect(entry.spool.head)
            if kind != mt.layer_compression(d.media_type):
                raise ArchiveError(f"{what}: layer {d.digest} is {kind}-compressed, but its "
                                   f"media type is {d.media_type}")
    _check_layers(config, entries, what)
    return manifest.config.digest, f"blobs/sha256/{manifest.config.digest.encoded}"


def _plan_docker(received: _Received) -> _Plan:
    src = received.source
    items = _json(received.read("manifest.json"), f"{src}: manifest.json")
    if not isinstance(items, list) or not items:
        raise ArchiveError(f"{src}: manifest.json is not a list of images")
    plan = _Plan({}, [], [])
    for n, item in enumerate(items):
        what = f"{src}: manifest.json[{n}]"
        if not isinstance(item, dict) or not isinstance(item.get("Config"), str) \
                or not isinstance(item.get("Layers"), list):
            raise ArchiveError(f"{what}: needs Config and Layers")
        config_raw = received.read(item["Config"])
        try:
            config = ImageConfig.parse(config_raw)
        except InvalidManifest as e:
            raise ArchiveError(f"{what}: {e}") from None
        config_digest = Digest.of(config_raw)
        stem = posixpath.basename(item["Config"]).removesuffix(".json")
        if len(stem) == 64 and stem != config_digest.encoded:
            raise DigestError(f"{what}: config {item['Config']} does not match its digest "
                              f"(content is {config_digest})")
        entries: list[_Entry] = []
        for path in item["Layers"]:
            entry = received.resolve(str(path))
            if entry is None:
                raise ArchiveError(f"{what}: archive is missing layer {path}")
            entries.append(entry)
        _check_layers(config, entries, what)
        layers: list[Descriptor] = []
        for entry in entries:
            assert entry.spool is not None
            kind = compression.detect(entry.spool.head)
            if kind not in mt.COMPRESSIONS:
                raise ArchiveError(f"{what}: unsupported layer compression {kind}")
            layers.append(Descriptor(mt.layer_media_type(kind), entry.spool.digest, entry.spool.size))
            plan.blobs[entry.spool.digest] = entry
        plan.blobs[config_digest] = _Entry(item["Config"], data=config_raw)
        manifest = Manifest.build(Descriptor(mt.OCI_CONFIG, config_digest, len(config_raw)), layers)
        plan.documents.append(manifest.raw)
        refs = [_parse_ref(str(t), src) for t in item.get("RepoTags") or []]
        plan.images.append((manifest.descriptor(), config_digest, list(dict.fromkeys(refs))))
    return plan
