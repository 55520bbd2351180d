"""Listeners of ``pybuild serve`` and its main loop.

``unix:///path``: a socket of mode 0660 (group ``docker`` when that group exists, as dockerd);
a stale socket file is replaced, a live one refused. ``tcp://host:port``: with ``--tlsverify``
only clients holding a certificate signed by ``--tlscacert`` get in. A plain (or ``--tls``
without verification) TCP listener is refused on any address that is not loopback; on loopback it
is allowed with a warning, since every local user can then drive the daemon.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import grp
import ipaddress
import os
import signal
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from builder.api.app import make_app
from builder.base.state import StateRoot

DEFAULT_HOST = "unix:///run/pybuild.sock"
DEFAULT_TCP_PORT = 2376


class ServeError(Exception):
    """A listener that cannot be set up: bad ``--host``, TLS files, address in use."""


@dataclass(frozen=True)
class TLSOptions:
    verify: bool = False  # client certificates required and checked against cacert
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None

    @property
    def enabled(self) -> bool:
        return self.verify or bool(self.cert)


@dataclass(frozen=True)
class Listener:
    scheme: str  # "unix" or "tcp"
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        return f"unix://{self.path}" if self.scheme == "unix" else f"tcp://{self.host}:{self.port}"


def parse_host(text: str) -> Listener:
    """``unix:///run/x.sock``, ``tcp://127.0.0.1:2376``, ``tcp://[::1]:2376``, ``tcp://:2376``."""
    if "://" not in text:
        raise ServeError(f"invalid --host {text!r}: expected unix:///path or tcp://host:port")
    parts = urlsplit(text)
    if parts.scheme == "unix":
        path = (parts.netloc + parts.path) if parts.netloc else parts.path
        if not path:
            raise ServeError(f"invalid --host {text!r}: no socket path")
        return Listener("unix", path=path)
    if parts.scheme == "tcp":
        try:
            port = parts.port or DEFAULT_TCP_PORT
        except ValueError:
            raise ServeError(f"invalid --host {text!r}: bad port") from None
        return Listener("tcp", host=parts.hostname or "0.0.0.0", port=port)
    raise ServeError(f"invalid --host {text!r}: only unix:// and tcp:// are supported")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listeners(listeners: Sequence[Listener], tls: TLSOptions) -> list[str]:
    """Refuse what must not start; returns warnings for what starts but is risky."""
    warnings = []
    for ls in listeners:
        if ls.scheme != "tcp":
            continue
        if tls.verify:
            if not (tls.cacert and tls.cert and tls.key):
                raise ServeError("--tlsverify needs --tlscacert, --tlscert and --tlskey")
            continue
        if not is_loopback(ls.host):
            raise ServeError(
                f"refusing to listen on {ls} without --tlsverify: a TCP listener on a "
                f"non-loopback address needs TLS with client-certificate verification")
        warnings.append(f"listening on {ls} without client-certificate verification: every "
                        f"local user can drive this daemon")
    return warnings


def ssl_context(tls: TLSOptions) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(tls.cert or "", tls.key)
        if tls.verify:
            ctx.load_verify_locations(cafile=tls.cacert)
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as e:
        raise ServeError(f"TLS files: {e}") from None
    return ctx


def _unix_socket(path: str) -> socket.socket:
    """A bound, listening unix socket at *path* with mode 0660; a stale file is replaced."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.exists() or p.is_symlink():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            p.unlink()  # nobody listens: left by a daemon that died
        else:
            raise ServeError(f"{path}: another daemon is listening on this socket")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)  # never world-accessible, not even between bind and chmod
    try:
        sock.bind(path)
    except OSError as e:
        sock.close()
        raise ServeError(f"cannot listen on unix://{path}: {e.strerror}") from None
    finally:
        os.umask(old)
    try:
        gid = grp.getgrnam("docker").gr_gid
    except KeyError:
        gid = -1
    if gid != -1 and "_PYBUILD_ROOTLESS" not in os.environ:  # rootless: the user's socket only
        os.chown(path, -1, gid)
    os.chmod(path, 0o660)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _tcp_socket(ls: Listener) -> socket.socket:
    try:
        infos = socket.getaddrinfo(ls.host, ls.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ServeError(f"cannot resolve {ls}: {e}") from None
    family, _t, _p, _c, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise ServeError(f"cannot listen on {ls}: {e.strerror}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def _serve(state: StateRoot, listeners: Sequence[Listener], tls: TLSOptions,
                 ready: Callable[[list[str]], None] | None) -> None:
    from aiohttp import web  # only once every listener passed its checks: refusals stay quick

    loop = asyncio.get_running_loop()
    # blocking library calls (and followed log/attach streams) run here; room for many at once
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(
        max_workers=64, thread_name_prefix="pybuild-serve"))
    stop = asyncio.Event()
    me = os.getpid()

    def on_signal(signum: int, frame: object) -> None:
        if os.getpid() != me:
            # a fork of the daemon (a netns helper, a supervisor before it execs or
            # detaches) must die of the signal as usual, not stop the daemon: with asyncio's
            # add_signal_handler, its wakeup byte would land in the daemon's self-pipe
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        loop.call_soon_threadsafe(stop.set)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    app = make_app(state)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    sockets: list[socket.socket] = []
    unix_paths: list[str] = []
    try:
        ctx = ssl_context(tls) if tls.enabled and any(x.scheme == "tcp" for x in listeners) \
            else None
        for ls in listeners:
            if ls.scheme == "unix":
                sock = _unix_socket(ls.path)
                unix_paths.append(ls.path)
            else:
                sock = _tcp_socket(ls)
            sockets.append(sock)
            site = web.SockSite(runner, sock, ssl_context=ctx if ls.scheme == "tcp" else None,
                                shutdown_timeout=2.0)
            await site.start()
        if ready is not None:
            ready([str(x) for x in listeners])
        await stop.wait()
    finally:
        await runner.cleanup()
        for sock in sockets:
            sock.close()
        for path in unix_paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def serve(state: StateRoot, hosts: Sequence[str], *, tls: TLSOptions = TLSOptions(),
          ready: Callable[[list[str]], None] | None = None,
          warn: Callable[[str], None] | None = None) -> None:
    """Listen on every host of *hosts* until SIGTERM or SIGINT; ``ready`` is called once all
    listen. Raises ``ServeError`` before listening on anything if one host is refused."""
    if not hosts and "_PYBUILD_ROOTLESS" in os.environ:  # $XDG_RUNTIME_DIR/pybuild.sock
        from builder.base import rootless

        hosts = [f"unix://{rootless.socket_path()}"]
    listeners = [parse_host(h) for h in (hosts or [DEFAULT_HOST])]
    for w in check_listeners(listeners, tls):
        if warn is not None:
            warn(w)
    if tls.enabled and any(x.scheme == "tcp" for x in listeners):
        ssl_context(tls)  # bad TLS files fail before any socket exists
    asyncio.run(_serve(state, listeners, tls, ready))
