"""The network package's API for container code (issue 21): a lazy package, a light read API
(``builder.network.records``) and typed endpoints (``EndpointRecord``) from the network record
through the container's state to inspect, with the JSON on disk unchanged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import builder.network as N
from builder.network.model import Endpoint, Network
from builder.network.records import EndpointRecord, PortBinding, endpoints_by_container, mentions
from builder.runtime.containers.record import ContainerStore
from builder.runtime.containers.recordparts import State

PROBE = """
import json, sys
import builder.base.state
base = set(sys.modules)
import builder.network.records
light = sorted(sys.modules)
added = sorted(set(sys.modules) - base)
import builder.network as N
names = {n: type(getattr(N, n)).__name__ for n in N.__all__}
print(json.dumps({"light": light, "added": added, "dir": dir(N), "names": names,
                  "after": sorted(sys.modules)}))
"""
#: what the read API must not bring: the code that makes networks and what it imports
HEAVY = ("builder.network.core", "builder.network.model", "builder.network.wire", "pyroute2",
         "subprocess", "hashlib", "dataclasses")


def test_the_package_is_lazy_and_the_read_api_light() -> None:
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout)
    ours = [m for m in seen["light"] if m.startswith("builder.network")]
    assert ours == ["builder.network", "builder.network.records"]
    assert not [m for m in seen["light"] if m.split(".")[0] in HEAVY or m in HEAVY]
    # beyond what the state root loads (pathlib's own: ipaddress on this Python), only itself
    # and the frozen values its records are (no ``typing``)
    assert [m for m in seen["added"] if m not in ("json", "json.decoder", "json.encoder", "json.scanner",
                                                  "_json", "builder.base.values", "registry.values")] == ours
    # every public name is still there, from its module, on first use; dir() lists them
    assert set(N.__all__) <= set(seen["dir"])
    assert seen["names"]["attach"] == "function" and seen["names"]["Endpoint"] == "type"
    assert seen["names"]["EndpointRecord"] == "type" and seen["names"]["sweep_roots"] == "function"
    assert "builder.network.core" in seen["after"]
    assert N.PortBinding is PortBinding and N.sweep_roots.__module__ == "builder.network.sweep"


# a state.json's endpoints as written before endpoints were typed (Endpoint.to_json() plus
# NetworkID; the none network's; a hand-edited one with odd values)
OLD_ENDPOINTS: dict[str, Any] = {
    "appnet": {
        "Aliases": ["web", "0123456789ab"], "DnsServers": ["10.89.0.1"], "Driver": "bridge",
        "EndpointID": "aaaaaaaaaaaa-0123456789ab", "Gateway": "10.89.0.1",
        "Hostname": "0123456789ab", "HostVeth": "pbv1a2b3c4d5e", "HostsPath": "/r/run/net/c/hosts",
        "IPv4Address": "10.89.0.2/24", "IPv6Address": "", "Interface": "eth0",
        "MacAddress": "02:42:0a:59:00:02", "Name": "web", "Netns": "/r/run/netns/c",
        "NetworkID": "a" * 64, "Ports": [{"ContainerPort": 80, "HostIp": "", "HostPort": 8080,
                                          "Protocol": "tcp"}],
        "ProxyPid": 4242, "ResolvConfPath": "/r/run/net/c/resolv.conf"},
    "none": {"NetworkID": "", "Ports": []},
    "odd": {"Aliases": None, "ProxyPid": "12", "Future": {"x": 1}, "IPv4Address": "10.0.0.9/8"},
}


def test_old_state_records_load_typed_and_write_back_byte_for_byte(tmp_path: Path) -> None:
    from builder.base.state import StateRoot

    root = StateRoot.open(tmp_path / "root")
    cid = "0123456789ab" + "c" * 52
    (root.containers / cid).mkdir(parents=True)
    state_file = root.containers / cid / "state.json"
    old = {**State(status="running").to_json(), "endpoints": OLD_ENDPOINTS}
    raw = json.dumps(old, indent=1, sort_keys=True).encode() + b"\n"  # the store's format
    state_file.write_bytes(raw)
    cs = ContainerStore(root)
    st = cs.load_state(cid)
    web = st.endpoints["appnet"]
    assert isinstance(web, EndpointRecord)
    assert (web.ip, web.prefixlen, web.network_id, web.aliases) == ("10.89.0.2", 24, "a" * 64,
                                                                     ("web", "0123456789ab"))
    assert web.ports == (PortBinding(80, "tcp", "", 8080),) and web.proxy_pid == 4242
    assert st.endpoints["none"].ports == () and st.endpoints["odd"].ip == "10.0.0.9"
    cs.save_state(cid, st)
    assert state_file.read_bytes() == raw
    # what a start records now is the same JSON as before: Endpoint.to_json() and NetworkID
    net = Network(id="b" * 64, name="n", driver="bridge", created="")
    ep = Endpoint(cid, net.id, net.name, "bridge", Path("/x"), ifname="eth0", ip="10.1.0.2",
                  prefixlen=16, ports=(PortBinding(53, "udp", "127.0.0.1", 5353),), dns=("1.1.1.1",))
    assert ep.record().to_json() == {**ep.to_json(), "NetworkID": net.id}


def test_read_api_against_a_real_bridge_network_and_container(busybox: Any) -> None:
    busybox("network", "create", "--subnet", "10.87.0.0/24", "apinet")
    cid = busybox("run", "-d", "--network", "apinet", "--network-alias", "svc", "-p", "127.0.0.1::80",
                  "--name", "api", "busybox", "sleep", "600").stdout.strip()
    root = busybox.state
    try:
        table = endpoints_by_container(root)
        ep = table[cid]["apinet"]
        net = json.loads(busybox("network", "inspect", "apinet").stdout)[0]
        assert ep.network_id == net["Id"] and ep.ip.startswith("10.87.0.") and ep.prefixlen == 24
        assert "svc" in ep.aliases and ep.interface == "eth0" and ep.gateway == "10.87.0.1"
        assert [(p.container_port, p.protocol, p.host_ip) for p in ep.ports] == [(80, "tcp", "127.0.0.1")]
        assert mentions(root, cid)
        # the state the start recorded holds the same endpoint, typed
        recorded = ContainerStore(root).load_state(cid).endpoints["apinet"]
        assert (recorded.ip, recorded.ports, recorded.network_id) == (ep.ip, ep.ports, ep.network_id)
        # inspect turns it into Docker's JSON
        info = json.loads(busybox("inspect", "api").stdout)[0]
        settings = info["NetworkSettings"]["Networks"]["apinet"]
        assert settings["IPAddress"] == ep.ip and settings["NetworkID"] == net["Id"]
        assert settings["IPPrefixLen"] == 24 and "svc" in settings["Aliases"]
        bound = info["NetworkSettings"]["Ports"]["80/tcp"]
        assert bound == [{"HostIp": "127.0.0.1", "HostPort": str(ep.ports[0].host_port)}]
    finally:
        busybox("rm", "-f", "api")
    assert cid not in endpoints_by_container(root)
    assert not mentions(root, cid)
    busybox("network", "rm", "apinet")
