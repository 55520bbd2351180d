"""Images as content: the OCI model, the local store, archives and the distribution client.

Pure Python; never imports ``builder``. The public Python API is the names in ``__all__``,
imported from their modules on first use (``import registry`` itself loads nothing else).
"""

from __future__ import annotations

# not ``typing.TYPE_CHECKING``: importing typing would cost ``import builder`` ~5 ms (mypy
# treats this constant the same way)
TYPE_CHECKING = False

# public name -> "module:attribute"
_EXPORTS: dict[str, str] = {
    # values
    "Digest": "registry.digest:Digest",
    "Reference": "registry.reference:Reference",
    "Descriptor": "registry.model:Descriptor",
    "Platform": "registry.model:Platform",
    "Manifest": "registry.model:Manifest",
    "Index": "registry.model:Index",
    "ImageConfig": "registry.model:ImageConfig",
    "ContainerConfig": "registry.config:ContainerConfig",
    # the local store
    "Store": "registry.store:Store",
    "Image": "registry.store:Image",
    # moving images: every move is a copy between two ends
    "copy": "registry.transfer:copy",
    "pull": "registry.transfer:pull",
    "push": "registry.transfer:push",
    "parse_end": "registry.transfer:parse_end",
    "RegistryClient": "registry.client:RegistryClient",
    "Repository": "registry.client:Repository",
    "client_for": "registry.client:client_for",
    # tarballs
    "save": "registry.archive.save:save",
    "load": "registry.archive.load:load",
    "import_rootfs": "registry.archive.importer:import_rootfs",
    # errors
    "RegistryError": "registry.errors:RegistryError",
    "NotFound": "registry.errors:NotFound",
    "Unauthorized": "registry.errors:Unauthorized",
    "InvalidReference": "registry.errors:InvalidReference",
    "DigestError": "registry.errors:DigestError",
}

# the names of ``_EXPORTS`` (a test pins both)
__all__ = [
    "ContainerConfig",
    "Descriptor",
    "Digest",
    "DigestError",
    "Image",
    "ImageConfig",
    "Index",
    "InvalidReference",
    "Manifest",
    "NotFound",
    "Platform",
    "Reference",
    "RegistryClient",
    "RegistryError",
    "Repository",
    "Store",
    "Unauthorized",
    "client_for",
    "copy",
    "import_rootfs",
    "load",
    "parse_end",
    "pull",
    "push",
    "save",
]

if TYPE_CHECKING:  # the names, typed, for checkers; at run time __getattr__ imports them
    from registry.archive.importer import import_rootfs
    from registry.archive.load import load
    from registry.archive.save import save
    from registry.client import RegistryClient, Repository, client_for
    from registry.config import ContainerConfig
    from registry.digest import Digest
    from registry.errors import DigestError, InvalidReference, NotFound, RegistryError, Unauthorized
    from registry.model import Descriptor, ImageConfig, Index, Manifest, Platform
    from registry.reference import Reference
    from registry.store import Image, Store
    from registry.transfer import copy, parse_end, pull, push


if not TYPE_CHECKING:  # mypy would take any name, submodules too, as Any
    from registry.lazy import lazy_exports

    __getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
    del lazy_exports
