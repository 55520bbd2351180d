"""The one way a layer reaches the store: a tar written into a sink, compressed and hashed on
the way (diff_id and blob digest in one pass), committed as one blob.

Used for a step's diff, a snapshot made into a blob for an image, and a layer re-encoded in
another compression.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO

from registry import mediatypes as mt
from registry.compression import ContentSizer, LayerEncoder, Pipelined, open_decompressed
from registry.digest import Digest
from registry.model import Descriptor
from registry.store import Store


def commit_layer(store: Store, write: Callable[[IO[bytes]], bool | None],
                 compression: str) -> tuple[Descriptor, Digest] | None:
    """``write(sink)`` a layer tar; store it compressed with *compression*. Returns the blob's
    descriptor and the tar's diff_id, or None (nothing stored) when *write* returns False."""
    with store.lease(), store.writer() as w:
        enc = LayerEncoder(w, compression)  # type: ignore[arg-type]
        sizer = ContentSizer(enc)
        pipe = Pipelined(sizer)
        try:
            wrote = write(pipe)  # type: ignore[arg-type]
        finally:
            pipe.close()
        enc.close()
        if wrote is False:
            return None
        digest = w.commit()
        if sizer.known:  # an image's SIZE then never re-reads the blob
            store.remember_content_size(digest, sizer.total)
        return Descriptor(mt.layer_media_type(compression), digest, w.size), enc.diff_id


def recompress(store: Store, desc: Descriptor, compression: str) -> tuple[Descriptor, Digest]:
    """*desc*'s layer re-encoded with *compression*; returns the new descriptor and its diff_id."""
    def copy(sink: IO[bytes]) -> None:
        with store.open_blob(desc.digest) as src:
            reader = open_decompressed(src)
            while chunk := reader.read(1 << 20):
                sink.write(chunk)

    out = commit_layer(store, copy, compression)
    assert out is not None
    return out
