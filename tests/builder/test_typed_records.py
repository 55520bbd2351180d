"""Typed records keep their JSON: a container record's ``Config`` is a ``ContainerConfig`` and a
network record's ``Containers`` are ``Endpoint``s, and both write back exactly what they read."""

from __future__ import annotations

import json
from pathlib import Path

from builder.network.model import Endpoint, Network, PortBinding
from builder.runtime.containers.record import Container
from registry.config import ContainerConfig

CID = "c" * 64
OTHER = "d" * 64
NID = "e" * 64

NETWORK = {
    "Name": "appnet", "Id": NID, "Created": "2026-12-02T22:00:00.1Z", "Scope": "local",
    "Driver": "bridge", "EnableIPv6": False,
    "IPAM": {"Driver": "default", "Options": {}, "Config": [{"Subnet": "10.9.0.0/24", "Gateway": "10.9.0.1"}]},
    "Internal": False, "Attachable": False, "Ingress": False, "Bridge": "pb-eeeeeeeeeeee", "Parent": "",
    "Containers": {
        CID: {"Name": "web", "Hostname": "cccccccccccc", "EndpointID": f"{NID[:12]}-{CID[:12]}",
              "Driver": "bridge", "Netns": f"/r/run/netns/{CID}", "Interface": "eth0",
              "MacAddress": "02:42:0a:09:00:02", "IPv4Address": "10.9.0.2/24", "IPv6Address": "",
              "Gateway": "10.9.0.1", "Aliases": ["web", "www"],
              "Ports": [{"ContainerPort": 80, "Protocol": "tcp", "HostIp": "", "HostPort": 8080}],
              "HostVeth": "pbv0123456789ab", "ProxyPid": 4242, "HostsPath": f"/r/run/net/{CID}/hosts",
              "ResolvConfPath": f"/r/run/net/{CID}/resolv.conf"},
        OTHER: {"Name": "db", "Hostname": "dddddddddddd", "EndpointID": f"{NID[:12]}-{OTHER[:12]}",
                "Driver": "bridge", "Netns": "", "Interface": "", "MacAddress": "", "IPv4Address": "",
                "IPv6Address": "", "Gateway": "", "Aliases": [], "Ports": [], "HostVeth": "", "ProxyPid": 0,
                "HostsPath": "", "ResolvConfPath": ""},
    },
    "Options": {"com.docker.network.bridge.name": "pb-eeeeeeeeeeee"}, "Labels": {"team": "a"}, "DnsPid": 77,
}

CONTAINER = {
    "Id": CID, "Name": "/web", "Created": "2026-12-02T22:00:00.123456789Z", "Image": "nginx:1",
    "ImageID": "sha256:" + "f" * 64, "Path": "nginx", "Args": ["-g", "daemon off;"],
    "Config": {"Hostname": "cccccccccccc", "User": "", "Env": ["PATH=/usr/bin", "HOSTNAME=cccccccccccc"],
               "Cmd": ["-g", "daemon off;"], "Entrypoint": ["nginx"], "WorkingDir": "", "Image": "nginx:1",
               "Labels": {}, "Tty": False, "OpenStdin": False, "AttachStdin": False, "AttachStdout": False,
               "AttachStderr": False, "StopSignal": "SIGQUIT", "StopTimeout": None,
               "ExposedPorts": {"80/tcp": {}}, "Volumes": None,
               "Healthcheck": {"Test": ["CMD-SHELL", "curl -f localhost"], "Interval": 1000000000}},
    "HostConfig": {"AutoRemove": False, "NetworkMode": "appnet"},
    "Mounts": [], "Networks": {"appnet": {"Aliases": ["www"]}},
}


def test_network_record_endpoints_are_typed_and_round_trip() -> None:
    net = Network.from_json(NETWORK)
    web = net.containers[CID]
    assert isinstance(web, Endpoint)
    assert (web.network_id, web.network_name, web.ip, web.prefixlen, web.aliases) == (
        NID, "appnet", "10.9.0.2", 24, ("web", "www"))
    assert web.netns == Path(f"/r/run/netns/{CID}") and net.containers[OTHER].netns is None
    assert web.ports == (PortBinding(80, "tcp", "", 8080),)
    assert [e.name for e in net.endpoints()] == ["web", "db"]
    assert json.dumps(net.to_json(), sort_keys=True) == json.dumps(NETWORK, sort_keys=True)
    # a record written before IPv6 networks (no "IPv6Address", which dockerd's inspect always
    # shows) reads as the same endpoints
    old = json.loads(json.dumps(NETWORK))
    for ep in old["Containers"].values():
        del ep["IPv6Address"]
    assert Network.from_json(old).containers == net.containers


def test_container_record_config_is_typed_and_round_trips() -> None:
    c = Container.from_json(CONTAINER)
    assert isinstance(c.config, ContainerConfig)
    assert c.config.entrypoint == ("nginx",) and c.config.exposed_ports == ("80/tcp",)
    assert c.config.stop_signal == "SIGQUIT" and c.config.stop_timeout is None
    assert c.labels == {}
    assert json.dumps(c.to_json()) == json.dumps(CONTAINER)


MOUNTS = [
    {"Anonymous": True, "Destination": "/data", "Driver": "local", "Mode": "", "Name": "a" * 64,
     "Propagation": "", "RW": True, "Source": "/r/volumes/" + "a" * 64 + "/_data", "Type": "volume"},
    {"Anonymous": False, "Destination": "/etc/app", "Driver": "", "Mode": "ro", "Name": "",
     "Propagation": "rprivate", "RW": False, "Source": "/srv/app", "Type": "bind"},
    {"Anonymous": False, "Destination": "/run/t", "Driver": "", "Mode": "", "Name": "",
     "Propagation": "", "RW": True, "Source": "", "TmpfsOptions": ["size=65536k"], "Type": "tmpfs"},
]
NETWORKS = {"appnet": {"DriverOpts": {"k": "v"}, "Links": ["db:d"]},
            "other": {"Aliases": ["x", "cccccccccccc"]},
            "third": {"Aliases": [], "Links": []}}


def test_container_record_mounts_and_networks_are_typed_and_round_trip() -> None:
    from builder.runtime.containers.recordparts import JoinedNetwork, MountPoint

    d = {**CONTAINER, "Mounts": MOUNTS, "Networks": NETWORKS}
    c = Container.from_json(d)
    assert all(isinstance(m, MountPoint) for m in c.mounts)
    vol, bind, tmpfs = c.mounts
    assert (vol.type, vol.anonymous, vol.name[:1], vol.rw) == ("volume", True, "a", True)
    assert (bind.source, bind.destination, bind.rw, bind.tmpfs_options) == ("/srv/app", "/etc/app", False, None)
    assert tmpfs.tmpfs_options == ("size=65536k",)
    assert c.networks["appnet"] == JoinedNetwork(links=("db:d",), driver_opts={"k": "v"})
    assert c.networks["appnet"].given_json() == {"Links": ["db:d"], "DriverOpts": {"k": "v"}}
    assert c.networks["other"].aliases == ("x", "cccccccccccc") and c.networks["other"].links is None
    assert c.networks["third"] == JoinedNetwork(aliases=(), links=()) and c.networks["third"].given_json() == {}
    # written back key for key, in the order the record file holds them (inspect shows that order)
    assert json.dumps(c.to_json()) == json.dumps(d)
    # an earlier record's mount (no "Anonymous", no "Propagation") reads with Docker's defaults
    old = MountPoint.from_json({"Type": "bind", "Source": "/s", "Destination": "/d", "RW": False})
    assert (old.anonymous, old.propagation, old.rw, old.tmpfs_options) == (False, "", False, None)


def test_state_record_sandbox_is_typed_and_round_trips() -> None:
    from builder.runtime.containers.recordparts import SandboxRecord, State

    running = {"status": "running", "pid": 4321, "pid_start": 99, "supervisor_pid": 4320,
               "supervisor_start": 98, "exit_code": 0, "oom_killed": False, "error": "",
               "started_at": "2026-12-02T22:00:01.5Z", "finished_at": "0001-01-01T00:00:00Z",
               "restart_count": 0, "stopped_by_user": False, "paused": False, "health": None,
               "sandbox": {"netns": f"/r/run/netns/{CID}", "run_dir": f"/r/run/sandbox/{CID}"},
               "endpoints": {}}
    st = State.from_json(running)
    assert st.sandbox == SandboxRecord(run_dir=f"/r/run/sandbox/{CID}", netns=f"/r/run/netns/{CID}")
    assert json.dumps(st.to_json(), sort_keys=True) == json.dumps(running, sort_keys=True)
    # a container not started: nothing to tear down ({} on disk, as before)
    stopped = {**running, "status": "exited", "sandbox": {}}
    assert State.from_json(stopped).sandbox is None
    assert State.from_json(stopped).to_json()["sandbox"] == {}


def test_state_record_health_log_is_typed_and_round_trips() -> None:
    from builder.runtime.containers.recordparts import HealthProbe, State

    health = {"Status": "starting", "FailingStreak": 1,
              "Log": [{"End": "2026-12-02T22:00:02.1Z", "ExitCode": 1, "Output": "no\n",
                       "Start": "2026-12-02T22:00:02Z"}]}
    st = State.from_json({"status": "running", "health": health})
    assert st.health is not None and st.health.log == (
        HealthProbe("2026-12-02T22:00:02Z", "2026-12-02T22:00:02.1Z", 1, "no\n"),)
    # written back, and shown by inspect, in the order the record file holds the keys
    assert json.dumps(st.to_json()["health"]) == json.dumps(health)
    assert json.dumps(st.docker()["Health"]) == json.dumps(health)
