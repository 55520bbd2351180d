"""``run``/``create``: from the parsed flags and the image's config to a container record, the
way Docker combines them (ENTRYPOINT/CMD interplay, ENV, WORKDIR, USER, EXPOSE, VOLUME, …).

Nothing is started here; the record is written complete (status ``created``) or not at all.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from builder.containers.options import (
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
    security_opts_for_record,
)
from builder.containers.record import Container, ContainerStore, State
from builder.errors import ContainerError
from builder.state import StateRoot
from registry.config import ContainerConfig

if TYPE_CHECKING:
    from registry.store import Image

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PULL_POLICIES = ("missing", "always", "never")


@dataclass(frozen=True)
class RunOptions:
    """Every ``run``/``create`` flag, as given (parsing and validation happen in ``create``)."""

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
    #: image lacks it); a foreign one runs through the emulator (``builder.binfmt``)
    platform: str | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))


def resolve_image(root: StateRoot, ref: str, *, pull: str = "missing", progress: Any = None,
                  on_pull: Callable[[str, bool], None] | None = None,
                  platform: str | None = None) -> Image:
    """The image from the store, pulled first when missing (or always) per ``--pull``;
    ``on_pull(ref, missing)`` is called just before a pull starts (the CLI says so, as Docker does)."""
    from registry.errors import InvalidReference, NotFound, RegistryError

    if pull not in PULL_POLICIES:
        raise ContainerError.invalid(f'invalid pull option: "{pull}": must be one of "missing", "always" or "never"')
    want = None
    if platform:
        from builder.platforms import wanted_platform

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
    from builder.platforms import foreign_ready

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


def host_options(o: RunOptions, network: str) -> dict[str, Any]:
    """``HostConfig`` entries of the name-resolution, limit, sysctl, shm and device flags, in
    Docker's shapes, checked against the network mode and this host (a hard limit we cannot
    raise, a device that is not there are refused now, before any record exists)."""
    extra_hosts = parse_add_hosts(o.add_hosts)
    dns = parse_dns(o.dns)
    ulimits = parse_ulimits(o.ulimits)
    sysctls = parse_sysctls(o.sysctls)
    devices = parse_devices(o.devices)
    if network.startswith("container:"):
        if dns or o.dns_search or o.dns_options:
            raise ContainerError.conflict("conflicting options: dns and the network mode")
        if extra_hosts:
            raise ContainerError.conflict("conflicting options: custom host-to-IP mapping and the network mode")
    if network == "host":
        for key in sysctls:
            if key.startswith("net."):
                raise ContainerError(f'sysctl "{key}" not allowed in host network namespace')
    check_ulimits(ulimits)
    device_nodes(devices)
    out: dict[str, Any] = {
        "ExtraHosts": extra_hosts or None,
        "Dns": dns,
        "DnsSearch": parse_dns_search(o.dns_search),
        "DnsOptions": parse_dns_options(o.dns_options),
        "Ulimits": ulimits or None,
        "ShmSize": parse_shm_size(o.shm_size) if o.shm_size is not None else DEFAULT_SHM_SIZE,
        "Devices": devices,
    }
    if sysctls:
        out["Sysctls"] = sysctls
    return out


def validate_host_options(o: RunOptions) -> None:
    """The syntax of those flags, before any image is looked at."""
    parse_add_hosts(o.add_hosts)
    parse_dns(o.dns)
    parse_dns_search(o.dns_search)
    parse_dns_options(o.dns_options)
    parse_ulimits(o.ulimits)
    parse_sysctls(o.sysctls)
    parse_devices(o.devices)
    if o.shm_size is not None:
        parse_shm_size(o.shm_size)


def build(root: StateRoot, o: RunOptions, image: Image, *, mounts: Sequence[Mapping[str, Any]] = ()) -> Container:
    """Validate the flags against the image and write the record (status ``created``)."""
    policy = RestartPolicy.parse(o.restart)
    if o.rm and policy.name != "no":
        raise ContainerError.conflict("Conflicting options: --restart and --rm")
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
    memory, memory_swap = memory_limits(o.memory, o.memory_swap)
    nano_cpus = parse_cpus(o.cpus) if o.cpus else 0
    if nano_cpus and nano_cpus > (os.cpu_count() or 1) * 10**9:
        raise ContainerError(
            f"range of CPUs is from 0.01 to {os.cpu_count() or 1}.00, as there are only {os.cpu_count() or 1} CPUs available"
        )
    cap_add = parse_caps(o.cap_add)
    cap_drop = parse_caps(o.cap_drop)
    caps = None
    if o.security_opt and not o.privileged:  # a seccomp=FILE is compiled now, for these caps
        from builder.sandbox.spec import capabilities

        caps = capabilities(tuple(x.removeprefix("CAP_") for x in cap_add),
                            tuple(x.removeprefix("CAP_") for x in cap_drop))
    security_opt = security_opts_for_record(o.security_opt, caps=caps, cache_dir=root.cache / "seccomp")
    exposed: dict[str, Any] = {k: {} for k in img.exposed_ports or ()}
    network = o.network or "bridge"
    if network.startswith("container:") and (o.publish or o.publish_all):
        raise ContainerError.conflict("conflicting options: port publishing and the container type network mode")
    # dockerd 20.10 takes -p/-P with --network none: the bindings are kept in HostConfig and
    # nothing is published (NetworkSettings.Ports stays empty)
    if o.network_aliases and network in ("bridge", "host", "none"):
        raise ContainerError("network-scoped aliases are supported for user-defined networks only")
    if o.hostname and (network == "host" or network.startswith("container:")):
        raise ContainerError.conflict("conflicting options: hostname and the network mode")
    port_maps = []
    if o.publish:
        from builder.network import parse_publish_all

        port_maps = parse_publish_all(o.publish)
    for pm in port_maps:
        exposed.setdefault(pm.key(), {})
    healthcheck = healthcheck_config(img.healthcheck, o)
    host = host_options(o, network)
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
                        **{str(m["Destination"]): {} for m in mounts
                           if m.get("Type") == "volume" and m.get("Anonymous")}} or None,
            "Healthcheck": healthcheck,
        }
        host_config: dict[str, Any] = {
            "AutoRemove": o.rm,
            "RestartPolicy": policy.to_json(),
            "NetworkMode": "default" if network == "bridge" and not o.network else network,
            "PortBindings": {
                pm.key(): [{"HostIp": pm.host_ip, "HostPort": str(pm.host_port or "")}]
                for pm in port_maps
            },
            "PublishAllPorts": o.publish_all,
            "Binds": list(o.volumes),
            "Mounts": list(o.mounts),
            "Tmpfs": {t.partition(":")[0]: t.partition(":")[2] for t in o.tmpfs},
            "Memory": memory,
            "MemorySwap": memory_swap,
            "NanoCpus": nano_cpus,
            "CpuShares": o.cpu_shares or 0,
            "PidsLimit": o.pids_limit,
            "ReadonlyRootfs": o.read_only,
            "CapAdd": cap_add,
            "CapDrop": cap_drop,
            "Privileged": o.privileged,
            "SecurityOpt": security_opt or None,
            "Init": o.init,
            "Runtime": o.runtime or "pybuild",
            "NetworkAliases": list(o.network_aliases),
            "IPAddress": o.ip or "",
            "PublishSpecs": list(o.publish),
            **host,
        }
        if o.console_size:
            host_config["ConsoleSize"] = list(o.console_size)
        return Container(
            id=cid,
            name=name,
            created=created,
            image=o.image,
            image_id=str(image.id),
            path=argv[0],
            args=tuple(argv[1:]),
            config=ContainerConfig.from_json(config),
            host_config=host_config,
            mounts=tuple(dict(m) for m in mounts),
            state=State(),
        )

    return ContainerStore(root).create(make, name=o.name)
