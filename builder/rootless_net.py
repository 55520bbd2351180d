"""Rootless networking: a container's network namespace reaches out through ``slirp4netns``.

An ordinary user cannot make bridges, veths or NAT rules on the host. Rootless (see
``builder.rootless``) a bridge endpoint gets instead, in its own network namespace, a ``tap0``
that ``slirp4netns`` (a user-mode TCP/IP stack running as the user, on the host's network)
serves: 10.0.2.100/24, gateway 10.0.2.2, DNS 10.0.2.3, as rootless Podman and Docker have it.
``-p`` is a host forward asked of slirp4netns through its API socket; a host port below
``net.ipv4.ip_unprivileged_port_start`` is refused, naming that sysctl.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from builder.errors import NetworkError
from builder.network.model import Endpoint, PortBinding, PortMapping
from builder.state import StateRoot

SLIRP = "slirp4netns"
IP, PREFIXLEN, GATEWAY, DNS = "10.0.2.100", 24, "10.0.2.2", "10.0.2.3"
#: what user-defined networks say rootless, until they live in a network namespace of the user's
NO_USER_NETWORKS = ("rootless: user-defined networks are not supported yet (an ordinary user's "
                    "containers each reach out through slirp4netns, with no bridge between them): "
                    "use the default network, or --network container:NAME to share one")
TUN = "/dev/net/tun"
PORT_SYSCTL = "/proc/sys/net/ipv4/ip_unprivileged_port_start"


def unprivileged_port_start() -> int:
    try:
        return int(Path(PORT_SYSCTL).read_text())
    except (OSError, ValueError):
        return 1024


def check_ports(ports: Sequence[PortMapping]) -> None:
    """A host port an ordinary user cannot bind is refused before anything is made."""
    low = unprivileged_port_start()
    for m in ports:
        if 0 < m.host_port < low:
            raise NetworkError.invalid(
                f"rootless: host port {m.host_port} is below net.ipv4.ip_unprivileged_port_start "
                f"({low}): publish a port >= {low}, or lower that sysctl as root")


def _dir(state: StateRoot) -> Path:
    d = state.run / "slirp"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _free_port(protocol: str, host_ip: str) -> int:
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host_ip or "0.0.0.0", 0))
        return int(s.getsockname()[1])


def _api(sock_path: Path, request: dict[str, object]) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(sock_path))
        s.sendall(json.dumps(request).encode())
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    reply: dict[str, object] = json.loads(data or b"{}")
    return reply


def start(state: StateRoot, container_id: str, netns: Path) -> tuple[int, Path]:
    """slirp4netns serving *netns* (``tap0`` configured); its pid and API socket."""
    exe = shutil.which(SLIRP)
    if exe is None:
        raise NetworkError("rootless: networking needs slirp4netns (apt-get install slirp4netns), "
                           "or use --network none")
    if not os.access(TUN, os.R_OK | os.W_OK):
        raise NetworkError(f"rootless: {TUN} is not usable by this user, and slirp4netns needs it "
                           f"(as root: chmod 0666 {TUN}, Debian's udev default), or use --network none")
    d = _dir(state)
    sock = d / f"{container_id[:32]}.sock"
    sock.unlink(missing_ok=True)
    log = d / f"{container_id[:32]}.log"
    ready_r, ready_w = os.pipe()
    try:
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [exe, "--configure", "--mtu=65520", "--disable-host-loopback", "--enable-sandbox",
                 f"--ready-fd={ready_w}", f"--api-socket={sock}", "--netns-type=path", str(netns), "tap0"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, pass_fds=(ready_w,),
                start_new_session=True)
        os.close(ready_w)
        ready_w = -1
        with os.fdopen(ready_r, "rb") as f:
            ready_r = -1
            ok = f.read(1) == b"1"
    finally:
        for fd in (ready_r, ready_w):
            if fd >= 0:
                os.close(fd)
    if not ok:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
        text = log.read_text(errors="replace").strip().splitlines()
        raise NetworkError(f"rootless: slirp4netns failed: {text[-1] if text else proc.returncode}")
    (d / f"{container_id[:32]}.pid").write_text(f"{proc.pid}\n")
    return proc.pid, sock


def is_slirp(pid: int, netns: Path | None) -> bool:
    """Whether *pid* is the slirp4netns of *netns* (not a reused pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(argv) and os.path.basename(argv[0]) == SLIRP.encode() and (
        netns is None or str(netns).encode() in argv)


def stop(pid: int, netns: Path | None) -> None:
    if not pid or not is_slirp(pid, netns):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:
            if not is_slirp(pid, netns):
                return
        time.sleep(0.005)


def wire(state: StateRoot, ep: Endpoint, ports: Sequence[PortMapping],
         undo: list[Callable[[], None]]) -> Endpoint:
    """The rootless stand-in of a bridge endpoint: slirp4netns on *ep*'s netns, host forwards."""
    assert ep.netns is not None
    check_ports(ports)
    pid, sock = start(state, ep.container_id, ep.netns)
    netns = ep.netns
    undo.append(lambda: stop(pid, netns))
    bindings: list[PortBinding] = []
    for m in ports:
        host_port = m.host_port or _free_port(m.protocol, m.host_ip)
        reply = _api(sock, {"execute": "add_hostfwd", "arguments": {
            "proto": m.protocol, "host_addr": m.host_ip or "0.0.0.0", "host_port": host_port,
            "guest_addr": IP, "guest_port": m.container_port}})
        if "error" in reply:
            err = reply["error"]
            desc = err.get("desc") if isinstance(err, dict) else err
            raise NetworkError(f"Bind for {m.host_ip or '0.0.0.0'}:{host_port} failed: {desc}")
        bindings.append(PortBinding(m.container_port, m.protocol, m.host_ip, host_port))
    return replace(ep, ifname="tap0", ip=IP, prefixlen=PREFIXLEN, gateway=GATEWAY,
                   ports=tuple(bindings), proxy_pid=pid)


def unwire(state: StateRoot | None, ep: Endpoint) -> None:
    stop(ep.proxy_pid, ep.netns)
    if state is not None:
        for suffix in (".sock", ".pid", ".log"):
            with contextlib.suppress(OSError):
                (_dir(state) / f"{ep.container_id[:32]}{suffix}").unlink()
