"""What a step executes with, as typed values: the layers it stands on and reads from, the
build's secrets, where its output lines go, and the build's cancel flag.

Light on purpose (no Linux-specific import): the solver imports it on fully cached builds too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from registry.digest import Digest
from registry.model import Descriptor
from registry.store import Image
from registry.values import field, frozen


@frozen
class LayerRef:
    """One layer a root is made of: its blob descriptor and its diff_id."""

    descriptor: Descriptor
    diff_id: Digest
    #: made by a build step (so it may be recompressed for the image), not from a base image
    built: bool = False
    #: only unpacked in the layer cache (``diff_id`` is a stand-in): no blob until an image needs it
    snapshot: bool = False

    @staticmethod
    def of_image(image: Image) -> tuple[LayerRef, ...]:
        """The layers of an image in the store, bottom first."""
        return tuple(LayerRef(d, i) for d, i in zip(image.manifest.layers, image.config.diff_ids,
                                                    strict=False))


@frozen
class StepInputs:
    """Everything a step reads besides its own op and the root it runs on."""

    #: the layers of each stage built so far, by stage index (``COPY --from``, ``--mount from=``)
    stage_layers: Mapping[int, tuple[LayerRef, ...]] = field(default_factory=dict)
    secrets: Mapping[str, bytes] = field(default_factory=dict)
    log: Callable[[str], None] = lambda line: None
    cancel: threading.Event = field(default_factory=threading.Event)
    #: ``build --ssh``: agent socket by id, for ``RUN --mount=type=ssh``
    ssh: Mapping[str, str] = field(default_factory=dict)
    #: where a RUN's stderr lines go (``log`` when not given): the serve API wraps them in red
    log_stderr: Callable[[str], None] | None = None
    #: ``--add-host`` entries (``name:ip``) for the ``/etc/hosts`` of RUN steps (not in the cache
    #: key, as in dockerd's classic builder)
    extra_hosts: tuple[str, ...] = ()
