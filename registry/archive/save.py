"""``save``: images from the store as a docker-archive (Docker 25+ layout: OCI layout with
uncompressed layers plus manifest.json) or an oci-archive, written as a deterministic tar stream.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from registry import compression
from registry import mediatypes as mt
from registry.archive.load import CONTAINERD_NAME
from registry.archive.spool import Spool, copy_stream
from registry.digest import Digest
from registry.errors import ArchiveError, DigestError
from registry.model import Descriptor, Index, Manifest
from registry.reference import Reference
from registry.store import REF_NAME, Store

DOCKER_ARCHIVE = "docker-archive"
OCI_ARCHIVE = "oci-archive"
FORMATS = (DOCKER_ARCHIVE, OCI_ARCHIVE)
_OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'


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
        if copy_stream(stream, self._write, size) != size:
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
    if not names:
        raise ArchiveError("save needs at least one image")
    _write(store, _select(store, names), out, format)


def save_image(store: Store, image: Descriptor, references: Sequence[Reference], out: BinaryIO, *,
               format: str = DOCKER_ARCHIVE) -> None:
    """``save`` of one image given by its descriptor (it need not be tagged, nor listed in the
    store's index: a build's ``--output``), named *references* in the archive."""
    d = Descriptor(image.media_type, image.digest, image.size)
    _write(store, [_Selected(d, tuple(references))], out, format)


def _write(store: Store, selected: list[_Selected], out: BinaryIO, format: str) -> None:
    if format not in FORMATS:
        raise ArchiveError(f"unknown archive format {format!r} (use {' or '.join(FORMATS)})")
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
            if mt.is_index(sel.descriptor.media_type):
                # every platform in index.json, as Docker 25+ saves an index; manifest.json
                # names the host's image (what a pre-index loader takes)
                for digest in sorted(store.referenced([sel.descriptor]), key=str):
                    _save_blob(store, tar, digest)
                desc = sel.descriptor
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
            # ref.name as skopeo and umoci take it (``oci-archive:x.tar:busybox:latest``), which
            # tells apart images sharing a tag; Docker 25+ reads the containerd name first.
            index.append(desc.with_annotations(**{CONTAINERD_NAME: str(r), REF_NAME: r.familiar}))
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
    spool = Spool(store)
    try:
        with store.open_blob(digest) as f:
            copy_stream(compression.open_decompressed(f, kind), spool.write)
        spool.finish()
        if spool.digest != diff_id:
            raise DigestError(f"layer {digest} decompresses to {spool.digest}, expected diff_id {diff_id}")
        if name not in tar.names:
            with open(spool.path, "rb") as f:
                tar.add_stream(name, f, spool.size)
        return spool.size
    finally:
        spool.discard()
