"""The stdio of a sandboxed process: fds for the child, and what the parent pumps.

Output goes to an fd, a file, or a callback given each chunk; input comes from an fd, a file or
bytes; a terminal is a pty from the sandbox's own devpts whose master the child sends back.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from typing import IO, Any, TypeAlias

#: where output goes: None (inherit ours), an fd, a file object, or a callback given each chunk
Output: TypeAlias = "None | int | IO[Any] | Callable[[bytes], None]"
#: where input comes from: None (``/dev/null``), an fd, a file object, or bytes to feed
Input: TypeAlias = "None | int | IO[Any] | bytes"


class Stdio:
    """The child's fds 0/1/2 and what the parent pumps (callbacks, bytes to feed, a pty)."""

    def __init__(self, stdin: Input, stdout: Output, stderr: Output, *, terminal: bool,
                 console_size: tuple[int, int] | None = None) -> None:
        self.child: list[int] = []  # fds to dup2 onto 0, 1, 2 in the child
        self.close_in_parent: list[int] = []
        self.readers: dict[int, Callable[[bytes], None] | int] = {}  # parent fd → sink
        self.feed: tuple[int, bytes] | None = None  # parent fd, bytes to write
        self.relay_in: int | None = None  # parent reads this fd into the pty
        self.pty_master: int | None = None
        self.console_parent: socket.socket | None = None
        self.console_child: int | None = None
        self.console_size: tuple[int, int] | None = None
        self._sink_out: Callable[[bytes], None] | int = 1
        self._stdin: Input = None
        self.devnull: int | None = None
        if terminal:
            import socket  # only with a terminal: the module costs ~2 ms at start-up

            # The pty comes from the sandbox's own devpts (as runc's console socket): the child
            # opens it and sends the master over this socket pair (``receive_master``).
            parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            self.console_parent = parent_sock
            self.console_child = child_sock.detach()
            self.close_in_parent.append(self.console_child)
            self._sink_out = self._sink(stdout)
            self._stdin = stdin
            # the size of the caller's terminal from the start (as Docker's ConsoleSize)
            source = stdin if isinstance(stdin, int) and stdin >= 0 else (
                stdin.fileno() if stdin is not None and not isinstance(stdin, (bytes, int)) else 0)
            with contextlib.suppress(OSError):
                if console_size is not None:
                    self.console_size = console_size  # a client's terminal, not ours
                elif os.isatty(source):
                    # ctypes only for a terminal: a removal's teardown (rm) imports this module
                    from builder.base import syscalls as sc

                    self.console_size = sc.real().get_winsize(source)
            return
        self.child = [self._in(stdin), self._out(stdout, 1), self._out(stderr, 2)]

    @staticmethod
    def _sink(out: Output) -> Callable[[bytes], None] | int:
        if out is None:
            return 1
        if isinstance(out, int):
            return out
        if callable(out) and not hasattr(out, "fileno"):
            return out
        return out.fileno()  # type: ignore[union-attr]

    def _in(self, stdin: Input) -> int:
        if stdin is None or (isinstance(stdin, int) and stdin < 0):
            self.devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            self.close_in_parent.append(self.devnull)
            return self.devnull
        if isinstance(stdin, bytes):
            r, w = os.pipe()
            self.close_in_parent.append(r)
            self.feed = (w, stdin)
            return r
        return stdin if isinstance(stdin, int) else stdin.fileno()

    def _out(self, out: Output, default: int) -> int:
        if out is None:
            return default
        if isinstance(out, int) and out < 0:  # subprocess.DEVNULL
            if self.devnull is None:
                self.devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                self.close_in_parent.append(self.devnull)
            return self.devnull
        if isinstance(out, int):
            return out
        if callable(out) and not hasattr(out, "fileno"):
            r, w = os.pipe()
            self.readers[r] = out
            self.close_in_parent.append(w)
            return w
        return out.fileno()  # type: ignore[union-attr]

    def receive_master(self) -> None:
        """Take the pty master the child sent (nothing if it died first)."""
        assert self.console_parent is not None
        try:
            import socket

            _, fds, _, _ = socket.recv_fds(self.console_parent, 16, 1)
        finally:
            self.console_parent.close()
            self.console_parent = None
        if not fds:
            return
        master = fds[0]
        os.set_inheritable(master, False)
        self.pty_master = master
        self.readers[master] = self._sink_out
        stdin = self._stdin
        if isinstance(stdin, bytes):
            self.feed = (master, stdin)
        elif stdin is not None and not (isinstance(stdin, int) and stdin < 0):
            self.relay_in = stdin if isinstance(stdin, int) else stdin.fileno()

    def in_child(self) -> None:
        if not self.child:
            return  # a terminal: set up by ``child.open_console`` once /dev/pts exists
        # via high copies first: a plain dup2 chain breaks when sources and targets overlap
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in self.child]
        for target, fd in enumerate(high):
            os.dup2(fd, target)  # inheritable
            os.close(fd)

    def after_fork(self) -> None:
        for fd in self.close_in_parent:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.close_in_parent = []

    def parent_fds(self) -> list[int]:
        fds = list(self.readers)
        if self.feed is not None:
            fds.append(self.feed[0])
        return fds

    def close_all(self) -> None:
        if self.console_parent is not None:
            self.console_parent.close()
            self.console_parent = None
        for fd in [*self.close_in_parent, *self.parent_fds()]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.close_in_parent = []
        self.readers = {}
        self.feed = None


def read_line(fd: int) -> bytes:
    """One line from a pipe, a byte at a time so nothing after the newline is consumed (a
    status pipe: later lines, or EOF, come from other processes)."""
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            break
        line += chunk
    return line


def read_to_eof(fd: int) -> bytes:
    """Everything a pipe gives until every write end is closed."""
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    return data


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
