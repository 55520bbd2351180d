"""Image tarballs: ``save``/``load`` of docker-archive and oci-archive, ``import`` of a rootfs.

Loads stream the tar (stdin works): entries are spooled into the store's ingest area and
verified, and only a fully checked archive is published as blobs and tags.
"""

from __future__ import annotations

from registry.archive.importer import Imported, import_rootfs, now_rfc3339
from registry.archive.load import CONTAINERD_NAME, Loaded, load
from registry.archive.save import DOCKER_ARCHIVE, FORMATS, OCI_ARCHIVE, save, save_image

__all__ = ["CONTAINERD_NAME", "DOCKER_ARCHIVE", "FORMATS", "OCI_ARCHIVE", "Imported", "Loaded",
           "import_rootfs", "load", "now_rfc3339", "save", "save_image"]
