"""``RUN --mount=type=ssh``: ``build --ssh`` specs (``default``, ``ID=SOCKET``, ``ID=KEY[,KEY]``)
turned into agent sockets for the build (a private ``ssh-agent`` holding key files, stopped with
the build), and each step's mount: a socket of its own, owned and moded as the mount asks,
proxied to the agent, bound at the target (``/run/buildkit/ssh_agent.N`` by default).

As BuildKit: an ``ID`` names one agent socket or any number of key files; a mount without a
matching ``--ssh`` is left out unless ``required=true``, which fails the step.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from builder.base.errors import BuildError
from registry.values import frozen


@frozen
class SSHSpec:
    """One ``--ssh`` flag: an id and its paths (none: ``$SSH_AUTH_SOCK``)."""

    id: str
    paths: tuple[str, ...] = ()


def parse_ssh(specs: Sequence[str]) -> tuple[SSHSpec, ...]:
    """``default`` / ``ID=PATH[,PATH…]`` as ``docker build --ssh`` reads them."""
    out: dict[str, SSHSpec] = {}
    for spec in specs:
        sid, sep, rest = spec.partition("=")
        sid = sid.strip()
        if not sid:
            raise BuildError.invalid(f"invalid --ssh {spec!r}: expected default|<id>[=<socket>|<key>[,<key>]]")
        paths = tuple(os.path.expanduser(p) for p in rest.split(",") if p) if sep else ()
        out[sid] = SSHSpec(sid, paths)
    return tuple(out.values())


@contextlib.contextmanager
def agents(specs: Sequence[SSHSpec]) -> Iterator[dict[str, str]]:
    """Agent sockets by id for the length of a build: an ``ID``'s socket as given, or a private
    ``ssh-agent`` loaded with its key files (stopped, its directory removed, on exit)."""
    with contextlib.ExitStack() as stack:
        socks: dict[str, str] = {}
        for s in specs:
            paths = s.paths
            if not paths:
                env = os.environ.get("SSH_AUTH_SOCK", "")
                if not env:
                    # BuildKit's (sshprovider) words
                    raise BuildError(f"--ssh {s.id}: invalid empty ssh agent socket, "
                                     "make sure SSH_AUTH_SOCK is set")
                paths = (env,)
            for p in paths:
                if not os.path.exists(p):
                    raise BuildError.not_found(f"--ssh {s.id}: {p}: no such file or directory")
            if len(paths) == 1 and stat.S_ISSOCK(os.stat(paths[0]).st_mode):
                socks[s.id] = paths[0]
            else:
                socks[s.id] = stack.enter_context(_key_agent(s.id, paths))
        yield socks


@contextlib.contextmanager
def _key_agent(sid: str, keys: Sequence[str]) -> Iterator[str]:
    for k in keys:
        if stat.S_ISSOCK(os.stat(k).st_mode):
            raise BuildError(f"--ssh {sid}: {k}: an agent socket cannot be combined with other paths")
    base = tempfile.mkdtemp(prefix="pb-ssh-", dir="/tmp")  # short: a socket path has 108 bytes
    sock = os.path.join(base, "agent")
    try:
        proc = subprocess.Popen(["ssh-agent", "-D", "-a", sock], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    except FileNotFoundError:
        shutil.rmtree(base, ignore_errors=True)
        raise BuildError(f"--ssh {sid}: key files need ssh-agent (openssh-client), which is not installed") from None
    try:
        deadline = time.monotonic() + 10
        while not _answers(sock):  # bound before it listens: wait for a connection
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BuildError(f"--ssh {sid}: ssh-agent did not start")
            time.sleep(0.02)
        for k in keys:
            try:
                _add_key(sock, k)
            except (OSError, ValueError, subprocess.SubprocessError) as e:
                raise BuildError(f"--ssh {sid}: cannot load key {k}: {e}") from None
        yield sock
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(base, ignore_errors=True)


def _answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        try:
            c.connect(path)
        except OSError:
            return False
    return True


# fields of a private key after its type, in the key file as in the agent protocol (PROTOCOL.key)
_FIELDS = {"ssh-ed25519": 2, "ssh-rsa": 6, "ssh-dss": 5, "ecdsa-sha2-nistp256": 3,
           "ecdsa-sha2-nistp384": 3, "ecdsa-sha2-nistp521": 3}
_MAGIC = b"openssh-key-v1\0"


def _string(buf: bytes, at: int) -> tuple[bytes, int]:
    n = struct.unpack_from(">I", buf, at)[0]
    if at + 4 + n > len(buf):
        raise ValueError("truncated key")
    return buf[at + 4:at + 4 + n], at + 4 + n


def _pack(*parts: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def _openssh_key(path: str) -> bytes:
    """The key file in OpenSSH's own format (a PEM key converted by ``ssh-keygen -p``)."""
    data = Path(path).read_bytes()
    if b"-----BEGIN OPENSSH PRIVATE KEY-----" not in data:
        with tempfile.TemporaryDirectory(prefix="pb-key-") as d:
            copy = os.path.join(d, "key")
            fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            r = subprocess.run(["ssh-keygen", "-q", "-p", "-P", "", "-N", "", "-f", copy],
                               stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                raise ValueError(" ".join(r.stderr.split()) or "not a private key")
            data = Path(copy).read_bytes()
    body = b"".join(ln for ln in data.splitlines() if ln and not ln.startswith(b"-----"))
    return base64.b64decode(body)


def _add_key(agent: str, path: str) -> None:
    """Give the agent at *agent* the private key in *path*, with an empty comment as BuildKit's
    keyring has it (``ssh-add`` would name the file)."""
    raw = _openssh_key(path)
    if not raw.startswith(_MAGIC):
        raise ValueError("not a private key")
    at = len(_MAGIC)
    cipher, at = _string(raw, at)
    _kdf, at = _string(raw, at)
    _kdfopts, at = _string(raw, at)
    if cipher != b"none":
        raise ValueError("the key has a passphrase")
    (count,) = struct.unpack_from(">I", raw, at)
    at += 4
    for _ in range(count):
        _pub, at = _string(raw, at)
    private, _ = _string(raw, at)
    at = 8  # two check words
    for _ in range(count):
        start = at
        kind, at = _string(private, at)
        fields = _FIELDS.get(kind.decode(errors="replace"))
        if fields is None:
            raise ValueError(f"unsupported key type {kind.decode(errors='replace')}")
        for _ in range(fields):
            _, at = _string(private, at)
        _comment, end = _string(private, at)
        message = bytes([17]) + private[start:at] + _pack(b"")  # SSH2_AGENTC_ADD_IDENTITY
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.settimeout(30)
            c.connect(agent)
            c.sendall(struct.pack(">I", len(message)) + message)
            head = c.recv(5)
        if len(head) < 5 or head[4] != 6:  # SSH_AGENT_SUCCESS
            raise ValueError("the agent refused the key")
        at = end


class AgentProxy:
    """A listening socket at *path* (owner and mode set) whose every connection is relayed to
    the agent at *upstream*; ``close`` stops it and every relay."""

    def __init__(self, path: str, upstream: str, *, uid: int, gid: int, mode: int) -> None:
        self.upstream = upstream
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        os.chown(path, uid, gid)
        os.chmod(path, mode)
        self.sock.listen(16)
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True, name="ssh-proxy").start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                up.connect(self.upstream)
            except OSError:
                conn.close()
                continue
            with self.lock:
                if self.closed:
                    conn.close()
                    up.close()
                    return
                self.open.update((conn, up))
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        with self.lock:
            self.closed = True
            conns = list(self.open)
            self.open.clear()
        # shutdown() wakes a thread blocked in accept(); close() alone does not
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()


def mount_socket(*, sid: str, agents_by_id: Mapping[str, str], required: bool, uid: int,
                 gid: int, mode: int, stack: contextlib.ExitStack, where: str) -> str | None:
    """The host path of a socket for one ssh mount (proxied to the agent of *sid*, ``default``
    when empty, closed with *stack*), or None for an optional mount with no ``--ssh`` of that id."""
    upstream = agents_by_id.get(sid or "default")
    if upstream is None:
        if required:
            # BuildKit's words to the letter: Docker 20.10 names the id as the mount wrote it,
            # "" for the default one
            raise BuildError(f'{where}: no SSH key "{sid}" forwarded from the client')
        return None
    base = tempfile.mkdtemp(prefix="pb-sshm-", dir="/tmp")
    stack.callback(shutil.rmtree, base, True)
    path = os.path.join(base, "agent.sock")
    proxy = AgentProxy(path, upstream, uid=uid, gid=gid, mode=mode)
    stack.callback(proxy.close)
    os.chmod(base, 0o711)
    return path


def default_target(n: int) -> str:
    """BuildKit's target of the *n*-th ssh mount of a RUN (from 0)."""
    return f"/run/buildkit/ssh_agent.{n}"


def auth_sock_env(env: Sequence[str], first_target: str) -> list[str]:
    """``SSH_AUTH_SOCK`` at the first ssh mount, unless the step's environment sets it."""
    if any(e.startswith("SSH_AUTH_SOCK=") for e in env):
        return []
    return [f"SSH_AUTH_SOCK={first_target}"]


