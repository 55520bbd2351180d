"""This host's membership in a cluster: ``<root>/cluster.json`` (the store, the advertised
underlay address, the host id, its lease) and the host key ``pybuild/hosts/<id>`` that lives on
that lease. ``PYBUILD_CLUSTER_STORE`` overrides the store (and joins on first use, with the
address that routes to the store, when the root has not joined).

The lease is kept alive by the host's agent (``builder.network.cluster.agent``, one detached process per
state root, started by ``join`` and restarted by any overlay command that finds it gone).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
from pathlib import Path

from builder.base.errors import NetworkError
from builder.base.state import StateRoot
from builder.base.values import frozen, replace
from builder.network import helpers

TYPE_CHECKING = False
if TYPE_CHECKING:
    from builder.network.cluster.etcd import Etcd

PREFIX = "pybuild/"
HOSTS = PREFIX + "hosts/"
AGENT = "builder.network.cluster.agent"
# the agent's module in a process an earlier layout started (issue 21's move of ``cluster``):
# still this root's agent, found and stopped as one
AGENT_BEFORE = ("builder.cluster.agent",)  # relayout: keep
ENV_STORE = "PYBUILD_CLUSTER_STORE"


def default_ttl() -> int:
    return int(os.environ.get("PYBUILD_CLUSTER_TTL", "15"))


@frozen  # not a dataclass: every bridge attach loads this module (through overlay)
class Membership:
    store: str
    advertise: str
    host_id: str
    lease: int
    ttl: int
    agent_pid: int = 0

    def to_json(self) -> dict[str, object]:
        return {"Store": self.store, "Advertise": self.advertise, "HostId": self.host_id,
                "Lease": str(self.lease), "TTL": self.ttl, "AgentPid": self.agent_pid}

    @property
    def urls(self) -> list[str]:
        from builder.network.cluster.etcd import parse_urls

        return parse_urls(self.store)


@frozen
class Host:
    id: str
    address: str
    name: str
    ttl: int


def config_path(state: StateRoot) -> Path:
    return state.path / "cluster.json"


def joined(state: StateRoot) -> bool:
    """Cheap: no import, no store access (every network command asks)."""
    return bool(os.environ.get(ENV_STORE)) or config_path(state).is_file()


def load(state: StateRoot) -> Membership | None:
    try:
        d = json.loads(config_path(state).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise NetworkError(f"corrupt cluster config {config_path(state)}: {e}") from e
    m = Membership(store=str(d["Store"]), advertise=str(d["Advertise"]), host_id=str(d["HostId"]),
                   lease=int(d.get("Lease") or 0), ttl=int(d.get("TTL") or default_ttl()),
                   agent_pid=int(d.get("AgentPid") or 0))
    env = os.environ.get(ENV_STORE)
    return replace(m, store=env) if env else m


def save(state: StateRoot, m: Membership) -> None:
    p = config_path(state)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(m.to_json(), indent=2) + "\n")
    os.replace(tmp, p)


def client(m: Membership, *, connect: float | None = None) -> Etcd:
    from builder.network.cluster.etcd import Etcd

    return Etcd(m.urls, connect=connect)


def require(state: StateRoot) -> Membership:
    """The membership, joining on first use when only ``PYBUILD_CLUSTER_STORE`` is set; the
    agent is (re)started if it is not running."""
    m = load(state)
    if m is None:
        env = os.environ.get(ENV_STORE)
        if not env:
            raise NetworkError("this host is not in a cluster: run `pybuild cluster join etcd://HOST:PORT,… "
                               "--advertise ADDR` (or set PYBUILD_CLUSTER_STORE)")
        return join(state, env, "")
    ensure_agent(state, m)
    return load(state) or m


def _route_source(url: str) -> str:
    import socket  # not on a local network's path (the bridge run's budget)

    host, _, port = url.removeprefix("http://").partition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, int(port or 2379)))
        return str(s.getsockname()[0])


def host_value(m: Membership) -> str:
    import socket  # not on a local network's path (the bridge run's budget)

    return json.dumps({"Id": m.host_id, "Addr": m.advertise, "Name": socket.gethostname()})


def join(state: StateRoot, store: str, advertise: str, *, ttl: int | None = None) -> Membership:
    from builder.network.cluster.etcd import parse_urls

    urls = parse_urls(store)
    old = load(state)
    if old is not None and old.store != store:
        raise NetworkError.conflict(f"this host is already in cluster {old.store}: run `pybuild cluster leave` first")
    if not advertise:
        advertise = old.advertise if old else _route_source(urls[0])
    try:
        if ipaddress.ip_address(advertise).version != 4:
            raise ValueError
    except ValueError:
        raise NetworkError.invalid(f"invalid --advertise address {advertise!r} (an IPv4 address of this host)") from None
    m = Membership(store=store, advertise=advertise, host_id=old.host_id if old else os.urandom(8).hex(),
                   lease=old.lease if old else 0, ttl=ttl or (old.ttl if old else default_ttl()))
    etcd = client(m)
    try:
        m = renew(state, m, etcd)
    finally:
        etcd.close()
    ensure_agent(state, m)
    return m


def renew(state: StateRoot, m: Membership, etcd: Etcd) -> Membership:
    """Keep the lease alive, or grant a new one (and put the host key on it) if it expired.
    One renewer at a time (the agent, or a command that found the lease gone): a lease another
    one granted meanwhile is taken, not replaced."""
    if m.lease and etcd.keepalive(m.lease) > 0:
        return m
    with state.lock("cluster"):
        cur = load(state) or m
        if cur.lease != m.lease and cur.lease and etcd.keepalive(cur.lease) > 0:
            return cur
        cur = replace(cur, lease=etcd.grant(cur.ttl))
        etcd.put(HOSTS + cur.host_id, host_value(cur), lease=cur.lease)
        save(state, cur)
        return cur


def agent_module(pid: int, state: StateRoot) -> str | None:
    """The module *pid* runs as *state*'s agent under (this layout's ``AGENT`` or an earlier
    one's), or None: not our agent (gone, or a reused pid)."""
    return next((name for name in dict.fromkeys((AGENT, *AGENT_BEFORE))
                 if helpers.is_ours(pid, name, str(state.path))), None)


def ensure_agent(state: StateRoot, m: Membership) -> None:
    if m.agent_pid and agent_module(m.agent_pid, state):
        return
    with state.lock("cluster"):
        cur = load(state) or m
        if cur.agent_pid and agent_module(cur.agent_pid, state):
            return
        pid = helpers.spawn(AGENT, [str(state.path)], [])
        save(state, replace(cur, agent_pid=pid))


def leave(state: StateRoot, *, force: bool = False) -> None:
    """Stop the agent and revoke the lease (the host key, and every endpoint and address of this
    host, go with it); the root forgets the cluster. (``network.core.leave_cluster`` first refuses
    while this host's containers are on overlay networks.)"""
    m = load(state)
    if m is None:
        raise NetworkError("this host is not in a cluster")
    if m.agent_pid:
        helpers.stop(m.agent_pid, agent_module(m.agent_pid, state) or AGENT, str(state.path))
    config_path(state).unlink(missing_ok=True)
    etcd = client(m)
    try:
        if m.lease:
            with contextlib.suppress(NetworkError) if force else contextlib.nullcontext():
                etcd.revoke(m.lease)
    finally:
        etcd.close()


def hosts(state: StateRoot) -> list[Host]:
    m = require(state)
    etcd = client(m)
    try:
        kvs, _ = etcd.range(HOSTS)
        out = []
        for kv in kvs:
            d = kv.json()
            out.append(Host(id=str(d["Id"]), address=str(d["Addr"]), name=str(d.get("Name", "")), ttl=0))
        return out
    finally:
        etcd.close()
