"""Image assembly: a built stage's config, history and layers → config + manifest in the store.

Layers go in the requested compression (an uncompressed or snapshot-only layer is encoded
once and remembered in the build cache); history entries this build added are dated as
BuildKit's exporter dates them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from builder.base.errors import BuildCancelled
from builder.imagebuild.cache import BuildCache
from builder.imagebuild.execute.inputs import LayerRef
from registry import mediatypes as mt
from registry.digest import Digest
from registry.model import Descriptor
from registry.store import Image, Store

TYPE_CHECKING = False  # not ``typing``'s: a build loads no ``typing`` (~6 ms)
if TYPE_CHECKING:
    from typing import Any


def rfc3339(epoch: float) -> str:
    """*epoch* in UTC as BuildKit writes a history time: whole seconds as ``…:05Z``, else with
    microseconds, ``…:05.250000Z``. The bytes ``datetime.fromtimestamp(epoch, UTC)``'s
    ``strftime`` gave (its microseconds rounded half to even), without importing ``datetime``
    (~5 ms of a build's start-up)."""
    whole = int(epoch)
    if epoch == whole:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(whole))
    micros = round((epoch - whole) * 1e6)  # exact: a float less its integer part
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    elif micros < 0:
        whole, micros = whole - 1, micros + 1_000_000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{micros:06d}Z"


def dated(history: Sequence[Mapping[str, Any]], inherited: int, now: str) -> list[dict[str, Any]]:
    """*history* with a time on every entry this build added, as BuildKit's exporter dates
    them: an empty entry takes the time of the layer before it, those before the first new
    layer take that layer's, and with no new layer at all every one is the build's time."""
    out = [dict(h) for h in history]
    new = out[inherited:]
    first = next((h["created"] for h in new if h.get("created")), now)
    last = first
    for h in new:
        if h.get("created"):
            last = h["created"]
        else:
            h["created"] = last
    # the OCI History field order, as BuildKit writes it: created, created_by, comment, empty_layer
    order = ("created", "created_by", "comment", "empty_layer")
    for i, h in enumerate(new, start=inherited):
        out[i] = {k: h[k] for k in order if k in h} | {k: v for k, v in h.items() if k not in order}
    return out


class Assembler:
    """Writes images from built stages into *store*, layers encoded with *compression*."""

    def __init__(self, store: Store, cache: BuildCache, layer_cache: Path, *, compression: str) -> None:
        self.store = store
        self.cache = cache
        self.layer_cache = layer_cache
        self.compression = compression

    def image(self, config: Mapping[str, Any], history: Sequence[Mapping[str, Any]],
              layers: Sequence[LayerRef], *, inherited: int, epoch: int | None, started: float,
              labels: Mapping[str, str] | None = None) -> Image:
        """Write the config and manifest of a stage (its planned *config* minus layers and
        history) to the store, untagged."""
        data = dict(config)
        cfg = dict(data.get("config") or {})
        if labels:
            cfg["Labels"] = {**(cfg.get("Labels") or {}), **labels}
        data["config"] = cfg
        now = rfc3339(epoch if epoch is not None else started)
        entries = dated(history, inherited, now)
        data["created"] = (entries[-1].get("created") if len(entries) > inherited else None) or now
        data["history"] = entries
        pairs = [self._for_image(lr, epoch) for lr in layers]
        data["rootfs"] = {"type": "layers", "diff_ids": [str(i) for _, i in pairs]}
        return self.store.build_image(data, [d for d, _ in pairs])

    def _for_image(self, lr: LayerRef, epoch: int | None) -> tuple[Descriptor, Digest]:
        """(descriptor, diff_id) of the layer as the image carries it."""
        if not lr.snapshot:
            return self._in_compression(lr), lr.diff_id
        comp = self.compression
        known = self.cache.get_materialized(lr.diff_id, comp)
        if known is not None:
            return known
        from builder.core.layers import commit_layer, write_diff

        src = self.layer_cache / lr.diff_id.encoded
        made = commit_layer(self.store, lambda sink: write_diff(src, sink, source_date_epoch=epoch)
                            or None, comp)
        assert made is not None
        desc, diff_id = made
        self.cache.put_variant(lr.diff_id, comp, desc, real_diff_id=diff_id)
        return desc, diff_id

    def _in_compression(self, lr: LayerRef) -> Descriptor:
        """The layer as the image carries it: built layers in the requested compression (a
        cached or uncompressed intermediate one is re-encoded once, and remembered)."""
        comp = self.compression
        if not lr.built or mt.layer_compression(lr.descriptor.media_type) == comp:
            return lr.descriptor
        known = self.cache.get_variant(lr.diff_id, comp)
        if known is not None:
            return known
        from builder.core.layers import recompress

        desc, diff_id = recompress(self.store, lr.descriptor, comp)
        if diff_id != lr.diff_id:
            raise BuildCancelled(f"layer {lr.diff_id} re-encoded to different content {diff_id}")
        self.cache.put_variant(lr.diff_id, comp, desc)
        return desc
