"""The supervisor's attach socket (conmon's role): a process that attaches to a detached container
gets its output live and feeds its stdin and terminal size, over ``containers/<id>/attach.sock``.

Wire format, both ways: frames of 1 byte kind + 4 bytes big-endian length + payload.

* client → supervisor: first ``HELLO`` (JSON ``{"stdin","stdout","stderr","control"}``; a
  ``control`` client only sends, e.g. a resize), then ``STDIN``
  bytes, ``CLOSE_STDIN`` (the client's stdin ended; closes the container's stdin when the
  container was created with ``StdinOnce``) and ``RESIZE`` (``"rows cols"``).
* supervisor → client: ``STDOUT``/``STDERR`` bytes; the supervisor closes the connection once the
  run ends and every byte of its output was sent. An ``exec`` helper (``attached.exec_connected``)
  sends ``EXIT`` (the exit code, in decimal) just before.

A start can wait for N clients (``wait_clients``) so that who attached before ``start`` (the
Docker client's ``run``) misses nothing.
"""

from __future__ import annotations

import _socket  # not socket (its enums, ~2.5 ms): the supervisor's server needs the C type alone
import contextlib
import json
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket

SOCKET_NAME = "attach.sock"

STDIN, STDOUT, STDERR, CLOSE_STDIN, RESIZE, HELLO, EXIT = 0, 1, 2, 3, 4, 5, 6
_HEADER = struct.Struct(">BI")
#: a client that takes longer than this to accept output is dropped (the container goes on)
SEND_TIMEOUT = 10.0


def frame(kind: int, payload: bytes = b"") -> bytes:
    return _HEADER.pack(kind, len(payload)) + payload


def read_frame(sock: _socket.socket) -> tuple[int, bytes] | None:
    """One frame, or None at EOF."""
    head = _recv_exact(sock, _HEADER.size)
    if head is None:
        return None
    kind, size = _HEADER.unpack(head)
    payload = _recv_exact(sock, size) if size else b""
    if payload is None:
        return None
    return kind, payload


def _recv_exact(sock: _socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        try:
            chunk = sock.recv(n - len(buf))
        except OSError:
            return None
        if not chunk:
            return None
        buf += chunk
    return buf


@contextlib.contextmanager
def _short_path(path: Path) -> Iterator[str]:
    """A path to *path* short enough for ``sockaddr_un`` (108 bytes): through ``/proc/self/fd``
    of its directory when the real one is too long (state roots under pytest's tmp are)."""
    if len(os.fsencode(str(path))) < 100:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def connect(path: Path) -> socket.socket:
    """A connected client socket (``ConnectionRefusedError``/``FileNotFoundError`` when no
    supervisor listens there)."""
    import socket  # a client's socket is the full one (``makefile``, the API's streams)

    s = socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        with _short_path(path) as p:
            s.connect(p)
    except BaseException:
        s.close()
        raise
    return s


class _Client:
    """One attached client: its socket, the streams it asked for, the lock its writes take.
    (Plain classes here, not dataclasses: a detached run's supervisor imports this module,
    and ``dataclasses`` with the ``inspect`` it loads cost ~9 ms.)"""

    def __init__(self, sock: _socket.socket, stdin: bool = False, stdout: bool = True,
                 stderr: bool = True) -> None:
        self.sock = sock
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.lock = threading.Lock()


class AttachServer:
    """Listens on the container's attach socket for as long as its supervisor runs."""

    def __init__(self, path: Path, *, stdin_once: bool = False, accept: bool = True) -> None:
        """Listen on *path*; with *accept* false, clients wait in the socket's backlog until
        ``accept_clients`` (a detached run's supervisor reports its start first)."""
        self.path = path
        self.stdin_once = stdin_once
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        with _short_path(path) as p:
            self._sock.bind(p)
        os.chmod(path, 0o600)
        self._sock.listen(16)
        self._cond = threading.Condition()
        self._clients: list[_Client] = []
        self._hellos = 0
        self._stdin_w: int | None = None
        #: stdin bytes (None: the close) a client sent before this run's ``set_target``
        self._early: list[bytes | None] = []
        self._target_set = False
        self._resize: Callable[[int, int], None] | None = None
        #: the last size a client asked for before the run had a terminal (applied on wiring)
        self._size: tuple[int, int] | None = None
        self._closed = False
        self._accepting = False
        if accept:
            self.accept_clients()

    def accept_clients(self) -> None:
        """Start serving the clients (a thread that accepts them); once."""
        if not self._accepting:
            self._accepting = True
            threading.Thread(target=self._accept_loop, daemon=True).start()

    # -- the supervisor's side -------------------------------------------------------------------
    def wait_clients(self, n: int, timeout: float) -> None:
        """Block until *n* clients said hello (or *timeout* passed)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._hellos < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)

    def set_target(self, stdin_w: int | None, resize: Callable[[int, int], None] | None) -> None:
        """Where this run's stdin bytes and resizes go; the server owns *stdin_w* from now on
        (closed on ``CLOSE_STDIN`` with ``stdin_once``, else at ``end_run``)."""
        with self._cond:
            self._stdin_w = stdin_w
            self._resize = resize
            self._target_set = True
            early, self._early = self._early, []
        for data in early:
            if data is None:
                self._close_stdin()
            elif stdin_w is not None:
                with contextlib.suppress(OSError):
                    _write_all(stdin_w, data)

    def set_resize(self, resize: Callable[[int, int], None] | None) -> None:
        with self._cond:
            self._resize = resize
            size, self._size = self._size, None
        if resize is not None and size is not None:
            with contextlib.suppress(OSError):
                resize(*size)

    def broadcast(self, kind: int, data: bytes) -> None:
        with self._cond:
            clients = list(self._clients)
        for c in clients:
            if (kind == STDOUT and not c.stdout) or (kind == STDERR and not c.stderr):
                continue
            try:
                with c.lock:
                    # no SIGPIPE: the supervisor runs with its default action (it would die)
                    c.sock.sendall(frame(kind, data), _socket.MSG_NOSIGNAL)
            except OSError:
                self._drop(c)

    def end_run(self) -> None:
        """The run ended: its clients are done (their connections close after the output), and
        the stdin write end handed over by ``set_target`` is closed."""
        with self._cond:
            clients, self._clients = self._clients, []
            self._resize = None
            self._hellos = 0
            self._target_set = False
            self._early = []
        self._close_stdin()
        for c in clients:
            with contextlib.suppress(OSError):
                c.sock.shutdown(_socket.SHUT_RDWR)
            c.sock.close()

    def close(self) -> None:
        self._closed = True
        self.end_run()
        with contextlib.suppress(OSError):
            self._sock.shutdown(_socket.SHUT_RDWR)
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    # -- the clients' side -----------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                fd, _ = self._sock._accept()  # type: ignore[attr-defined]  # the C type: an fd, close-on-exec
            except OSError:
                return
            conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, fd)
            if not _same_user(conn):
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: _socket.socket) -> None:
        conn.settimeout(None)
        first = read_frame(conn)
        if first is None or first[0] != HELLO:
            conn.close()
            return
        try:
            hello = json.loads(first[1] or b"{}")
        except ValueError:
            hello = {}
        conn.settimeout(SEND_TIMEOUT)
        c = _Client(conn, bool(hello.get("stdin")), bool(hello.get("stdout", True)),
                    bool(hello.get("stderr", True)))
        if not hello.get("control"):
            # a control connection (a resize from the API) gets no output and is not awaited
            with self._cond:
                self._clients.append(c)
                self._hellos += 1
                self._cond.notify_all()
        conn.settimeout(None)
        while True:
            f = read_frame(conn)
            if f is None:
                break
            kind, payload = f
            with self._cond:
                stdin_w, resize = self._stdin_w, self._resize
                if not self._target_set and c.stdin and kind in (STDIN, CLOSE_STDIN):
                    # the run's stdin is not there yet: keep it for ``set_target``
                    if kind == STDIN:
                        self._early.append(payload)
                    elif self.stdin_once:
                        self._early.append(None)
                    continue
            if kind == STDIN and c.stdin and stdin_w is not None:
                with contextlib.suppress(OSError):
                    _write_all(stdin_w, payload)
            elif kind == CLOSE_STDIN and c.stdin and self.stdin_once:
                self._close_stdin()
            elif kind == RESIZE:
                with contextlib.suppress(ValueError, OSError):
                    rows, cols = (int(x) for x in payload.split())
                    with self._cond:
                        resize = self._resize
                        if resize is None:
                            self._size = (rows, cols)
                    if resize is not None:
                        resize(rows, cols)
        if c.stdin and self.stdin_once:
            with self._cond:
                later = not self._target_set
                if later:
                    self._early.append(None)
            if not later:
                self._close_stdin()
        # the connection stays with the run (output still goes to it) unless the client left
        with contextlib.suppress(OSError):
            conn.shutdown(_socket.SHUT_RD)

    def _close_stdin(self) -> None:
        with self._cond:
            fd, self._stdin_w = self._stdin_w, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _drop(self, c: _Client) -> None:
        with self._cond:
            if c in self._clients:
                self._clients.remove(c)
        with contextlib.suppress(OSError):
            c.sock.shutdown(_socket.SHUT_RDWR)
        c.sock.close()


def _same_user(conn: _socket.socket) -> bool:
    """Only our own user (root) may attach: the socket is 0600 too."""
    try:
        creds = conn.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return False
    _, uid, _ = struct.unpack("3i", creds)
    return uid in (0, os.geteuid())


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# -- detach keys --------------------------------------------------------------------------------
#: Docker's default detach sequence: ctrl-p, ctrl-q
DEFAULT_DETACH_KEYS = b"\x10\x11"
#: ``ctrl-@`` … ``ctrl-_``: the names Docker's ``--detach-keys`` gives the control codes 0-31
_CTRL_NAMES = {f"ctrl-{chr(0x40 + i).lower()}": i for i in range(32)}


def parse_detach_keys(text: str) -> bytes:
    """Docker's ``--detach-keys`` syntax: comma-separated keys, each one character or
    ``ctrl-<a-z @ [ \\ ] ^ _>`` (or ``DEL``); ``ValueError`` naming the key otherwise."""
    out = bytearray()
    for key in text.split(","):
        if len(key) == 1:
            out += key.encode()
        elif key in _CTRL_NAMES:
            out.append(_CTRL_NAMES[key])
        elif key == "DEL":
            out.append(127)
        else:
            raise ValueError(f"Unknown character: '{key}'")
    if not out:
        raise ValueError("Unknown character: ''")
    return bytes(out)


class EscapeFilter:
    """Docker's escape proxy over a terminal's input: bytes pass through, except that the
    detach sequence ends the stream (``feed`` says so); a partial match is held back and
    passed on when the next byte breaks it."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self._held = 0

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """The bytes to forward, and whether the detach sequence was completed."""
        out = bytearray()
        for b in data:
            if b == self.keys[self._held]:
                self._held += 1
                if self._held == len(self.keys):
                    self._held = 0
                    return bytes(out), True
                continue
            if self._held:
                out += self.keys[:self._held]
                self._held = 0
                if b == self.keys[0]:
                    self._held = 1
                    continue
            out.append(b)
        return bytes(out), False


# -- the client's side ----------------------------------------------------------------------------
#: how often a client looks for a supervisor's socket that is not there yet
CONNECT_POLL = 0.02


def connect_while(path: Path, starting: Callable[[], object], *, stdin: bool,
                  timeout: float = 30.0) -> socket.socket:
    """Connect to *path* and say hello while ``starting()`` runs in a thread (a ``start``
    whose supervisor waits for this client before it launches the container); re-raises what
    ``starting`` raised, and ``TimeoutError`` when no supervisor listened in time."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            starting()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock = connect(path)
            break
        except (FileNotFoundError, ConnectionRefusedError):
            if errors:
                raise errors[0] from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"no attach socket at {path}") from None
            time.sleep(CONNECT_POLL)
    with contextlib.suppress(OSError):
        # the supervisor waits for our hello before it launches: say it before joining
        hello(sock, stdin=stdin)
    t.join()
    if errors:
        sock.close()
        raise errors[0]
    return sock


def hello(sock: socket.socket, *, stdin: bool, stdout: bool = True, stderr: bool = True) -> None:
    sock.sendall(frame(HELLO, json.dumps({"stdin": stdin, "stdout": stdout, "stderr": stderr}).encode()))


class Session:
    """One client's attach to a running container over its supervisor's socket: output to
    *stdout*/*stderr* (fds), the terminal's bytes from *stdin* (an fd, or None) through the
    detach-keys filter when *detach_keys* is set (Docker applies them with a tty only);
    *window* gives the terminal's ``(rows, cols)`` now, sent at start and after the first output."""

    def __init__(self, sock: socket.socket, stdout: int = 1, stderr: int = 2, stdin: int | None = None,
                 detach_keys: bytes | None = None,
                 window: Callable[[], tuple[int, int] | None] | None = None) -> None:
        self.sock = sock
        self.stdout = stdout
        self.stderr = stderr
        self.stdin = stdin
        self.detach_keys = detach_keys
        self.window = window
        self.detached = False
        #: what an ``EXIT`` frame said (an exec's helper sends one), else None
        self.exit_code: int | None = None
        self._lock = threading.Lock()

    def send(self, kind: int, payload: bytes = b"") -> None:
        with self._lock, contextlib.suppress(OSError):
            self.sock.sendall(frame(kind, payload), _socket.MSG_NOSIGNAL)

    def resize(self) -> None:
        size = self.window() if self.window is not None else None
        if size:
            self.send(RESIZE, f"{size[0]} {size[1]}".encode())

    def run(self) -> bool:
        """Carry bytes until the run ends (False) or the detach keys were typed (True)."""
        if self.stdin is not None:
            threading.Thread(target=self._upstream, daemon=True).start()
        self.resize()
        first = True
        while True:
            f = read_frame(self.sock)
            if f is None:
                break
            kind, payload = f
            if kind == EXIT:
                with contextlib.suppress(ValueError):
                    self.exit_code = int(payload)
                continue
            with contextlib.suppress(OSError):
                _write_all(self.stderr if kind == STDERR else self.stdout, payload)
            if first:
                first = False
                self.resize()  # the first one may have come before the container's pty
        with contextlib.suppress(OSError):
            self.sock.close()
        return self.detached

    def _upstream(self) -> None:
        assert self.stdin is not None
        escape = EscapeFilter(self.detach_keys) if self.detach_keys else None
        while True:
            try:
                data = os.read(self.stdin, 65536)
            except OSError:
                data = b""
            if not data:
                self.send(CLOSE_STDIN)
                return
            if escape is not None:
                data, detach = escape.feed(data)
                if data:
                    self.send(STDIN, data)
                if detach:
                    self.detached = True
                    with contextlib.suppress(OSError):
                        self.sock.shutdown(_socket.SHUT_RDWR)
                    return
            else:
                self.send(STDIN, data)
