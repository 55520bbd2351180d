"""The default-bridge run's network path (issue 15), on the real kernel.

* ``release`` leaves a container's veth pairs to its namespace: the kernel deletes them with it,
  in its own batch (an ``RTM_DELLINK`` of each waits on RCU grace periods, ~12-30 ms here); they
  are gone when ``release`` returns, as Docker's endpoint is when ``run --rm`` returns;
* a namespace that outlives its mount (a process still in it) does not keep them: ``release``
  deletes them itself;
* ``detach`` (the namespace stays) deletes its veth at once;
* a bridge ``run`` loads no cluster client (``requests``), no OpenSSL (``hashlib``) and makes
  no dataclass in the network package (its values are ``@frozen``).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_startup_budget import dataclasses_made, loaded

from builder import network as N
from builder.base.state import StateRoot
from builder.network import links

CID_A, CID_B = "d" * 64, "e" * 64


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateRoot]:
    st = StateRoot.open(tmp_path / "root")
    try:
        yield st
    finally:
        N.reset(st)


@pytest.fixture
def deletions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The links ``links.delete_link`` is asked to delete (it still deletes them)."""
    asked: list[str] = []
    real: Callable[..., bool] = links.delete_link

    def counted(ifname: str, netns: Path | None = None) -> bool:
        asked.append(ifname)
        return real(ifname, netns)

    monkeypatch.setattr(links, "delete_link", counted)
    return asked


def _on_host(name: str) -> bool:
    """As ``ip link`` sees it (netlink); its sysfs entry goes microseconds after the kernel
    announces the deletion, in the kernel's own thread."""
    return links.link_exists(name)


def test_release_leaves_veths_to_the_namespace(state: StateRoot, deletions: list[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(links, "NETNS_DEATH_WAIT", 10.0)  # a loaded machine's kernel may be slow
    N.create_network(state, "hotnet")
    a = N.attach(state, CID_A, "bridge")
    b = N.attach(state, CID_A, "hotnet")
    assert a.netns is not None and _on_host(a.host_veth) and _on_host(b.host_veth)
    N.release(state, CID_A)
    assert deletions == []  # no RTM_DELLINK: the namespace's death took them
    assert not _on_host(a.host_veth) and not _on_host(b.host_veth)
    assert not a.netns.exists()
    assert N.get_network(state, "bridge").containers == {} and N.get_network(state, "hotnet").containers == {}


def test_release_deletes_veths_of_a_namespace_kept_alive(state: StateRoot, deletions: list[str]) -> None:
    """A process in the namespace keeps it (and its veth) after the mount goes: ``release``
    waits ``NETNS_DEATH_WAIT`` for the kernel, then deletes the veth itself."""
    a = N.attach(state, CID_B, "bridge")
    assert a.netns is not None
    holder = subprocess.Popen(["nsenter", f"--net={a.netns}", "sleep", "60"])
    try:
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{holder.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            assert time.monotonic() < deadline, "nsenter did not join the namespace"
            time.sleep(0.01)
        N.release(state, CID_B)
        assert deletions == [a.host_veth]
        assert not _on_host(a.host_veth) and not a.netns.exists()
    finally:
        holder.kill()
        holder.wait()


def test_detach_deletes_its_veth_at_once(state: StateRoot, deletions: list[str]) -> None:
    N.create_network(state, "hotnet")
    N.attach(state, CID_A, "bridge")
    b = N.attach(state, CID_A, "hotnet")
    N.detach(state, CID_A, "hotnet")
    assert deletions == [b.host_veth] and not _on_host(b.host_veth)
    assert b.netns is not None and links.is_netns(b.netns)  # the namespace stays
    N.release(state, CID_A)


def test_bridge_run_loads_no_cluster_client_openssl_nor_network_dataclass(busybox: Any, tmp_path: Path) -> None:
    busybox("run", "--rm", "busybox", "true")  # the default bridge, made once for the root
    mods = loaded(["--root", str(busybox.root), "run", "--rm", "busybox", "true"], tmp_path)
    assert "builder.network.core" in mods  # it attached the container to the bridge
    assert not mods & {"requests", "urllib3", "builder.network.cluster.etcd", "hashlib", "_hashlib"}
    assert not {m for m in dataclasses_made(mods) if m.startswith("builder.network.")}


def test_default_bridge_attach_leaves_peers_files(state: StateRoot) -> None:
    """Containers on the default bridge do not resolve each other: another's attach or release
    does not rewrite their hosts and resolv.conf files (O(containers) writes per run)."""
    a = N.attach(state, CID_A, "bridge")
    assert a.hosts_path is not None and a.resolv_path is not None
    stamps = (a.hosts_path.stat().st_mtime_ns, a.resolv_path.stat().st_mtime_ns)
    time.sleep(0.05)  # past the file system's timestamp granularity
    N.attach(state, CID_B, "bridge")
    N.release(state, CID_B)
    assert (a.hosts_path.stat().st_mtime_ns, a.resolv_path.stat().st_mtime_ns) == stamps
    N.release(state, CID_A)
