"""Attaching a client to a container's supervisor (``pybuild attach``, ``start -a -i``, ``run -it``):
find or start the container, connect to its attach socket (``builder.runtime.containers.attach``), and
learn the exit code once the run ended. The bytes themselves flow through ``attach.Session``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from builder.base.errors import BuildError, CommandNotExecutable, CommandNotFound, ContainerError
from builder.base.state import StateRoot
from builder.runtime.containers import attach, lifecycle, runtime, service
from builder.runtime.containers.create import RunOptions
from builder.runtime.containers.record import Container, ContainerStore

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
        raise ContainerError.invalid(f"Invalid {what} keys ({text}) provided") from None


def open_running(root: StateRoot, ref: str, *, stdin: bool) -> tuple[Container, socket.socket]:
    """``docker attach``: the running container *ref* and a connection to its supervisor that
    said hello (with *stdin* when the container keeps one open)."""
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


# -- exec -it ---------------------------------------------------------------------------------------
def exec_connected(root: StateRoot, c: Container, process: Any, *,
                   console_size: tuple[int, int] | None = None) -> socket.socket:
    """``docker exec -it``: *process* started by a helper of its own (new session, stdio on
    /dev/null) that serves it on an attach socket, so that the detach keys leave it running as
    dockerd does; the helper sends the exit code (``attach.EXIT``) before it closes. Returns
    the connection, once the process started (or raises why it did not)."""
    path = ContainerStore(root).dir(c.id) / f"exec-{os.urandom(6).hex()}.sock"
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(r)
            # forked from a process that may have an asyncio loop: its wakeup fd is not ours
            signal.set_wakeup_fd(-1)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            _serve_exec(root, c, process, path, w, console_size)
            code = 0
        except BaseException:  # noqa: B036 - the helper must never return into the CLI
            pass
        finally:
            os._exit(code)
    os.close(w)
    os.waitpid(pid, 0)
    lines = _Lines(r)
    try:
        if lines.next() != "listening":
            raise ContainerError(f"cannot exec in container {c.name}: its exec helper did not start")
        sock = attach.connect(path)
        attach.hello(sock, stdin=True)
        said = lines.next()
    finally:
        os.close(r)
    answer = json.loads(said) if said.startswith("{") else {"error": said or "exec failed", "code": 126}
    if not answer.get("ok"):
        sock.close()

        kind = {127: CommandNotFound, 126: CommandNotExecutable}.get(int(str(answer.get("code") or 0)),
                                                                    ContainerError)
        raise kind(str(answer.get("error")))
    return sock


class _Lines:
    """Lines from a pipe, read a byte at a time: the exec's own processes may hold the write
    end for as long as they run, so EOF never comes."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def next(self) -> str:
        out = b""
        while not out.endswith(b"\n"):
            b = os.read(self.fd, 1)
            if not b:
                break
            out += b
        return out.decode(errors="replace").strip()


def _serve_exec(root: StateRoot, c: Container, process: Any, path: Path, w: int,
                console_size: tuple[int, int] | None) -> None:  # pragma: no cover - helper process


    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    # nothing of the CLI's stays open here (a `$(pybuild exec …)` waits for its pipe's EOF)
    os.closerange(3, w)
    os.closerange(w + 1, 65536)
    server = attach.AttachServer(path)
    try:
        os.write(w, b"listening\n")
        server.wait_clients(1, 10.0)
        stdin_r, stdin_w = os.pipe()
        server.set_target(stdin_w, None)
        try:
            h = runtime.exec_start(root, c, process, stdin=stdin_r, console_size=console_size,
                                   stdout=lambda b: server.broadcast(attach.STDOUT, b),
                                   stderr=lambda b: server.broadcast(attach.STDERR, b))
        except Exception as e:  # noqa: BLE001 - reported to the client as one line
            code = e.exit_code if isinstance(e, BuildError) else 126
            os.write(w, json.dumps({"error": str(e), "code": code}).encode() + b"\n")
            return
        # stdin_r stays open: this process relays it into the process's terminal
        os.write(w, b'{"ok": true}\n')
        os.close(w)
        server.set_resize(h.resize)
        result = h.wait()
        server.broadcast(attach.EXIT, str(result.exit_status).encode())
    finally:
        server.close()
