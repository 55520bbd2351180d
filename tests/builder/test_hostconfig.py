"""The typed ``HostConfig`` (issue 21): one value built from the CLI's flags or the Engine API's
JSON, checked in its constructors, stored in the container record and read back (records of
earlier versions included). No sandbox needed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from builder.api.createbody import host_config
from builder.base.errors import ContainerError, VolumeError
from builder.runtime.containers.create import RunOptions, host_config_of
from builder.runtime.containers.hostconfig import (
    Device,
    Endpoint,
    HostConfig,
    Mount,
    PortBinding,
    Resources,
    Ulimit,
)
from builder.runtime.containers.options import RestartPolicy
from builder.runtime.containers.record import Container
from registry.config import ContainerConfig
from registry.kinds import ErrorKind

FLAGS = RunOptions(
    image="busybox", network="appnet", network_aliases=("www",), ip="10.1.2.3",
    publish=("8080:80", "127.0.0.1::53/udp"), restart="on-failure:3",
    volumes=("/srv:/data:ro",), mounts=("type=tmpfs,target=/scratch,tmpfs-size=1m",),
    tmpfs=("/run:size=64k",), memory="64m", cpus="0.5", cpu_shares=512, pids_limit=50,
    cpuset_cpus="0", ulimits=("nofile=512:1024",), cap_add=("NET_ADMIN",), cap_drop=("MKNOD",),
    add_hosts=("db:10.0.0.9",), dns=("9.9.9.9",), sysctls=("net.ipv4.ip_forward=1",),
    shm_size="128m", pid="host", read_only=True, init=True, environ={},
)
#: the same, as docker-py sends it
BODY: dict[str, Any] = {
    "Image": "busybox",
    "HostConfig": {
        "NetworkMode": "appnet", "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}],
                                                 "53/udp": [{"HostIp": "127.0.0.1", "HostPort": ""}]},
        "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3},
        "Binds": ["/srv:/data:ro"],
        "Mounts": [{"Type": "tmpfs", "Target": "/scratch", "TmpfsOptions": {"SizeBytes": 1048576}}],
        "Tmpfs": {"/run": "size=64k"}, "Memory": 64 << 20, "NanoCpus": 500_000_000, "CpuShares": 512,
        "PidsLimit": 50, "CpusetCpus": "0", "Ulimits": [{"Name": "nofile", "Soft": 512, "Hard": 1024}],
        "CapAdd": ["NET_ADMIN"], "CapDrop": ["MKNOD"], "ExtraHosts": ["db:10.0.0.9"], "Dns": ["9.9.9.9"],
        "Sysctls": {"net.ipv4.ip_forward": "1"}, "ShmSize": 128 << 20, "PidMode": "host",
        "ReadonlyRootfs": True, "Init": True,
    },
    "NetworkingConfig": {"EndpointsConfig": {"appnet": {"Aliases": ["www"],
                                                        "IPAMConfig": {"IPv4Address": "10.1.2.3"}}}},
}


def test_flags_and_api_json_give_the_same_value() -> None:
    cli = host_config_of(FLAGS)
    api = host_config(BODY)
    assert cli == api
    assert cli.network == "appnet" and cli.endpoint == Endpoint(("www",), "10.1.2.3")
    assert cli.port_bindings == (PortBinding("80/tcp", "", "8080"), PortBinding("53/udp", "127.0.0.1", ""))
    assert cli.restart_policy == RestartPolicy("on-failure", 3)
    assert cli.mounts == (Mount("tmpfs", "/scratch", tmpfs_size=1 << 20),)
    r = cli.resources
    assert (r.memory, r.memory_swap, r.nano_cpus, r.cpu_shares, r.pids_limit, r.cpuset_cpus) == (
        64 << 20, 128 << 20, 500_000_000, 512, 50, "0")
    assert r.ulimits == (Ulimit("nofile", 512, 1024),)
    assert cli.cap_add == ("CAP_NET_ADMIN",) and cli.pid_mode == "host" and cli.shm_size == 128 << 20


def test_the_record_stores_it_and_reads_it_back() -> None:
    hc = host_config_of(FLAGS)
    c = Container(id="c" * 64, name="x", created="", image="busybox", image_id="sha256:" + "0" * 64,
                  path="true", args=(), config=ContainerConfig.from_json({}), host_config=hc)
    on_disk = json.loads(json.dumps(c.to_json()))
    hj = on_disk["HostConfig"]
    # Docker's shapes on disk
    assert hj["PortBindings"] == {"80/tcp": [{"HostIp": "", "HostPort": "8080"}],
                                  "53/udp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
    assert hj["Mounts"] == [{"Type": "tmpfs", "Source": "", "Target": "/scratch",
                             "TmpfsOptions": {"SizeBytes": 1048576}}]
    assert hj["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert hj["CpusetCpus"] == "0" and hj["PidMode"] == "host"
    back = Container.from_json(on_disk)
    assert back.host_config == hc
    assert back.to_json() == on_disk
    # the read-only mapping view of the JSON form, for code not on the fields yet
    assert back.host_config.get("NetworkMode") == "appnet" and dict(back.host_config) == hj


def test_an_earlier_record_is_still_read() -> None:
    old = {"AutoRemove": False, "NetworkMode": "default", "Mounts": ["type=volume,source=data,target=/d"],
           "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8081"}]},
           "PublishSpecs": ["8080:80", "8081:80"], "RestartPolicy": {"Name": "always", "MaximumRetryCount": 0},
           "Ulimits": [{"Name": "nofile", "Soft": 10, "Hard": 20}], "OomScoreAdj": 5}
    hc = HostConfig.from_json(old)
    assert hc.mounts == (Mount("volume", "/d", "data"),)
    # the -p texts: both bindings of port 80 (PortBindings kept only the last)
    assert hc.port_bindings == (PortBinding("80/tcp", "", "8080"), PortBinding("80/tcp", "", "8081"))
    assert hc.restart_policy.name == "always" and hc.resources.ulimits == (Ulimit("nofile", 10, 20),)
    assert hc.other == {"OomScoreAdj": 5}
    out = hc.to_json()
    assert out["Mounts"] == [{"Type": "volume", "Source": "data", "Target": "/d"}]
    assert out["OomScoreAdj"] == 5 and "CpusetCpus" not in out
    # what was not in it is not added unless it changed
    assert set(out) == set(old) - {"PublishSpecs"}
    # what only a create checks against this host does not make a record unreadable
    assert HostConfig.from_json({"CpusetCpus": "4096", "NanoCpus": 4096 * 10**9}).resources.cpuset_cpus == "4096"


@pytest.mark.parametrize("make, words", [
    (lambda: Mount("bind", "/x"), "Source must not be empty"),
    (lambda: Mount("volume", "rel"), "must be absolute"),
    (lambda: Mount("tmpfs", "/t", source="/s"), "Source must not be specified"),
    (lambda: Mount("nfs", "/t"), "mount type unknown"),
    (lambda: PortBinding("80/xyz"), "invalid port"),
    (lambda: PortBinding("80/tcp", host_port="http"), "invalid host port"),
    (lambda: Ulimit("nofile", 20, 10), "soft limit must be less than or equal to hard limit"),
    (lambda: Ulimit("bogus", 1, 1), "invalid ulimit type"),
    (lambda: Device("dev/null", "/dev/null"), "bad format for path"),
    (lambda: Resources(memory=1024), "Minimum memory limit allowed is 6MB"),
    (lambda: Resources(memory_swap=1 << 30), "always set the Memory limit"),
    (lambda: Resources(cpuset_cpus="0-"), "Invalid value 0- for cpuset.cpus"),
    (lambda: Resources(cpuset_cpus="4096").check_host(), "Requested CPUs are not available"),
    (lambda: Resources(nano_cpus=4096 * 10**9).check_host(), "range of CPUs is from 0.01"),
    (lambda: RestartPolicy("sometimes"), "invalid restart policy"),
    (lambda: HostConfig(auto_remove=True, restart_policy=RestartPolicy("always")), "--restart and --rm"),
    (lambda: HostConfig(network_mode="container:x", port_bindings=(PortBinding("80/tcp"),)), "port publishing"),
    (lambda: HostConfig(endpoint=Endpoint(("a",))), "user-defined networks only"),
    (lambda: HostConfig(endpoint=Endpoint((), "10.0.0.300")), "invalid IPv4 address"),
    (lambda: HostConfig(network_mode="host", sysctls=(("net.core.somaxconn", "1"),)), "host network namespace"),
    (lambda: HostConfig(pid_mode="container:x"), "invalid PID mode"),
    (lambda: HostConfig(port_bindings=(PortBinding("80/tcp", "", "8080"), PortBinding("81/tcp", "", "8080"))),
     "published twice"),
])
def test_each_value_checks_itself(make: Any, words: str) -> None:
    with pytest.raises(ContainerError) as e:
        make()
    assert words in str(e.value) and "\n" not in str(e.value)


def test_bad_api_shapes_are_invalid_arguments() -> None:
    from builder.api.errors import ApiError

    for hc in ({"Ulimits": [{"Name": "nofile"}]}, {"Memory": "lots"}, {"Mounts": ["x"]}):
        with pytest.raises((ApiError, ContainerError)) as e:
            host_config({"Image": "busybox", "HostConfig": hc})
        err = e.value
        assert getattr(err, "status", None) == 400 or getattr(err, "kind", None) == ErrorKind.INVALID
    with pytest.raises(ContainerError) as ce:
        host_config({"Image": "busybox", "HostConfig": {"RestartPolicy": {"Name": "sometimes"}}})
    assert ce.value.kind == ErrorKind.INVALID


def test_mount_flags_are_parsed_once_into_values() -> None:
    hc = host_config_of(RunOptions(image="busybox", mounts=("type=bind,src=/srv,dst=/s,readonly,bind-propagation=rshared",),
                                   environ={}))
    assert hc.mounts == (Mount("bind", "/s", "/srv", True, "rshared"),)
    spec = hc.mounts[0].spec()
    assert (spec.type, spec.destination, spec.source, spec.read_only, spec.propagation) == (
        "bind", "/s", "/srv", True, "rshared")
    with pytest.raises(VolumeError):
        host_config_of(RunOptions(image="busybox", mounts=("type=bind,dst=/s",), environ={}))
