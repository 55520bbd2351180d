"""What a container uses: its processes (``top``) and the bytes of its layers (``ps -s``,
``inspect -s``).
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from builder.base.errors import ContainerError
from builder.base.state import StateRoot
from builder.base.values import frozen
from builder.runtime.containers.record import Container, ContainerStore
from builder.runtime.containers.repair import init_alive

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


# -- sizes ------------------------------------------------------------------------------------
def sizes(root: StateRoot, c: Container) -> tuple[int, int]:
    """(SizeRw, SizeRootFs): bytes in the container's writable layer, and that plus its image's
    layers (what ``ps -s`` and ``inspect -s`` show)."""
    cdir = ContainerStore(root).dir(c.id)
    rw = _du(cdir / "upper") if (cdir / "upper").is_dir() else _du(cdir / "rootfs")
    image = 0
    with contextlib.suppress(Exception):
        img = root.image_store().resolve(c.image_id)
        image = sum(root.image_store().content_size(layer) for layer in img.layers)
    return rw, rw + image


def _du(path: Any) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for n in filenames + dirnames:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, n))
                total += st.st_size if not os.path.isdir(os.path.join(dirpath, n)) else 0
    return total


# -- top --------------------------------------------------------------------------------------
@frozen
class Process:
    """One process of a container, as ``docker top`` (``ps -ef``) lists it."""

    uid: str
    pid: int
    ppid: int
    stime: int  # start time, clock ticks after boot
    time: int  # CPU seconds, user and system
    cmd: str
    tty: str = "?"


def processes(c: Container) -> list[Process]:
    """Host processes in the container's pid namespace (what ``docker top`` lists); with
    ``--pid host``, those of its cgroup (as dockerd's ``runc ps``)."""
    st = c.state
    if st.status != "running" or not init_alive(st):
        raise ContainerError.conflict(f"container {c.id} is not running")
    try:
        ns = os.readlink(f"/proc/{st.pid}/ns/pid")
    except OSError as e:
        raise ContainerError.conflict(f"container {c.id} is not running: {e.strerror}") from None
    members = _cgroup_members(st.pid) if c.host_config.pid_mode == "host" else None
    out: list[Process] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            if (os.readlink(f"/proc/{pid}/ns/pid") != ns) if members is None else pid not in members:
                continue
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            status = _status_fields(pid)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ESRCH, errno.EACCES, errno.EPERM):
                continue  # gone meanwhile, or a host process we may not inspect (not ours)
            raise
        rest = stat[stat.rfind(b")") + 2 :].split()
        comm = stat[stat.find(b"(") + 1 : stat.rfind(b")")].decode(errors="replace")
        args = [a.decode(errors="replace") for a in cmdline.split(b"\0") if a]
        out.append(Process(
            uid=status.get("Uid", "0").split()[0], pid=pid, ppid=int(rest[1]), stime=int(rest[19]),
            time=(int(rest[11]) + int(rest[12])) // os.sysconf("SC_CLK_TCK"),
            cmd=" ".join(args) if args else f"[{comm}]",
        ))
    out.sort(key=lambda p: p.pid)
    return out


def _status_fields(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in f)}


def _cgroup_members(pid: int) -> set[int]:
    """The processes of *pid*'s sandbox cgroups."""
    from builder.core.sandbox import cgroups

    out: set[int] = set()
    for d in cgroups.cgroup_paths_of(pid):
        with contextlib.suppress(OSError, ValueError):
            out.update(int(x) for x in Path(d, "cgroup.procs").read_text().split())
    return out
