"""What the sandbox costs a start: its run path makes no dataclass and loads no ``dataclasses``,
``inspect`` or ``hashlib`` (checked in a fresh interpreter); the sandbox's process joins its v1
cgroups itself through ``tasks`` (no grace period) and is born in its v2 cgroup (``clone3``'s
``CLONE_INTO_CGROUP``), or, where the kernel cannot, its helper moves it there while it mounts its
root (the grace period begun by the caller), the process waiting for it (``child.join_cgroups``)
before its cgroup namespace, its ``cgroup`` mount and its program.
Real namespaces and cgroups where a sandbox runs (root, never skipped).
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_sandbox_support import HostSnapshot, new_id

from builder.base import syscalls as sc
from builder.base.errors import SandboxError
from builder.base.state import StateRoot
from builder.base.values import replace
from builder.core.rootfs import Root, prepare_root
from builder.core.sandbox import Executor, Process, Resources, Spec, default_mounts
from builder.core.sandbox import cgroups as _cg
from builder.core.sandbox.cgroups import Cgroup, Layout
from builder.core.sandbox.child import Plan, join_cgroups, setup_root
from builder.core.sandbox.executor import _move_into

#: a fresh interpreter imports *modules* and prints what it loaded and which dataclasses exist
PROBE = r"""
import importlib, json, sys
for m in sys.argv[1:]:
    importlib.import_module(m)
made = sorted(f"{mod.__name__}.{v.__name__}" for mod in list(sys.modules.values())
              if mod is not None and mod.__name__.startswith(("builder", "registry"))
              for v in list(vars(mod).values())
              if isinstance(v, type) and "__dataclass_fields__" in vars(v) and v.__module__ == mod.__name__)
print(json.dumps({"loaded": sorted(m for m in ("dataclasses", "inspect", "hashlib") if m in sys.modules),
                  "dataclasses": made}))
"""

#: what a ``run`` and a RUN step load of the sandbox (oci: ``--runtime runc``)
RUN_PATH = ("builder.core.sandbox.executor", "builder.core.sandbox.seccomp", "builder.core.sandbox.oci",
            "builder.core.rootfs", "builder.base.syscalls")


def _probe(*modules: str) -> dict[str, list[str]]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out = subprocess.run([sys.executable, "-c", PROBE, *modules], capture_output=True, text=True,
                         check=True, env=env, cwd=Path(__file__).resolve().parents[2])
    result: dict[str, list[str]] = json.loads(out.stdout)
    return result


def test_run_path_makes_no_dataclass_and_loads_no_inspect_or_openssl() -> None:
    got = _probe(*RUN_PATH)
    assert got == {"loaded": [], "dataclasses": []}
    # the probe sees a dataclass where one is made (a layer writer's entry, off the run path)
    seen = _probe(*RUN_PATH, "builder.core.layers.apply")
    assert "builder.core.layers.apply._Entry" in seen["dataclasses"] and "dataclasses" in seen["loaded"]


# -- the join, piece by piece ---------------------------------------------------------------------
def _plan(tmp_path: Path, *, join: int = -1, layout: Layout | None = None, **kw: object) -> Plan:
    spec = Spec(process=Process(args=("true",)), root=Root(path=str(tmp_path)), **kw)  # type: ignore[arg-type]
    return Plan(spec=spec, rootfs=str(tmp_path), run_dir=str(tmp_path), overlay_data="",
                mask_node=str(tmp_path / "mask"), cgroup_layout=layout, cgroup_join=join)


def _pipe_with(data: bytes | None) -> int:
    r, w = os.pipe()
    if data:
        os.write(w, data)
    os.close(w)
    return r


def test_join_waits_for_the_helper_then_makes_the_cgroup_namespace(tmp_path: Path) -> None:
    fake = sc.FakeSyscalls()
    r = _pipe_with(b"+")
    join_cgroups(fake, _plan(tmp_path, join=r))
    assert fake.calls == [("unshare", sc.CLONE_NEWCGROUP)]
    with pytest.raises(OSError):
        os.fstat(r)  # read to its end and closed
    why = "cgroup: cannot move the sandbox's process into /sys/fs/cgroup/pids/pybuild/x: No space left on device"
    fake = sc.FakeSyscalls()
    with pytest.raises(SandboxError, match="^cgroup: cannot move .* No space left on device$"):
        join_cgroups(fake, _plan(tmp_path, join=_pipe_with(why.encode())))
    with pytest.raises(SandboxError, match="helper ended before it joined the cgroups"):
        join_cgroups(fake, _plan(tmp_path, join=_pipe_with(None)))
    assert fake.calls == []  # no namespace made for a process outside its cgroups


def test_setup_root_joins_right_before_the_cgroup_mount(tmp_path: Path) -> None:
    """The mounts before ``/sys/fs/cgroup`` (root, /proc, /dev, /dev/pts, /sys) overlap the
    attach; the cgroup namespace comes right before the cgroup mount, which shows it."""
    layout = Layout(v1={"pids": "/sys/fs/cgroup/pids"}, v2=None, v2_controllers=(),
                    v1_options={"/sys/fs/cgroup/pids": "pids"})
    fake = sc.FakeSyscalls()
    setup_root(fake, _plan(tmp_path, join=_pipe_with(b"+"), layout=layout, hostname="h"), real=False)
    names = [c[0] if c[0] != "mount" else f"mount {c[2].removeprefix(str(tmp_path))}" for c in fake.calls]
    at = names.index("unshare")
    assert fake.calls[at] == ("unshare", sc.CLONE_NEWCGROUP) and names.count("unshare") == 1
    assert names[at + 1:at + 3] == ["mount /sys/fs/cgroup", "mount /sys/fs/cgroup/pids"]
    assert {"mount /proc", "mount /dev", "mount /dev/pts", "mount /sys"} <= set(names[:at])
    # no cgroup mount: joined before the hostname and pivot_root
    fake = sc.FakeSyscalls()
    setup_root(fake, _plan(tmp_path, mounts=(), hostname="h"), real=False)
    assert [c[0] for c in fake.calls[-6:]] == ["unshare", "sethostname", "chdir", "pivot_root", "umount2", "chdir"]


def test_helper_moves_the_process_into_v2_or_says_why(tmp_path: Path) -> None:
    """The helper writes the pid into the v2 cgroup only: v1 ones the process joins itself."""
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    for d in (v1, v2):
        d.mkdir()
        (d / "cgroup.procs").write_text("")
    cg = Cgroup(id="x", paths=[str(v1), str(v2)], v2=str(v2))
    assert cg.v1_tasks_files == [str(v1 / "tasks")] and cg.v2_procs_files == [str(v2 / "cgroup.procs")]
    r, w = os.pipe()
    _move_into(cg, 4242, w)
    assert os.read(r, 100) == b"+" and os.read(r, 100) == b""
    assert [(d / "cgroup.procs").read_text() for d in (v1, v2)] == ["", "4242"]
    os.close(r)
    r, w = os.pipe()
    gone = tmp_path / "gone"
    _move_into(Cgroup(id="x", paths=[str(v1), str(gone)], v2=str(gone)), 4242, w)
    assert os.read(r, 200).decode() == f"cgroup: cannot move the sandbox's process into {gone}: " \
                                       "No such file or directory"
    os.close(r)


def test_join_writes_the_process_into_its_v1_tasks_files(tmp_path: Path) -> None:
    files = [tmp_path / "a" / "tasks", tmp_path / "b" / "tasks"]
    for f in files:
        f.parent.mkdir()
        f.write_text("")
    fake = sc.FakeSyscalls()
    join_cgroups(fake, replace(_plan(tmp_path), cgroup_tasks=tuple(str(f) for f in files)))
    assert [f.read_text() for f in files] == ["0", "0"] and fake.calls == [("unshare", sc.CLONE_NEWCGROUP)]
    with pytest.raises(SandboxError, match=f"^cgroup: cannot join {tmp_path / 'gone'}: No such file or directory$"):
        join_cgroups(fake, replace(_plan(tmp_path), cgroup_tasks=(str(tmp_path / "gone" / "tasks"),)))


# -- the join in real sandboxes ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> StateRoot:
    return StateRoot.open(tmp_path_factory.mktemp("sandbox-startup"))


@pytest.mark.parametrize("kernel", ["born", "refused", "no clone3"])
def test_the_program_runs_inside_every_cgroup_of_its_sandbox(
    state: StateRoot, busybox_layer: Path, tmp_path: Path, host: HostSnapshot, monkeypatch: pytest.MonkeyPatch,
    kernel: str,
) -> None:
    """Joined before its cgroup namespace (each hierarchy shows ``/``) and before exec; the
    helper, reaped after the teardown, leaves no child behind. Where the kernel has ``clone3``
    with ``CLONE_INTO_CGROUP`` (here) the process is born in its v2 cgroup: nothing writes a
    ``cgroup.procs`` file and no grace period is begun. Where the helper's ``clone3`` is
    refused, it moves the process; where the probe says no (a filter, a kernel before 5.7),
    the caller begins the grace period and the helper moves the process."""
    from builder.core.sandbox import executor

    moves = tmp_path / "moves"  # written by the helper, a forked process
    real_move = executor._move_into

    def move_into(cgroup: Cgroup, pid: int, join_w: int) -> None:
        with open(moves, "a") as f:
            f.write(f"{pid}\n")
        real_move(cgroup, pid, join_w)

    graces: list[str] = []
    real_grace = _cg.start_attach_grace
    monkeypatch.setattr(executor, "_move_into", move_into)
    monkeypatch.setattr(_cg, "start_attach_grace", lambda cg, layout: (graces.append(cg.id), real_grace(cg, layout)))
    _kernel(kernel, monkeypatch)
    root = prepare_root([busybox_layer], tmp_path / "c")
    spec = Spec(process=Process(args=("sleep", "30")), root=root, mounts=default_mounts(),
                resources=Resources(pids=64, account=True), id=new_id())
    sb = Executor(state).start(spec)
    try:
        assert sb.cgroup is not None and len(sb.cgroup.paths) >= 2
        for f in sb.cgroup.procs_files:
            assert str(sb.pid) in Path(f).read_text().split(), f
    finally:
        sb.kill(9)
        assert sb.wait(10).exit_status == 137
    out: list[bytes] = []
    spec = Spec(process=Process(args=("cat", "/proc/self/cgroup")), root=root, mounts=default_mounts(),
                resources=Resources(pids=64, account=True), id=new_id())
    assert Executor(state).run(spec, stdout=out.append).exit_status == 0
    lines = b"".join(out).decode().splitlines()
    joined = {c for line in lines for c in line.split(":")[1].split(",") if line.split(":")[2] == "/"}
    assert {"pids", "memory", "cpu", "devices"} <= joined, lines
    assert not any(line.split(":")[2] != "/" for line in lines if line.split(":")[1] in ("pids", "memory"))
    assert "0::/" in lines  # in its v2 cgroup too, the root of its cgroup namespace
    moved = moves.read_text().split() if moves.exists() else []
    assert (len(moved), len(graces)) == {"born": (0, 0), "refused": (2, 0), "no clone3": (2, 2)}[kernel]


def _kernel(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """born: clone3 into the v2 cgroup (this kernel); refused: the helper's clone3 fails;
    no clone3: the probe says no (a seccomp filter, a kernel before 5.7)."""
    if mode == "refused":
        def refuse(self: sc.Syscalls, fd: int) -> int:
            raise OSError(errno.ENOSYS, "clone3")
        monkeypatch.setattr(sc.Syscalls, "fork_into_cgroup", refuse)
    elif mode == "no clone3":
        monkeypatch.setattr(sc, "clone_into_cgroup_works", lambda: False)
    else:
        assert sc.clone_into_cgroup_works()


def _v2_line(pid: int) -> str:
    return next(x for x in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if x.startswith("0::"))


@pytest.mark.parametrize("kernel", ["born", "refused", "no clone3"])
def test_an_exec_joins_every_cgroup_and_the_cgroup_namespace_of_its_sandbox(
    state: StateRoot, busybox_layer: Path, tmp_path: Path, host: HostSnapshot, monkeypatch: pytest.MonkeyPatch,
    kernel: str,
) -> None:
    """``exec``: its helper (one thread) moves itself into the sandbox's v1 cgroups through
    ``tasks`` (no rwsem) and the process is born in the v2 one, then joins the cgroup namespace,
    so neither pays a grace period; where the kernel cannot, the helper moves itself into the
    v2 cgroup too (its own cgroup line then says so) before it forks."""
    root = prepare_root([busybox_layer], tmp_path / "c")
    spec = Spec(process=Process(args=("sleep", "30")), root=root, mounts=default_mounts(),
                resources=Resources(pids=64, account=True), id=new_id())
    sb = Executor(state).start(spec)
    try:
        _kernel(kernel, monkeypatch)
        h = Executor(state).exec_start(sb, Process(args=("sleep", "20")))
        try:
            assert Path(f"/proc/{h.pid}/cgroup").read_text() == Path(f"/proc/{sb.pid}/cgroup").read_text()
            assert os.readlink(f"/proc/{h.pid}/ns/cgroup") == os.readlink(f"/proc/{sb.pid}/ns/cgroup")
            assert "/pybuild/" in _v2_line(h.pid)
            helper = h._helper
            assert helper is not None
            helper_v2 = _v2_line(helper)
            assert helper_v2 == (_v2_line(os.getpid()) if kernel == "born" else _v2_line(h.pid))
        finally:
            h.kill(9)
            assert h.wait(10).exit_status == 137
    finally:
        sb.kill(9)
        assert sb.wait(10).exit_status == 137


@pytest.mark.parametrize(("files", "name", "only", "message"), [
    ("v1_tasks_files", "tasks", False, "cgroup: cannot join {}: No such file or directory"),
    ("v2_procs_files", "cgroup.procs", False,
     "cgroup: cannot move the sandbox's process into {}: No such file or directory"),
    ("v2_procs_files", "cgroup.procs", True,
     "cgroup: cannot move the sandbox's process into {}: No such file or directory"),
])
def test_a_failed_join_is_one_error_and_leaves_nothing(
    state: StateRoot, busybox_layer: Path, tmp_path: Path, host: HostSnapshot, monkeypatch: pytest.MonkeyPatch,
    files: str, name: str, only: bool, message: str,
) -> None:
    """A cgroup the process (v1) or its helper (v2) cannot write: the start fails naming it,
    the program never runs, nothing is left. A v2 directory that cannot be opened to be born in
    (*only*: the sandbox's one v2 cgroup is gone) is left to the helper's move, which says so."""
    root = prepare_root([busybox_layer], tmp_path / "c")
    spec = Spec(process=Process(args=("touch", "/ran")), root=root, mounts=default_mounts(), id=new_id())
    real = getattr(Cgroup, files)
    missing = f"/sys/fs/cgroup/pids/{_cg.PARENT}/{spec.id}-missing"
    monkeypatch.setattr(Cgroup, files, property(
        lambda self: [*([] if only else real.fget(self)), f"{missing}/{name}"]))
    with pytest.raises(SandboxError, match="^" + re.escape(message.format(missing)) + "$"):
        Executor(state).start(spec)
    assert not (Path(root.upper or "") / "ran").exists()
    assert not (state.run / spec.id).exists()


def test_the_stub_layer_and_seccomp_program_are_made_before_the_fork(
    busybox_layer: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, host: HostSnapshot,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Made by the starting process, before it forks (a forked child pays a copy-on-write
    fault per page it touches): a mount point the image lacks lands in the stub layer, not the
    upper dir; the seccomp program is compiled once into the state root's cache (no temp file
    left) and read back by the next start."""
    from builder.core.sandbox import Mount, executor, seccomp

    made_by: list[int] = []  # appended where the stub layer is made: the caller's list only here
    real_lowers = executor.overlay_lowers

    def overlay_lowers(spec: Spec, run_dir: Path) -> str:
        made_by.append(os.getpid())
        return real_lowers(spec, run_dir)

    monkeypatch.setattr(executor, "overlay_lowers", overlay_lowers)

    state = StateRoot.open(tmp_path_factory.mktemp("fresh-state"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("hello")
    for n in (1, 2):
        root = prepare_root([busybox_layer], tmp_path / f"c{n}")
        spec = Spec(process=Process(args=("cat", "/new/dir/f"), seccomp=seccomp.default()), root=root,
                    mounts=(*default_mounts(), Mount("/new/dir", "bind", str(src), ("ro",))), id=new_id())
        out: list[bytes] = []
        assert Executor(state).run(spec, stdout=out.append).exit_status == 0
        assert b"".join(out) == b"hello"
        assert root.upper is not None and not (Path(root.upper) / "new").exists()
        cached = sorted(p.name for p in (state.cache / "seccomp").iterdir())
        assert len(cached) == 1 and cached[0].endswith(".bpf"), cached
    assert made_by == [os.getpid(), os.getpid()]


def test_the_grace_period_is_begun_by_a_move_that_changes_nothing(state: StateRoot) -> None:
    """``start_attach_grace``: this process writes itself into its own cgroup (of a hierarchy
    the sandbox's cgroup is in), in a thread; its cgroups are the same afterwards."""
    import threading

    layout = _cg.detect()
    sid = new_id()
    cg = Cgroup.create(sid, Resources(account=True), layout, root=state.path)
    try:
        own = _cg._own_procs_file(cg, layout)
        if cg.v2 is None:  # v1 only: its moves wait for no grace period, nothing to begin
            assert own is None
        else:
            assert own is not None and own.startswith(layout.v2 or "") and "/pybuild/" not in own
            assert str(os.getpid()) in Path(own).read_text().split()
        before = Path("/proc/self/cgroup").read_text()
        _cg.start_attach_grace(cg, layout)
        for t in threading.enumerate():
            if t.name == "cgroup-grace":
                t.join(10)
        assert Path("/proc/self/cgroup").read_text() == before
        assert _cg._own_procs_file(Cgroup(id="x"), layout) is None  # no cgroup: nothing to begin
    finally:
        cg.remove()
