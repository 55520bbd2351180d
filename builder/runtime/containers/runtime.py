"""From a container record to a running sandbox and back: spec assembly (rootfs, mounts,
network, resources, user), launch, exec, healthcheck commands, and teardown from state.

The supervisor and the CLI call these; only this module knows the sandbox's and the network's APIs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from builder import network  # lazy: its core (netlink) loads on first attach
from builder.base.errors import ContainerError
from builder.base.paths import remove_tree
from builder.base.state import StateRoot
from builder.base.values import frozen
from builder.network.records import EndpointRecord, mentions
from builder.runtime.containers import links
from builder.runtime.containers import mounts as _mounts
from builder.runtime.containers.options import (
    DEFAULT_PATH,
    ULIMITS,
    check_ulimits,
    device_nodes,
    merge_env,
)
from builder.runtime.containers.record import (
    Container,
    ContainerStore,
    NoSuchContainer,
)
from builder.runtime.containers.recordparts import SandboxRecord, State
from builder.runtime.containers.security import security_opts
from registry.errors import NotFound

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from builder.core.sandbox.executor import Result, Sandbox
    from builder.core.sandbox.spec import Mount, Spec
    from builder.runtime.containers.hostconfig import HostConfig
    from registry.store import Image

#: where ``--init`` finds its init (tini, as Docker's docker-init is), first that exists
INIT_BINARIES = ("/usr/bin/tini-static", "/usr/bin/docker-init", "/usr/bin/tini")
INIT_PATH = "/sbin/docker-init"

#: Docker's HEALTHCHECK defaults
HEALTH_INTERVAL = 30.0
HEALTH_TIMEOUT = 30.0
HEALTH_RETRIES = 3


@frozen
class HealthConfig:
    test: tuple[str, ...]  # argv to exec in the container
    interval: float
    timeout: float
    start_period: float
    retries: int


def healthcheck_of(c: Container) -> HealthConfig | None:
    """The effective healthcheck (``None`` for none or ``NONE``)."""
    hc = c.config.healthcheck
    if not hc or not hc.get("Test"):
        return None
    test = list(hc["Test"])
    kind = test[0]
    if kind == "NONE":
        return None
    if kind == "CMD-SHELL":
        argv: tuple[str, ...] = ("/bin/sh", "-c", " ".join(test[1:]))
    elif kind == "CMD":
        argv = tuple(test[1:])
    else:  # Docker accepts a bare command list as CMD
        argv = tuple(test)
    if not argv:
        return None

    def secs(key: str, default: float) -> float:
        v = hc.get(key) if hc else None
        return float(v) / 1e9 if v else default

    return HealthConfig(
        test=argv,
        interval=secs("Interval", HEALTH_INTERVAL),
        timeout=secs("Timeout", HEALTH_TIMEOUT),
        start_period=secs("StartPeriod", 0.0),
        retries=int(hc.get("Retries") or HEALTH_RETRIES),
    )


def teardown(root: StateRoot, c: Container, state: State, *, crashed: bool = False) -> None:
    """Undo what a start made (sandbox mounts/cgroup/processes, network endpoints, proxies);
    safe to call again, and after a crash, from the persisted state alone. *crashed*: the
    start or its supervisor was killed, so what was made may not all be recorded yet: also
    the sandbox's cgroups by name, and port rules and proxies tagged with the container."""
    run_dir = state.sandbox.run_dir if state.sandbox else ""
    if not run_dir:
        run_dir = str(root.run / c.id)  # where a start that crashed early may have left it
    if crashed:
        from builder.core.sandbox.handle import teardown_id

        with contextlib.suppress(Exception):
            teardown_id(root, c.id)
    if os.path.isdir(run_dir):
        # handle, not executor: a removal loads no child, spec or seccomp code
        from builder.core.sandbox.handle import teardown_run_dir

        with contextlib.suppress(Exception):
            teardown_run_dir(run_dir)
        remove_tree(run_dir)
    if any(name != "none" for name in state.endpoints) or mentions(root, c.id):
        network.release(root, c.id)
    if crashed:
        _sweep_network(root, c.id)


def _sweep_network(root: StateRoot, cid: str) -> None:
    """What an ``attach`` killed before it recorded its endpoint may have made outside the
    netns (whose removal takes the veth with it): port rules and the port proxy."""
    from builder.network import firewall, helpers

    with contextlib.suppress(Exception):
        nets = network.list_networks(root)
        with firewall.locked():
            for net in nets:
                if net.driver == "bridge" and firewall.has_tag(firewall.endpoint_tag(net.id, cid)):
                    firewall.remove_tagged(firewall.endpoint_tag(net.id, cid))
    needle = b"\0--id\0" + cid.encode() + b"\0"
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if helpers.PROXY.encode() in cmd and needle in cmd + b"\0":
            helpers.stop_proxy(int(entry.name), cid)


def remove_storage(root: StateRoot, c: Container, *, volumes: bool) -> None:
    """Before the record goes: the container's anonymous volumes with *volumes* (``rm -v``)."""
    if not volumes:
        return
    anon = [m for m in c.mounts if m.type == "volume" and m.anonymous]
    if not anon:
        return
    from builder.runtime import volume

    users = volume.containers_using(root)
    for m in anon:
        name = m.name
        others: list[str] = [u for u in users.get(name, []) if u != c.id]

        def in_use(_name: str, others: list[str] = others) -> list[str]:
            return others

        with contextlib.suppress(Exception):
            volume.remove(root, name, in_use=in_use)


# -- launching ---------------------------------------------------------------------------------
class Launched:
    """A started container: the sandbox handle plus what the supervisor must keep or record
    (a plain class, not a dataclass: ``ps`` loads this module)."""

    def __init__(self, sandbox: Sandbox, endpoints: dict[str, EndpointRecord], netns: str,
                 keep_fds: list[int] | None = None) -> None:
        self.sandbox = sandbox
        self.endpoints = endpoints
        self.netns = netns
        self.keep_fds = keep_fds if keep_fds is not None else []  # e.g. the held-open end of stdin

    @property
    def pid(self) -> int:
        return self.sandbox.pid

    def persisted(self) -> SandboxRecord:
        return SandboxRecord(run_dir=str(self.sandbox.run_dir), netns=self.netns)

    def wait(self) -> Result:
        try:
            return self.sandbox.wait()
        finally:
            for fd in self.keep_fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.keep_fds = []


def _hostname_file(root: StateRoot, c: Container) -> Path:
    p = ContainerStore(root).dir(c.id) / "hostname"
    if not p.exists():
        p.write_text(c.config.hostname or c.id[:12] + "\n")
    return p


def _network(root: StateRoot, c: Container, link_hosts: tuple[str, ...] = ()
             ) -> tuple[str, str, dict[str, EndpointRecord], Path | None, Path | None]:
    """Attach the container to its network: (net namespace for the spec, uts mode, endpoints
    by network name, hosts file, resolv.conf)."""
    hc = c.host_config
    mode = hc.network_mode
    name = hc.network
    if name == "none":
        # just a loopback: the sandbox's own new namespace does it, no netlink needed
        hosts, resolv = _local_net_files(root, c)
        return "new", "new", {"none": _NONE_ENDPOINT}, hosts, resolv
    if mode.startswith("container:"):
        ref = mode.partition(":")[2]
        try:
            other = ContainerStore(root).find(ref)
        except NoSuchContainer:
            raise ContainerError(f"cannot join network of a non running container: {ref}") from None
        if other.state.status != "running":
            raise ContainerError(f"cannot join network of a non running container: {other.name}")
        if other.host_config.network_mode == "none":
            hosts, resolv = _local_net_files(root, other)
            return f"/proc/{other.state.pid}/ns/net", "new", {}, hosts, resolv
        if other.host_config.network_mode == "host":
            return "host", "host", {}, network.hosts_path(root, other.id), network.resolv_path(root, other.id)
        ns = network.shared_netns(root, other.id)
        return str(ns), "new", {}, network.hosts_path(root, other.id), network.resolv_path(root, other.id)
    from builder.network import PortMapping, publish_exposed

    ports = [PortMapping(b.container_port, b.protocol, b.host_ip, int(b.host_port or 0)) for b in hc.port_bindings]
    if hc.publish_all_ports:
        have = {p.key() for p in ports}
        ports += [p for p in publish_exposed(c.config.exposed_ports or ()) if p.key() not in have]
    ep = network.attach(
        root, c.id, name, name=c.name, aliases=hc.endpoint.aliases,
        ip=hc.endpoint.ipv4_address or None, hostname=c.config.hostname or "",
        ports=ports, extra_hosts=hc.extra_hosts + link_hosts, dns=hc.dns, dns_search=hc.dns_search,
        dns_options=hc.dns_options,
        mac=c.config.mac_address or None,
    )
    eps = {ep.network_name: ep.record()}
    # networks joined later with `network connect` stay joined across restarts, as in Docker
    for extra, conf in c.networks.items():
        if extra in eps or ep.netns is None:
            continue
        try:
            more = network.attach(root, c.id, extra, name=c.name, aliases=conf.aliases or (),
                                  hostname=c.config.hostname or "")
        except Exception:
            network.release(root, c.id)
            raise
        eps[more.network_name] = more.record()
    if ep.netns is None:
        return "host", "host", eps, ep.hosts_path, ep.resolv_path
    return str(ep.netns), "new", eps, ep.hosts_path, ep.resolv_path


#: the ``none`` network's endpoint in the state (just a loopback: nothing assigned)
_NONE_ENDPOINT = EndpointRecord.from_json({"NetworkID": "", "Ports": []})


def _local_net_files(root: StateRoot, c: Container) -> tuple[Path, Path]:
    """/etc/hosts and /etc/resolv.conf of a container on no network (Docker's content)."""
    d = ContainerStore(root).dir(c.id)
    hosts, resolv = d / "hosts", d / "resolv.conf"
    hc = c.host_config
    resolution: Any = None
    if hc.extra_hosts or hc.dns or hc.dns_search or hc.dns_options:
        from builder.network import core as names_core
        from builder.network import resolution
    if not hosts.exists():
        hostname = c.config.hostname or c.id[:12]
        extra = ""
        if hc.extra_hosts:
            gateway = names_core.default_host_gateway(root)
            extra = resolution.extra_hosts_lines(names_core.resolve_extra_hosts(hc.extra_hosts, gateway))
        hosts.write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                         f"{extra}127.0.1.1\t{hostname}\n")
    if not resolv.exists():
        try:
            text = Path("/etc/resolv.conf").read_text()
        except OSError:
            text = ""
        if resolution is not None:
            text = resolution.override_resolv(text, dns=hc.dns, search=hc.dns_search, options=hc.dns_options)
        resolv.write_text(text)
    return hosts, resolv


def _overlay_ok(root: StateRoot, cdir: Path) -> bool:
    """Whether overlayfs works on the state root's filesystem: probed once per state root (the
    probe forks a child; every foreground ``run`` would pay it) and remembered in a file."""
    if (cdir / "upper").is_dir():
        return True  # this container's root is an overlay already (a restart)
    if (cdir / "rootfs").is_dir():
        return False
    marker = root.containers / ".overlay"
    try:
        return marker.read_text().strip() == "1"
    except OSError:
        pass
    from builder.core.rootfs import overlay_supported

    ok = overlay_supported(cdir)
    with contextlib.suppress(OSError):
        marker.write_text("1\n" if ok else "0\n")
    return ok


def _bounding_caps() -> tuple[str, ...]:
    """``--privileged``: every capability we hold in our bounding set (asking for more fails
    here: this machine's bounding set lacks CAP_SYS_RESOURCE, for one)."""
    from builder.core.sandbox.spec import CAP_NUMBERS

    mask = 0
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapBnd:"):
                mask = int(line.split()[1], 16)
    return tuple(n for n, bit in CAP_NUMBERS.items() if mask >> bit & 1)


def _init_binary() -> str:
    for p in INIT_BINARIES:
        if os.path.exists(p):
            return p
    raise ContainerError("--init needs tini (apt-get install tini): none of " + ", ".join(INIT_BINARIES))


def build_spec(root: StateRoot, c: Container, *, netns: str, uts: str, hosts: Path | None,
               resolv: Path | None, link_env: Sequence[str] = (), image: Image | None = None) -> Spec:
    """The sandbox spec for a container record (its layers, upper dir, mounts, limits, user);
    *image* is the container's, when its creator has it at hand (else it is looked up)."""
    from builder.core.rootfs import LayerCache, image_layers, prepare_root
    from builder.core.sandbox.spec import (
        Mount,
        Namespaces,
        Process,
        Resources,
        Spec,
        default_mounts,
    )

    store = root.image_store()

    try:
        image = image if image is not None else store.resolve(c.image_id)
    except NotFound:
        raise ContainerError(f"the image {c.image} ({c.image_id[7:19]}) of container {c.name} is gone") from None
    layers = image_layers(store, image, LayerCache(root))
    hc = c.host_config
    read_only = hc.readonly_rootfs
    cdir = ContainerStore(root).dir(c.id)
    # --rm: its upper dir goes with it, so its overlay's unmount need not sync the filesystem
    rootfs = prepare_root(layers, cdir, readonly=read_only, overlay=_overlay_ok(root, cdir),
                          volatile=hc.auto_remove)
    tty = bool(c.config.tty)
    privileged = hc.privileged
    shm = hc.shm_size
    mounts: list[Mount] = list(default_mounts(terminal=tty, **({"shm_size": shm} if shm else {})))
    if privileged:
        # Docker's --privileged: /sys and the cgroup tree writable
        mounts = [Mount(m.destination, m.type, m.source, tuple(o for o in m.options if o != "ro"))
                  if m.destination in ("/sys", "/sys/fs/cgroup") else m for m in mounts]
    for dst, src in (("/etc/hostname", _hostname_file(root, c)), ("/etc/hosts", hosts),
                     ("/etc/resolv.conf", resolv)):
        if src is not None and src.exists():
            mounts.append(Mount(dst, "bind", str(src), ("rbind", "rprivate")))
    mounts += _mounts.sandbox_mounts(c.mounts)
    argv = list(c.command)
    if hc.init:
        mounts.append(Mount(INIT_PATH, "bind", _init_binary(), ("bind", "ro")))
        argv = [INIT_PATH, "--", *argv]
    caps = _bounding_caps() if privileged else _caps(hc)
    profile, nnp, systempaths = _security(c, privileged=privileged)
    process = Process(
        args=tuple(argv),
        env=process_env(c, tty=tty, linked=link_env),
        cwd=c.config.working_dir or "/",
        user=c.config.user or "",
        terminal=tty,
        capabilities=caps,
        no_new_privs=nnp,
        seccomp=profile,
        rlimits=_rlimits(c),
        add_groups=hc.group_add,
    )
    devices = _devices(c)
    r = hc.resources
    memory = r.memory or None
    pids = r.pids_limit
    resources = Resources(memory=memory, memory_swap=r.memory_swap if memory and r.memory_swap else None,
                          cpus=r.nano_cpus / 1e9 if r.nano_cpus else None, cpu_shares=r.cpu_shares or None,
                          account=True, pids=pids if pids and pids > 0 else None, cpuset_cpus=r.cpuset_cpus,
                          device_rules=tuple(f"{d.type} {d.major}:{d.minor} {p}" for d, p in devices))
    kw: dict[str, Any] = {}
    if privileged or systempaths:
        kw.update(masked_paths=(), readonly_paths=())
    return Spec(
        process=process, root=rootfs, mounts=tuple(mounts),
        namespaces=Namespaces(net=netns, uts=uts, pid="host" if hc.pid_mode == "host" else "new"), hostname=c.config.hostname or "",
        resources=resources, id=c.id, sysctls=_sysctls(c, netns), devices=tuple(d for d, _ in devices), **kw,
    )


def _caps(hc: HostConfig) -> tuple[str, ...]:
    """The capabilities of ``--cap-add``/``--cap-drop`` over Docker's default set."""
    from builder.core.sandbox.spec import capabilities

    return capabilities(tuple(x.removeprefix("CAP_") if x != "ALL" else x for x in hc.cap_add),
                        tuple(x.removeprefix("CAP_") if x != "ALL" else x for x in hc.cap_drop))


def _security(c: Container, *, privileged: bool) -> tuple[Any, bool, bool]:
    """(seccomp profile or None, no_new_privs, systempaths unconfined) from ``SecurityOpt``:
    Docker's defaults (the default profile, no_new_privs off); ``--privileged`` runs unconfined."""
    from builder.core.sandbox import seccomp

    sec = security_opts(c.host_config.security_opt)
    if privileged or sec.seccomp == "unconfined":
        profile = None
    elif sec.seccomp in ("", "builtin"):
        profile = seccomp.default()
    else:
        profile = seccomp.parse(sec.seccomp, source=f"of container {c.name}")
    return profile, sec.no_new_privileges, sec.systempaths_unconfined


def _rlimits(c: Container) -> tuple[Any, ...]:
    """``--ulimit``s as the process's rlimits (-1: unlimited), checked again against what we
    hold: the limits may have changed since ``create``."""
    from builder.core.sandbox.spec import Rlimit

    ulimits = c.host_config.resources.ulimits
    check_ulimits((u.name, u.hard) for u in ulimits)
    return tuple(Rlimit(ULIMITS[u.name], u.soft, u.hard) for u in ulimits)


def _devices(c: Container) -> list[tuple[Any, str]]:
    """``--device``s: (the node to make, its cgroup permissions)."""
    from builder.core.sandbox.spec import Device

    return [(Device(n.path, n.type, n.major, n.minor, n.mode, n.uid, n.gid), n.permissions)
            for n in device_nodes((d.path_on_host, d.path_in_container, d.permissions)
                                  for d in c.host_config.resources.devices)]


#: what Docker sets in a container's private network namespace: any port and ping for everyone
PRIVATE_NET_SYSCTLS = (("net.ipv4.ip_unprivileged_port_start", "0"),
                       ("net.ipv4.ping_group_range", "0 2147483647"))


def _sysctls(c: Container, netns: str) -> tuple[tuple[str, str], ...]:
    """``--sysctl``s over Docker's defaults for a network namespace of the container's own (not
    the host's, not another container's), where the kernel has them."""
    mode = c.host_config.network_mode
    out: dict[str, str] = {}
    if netns != "host" and not mode.startswith("container:"):
        for key, value in PRIVATE_NET_SYSCTLS:
            if os.path.exists("/proc/sys/" + key.replace(".", "/")):
                out[key] = value
    out.update(c.host_config.sysctls)
    return tuple(out.items())


def launch(root: StateRoot, c: Container, *, stdout: Callable[[bytes], None],
           stderr: Callable[[bytes], None], attach_stdin: int | None = None,
           image: Image | None = None) -> Launched:
    """Attach the network, build the spec and start the sandbox (*image*: the container's, if
    at hand); on failure nothing is left."""
    from builder.core.sandbox.executor import Executor

    linked = links.resolve(root, c)
    netns, uts, eps, hosts, resolv = _network(root, c, links.hosts(linked))
    if c.host_config.uts_mode == "host":  # the API's UTSMode (--uts host)
        uts = "host"
    keep: list[int] = []
    try:
        spec = build_spec(root, c, netns=netns, uts=uts, hosts=hosts, resolv=resolv,
                          link_env=links.env(linked), image=image)
        stdin: int | None = attach_stdin
        close_after: list[int] = []
        if stdin is None and c.config.open_stdin and not spec.process.terminal:
            # a detached -i container keeps an open, silent stdin (as dockerd holds it)
            r, w = os.pipe()
            stdin, close_after, keep = r, [r], [w]
        try:
            rt = c.host_config.runtime
            if rt != "pybuild":
                from builder.core.sandbox.oci import start_oci

                sb = start_oci(spec, rt, root, stdout=stdout, stderr=stderr, stdin=stdin)
            else:
                size = c.host_config.console_size or (0, 0)  # the `run -it` client's terminal
                sb = Executor(root).start(spec, stdout=stdout, stdin=stdin,
                                          stderr=None if spec.process.terminal else stderr,
                                          console_size=(int(size[0]), int(size[1])) if all(size) else None)
        finally:
            for fd in close_after:
                os.close(fd)
    except BaseException:
        for fd in keep:
            os.close(fd)
        with contextlib.suppress(Exception):
            _release_network(root, c.id)
        raise
    return Launched(sb, eps, netns if netns != "host" else "", keep)


def _release_network(root: StateRoot, cid: str) -> None:
    network.release(root, cid)


def process_env(c: Container, *, tty: bool, extra: Sequence[str] = (),
                linked: Sequence[str] = ()) -> tuple[str, ...]:
    """A process's environment as dockerd makes it: ``PATH`` (the default), ``HOSTNAME`` and, on
    a terminal, ``TERM=xterm``, then the *linked* containers' variables, each replaced in place
    or followed by the container's Env, then by *extra* (``exec -e``)."""
    base = [f"PATH={DEFAULT_PATH}", f"HOSTNAME={c.config.hostname or ''}"]
    if tty:
        base.append("TERM=xterm")
    return tuple(merge_env(merge_env([*base, *linked], c.config.env or ()), extra))


# -- exec --------------------------------------------------------------------------------------
def exec_process(c: Container, argv: Sequence[str], *, env: Sequence[str] = (), user: str | None = None,
                 workdir: str | None = None, tty: bool = False, privileged: bool = False,
                 linked: Sequence[str] = ()) -> Any:
    """The ``Process`` for ``exec``: the container's env/user/workdir unless overridden (its
    links' variables, *linked*, as at its start)."""
    from builder.core.sandbox.spec import Process

    if not argv:
        raise ContainerError("no command specified")
    caps = _bounding_caps() if privileged or c.host_config.privileged else _caps(c.host_config)
    profile, nnp, _ = _security(c, privileged=c.host_config.privileged)
    return Process(
        args=tuple(argv), env=process_env(c, tty=tty, extra=env, linked=linked),
        cwd=workdir or c.config.working_dir or "/",
        user=user if user is not None else c.config.user or "",
        terminal=tty, capabilities=caps, no_new_privs=nnp, seccomp=profile,
        rlimits=_rlimits(c),  # Docker's exec starts from the container's process spec
        add_groups=c.host_config.group_add,
    )


def exec_start(root: StateRoot, c: Container, process: Any, *, stdout: Any = None, stderr: Any = None,
               stdin: Any = None, console_size: tuple[int, int] | None = None) -> Sandbox:
    """Start *process* in the running container *c* (its namespaces and cgroup)."""
    from builder.core.sandbox.executor import Executor

    st = c.state
    if st.status != "running" or not st.pid:
        raise ContainerError.conflict(f"container {c.id} is not running")
    return Executor(root).exec_start(st.pid, process, stdout=stdout, stderr=stderr, stdin=stdin,
                                     console_size=console_size)


def exec_capture(root: StateRoot, c: Container, argv: Sequence[str], *, timeout: float) -> tuple[int, str]:
    """Run *argv* in the container (a healthcheck probe); (exit status, combined output)."""
    out = bytearray()

    def sink(b: bytes) -> None:
        if len(out) < 65536:
            out.extend(b)

    proc = exec_process(c, argv)
    h = exec_start(root, c, proc, stdout=sink, stderr=sink)
    r = h.wait(timeout)
    return (r.exit_status if not r.timed_out else -1), out.decode(errors="replace")
