"""``pybuild network ...``: Docker-shaped output, one-line errors with Docker's exit codes, and
no bridge, rule or netns left behind."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder import network as N
from builder.base.state import StateRoot
from builder.network import links

PYBUILD = [sys.executable, "-c", "from builder.cli import main; main()"]


def _rules() -> list[str]:
    out = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    return sorted(line for line in out.splitlines() if "PYBUILD" in line)


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateRoot]:
    st = StateRoot.open(tmp_path / "root")
    try:
        yield st
    finally:
        ids = [n.id for n in N.list_networks(st)]
        N.reset(st)
        rules = _rules()
        assert not [r for r in rules for i in ids if f"pybuild:{i[:12]}" in r]
        assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()


def run_cli(state: StateRoot, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PYBUILD, "--root", str(state.path), *args], capture_output=True, text=True, input=input)


def test_network_cli_lifecycle(state: StateRoot) -> None:
    created = run_cli(state, "network", "create", "--subnet", "10.81.0.0/24", "--label", "env=test", "appnet")
    assert created.returncode == 0, created.stderr
    nid = created.stdout.strip()
    assert len(nid) == 64
    ls = run_cli(state, "network", "ls").stdout.splitlines()
    assert ls[0] == "NETWORK ID     NAME      DRIVER    SCOPE"
    assert f"{nid[:12]}   appnet    bridge    local" in ls
    assert [line.split()[1] for line in ls[1:]] == ["appnet", "bridge", "host", "none"]
    assert run_cli(state, "network", "ls", "-q", "-f", "type=custom").stdout == f"{nid[:12]}\n"
    assert run_cli(state, "network", "ls", "-q", "--no-trunc", "-f", "label=env=test").stdout == f"{nid}\n"
    assert run_cli(state, "network", "ls", "--format", "json", "-f", "driver=host").stdout.count("\n") == 1
    info = json.loads(run_cli(state, "network", "inspect", "appnet").stdout)[0]
    assert info["Id"] == nid and info["Driver"] == "bridge" and info["Labels"] == {"env": "test"}
    assert info["IPAM"]["Config"] == [{"Subnet": "10.81.0.0/24", "Gateway": "10.81.0.1"}]
    assert links.link_exists(info["Bridge"])

    for args, message in [
        (("network", "create", "appnet"), "Error: network with name appnet already exists\n"),
        (("network", "create", "-d", "overlay", "ov"), "Error: this host is not in a cluster"),
        (("network", "create", "--subnet", "10.81.0.0/25", "clash"), "Error: subnet 10.81.0.0/25 overlaps network appnet"),
        (("network", "rm", "host"), "Error: host is a pre-defined network and cannot be removed\n"),
        (("network", "inspect", "nope"), "Error: No such network: nope\n"),
        (("network", "create", "-o", "parent", "-d", "macvlan", "m"), "Error: invalid option 'parent'"),
    ]:
        r = run_cli(state, *args)
        assert r.returncode == 1 and r.stderr.startswith(message) and r.stderr.count("\n") == 1, r.stderr

    # a "running container": a record as builder.runtime.containers writes it, and its netns
    cid = "e" * 64
    (state.containers / cid).mkdir(parents=True)
    (state.containers / cid / "container.json").write_text(json.dumps({"Id": cid, "Name": "/web"}))
    N.attach(state, cid, "bridge", name="web")
    c = run_cli(state, "network", "connect", "--alias", "www", "--ip", "10.81.0.50", "appnet", "web")
    assert c.returncode == 0, c.stderr
    ep = {e.network_name: e for e in N.endpoints(state, cid)}["appnet"]
    assert ep.ip == "10.81.0.50" and ep.aliases == ("www",) and ep.ifname == "eth1"
    assert links.link_exists("eth1", N.netns_path(state, cid))
    busy = run_cli(state, "network", "rm", "appnet")
    assert busy.returncode == 1 and "has active endpoints" in busy.stderr
    assert run_cli(state, "network", "connect", "appnet", "ghost").stderr == "Error: No such container: ghost\n"
    d = run_cli(state, "network", "disconnect", "appnet", "web")
    assert d.returncode == 0, d.stderr
    assert not links.link_exists("eth1", N.netns_path(state, cid))
    again = run_cli(state, "network", "disconnect", "appnet", "web")
    assert again.returncode == 1 and "is not connected to network appnet" in again.stderr
    assert run_cli(state, "network", "disconnect", "-f", "appnet", "web").returncode == 0

    assert run_cli(state, "network", "create", "spare").returncode == 0
    pruned = run_cli(state, "network", "prune", input="y\n")
    assert pruned.stdout.endswith("Deleted Networks:\nappnet\nspare\n")
    assert not links.link_exists(info["Bridge"])
    assert [n.name for n in N.list_networks(state)] == ["bridge", "host", "none"]
    N.release(state, cid)
    assert not N.netns_path(state, cid).exists()
