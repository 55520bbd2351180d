"""The body of ``POST /containers/create``, mapped at this JSON edge: ``Config`` as the
``RunOptions`` of ``pybuild run`` (``run_options``), ``HostConfig`` + ``NetworkingConfig``
straight into the typed ``HostConfig`` (``host_config``), and what the body adds to the
record's ``Config`` that no flag says (``amendments``: a ``ConfigAmendments``); ``volumes_from``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from builder.api.errors import bad_request
from builder.base.values import json_object
from builder.runtime.containers.options import (
    DEFAULT_SHM_SIZE,
    RestartPolicy,
    check_sysctls,
    parse_add_hosts,
    parse_caps,
    parse_dns,
    parse_dns_options,
    parse_dns_search,
)

if TYPE_CHECKING:
    from builder.base.state import StateRoot
    from builder.runtime.containers.create import ConfigAmendments, Healthcheck, RunOptions
    from builder.runtime.containers.hostconfig import Endpoint, HostConfig


def _strings(v: Any, what: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        return (v,)
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise bad_request(f"invalid {what}: a list of strings is expected")
    return tuple(v)


def _volumes(body: Mapping[str, Any], hc: Mapping[str, Any]) -> tuple[str, ...]:
    """``Binds``, then the anonymous volumes of ``Config.Volumes`` (the CLI's ``-v /path``)
    that no bind or mount already serves, as ``-v`` texts."""
    binds = _strings(hc.get("Binds"), "Binds")
    taken = {b.split(":")[1] if ":" in b else b for b in binds}
    taken |= {str(m.get("Target") or "") for m in hc.get("Mounts") or ()}
    anonymous = tuple(str(v) for v in body.get("Volumes") or {} if str(v) not in taken)
    return binds + anonymous


def run_options(body: Mapping[str, Any], name: str | None) -> RunOptions:
    """The create body's ``Config`` part as ``RunOptions`` (the host part: ``host_config``)."""
    from builder.runtime.containers.create import RunOptions

    image = body.get("Image")
    if not image or not isinstance(image, str):
        raise bad_request("config.Image is required: no image given")
    entrypoint = body.get("Entrypoint")
    attached = bool(body.get("AttachStdout") or body.get("AttachStderr") or body.get("AttachStdin"))
    return RunOptions(
        image=image,
        command=_strings(body.get("Cmd"), "Cmd"),
        name=name,
        detach=not attached,
        env=_strings(body.get("Env"), "Env"),
        workdir=body.get("WorkingDir") or None,
        user=body.get("User") if body.get("User") else None,
        entrypoint=None if entrypoint is None else _strings(entrypoint, "Entrypoint"),
        interactive=bool(body.get("OpenStdin")),
        tty=bool(body.get("Tty")),
        hostname=body.get("Hostname") or None,
        stop_signal=body.get("StopSignal") or None,
        stop_timeout=body.get("StopTimeout"),
        labels=tuple(f"{k}={v}" for k, v in (body.get("Labels") or {}).items()),
        pull="never",  # Docker's API never pulls on create: the client pulls and retries
        no_healthcheck=_health_test(body) == ("NONE",),
        environ={},
    )


def _endpoint(body: Mapping[str, Any], network: str) -> tuple[str, Endpoint]:
    """The network mode (the first ``EndpointsConfig`` entry's when ``NetworkMode`` is unset)
    and the attachment to it (aliases, IPv4 address)."""
    from builder.runtime.containers.hostconfig import Endpoint

    endpoints = (body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
    aliases: tuple[str, ...] = ()
    ip = ""
    for net_name, conf in endpoints.items():
        if conf is None:
            continue
        if not network:
            network = net_name
        if net_name == (network or "bridge"):
            aliases = _strings(conf.get("Aliases"), "Aliases")
            ip = str((conf.get("IPAMConfig") or {}).get("IPv4Address") or "")
    return network, Endpoint(aliases, ip)


def host_config(body: Mapping[str, Any], binds_from: tuple[str, ...] = ()) -> HostConfig:
    """The create body's ``HostConfig`` (with ``NetworkingConfig`` and the anonymous volumes of
    ``Config.Volumes``) as the typed value, field by field; *binds_from*: what ``VolumesFrom``
    gives. A value of the wrong shape or refused by the value's own checks is a 400."""
    from builder.runtime.containers.hostconfig import (
        FIELD_KEYS,
        Device,
        HostConfig,
        LogConfig,
        Mount,
        Resources,
        Ulimit,
        port_bindings_from_json,
    )
    from builder.runtime.containers.inspect import HOST_CONFIG_ZERO
    hc: Mapping[str, Any] = body.get("HostConfig") or {}
    if not isinstance(hc, Mapping):
        raise bad_request("invalid HostConfig: an object is expected")
    try:
        mode = str(hc.get("NetworkMode") or "")
        network, endpoint = _endpoint(body, "" if mode == "default" else mode)
        memory, swap = int(hc.get("Memory") or 0), int(hc.get("MemorySwap") or 0)
        runtime = hc.get("Runtime")
        size = hc.get("ConsoleSize")
        other = json_object({key: hc[key] for key, _zero in HOST_CONFIG_ZERO
                             if key not in FIELD_KEYS and hc.get(key) not in (None, "", 0, [], {})})
        return HostConfig(
            network_mode=network or "default",
            endpoint=endpoint,
            port_bindings=port_bindings_from_json(hc.get("PortBindings")),
            publish_all_ports=bool(hc.get("PublishAllPorts")),
            restart_policy=RestartPolicy.from_json(hc.get("RestartPolicy")),
            auto_remove=bool(hc.get("AutoRemove")),
            binds=_volumes(body, hc) + binds_from,
            mounts=tuple(Mount.from_json(m) for m in hc.get("Mounts") or ()),
            tmpfs=tuple((str(k), str(v or "")) for k, v in (hc.get("Tmpfs") or {}).items()),
            resources=Resources(
                memory=memory, memory_swap=swap or 2 * memory, nano_cpus=int(hc.get("NanoCpus") or 0),
                cpu_shares=int(hc.get("CpuShares") or 0),
                pids_limit=int(hc["PidsLimit"]) if hc.get("PidsLimit") else None,
                cpuset_cpus=str(hc.get("CpusetCpus") or ""),
                ulimits=tuple(Ulimit.from_json(u) for u in hc.get("Ulimits") or ()),
                devices=tuple(Device.from_json(d) for d in hc.get("Devices") or ()),
            ),
            readonly_rootfs=bool(hc.get("ReadonlyRootfs")),
            privileged=bool(hc.get("Privileged")),
            init=bool(hc.get("Init")),
            cap_add=tuple(parse_caps(_strings(hc.get("CapAdd"), "CapAdd"))),
            cap_drop=tuple(parse_caps(_strings(hc.get("CapDrop"), "CapDrop"))),
            security_opt=_strings(hc.get("SecurityOpt"), "SecurityOpt"),
            runtime=str(runtime) if runtime not in (None, "", "runc", "pybuild") else "pybuild",
            extra_hosts=tuple(parse_add_hosts(_strings(hc.get("ExtraHosts"), "ExtraHosts"))),
            dns=tuple(parse_dns(_strings(hc.get("Dns"), "Dns"))),
            dns_search=tuple(parse_dns_search(_strings(hc.get("DnsSearch"), "DnsSearch"))),
            dns_options=tuple(parse_dns_options(_strings(hc.get("DnsOptions"), "DnsOptions"))),
            sysctls=tuple(check_sysctls((str(k), str(v)) for k, v in (hc.get("Sysctls") or {}).items()).items()),
            shm_size=int(hc.get("ShmSize") or 0) or DEFAULT_SHM_SIZE,
            group_add=_strings(hc.get("GroupAdd"), "GroupAdd"),
            pid_mode=str(hc.get("PidMode") or ""),
            uts_mode=str(hc.get("UTSMode") or ""),
            links=_strings(hc.get("Links"), "Links"),
            volumes_from=_strings(hc.get("VolumesFrom"), "VolumesFrom"),
            log_config=LogConfig.from_json(hc.get("LogConfig")),
            console_size=(int(size[0]), int(size[1])) if size else None,
            other=other,
        )
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise bad_request(f"invalid HostConfig: {type(e).__name__}: {e}") from None


def _bool(body: Mapping[str, Any], key: str) -> bool:
    v = body.get(key)
    if v is not None and not isinstance(v, bool):
        raise bad_request(f"invalid {key}: a boolean is expected")
    return bool(v)


def _health_object(body: Mapping[str, Any]) -> Mapping[str, Any]:
    v = body.get("Healthcheck")
    if v is not None and not isinstance(v, Mapping):
        raise bad_request("invalid Healthcheck: an object is expected")
    return v or {}


def _health_test(body: Mapping[str, Any]) -> tuple[str, ...]:
    test = _health_object(body).get("Test")
    if test is not None and (not isinstance(test, list) or not all(isinstance(x, str) for x in test)):
        raise bad_request("invalid Healthcheck.Test: a list of strings is expected")
    return tuple(test or ())


def _healthcheck(body: Mapping[str, Any]) -> Healthcheck | None:
    """``Config.Healthcheck`` as the typed value (checked as dockerd checks it: durations of 0 or
    at least 1ms, retries not negative); None when it gives no test or ``NONE`` (the image's
    stays, or ``run_options`` turns it off)."""
    from builder.runtime.containers.create import Healthcheck

    if body.get("Healthcheck") is None:
        return None
    v, test = _health_object(body), _health_test(body)
    numbers: dict[str, int] = {}
    for key in ("Interval", "Timeout", "StartPeriod", "StartInterval", "Retries"):
        n = v.get(key)
        if n is not None and (not isinstance(n, int) or isinstance(n, bool)):
            raise bad_request(f"invalid Healthcheck.{key}: an integer is expected")
        numbers[key] = n or 0
    hc = Healthcheck(test, interval=numbers["Interval"], timeout=numbers["Timeout"],
                     start_period=numbers["StartPeriod"], start_interval=numbers["StartInterval"],
                     retries=numbers["Retries"])
    return None if test in ((), ("NONE",)) else hc


def amendments(body: Mapping[str, Any]) -> ConfigAmendments:
    """What the create body says of ``Config`` that no ``run`` flag does (exposed ports,
    stdin-once, attach flags, a healthcheck given as data, the MAC address, bare ``Env``
    entries) as the typed value ``create.make_container`` applies; a value of the wrong type is a 400
    naming its field."""
    from builder.runtime.containers.create import ConfigAmendments

    ports = body.get("ExposedPorts")
    if ports is not None and not isinstance(ports, Mapping):
        raise bad_request("invalid ExposedPorts: an object is expected")
    mac = body.get("MacAddress")
    if mac is not None and not isinstance(mac, str):
        raise bad_request("invalid MacAddress: a string is expected")
    return ConfigAmendments(
        exposed_ports=tuple(str(k) if "/" in str(k) else f"{k}/tcp" for k in ports or {}),
        env=_strings(body.get("Env"), "Env"),
        stdin_once=_bool(body, "StdinOnce"),
        attach_stdin=_bool(body, "AttachStdin"),
        attach_stdout=_bool(body, "AttachStdout"),
        attach_stderr=_bool(body, "AttachStderr"),
        mac_address=mac or "",
        healthcheck=_healthcheck(body),
    )


def check_links(root: StateRoot, host: HostConfig) -> None:
    """Each ``Links`` entry names a container (dockerd: 400 at create otherwise)."""
    from builder.runtime.containers import lifecycle, links
    from builder.runtime.containers.record import NoSuchContainer

    for link in host.links:
        name, _alias = links.split(link)
        try:
            lifecycle.get(root, name)
        except NoSuchContainer as e:
            raise bad_request(f"could not get container for {name}: {e}") from None


def volumes_from(root: StateRoot, refs: Any) -> tuple[str, ...]:
    """``HostConfig.VolumesFrom`` (``name[:ro|:rw]``): the other containers' volumes and bind
    mounts at the same places, as ``-v`` texts (read-only if asked, else as they have them)."""
    from builder.runtime.containers import lifecycle
    from builder.runtime.containers.record import NoSuchContainer

    out: list[str] = []
    for ref in _strings(refs, "VolumesFrom"):
        name, _, mode = ref.partition(":")
        if mode not in ("", "ro", "rw"):
            raise bad_request(f"invalid mode for volumes-from: {mode}")
        try:
            other = lifecycle.get(root, name)
        except NoSuchContainer as e:  # dockerd: 400 at create, not 404
            raise bad_request(str(e)) from None
        for m in other.mounts:
            dest, kind = m.destination, m.type
            source = m.name if kind == "volume" else m.source
            if not dest or not source or kind not in ("volume", "bind"):
                continue
            rw = mode == "rw" or (mode == "" and m.rw)
            out.append(f"{source}:{dest}" + ("" if rw else ":ro"))
    return tuple(out)
