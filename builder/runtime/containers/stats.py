"""``stats`` and ``update``: a container's resource use in Docker's stats JSON (cgroup v1 or v2
files, the host's CPU time, the container's netns counters) and live changes to its limits.

``stats``/``stream``/``sample`` give what ``GET /containers/{id}/stats`` returns; ``figures``
does the Docker CLI's arithmetic (CPU %, memory without the page cache, I/O sums) for a row;
``update`` is ``docker update``: the live cgroup when running, and the record in every case.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.base.errors import ContainerError, SandboxError
from builder.base.state import StateRoot
from builder.base.values import replace
from builder.core.sandbox import cgroups
from builder.core.sandbox.cgroups import read_int
from builder.runtime.containers import lifecycle
from builder.runtime.containers.hostconfig import HostConfig
from builder.runtime.containers.options import ZERO_TIME, RestartPolicy, rfc3339nano
from builder.runtime.containers.record import Container

#: how often a streamed ``stats`` samples (Docker's collector interval)
INTERVAL = 1.0
#: Docker's minimum memory limit
MIN_MEMORY = 6 * 1024 * 1024


# -- reading cgroup files ---------------------------------------------------------------------
def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _flat_keyed(text: str | None) -> dict[str, int]:
    """``key value`` lines (``memory.stat``, ``cpu.stat``, ``cpuacct.stat``)."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        k, _, v = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[k] = int(v)
    return out


def _v1_blkio(text: str | None) -> list[dict[str, Any]] | None:
    """``8:0 Read 4096`` lines → Docker's ``BlkioStatEntry`` list (``Total`` lines dropped)."""
    if text is None:
        return None
    out: list[dict[str, Any]] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3 or ":" not in parts[0]:
            continue
        major, _, minor = parts[0].partition(":")
        with contextlib.suppress(ValueError):
            out.append({"major": int(major), "minor": int(minor), "op": parts[1], "value": int(parts[2])})
    return out


def _v2_io(text: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``io.stat`` (``8:0 rbytes=1 wbytes=2 rios=3 wios=4 …``) → (bytes, ios) entries with
    Docker's lower-case ``read``/``write`` ops."""
    nbytes: list[dict[str, Any]] = []
    nios: list[dict[str, Any]] = []
    for line in (text or "").splitlines():
        parts = line.split()
        if not parts or ":" not in parts[0]:
            continue
        major, _, minor = parts[0].partition(":")
        kv = dict(p.partition("=")[::2] for p in parts[1:])
        try:
            dev = {"major": int(major), "minor": int(minor)}
            for key, op, target in (("rbytes", "read", nbytes), ("wbytes", "write", nbytes),
                                    ("rios", "read", nios), ("wios", "write", nios)):
                if key in kv:
                    target.append({**dev, "op": op, "value": int(kv[key])})
        except ValueError:
            continue
    return nbytes, nios


def _empty_blkio() -> dict[str, Any]:
    return {k: None for k in ("io_service_bytes_recursive", "io_serviced_recursive", "io_queue_recursive",
                              "io_service_time_recursive", "io_wait_time_recursive", "io_merged_recursive",
                              "io_time_recursive", "sectors_recursive")}


def read_cgroup(dirs: Sequence[str | Path]) -> dict[str, Any]:
    """Docker's ``memory_stats``, ``cpu_stats.cpu_usage`` (+ ``throttling_data``),
    ``pids_stats`` and ``blkio_stats`` from a container's cgroup directories, v1 (one per
    hierarchy) or v2 (one directory). Figures no directory holds are left out or 0."""
    memory: dict[str, Any] = {}
    usage: dict[str, Any] = {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0}
    throttling = {"periods": 0, "throttled_periods": 0, "throttled_time": 0}
    pids: dict[str, Any] = {}
    blkio = _empty_blkio()
    ticks = os.sysconf("SC_CLK_TCK")
    for d in map(Path, dirs):
        # -- v1 ---------------------------------------------------------------------------------
        if (d / "memory.usage_in_bytes").exists():
            memory["usage"] = read_int(d / "memory.usage_in_bytes") or 0
            memory["max_usage"] = read_int(d / "memory.max_usage_in_bytes") or 0
            memory["failcnt"] = read_int(d / "memory.failcnt") or 0
            memory["stats"] = _flat_keyed(_read(d / "memory.stat"))
            memory["limit"] = read_int(d / "memory.limit_in_bytes")
        if (d / "cpuacct.usage").exists():
            usage["total_usage"] = read_int(d / "cpuacct.usage") or 0
            percpu = (_read(d / "cpuacct.usage_percpu") or "").split()
            usage["percpu_usage"] = [int(x) for x in percpu if x.isdigit()]
            st = _flat_keyed(_read(d / "cpuacct.stat"))
            usage["usage_in_usermode"] = st.get("user", 0) * 1_000_000_000 // ticks
            usage["usage_in_kernelmode"] = st.get("system", 0) * 1_000_000_000 // ticks
        if (d / "cpu.cfs_quota_us").exists():
            st = _flat_keyed(_read(d / "cpu.stat"))
            throttling = {"periods": st.get("nr_periods", 0), "throttled_periods": st.get("nr_throttled", 0),
                          "throttled_time": st.get("throttled_time", 0)}
        if (d / "blkio.weight").exists() or (d / "blkio.throttle.io_service_bytes_recursive").exists():
            for key, files in (("io_service_bytes_recursive", ("blkio.io_service_bytes_recursive",
                                                               "blkio.throttle.io_service_bytes_recursive")),
                               ("io_serviced_recursive", ("blkio.io_serviced_recursive",
                                                          "blkio.throttle.io_serviced_recursive"))):
                for f in files:  # Docker falls back to the throttle files when CFQ's are empty
                    entries = _v1_blkio(_read(d / f))
                    if entries:
                        blkio[key] = entries
                        break
        # -- v2 ---------------------------------------------------------------------------------
        if (d / "memory.current").exists():
            memory["usage"] = read_int(d / "memory.current") or 0
            memory["stats"] = _flat_keyed(_read(d / "memory.stat"))
            memory["limit"] = read_int(d / "memory.max")
        if (d / "cgroup.controllers").exists() and (d / "cpu.stat").exists():
            st = _flat_keyed(_read(d / "cpu.stat"))
            usage["total_usage"] = st.get("usage_usec", 0) * 1000
            usage["usage_in_usermode"] = st.get("user_usec", 0) * 1000
            usage["usage_in_kernelmode"] = st.get("system_usec", 0) * 1000
            if "nr_periods" in st:
                throttling = {"periods": st.get("nr_periods", 0), "throttled_periods": st.get("nr_throttled", 0),
                              "throttled_time": st.get("throttled_usec", 0) * 1000}
        if (d / "io.stat").exists():
            nbytes, nios = _v2_io(_read(d / "io.stat"))
            blkio["io_service_bytes_recursive"] = nbytes
            blkio["io_serviced_recursive"] = nios
        # -- both -------------------------------------------------------------------------------
        if (d / "pids.current").exists():
            pids["current"] = read_int(d / "pids.current") or 0
            limit = read_int(d / "pids.max")
            if limit is not None:
                pids["limit"] = limit
    if memory:
        host = host_memory()
        if not memory.get("limit") or memory["limit"] > host:
            memory["limit"] = host  # unlimited: the host's memory, as Docker reports it
    return {"memory_stats": memory, "cpu_usage": usage, "throttling_data": throttling,
            "pids_stats": pids, "blkio_stats": blkio}


def host_memory() -> int:
    for line in (_read(Path("/proc/meminfo")) or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def system_cpu_usage() -> int:
    """The host's CPU time in ns, as Docker counts it (``/proc/stat``'s first seven fields)."""
    for line in (_read(Path("/proc/stat")) or "").splitlines():
        if line.startswith("cpu "):
            total = sum(int(x) for x in line.split()[1:8])
            return total * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    return 0


def online_cpus() -> int:
    return int(os.sysconf("SC_NPROCESSORS_ONLN"))


def net_dev(text: str | None, *, skip: Sequence[str] = ("lo",)) -> dict[str, dict[str, int]]:
    """``/proc/<pid>/net/dev`` → Docker's ``networks`` (rx/tx bytes, packets, errors, drops)."""
    out: dict[str, dict[str, int]] = {}
    for line in (text or "").splitlines()[2:]:
        name, _, rest = line.partition(":")
        name = name.strip()
        f = rest.split()
        if not name or name in skip or len(f) < 16:
            continue
        out[name] = {"rx_bytes": int(f[0]), "rx_packets": int(f[1]), "rx_errors": int(f[2]),
                     "rx_dropped": int(f[3]), "tx_bytes": int(f[8]), "tx_packets": int(f[9]),
                     "tx_errors": int(f[10]), "tx_dropped": int(f[11])}
    return out


# -- one sample -------------------------------------------------------------------------------
def _empty_cpu() -> dict[str, Any]:
    return {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}


def _running(c: Container) -> bool:
    return c.state.status == "running" and lifecycle.init_alive(c.state)


def sample(c: Container, previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Docker's stats JSON for *c* now; ``precpu_stats``/``preread`` from *previous* (an
    earlier sample of the same container) when given. A container that is not running gives
    Docker's zero sample (``read`` at the zero time)."""
    out: dict[str, Any] = {
        "name": "/" + c.name, "id": c.id, "read": ZERO_TIME, "preread": ZERO_TIME, "num_procs": 0,
        "pids_stats": {}, "blkio_stats": _empty_blkio(), "storage_stats": {},
        "cpu_stats": _empty_cpu(), "precpu_stats": _empty_cpu(), "memory_stats": {},
    }
    if previous is not None and previous.get("read") != ZERO_TIME:
        out["precpu_stats"] = previous["cpu_stats"]
        out["preread"] = previous["read"]
    if not _running(c):
        return out
    with contextlib.suppress(OSError):
        dirs = cgroups.cgroup_paths_of(c.state.pid)
        got = read_cgroup(dirs)
        out["memory_stats"] = got["memory_stats"]
        out["pids_stats"] = got["pids_stats"]
        out["blkio_stats"] = got["blkio_stats"]
        out["cpu_stats"] = {"cpu_usage": got["cpu_usage"], "system_cpu_usage": system_cpu_usage(),
                            "online_cpus": online_cpus(), "throttling_data": got["throttling_data"]}
    mode = c.host_config.network_mode
    if mode != "host" and not mode.startswith("container:"):
        networks = net_dev(_read(Path(f"/proc/{c.state.pid}/net/dev")))
        if networks:
            out["networks"] = networks
    out["read"] = rfc3339nano()
    return out


def stats(root: StateRoot, ref: str, *, one_shot: bool = False, interval: float = INTERVAL) -> dict[str, Any]:
    """``GET /containers/{id}/stats?stream=false``: two samples *interval* apart, so
    ``precpu_stats`` is filled (``one_shot``: one sample, ``precpu_stats`` empty)."""
    c = lifecycle.get(root, ref)
    first = sample(c)
    if one_shot or first["read"] == ZERO_TIME:
        return first
    time.sleep(interval)
    return sample(lifecycle.get(root, c.id), first)


def stream(root: StateRoot, ref: str, *, interval: float = INTERVAL) -> Generator[dict[str, Any], None, None]:
    """``stream=true``: a sample every *interval* seconds, each with the previous one as its
    ``precpu_stats``, until the container stops (its last sample is the zero one)."""
    c = lifecycle.get(root, ref)
    previous: dict[str, Any] | None = None
    while True:
        with contextlib.suppress(ContainerError):
            c = lifecycle.get(root, c.id)
        s = sample(c, previous)
        yield s
        if s["read"] == ZERO_TIME:
            return
        previous = s
        time.sleep(interval)


# -- the CLI's arithmetic ---------------------------------------------------------------------
@dataclass(frozen=True)
class Figures:
    """One ``docker stats`` row as numbers (Docker CLI's ``calculate*`` functions)."""

    cpu_percent: float
    mem_usage: int
    mem_limit: int
    mem_percent: float
    net_rx: int
    net_tx: int
    block_read: int
    block_write: int
    pids: int


def figures(s: Mapping[str, Any]) -> Figures:
    cpu, pre = s.get("cpu_stats") or {}, s.get("precpu_stats") or {}
    cpu_delta = cpu.get("cpu_usage", {}).get("total_usage", 0) - pre.get("cpu_usage", {}).get("total_usage", 0)
    system_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    ncpu = cpu.get("online_cpus") or len(cpu.get("cpu_usage", {}).get("percpu_usage") or ())
    cpu_percent = cpu_delta / system_delta * ncpu * 100.0 if system_delta > 0 and cpu_delta > 0 else 0.0
    mem = s.get("memory_stats") or {}
    usage = int(mem.get("usage") or 0)
    st = mem.get("stats") or {}
    # the page cache the kernel can drop is not "used": v1 total_inactive_file, v2 inactive_file
    for key in ("total_inactive_file", "inactive_file"):
        if key in st:
            if st[key] < usage:
                usage -= st[key]
            break
    limit = int(mem.get("limit") or 0)
    rx = sum(n.get("rx_bytes", 0) for n in (s.get("networks") or {}).values())
    tx = sum(n.get("tx_bytes", 0) for n in (s.get("networks") or {}).values())
    read = write = 0
    for e in (s.get("blkio_stats") or {}).get("io_service_bytes_recursive") or ():
        op = str(e.get("op", "")).lower()
        if op == "read":
            read += int(e.get("value", 0))
        elif op == "write":
            write += int(e.get("value", 0))
    return Figures(cpu_percent=cpu_percent, mem_usage=usage, mem_limit=limit,
                   mem_percent=usage / limit * 100.0 if limit else 0.0, net_rx=rx, net_tx=tx,
                   block_read=read, block_write=write, pids=int((s.get("pids_stats") or {}).get("current") or 0))


# -- update -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Update:
    """What ``docker update`` changes; None leaves a setting as it is. ``memory_swap`` -1 is
    unlimited swap; ``pids_limit`` <= 0 lifts the limit; ``nano_cpus`` 0 lifts the quota."""

    memory: int | None = None
    memory_swap: int | None = None
    nano_cpus: int | None = None
    cpu_shares: int | None = None
    pids_limit: int | None = None
    restart_policy: RestartPolicy | None = None

    @property
    def empty(self) -> bool:
        return all(v is None for v in (self.memory, self.memory_swap, self.nano_cpus, self.cpu_shares,
                                       self.pids_limit, self.restart_policy))


def _checked(c: Container, u: Update) -> tuple[HostConfig, Update]:
    """The new ``HostConfig`` and the live changes to make, or ``ContainerError`` (Docker's rules)."""
    hc = c.host_config
    r = hc.resources
    if u.memory is not None and u.memory != 0 and u.memory < MIN_MEMORY:
        raise ContainerError("Minimum memory limit allowed is 6MB")
    memory, swap = r.memory, r.memory_swap
    new_memory = u.memory if u.memory else memory
    new_swap = swap
    if u.memory_swap is not None and u.memory_swap != 0:
        if not new_memory:
            raise ContainerError("You should always set the Memory limit when using Memoryswap limit")
        if u.memory_swap != -1 and u.memory_swap < new_memory:
            raise ContainerError("Minimum memoryswap limit should be larger than memory limit, see usage")
        new_swap = u.memory_swap
    elif u.memory:
        if swap > 0 and u.memory > swap:
            raise ContainerError.conflict("Memory limit should be smaller than already set memoryswap limit, "
                                 "update the memoryswap at the same time")
        if swap == 0:
            new_swap = 2 * u.memory  # Docker's default for a container given its first limit
    if u.nano_cpus is not None:
        if u.nano_cpus < 0:
            raise ContainerError("Range of CPUs is from 0.01 to "
                                 f"{online_cpus()}.00, as there are only {online_cpus()} CPUs available")
        if u.nano_cpus and not 10_000_000 <= u.nano_cpus <= online_cpus() * 1_000_000_000:
            raise ContainerError(f"Range of CPUs is from 0.01 to {online_cpus()}.00, "
                                 f"as there are only {online_cpus()} CPUs available")
        r = replace(r, nano_cpus=u.nano_cpus)
    if u.cpu_shares is not None:
        if u.cpu_shares < 0:
            raise ContainerError.invalid(f"invalid CPU shares {u.cpu_shares}: must not be negative")
        r = replace(r, cpu_shares=u.cpu_shares)
    if u.restart_policy is not None:
        if hc.auto_remove and u.restart_policy.name != "no":
            raise ContainerError("Restart policy cannot be updated because AutoRemove is enabled for the container")
        hc = replace(hc, restart_policy=u.restart_policy)
    if u.pids_limit is not None:
        r = replace(r, pids_limit=u.pids_limit if u.pids_limit > 0 else None)
    if new_memory != memory or new_swap != swap:
        r = replace(r, memory=new_memory, memory_swap=new_swap)
    live = replace(u, memory=u.memory or None,
                   memory_swap=new_swap if (new_swap != swap or u.memory) and new_memory else None)
    return replace(hc, resources=r), live


def update(root: StateRoot, ref: str, u: Update) -> tuple[Container, list[str]]:
    """``docker update``: check *u* against the record, apply it to the live cgroup when the
    container runs (nothing is saved when the kernel refuses), then save it in the record so
    the next start keeps it. Returns the updated container and Docker's warnings."""
    cs = lifecycle.store(root)
    c = lifecycle.get(root, ref)
    with cs.lock(c.id):
        c = cs.load(c.id)
        hc, live = _checked(c, u)
        if _running(c):
            try:
                cgroups.set_limits(
                    cgroups.cgroup_paths_of(c.state.pid), memory=live.memory, memory_swap=live.memory_swap,
                    cpus=None if live.nano_cpus is None else live.nano_cpus / 1e9,
                    cpu_shares=live.cpu_shares, pids=live.pids_limit)
            except (SandboxError, OSError) as e:
                raise ContainerError(f"Cannot update container {c.id}: {e}") from None
        c = replace(c, host_config=hc)
        cs.save_config(c)
    lifecycle.emit(root, c, "update")
    return c, []
