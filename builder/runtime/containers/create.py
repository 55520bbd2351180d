"""``run``/``create``: from the parsed flags and the image's config to a container record, the
way Docker combines them (ENTRYPOINT/CMD interplay, ENV, WORKDIR, USER, EXPOSE, VOLUME, …).

Nothing is started here; the record is written complete (status ``created``) or not at all.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

from builder.base.errors import ContainerError
from builder.base.state import StateRoot
from builder.base.values import field, frozen, replace
from builder.runtime.containers.hostconfig import (
    Device,
    Endpoint,
    HostConfig,
    Mount,
    PortBinding,
    Resources,
    Ulimit,
)
from builder.runtime.containers.options import (
    DEFAULT_SHM_SIZE,
    RestartPolicy,
    check_ulimits,
    device_nodes,
    merge_env,
    parse_add_hosts,
    parse_bytes,
    parse_caps,
    parse_cpus,
    parse_devices,
    parse_dns,
    parse_dns_options,
    parse_dns_search,
    parse_duration,
    parse_env,
    parse_labels,
    parse_shm_size,
    parse_signal,
    parse_sysctls,
    parse_ulimits,
    read_env_file,
    rfc3339nano,
)
from builder.runtime.containers.record import Container, ContainerStore
from builder.runtime.containers.recordparts import MountPoint, State
from builder.runtime.containers.security import security_opts_for_record
from registry.config import ContainerConfig
from registry.errors import InvalidReference, NotFound, RegistryError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from builder.runtime.volume.specs import MountSpec
    from registry.store import Image

PULL_POLICIES = ("missing", "always", "never")


@frozen
class RunOptions:
    """Every ``run``/``create`` flag, as given (parsing and validation happen in ``create``).
    A ``frozen`` value, not a dataclass: ``run`` makes one per command, and a 60-field
    ``@dataclass`` generated and exec'd its methods at import (~5 ms of every ``run``)."""

    image: str
    command: tuple[str, ...] = ()
    name: str | None = None
    detach: bool = False
    rm: bool = False
    env: tuple[str, ...] = ()
    env_files: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    mounts: tuple[str, ...] = ()
    tmpfs: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    publish_all: bool = False
    network: str = "bridge"
    network_aliases: tuple[str, ...] = ()
    ip: str | None = None
    workdir: str | None = None
    user: str | None = None
    #: ``--entrypoint`` text, or the API's argv list (``Entrypoint: ["a", "b"]``)
    entrypoint: str | tuple[str, ...] | None = None
    interactive: bool = False
    tty: bool = False
    hostname: str | None = None
    memory: str | None = None
    #: ``--memory-swap``: memory + swap, ``-1`` unlimited; None/``0``: Docker's 2 × memory
    memory_swap: str | None = None
    cpus: str | None = None
    #: ``--cpuset-cpus``: the CPUs it may run on (``0-2,4``)
    cpuset_cpus: str | None = None
    cpu_shares: int | None = None
    pids_limit: int | None = None
    read_only: bool = False
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    privileged: bool = False
    init: bool = False
    restart: str = "no"
    stop_signal: str | None = None
    stop_timeout: int | None = None
    labels: tuple[str, ...] = ()
    pull: str = "missing"
    health_cmd: str | None = None
    health_interval: str | None = None
    health_timeout: str | None = None
    health_retries: int | None = None
    health_start_period: str | None = None
    no_healthcheck: bool = False
    runtime: str | None = None
    #: ``--pid host``: no pid namespace of its own
    pid: str | None = None
    security_opt: tuple[str, ...] = ()
    add_hosts: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    ulimits: tuple[str, ...] = ()
    sysctls: tuple[str, ...] = ()
    shm_size: str | None = None
    devices: tuple[str, ...] = ()
    #: ``(rows, cols)`` of the terminal a ``run -it`` client attaches (HostConfig ``ConsoleSize``)
    console_size: tuple[int, int] | None = None
    #: ``--platform os/arch[/variant]``: that platform of an index (pulled when the local
    #: image lacks it); a foreign one runs through the emulator (``builder.base.binfmt``)
    platform: str | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))


@frozen
class Healthcheck:
    """A healthcheck given as data (the Engine API's ``Config.Healthcheck``): ``Test`` as
    Docker takes it (``["CMD-SHELL", "cmd"]``, ``["CMD", …]``), durations in nanoseconds and
    ``Retries``; 0 leaves a value out of the record, as dockerd's ``omitempty`` does."""

    test: tuple[str, ...]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0

    def __post_init__(self) -> None:
        # dockerd's create checks (``verifyContainerSettings``): each duration 0 or at least 1ms
        for what, ns in (("Interval", self.interval), ("Timeout", self.timeout),
                         ("StartPeriod", self.start_period)):
            if ns and ns < 1_000_000:
                raise ContainerError.invalid(f"{what} in Healthcheck cannot be less than 1ms")
        if self.retries < 0:
            raise ContainerError.invalid("Retries in Healthcheck cannot be negative")

    def record(self) -> dict[str, int | list[str]]:
        """The record's ``Healthcheck`` object, in the order of Docker's ``HealthConfig``."""
        out: dict[str, int | list[str]] = {"Test": list(self.test)}
        for key, v in (("Interval", self.interval), ("Timeout", self.timeout),
                       ("StartPeriod", self.start_period), ("StartInterval", self.start_interval),
                       ("Retries", self.retries)):
            if v:
                out[key] = v
        return out


@frozen
class ConfigAmendments:
    """What the Engine API's create body says of ``Config`` that no ``run`` flag does, as typed
    values (``builder.api.createbody.amendments`` converts the body): applied to the record's
    ``Config`` before it is first written."""

    #: ``ExposedPorts``' keys, each with its protocol (``80`` -> ``80/tcp``)
    exposed_ports: tuple[str, ...] = ()
    #: ``Env`` as given: when an entry has no ``=`` it is recorded as is (unset in the process)
    env: tuple[str, ...] = ()
    stdin_once: bool = False
    attach_stdin: bool = False
    attach_stdout: bool = False
    attach_stderr: bool = False
    #: the primary endpoint's address, as given (checked at start); "" for none
    mac_address: str = ""
    #: a healthcheck that replaces the image's (not ``NONE``: that is ``RunOptions.no_healthcheck``)
    healthcheck: Healthcheck | None = None


def _amended(config: dict[str, Any], a: ConfigAmendments) -> dict[str, Any]:
    """The record's ``Config`` document with *a* applied (its keys where they were, a new one last)."""
    exposed = dict(config.get("ExposedPorts") or {})
    for port in a.exposed_ports:
        exposed.setdefault(port, {})
    config["ExposedPorts"] = exposed
    if any("=" not in e for e in a.env):  # dockerd keeps a bare entry: the -e entries first, …
        keys = {e.partition("=")[0] for e in a.env}
        config["Env"] = [*a.env, *(e for e in config.get("Env") or () if e.partition("=")[0] not in keys)]
    config["StdinOnce"] = a.stdin_once
    if a.mac_address:
        config["MacAddress"] = a.mac_address
    config["AttachStdin"], config["AttachStdout"], config["AttachStderr"] = (
        a.attach_stdin, a.attach_stdout, a.attach_stderr)
    if a.healthcheck is not None:
        config["Healthcheck"] = a.healthcheck.record()
    return config


def resolve_image(root: StateRoot, ref: str, *, pull: str = "missing", progress: Any = None,
                  on_pull: Callable[[str, bool], None] | None = None,
                  platform: str | None = None) -> Image:
    """The image from the store, pulled first when missing (or always) per ``--pull``;
    ``on_pull(ref, missing)`` is called just before a pull starts (the CLI says so, as Docker does)."""
    if pull not in PULL_POLICIES:
        raise ContainerError.invalid(f'invalid pull option: "{pull}": must be one of "missing", "always" or "never"')
    want = None
    if platform:
        from builder.base.platforms import wanted_platform

        want = wanted_platform(platform)
    store = root.image_store()
    if pull != "always":
        try:
            return _platform_ready(store.resolve(ref, platform=want), want, ref, pull)
        except InvalidReference as e:
            raise ContainerError.invalid(f"invalid reference format: {ref}: {e}") from None
        except NotFound:
            if pull == "never":
                raise ContainerError.not_found(f"No such image: {ref}") from None
    from registry import transfer

    if on_pull is not None:
        on_pull(ref, pull != "always")
    try:
        return _platform_ready(transfer.pull(store, ref, progress=progress, platform=want), want, ref)
    except RegistryError as e:
        raise ContainerError(f"pull of {ref} failed: {e}").with_kind(e.kind) from None


def _platform_ready(image: Image, want: Any, ref: str, pull: str | None = None) -> Image:
    """*image* checked against ``--platform`` *want*, its emulator registered when foreign."""
    from registry.model import Platform

    if want is None and image.config.platform.architecture in ("", Platform.host().architecture):
        return image
    from builder.base.platforms import foreign_ready

    return foreign_ready(image, want, ref, pull)


def memory_limits(memory_text: str | None, swap_text: str | None) -> tuple[int, int]:
    """``(Memory, MemorySwap)`` as dockerd records them: ``--memory-swap`` is memory + swap
    (``-1`` unlimited); given ``--memory`` alone, swap defaults to as much again (2 × memory)."""
    memory = parse_bytes(memory_text) if memory_text else 0
    if memory and memory < 6 * 1024 * 1024:
        raise ContainerError("Minimum memory limit allowed is 6MB")
    swap = 0
    if swap_text is not None and swap_text.strip() not in ("", "0"):
        swap = -1 if swap_text.strip() == "-1" else parse_bytes(swap_text, what="memory-swap")
    if swap and not memory:
        raise ContainerError("You should always set the Memory limit when using Memoryswap limit, see usage")
    if swap > 0 and swap < memory:
        raise ContainerError("Minimum memoryswap limit should be larger than memory limit, see usage")
    if memory and not swap:
        swap = 2 * memory
    return memory, swap


def healthcheck_config(image_hc: Mapping[str, Any] | None, o: RunOptions) -> dict[str, Any] | None:
    """The image's HEALTHCHECK overridden by ``--health-*`` flags (Docker's merge)."""
    if o.no_healthcheck:
        if o.health_cmd:
            raise ContainerError.conflict("--no-healthcheck conflicts with --health-* options")
        return {"Test": ["NONE"]}
    hc: dict[str, Any] = dict(image_hc or {})
    if o.health_cmd is not None:
        hc["Test"] = ["CMD-SHELL", o.health_cmd]
    for flag, key in (("health_interval", "Interval"), ("health_timeout", "Timeout"),
                      ("health_start_period", "StartPeriod")):
        v = getattr(o, flag)
        if v is not None:
            ns = parse_duration(v)
            if ns and ns < 1_000_000:
                raise ContainerError(f"--{flag.replace('_', '-')} cannot be less than 1ms")
            hc[key] = ns
    if o.health_retries is not None:
        if o.health_retries < 0:
            raise ContainerError("--health-retries cannot be negative")
        hc["Retries"] = o.health_retries
    return hc or None


def host_config_of(o: RunOptions) -> HostConfig:
    """The CLI's flags as the ``HostConfig`` (each flag parsed once, every value checked: a
    one-line ``ContainerError`` naming the flag otherwise). Nothing here looks at an image."""
    network = o.network or "bridge"
    port_bindings: tuple[PortBinding, ...] = ()
    if o.publish:
        from builder.network import parse_publish_all

        port_bindings = tuple(PortBinding(pm.key(), pm.host_ip, str(pm.host_port or ""))
                              for pm in parse_publish_all(o.publish))
    memory, memory_swap = memory_limits(o.memory, o.memory_swap)
    policy = RestartPolicy.parse(o.restart)
    return HostConfig(
        network_mode="default" if network == "bridge" and not o.network else network,
        endpoint=Endpoint(tuple(o.network_aliases), o.ip or ""),
        port_bindings=port_bindings,
        publish_all_ports=o.publish_all,
        restart_policy=policy,
        auto_remove=o.rm,
        binds=tuple(o.volumes),
        mounts=tuple(Mount.from_spec(parse_mount_flag(m)) for m in o.mounts),
        tmpfs=tuple((t.partition(":")[0], t.partition(":")[2]) for t in o.tmpfs),
        resources=Resources(
            memory=memory, memory_swap=memory_swap, nano_cpus=parse_cpus(o.cpus) if o.cpus else 0,
            cpu_shares=o.cpu_shares or 0, pids_limit=o.pids_limit, cpuset_cpus=o.cpuset_cpus or "",
            ulimits=tuple(Ulimit(*u) for u in parse_ulimits(o.ulimits)),
            devices=tuple(Device(*d) for d in parse_devices(o.devices)),
        ),
        readonly_rootfs=o.read_only,
        privileged=o.privileged,
        init=o.init,
        cap_add=tuple(parse_caps(o.cap_add)),
        cap_drop=tuple(parse_caps(o.cap_drop)),
        security_opt=tuple(o.security_opt),
        runtime=o.runtime or "pybuild",
        extra_hosts=tuple(parse_add_hosts(o.add_hosts)),
        dns=tuple(parse_dns(o.dns)),
        dns_search=tuple(parse_dns_search(o.dns_search)),
        dns_options=tuple(parse_dns_options(o.dns_options)),
        sysctls=tuple(parse_sysctls(o.sysctls).items()),
        shm_size=parse_shm_size(o.shm_size) if o.shm_size is not None else DEFAULT_SHM_SIZE,
        pid_mode=o.pid or "",
        console_size=o.console_size,
    )


def parse_mount_flag(text: str) -> MountSpec:
    from builder.runtime.volume.specs import parse_mount

    return parse_mount(text)


def make_container(root: StateRoot, o: RunOptions, image: Image, *, host: HostConfig,
          mounts: Sequence[MountPoint] = (),
          amend: ConfigAmendments | None = None) -> Container:
    """Validate the flags against the image and write the record (status ``created``), once:
    *host* is the container's ``HostConfig``, *amend* what the API's create body adds to the
    ``Config`` (``builder.api.createbody.amendments``)."""
    img = image.config.container_config
    # ENTRYPOINT/CMD: --entrypoint resets the image's CMD too (Docker's rule)
    if o.entrypoint is not None:
        if isinstance(o.entrypoint, tuple):
            entrypoint = list(o.entrypoint)
        else:
            entrypoint = [o.entrypoint] if o.entrypoint else []
        cmd = list(o.command)
    else:
        entrypoint = list(img.entrypoint or ())
        cmd = list(o.command) if o.command else list(img.cmd or ())
    argv = entrypoint + cmd
    if not argv:
        raise ContainerError("no command specified")
    env_extra = []
    for f in o.env_files:
        env_extra += read_env_file(f, environ=o.environ)
    env_extra += parse_env(o.env, environ=o.environ)
    # dockerd's record: the -e/--env-file entries first, then the image's ENV they leave alone;
    # PATH, HOSTNAME and TERM are the process's (runtime.process_env), never stored
    env = merge_env([], env_extra)
    given = {e.partition("=")[0] for e in env}
    env += [e for e in img.env or () if e.partition("=")[0] not in given]
    labels = dict(img.labels or {})
    labels.update(parse_labels(o.labels))
    stop_signal = o.stop_signal or img.stop_signal or None
    if stop_signal:
        parse_signal(stop_signal)
    if o.stop_timeout is not None and o.stop_timeout < -1:
        raise ContainerError.invalid(f"invalid --stop-timeout {o.stop_timeout}")
    caps = None
    if host.security_opt and not host.privileged:  # a seccomp=FILE is compiled now, for these caps
        from builder.core.sandbox.spec import capabilities

        caps = capabilities(tuple(x.removeprefix("CAP_") for x in host.cap_add),
                            tuple(x.removeprefix("CAP_") for x in host.cap_drop))
    security_opt = security_opts_for_record(host.security_opt, caps=caps, cache_dir=root.cache / "seccomp")
    if tuple(security_opt) != host.security_opt:
        host = replace(host, security_opt=tuple(security_opt))
    exposed: dict[str, Any] = {k: {} for k in img.exposed_ports or ()}
    network = host.network
    # dockerd 20.10 takes -p/-P with --network none: the bindings are kept in HostConfig and
    # nothing is published (NetworkSettings.Ports stays empty)
    if o.hostname and (network == "host" or network.startswith("container:")):
        raise ContainerError.conflict("conflicting options: hostname and the network mode")
    for b in host.port_bindings:
        exposed.setdefault(b.port, {})
    healthcheck = healthcheck_config(img.healthcheck, o)
    # what only this host can refuse: CPUs it has not, a hard limit we cannot raise, a device not here
    host.resources.check_host()
    check_ulimits((u.name, u.hard) for u in host.resources.ulimits)
    device_nodes((d.path_on_host, d.path_in_container, d.permissions) for d in host.resources.devices)
    created = rfc3339nano()

    def make(cid: str, name: str) -> Container:
        hostname = o.hostname or (os.uname().nodename if network == "host" else cid[:12])
        config: dict[str, Any] = {
            "Hostname": hostname,
            "User": o.user if o.user is not None else img.user or "",
            "Domainname": "",
            "Env": env or None,
            "Cmd": cmd or None,
            "Entrypoint": entrypoint or None,
            "WorkingDir": o.workdir if o.workdir is not None else img.working_dir or "",
            "Image": o.image,
            "Labels": labels,
            "Tty": o.tty,
            "OpenStdin": o.interactive,
            "AttachStdin": o.interactive and not o.detach,
            "AttachStdout": not o.detach,
            "AttachStderr": not o.detach,
            "StdinOnce": o.interactive and not o.detach,
            "StopSignal": stop_signal,
            "StopTimeout": o.stop_timeout,
            "ExposedPorts": exposed or None,
            # the image's VOLUMEs and the anonymous ``-v /path`` ones, as dockerd records them
            "Volumes": {**{v: {} for v in img.volumes or ()},
                        **{m.destination: {} for m in mounts if m.type == "volume" and m.anonymous}} or None,
            "Healthcheck": healthcheck,
        }
        if amend is not None:
            config = _amended(config, amend)
        return Container(
            id=cid,
            name=name,
            created=created,
            image=o.image,
            image_id=str(image.id),
            path=argv[0],
            args=tuple(argv[1:]),
            config=ContainerConfig.from_json(config),
            host_config=host,
            mounts=tuple(mounts),
            state=State(),
        )

    return ContainerStore(root).create(make, name=o.name)
