"""Helpers shared by the execution-core tests: host snapshots and a busybox layer cache."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

CGROUP_BASE = Path("/sys/fs/cgroup")


def descendants(pid: int | None = None) -> set[tuple[int, str]]:
    """(pid, comm) of every live descendant of *pid* (default: this process)."""
    root = pid or os.getpid()
    children: dict[int, list[int]] = {}
    comm: dict[int, str] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            data = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        name = data[data.index("(") + 1:data.rindex(")")]
        ppid = int(data.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(d))
        comm[int(d)] = name
    out: set[tuple[int, str]] = set()
    todo = [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add((c, comm[c]))
            todo.append(c)
    return out


#: sandbox ids made by these tests start with this (other engineers' sandboxes may run meanwhile)
ID_PREFIX = f"pbt{os.getpid()}x"


def pybuild_cgroups() -> set[str]:
    """Our sandboxes' cgroup dirs (under ``pybuild/`` in every hierarchy)."""
    out: set[str] = set()
    for hier in CGROUP_BASE.iterdir():
        base = hier / "pybuild"
        if base.is_dir():
            for dirpath, dirnames, _ in os.walk(base):
                out.update(os.path.join(dirpath, d) for d in dirnames if d.startswith(ID_PREFIX))
    return out


def processes_in_pybuild_cgroups() -> set[int]:
    pids: set[int] = set()
    for d in pybuild_cgroups():
        try:
            pids.update(int(x) for x in Path(d, "cgroup.procs").read_text().split())
        except OSError:
            pass
    return pids


def mountinfo(scope: str = "/") -> list[str]:
    """Host mounts that mention *scope* (our temp dirs: where every mount of ours would be)."""
    return sorted(line for line in Path("/proc/self/mountinfo").read_text().splitlines() if scope in line)


class HostSnapshot:
    """Mounts, our sandboxes' cgroups and our descendant processes, to compare before and after.

    *scope*: a path prefix every mount of ours would mention (the pytest base temp dir), so
    that mounts other test sessions make meanwhile do not count.
    """

    def __init__(self, scope: str = "/") -> None:
        self.scope = scope
        self.mounts = mountinfo(scope)
        self.cgroups = pybuild_cgroups()
        self.children = descendants()
        self.cg_procs = processes_in_pybuild_cgroups()

    def assert_same(self, *, ignore_children: frozenset[int] = frozenset()) -> None:
        after = HostSnapshot(self.scope)
        assert after.mounts == self.mounts, "mounts changed:\n" + "\n".join(
            sorted(set(after.mounts) ^ set(self.mounts)))
        assert after.cgroups == self.cgroups
        assert {c for c in after.children if c[0] not in ignore_children} == self.children
        assert after.cg_procs == self.cg_procs


def tree_digest(root: Path) -> str:
    """A digest of a directory tree: names, types, modes, owners, link targets, file bytes."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            h.update(f"{os.path.relpath(p, root)}|{st.st_mode}|{st.st_uid}|{st.st_gid}|{st.st_rdev}".encode())
            if os.path.islink(p):
                h.update(os.readlink(p).encode())
            elif os.path.isfile(p):
                h.update(Path(p).read_bytes())
    return h.hexdigest()


def new_id() -> str:
    return ID_PREFIX + secrets.token_hex(4)


def all_pybuild_cgroups() -> set[str]:
    """Every sandbox cgroup dir, whoever made it."""
    out: set[str] = set()
    for hier in CGROUP_BASE.iterdir():
        base = hier / "pybuild"
        if base.is_dir():
            out.update(str(p) for p in base.iterdir() if p.is_dir())
    return out


def assert_no_new_cgroups(before: set[str], *, grace: float = 5.0) -> None:
    """Cgroups made since *before* must be gone after *grace* seconds.

    Other test sessions may start containers meanwhile: a new cgroup that still holds processes
    after the grace is someone's live container; an empty one that stays is a leak of ours.
    """
    import time

    deadline = time.monotonic() + grace
    while True:
        new = all_pybuild_cgroups() - before
        if not new:
            return
        if time.monotonic() > deadline:
            # another session's sandbox tests name theirs ``pbt<their pid>x…``: not ours to judge
            leaked = [d for d in new if Path(d).is_dir() and not Path(d, "cgroup.procs").read_text().split()
                      and (not Path(d).name.startswith("pbt") or Path(d).name.startswith(ID_PREFIX))]
            assert not leaked, f"cgroups left behind: {sorted(leaked)}"
            return
        time.sleep(0.1)
