"""From a container record to a running sandbox and back: spec assembly (rootfs, mounts,
network, resources, user), launch, exec, healthcheck commands, and teardown from state.

The supervisor and the CLI call these; only this module knows the sandbox's and the network's APIs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from builder.containers.record import Container, ContainerStore, State
from builder.state import StateRoot

#: Docker's HEALTHCHECK defaults
HEALTH_INTERVAL = 30.0
HEALTH_TIMEOUT = 30.0
HEALTH_RETRIES = 3


@dataclass(frozen=True)
class HealthConfig:
    test: tuple[str, ...]  # argv to exec in the container
    interval: float
    timeout: float
    start_period: float
    retries: int


def healthcheck_of(c: Container) -> HealthConfig | None:
    """The effective healthcheck (``None`` for none or ``NONE``)."""
    hc: Mapping[str, Any] | None = c.config.get("Healthcheck")
    if not hc or not hc.get("Test"):
        return None
    test = list(hc["Test"])
    kind = test[0]
    if kind == "NONE":
        return None
    if kind == "CMD-SHELL":
        argv: tuple[str, ...] = ("/bin/sh", "-c", " ".join(test[1:]))
    elif kind == "CMD":
        argv = tuple(test[1:])
    else:  # Docker accepts a bare command list as CMD
        argv = tuple(test)
    if not argv:
        return None

    def secs(key: str, default: float) -> float:
        v = hc.get(key) if hc else None
        return float(v) / 1e9 if v else default

    return HealthConfig(
        test=argv,
        interval=secs("Interval", HEALTH_INTERVAL),
        timeout=secs("Timeout", HEALTH_TIMEOUT),
        start_period=secs("StartPeriod", 0.0),
        retries=int(hc.get("Retries") or HEALTH_RETRIES),
    )


def teardown(root: StateRoot, c: Container, state: State) -> None:
    """Undo what a start made (sandbox mounts/cgroup/processes, network endpoints, proxies);
    safe to call again, and after a crash, from the persisted state alone."""
    if state.sandbox:
        from builder import sandbox

        with contextlib.suppress(Exception):
            sandbox.teardown(state.sandbox)
    if state.endpoints or _has_network_state(root, c.id):
        from builder import network

        network.release(root, c.id)


def _has_network_state(root: StateRoot, cid: str) -> bool:
    """Whether any network record or netns file still mentions *cid* (cheap: no pyroute2)."""
    if (root.run / "netns" / cid).exists() or (root.run / "net" / cid).exists():
        return True
    if not root.networks.is_dir():
        return False
    needle = cid.encode()
    for p in root.networks.glob("*.json"):
        with contextlib.suppress(OSError):
            if needle in p.read_bytes():
                return True
    return False


def remove_storage(root: StateRoot, c: Container, *, volumes: bool) -> None:
    """Before the record goes: the container's anonymous volumes with *volumes* (``rm -v``)."""
    if not volumes:
        return
    anon = [m for m in c.mounts if m.get("Type") == "volume" and m.get("Anonymous")]
    if not anon:
        return
    from builder import volume

    for m in anon:
        with contextlib.suppress(Exception):
            volume.remove_volume(root, str(m["Name"]), in_use_by=ContainerStore(root).ids())
