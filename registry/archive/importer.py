"""``import``: a rootfs tarball (plain or compressed) or a directory as a one-layer image, with
a container config given as data (``builder`` turns ``--change`` lines into it).
"""

from __future__ import annotations

import contextlib
import json
import os
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from registry import compression
from registry import mediatypes as mt
from registry.archive.spool import Spool, copy_stream
from registry.errors import ArchiveError
from registry.model import Descriptor, ImageConfig, Platform
from registry.reference import Reference
from registry.store import Store


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
    config: Mapping[str, Any] | None = None,
    message: str | None = None,
    platform: Platform | None = None,
    source_name: str = "-",
) -> Imported:
    """``docker import``: a rootfs tarball (plain or compressed) or a directory becomes a
    one-layer image (uncompressed layer) with the container *config* (``Cmd``, ``Env``…: what
    the caller made of ``--change`` lines), tagged *reference*."""
    container_config: dict[str, Any] = json.loads(json.dumps(dict(config or {})))
    with store.lease():
        spool = Spool(store)
        try:
            if isinstance(source, Path) and source.is_dir():
                _tar_directory(source, spool)
            else:
                f = open(source, "rb") if isinstance(source, Path) else contextlib.nullcontext(source)
                with f as stream:
                    try:
                        copy_stream(compression.open_decompressed(stream), spool.write)
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
            image = store.build_image(data, [Descriptor(mt.OCI_LAYER, diff_id, size)])
            store.add(image.descriptor, reference)
            return Imported(image.descriptor, image.config, reference)
        finally:
            spool.discard()


def _tar_directory(root: Path, spool: Spool) -> None:
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
