"""``pybuild build --isolation chroot`` (issue 17), Buildah's isolation for hosts without user
namespaces: RUN chrooted with a mount namespace of its own only, said in a warning; as root and
as an ordinary user (``test_rootless.ordinary_user``). Where no namespace can be made at all:
root without CAP_SYS_ADMIN (a container without privileges) builds with it, chrooted only; an
ordinary user on a host with user namespaces disabled gets one line saying why."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_rootless import ordinary_user  # noqa: E402

DOCKERFILE = """\
FROM busybox
RUN hostname > /host-name && ls /proc | grep -c '^[0-9]' > /procs && ip -o link | wc -l > /links \\
 && echo built > /built
"""
WARNING = "WARNING: --isolation chroot: RUN steps run chrooted"


def _check(out: str) -> None:
    name, procs, links = out.split()[:3]
    assert name == socket.gethostname()  # the host's UTS namespace, not "buildkitsandbox"
    assert int(procs) > 10  # the host's processes
    assert int(links) >= 2  # the host's links (a new network namespace has lo alone)


def test_chroot_isolation_as_root(busybox: Any, tmp_path: Path) -> None:
    pb = busybox
    (tmp_path / "Dockerfile").write_text(DOCKERFILE)
    r = pb("build", "--isolation", "chroot", "-t", "chrooted:1", str(tmp_path))
    assert r.stderr.splitlines()[0].startswith(WARNING), r.stderr
    out = pb("run", "--rm", "--network", "none", "chrooted:1", "cat", "/host-name", "/procs", "/links",
             "/built").stdout
    _check(out)
    assert out.split()[-1] == "built"
    # the default isolation: new namespaces, no warning
    (tmp_path / "Dockerfile").write_text(DOCKERFILE.replace("built", "isolated"))
    r = pb("build", "-t", "isolated:1", str(tmp_path))
    assert WARNING not in r.stderr
    out = pb("run", "--rm", "--network", "none", "isolated:1", "cat", "/procs", "/links").stdout
    procs, links = out.split()
    assert int(procs) < 5 and links == "1"  # its own processes; lo alone (RUN's default network)


def test_chroot_isolation_as_an_ordinary_user(busybox_tar: Path, tmp_path: Path) -> None:
    with ordinary_user() as user:
        tar = user.give(busybox_tar, "busybox.tar")
        user.pb("import", "--change", 'CMD ["sh"]', str(tar), "busybox:latest")
        (tmp_path / "Dockerfile").write_text(DOCKERFILE)
        ctx = user.give(tmp_path, "ctx")
        r = user.pb("build", "--isolation", "chroot", "-t", "chrooted:1", str(ctx))
        assert r.stderr.splitlines()[0].startswith(WARNING), r.stderr
        out = user.pb("run", "--rm", "--network", "none", "chrooted:1", "cat", "/host-name", "/procs",
                      "/links", "/built").stdout
        assert out.split()[-1] == "built"
        _check(out)


# -- where no namespace can be made at all ---------------------------------------------------------------
BARE_WARNING = "WARNING: --isolation chroot without CAP_SYS_ADMIN: RUN steps run only chrooted"
BARE_DOCKERFILE = """\
FROM busybox
RUN echo built > /built && ls -A /proc | wc -l > /procs && id -u > /uid && chown 1000:1000 /built
"""


def _unprivileged(pb: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """``pybuild ARGS`` as root in "a container without privileges": CAP_SYS_ADMIN dropped from
    the bounding set (``capsh --drop``), so the command has it in no set and can make no
    namespace and no mount."""
    return subprocess.run(["capsh", "--drop=cap_sys_admin", "--", "-c", 'exec "$@"', "sh",
                           *pb.command, "--root", str(pb.root), *args],
                          capture_output=True, text=True, timeout=120)


def test_root_without_cap_sys_admin(busybox: Any, tmp_path: Path) -> None:
    pb = busybox
    (tmp_path / "Dockerfile").write_text(BARE_DOCKERFILE)
    run = _unprivileged(pb, "run", "--rm", "--network", "none", "busybox", "true")
    # the default isolation: one line saying why, pointing at --isolation chroot
    r = _unprivileged(pb, "build", "-t", "bare:1", str(tmp_path))
    assert r.returncode != 0, r.stdout
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: Dockerfile:2: RUN ") and last.endswith(
        "cannot create namespaces or mounts: this process lacks CAP_SYS_ADMIN (a container without "
        "privileges?); build with `pybuild build --isolation chroot`"), r.stderr
    assert run.returncode != 0 and run.stderr.strip().splitlines() == [
        "Error: cannot create namespaces or mounts: this process lacks CAP_SYS_ADMIN (a container "
        "without privileges?); build with `pybuild build --isolation chroot`"], run.stderr
    # --isolation chroot: RUN chrooted into a copied root, nothing mounted, said in the warning
    r = _unprivileged(pb, "build", "--isolation", "chroot", "-t", "bare:1", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines()[0].startswith(BARE_WARNING), r.stderr
    out = pb("run", "--rm", "--network", "none", "bare:1", "sh", "-c",
             "cat /built /procs /uid; stat -c %u:%g /built").stdout.split()
    assert out == ["built", "0", "0", "1000:1000"]  # no /proc mounted; root; the owner kept


def _without_user_namespaces(argvs: list[list[str]], cwd: Path) -> list[tuple[int, str]]:
    """Run each of *argvs* (as root, in *cwd*) where no user namespace can be made, and give
    their exit codes and stderr.

    ``sysctl user.max_user_namespaces=0`` on the host is what the issue names, but this VM's root
    lacks CAP_SYS_RESOURCE, which writing a ``user.*`` sysctl needs. The sysctl belongs to a user
    namespace, though: a namespace of root's own that maps every ID to itself (so the user is
    itself there) has its own, which its root may set: 0 there is a host with user namespaces
    disabled for everything run inside, and the host's value is never touched."""
    from builder.base import syscalls as sc

    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(ready_r)
            os.close(go_w)
            sc.real().unshare(sc.CLONE_NEWUSER)
            os.write(ready_w, b"1")
            if os.read(go_r, 1) == b"1":
                Path("/proc/sys/user/max_user_namespaces").write_text("0\n")
                out = [subprocess.run(a, cwd=cwd, capture_output=True, text=True, timeout=120) for a in argvs]
                os.write(ready_w, json.dumps([(r.returncode, r.stderr) for r in out]).encode())
                code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(go_r)
    try:
        assert os.read(ready_r, 1) == b"1"
        for f in ("uid_map", "gid_map"):
            Path(f"/proc/{pid}/{f}").write_text("0 0 4294967295\n")
        os.write(go_w, b"1")
        data = b""
        while chunk := os.read(ready_r, 65536):
            data += chunk
    finally:
        os.close(ready_r)
        os.close(go_w)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return [(code, err) for code, err in json.loads(data)]


def test_no_user_namespaces_for_an_ordinary_user(tmp_path: Path) -> None:
    """A host with user namespaces disabled (``user.max_user_namespaces`` 0, see
    ``_without_user_namespaces``): one line saying why, also for ``--isolation chroot``."""
    before = Path("/proc/sys/user/max_user_namespaces").read_text()
    (tmp_path / "Dockerfile").write_text(BARE_DOCKERFILE)
    with ordinary_user() as user:
        ctx = user.give(tmp_path, "ctx")
        pb = [str(user.python), "-m", "builder.cli"]
        (code, err), (chroot_code, chroot_err) = _without_user_namespaces(
            [user.argv(*pb, "build", "-t", "x:1", str(ctx)),
             user.argv(*pb, "build", "--isolation", "chroot", "-t", "x:1", str(ctx))], user.home)
        assert not user.processes()
    assert Path("/proc/sys/user/max_user_namespaces").read_text() == before  # the host's, untouched
    assert code != 0 and err.splitlines() == [
        "Error: rootless: cannot create a user namespace (user.max_user_namespaces is 0; as root: "
        "sysctl -w user.max_user_namespaces=15000 kernel.unprivileged_userns_clone=1): pybuild "
        "cannot run as an ordinary user here"], err
    assert chroot_code != 0 and chroot_err.splitlines() == [
        "Error: rootless: --isolation chroot needs CAP_SYS_CHROOT, which an ordinary user has only in "
        "a user namespace, and none can be made here (user.max_user_namespaces is 0): build as root"], \
        chroot_err
