"""Image tarballs: ``save``/``load`` of docker-archive and oci-archive, and ``import`` of a rootfs.

Loads stream the tar (stdin works): entries are spooled into the store's ingest area and
verified, and only a fully checked archive is published as blobs and tags.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import shlex
import signal
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from registry import compression
from registry import mediatypes as mt
from registry.digest import CHUNK, Digest
from registry.errors import (
    ArchiveError,
    DigestError,
    InvalidManifest,
    InvalidReference,
    RegistryError,
)
from registry.model import Descriptor, ImageConfig, Index, Manifest, Platform, canonical_json
from registry.reference import Reference
from registry.store import REF_NAME, Store

DOCKER_ARCHIVE = "docker-archive"
OCI_ARCHIVE = "oci-archive"
FORMATS = (DOCKER_ARCHIVE, OCI_ARCHIVE)
#: Docker 25+ and containerd name an index.json entry with the full reference here.
CONTAINERD_NAME = "io.containerd.image.name"
_OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
_MAX_JSON = 16 << 20
_METADATA = {"manifest.json", "index.json", "oci-layout", "repositories", "VERSION", "json"}


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- spooling into the store's ingest area --------------------------------------------------------
class _Spool:
    """A file being received into ``<store>/ingest``; hashed as written, published by rename.

    Until ``publish`` it is an ingest temp file, which no reader takes for a blob (and ``gc``
    sweeps stale ones), so a load killed half-way leaves nothing visible.
    """

    def __init__(self, store: Store, algorithm: str = "sha256") -> None:
        fd, path = tempfile.mkstemp(dir=store.ingest_dir, prefix="blob-load-")
        self.path = Path(path)
        self._file: BinaryIO | None = os.fdopen(fd, "wb")
        self._hash = hashlib.new(algorithm)
        self.algorithm = algorithm
        self.size = 0
        self.head = b""

    def write(self, data: bytes) -> None:
        assert self._file is not None
        if len(self.head) < 16:
            self.head += data[: 16 - len(self.head)]
        self._hash.update(data)
        self.size += len(data)
        self._file.write(data)

    def finish(self) -> Digest:
        """Flush and fsync; the digest of what was written."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
        return Digest(self.algorithm, self._hash.hexdigest())

    @property
    def digest(self) -> Digest:
        return Digest(self.algorithm, self._hash.hexdigest())

    def publish(self, store: Store) -> Digest:
        digest = self.finish()
        target = store.blob_path(digest)
        if target.is_file():
            self.discard()
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(self.path, 0o644)
            os.rename(self.path, target)
        return digest

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def _copy(src: BinaryIO, write: Callable[[bytes], Any], size: int | None = None) -> int:
    done = 0
    while size is None or done < size:
        chunk = src.read(CHUNK if size is None else min(CHUNK, size - done))
        if not chunk:
            break
        write(chunk)
        done += len(chunk)
    return done


def _diff_id(path: Path, head: bytes, what: str) -> Digest:
    """sha256 of the uncompressed content of a (possibly compressed) layer file."""
    kind = compression.detect(head)
    with open(path, "rb") as f:
        if kind == "none":
            return Digest.of_stream(f)[0]
        try:
            return Digest.of_stream(compression.open_decompressed(f, kind))[0]
        except (OSError, EOFError, ValueError, RuntimeError) as e:  # zlib/zstd report as these
            raise ArchiveError(f"{what}: corrupt {kind} layer: {e}") from None
        except Exception as e:  # zstandard.ZstdError derives from Exception only
            raise ArchiveError(f"{what}: corrupt {kind} layer: {e}") from None


# -- reading a tar stream ---------------------------------------------------------------------------
@dataclass
class _Entry:
    name: str
    data: bytes | None = None
    spool: _Spool | None = None
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
            plain = compression.open_decompressed(stream, kind)
            with tarfile.open(fileobj=plain, mode="r|", bufsize=CHUNK) as tf:
                for member in tf:
                    self._member(tf, member)
        except RegistryError:
            raise
        except (tarfile.TarError, EOFError, OSError, ValueError) as e:
            raise ArchiveError(f"{self.source}: invalid or truncated tar archive: {e}") from None
        except Exception as e:  # a decompressor's own error type
            raise ArchiveError(f"{self.source}: invalid or truncated tar archive: {e}") from None

    def _member(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
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
            f = tf.extractfile(m)
            assert f is not None
            if posixpath.basename(name) in _METADATA or ("/" not in name and name.endswith(".json")):
                if m.size > _MAX_JSON:
                    raise ArchiveError(f"{self.source}: {name} is too large ({m.size} bytes)")
                data = f.read()
                if len(data) != m.size:
                    raise ArchiveError(f"{self.source}: {name} is cut short")
                self.entries[name] = _Entry(name, data=data)
                return
            expected = _blob_digest(name)
            spool = _Spool(self.store, expected.algorithm if expected else "sha256")
            self.entries[name] = _Entry(name, spool=spool)
            if _copy(f, spool.write, m.size) != m.size:  # type: ignore[arg-type]
                raise ArchiveError(f"{self.source}: {name} is cut short")
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


# -- load ---------------------------------------------------------------------------------------
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
            got = _diff_id(entry.spool.path, entry.spool.head, f"{what}: layer {i}")
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
    _check_layers(config, [_need(received, d, plan, what) for d in manifest.layers], what)
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


# -- save ---------------------------------------------------------------------------------------
class _TarWriter:
    """A deterministic tar stream: mtime 0, root-owned, records padded as tar(1) pads them."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._offset = 0
        self.names: set[str] = set()

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._offset += len(data)

    def _header(self, name: str, size: int, kind: bytes, mode: int) -> None:
        ti = tarfile.TarInfo(name)
        ti.size, ti.type, ti.mode, ti.mtime = size, kind, mode, 0
        self._write(ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        self.names.add(name)

    def _pad(self, size: int) -> None:
        if size % tarfile.BLOCKSIZE:
            self._write(b"\0" * (tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE))

    def add_dir(self, name: str) -> None:
        if name not in self.names:
            self._header(name, 0, tarfile.DIRTYPE, 0o755)

    def add_bytes(self, name: str, data: bytes) -> None:
        self._header(name, len(data), tarfile.REGTYPE, 0o644)
        self._write(data)
        self._pad(len(data))

    def add_stream(self, name: str, stream: BinaryIO, size: int) -> None:
        self._header(name, size, tarfile.REGTYPE, 0o644)
        if _copy(stream, self._write, size) != size:
            raise ArchiveError(f"{name} changed size while being saved")
        self._pad(size)

    def close(self) -> None:
        self._write(b"\0" * (2 * tarfile.BLOCKSIZE))
        self._pad_record()
        self._out.flush()

    def _pad_record(self) -> None:
        if self._offset % tarfile.RECORDSIZE:
            self._write(b"\0" * (tarfile.RECORDSIZE - self._offset % tarfile.RECORDSIZE))


@dataclass(frozen=True)
class _Selected:
    descriptor: Descriptor
    references: tuple[Reference, ...]


def _select(store: Store, names: Sequence[str]) -> list[_Selected]:
    """Images to save, each with the names it is saved under: a tag saves that name, a bare
    repository all its tags, an image ID no name (as Docker does)."""
    chosen: dict[Digest, list[Reference]] = {}
    descs: dict[Digest, Descriptor] = {}
    for text in names:
        record = store.lookup(text)
        pairs = [(record, record.reference)]
        if _is_id_of(text, record.image_id):
            pairs = [(record, None)]
        else:
            bare = Reference.parse(text, default_tag=False)
            if bare.tag is None and bare.digest is None:
                pairs = [(r, r.reference) for r in store.images()
                         if r.reference is not None and r.reference.name == bare.name]
        for rec, ref in pairs:
            d = rec.descriptor
            descs.setdefault(d.digest, Descriptor(d.media_type, d.digest, d.size))
            refs = chosen.setdefault(d.digest, [])
            if ref is not None and ref not in refs:
                refs.append(ref)
    return [_Selected(descs[k], tuple(v)) for k, v in chosen.items()]


def _is_id_of(text: str, image_id: Digest | None) -> bool:
    hex_part = text.removeprefix("sha256:")
    return (image_id is not None and len(hex_part) >= 3 and image_id.encoded.startswith(hex_part)
            and all(c in "0123456789abcdef" for c in hex_part))


def save(store: Store, names: Sequence[str], out: BinaryIO, *, format: str = DOCKER_ARCHIVE) -> None:
    """Write the images named by *names* (references or IDs) to *out* as a tar archive.

    ``docker-archive`` is what Docker 25+ writes: an OCI layout with uncompressed layers plus
    ``manifest.json`` and ``repositories``; ``oci-archive`` is the OCI layout with blobs as stored.
    """
    if format not in FORMATS:
        raise ArchiveError(f"unknown archive format {format!r} (use {' or '.join(FORMATS)})")
    if not names:
        raise ArchiveError("save needs at least one image")
    selected = _select(store, names)
    tar = _TarWriter(out)
    tar.add_bytes("oci-layout", _OCI_LAYOUT)
    tar.add_dir("blobs/")
    tar.add_dir("blobs/sha256/")
    index: list[Descriptor] = []
    docker_items: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    for sel in selected:
        if format == OCI_ARCHIVE:
            desc = sel.descriptor
            for digest in sorted(store.referenced([desc]), key=str):
                _save_blob(store, tar, digest)
        else:
            desc, config_digest, layer_digests = _save_docker_image(store, tar, sel.descriptor)
            tags = [r.familiar for r in sel.references if r.tag]
            docker_items.append({"Config": f"blobs/sha256/{config_digest.encoded}",
                                 "RepoTags": tags or None,
                                 "Layers": [f"blobs/sha256/{d.encoded}" for d in layer_digests]})
            for r in sel.references:
                if r.tag and layer_digests:
                    repositories.setdefault(r.familiar_name, {})[r.tag] = layer_digests[-1].encoded
        if not sel.references:
            index.append(desc)
        for r in sel.references:
            index.append(desc.with_annotations(**{CONTAINERD_NAME: str(r), REF_NAME: r.tag or None}))
    tar.add_bytes("index.json", Index.build(index).raw)
    if format == DOCKER_ARCHIVE:
        tar.add_bytes("manifest.json", json.dumps(docker_items, separators=(",", ":")).encode())
        if repositories:
            tar.add_bytes("repositories", json.dumps(repositories, separators=(",", ":")).encode())
    tar.close()


def _save_blob(store: Store, tar: _TarWriter, digest: Digest) -> None:
    name = f"blobs/{digest.algorithm}/{digest.encoded}"
    if name in tar.names:
        return
    tar.add_dir(f"blobs/{digest.algorithm}/")
    with store.open_blob(digest) as f:
        tar.add_stream(name, f, os.fstat(f.fileno()).st_size)


def _save_docker_image(store: Store, tar: _TarWriter,
                       desc: Descriptor) -> tuple[Descriptor, Digest, list[Digest]]:
    """One image with uncompressed layers (its manifest rewritten if the store's were compressed)."""
    image = store.image(desc)
    diff_ids = image.diff_ids
    if len(diff_ids) != len(image.layers):
        raise ArchiveError(f"image {image.id}: {len(image.layers)} layers but {len(diff_ids)} diff_ids")
    layers: list[Descriptor] = []
    for layer, diff_id in zip(image.layers, diff_ids, strict=True):
        name = f"blobs/sha256/{diff_id.encoded}"
        kind = mt.layer_compression(layer.media_type) if mt.is_layer(layer.media_type) else "none"
        if kind == "none":
            if layer.digest != diff_id:
                raise DigestError(f"image {image.id}: layer {layer.digest} is not diff_id {diff_id}")
            if name not in tar.names:
                _save_blob(store, tar, layer.digest)
            layers.append(Descriptor(mt.OCI_LAYER, diff_id, store.blob_size(layer.digest)))
            continue
        size = _save_decompressed(store, tar, layer.digest, kind, diff_id, name)
        layers.append(Descriptor(mt.OCI_LAYER, diff_id, size))
    if all(a.digest == b.digest for a, b in zip(layers, image.layers, strict=True)):
        manifest = image.manifest
    else:
        manifest = Manifest.build(Descriptor(mt.OCI_CONFIG, image.id, image.manifest.config.size),
                                  layers)
    _save_blob(store, tar, image.id)
    mname = f"blobs/sha256/{manifest.digest.encoded}"
    if mname not in tar.names:
        tar.add_bytes(mname, manifest.raw)
    return manifest.descriptor(), image.id, diff_ids


def _save_decompressed(store: Store, tar: _TarWriter, digest: Digest, kind: str, diff_id: Digest,
                       name: str) -> int:
    """Decompress a stored layer into a spool (its size goes in the tar header), then add it."""
    spool = _Spool(store)
    try:
        with store.open_blob(digest) as f:
            _copy(compression.open_decompressed(f, kind), spool.write)
        spool.finish()
        if spool.digest != diff_id:
            raise DigestError(f"layer {digest} decompresses to {spool.digest}, expected diff_id {diff_id}")
        if name not in tar.names:
            with open(spool.path, "rb") as f:
                tar.add_stream(name, f, spool.size)
        return spool.size
    finally:
        spool.discard()


# -- import -------------------------------------------------------------------------------------
_CHANGE_COMMANDS = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "USER", "VOLUME", "WORKDIR",
                    "STOPSIGNAL")
_OTHER_INSTRUCTIONS = ("ADD", "ARG", "COPY", "FROM", "HEALTHCHECK", "MAINTAINER", "ONBUILD", "RUN",
                       "SHELL")


def parse_changes(changes: Iterable[str], base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Apply ``--change`` lines (the Dockerfile instructions ``docker import`` takes) to a
    container config (``Cmd``, ``Env``…); returns the new config. Raises ``ArchiveError``."""
    config: dict[str, Any] = json.loads(json.dumps(dict(base or {})))
    cmd_set = False
    for line in changes:
        text = line.strip()
        keyword, _, rest = text.partition(" ")
        if "\t" in keyword:
            keyword, _, more = keyword.partition("\t")
            rest = more + " " + rest
        word, rest = keyword.upper(), rest.strip()
        where = f"invalid --change {line!r}"
        if word not in _CHANGE_COMMANDS:
            if word in _OTHER_INSTRUCTIONS:
                raise ArchiveError(f"{where}: {word} is not a valid change command")
            raise ArchiveError(f"{where}: unknown instruction: {keyword or '(empty)'}")
        if not rest:
            raise ArchiveError(f"{where}: {word} requires at least one argument")
        if word in ("CMD", "ENTRYPOINT"):
            argv = _exec_form(rest, where)
            value = argv if argv is not None else ["/bin/sh", "-c", rest]
            if word == "CMD":
                config["Cmd"] = value
                cmd_set = True
            else:
                config["Entrypoint"] = value
                if not cmd_set:
                    config.pop("Cmd", None)
        elif word == "ENV":
            env = {e.partition("=")[0]: e for e in config.get("Env") or []}
            for k, v in _pairs(rest, where, legacy_ok=True):
                env[k] = f"{k}={v}"
            config["Env"] = list(env.values())
        elif word == "LABEL":
            labels = dict(config.get("Labels") or {})
            labels.update(_pairs(rest, where, legacy_ok=False))
            config["Labels"] = labels
        elif word == "EXPOSE":
            ports = dict(config.get("ExposedPorts") or {})
            for p in _words(rest, where):
                ports.update({port: {} for port in _expose(p, where)})
            config["ExposedPorts"] = ports
        elif word == "USER":
            config["User"] = rest
        elif word == "VOLUME":
            argv = _exec_form(rest, where)
            vols = dict(config.get("Volumes") or {})
            for v in argv if argv is not None else _words(rest, where):
                if not v.strip():
                    raise ArchiveError(f"{where}: VOLUME specified can not be an empty string")
                vols[v] = {}
            config["Volumes"] = vols
        elif word == "WORKDIR":
            config["WorkingDir"] = posixpath.normpath(
                posixpath.join(config.get("WorkingDir") or "/", rest))
        elif word == "STOPSIGNAL":
            _check_signal(rest, where)
            config["StopSignal"] = rest
    return config


def _exec_form(rest: str, where: str) -> list[str] | None:
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None  # Docker falls back to the shell form when the JSON does not parse
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ArchiveError(f"{where}: exec form must be a JSON array of strings")
    return value


def _words(rest: str, where: str) -> list[str]:
    try:
        return shlex.split(rest, posix=True)
    except ValueError as e:
        raise ArchiveError(f"{where}: {e}") from None


def _pairs(rest: str, where: str, *, legacy_ok: bool) -> list[tuple[str, str]]:
    words = _words(rest, where)
    if words and "=" not in words[0]:
        if not legacy_ok or len(words) < 2:
            raise ArchiveError(f"{where}: expected KEY=VALUE")
        key, _, value = rest.partition(" ")
        return [(key.strip(), " ".join(_words(value.strip(), where)))]
    out = []
    for w in words:
        k, eq, v = w.partition("=")
        if not eq or not k:
            raise ArchiveError(f"{where}: {w!r} is not KEY=VALUE")
        out.append((k, v))
    return out


def _expose(spec: str, where: str) -> list[str]:
    port, _, proto = spec.partition("/")
    proto = (proto or "tcp").lower()
    lo, dash, hi = port.partition("-")
    try:
        first, last = int(lo), int(hi) if dash else int(lo)
    except ValueError:
        raise ArchiveError(f"{where}: invalid port {spec!r}") from None
    if proto not in ("tcp", "udp", "sctp") or not 0 < first <= last <= 65535:
        raise ArchiveError(f"{where}: invalid port {spec!r}")
    return [f"{p}/{proto}" for p in range(first, last + 1)]


def _check_signal(text: str, where: str) -> None:
    if text.isdigit():
        if 0 < int(text) <= 64:
            return
    else:
        name = text.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        if name in signal.Signals.__members__ or name.startswith("SIGRTM"):
            return
    raise ArchiveError(f"{where}: invalid signal {text!r}")


@dataclass(frozen=True)
class Imported:
    descriptor: Descriptor
    config: ImageConfig
    reference: Reference | None


def import_rootfs(
    store: Store,
    source: BinaryIO | Path,
    *,
    reference: Reference | None = None,
    changes: Sequence[str] = (),
    message: str | None = None,
    platform: Platform | None = None,
    source_name: str = "-",
) -> Imported:
    """``docker import``: a rootfs tarball (plain or compressed) or a directory becomes a
    one-layer image (uncompressed layer), configured by *changes*, tagged *reference*."""
    container_config = parse_changes(changes)
    with store.lease():
        spool = _Spool(store)
        try:
            if isinstance(source, Path) and source.is_dir():
                _tar_directory(source, spool)
            else:
                f = open(source, "rb") if isinstance(source, Path) else contextlib.nullcontext(source)
                with f as stream:
                    try:
                        _copy(compression.open_decompressed(stream), spool.write)
                    except (OSError, EOFError, ValueError) as e:
                        raise ArchiveError(f"{source_name}: cannot read the tarball: {e}") from None
                    except Exception as e:  # zstandard.ZstdError
                        raise ArchiveError(f"{source_name}: cannot read the tarball: {e}") from None
            spool.finish()
            _check_tar(spool.path, source_name)
            diff_id = spool.publish(store)
            size = store.blob_size(diff_id)
            created = now_rfc3339()
            comment = message or f"Imported from {source_name}"
            p = platform or Platform.host()
            data: dict[str, Any] = {
                "architecture": p.architecture, "os": p.os, "created": created,
                "comment": comment, "config": container_config,
                "rootfs": {"type": "layers", "diff_ids": [str(diff_id)]},
                "history": [{"created": created, "comment": comment}],
            }
            if p.variant:
                data["variant"] = p.variant
            config = ImageConfig.build(data)
            manifest = Manifest.build(Descriptor(mt.OCI_CONFIG, config.digest, config.size),
                                      [Descriptor(mt.OCI_LAYER, diff_id, size)])
            store.put_image(manifest, config)
            desc = manifest.descriptor()
            store.add(desc, reference)
            return Imported(desc, config, reference)
        finally:
            spool.discard()


def _tar_directory(root: Path, spool: _Spool) -> None:
    """The tree under *root* as a tar with sorted entries and numeric owners only."""

    def clean(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        ti.uname = ti.gname = ""
        return ti

    with tarfile.open(fileobj=spool, mode="w|", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
        for path in _walk_sorted(root):
            tf.add(path, arcname=path.relative_to(root).as_posix(), recursive=False, filter=clean)


def _walk_sorted(root: Path) -> Iterator[Path]:
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        path = Path(entry.path)
        yield path
        if entry.is_dir(follow_symlinks=False):
            yield from _walk_sorted(path)


def _check_tar(path: Path, source_name: str) -> None:
    try:
        with tarfile.open(path, "r:") as tf:
            for _ in tf:
                pass
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ArchiveError(f"{source_name}: not a valid tar archive: {e}") from None


__all__ = ["DOCKER_ARCHIVE", "OCI_ARCHIVE", "FORMATS", "Loaded", "Imported", "load", "save",
           "import_rootfs", "parse_changes", "now_rfc3339", "canonical_json"]
