"""The body of ``POST /containers/create`` (Config + HostConfig + NetworkingConfig) as the
``RunOptions`` of ``pybuild run``, and what the record keeps that no flag says
(``finish_config``: exposed ports, attach flags, a healthcheck as data, dockerd's other
HostConfig fields, ``LogConfig``, bare ``Env`` entries); ``volumes_from``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from builder.serve.errors import bad_request

if TYPE_CHECKING:
    from builder.containers.record import Container
    from builder.state import StateRoot


def _strings(v: Any, what: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        return (v,)
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise bad_request(f"invalid {what}: a list of strings is expected")
    return tuple(v)


def _host_flags(hc: Mapping[str, Any]) -> dict[str, Any]:
    """``ExtraHosts``, ``Dns*``, ``Ulimits``, ``Sysctls``, ``ShmSize``, ``Devices`` as the
    ``run`` flag texts ``RunOptions`` takes (the library checks them as it checks the CLI's)."""
    try:
        return {
            "add_hosts": _strings(hc.get("ExtraHosts"), "ExtraHosts"),
            "dns": _strings(hc.get("Dns"), "Dns"),
            "dns_search": _strings(hc.get("DnsSearch"), "DnsSearch"),
            "dns_options": _strings(hc.get("DnsOptions"), "DnsOptions"),
            "ulimits": tuple(f"{u['Name']}={int(u['Soft'])}:{int(u['Hard'])}" for u in hc.get("Ulimits") or ()),
            "sysctls": tuple(f"{k}={v}" for k, v in (hc.get("Sysctls") or {}).items()),
            "shm_size": str(int(hc["ShmSize"])) if hc.get("ShmSize") else None,
            "devices": tuple(f"{d['PathOnHost']}:{d.get('PathInContainer') or d['PathOnHost']}:"
                             f"{d.get('CgroupPermissions') or 'rwm'}" for d in hc.get("Devices") or ()),
        }
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise bad_request(f"invalid HostConfig: {type(e).__name__}: {e}") from None


def _mount_spec(m: Mapping[str, Any]) -> str:
    """A ``HostConfig.Mounts`` object as the ``--mount`` text the library parses."""
    typ = str(m.get("Type") or "volume")
    parts = [f"type={typ}"]
    if m.get("Source"):
        parts.append(f"source={m['Source']}")
    if not m.get("Target"):
        raise bad_request("invalid mount config: Target must not be empty")
    parts.append(f"target={m['Target']}")
    if m.get("ReadOnly"):
        parts.append("readonly")
    bind = m.get("BindOptions") or {}
    if bind.get("Propagation"):
        parts.append(f"bind-propagation={bind['Propagation']}")
    vol = m.get("VolumeOptions") or {}
    if vol.get("NoCopy"):
        parts.append("volume-nocopy")
    tmpfs = m.get("TmpfsOptions") or {}
    if tmpfs.get("SizeBytes"):
        parts.append(f"tmpfs-size={tmpfs['SizeBytes']}")
    if tmpfs.get("Mode"):
        parts.append(f"tmpfs-mode={int(tmpfs['Mode']):o}")
    return ",".join(parts)


def _volumes(body: Mapping[str, Any], hc: Mapping[str, Any]) -> tuple[str, ...]:
    """``Binds``, then the anonymous volumes of ``Config.Volumes`` (the CLI's ``-v /path``)
    that no bind or mount already serves, as ``-v`` texts."""
    binds = _strings(hc.get("Binds"), "Binds")
    taken = {b.split(":")[1] if ":" in b else b for b in binds}
    taken |= {str(m.get("Target") or "") for m in hc.get("Mounts") or ()}
    anonymous = tuple(str(v) for v in body.get("Volumes") or {} if str(v) not in taken)
    return binds + anonymous


def run_options(body: Mapping[str, Any], name: str | None) -> Any:
    """Docker's create body (Config + HostConfig + NetworkingConfig) as ``RunOptions``."""
    from builder.containers.create import RunOptions

    hc: Mapping[str, Any] = body.get("HostConfig") or {}
    image = body.get("Image")
    if not image or not isinstance(image, str):
        raise bad_request("config.Image is required: no image given")
    entrypoint = body.get("Entrypoint")
    ep_argv: tuple[str, ...] | None
    if entrypoint is None:
        ep_argv = None
    else:
        ep_argv = _strings(entrypoint, "Entrypoint")
    publish = []
    for key, bindings in (hc.get("PortBindings") or {}).items():
        port = key if "/" in key else f"{key}/tcp"
        for b in bindings or [{}]:
            host_ip = (b or {}).get("HostIp") or ""
            host_port = (b or {}).get("HostPort") or ""
            spec = port
            if host_port or host_ip:
                spec = f"{host_port}:{port}"
                if host_ip:
                    spec = f"{host_ip}:{spec}"
            publish.append(spec)
    rp = hc.get("RestartPolicy") or {}
    restart = str(rp.get("Name") or "no")
    if restart == "on-failure" and rp.get("MaximumRetryCount"):
        restart += f":{int(rp['MaximumRetryCount'])}"
    network = str(hc.get("NetworkMode") or "")
    if network == "default":
        network = ""
    aliases: tuple[str, ...] = ()
    ip = None
    endpoints = (body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
    for net_name, conf in endpoints.items():
        if conf is None:
            continue
        if not network:
            network = net_name
        if net_name == (network or "bridge"):
            aliases = _strings(conf.get("Aliases"), "Aliases")
            ip = ((conf.get("IPAMConfig") or {}).get("IPv4Address")) or None
    tmpfs = tuple(f"{k}:{v}" if v else k for k, v in (hc.get("Tmpfs") or {}).items())
    labels = tuple(f"{k}={v}" for k, v in (body.get("Labels") or {}).items())
    hcheck = body.get("Healthcheck") or {}
    nano_cpus = int(hc.get("NanoCpus") or 0)
    attached = bool(body.get("AttachStdout") or body.get("AttachStderr") or body.get("AttachStdin"))
    return RunOptions(
        image=image,
        command=_strings(body.get("Cmd"), "Cmd"),
        name=name,
        detach=not attached,
        rm=bool(hc.get("AutoRemove")),
        env=_strings(body.get("Env"), "Env"),
        volumes=_volumes(body, hc),
        mounts=tuple(_mount_spec(m) for m in hc.get("Mounts") or ()),
        tmpfs=tmpfs,
        publish=tuple(publish),
        publish_all=bool(hc.get("PublishAllPorts")),
        network=network,
        network_aliases=aliases,
        ip=ip,
        workdir=body.get("WorkingDir") or None,
        user=body.get("User") if body.get("User") else None,
        entrypoint=ep_argv,
        interactive=bool(body.get("OpenStdin")),
        tty=bool(body.get("Tty")),
        hostname=body.get("Hostname") or None,
        memory=str(hc["Memory"]) if hc.get("Memory") else None,
        memory_swap=str(hc["MemorySwap"]) if hc.get("MemorySwap") else None,
        cpu_shares=int(hc["CpuShares"]) if hc.get("CpuShares") else None,
        cpus=str(nano_cpus / 1e9) if nano_cpus else None,
        pids_limit=int(hc["PidsLimit"]) if hc.get("PidsLimit") else None,
        read_only=bool(hc.get("ReadonlyRootfs")),
        cap_add=_strings(hc.get("CapAdd"), "CapAdd"),
        cap_drop=_strings(hc.get("CapDrop"), "CapDrop"),
        privileged=bool(hc.get("Privileged")),
        init=bool(hc.get("Init")),
        restart=restart,
        stop_signal=body.get("StopSignal") or None,
        stop_timeout=body.get("StopTimeout"),
        labels=labels,
        pull="never",  # Docker's API never pulls on create: the client pulls and retries
        health_cmd=None,
        no_healthcheck=list(hcheck.get("Test") or []) == ["NONE"],
        runtime=hc.get("Runtime") if hc.get("Runtime") not in (None, "", "runc", "pybuild") else None,
        **_host_flags(hc),
        environ={},
    ), hcheck, body


def finish_config(root: StateRoot, c: Container, body: Mapping[str, Any], hcheck: Mapping[str, Any]) -> Container:
    """What the create body says that ``run`` flags cannot: exposed ports, stdin-once, attach
    flags and a healthcheck given as data (written into the record before anyone starts it)."""
    from dataclasses import replace

    from builder.containers.inspect import HOST_CONFIG_ZERO
    from builder.containers.record import ContainerStore
    from registry.config import ContainerConfig

    config = c.config.to_json()
    exposed = dict(config.get("ExposedPorts") or {})
    for k in body.get("ExposedPorts") or {}:
        exposed.setdefault(k if "/" in k else f"{k}/tcp", {})
    config["ExposedPorts"] = exposed
    # an Env entry with no ``=`` is kept, as dockerd records it (unset in the process)
    given = [str(e) for e in body.get("Env") or ()]
    if any("=" not in e for e in given):
        keys = {e.partition("=")[0] for e in given}
        config["Env"] = given + [e for e in config.get("Env") or ()
                                 if e.partition("=")[0] not in keys]
    config["StdinOnce"] = bool(body.get("StdinOnce"))
    if body.get("MacAddress"):  # the primary endpoint's address, as given (checked at start)
        config["MacAddress"] = str(body["MacAddress"])
    for k in ("AttachStdin", "AttachStdout", "AttachStderr"):
        config[k] = bool(body.get(k))
    if hcheck and list(hcheck.get("Test") or []) not in ([], ["NONE"]):
        config["Healthcheck"] = {k: v for k, v in hcheck.items() if v not in (None, 0) or k == "Test"}
    # dockerd's HostConfig fields the record has no flag for, kept as the client gave them so
    # inspect reports them (``VolumesFrom``, ``GroupAdd``, ``CpusetCpus``, ``UTSMode``…)
    hc = body.get("HostConfig") or {}
    host = dict(c.host_config)
    for key, _zero in HOST_CONFIG_ZERO:
        if key not in host and hc.get(key) not in (None, "", 0, [], {}):
            host[key] = hc[key]
    if "LogConfig" in hc and hc["LogConfig"]:
        host["LogConfig"] = {"Type": str(hc["LogConfig"].get("Type") or "json-file"),
                             "Config": dict(hc["LogConfig"].get("Config") or {})}
    updated = replace(c, config=ContainerConfig.from_json(config), host_config=host)
    ContainerStore(root).save_config(updated)
    return updated



def volumes_from(root: StateRoot, refs: Any) -> tuple[str, ...]:
    """``HostConfig.VolumesFrom`` (``name[:ro|:rw]``): the other containers' volumes and bind
    mounts at the same places, as ``-v`` texts (read-only if asked, else as they have them)."""
    from builder.containers import lifecycle
    from builder.containers.record import NoSuchContainer

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
            dest, kind = str(m.get("Destination") or ""), m.get("Type")
            source = m.get("Name") if kind == "volume" else m.get("Source")
            if not dest or not source or kind not in ("volume", "bind"):
                continue
            rw = mode == "rw" or (mode == "" and m.get("RW", True))
            out.append(f"{source}:{dest}" + ("" if rw else ":ro"))
    return tuple(out)
