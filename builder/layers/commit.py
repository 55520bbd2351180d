"""The one way a layer reaches the store: a tar written into a sink, compressed and hashed on
the way (diff_id and blob digest in one pass), committed as one blob.

Used for a step's diff, a snapshot made into a blob for an image, and a layer re-encoded in
another compression.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import IO, Any

from registry import mediatypes as mt
from registry.compression import LayerEncoder
from registry.digest import Digest
from registry.model import Descriptor
from registry.store import Store


def commit_layer(store: Store, write: Callable[[IO[bytes]], bool | None],
                 compression: str) -> tuple[Descriptor, Digest] | None:
    """``write(sink)`` a layer tar; store it compressed with *compression*. Returns the blob's
    descriptor and the tar's diff_id, or None (nothing stored) when *write* returns False."""
    with store.lease(), store.writer() as w:
        enc = LayerEncoder(w, compression)  # type: ignore[arg-type]
        pipe = _Pipelined(enc)
        try:
            wrote = write(pipe)  # type: ignore[arg-type]
        finally:
            pipe.close()
        enc.close()
        if wrote is False:
            return None
        digest = w.commit()
        return Descriptor(mt.layer_media_type(compression), digest, w.size), enc.diff_id


def recompress(store: Store, desc: Descriptor, compression: str) -> tuple[Descriptor, Digest]:
    """*desc*'s layer re-encoded with *compression*; returns the new descriptor and its diff_id."""
    from registry.compression import open_decompressed

    def copy(sink: IO[bytes]) -> None:
        with store.open_blob(desc.digest) as src:
            reader = open_decompressed(src)
            while chunk := reader.read(1 << 20):
                sink.write(chunk)

    out = commit_layer(store, copy, compression)
    assert out is not None
    return out


class _Pipelined:
    """A write sink that hands 1 MiB batches to a thread running *sink*: the tar of a diff is
    made (files read, headers packed) while the previous batch is hashed and compressed
    (hashlib and ISA-L release the GIL), so a big layer uses both cores."""

    BATCH = 1 << 20

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.q: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self.buf = bytearray()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.closed = False

    def _run(self) -> None:
        while (chunk := self.q.get()) is not None:
            if self.error is None:
                try:
                    self.sink.write(chunk)
                except BaseException as e:  # noqa: BLE001 - re-raised in the writer's thread
                    self.error = e

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.error is not None:
            raise self.error
        self.buf += data
        if len(self.buf) >= self.BATCH:
            self.q.put(bytes(self.buf))
            self.buf.clear()
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.buf:
            self.q.put(bytes(self.buf))
            self.buf.clear()
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
