"""The verbs that start containers: ``create``, ``run`` (detached or in the foreground),
``start`` and ``restart``, on top of the record store and the supervisor.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from builder.base.errors import BuildError, CommandNotExecutable, CommandNotFound, ContainerError
from builder.base.state import StateRoot
from builder.runtime.containers import lifecycle, mounts, supervisor
from builder.runtime.containers.create import (
    ConfigAmendments,
    RunOptions,
    host_config_of,
    make_container,
    resolve_image,
)
from builder.runtime.containers.detached import Forked, spawn
from builder.runtime.containers.hostconfig import HostConfig
from builder.runtime.containers.record import Container, ContainerStore, NoSuchContainer
from builder.runtime.containers.recordparts import MountPoint

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from registry.store import Image


def _start_error(code: int, message: str) -> BuildError:
    if code == 127:
        return CommandNotFound(message)
    if code == 126:
        return CommandNotExecutable(message)
    err = ContainerError(message)
    err.reported_status = code or 125
    return err


def create(root: StateRoot, o: RunOptions, *, host: HostConfig | None = None,
           amend: ConfigAmendments | None = None, progress: Any = None,
           on_pull: Callable[[str, bool], None] | None = None) -> Container:
    """``docker create``: the ``HostConfig`` (*host*, the API's; else built from *o*'s flags)
    and the mount flags checked before any image is looked at; resolve (pull) the image,
    write the record once (*amend*: what the API's body adds to ``Config``)."""
    return _create(root, o, host=host, amend=amend, progress=progress, on_pull=on_pull)[0]


def _create(root: StateRoot, o: RunOptions, *, host: HostConfig | None = None,
            amend: ConfigAmendments | None = None, progress: Any = None,
            on_pull: Callable[[str, bool], None] | None = None) -> tuple[Container, Image]:
    """``create``, and the image it resolved."""
    if host is None:
        host = host_config_of(o)
    specs = mounts.parse_all(host) if host.binds or host.mounts or host.tmpfs else []
    image = resolve_image(root, o.image, pull=o.pull, progress=progress, on_pull=on_pull, platform=o.platform)
    image_volumes = list(image.config.container_config.volumes or ())
    records: list[MountPoint] = []
    if specs or image_volumes:
        specs = mounts.with_image_volumes(specs, image_volumes)
        records = mounts.records(root, specs, image)
    c = make_container(root, o, image, host=host, mounts=records, amend=amend)
    lifecycle.emit(root, c, "create")
    return c, image


def start(root: StateRoot, ref: str, *, attach_wait: int = 0) -> Container:
    """Start a created or stopped container under a detached supervisor (no-op if running);
    its first run waits for *attach_wait* clients on its attach socket (an API ``attach``
    made before ``start``)."""
    cs = ContainerStore(root)
    c = lifecycle.refresh(cs, cs.find(ref))
    if c.state.running:
        return c
    started = spawn(root, c.id, attach_wait=attach_wait)
    if not started.ok:
        raise _start_error(started.exit_code, started.error)
    try:
        return cs.load(c.id)
    except NoSuchContainer:
        return c  # it started, then an `rm -f` removed it: the start itself succeeded


def run_detached(root: StateRoot, o: RunOptions, *, progress: Any = None,
                 on_pull: Callable[[str, bool], None] | None = None) -> Container:
    """``run -d``: create, then start; a failed start of an ``--rm`` container removes it. Its
    supervisor is forked first: it loads the sandbox's modules while the container is created."""
    forked = Forked(root)
    try:
        c = create(root, o, progress=progress, on_pull=on_pull)
    except BaseException:
        forked.cancel()
        raise
    try:
        started = forked.start(c.id)
        if not started.ok:
            raise _start_error(started.exit_code, started.error)
        try:
            return ContainerStore(root).load(c.id)
        except NoSuchContainer:
            return c  # it started, then an `rm -f` removed it: the start itself succeeded
    except BuildError:
        if o.rm:
            with contextlib.suppress(BuildError):
                lifecycle.destroy(root, ContainerStore(root).load(c.id), volumes=True)
        raise


def run_foreground(root: StateRoot, o: RunOptions, *, progress: Any = None,
                   on_pull: Callable[[str, bool], None] | None = None,
                   on_created: Callable[[Container], None] | None = None) -> int:
    """``run`` attached: supervise in this process; returns the container's exit status.
    A restart policy needs a supervisor that outlives us: then the container runs detached
    and we return when its first run ends (Docker's client does the same)."""
    c, image = _create(root, o, progress=progress, on_pull=on_pull)
    if on_created is not None:
        on_created(c)
    failure: list[BuildError] = []

    def started(s: supervisor.Started) -> None:
        if not s.ok:
            failure.append(_start_error(s.exit_code, s.error))

    code = supervisor.run_foreground(root, c.id, interactive=o.interactive, tty_mode=o.tty,
                                     on_started=started, image=image)
    if failure:
        if o.rm:
            with contextlib.suppress(BuildError):
                lifecycle.destroy(root, ContainerStore(root).load(c.id), volumes=True)
        raise failure[0]
    return code


def restart(root: StateRoot, ref: str, *, timeout: int | None = None, sig: str | None = None) -> Container:
    c = lifecycle.stop(root, ref, timeout=timeout, sig=sig)
    c = start(root, c.id)
    lifecycle.emit(root, c, "restart")
    return c
