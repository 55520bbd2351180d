"""The store's records: ``ImageRecord`` (one ``index.json`` entry and its annotations) and
``Image`` (a resolved single-platform image); ``registry.store`` re-exports both.
"""

from __future__ import annotations

from registry import lookup
from registry.digest import Digest
from registry.model import Descriptor
from registry.reference import Reference
from registry.values import frozen

TYPE_CHECKING = False  # not ``typing``'s: a hot path loads no ``typing`` (~5 ms)
if TYPE_CHECKING:
    from registry.model import ImageConfig, Manifest

REF_NAME = lookup.REF_NAME
IMAGE_ID = lookup.IMAGE_ID
IMAGE_CREATED = "io.pybuild.image.created"
IMAGE_SIZE = "io.pybuild.image.size"
#: "true" on an entry whose manifest digest a registry knows under its repository (pulled or
#: pushed): Docker's RepoDigests and ``images --digests`` list only those
REPO_DIGEST = "io.pybuild.image.repo-digest"


# frozen values, not dataclasses: every command that lists or resolves images loads these, and
# a dataclass execs its generated methods at import
@frozen
class ImageRecord:
    """One ``index.json`` entry: a tag (or none, for a dangling image) and what it points at."""

    descriptor: Descriptor

    @property
    def reference(self) -> Reference | None:
        name = self.descriptor.annotation(REF_NAME)
        return Reference.parse(name) if name else None

    @property
    def image_id(self) -> Digest | None:
        v = self.descriptor.annotation(IMAGE_ID)
        return Digest.parse(v) if v else None

    @property
    def created(self) -> str | None:
        return self.descriptor.annotation(IMAGE_CREATED)

    @property
    def size(self) -> int:
        return int(self.descriptor.annotation(IMAGE_SIZE) or 0)

    @property
    def repo_digest(self) -> bool:
        """Whether the manifest digest is a repo digest (pulled or pushed, as Docker counts)."""
        return self.descriptor.annotation(REPO_DIGEST) == "true"


@frozen
class Image:
    """A resolved single-platform image: its manifest, its config, and how it was named."""

    descriptor: Descriptor
    manifest: Manifest
    config: ImageConfig
    reference: Reference | None = None

    @property
    def id(self) -> Digest:
        return self.manifest.config.digest

    @property
    def layers(self) -> list[Descriptor]:
        return self.manifest.layers

    @property
    def diff_ids(self) -> list[Digest]:
        return self.config.diff_ids


__all__ = ["IMAGE_CREATED", "IMAGE_ID", "IMAGE_SIZE", "REF_NAME", "REPO_DIGEST", "Image", "ImageRecord"]
