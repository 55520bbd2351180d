"""``exec``: a process in a running container, from Docker's flags (env, env files, user,
workdir) to a started ``Sandbox``, attached or detached (``exec -d``: owned by a helper
process that outlives the caller, not by it)."""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping, Sequence
from typing import Any

from builder.base.errors import ContainerError
from builder.base.state import StateRoot
from builder.runtime.containers import lifecycle, links, runtime
from builder.runtime.containers.options import parse_env, read_env_file
from builder.runtime.containers.record import Container, NotRunning


def prepare(root: StateRoot, ref: str, argv: Sequence[str], *, env: Sequence[str] = (),
            env_files: Sequence[str] = (), user: str | None = None, workdir: str | None = None,
            tty: bool = False, privileged: bool = False,
            environ: Mapping[str, str] | None = None) -> tuple[Container, Any]:
    """The running container *ref* and the ``Process`` to exec in it. ``-e NAME`` and env
    files take values from *environ* (the caller's environment by default)."""
    environ = os.environ if environ is None else environ
    c = lifecycle.get(root, ref)
    if c.state.status != "running":
        raise NotRunning(f"container {c.id} is not running")
    if c.state.paused:
        raise ContainerError.conflict(f"Container {c.id} is paused, unpause the container before exec")
    extra: list[str] = []
    for f in env_files:
        extra += read_env_file(f, environ=environ)
    extra += parse_env(env, environ=environ)
    if workdir is not None and not workdir.startswith("/"):
        raise ContainerError.invalid(f"the working directory '{workdir}' is invalid, it needs to be an absolute path")
    process = runtime.exec_process(c, argv, env=extra, user=user, workdir=workdir, tty=tty,
                                   privileged=privileged, linked=links.env(links.resolve(root, c)))
    return c, process


def start(root: StateRoot, c: Container, process: Any, *, stdin: Any = None,
          stdout: Any = None, stderr: Any = None) -> Any:
    """Start *process* attached to the caller: the ``Sandbox`` to wait on."""
    return runtime.exec_start(root, c, process, stdin=stdin, stdout=stdout, stderr=stderr)


def start_detached(root: StateRoot, c: Container, process: Any) -> None:
    """``exec -d``: start *process* under a helper (double-forked, new session, stdio on
    /dev/null) that waits for it; returns once it started, or raises why it did not."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.close(r)
            # forked from a process with an asyncio loop (pybuild serve): its signal wakeup
            # fd is a socket number that our own sockets will reuse once stdio is detached
            signal.set_wakeup_fd(-1)
            os.setsid()
            if os.fork():
                os._exit(0)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            try:
                h = runtime.exec_start(root, c, process)
                os.write(w, b"ok")
            except Exception as e:  # noqa: BLE001 - reported to the parent as one line
                os.write(w, str(e).encode() or b"exec failed")
                os._exit(1)
            os.close(w)
            h.wait()
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r, "rb") as f:
        msg = f.read(4096)
    if msg != b"ok":
        raise ContainerError(msg.decode(errors="replace") or "exec failed")
