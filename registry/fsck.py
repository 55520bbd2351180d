"""``fsck`` for the local store: blobs against their digests, images against the blobs they
reference, tags, and what dead transfers left (leases, ingest files); ``repair`` removes what
nothing references (``Store.sweep`` and ``Store.gc``), never what an image still needs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from registry import mediatypes as mt
from registry.digest import CHUNK, Digest
from registry.errors import DigestError, InvalidReference, RegistryError
from registry.leases import leftovers
from registry.model import Descriptor, Index, Manifest
from registry.reference import Reference
from registry.store import REF_NAME, Store, file_lock


@dataclass(frozen=True)
class Problem:
    """One thing wrong: where (a path or a digest), what, and whether ``repair`` removes it."""

    area: str
    where: str
    message: str
    repairable: bool = True

    def __str__(self) -> str:
        return f"{self.area}: {self.where}: {self.message}"


def _hash_file(path: str, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return str(h.hexdigest())


def _blobs(store: Store) -> list[tuple[Digest | None, str]]:
    root = store.path / "blobs"
    out: list[tuple[Digest | None, str]] = []
    if not root.is_dir():
        return out
    for alg in sorted(root.iterdir()):
        for blob in sorted(alg.iterdir()):
            try:
                out.append((Digest(alg.name, blob.name), str(blob)))
            except DigestError:
                out.append((None, str(blob)))
    return out


def _image_problems(store: Store, entries: list[Descriptor]) -> list[Problem]:
    out: list[Problem] = []
    for e in entries:
        name = e.annotation(REF_NAME)
        label = name or str(e.digest)
        if name:
            try:
                Reference.parse(name)
            except InvalidReference as err:
                out.append(Problem("tag", name, f"not a valid reference ({err})", False))
        stack = [e]
        while stack:
            d = stack.pop()
            if not store.has_blob(d.digest):
                out.append(Problem("image", label, f"references {d.digest}, missing from the store",
                                   False))
                continue
            if not (mt.is_index(d.media_type) or mt.is_manifest(d.media_type)):
                continue
            try:
                raw = store.read_blob(d.digest)
                if mt.is_index(d.media_type):
                    stack.extend(Index.parse(raw, d.media_type).manifests)
                else:
                    m = Manifest.parse(raw, d.media_type)
                    stack.extend([m.config, *m.layers])
            except RegistryError as err:
                out.append(Problem("image", label, f"manifest {d.digest} unreadable: {err}", False))
    return out


def check_store(store: Store, *, keep: Iterable[Digest] = ()) -> list[Problem]:
    """Every problem of *store*, repairable ones (``repair_store``) marked so. Blobs that
    nothing references are counted only when no lease is live (else a transfer's are)."""
    out: list[Problem] = []
    if not (store.path / "index.json").exists():
        return out
    try:
        entries = [r.descriptor for r in store.images()]
    except (RegistryError, ValueError, json.JSONDecodeError) as err:
        return [Problem("index", str(store.path / "index.json"), f"unreadable: {err}", False)]
    on_disk = _blobs(store)
    referenced = store.referenced() | set(keep)
    for digest, path in on_disk:
        if digest is None:
            out.append(Problem("blob", path, "not named by a digest"))
            continue
        if _hash_file(path, digest.algorithm) != digest.encoded:
            out.append(Problem("blob", str(digest), "content does not match its digest",
                               digest not in referenced))
    out += _image_problems(store, entries)
    with leftovers(store.path / "ingest") as found:
        out += [Problem("ingest", str(p), "left by a killed or cancelled writer") for p in found.ingest]
        out += [Problem("lease", str(p), "dead lease of a killed or cancelled transfer")
                for p in found.leases]
        live = found.live_listed
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(file_lock(store.path / ".gc.lock", wait=False))
        except BlockingIOError:
            return out  # a build or transfer holds a lease: its blobs are not referenced yet
        for digest, _path in on_disk:
            if digest is not None and digest not in referenced and digest not in live:
                out.append(Problem("blob", str(digest),
                                   "referenced by no image, cache record or transfer"))
    return out


def repair_store(store: Store, *, keep: Iterable[Digest] = ()) -> None:
    """Remove what nothing references: dead transfers' leftovers, then unreferenced blobs and
    badly named files under ``blobs/`` (skipped while a lease is live)."""
    store.sweep()
    store.gc(keep=set(keep), wait=False)
    with contextlib.suppress(BlockingIOError), file_lock(store.path / ".gc.lock", wait=False):
        for digest, path in _blobs(store):
            if digest is None:
                with contextlib.suppress(FileNotFoundError):
                    store.path.joinpath(path).unlink()


__all__ = ["Problem", "check_store", "repair_store"]
