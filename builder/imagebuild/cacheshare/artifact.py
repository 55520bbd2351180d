"""The exported cache: an OCI image manifest whose config blob (media type ``CONFIG_TYPE``)
lists cache records, and whose layers are the blobs those records produced (and, with
``cache-mounts=true``, one tar per ``RUN --mount=type=cache`` id).

A record is the local cache's (``builder.imagebuild.cache.CacheRecord``): the step's content key, the
chain it ran on (``parent``), the layer it made (an index into the manifest's layers), its
diff_id and creation time. No host path or mtime is in any of them. The inline form is the
same document under ``INLINE_KEY`` in an image's config, its layers indexes into the image's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from builder.imagebuild.cache import CacheRecord
from registry.digest import Digest
from registry.model import Descriptor, canonical_json

CONFIG_TYPE = "application/vnd.pybuild.buildcache.config.v1+json"
#: the top-level key of an image config carrying inline cache records
INLINE_KEY = "io.pybuild.cache.v1"
#: BuildKit's inline cache key (accepted, and read as no records)
BUILDKIT_INLINE_KEY = "moby.buildkit.cache.v0"
MOUNT_ANNOTATION = "io.pybuild.cache.mount.id"
_SCHEMA = 1


@dataclass(frozen=True)
class SharedRecord:
    record: CacheRecord
    #: index of the record's blob in ``CacheConfig.layers`` (None: no layer)
    layer: int | None
    #: a snapshot-only record's blob is a tar of it: that tar's own diff_id
    tar_diff_id: Digest | None = None


@dataclass(frozen=True)
class CacheConfig:
    records: tuple[SharedRecord, ...] = ()
    layers: tuple[Descriptor, ...] = ()
    #: cache mount id -> index in ``layers``
    mounts: dict[str, int] = field(default_factory=dict)
    #: layer diff_id -> its files' content digest (``cache/content`` memos), for steps that
    #: read other stages: their keys need no download
    contents: dict[str, str] = field(default_factory=dict)
    #: "why did this miss?" slots: the inputs a step had when it last ran
    slots: dict[str, Any] = field(default_factory=dict)

    def to_doc(self) -> dict[str, Any]:
        recs = []
        for s in self.records:
            r = s.record
            recs.append({"key": r.key, "parent": r.parent, "layer": s.layer,
                         "diff_id": str(r.diff_id) if r.diff_id else None,
                         "tar_diff_id": str(s.tar_diff_id) if s.tar_diff_id else None,
                         "created": r.created, "created_by": r.created_by, "inputs": r.inputs,
                         "snapshot": r.snapshot})
        return {"schema": _SCHEMA, "records": recs,
                "layers": [d.to_dict() for d in self.layers],
                "mounts": self.mounts, "contents": self.contents, "slots": self.slots}

    def to_json(self) -> bytes:
        return canonical_json(self.to_doc())

    @classmethod
    def from_doc(cls, doc: Any) -> CacheConfig:
        """Validate a document whole (a damaged one raises ``ValueError``)."""
        try:
            if not isinstance(doc, dict) or doc.get("schema") != _SCHEMA:
                raise ValueError("unknown cache config schema")
            layers = tuple(Descriptor.from_dict(d) for d in doc.get("layers") or [])
            records = []
            for d in doc.get("records") or []:
                idx = d.get("layer")
                if idx is not None and not (isinstance(idx, int) and 0 <= idx < len(layers)):
                    raise ValueError(f"record layer index {idx!r} out of range")
                diff_id = Digest.parse(d["diff_id"]) if d.get("diff_id") else None
                snapshot = bool(d.get("snapshot"))
                if (idx is None) != (diff_id is None) or (snapshot and not d.get("tar_diff_id")):
                    raise ValueError("record layer and diff_id disagree")
                rec = CacheRecord(key=_hex(d["key"]), parent=_hex(d["parent"], empty=True),
                                  layer=None if snapshot or idx is None else layers[idx],
                                  diff_id=diff_id, created=str(d.get("created") or ""),
                                  created_by=str(d.get("created_by") or ""),
                                  inputs={str(k): str(v) for k, v in (d.get("inputs") or {}).items()},
                                  snapshot=snapshot)
                tar = Digest.parse(d["tar_diff_id"]) if d.get("tar_diff_id") else None
                records.append(SharedRecord(rec, idx, tar))
            mounts = {str(k): int(v) for k, v in (doc.get("mounts") or {}).items()}
            if any(not 0 <= v < len(layers) for v in mounts.values()):
                raise ValueError("cache mount layer index out of range")
            contents = {str(Digest.parse(k)): _hex(v) for k, v in (doc.get("contents") or {}).items()}
            slots = doc.get("slots") or {}
            if not isinstance(slots, dict):
                raise ValueError("slots must be an object")
            return cls(tuple(records), layers, mounts, contents, slots)
        except ValueError:
            raise
        except Exception as e:  # noqa: BLE001 - any malformed field is a damaged record
            raise ValueError(f"damaged cache record: {e}") from None

    @classmethod
    def from_json(cls, raw: bytes) -> CacheConfig:
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"cache config is not JSON: {e}") from None
        return cls.from_doc(doc)


def _hex(value: Any, *, empty: bool = False) -> str:
    text = str(value)
    if empty and text == "":
        return text
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"not a cache key: {text[:80]!r}")
    return text
