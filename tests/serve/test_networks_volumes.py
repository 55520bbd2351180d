"""Network and volume endpoints of ``pybuild serve``, judged by Debian's ``docker`` CLI and
docker-py, and compared with ``pybuild network``/``pybuild volume`` on the same state root."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from serve_client import Daemon


def _table_ids(text: str) -> set[str]:
    return {line.split()[0] for line in text.splitlines()[1:] if line.strip()}


def test_docker_cli_networks(serve: Daemon) -> None:
    nid = serve.docker("network", "create", "--label", "k=v", "appnet").stdout.strip()
    assert len(nid) == 64
    try:
        d_ls = serve.docker("network", "ls").stdout
        p_ls = serve.pyb("network", "ls").stdout
        assert _table_ids(d_ls) == _table_ids(p_ls)
        assert nid[:12] in _table_ids(d_ls)
        names = {line.split()[1] for line in d_ls.splitlines()[1:]}
        assert {"appnet", "bridge", "host", "none"} <= names
        assert serve.docker("network", "ls", "-q", "--filter", "label=k=v").stdout.split() == [nid[:12]]
        insp = json.loads(serve.docker("network", "inspect", "appnet").stdout)[0]
        mine = json.loads(serve.pyb("network", "inspect", "appnet").stdout)[0]
        assert insp["Id"] == mine["Id"] == nid
        assert insp["IPAM"]["Config"] == mine["IPAM"]["Config"] and insp["Labels"] == {"k": "v"}
        r = serve.docker("network", "create", "appnet", check=False)
        assert r.returncode != 0 and "already exists" in r.stderr
    finally:
        serve.docker("network", "rm", "appnet")
    assert "appnet" not in serve.pyb("network", "ls").stdout
    r = serve.docker("network", "rm", "appnet", check=False)
    assert r.returncode != 0 and "No such network: appnet" in r.stderr


def test_docker_py_networks_connect(serve: Daemon) -> None:
    client = serve.client
    net = client.networks.create("pynet", labels={"t": "1"})
    c = client.containers.run("busybox", ["sleep", "300"], detach=True, name="n1")
    try:
        net.connect(c, aliases=["db"])
        net.reload()
        assert list(net.attrs["Containers"]) == [c.id]
        # pybuild sees the same endpoint, and the container has the interface
        mine = json.loads(serve.pyb("network", "inspect", "pynet").stdout)[0]
        assert list(mine["Containers"]) == [c.id]
        code, out = c.exec_run(["ip", "-o", "-4", "addr", "show", "eth1"])
        addr = mine["Containers"][c.id]["IPv4Address"].split("/")[0]
        assert code == 0 and addr.encode() in out
        # in use: refused (409)
        code, _h, body = serve.api("DELETE", "/networks/pynet")
        assert code == 409 and "active endpoints" in json.loads(body)["message"]
        net.disconnect(c)
        net.reload()
        assert not net.attrs["Containers"]
        assert [n.name for n in client.networks.list(filters={"label": "t=1"})] == ["pynet"]
    finally:
        c.remove(force=True)
    pruned = client.networks.prune()
    assert pruned["NetworksDeleted"] == ["pynet"]
    assert "pynet" not in serve.pyb("network", "ls").stdout
    code, _h, body = serve.api("GET", "/networks/pynet")
    assert code == 404 and json.loads(body) == {"message": "network pynet not found"}


def test_docker_cli_volumes(serve: Daemon) -> None:
    assert serve.docker("volume", "create", "--label", "a=b", "data").stdout.strip() == "data"
    d_ls = serve.docker("volume", "ls").stdout
    p_ls = serve.pyb("volume", "ls").stdout
    assert [line.split() for line in d_ls.splitlines()] == [line.split() for line in p_ls.splitlines()]
    assert ["local", "data"] in [line.split() for line in d_ls.splitlines()]
    insp = json.loads(serve.docker("volume", "inspect", "data").stdout)[0]
    mine = json.loads(serve.pyb("volume", "inspect", "data").stdout)[0]
    assert insp["Mountpoint"] == mine["Mountpoint"] and insp["Labels"] == {"a": "b"}
    # a container writes into it through the daemon; the data is in the volume
    serve.docker("run", "--rm", "-v", "data:/data", "busybox", "sh", "-c", "echo kept > /data/f")
    assert (serve.pyb.root / "volumes" / "data" / "_data" / "f").read_text() == "kept\n"
    serve.docker("create", "--name", "user", "-v", "data:/data", "busybox", "true")
    r = serve.docker("volume", "rm", "data", check=False)
    assert r.returncode != 0 and "in use" in r.stderr
    serve.docker("rm", "user")
    serve.docker("volume", "rm", "data")
    assert serve.pyb("volume", "ls", "-q").stdout.strip() == ""
    r = serve.docker("volume", "inspect", "data", check=False)
    assert r.returncode != 0 and "no such volume" in r.stderr.lower()


def test_docker_py_volumes(serve: Daemon) -> None:
    client = serve.client
    v = client.volumes.create("pyvol", labels={"x": "y"})
    assert v.name == "pyvol"
    assert [x.name for x in client.volumes.list(filters={"label": "x=y"})] == ["pyvol"]
    assert "pyvol" in serve.pyb("volume", "ls", "-q").stdout.split()
    client.volumes.create("other")
    pruned = client.volumes.prune()
    assert sorted(pruned["VolumesDeleted"]) == ["other", "pyvol"]
    assert serve.pyb("volume", "ls", "-q").stdout.strip() == ""
    code, _h, body = serve.api("POST", "/volumes/create", "[1, 2", headers={"Content-Type": "application/json"})
    assert code == 400
