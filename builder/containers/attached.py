"""Attaching a client to a container's supervisor (``pybuild attach``, ``start -a -i``, ``run -it``):
find or start the container, connect to its attach socket (``builder.containers.attach``), and
learn the exit code once the run ended. The bytes themselves flow through ``attach.Session``.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from builder.containers import attach, lifecycle, service
from builder.containers.create import RunOptions
from builder.containers.record import Container, ContainerStore
from builder.errors import BuildError, ContainerError
from builder.state import StateRoot

#: how long an attach to a running container waits for its socket to answer
RUNNING_GRACE = 3.0


def socket_path(root: StateRoot, cid: str) -> Path:
    return ContainerStore(root).dir(cid) / attach.SOCKET_NAME


def detach_keys(text: str | None, *, what: str = "detach") -> bytes:
    """``--detach-keys`` as bytes (Docker's ctrl-p ctrl-q when unset or empty); a bad one is
    dockerd's error (``Invalid detach keys (…) provided``; ``exec`` says ``escape keys``)."""
    if not text:
        return attach.DEFAULT_DETACH_KEYS
    try:
        return attach.parse_detach_keys(text)
    except ValueError:
        raise ContainerError(f"Invalid {what} keys ({text}) provided") from None


def open_running(root: StateRoot, ref: str, *, stdin: bool) -> tuple[Container, socket.socket]:
    """``docker attach``: the running container *ref* and a connection to its supervisor that
    said hello (with *stdin* when the container keeps one open)."""
    import time

    c = lifecycle.get(root, ref)
    if not c.state.running:
        raise ContainerError("You cannot attach to a stopped container, start it first")
    if c.state.paused:
        raise ContainerError("You cannot attach to a paused container, unpause it first")
    deadline = time.monotonic() + RUNNING_GRACE
    while True:
        try:
            sock = attach.connect(socket_path(root, c.id))
            break
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                raise ContainerError(
                    f"cannot attach to container {c.name}: its supervisor has no attach socket "
                    "(a container run in the foreground without -it is attached to that `pybuild run` only)"
                ) from None
            time.sleep(attach.CONNECT_POLL)
    try:
        attach.hello(sock, stdin=stdin and bool(c.config.open_stdin))
    except OSError as e:
        sock.close()
        raise ContainerError(f"cannot attach to container {c.name}: {e}") from None
    lifecycle.emit(root, c, "attach")
    return c, sock


def start_connected(root: StateRoot, ref: str, *, stdin: bool) -> tuple[Container, socket.socket]:
    """``docker start -a``: start *ref* under a supervisor that waits for this client, so that
    none of the run's output is missed. A running container is attached to as it is."""
    c = lifecycle.get(root, ref)
    if c.state.running:
        return open_running(root, c.id, stdin=stdin)
    sock = _connect_starting(root, c.id, stdin=stdin and bool(c.config.open_stdin))
    lifecycle.emit(root, c, "attach")
    return c, sock


def run_connected(root: StateRoot, o: RunOptions, *, progress: Any = None,
                  on_pull: Callable[[str, bool], None] | None = None,
                  on_created: Callable[[Container], None] | None = None) -> tuple[Container, socket.socket]:
    """``docker run -it``: create, then start under a detached supervisor that waits for this
    client (so the container outlives a detach); a start that fails removes an ``--rm`` one."""
    c = service.create(root, o, progress=progress, on_pull=on_pull)
    if on_created is not None:
        on_created(c)
    try:
        sock = _connect_starting(root, c.id, stdin=o.interactive)
    except BuildError:
        if o.rm:
            with contextlib.suppress(BuildError):
                lifecycle.destroy(root, ContainerStore(root).load(c.id), volumes=True)
        raise
    return c, sock


def _connect_starting(root: StateRoot, cid: str, *, stdin: bool) -> socket.socket:
    try:
        return attach.connect_while(socket_path(root, cid), lambda: service.start(root, cid, attach_wait=1),
                                    stdin=stdin)
    except TimeoutError:
        raise ContainerError(f"the supervisor of container {cid[:12]} did not open its attach socket") from None


def exit_code(root: StateRoot, cid: str) -> int:
    """The exit code of the run an attach followed to its end (``--rm`` ones included)."""
    return lifecycle.wait(root, cid)
