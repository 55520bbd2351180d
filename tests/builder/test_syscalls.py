"""The spec → actions code against ``FakeSyscalls``, and the real ctypes calls in a forked child."""

from __future__ import annotations

import errno
import json
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from builder.base import syscalls as sc
from builder.core.rootfs import Root, link_lowers
from builder.core.sandbox.child import Plan, drop_privileges, mount_flags, secure_join, setup_root
from builder.core.sandbox.spec import (
    CAP_NUMBERS,
    DEFAULT_CAPS,
    Mount,
    Namespaces,
    Process,
    Spec,
    capabilities,
    default_mounts,
)
from builder.core.sandbox.users import User


def _plan(tmp_path: Path, **kw: object) -> Plan:
    layers = []
    for i in range(3):
        d = tmp_path / f"layer{i}"
        d.mkdir()
        layers.append(str(d))
    (tmp_path / "upper").mkdir()
    (tmp_path / "work").mkdir()
    root = Root(layers=tuple(layers), upper=str(tmp_path / "upper"), work=str(tmp_path / "work"),
                readonly=bool(kw.pop("readonly", False)))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    data = link_lowers(root, run_dir, None)
    spec = Spec(process=Process(args=("true",)), root=root, hostname="h1", **kw)  # type: ignore[arg-type]
    return Plan(spec=spec, rootfs=str(run_dir / "rootfs"), run_dir=str(run_dir), overlay_data=data,
                mask_node=str(run_dir / "mask"))


def test_setup_root_actions(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    fake = sc.FakeSyscalls()
    setup_root(fake, plan, real=False)
    calls = fake.calls
    rootfs = plan.rootfs
    assert calls[0] == ("mount", None, "/", None, sc.MS_REC | sc.MS_PRIVATE, None)
    assert calls[1] == ("chdir", plan.run_dir)
    name, src, target, fstype, flags, data = calls[2]
    assert (src, target, fstype, flags) == ("overlay", rootfs, "overlay", sc.MS_NODEV)
    # short relative names, topmost layer first, overlay options that keep the upper a plain diff
    assert data == "lowerdir=l/0:l/1:l/2,upperdir=u,workdir=w,redirect_dir=off,index=off,metacopy=off"
    assert os.readlink(Path(plan.run_dir) / "l" / "0").endswith("layer2")
    mounts = {c[2]: c for c in calls if c[0] == "mount"}
    assert mounts[f"{rootfs}/proc"][3:5] == ("proc", sc.MS_NOSUID | sc.MS_NOEXEC | sc.MS_NODEV)
    assert mounts[f"{rootfs}/sys"][4] & sc.MS_RDONLY
    assert mounts[f"{rootfs}/dev"][5] == "mode=755,size=65536k"
    assert mounts[f"{rootfs}/dev/pts"][5] == "newinstance,ptmxmode=0666,mode=0620,gid=5"
    assert {c[1].rsplit("/", 1)[1] for c in calls if c[0] == "mknod"} == {
        "null", "zero", "full", "random", "urandom", "tty"}
    assert ("symlink", "pts/ptmx", f"{rootfs}/dev/ptmx") in calls
    assert ("mount", plan.mask_node, f"{rootfs}/proc/kcore", None, sc.MS_BIND, None) in calls
    ro = [c for c in calls if c[0] == "mount" and c[2] == f"{rootfs}/proc/sys"]
    assert ro[0][4] == sc.MS_BIND | sc.MS_REC and ro[1][4] & sc.MS_RDONLY and ro[1][4] & sc.MS_REMOUNT
    tail = calls[-5:]
    assert tail == [("sethostname", "h1"), ("chdir", rootfs), ("pivot_root", ".", "."),
                    ("umount2", ".", sc.MNT_DETACH), ("chdir", "/")]


def test_read_only_root_and_host_uts(tmp_path: Path) -> None:
    plan = _plan(tmp_path, readonly=True, namespaces=Namespaces(uts="host"), mounts=())
    fake = sc.FakeSyscalls()
    setup_root(fake, plan, real=False)
    assert not any(c[0] == "sethostname" for c in fake.calls)
    assert fake.calls[-1] == ("mount", None, "/", None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY | sc.MS_NODEV, None)


def test_bind_mount_options(tmp_path: Path) -> None:
    plan = _plan(tmp_path, mounts=(Mount("/data", "bind", str(tmp_path), ("ro", "nosuid", "rprivate")),))
    fake = sc.FakeSyscalls()
    setup_root(fake, plan, real=False)
    m = [c for c in fake.calls if c[0] == "mount" and c[2] == f"{plan.rootfs}/data"]
    assert m == [
        ("mount", str(tmp_path), f"{plan.rootfs}/data", None, sc.MS_BIND | sc.MS_REC, None),
        ("mount", None, f"{plan.rootfs}/data", None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY | sc.MS_NOSUID, None),
        ("mount", None, f"{plan.rootfs}/data", None, sc.MS_PRIVATE | sc.MS_REC, None),
    ]


def test_drop_privileges_root_and_user() -> None:
    fake = sc.FakeSyscalls()
    drop_privileges(fake, Process(args=("x",)), User(0, 0, (0,), "/root"), 40)
    wanted = sum(1 << CAP_NUMBERS[c] for c in DEFAULT_CAPS)
    dropped = {c[1] for c in fake.calls if c[0] == "capbset_drop"}
    assert dropped == {n for n in range(41) if not wanted & (1 << n)}
    assert CAP_NUMBERS["CAP_SYS_ADMIN"] in dropped and CAP_NUMBERS["CAP_CHOWN"] not in dropped
    assert ("capset", sc.CapSets(wanted, wanted, 0)) in fake.calls  # none inheritable, as Docker
    assert fake.calls[-1] == ("prctl", sc.PR_SET_NO_NEW_PRIVS, 1)
    fake2 = sc.FakeSyscalls()
    drop_privileges(fake2, Process(args=("x",), no_new_privs=False), User(1000, 1000, (1000,), "/"), 40)
    assert ("capset", sc.CapSets(0, 0, 0)) in fake2.calls
    assert not any(c[:2] == ("prctl", sc.PR_SET_NO_NEW_PRIVS) for c in fake2.calls)


def test_capability_arithmetic_and_flags() -> None:
    assert "CAP_NET_ADMIN" in capabilities(add=("net_admin",))
    assert "CAP_CHOWN" not in capabilities(drop=("chown",))
    assert capabilities(drop=("ALL",), add=("KILL",)) == ("CAP_KILL",)
    assert len(capabilities(add=("ALL",))) == len(CAP_NUMBERS)
    assert mount_flags(("ro", "nosuid", "size=1m", "mode=700", "rslave")) == (
        sc.MS_RDONLY | sc.MS_NOSUID, sc.MS_SLAVE | sc.MS_REC, "size=1m,mode=700")
    assert default_mounts()[0].destination == "/proc"


def test_secure_join_stays_inside(tmp_path: Path) -> None:
    root = tmp_path / "r"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "link").symlink_to("/../../../../tmp")
    (root / "up").symlink_to("../../..")
    assert secure_join(str(root), "/etc/link/x") == f"{root}/tmp/x"
    assert secure_join(str(root), "../../up/etc") == f"{root}/etc"


def test_real_calls_in_a_child() -> None:
    """unshare + sethostname + mount + loopback through libc, in a forked child."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            s = sc.real()
            s.unshare(sc.CLONE_NEWUTS | sc.CLONE_NEWNS | sc.CLONE_NEWNET)
            s.sethostname("inchild")
            s.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
            s.mount("tmpfs", "/mnt", "tmpfs", sc.MS_NOSUID, "size=1m")
            s.set_loopback_up()
            up = socket.if_nameindex() == [(1, "lo")]
            caps = s.capget()
            os.write(w, f"{socket.gethostname()} {os.path.ismount('/mnt')} {up} {caps.effective > 0}".encode())
            s.umount2("/mnt")
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    data = os.read(r, 200).decode()
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert data == "inchild True True True"
    assert socket.gethostname() != "inchild" and not os.path.ismount("/mnt")
    with pytest.raises(OSError, match="mount"):
        sc.real().mount("none", "/nonexistent-dir-xyz", "tmpfs")


def test_cgroup_layout_detection() -> None:
    from builder.core.sandbox.cgroups import detect

    hybrid = (
        "30 25 0:26 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory\n"
        "31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:10 - cgroup cgroup rw,cpu,cpuacct\n"
        "32 25 0:28 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
        "33 25 0:29 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n"
    )
    lay = detect(hybrid)
    assert lay.version == 1
    assert lay.v1 == {"memory": "/sys/fs/cgroup/memory", "cpu": "/sys/fs/cgroup/cpu,cpuacct",
                      "cpuacct": "/sys/fs/cgroup/cpu,cpuacct", "pids": "/sys/fs/cgroup/pids"}
    assert lay.v1_options["/sys/fs/cgroup/cpu,cpuacct"] == "cpu,cpuacct"
    assert lay.v2 == "/sys/fs/cgroup/unified"
    v2 = detect("40 1 0:30 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n")
    assert lay.version == 1 and v2.version == 2 and v2.v2 == "/sys/fs/cgroup" and v2.v1 == {}
    assert detect("").version == 0


def test_private_mount_namespace_unshares_then_makes_every_mount_private() -> None:
    from builder.base import syscalls as sc

    fake = sc.FakeSyscalls()
    sc.private_mount_namespace(fake)
    assert fake.calls == [("unshare", sc.CLONE_NEWNS),
                          ("mount", None, "/", None, sc.MS_REC | sc.MS_PRIVATE, None)]


# -- a child born in its cgroup (clone3, CLONE_INTO_CGROUP) ------------------------------------------
_AFTER_FORK: list[int] = []
os.register_at_fork(after_in_child=lambda: _AFTER_FORK.append(os.getpid()))


def _report_and_exit(w: int, report: Callable[[], object]) -> None:  # pragma: no cover - in a child
    code = 1
    try:
        os.write(w, json.dumps(report()).encode())
        code = 0
    finally:
        os._exit(code)


def _read_report(r: int, pid: int) -> Any:
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, data
    return json.loads(data)


def test_a_child_born_in_its_cgroup_is_a_python_child_as_os_fork_makes_one(tmp_path: Path) -> None:
    """``fork_into_cgroup``: the child is in the cgroup from its first instruction (its
    ``/proc/self/cgroup`` says so before it wrote anything anywhere), Python's at-fork hooks ran
    in it, and it starts threads; a cgroup fd that is not one refuses it with no child made."""
    import threading

    from builder.core.sandbox import Resources
    from builder.core.sandbox.cgroups import Cgroup, detect

    layout = detect()
    assert layout.v2 is not None and sc.clone_into_cgroup_works()  # Linux 6 here, no filter
    cg = Cgroup.create("pbtest-" + os.urandom(4).hex(), Resources(account=True), layout, root=str(tmp_path))
    try:
        assert cg.v2 is not None
        fd = os.open(cg.v2, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        r, w = os.pipe()
        parent = os.getpid()
        try:
            pid = sc.real().fork_into_cgroup(fd)
            if pid == 0:  # pragma: no cover - child

                def report() -> object:
                    ran: list[int] = []
                    t = threading.Thread(target=lambda: ran.append(threading.get_native_id()))
                    t.start()
                    t.join()
                    line = [x for x in Path("/proc/self/cgroup").read_text().splitlines() if x.startswith("0::")]
                    return {"cgroup": line, "hooked": _AFTER_FORK[-1:] == [os.getpid()],
                            "thread": ran != [] and ran[0] != os.getpid(), "child": os.getpid() != parent}

                _report_and_exit(w, report)
        finally:
            os.close(fd)
            os.close(w)
        got = _read_report(r, pid)
        assert got == {"cgroup": ["0::/" + os.path.relpath(cg.v2, layout.v2)], "hooked": True,
                       "thread": True, "child": True}
        with pytest.raises(OSError) as e:
            sc.real().fork_into_cgroup(0x7FFFFFF0)
        assert e.value.errno == errno.EBADF and os.getpid() == parent
    finally:
        cg.remove()


def test_the_probe_says_no_under_a_filter_that_refuses_clone3() -> None:
    """As Docker's default seccomp profile refuses ``clone3`` (``ENOSYS``, so that a C library
    falls back to ``clone``): the probe says no there, and a sandbox start then moves its process
    (``executor._v2_dir_fd``); here, without a filter, it says yes."""
    assert sc.clone_into_cgroup_works()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        # ld nr; jeq 435 → ret ERRNO(ENOSYS); ret ALLOW
        prog = b"".join(struct.pack("<HBBI", *ins) for ins in (
            (0x20, 0, 0, 0), (0x15, 0, 1, 435), (0x06, 0, 0, 0x00050000 | errno.ENOSYS), (0x06, 0, 0, 0x7FFF0000)))

        def report() -> object:
            sc.real().seccomp_filter(prog)
            sc._CLONE_INTO_CGROUP = None  # asked again, under the filter
            return sc.clone_into_cgroup_works()

        _report_and_exit(w, report)
    os.close(w)
    assert _read_report(r, pid) is False
