"""The detached helper processes of a network: port proxies and DNS servers (spawned with their
sockets already bound, recognised by pid + command line, stopped and reaped), and port binding.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from builder.base.errors import NetworkError
from builder.base.state import StateRoot
from builder.base.values import replace
from builder.network.model import Network, PortMapping
from builder.network.records import PortBinding

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket


def bind_ports(ports: Sequence[PortMapping]) -> list[tuple[socket.socket, PortBinding]]:
    out: list[tuple[socket.socket, PortBinding]] = []
    if not ports:
        return out
    import socket  # (~2 ms) only to publish a port: the bridge run's budget

    try:
        for m in ports:
            kind = socket.SOCK_STREAM if m.protocol == "tcp" else socket.SOCK_DGRAM
            s = socket.socket(socket.AF_INET, kind)
            out.append((s, PortBinding(m.container_port, m.protocol, m.host_ip, m.host_port)))
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            host = m.host_ip or "0.0.0.0"
            try:
                s.bind((host, m.host_port))
            except OSError as e:
                raise NetworkError(
                    f"Bind for {host}:{m.host_port} failed: "
                    + ("port is already allocated" if e.errno == 98 else e.strerror or str(e))
                ) from None
            if kind == socket.SOCK_STREAM:
                s.listen(128)
            port = s.getsockname()[1]
            out[-1] = (s, PortBinding(m.container_port, m.protocol, m.host_ip, port))
    except BaseException:
        for s, _ in out:
            s.close()
        raise
    return out


PROXY = "builder.network.proxy"
DNS = "builder.network.dns"


def spawn(module: str, args: Sequence[str], socks: Sequence[socket.socket]) -> int:
    """Start a detached helper (own session, no tty) that inherits the bound *socks*."""
    import subprocess  # only for a helper: a run without published ports starts none

    env = dict(os.environ)
    pkg_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            pass_fds=[s.fileno() for s in socks], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            close_fds=True, env=env, cwd="/",
        )
    finally:
        for s in socks:
            s.close()  # the helper holds its own copies now
    return proc.pid


def start_proxy(container_id: str, ip: str, socks: list[tuple[socket.socket, PortBinding]]) -> int:
    args = [f"{s.fileno()}/{b.protocol}/{ip}/{b.container_port}" for s, b in socks]
    return spawn(PROXY, ["--id", container_id, *args], [s for s, _ in socks])


def is_ours(pid: int, module: str, ident: str) -> bool:
    """*pid* is our helper for *ident* (never signal a pid the system has reused)."""
    deadline = time.monotonic() + 2
    while True:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        if raw or time.monotonic() > deadline or state_of(pid) in ("Z", "X", ""):
            break
        time.sleep(0.002)  # empty while the helper is still in execve(): wait for it
    cmd = raw.split(b"\0")
    return module.encode() in cmd and ident.encode() in cmd and state_of(pid) not in ("Z", "X", "")


def stop_proxy(pid: int, container_id: str) -> None:
    stop(pid, PROXY, container_id)


def stop(pid: int, module: str, ident: str) -> None:
    if not is_ours(pid, module, ident):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # a zombie child of ours: reap it
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:  # reap it if we are its parent (a test, or the same CLI call); else init does
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        except ChildProcessError:
            if not Path(f"/proc/{pid}").exists() or state_of(pid) in ("Z", "X", ""):
                return
        time.sleep(0.005)


def state_of(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[0]


def ensure_dns(state: StateRoot, net: Network) -> Network:
    """The network's DNS server on gateway:53, started if not running. If the address cannot
    be bound (another resolver holds port 53 on all addresses), names still resolve through
    the hosts files and containers use the host's resolvers."""
    if net.dns_pid and is_ours(net.dns_pid, DNS, net.id):
        return net
    if "_PYBUILD_ROOTLESS" in os.environ:  # on the bridge in the user's netns (builder.network.rootless)
        from builder.network import rootless as rootless_net

        if not rootless_net.in_user_netns():
            return rootless_net.user_netns_call(lambda: ensure_dns(state, net))
    import socket  # (~2 ms) a user network's DNS server: not the default bridge run's path

    from builder.network.dns import upstream_servers

    socks: list[socket.socket] = []
    try:
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            s = socket.socket(socket.AF_INET, kind)
            socks.append(s)
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((net.gateway, 53))
            if kind == socket.SOCK_STREAM:
                s.listen(64)
    except OSError:
        for s in socks:
            s.close()
        return replace(net, dns_pid=0)
    args = [str(state.networks), net.id, str(socks[0].fileno()), str(socks[1].fileno())]
    return replace(net, dns_pid=spawn(DNS, args + upstream_servers(), socks))
