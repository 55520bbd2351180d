"""The execution core through real namespaces, overlayfs and cgroups (runs as root, never skips).

Every test checks that mounts, pybuild cgroups and our child processes are back to what they
were before it (``host`` fixture).
"""

from __future__ import annotations

import hashlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_sandbox_support import HostSnapshot, new_id, tree_digest

from builder.base.errors import CommandNotExecutable, CommandNotFound, SandboxError
from builder.base.state import StateRoot
from builder.core.rootfs import LayerCache, Root, prepare_root
from builder.core.sandbox import (
    Executor,
    Mount,
    Namespaces,
    Process,
    Resources,
    Rlimit,
    Spec,
    default_mounts,
    etc_mounts,
    teardown_run_dir,
)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> StateRoot:
    return StateRoot.open(tmp_path_factory.mktemp("sandbox-state"))




@pytest.fixture
def root(busybox_layer: Path, tmp_path: Path) -> Root:
    return prepare_root([busybox_layer], tmp_path / "c1")


@pytest.fixture
def executor(state: StateRoot) -> Executor:
    return Executor(state)


def spec_for(root: Root, *args: str, tmp: Path | None = None, hostname: str = "box", **kw: object) -> Spec:
    mounts = default_mounts()
    if tmp is not None:
        mounts += etc_mounts(tmp / "etc", hostname=hostname)
    process_kw = {k: kw.pop(k) for k in list(kw) if k in ("user", "env", "cwd", "terminal", "rlimits",
                                                            "capabilities", "no_new_privs")}
    return Spec(process=Process(args=args, **process_kw), root=root, mounts=mounts,  # type: ignore[arg-type]
                hostname=hostname, id=new_id(), **kw)  # type: ignore[arg-type]


def run(executor: Executor, spec: Spec, **kw: object) -> tuple[int, str, str, object]:
    out: list[bytes] = []
    err: list[bytes] = []
    r = executor.run(spec, stdout=out.append, stderr=err.append, **kw)  # type: ignore[arg-type]
    return r.exit_status, b"".join(out).decode(), b"".join(err).decode(), r


ISOLATION_SCRIPT = r"""
echo "pid=$$"
echo "hostname=$(hostname)"
echo "links=$(ip -o link | awk -F': ' '{print $2}' | tr '\n' ' ')"
echo "procs=$(ls -d /proc/[0-9]* | wc -l)"
echo "mounts=$(wc -l < /proc/self/mountinfo)"
grep -q /work /proc/self/mountinfo && echo host-mounts-visible
[ "$(head -c 1 /proc/kcore 2>/dev/null | wc -c)" -gt 0 ] && echo kcore-readable
[ "$(head -c 1 /proc/timer_list 2>/dev/null | wc -c)" -gt 0 ] && echo timer-list-readable
mount -t tmpfs x /tmp 2>/dev/null && echo mount-worked
echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo proc-sys-writable
echo 1 > /proc/sysrq-trigger 2>/dev/null && echo sysrq-writable
echo "id=$(id)"
echo "caps=$(grep CapEff /proc/self/status | awk '{print $2}')"
echo "nnp=$(grep NoNewPrivs /proc/self/status | awk '{print $2}')"
echo "hosts=$(head -1 /etc/hosts)"
echo data > /written
rm /bin/vi
"""


def test_isolation_pid1_hostname_net_mounts_caps(
    executor: Executor, root: Root, busybox_layer: Path, tmp_path: Path, host: HostSnapshot
) -> None:
    before = tree_digest(busybox_layer)
    code, out, err, _ = run(executor, spec_for(root, "sh", "-c", ISOLATION_SCRIPT, tmp=tmp_path, hostname="sbx1"))
    assert code == 0, err
    lines = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert lines["pid"] == "1"
    assert lines["hostname"] == "sbx1"
    assert lines["links"].split() == ["lo"]
    assert int(lines["procs"]) <= 5  # sh, its subshell, ls, wc: the host's are invisible
    assert int(lines["mounts"]) < 40
    for bad in ("host-mounts-visible", "kcore-readable", "timer-list-readable", "mount-worked",
                "proc-sys-writable", "sysrq-writable"):
        assert bad not in out
    assert lines["id"].startswith("uid=0(root) gid=0(root)")
    assert int(lines["caps"], 16) == 0xa80425fb  # Docker's default set, nothing more
    assert lines["nnp"] == "1"
    assert lines["hosts"].startswith("127.0.0.1")
    upper = Path(root.upper or "")
    assert (upper / "written").read_text() == "data\n"
    assert os.stat(upper / "bin" / "vi").st_rdev == 0  # a whiteout in the upper dir
    assert sorted(p.name for p in upper.iterdir()) == ["bin", "written"]  # no mount stubs
    assert tree_digest(busybox_layer) == before


@pytest.mark.parametrize(("user", "expect"), [
    ("app", "uid=1000(app) gid=1000(app) groups=50(staff),1000(app)"),
    ("1000:50", "uid=1000(app) gid=50(staff) groups=50(staff)"),
    ("www-data", "uid=33(www-data) gid=33(www-data) groups=33(www-data)"),
    ("4242", "uid=4242 gid=0(root) groups=0(root)"),
    ("app:daemon", "uid=1000(app) gid=1(daemon) groups=1(daemon)"),
])
def test_user_resolution(executor: Executor, root: Root, user: str, expect: str, host: HostSnapshot) -> None:
    code, out, err, _ = run(executor, spec_for(root, "sh", "-c", "id; grep CapEff /proc/self/status", user=user))
    assert code == 0, err
    assert out.splitlines()[0] == expect
    if not user.startswith("0"):
        assert out.split()[-1] == "0000000000000000"  # a non-root user keeps no capability


def test_unknown_user_is_an_error_and_leaves_nothing(executor: Executor, root: Root, host: HostSnapshot) -> None:
    with pytest.raises(SandboxError, match="unable to find user nosuch"):
        executor.run(spec_for(root, "id", user="nosuch"))
    with pytest.raises(SandboxError, match="unable to find group nogrp"):
        executor.run(spec_for(root, "id", user="app:nogrp"))


def test_command_not_found_and_not_executable(executor: Executor, root: Root, host: HostSnapshot) -> None:
    with pytest.raises(CommandNotFound) as e:
        executor.run(spec_for(root, "no-such-command"))
    assert e.value.exit_code == 127 and "executable file not found" in str(e.value)
    with pytest.raises(CommandNotFound):
        executor.run(spec_for(root, "/no/such/path"))
    with pytest.raises(CommandNotExecutable) as e2:
        executor.run(spec_for(root, "/etc/passwd"))
    assert e2.value.exit_code == 126


@pytest.mark.parametrize("code", [0, 3, 255])
def test_exit_codes(executor: Executor, root: Root, code: int, host: HostSnapshot) -> None:
    r = executor.run(spec_for(root, "sh", "-c", f"exit {code}"))
    assert r.exit_status == code and r.signal is None and not r.oom_killed


def _read_line(fd: int, timeout: float = 10) -> str:
    buf = b""
    deadline = time.monotonic() + timeout
    while not buf.endswith(b"\n"):
        r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert r, f"no line within {timeout}s (got {buf!r})"
        chunk = os.read(fd, 1)
        assert chunk, f"EOF (got {buf!r})"
        buf += chunk
    return buf.decode().strip()


def test_sigkill_gives_137(executor: Executor, root: Root, host: HostSnapshot) -> None:
    r_fd, w_fd = os.pipe()
    try:
        sb = executor.start(spec_for(root, "sh", "-c", "echo ready; exec sleep 60"), stdout=w_fd)
        os.close(w_fd)
        assert _read_line(r_fd) == "ready"
        sb.kill(signal.SIGKILL)
        res = sb.wait(10)
    finally:
        os.close(r_fd)
    assert res.exit_status == 137 and res.signal == signal.SIGKILL and not res.timed_out


def test_sigterm_reaches_the_process(executor: Executor, root: Root, host: HostSnapshot) -> None:
    r_fd, w_fd = os.pipe()
    script = 'trap "echo got-term; exit 42" TERM; echo ready; while :; do sleep 0.05; done'
    try:
        sb = executor.start(spec_for(root, "sh", "-c", script), stdout=w_fd)
        os.close(w_fd)
        assert _read_line(r_fd) == "ready"
        sb.kill(signal.SIGTERM)
        assert _read_line(r_fd) == "got-term"
        res = sb.wait(10)
    finally:
        os.close(r_fd)
    assert res.exit_status == 42


def test_children_are_reaped(executor: Executor, root: Root, host: HostSnapshot) -> None:
    script = ("sleep 0.1 & wait $!; echo waited=$?; (sleep 0.1 &); sleep 0.4; "
              "echo zombies=$(cat /proc/[0-9]*/stat 2>/dev/null | awk '$3==\"Z\"' | wc -l); sleep 30 &")
    code, out, err, _ = run(executor, spec_for(root, "sh", "-c", script))
    assert code == 0, err
    assert "waited=0" in out and "zombies=0" in out
    # the orphaned `sleep 30` went with the namespace: the host fixture checks no process is left


def test_oom_under_64mb(executor: Executor, root: Root, host: HostSnapshot) -> None:
    spec = spec_for(root, "dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1",
                    resources=Resources(memory=64 * 1024 * 1024))
    code, _, _, r = run(executor, spec)
    assert code == 137
    assert r.oom_killed  # type: ignore[attr-defined]
    ok = executor.run(spec_for(root, "dd", "if=/dev/zero", "of=/dev/null", "bs=16M", "count=1",
                               resources=Resources(memory=64 * 1024 * 1024)))
    assert ok.exit_status == 0 and not ok.oom_killed


def _pids_dir(sb: object) -> Path:
    cg = sb.cgroup  # type: ignore[attr-defined]
    return next(Path(p) for p in cg.paths if Path(p, "pids.max").exists())


def test_pids_limit_stops_a_fork_bomb(executor: Executor, root: Root, host: HostSnapshot) -> None:
    # the inner shell forks sleeps until fork fails; then count with builtins only (no fork left).
    # The sleeps outlive any slowness of a loaded machine: they go with the namespace.
    script = "sh -c 'while :; do sleep 600 & done' 2>/dev/null; set -- /proc/[0-9]*; echo procs=$#"
    code, out, _, _ = run(executor, spec_for(root, "sh", "-c", script, resources=Resources(pids=16)))
    assert code == 0
    assert 10 <= int(out.split("procs=")[1]) <= 16
    # a real fork bomb: the main shell forks once (a subshell: a pipeline would fork each side from
    # the main shell, and its second fork could lose to the first side's bomb: exit 2 in CI), then
    # becomes a sleep. Wait for the kernel to refuse a fork (pids.events), however long the
    # machine takes to get there; the count never passes the limit; a kill tears it all down.
    bomb = spec_for(root, "sh", "-c", "b() { b | b & }; (b 2>/dev/null) & exec sleep 600",
                    resources=Resources(pids=24))
    sb = executor.start(bomb, stderr=lambda b: None)
    try:
        pids = _pids_dir(sb)
        deadline = time.monotonic() + 120
        while (refused := int((pids / "pids.events").read_text().split()[1])) == 0:
            assert int((pids / "pids.current").read_text()) <= 24
            assert time.monotonic() < deadline, "the bomb never reached the limit"
            time.sleep(0.05)
        assert refused > 0 and int((pids / "pids.current").read_text()) <= 24
        assert sb.alive()
        sb.kill(signal.SIGKILL)
        r = sb.wait(timeout=60)
    finally:
        sb.teardown()
    assert r.exit_status == 137 and not r.timed_out


def test_timeout_kills(executor: Executor, root: Root, host: HostSnapshot) -> None:
    t = time.monotonic()
    r = executor.run(spec_for(root, "sleep", "60"), timeout=0.3)
    assert r.timed_out and r.signal == signal.SIGKILL and time.monotonic() - t < 5


def test_cpu_quota_and_cgroup_view(executor: Executor, root: Root, host: HostSnapshot) -> None:
    spec = spec_for(root, "sh", "-c", "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us; cat /proc/self/cgroup | grep memory",
                    resources=Resources(cpus=0.5))
    code, out, err, _ = run(executor, spec)
    assert code == 0, err
    quota, mem = out.split()
    assert quota == "50000"
    assert mem == "4:memory:/"  # a cgroup namespace: the sandbox sees its own cgroup as the root


def test_stdin_bytes_and_terminal(executor: Executor, root: Root, host: HostSnapshot) -> None:
    code, out, _, _ = run(executor, spec_for(root, "cat"), stdin=b"hello stdin\n")
    assert code == 0 and out == "hello stdin\n"
    out2: list[bytes] = []
    r = executor.run(spec_for(root, "sh", "-c", "test -t 0 && test -t 1 && echo on-a-tty; tty", terminal=True),
                     stdout=out2.append)
    text = b"".join(out2).decode()
    assert r.exit_status == 0 and "on-a-tty" in text


def test_read_only_root(executor: Executor, busybox_layer: Path, tmp_path: Path, host: HostSnapshot) -> None:
    root = prepare_root([busybox_layer], tmp_path / "ro", readonly=True)
    code, out, _, _ = run(executor, spec_for(root, "sh", "-c", "touch /x 2>/dev/null || echo refused; touch /dev/shm/ok && echo tmpfs-ok"))
    assert code == 0 and "refused" in out and "tmpfs-ok" in out
    assert list(Path(root.upper or "").iterdir()) == []


def test_env_cwd_rlimits(executor: Executor, root: Root, host: HostSnapshot) -> None:
    soft, hard = __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE)
    spec = spec_for(root, "sh", "-c", "echo $FOO $HOME; pwd; ulimit -n",
                    env=("PATH=/bin", "FOO=bar"), cwd="/home/app/new", user="app",
                    rlimits=(Rlimit("RLIMIT_NOFILE", 512, 512),))
    code, out, err, _ = run(executor, spec)
    assert code == 0, err
    assert out.split() == ["bar", "/home/app", "/home/app/new", "512"]
    with pytest.raises(SandboxError, match="above the inherited hard limit"):
        executor.run(spec_for(root, "true", rlimits=(Rlimit("RLIMIT_NOFILE", 16, hard + 1),)))


def _make_netns_file(path: Path) -> None:
    """A named network namespace the way the network code makes one: a bind of an ns file."""
    path.touch()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            from builder.base import syscalls as sc

            sc.real().unshare(sc.CLONE_NEWNET)
            sc.real().mount(f"/proc/{os.getpid()}/ns/net", str(path), None, sc.MS_BIND)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_network_host_and_joined_netns(executor: Executor, root: Root, tmp_path: Path, host: HostSnapshot) -> None:
    r, out, _, _ = run(executor, spec_for(root, "ip", "-o", "link", namespaces=Namespaces(net="host")))
    assert r == 0 and "eth0" in out
    nsfile = tmp_path / "netns"
    _make_netns_file(nsfile)
    try:
        subprocess.run(["nsenter", f"--net={nsfile}", "ip", "link", "add", "pbv0", "type", "veth",
                        "peer", "name", "pbv1"], check=True)
        r, out, _, _ = run(executor, spec_for(root, "ip", "-o", "link", namespaces=Namespaces(net=str(nsfile))))
        assert r == 0 and "pbv0" in out and "pbv1" in out
    finally:
        subprocess.run(["umount", str(nsfile)], check=True)


def test_bind_and_tmpfs_mounts(executor: Executor, root: Root, tmp_path: Path, host: HostSnapshot) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "in.txt").write_text("from host\n")
    spec = Spec(process=Process(args=("sh", "-c", "cat /data/in.txt; echo w > /data/out.txt; "
                                      "touch /ro/x 2>/dev/null || echo ro-refused; echo t > /scratch/t && echo tmpfs")),
                root=root, id=new_id(),
                mounts=default_mounts() + (Mount("/data", "bind", str(src)), Mount("/ro", "bind", str(src), ("ro",)),
                                           Mount("/scratch", "tmpfs", "tmpfs", ("size=1m",))))
    code, out, err, _ = run(executor, spec)
    assert code == 0, err
    assert out.split("\n")[:3] == ["from host", "ro-refused", "tmpfs"]
    assert (src / "out.txt").read_text() == "w\n"
    assert sorted(p.name for p in Path(root.upper or "").iterdir()) == []  # mount points stayed out of the upper


def test_exec_joins_a_running_sandbox(executor: Executor, root: Root, host: HostSnapshot) -> None:
    r_fd, w_fd = os.pipe()
    try:
        sb = executor.start(spec_for(root, "sh", "-c", "echo shared > /tmp/f; echo ready; exec sleep 60",
                                     hostname="joined"), stdout=w_fd)
        os.close(w_fd)
        assert _read_line(r_fd) == "ready"
        out: list[bytes] = []
        res = executor.exec(sb, Process(args=("sh", "-c", "cat /tmp/f; hostname; echo $$; "
                                              "ls -d /proc/[0-9]* | wc -l; id -u; exit 5"), user="app"),
                            stdout=out.append)
        lines = b"".join(out).decode().split()
        assert res.exit_status == 5
        assert lines[0] == "shared" and lines[1] == "joined"
        assert lines[2] != "1" and int(lines[3]) <= 4 and lines[4] == "1000"
        # exec'd processes are in the sandbox's cgroup
        assert sb.cgroup is not None and sb.pid in sb.cgroup.pids()
        sb.kill(signal.SIGKILL)
        assert sb.wait(10).exit_status == 137
    finally:
        os.close(r_fd)


def test_teardown_from_another_process(executor: Executor, root: Root, host: HostSnapshot) -> None:
    sb = executor.start(spec_for(root, "sleep", "60"), stdout=subprocess.DEVNULL)
    assert sb.alive()
    subprocess.run([sys.executable, "-c", "import sys; from builder.core.sandbox import teardown_run_dir; "
                    "teardown_run_dir(sys.argv[1])", str(sb.run_dir)], check=True, cwd=Path(__file__).parents[2])
    res = sb.wait(10)
    assert res.exit_status == 137 and not sb.run_dir.exists()
    with pytest.raises(SandboxError):
        teardown_run_dir(sb.run_dir)


def test_keyboard_interrupt_while_waiting_tears_down(executor: Executor, root: Root, host: HostSnapshot) -> None:
    calls = 0

    def boom(_: bytes) -> None:
        nonlocal calls
        calls += 1
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        executor.run(spec_for(root, "sh", "-c", "echo x; sleep 60"), stdout=boom)
    assert calls == 1


def test_copy_fallback_root(executor: Executor, busybox_layer: Path, tmp_path: Path, host: HostSnapshot) -> None:
    root = prepare_root([busybox_layer], tmp_path / "copy", overlay=False)
    assert root.path is not None and not root.is_overlay
    code, out, err, _ = run(executor, spec_for(root, "sh", "-c", "echo $$; echo hi > /new; rm /bin/vi", tmp=tmp_path))
    assert code == 0 and out.strip() == "1", err
    assert (Path(root.path) / "new").exists() and not (Path(root.path) / "etc" / "hosts").exists()


def test_many_layers_exceed_a_page_of_paths(
    executor: Executor, state: StateRoot, busybox_layer: Path, tmp_path: Path, host: HostSnapshot
) -> None:
    import io
    import tarfile

    cache = LayerCache(state)
    dirs = [busybox_layer]
    for i in range(120):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            ti = tarfile.TarInfo(f"layers/l{i:03d}")
            data = f"{i}\n".encode()
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        raw = buf.getvalue()
        dirs.append(cache.unpack("sha256:" + hashlib.sha256(raw).hexdigest(), lambda raw=raw: io.BytesIO(raw)))
    assert sum(len(str(d)) + 1 for d in dirs) > 4096
    root = prepare_root(dirs, tmp_path / "many")
    code, out, err, _ = run(executor, spec_for(root, "sh", "-c", "ls /layers | wc -l; cat /layers/l119"))
    assert code == 0, err
    assert out.split() == ["120", "119"]


def test_device_node_from_a_layer_is_unusable(
    executor: Executor, state: StateRoot, busybox_layer: Path, tmp_path: Path, host: HostSnapshot
) -> None:
    import io
    import tarfile

    disk = os.stat("/").st_dev
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind in (("evil/disk", tarfile.BLKTYPE), ("evil/mem", tarfile.CHRTYPE)):
            ti = tarfile.TarInfo(name)
            ti.type = kind
            ti.mode = 0o666
            ti.devmajor, ti.devminor = (os.major(disk), os.minor(disk)) if kind == tarfile.BLKTYPE else (1, 1)
            tf.addfile(ti)
    raw = buf.getvalue()
    evil = LayerCache(state).unpack("sha256:" + hashlib.sha256(raw).hexdigest(), lambda: io.BytesIO(raw))
    root = prepare_root([busybox_layer, evil], tmp_path / "dev")
    code, out, _, _ = run(executor, spec_for(root, "sh", "-c",
                                            "head -c 16 /evil/disk >/dev/null 2>&1 && echo disk-read; "
                                            "head -c 16 /evil/mem >/dev/null 2>&1 && echo mem-read; "
                                            "mknod /tmp/d b 8 0 && head -c 1 /tmp/d >/dev/null 2>&1 && echo mknod-read; "
                                            "echo done"))
    assert code == 0 and out.split() == ["done"]


def test_owner_killed_then_stale_sandbox_is_reaped(
    executor: Executor, state: StateRoot, root: Root, host: HostSnapshot
) -> None:
    """The process that started a sandbox dies by SIGKILL: its processes die with it (parent-death
    signals), and the next start in the same state root removes what is left (cgroups, run dir)."""
    from builder.core.sandbox import reap_stale

    spec = spec_for(root, "sleep", "60")
    r_fd, w_fd = os.pipe()
    owner = os.fork()
    if owner == 0:  # pragma: no cover - the doomed owner
        try:
            sb = Executor(state).start(spec, stdout=subprocess.DEVNULL)
            os.write(w_fd, f"{sb.pid}\n".encode())
            time.sleep(60)
        finally:
            os._exit(1)
    os.close(w_fd)
    init_pid = int(_read_line(r_fd))
    os.close(r_fd)
    run_dir = state.run / spec.id
    assert run_dir.is_dir() and Path(f"/proc/{init_pid}").exists()
    os.kill(owner, signal.SIGKILL)
    os.waitpid(owner, 0)
    for _ in range(200):
        if not Path(f"/proc/{init_pid}").exists():
            break
        time.sleep(0.01)
    assert not Path(f"/proc/{init_pid}").exists()
    assert run_dir.is_dir()  # nobody tore it down yet
    assert spec.id in reap_stale(state)
    assert not run_dir.exists()


def test_exec_by_pid_and_bad_target(executor: Executor, root: Root, host: HostSnapshot) -> None:
    r_fd, w_fd = os.pipe()
    try:
        sb = executor.start(spec_for(root, "sh", "-c", "echo ready; exec sleep 60"), stdout=w_fd)
        os.close(w_fd)
        assert _read_line(r_fd) == "ready"
        out: list[bytes] = []
        res = executor.exec(sb.pid, Process(args=("sh", "-c", "echo $$ >/dev/null; hostname")), stdout=out.append)
        assert res.exit_status == 0 and b"".join(out) == b"box\n"
        with pytest.raises(CommandNotFound):
            executor.exec(sb.pid, Process(args=("nope",)))
        sb.kill(signal.SIGKILL)
        sb.wait(10)
    finally:
        os.close(r_fd)
    with pytest.raises(SandboxError, match="no running sandbox"):
        executor.exec(sb.pid, Process(args=("true",)))


def test_start_killed_midway_is_torn_down_from_its_state(
    state: StateRoot, root: Root, host: HostSnapshot
) -> None:
    """A start killed after making its cgroups (before any process) leaves a state that
    ``teardown_run_dir`` can undo from another process."""
    spec = spec_for(root, "true")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the doomed starter
        ex = Executor(state)
        ex._spawn = lambda *a, **k: os._exit(9)  # type: ignore[method-assign]
        try:
            ex.start(spec)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 9
    run_dir = state.run / spec.id
    leftover = [p for p in Path("/sys/fs/cgroup").glob(f"*/pybuild/{spec.id}")]
    assert run_dir.is_dir() and leftover
    teardown_run_dir(run_dir)
    assert not run_dir.exists() and not [p for p in leftover if p.exists()]


def test_a_start_whose_starter_was_killed_is_reaped_at_once(
    state: StateRoot, root: Root, host: HostSnapshot
) -> None:
    """A start killed after making its cgroups (before any process) is no start in progress:
    its state names the starter, so a sweep (``reap_stale``: the next build, ``builder prune``,
    ``system check``) tears it down at once, not after the 60 s a starting sandbox is given.
    A start whose starter lives is left alone."""
    from builder.core.sandbox.handle import pid_start, reap_stale, write_state

    spec = spec_for(root, "true")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the doomed starter
        ex = Executor(state)
        ex._spawn = lambda *a, **k: os._exit(9)  # type: ignore[method-assign]
        try:
            ex.start(spec)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 9
    run_dir = state.run / spec.id
    leftover = [p for p in Path("/sys/fs/cgroup").glob(f"*/pybuild/{spec.id}")]
    assert run_dir.is_dir() and leftover
    live = state.run / new_id()
    live.mkdir()
    write_state(live, {"id": live.name, "pid": 0, "starter": [os.getpid(), pid_start(os.getpid())]})
    try:
        assert reap_stale(state) == [spec.id]
        assert not run_dir.exists() and not [p for p in leftover if p.exists()]
        assert live.is_dir()  # its starter (this process) lives: a start in progress
    finally:
        teardown_run_dir(live)


def test_orphan_cgroups_are_removed_by_age(host: HostSnapshot) -> None:
    """Empty ``pybuild/<id>`` cgroups left by a killed owner whose state root is gone."""
    from builder.core.sandbox.cgroups import remove_orphans

    old = Path("/sys/fs/cgroup/pids/pybuild") / new_id()
    young = Path("/sys/fs/cgroup/memory/pybuild") / new_id()
    for d in (old, young):
        d.parent.mkdir(exist_ok=True)
        d.mkdir()
    try:
        t = time.time() - 3600
        os.utime(old, (t, t))
        removed = remove_orphans(min_age=600)
        assert str(old) in removed and not old.exists()
        assert young.exists() and str(young) not in removed  # a start in progress is left alone
    finally:
        for d in (old, young):
            if d.exists():
                d.rmdir()
        for parent in (old.parent, young.parent):
            try:
                parent.rmdir()
            except OSError:
                pass


def test_swapped_stdout_and_stderr_fds(
    executor: Executor, root: Root, host: HostSnapshot, capfd: pytest.CaptureFixture[str]
) -> None:
    """stdout=2, stderr=1: the fds overlap the targets they are moved onto."""
    r = executor.run(spec_for(root, "sh", "-c", "echo to-out; echo to-err >&2"), stdout=2, stderr=1)
    assert r.exit_status == 0
    captured = capfd.readouterr()
    assert captured.out == "to-err\n" and captured.err == "to-out\n"


def test_terminal_resize(executor: Executor, root: Root, host: HostSnapshot) -> None:
    out: list[bytes] = []
    r_fd, w_fd = os.pipe()
    try:
        sb = executor.start(spec_for(root, "sh", "-c", "read x; stty size", terminal=True),
                            stdin=r_fd, stdout=out.append)
        assert sb.pty_master is not None
        sb.resize(40, 120)
        os.write(w_fd, b"go\n")
        res = sb.wait(15)
    finally:
        os.close(w_fd)
        os.close(r_fd)
    assert res.exit_status == 0 and b"40 120" in b"".join(out)


def test_host_pid_namespace_leftovers_do_not_hang(executor: Executor, root: Root, host: HostSnapshot) -> None:
    """Without a pid namespace a background child outlives the init and holds its stdout: the
    run still ends (the cgroup is killed), and nothing is left."""
    out: list[bytes] = []
    t = time.monotonic()
    r = executor.run(spec_for(root, "sh", "-c", "sleep 60 & echo started",
                              namespaces=Namespaces(pid="host")), stdout=out.append, timeout=30)
    assert r.exit_status == 0 and b"".join(out) == b"started\n"
    assert time.monotonic() - t < 10


def test_terminals_come_from_the_sandbox_devpts(executor: Executor, root: Root, host: HostSnapshot) -> None:
    r_fd, w_fd = os.pipe()
    try:
        out: list[bytes] = []
        sb = executor.start(spec_for(root, "sh", "-c", "tty; read x", terminal=True), stdin=r_fd,
                            stdout=out.append)
        res = executor.exec(sb, Process(args=("sh", "-c", "tty; ls /dev/pts"), terminal=True),
                            stdout=out.append)
        exec_out = b"".join(out).decode()
        os.write(w_fd, b"\n")
        assert sb.wait(15).exit_status == 0 and res.exit_status == 0
    finally:
        os.close(w_fd)
        os.close(r_fd)
    text = b"".join(out).decode()
    assert exec_out.split() == ["/dev/pts/1", "0", "1", "ptmx"]  # the sandbox's own devpts
    assert text.split()[-1] == "/dev/pts/0"


def test_concurrent_runs_from_threads(executor: Executor, busybox_layer: Path, tmp_path: Path, host: HostSnapshot) -> None:
    """The build solver runs stages in threads: sandboxes started side by side do not hold each
    other's pipes (each would otherwise wait for the other's end)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> tuple[int, str, float]:
        root = prepare_root([busybox_layer], tmp_path / f"t{i}")
        out: list[bytes] = []
        t = time.monotonic()
        naps = {1: "0.1", 2: "0.5", 3: "1", 4: "2.5"}
        r = executor.run(spec_for(root, "sh", "-c", f"sleep {naps[i]}; echo {i}"), stdout=out.append, timeout=30)
        return r.exit_status, b"".join(out).decode().strip(), time.monotonic() - t

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(1, 5)))
    assert [(code, out) for code, out, _ in results] == [(0, str(i)) for i in range(1, 5)]
    assert results[0][2] < 2.0  # the shortest did not wait for the longest (2.5 s)
