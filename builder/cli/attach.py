"""``pybuild attach`` (also ``container attach``), and the terminal side of every attach
(``start -a``, ``run -it``): raw mode, window size, signal proxy, detach keys. Parse, one library
call, render.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import termios
import tty
from collections.abc import Iterator
from typing import Any

from builder.base.errors import BuildError
from builder.cli import fail, flags


def window() -> tuple[int, int] | None:
    from builder.base.syscalls import real

    for fd in (1, 0):
        if os.isatty(fd):
            with contextlib.suppress(OSError):
                rows, cols = real().get_winsize(fd)
                return rows, cols
    return None


@contextlib.contextmanager
def raw_terminal(enabled: bool) -> Iterator[None]:
    """Our terminal in raw mode for the session (keys go to the container, Ctrl-C included)."""
    if not enabled or not os.isatty(0):
        yield
        return
    saved = termios.tcgetattr(0)
    tty.setraw(0, termios.TCSANOW)  # TCSAFLUSH would drop typed-ahead input
    try:
        yield
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)


def session(sock: socket.socket, *, tty: bool, stdin: bool, detach_keys: bytes,
            proxy: Any = None) -> tuple[bool, int | None]:
    """Join our stdio to an attach connection until the run ends: whether the user typed the
    detach keys (Docker looks for them with a tty only), and the exit code the other side sent
    (an exec's). *proxy*: ``f(signum)`` forwarding the signals we receive to the container
    (``--sig-proxy``, without a tty)."""
    from builder.runtime.containers.attach import Session

    s = Session(sock, stdin=0 if stdin else None, detach_keys=detach_keys if tty and stdin else None,
                window=window if tty else None)
    old: dict[signal.Signals, Any] = {}
    if tty:
        old[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, lambda *_: s.resize())
    if proxy is not None and not tty:
        from builder.runtime.containers.supervisor import PROXY_SIGNALS

        for sig in PROXY_SIGNALS:
            old[sig] = signal.signal(sig, lambda signum, _f: proxy(signum))
    try:
        with raw_terminal(tty and stdin):
            return s.run(), s.exit_code
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def check_tty(tty: bool, stdin: bool) -> None:
    """Docker's client refuses a tty session whose stdin is not a terminal."""
    if tty and stdin and not os.isatty(0):
        flags.echo("the input device is not a TTY", err=True)
        sys.exit(1)


@flags.command("attach")
@flags.option("--no-stdin", is_flag=True, help="Do not attach STDIN.")
@flags.option("--sig-proxy", type=flags.BOOL, default=True, is_flag=False, flag_value=True,
              help="Proxy all received signals to the process (default true).")
@flags.option("--detach-keys", default=None, help="Override the key sequence for detaching a container.")
@flags.argument("container")
@flags.pass_obj
def attach(obj: Any, no_stdin: bool, sig_proxy: bool, detach_keys: str | None, container: str) -> None:
    """Attach local standard input, output, and error streams to a running container."""
    from builder.runtime.containers import attached, lifecycle
    root = obj.state
    try:
        keys = attached.detach_keys(detach_keys)
        c = lifecycle.get(root, container)
        stdin, tty = not no_stdin and bool(c.config.open_stdin), bool(c.config.tty)
        check_tty(tty, stdin)
        c, sock = attached.open_running(root, container, stdin=stdin)
    except BuildError as e:
        fail(str(e))  # Docker's client: the daemon's refusal, exit 1
        return

    def proxy(signum: int) -> None:
        with contextlib.suppress(Exception):
            lifecycle.kill(root, c.id, signum)

    detached, _ = session(sock, tty=tty, stdin=stdin, detach_keys=keys,
                          proxy=proxy if sig_proxy else None)
    if detached:
        # the container goes on; Docker's client says why it stopped, and exits 1
        flags.echo("read escape sequence", err=True)
        sys.exit(1)
    sys.exit(attached.exit_code(root, c.id))
