"""The host agent: ``python -m builder.network.cluster.agent ROOT``, one detached process per state root
in a cluster (started by ``cluster join``, restarted by any overlay command that finds it gone,
stopped by ``cluster leave`` and ``system reset``).

pybuild has no daemon, yet a container started on host B must become reachable from host A with
no command typed on A, and a host's lease must be refreshed while it lives. The agent does both:
a thread refreshes the lease every TTL/3 (re-granting it, and re-publishing this host's
endpoints, when the store lost it), and the main loop reads the store and then follows one
watch on ``pybuild/``, writing VXLAN forwarding and neighbour entries and the local records'
remote endpoints (what the embedded DNS answers from) as endpoints come and go. When the store
is down it retries; what the kernel holds keeps running containers talking meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from pathlib import Path

from builder.base.errors import NetworkError
from builder.base.state import StateRoot
from builder.network import core, links, overlay
from builder.network.cluster import membership
from builder.network.cluster.etcd import ClusterError, Etcd, Event
from builder.network.model import Network


class Agent:
    def __init__(self, state: StateRoot) -> None:
        self.state = state
        m = membership.load(state)
        if m is None:
            raise SystemExit(0)
        self.m = m
        self.resync = threading.Event()

    def keepalive(self) -> None:
        etcd = membership.client(self.m)
        while True:
            m = membership.load(self.state)
            if m is None:  # left the cluster
                os_exit()
            assert m is not None
            try:
                renewed = membership.renew(self.state, m, etcd)
                if renewed.lease != self.m.lease:  # a new lease (ours or a command's): republish
                    self.resync.set()
                self.m = renewed
            except (ClusterError, OSError):
                self.resync.set()
            time.sleep(max(0.3, self.m.ttl / 3))

    def records(self) -> list[Network]:
        with self.state.lock("networks"):
            return [n for n in core._load_all(self.state) if n.driver == "overlay"]

    def reconcile(self, etcd: Etcd) -> int:
        """Everything from a fresh read: networks, this host's keys, the remote entries."""
        _, rev = etcd.range(overlay.NETS)
        core._sync(self.state)
        overlay.republish(self.state, self.m, etcd, self.records())
        for net in self.records():
            self.refresh(etcd, net.id)
        return rev

    def refresh(self, etcd: Etcd, network_id: str) -> None:
        kvs, _ = etcd.range(f"{overlay.EPS}{network_id}/")
        with self.state.lock("networks"), links.session():
            net = next((n for n in core._load_all(self.state) if n.id == network_id), None)
            if net is None or not net.containers:
                return
            want = dict(r for kv in kvs if (r := overlay.parse_endpoint(net, kv.key, kv.value, self.m.host_id)))
            updated = overlay.program(net, want)
            if updated.remote != net.remote:
                core._save(self.state, updated)

    def handle(self, etcd: Etcd, events: list[Event]) -> None:
        if any(ev.kv.key.startswith(overlay.NETS) for ev in events):
            core._sync(self.state)
        for nid in overlay.event_networks(events):
            self.refresh(etcd, nid)

    def run(self) -> None:
        threading.Thread(target=self.keepalive, daemon=True).start()
        etcd = membership.client(self.m)
        etcd.timeout = 2.0
        while True:
            try:
                self.resync.clear()
                rev = self.reconcile(etcd)
                for events in etcd.watch(membership.PREFIX, rev + 1, idle=5.0):
                    if events:
                        self.handle(etcd, events)
                    if self.resync.is_set():
                        break
            except (ClusterError, NetworkError, OSError):
                time.sleep(0.3)


def os_exit() -> None:
    os._exit(0)


def main(argv: list[str]) -> int:
    state = StateRoot(Path(argv[0]))
    with contextlib.suppress(KeyboardInterrupt):
        Agent(state).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
