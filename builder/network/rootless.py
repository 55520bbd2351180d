"""Rootless networking: containers reach out through ``slirp4netns``.

An ordinary user cannot make bridges, veths or NAT rules on the host. Rootless (see
``builder.base.rootless``):

- on the default network a container gets, in its own network namespace, a ``tap0`` that
  ``slirp4netns`` (a user-mode TCP/IP stack running as the user, on the host's network) serves:
  10.0.2.100/24, gateway 10.0.2.2, DNS 10.0.2.3, as rootless Podman and Docker have it;
- user-defined networks live in the *user's network namespace*, held by the keeper and served
  by one slirp4netns of its own (as rootless Podman's "rootless netns"): there their bridges,
  veths, netfilter rules, port proxies and DNS servers are made by the very code root uses on
  the host, run in a thread that joins that namespace (``user_netns_call``), so two containers
  on a user network reach each other by address and by name.

``-p`` is a host forward asked of slirp4netns through its API socket (to the container's own
tap0 on the default network; to the user namespace's tap0, whence root's DNAT rule and proxy
take it on, on a user network); a host port below ``net.ipv4.ip_unprivileged_port_start`` is
refused, naming that sysctl.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from builder.base import rootless, syscalls
from builder.base.errors import NetworkError
from builder.base.state import StateRoot
from builder.base.values import replace
from builder.network.model import Endpoint, Network, PortMapping
from builder.network.records import PortBinding

T = TypeVar("T")
SLIRP = "slirp4netns"
IP, PREFIXLEN, GATEWAY, DNS = "10.0.2.100", 24, "10.0.2.2", "10.0.2.3"
#: the slirp4netns of the user's network namespace (its files in ``state.run/slirp``)
USERNET = "user-netns"
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
    return _start(_dir(state), container_id[:32], netns)


def _start(d: Path, key: str, netns: Path) -> tuple[int, Path]:
    exe = shutil.which(SLIRP)
    if exe is None:
        raise NetworkError("rootless: networking needs slirp4netns (apt-get install slirp4netns), "
                           "or use --network none")
    if not os.access(TUN, os.R_OK | os.W_OK):
        raise NetworkError(f"rootless: {TUN} is not usable by this user, and slirp4netns needs it "
                           f"(as root: chmod 0666 {TUN}, Debian's udev default), or use --network none")
    sock = d / f"{key}.sock"
    sock.unlink(missing_ok=True)
    log = d / f"{key}.log"
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
    (d / f"{key}.pid").write_text(f"{proc.pid}\n")
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


# -- user-defined networks: the user's network namespace -----------------------------------------

_local = threading.local()


def in_user_netns() -> bool:
    """Whether this thread runs in the user's network namespace (``user_netns_call``): the
    network code's rootless hooks then let root's path run unchanged."""
    return bool(getattr(_local, "inside", False))


def _keeper_netns() -> Path:
    pid = rootless.keeper_pid()
    if pid is None:
        raise NetworkError("rootless: the user's namespace keeper is not running")
    return Path(f"/proc/{pid}/ns/net")


def _usernet_dir() -> Path:
    return rootless.runtime_dir()


def _ensure_served(netns: Path) -> Path:
    """slirp4netns on the user's network namespace (started once per keeper, its files in the
    runtime directory); its API socket."""
    d = _usernet_dir()
    # one per namespace: the state roots of one user share it (their own locks do not serialise)
    lock = os.open(d / f"{USERNET}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            pid = int((d / f"{USERNET}.pid").read_text())
        except (OSError, ValueError):
            pid = 0
        if pid and is_slirp(pid, netns):
            return d / f"{USERNET}.sock"
        return _start(d, USERNET, netns)[1]
    finally:
        os.close(lock)


def user_netns_call(fn: Callable[[], T]) -> T:
    """*fn*'s result, run in a thread that joined the user's network namespace (served by its
    slirp4netns): root's network code makes its bridges, rules and helpers there. This
    process stays in the host's (a namespace's root cannot join the host's again)."""
    netns = _keeper_netns()
    _ensure_served(netns)

    def inside() -> T:
        _local.inside = True
        return fn()

    return syscalls.in_network_namespace(netns, inside)


def _check_driver(net: Network) -> None:
    if net.driver != "bridge":
        raise NetworkError.invalid(f"rootless: network driver {net.driver!r} is not supported "
                                   "for an ordinary user (bridge networks are)")


def materialise(net: Network, root: Callable[[], None]) -> None:
    _check_driver(net)
    user_netns_call(root)


def dematerialise(net: Network, root: Callable[[], None]) -> None:
    if net.driver != "bridge" or not net.user_defined or rootless.keeper_pid() is None:
        return  # no bridge made; or its namespace went with the keeper, and the bridge with it
    user_netns_call(root)


def wire_user(net: Network, ports: Sequence[PortMapping],
              root: Callable[[Sequence[PortMapping], list[Callable[[], None]]], Endpoint],
              undo: list[Callable[[], None]]) -> Endpoint:
    """A user network's endpoint: root's wiring in the user's network namespace (its undo
    steps run there too), its ports bound there on every address, and a slirp4netns host
    forward from each host port to it."""
    _check_driver(net)
    check_ports(ports)
    inner = [replace(m, host_ip="") for m in ports]
    steps: list[Callable[[], None]] = []
    try:
        ep = user_netns_call(lambda: root(inner, steps))
    finally:
        undo.extend(functools.partial(user_netns_call, u) for u in steps)
    sock = _usernet_dir() / f"{USERNET}.sock"
    bindings: list[PortBinding] = []
    for m, b in zip(ports, ep.ports, strict=True):
        reply = _api(sock, {"execute": "add_hostfwd", "arguments": {
            "proto": m.protocol, "host_addr": m.host_ip or "0.0.0.0", "host_port": b.host_port,
            "guest_addr": IP, "guest_port": b.host_port}})
        if "error" in reply:
            err = reply["error"]
            desc = err.get("desc") if isinstance(err, dict) else err
            raise NetworkError(f"Bind for {m.host_ip or '0.0.0.0'}:{b.host_port} failed: {desc}")
        fwd = reply.get("return")
        fid = fwd.get("id") if isinstance(fwd, dict) else None
        if isinstance(fid, int):
            undo.append(functools.partial(_remove_hostfwd, sock, fid))
        bindings.append(replace(b, host_ip=m.host_ip))
    return replace(ep, ports=tuple(bindings))


def _remove_hostfwd(sock: Path, fid: int) -> None:
    with contextlib.suppress(OSError, ValueError):
        _api(sock, {"execute": "remove_hostfwd", "arguments": {"id": fid}})


def unwire_user(ep: Endpoint, root: Callable[[], object]) -> None:
    """Root's unwiring in the user's network namespace, and the endpoint's host forwards."""
    if rootless.keeper_pid() is None:
        return
    if ep.ports:
        sock = _usernet_dir() / f"{USERNET}.sock"
        with contextlib.suppress(OSError, ValueError):
            got = _api(sock, {"execute": "list_hostfwd"}).get("return")
            entries = got.get("entries", []) if isinstance(got, dict) else []
            ours = {(b.protocol, b.host_port) for b in ep.ports}
            for e in entries:
                if isinstance(e, dict) and (e.get("proto"), e.get("host_port")) in ours:
                    _remove_hostfwd(sock, int(e["id"]))
    user_netns_call(root)
