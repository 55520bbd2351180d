"""cgroups for sandboxes: detect v1/hybrid/v2 from mountinfo, create ``pybuild/<id>``, limit, kill, remove.

v1 controllers (pids, devices; memory, cpu when limited) each get ``<mount>/pybuild/<id>``; pure v2
(or a v2 mount with controllers) gets one there and has its controllers enabled. Each is tagged
with the state root that made it by an owner record (``OWNERS/<id>``), for sweeps of deleted roots.
"""

from __future__ import annotations

import _signal  # not signal (its enums, ~1 ms): the numbers are enough
import _thread  # not threading (~1.5 ms at start-up) for the one thread below
import contextlib
import errno
import os
import time
from pathlib import Path

from builder import TYPE_CHECKING
from builder.base.errors import SandboxError
from builder.base.values import field, frozen

if TYPE_CHECKING:
    from builder.core.sandbox.spec import Resources

PARENT = "pybuild"
#: ``<id>`` -> ``"<mount-id maj:min inode> <root path>"`` (``builder.base.state.identity``) of the root
#: whose sandbox made ``pybuild/<id>``: a cgroup dir cannot hold a file of ours, and a per-root
#: level under ``pybuild/`` would move every path ``runc``, ``exec`` and ``stats`` use. Kept on
#: the host (a reboot clears it with the cgroups), written before the cgroup is made and removed
#: after it, so no cgroup of a sandbox is ever untagged; ``builder.network.sweep`` reads it.
OWNERS = Path("/run/pybuild/cgroup-owners")
V1_CONTROLLERS = ("memory", "cpu", "pids", "devices")
#: v1 hierarchies only a container joins (``Resources.account``): what ``stats`` reads
V1_ACCOUNTING = ("cpuacct", "blkio")

#: Docker's default device rules (v1 devices controller): mknod anything, use only these
DEVICE_RULES = (
    "c *:* m", "b *:* m",
    "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
    "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm", "c 10:200 rwm",
)


@frozen
class Layout:
    """Where the hierarchies are: v1 controller → mount point, and the cgroup2 mount (if any)."""

    v1: dict[str, str]
    v2: str | None
    v2_controllers: tuple[str, ...]
    v1_options: dict[str, str] = field(default_factory=dict)  # mount point → its controller options

    @property
    def version(self) -> int:
        return 1 if self.v1 else (2 if self.v2 else 0)

    def in_v2(self, path: str) -> bool:
        """Whether *path* is a cgroup directory below the v2 hierarchy's mount."""
        return self.v2 is not None and path.startswith(self.v2.rstrip("/") + "/")


_LAYOUT: Layout | None = None


def detect(mountinfo: str | None = None) -> Layout:
    """Read ``/proc/self/mountinfo`` (cached): never assume systemd or a fixed layout."""
    global _LAYOUT
    if mountinfo is None and _LAYOUT is not None:
        return _LAYOUT
    text = mountinfo if mountinfo is not None else Path("/proc/self/mountinfo").read_text()
    v1: dict[str, str] = {}
    v1_options: dict[str, str] = {}
    v2: str | None = None
    for line in text.splitlines():
        pre, _, post = line.partition(" - ")
        fields = pre.split()
        rest = post.split()
        if len(fields) < 5 or len(rest) < 3:
            continue
        point, fstype, opts = fields[4], rest[0], rest[2].split(",")
        if fstype == "cgroup":
            for c in (*V1_CONTROLLERS, *V1_ACCOUNTING, "cpuset"):
                if c in opts and c not in v1:
                    v1[c] = point
            keep = [o for o in opts if o not in ("rw", "ro", "relatime", "noatime", "nosuid", "nodev", "noexec")]
            v1_options.setdefault(point, ",".join(keep))
        elif fstype == "cgroup2" and v2 is None:
            v2 = point
    controllers: tuple[str, ...] = ()
    if v2 is not None:
        with contextlib.suppress(OSError):
            controllers = tuple(Path(v2, "cgroup.controllers").read_text().split())
    layout = Layout(v1=v1, v2=v2, v2_controllers=controllers, v1_options=v1_options)
    if mountinfo is None:
        _LAYOUT = layout
    return layout


def put(path: Path | str, value: bytes) -> None:
    """Write *value* to a cgroup file in one ``write``, as ``echo >`` does (``O_TRUNC`` lets a
    test use plain files); an ``OSError`` as the kernel gives it."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    try:
        os.write(fd, value)
    finally:
        os.close(fd)


def _write(path: Path | str, value: str) -> None:
    try:
        put(path, value.encode())
    except OSError as e:
        raise SandboxError(f"cgroup: cannot write {value!r} to {path}: {e.strerror}") from None


class Cgroup:
    """The cgroup directories of one sandbox (one per v1 hierarchy, and/or the v2 one); filled in
    by ``create`` (a plain class: it changes as the directories are made and removed)."""

    def __init__(self, id: str, paths: list[str] | None = None, memory: str | None = None,
                 v2: str | None = None, v2_limits: bool = False) -> None:
        self.id = id
        self.paths: list[str] = paths if paths is not None else []
        self.memory = memory  # the dir holding memory.* files
        self.v2 = v2  # the dir in the cgroup2 hierarchy (for cgroup.kill, v2 limits)
        self.v2_limits = v2_limits

    def __repr__(self) -> str:
        return f"Cgroup(id={self.id!r}, paths={self.paths!r}, memory={self.memory!r}, v2={self.v2!r})"

    # -- life cycle --------------------------------------------------------------------------------
    @classmethod
    def create(cls, sandbox_id: str, resources: Resources, layout: Layout | None = None, *,
               root: str | os.PathLike[str] | None = None) -> Cgroup:
        """*root*: the state root whose sandbox this is (its owner record names it)."""
        from builder.core.sandbox.spec import bare_chroot

        if bare_chroot():  # no privileges to make a cgroup (issue 17)
            rootless_check(resources, layout or detect())
            return cls(id=sandbox_id)
        layout = layout or detect()
        cg = cls(id=sandbox_id)
        try:
            if root is not None:
                record_owner(sandbox_id, root)
            seen: set[str] = set()
            # pids (to track and kill) and devices (to confine) always; memory and cpu only
            # when limited: a memory cgroup is the slowest to remove, and an unlimited one
            # would account nothing the caller asked for
            skip = {c for c, limited in (("memory", resources.memory is not None),
                                         ("cpu", resources.cpus is not None or resources.cpu_shares is not None))
                    if not limited and not resources.account}
            for ctrl in (*V1_CONTROLLERS, *(V1_ACCOUNTING if resources.account else ()),
                         *(("cpuset",) if resources.cpuset_cpus else ())):
                mnt = layout.v1.get(ctrl)
                if mnt is None or mnt in seen or ctrl in skip:
                    continue
                seen.add(mnt)
                if ctrl == "cpuset":  # a v1 cpuset starts empty: its parent's are copied down first
                    _cpuset_parent(Path(mnt))
                p = _mkdir(Path(mnt) / PARENT, sandbox_id)
                cg.paths.append(str(p))
                if ctrl == "cpuset":
                    _write(p / "cpuset.mems", (Path(mnt) / PARENT / "cpuset.mems").read_text().strip())
                if ctrl == "memory":
                    cg.memory = str(p)
            # a controller-less v2 mount beside v1 ones (hybrid) adds nothing but cgroup.kill,
            # and joining each hierarchy costs an RCU grace period: use it only when it has
            # controllers or is the only hierarchy
            if layout.v2 is not None and (layout.v2_controllers or not cg.paths):
                wanted = [c for c in ("memory", "cpu", "pids", *(("io",) if resources.account else ()),
                                      *(("cpuset",) if resources.cpuset_cpus else ()))
                          if c in layout.v2_controllers and c not in layout.v1]
                if wanted:
                    _write(Path(layout.v2, "cgroup.subtree_control"), " ".join("+" + c for c in wanted))
                    parent = Path(layout.v2) / PARENT
                    parent.mkdir(exist_ok=True)
                    _write(parent / "cgroup.subtree_control", " ".join("+" + c for c in wanted))
                    cg.v2_limits = True
                p = _mkdir(Path(layout.v2) / PARENT, sandbox_id)
                cg.v2 = str(p)
                cg.paths.append(str(p))
                if cg.memory is None and "memory" in layout.v2_controllers:
                    cg.memory = str(p)
            cg._limit(resources, layout)
        except BaseException:
            cg.remove()
            raise
        return cg

    def _limit(self, r: Resources, layout: Layout) -> None:
        for p in self.paths:  # (what is asked first: a plain run stats no file it leaves alone)
            d = Path(p)
            if r.memory is not None and (d / "memory.limit_in_bytes").exists():
                _write(d / "memory.limit_in_bytes", str(r.memory))
                if (d / "memory.memsw.limit_in_bytes").exists():
                    swap = r.memory_swap if r.memory_swap is not None else 2 * r.memory
                    _write(d / "memory.memsw.limit_in_bytes", str(-1 if swap < 0 else swap))
            if r.cpus is not None and (d / "cpu.cfs_quota_us").exists():
                _write(d / "cpu.cfs_period_us", "100000")
                _write(d / "cpu.cfs_quota_us", str(max(1000, int(r.cpus * 100000))))
            if r.cpu_shares and (d / "cpu.shares").exists():
                _write(d / "cpu.shares", str(r.cpu_shares))
            if r.pids is not None and (d / "pids.max").exists():
                _write(d / "pids.max", "max" if r.pids < 0 else str(r.pids))
            if r.cpuset_cpus and (d / "cpuset.cpus").exists():
                _write(d / "cpuset.cpus", r.cpuset_cpus)
            if (d / "devices.deny").exists():
                _write(d / "devices.deny", "a")
                for rule in (*DEVICE_RULES, *r.device_rules):
                    _write(d / "devices.allow", rule)
        if self.v2 is not None and self.v2_limits:
            d = Path(self.v2)
            if r.memory is not None and (d / "memory.max").exists():
                _write(d / "memory.max", str(r.memory))
                if (d / "memory.swap.max").exists():
                    swap = r.memory_swap if r.memory_swap is not None else 2 * r.memory
                    _write(d / "memory.swap.max", "max" if swap < 0 else str(max(0, swap - r.memory)))
            if r.cpus is not None and (d / "cpu.max").exists():
                _write(d / "cpu.max", f"{max(1000, int(r.cpus * 100000))} 100000")
            if r.cpu_shares and (d / "cpu.weight").exists():
                _write(d / "cpu.weight", str(shares_to_weight(r.cpu_shares)))
            if r.pids is not None and (d / "pids.max").exists():
                _write(d / "pids.max", "max" if r.pids < 0 else str(r.pids))
            if r.cpuset_cpus and (d / "cpuset.cpus").exists():
                _write(d / "cpuset.cpus", r.cpuset_cpus)

    @property
    def procs_files(self) -> list[str]:
        """The ``cgroup.procs`` files a new member writes ``0`` to (itself)."""
        return [os.path.join(p, "cgroup.procs") for p in self.paths]

    @property
    def v1_tasks_files(self) -> list[str]:
        """The v1 ``tasks`` files: a process of one thread writes ``0`` there to move itself,
        which the kernel does without ``cgroup_threadgroup_rwsem`` (no grace period to wait)."""
        return [os.path.join(p, "tasks") for p in self.paths if p != self.v2]

    @property
    def v2_procs_files(self) -> list[str]:
        """The v2 ``cgroup.procs`` file (none or one): a move there takes the rwsem."""
        return [os.path.join(self.v2, "cgroup.procs")] if self.v2 is not None and self.v2 in self.paths else []

    def pids(self) -> set[int]:
        out: set[int] = set()
        for f in self.procs_files:
            with contextlib.suppress(OSError):
                out.update(int(x) for x in Path(f).read_text().split())
        return out

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer killed something in this cgroup."""
        if self.memory is None:
            return False
        d = Path(self.memory)
        for name in ("memory.oom_control", "memory.events"):
            with contextlib.suppress(OSError):
                for line in (d / name).read_text().splitlines():
                    k, _, v = line.partition(" ")
                    if k == "oom_kill" and int(v) > 0:
                        return True
        return False

    def kill_all(self) -> None:
        """SIGKILL every process left (``cgroup.kill`` where the kernel has it)."""
        if self.v2 is not None and Path(self.v2, "cgroup.kill").exists():
            # ``_write`` reports errors as SandboxError: a cgroup removed meanwhile (empty, and
            # reaped by another process's ``remove_orphans``) has nothing left to kill
            with contextlib.suppress(OSError, SandboxError):
                _write(Path(self.v2, "cgroup.kill"), "1")
        for _ in range(200):
            left = self.pids()
            if not left:
                return
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, _signal.SIGKILL)
            time.sleep(0.005)

    def remove(self) -> None:
        """Remove the directories (and ``pybuild/`` when empty), killing what is left in them
        first if one is busy: a sandbox that has ended leaves them empty, and ``rmdir`` (the
        kernel refuses a populated cgroup) checks that for less than reading each ``cgroup.procs``."""
        paths = list(self.paths)
        busy = [p for p in paths if not _rmdir_if_idle(p)]
        if busy:
            self.paths[:] = busy
            self.kill_all()
            for p in busy:
                _rmdir_retry(Path(p))
        for p in paths:
            with contextlib.suppress(OSError):
                os.rmdir(Path(p).parent)  # pybuild/, when no other sandbox uses it
        self.paths.clear()
        forget_owner(self.id)

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "paths": self.paths, "memory": self.memory, "v2": self.v2}

    @classmethod
    def from_json(cls, d: dict[str, object]) -> Cgroup:
        return cls(
            id=str(d["id"]),
            paths=[str(p) for p in d.get("paths", [])],  # type: ignore[attr-defined]
            memory=d.get("memory"),  # type: ignore[arg-type]
            v2=d.get("v2"),  # type: ignore[arg-type]
        )


def start_attach_grace(cg: Cgroup, layout: Layout) -> None:
    """Begin now, in a thread, the wait the kernel makes a process's first cgroup v2 attach pay.

    Moving a process through ``cgroup.procs`` takes ``cgroup_threadgroup_rwsem`` for writing,
    whose first writer waits an RCU grace period (~10-17 ms, asleep); writers within the next
    grace period pass at once (a v1 ``tasks`` move of the writer itself takes no such lock:
    ``Cgroup.v1_tasks_files``). This process writes itself into its own cgroup (a move
    that changes nothing) while the sandbox is forked, so the helper's move of the sandbox's
    process into *cg* finds most of the grace period behind it. Nothing is waited for here, and
    a write refused (a cgroup this user may not write) only leaves the wait to the helper."""
    procs = _own_procs_file(cg, layout) if cg.v2_procs_files else None  # (v1: moved without it)
    if procs is None:
        return

    def move_self() -> None:
        with contextlib.suppress(OSError):
            put(procs, b"0")

    _thread.start_new_thread(move_self, ())  # (as a daemon thread: nothing waits for it)


def _own_procs_file(cg: Cgroup, layout: Layout) -> str | None:
    """``cgroup.procs`` of this process's own cgroup in the v2 hierarchy, when *cg* has a
    directory there (``/proc/self/cgroup``'s ``0::`` line)."""
    v2 = layout.v2
    if not v2 or not any(layout.in_v2(p) for p in cg.paths):
        return None
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            return os.path.join(v2, line[3:].lstrip("/"), "cgroup.procs")
    return None


def rootless_check(resources: Resources, layout: Layout) -> None:
    """Rootless without a cgroup v2 subtree delegated to the user (``sandbox.delegated``), or
    without privileges: a limit asked for is refused in one line saying why."""
    asked = [flag for flag, v in (("--memory", resources.memory), ("--cpus", resources.cpus),
                                  ("--cpu-shares", resources.cpu_shares), ("--pids-limit", resources.pids),
                                  ("--cpuset-cpus", resources.cpuset_cpus or None))
             if v is not None]
    if not asked:
        return
    why = ("this host has cgroup v1, whose hierarchies only root can write" if layout.v2 is None
           or layout.v1 else "no cgroup v2 subtree is delegated to this user")
    raise SandboxError(f"rootless: {asked[0]} needs a cgroup it can write, and {why}: "
                       "run as root to set resource limits")


def record_owner(sandbox_id: str, root: str | os.PathLike[str]) -> None:
    """Tag ``pybuild/<sandbox_id>`` with *root* (see ``OWNERS``)."""
    from builder.base.state import identity

    path, ident = identity(root)
    try:
        # a sweep takes a root without ``locks/`` for one ``rm -rf`` emptied: a live one has it
        os.makedirs(os.path.join(path, "locks"), exist_ok=True)
        OWNERS.mkdir(parents=True, exist_ok=True)
        (OWNERS / sandbox_id).write_text(f"{ident} {path}")  # a torn one is dropped by a sweep
    except OSError as e:
        raise SandboxError(f"cgroup: cannot record the owner of {sandbox_id} in {OWNERS}: {e.strerror}") from None


def forget_owner(sandbox_id: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(OWNERS / sandbox_id)


def owners() -> list[tuple[str, str, float]]:
    """``(sandbox id, owner tag, mtime)`` of every owner record (see ``OWNERS``)."""
    out = []
    try:
        entries = list(os.scandir(OWNERS))
    except OSError:
        return []
    for e in entries:
        with contextlib.suppress(OSError):
            out.append((e.name, Path(e.path).read_text(), e.stat().st_mtime))
    return out


def shares_to_weight(shares: int) -> int:
    """v1 ``cpu.shares`` (2..262144) → v2 ``cpu.weight`` (1..10000), runc's conversion."""
    shares = min(max(shares, 2), 262144)
    return 1 + ((shares - 2) * 9999) // 262142


def read_int(path: Path) -> int | None:
    """A one-number cgroup file (``memory.current``, ``pids.max``…); None if it is missing,
    ``max`` (no limit) or not a number."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    try:
        return None if text in ("", "max") else int(text)
    except ValueError:
        return None


def set_limits(paths: list[str], *, memory: int | None = None, memory_swap: int | None = None,
               cpus: float | None = None, cpu_shares: int | None = None, pids: int | None = None) -> None:
    """Change the limits of a live cgroup (``docker update``): only what is not None.

    *memory_swap* is memory + swap as Docker counts it (-1: unlimited swap; None: unchanged); *cpus* 0 lifts
    the CPU quota; *pids* <= 0 lifts the pids limit. A limit with no controller file in
    *paths* to hold it is refused (``SandboxError``) before anything is written.
    """
    dirs = [Path(p) for p in paths]

    def holder(*names: str) -> Path:
        for d in dirs:
            for n in names:
                if (d / n).exists():
                    return d / n
        raise SandboxError(f"cgroup: no {names[0].partition('.')[0]} controller to hold the limit "
                           f"(none of {', '.join(names)} under {', '.join(paths) or 'no cgroup'})")

    todo: list[tuple[Path, str]] = []
    if memory is not None or memory_swap is not None:
        mem_file = holder("memory.limit_in_bytes", "memory.max")
        d = mem_file.parent
        if mem_file.name == "memory.limit_in_bytes":
            memsw = d / "memory.memsw.limit_in_bytes"
            pair = [(mem_file, str(memory))] if memory is not None else []
            if memory_swap is not None and memsw.exists():
                pair.append((memsw, "-1" if memory_swap < 0 else str(memory_swap)))
                # the kernel keeps memory <= memory+swap at every write: when memory grows past
                # the current memsw, memsw goes first
                cur = read_int(memsw)
                if memory is not None and cur is not None and memory > cur:
                    pair.reverse()
            todo += pair
        else:
            if memory is not None:
                todo.append((mem_file, str(memory)))
            swap_file = d / "memory.swap.max"
            if memory_swap is not None and swap_file.exists():
                base = memory if memory is not None else read_int(mem_file)
                todo.append((swap_file, "max" if memory_swap < 0 else str(max(0, memory_swap - (base or 0)))))
    if cpus is not None:
        try:
            quota = holder("cpu.cfs_quota_us")
            q = "-1" if cpus == 0 else str(max(1000, int(cpus * 100000)))
            todo += [(quota.parent / "cpu.cfs_period_us", "100000"), (quota, q)]
        except SandboxError:
            cmax = holder("cpu.max", "cpu.cfs_quota_us")
            todo.append((cmax, "max 100000" if cpus == 0 else f"{max(1000, int(cpus * 100000))} 100000"))
    if cpu_shares is not None:
        f = holder("cpu.shares", "cpu.weight")
        todo.append((f, str(cpu_shares or 1024) if f.name == "cpu.shares" else str(shares_to_weight(cpu_shares or 1024))))
    if pids is not None:
        todo.append((holder("pids.max"), "max" if pids <= 0 else str(pids)))
    for path, value in todo:
        _write(path, value)


def _cpuset_parent(mnt: Path) -> None:
    """``pybuild/`` of a v1 cpuset hierarchy with the root's CPUs and memory nodes (a new
    cpuset cgroup has none, and no task can join it then)."""
    parent = mnt / PARENT
    parent.mkdir(exist_ok=True)
    for name in ("cpuset.cpus", "cpuset.mems"):
        if not (parent / name).read_text().strip():
            with contextlib.suppress(OSError):  # a concurrent first use wrote it
                _write(parent / name, (mnt / name).read_text().strip())


def _mkdir(parent: Path, name: str) -> Path:
    # another sandbox may remove an empty pybuild/ between our two mkdirs: retry
    for _ in range(50):
        parent.mkdir(exist_ok=True)
        try:
            (parent / name).mkdir()
            return parent / name
        except FileNotFoundError:
            continue
    raise SandboxError(f"cgroup: cannot create {parent / name}")


def _rmdir_if_idle(p: str) -> bool:
    """Remove cgroup *p*; False if it stays (busy: a process or a child cgroup in it; or an
    error, which ``_rmdir_retry`` reports once what is in it has been killed)."""
    try:
        os.rmdir(p)
    except FileNotFoundError:
        return True  # gone already: removed all the same
    except OSError:
        return False
    return True


def _rmdir_retry(p: Path) -> None:
    for _ in range(400):
        try:
            os.rmdir(p)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise SandboxError(f"cgroup: cannot remove {p}: {e.strerror}") from None
            time.sleep(0.005)
    raise SandboxError(f"cgroup: {p} stays busy")


def cgroup_paths_of(pid: int, layout: Layout | None = None) -> list[str]:
    """The cgroup dirs of a running process (to join it, as ``exec`` does)."""
    layout = layout or detect()
    out: list[str] = []
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        hid, _, rest = line.partition(":")
        ctrls, _, path = rest.partition(":")
        if hid == "0" and layout.v2:
            mnt: str | None = layout.v2
        else:
            mnt = next((layout.v1[c] for c in ctrls.split(",") if c in layout.v1), None)
        if mnt is None or not path.startswith(f"/{PARENT}/"):
            continue  # only the sandbox's own cgroups, not whatever its owner runs in
        d = os.path.join(mnt, path.lstrip("/"))
        if d not in out and os.path.isdir(d):
            out.append(d)
    return out


def remove_orphans(*, min_age: float, layout: Layout | None = None) -> list[str]:
    """Remove ``pybuild/<id>`` cgroups that hold no process and are older than *min_age* seconds.

    What a sandbox whose owner was killed leaves when no run dir remains to say so (its state
    root was removed). A sandbox being started holds its cgroup for well under *min_age*.
    """
    layout = layout or detect()
    removed: list[str] = []
    now = time.time()
    for mnt in {*layout.v1.values(), *([layout.v2] if layout.v2 else [])}:
        base = Path(mnt) / PARENT
        try:
            entries = list(base.iterdir())
        except OSError:
            continue
        for d in entries:
            try:
                if not d.is_dir() or now - d.stat().st_mtime < min_age:
                    continue
                if (d / "cgroup.procs").read_text().split():
                    continue
                os.rmdir(d)
                removed.append(str(d))
                forget_owner(d.name)
            except OSError:
                continue
    for sid, _, mtime in owners():  # records whose cgroups are gone (a kill between the two)
        if now - mtime >= min_age and not any((Path(m) / PARENT / sid).exists()
                                              for m in {*layout.v1.values(), *([layout.v2] if layout.v2 else [])}):
            forget_owner(sid)
    return removed
