#!/usr/bin/env python3
"""bench_rootless: pybuild as root and as an ordinary user (rootless), side by side in one run,
with podman/buildah as root and rootless next to them.

``run --rm`` (no network, and the default network: root's bridge against slirp4netns), a cold
and a fully cached build (rootless with the kernel's overlayfs and with fuse-overlayfs forced),
and a pull from a local registry; median of ``BENCH_RUNS`` (5). The user is made as the tests
make it (``tests/builder/test_rootless.py``: ``useradd`` with sub-ID ranges, ``runuser -u``) and
removed at the end. Run as root: ``.venv/bin/python bench/bench_rootless.py``.

The peers (Debian's ``podman`` and ``buildah``, when installed): ``podman run --rm``, ``buildah
bud --layers`` (``--no-cache`` for the cold build; ``--network none``, as pybuild's RUN default),
``podman pull`` after ``podman rmi``; all with ``--storage-driver overlay`` (the kernel's, also
rootless: their rootless default here is vfs) and the same offline busybox, loaded from the
docker-archive ``pybuild save`` writes. As root this VM lacks CAP_SYS_RESOURCE, so podman's
default rlimits (nofile 1048576) fail in runc: ``--ulimit`` gives lower ones. Root podman's
default network is CNI's ``cni-podman0`` bridge and rules, and its conmon gets a ``libpod_parent``
cgroup in each hierarchy, which podman leaves on the host: the bench removes what it added. A peer column that does not work says why under the table.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "builder"))
sys.path.insert(0, str(REPO / "tests" / "registry"))
sys.path.insert(0, str(REPO / "bench"))
PYBUILD = str(Path(sys.executable).parent / "pybuild")
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
NAN = float("nan")
#: rlimits runc can set without CAP_SYS_RESOURCE (podman's defaults need it)
ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=32768:32768")

DOCKERFILE = """\
FROM busybox
COPY data.txt /data.txt
RUN head -c 20000000 /dev/urandom > /big && mkdir -p /app && chown 1000:1000 /app
RUN cp /bin/busybox /app/tool && chmod u+s /app/tool && ln /data.txt /app/data.txt
RUN rm -rf /home && mkdir /home && echo done > /home/done
"""
COLUMNS = ("root", "rootless", "rl+fuse", "podman", "podman rl")


def median_time(fn: Callable[[], Any], before: Callable[[], Any] | None = None, *, runs: int = RUNS) -> float:
    times = []
    for _ in range(runs):
        if before is not None:
            before()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


class Peer:
    """podman/buildah as root (``user`` None) or as the user: ``why`` says what failed, if anything."""

    def __init__(self, name: str, run: Callable[..., None]) -> None:
        self.name, self.run, self.why = name, run, ""

    def time(self, argv: tuple[str, ...], before: tuple[str, ...] | None = None, *, runs: int = RUNS) -> float:
        """The median time of *argv* (*before* each, untimed); NaN once something failed."""
        if self.why:
            return NAN
        try:
            return median_time(lambda: self.run(*argv),
                               None if before is None else lambda: self.run(*before, check=False), runs=runs)
        except (subprocess.CalledProcessError, AssertionError) as e:
            err = getattr(e, "stderr", None) or str(e)
            lines = [x for x in (err.decode() if isinstance(err, bytes) else err).splitlines()
                     if x.strip() and "level=warning" not in x]
            self.why = f"{self.name}: {' '.join(argv[:2])} failed: {lines[-1] if lines else '?'}"
            return NAN


def cni_state() -> tuple[bool, set[str], bool]:
    """What root podman's CNI bridge network leaves: the bridge, filter chains, its state dir."""
    link = subprocess.run(["ip", "link", "show", "cni-podman0"], capture_output=True).returncode == 0
    rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout.splitlines()
    chains = {r.split()[1] for r in rules if r.startswith("-N CNI-")}
    return link, chains, os.path.exists("/var/lib/cni")


def cni_undo(before: tuple[bool, set[str], bool]) -> None:
    """Remove what root podman's network added to the host since *before* (podman keeps it)."""
    link, chains, state = cni_state()
    if link and not before[0]:
        subprocess.run(["ip", "link", "del", "cni-podman0"], capture_output=True)
    new = chains - before[1]
    if new:
        for r in subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout.splitlines():
            if r.startswith("-A ") and any(f"-j {c}" in r for c in new) and r.split()[1] not in new:
                subprocess.run(["iptables", "-D", *shlex.split(r)[1:]], capture_output=True)
        for c in new:
            subprocess.run(["iptables", "-F", c], capture_output=True)
        for c in new:
            subprocess.run(["iptables", "-X", c], capture_output=True)
    if state and not before[2]:
        shutil.rmtree("/var/lib/cni", ignore_errors=True)


def podman_cgroups() -> set[Path]:
    """Root podman's ``libpod_parent`` cgroups (conmon's), which it leaves in every hierarchy."""
    return set(Path("/sys/fs/cgroup").glob("*/libpod_parent"))


def podman_cgroups_undo(before: set[Path]) -> None:
    for top in podman_cgroups() - before:
        for d, _, _ in os.walk(top, topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(d)


def fmt(v: float) -> str:
    return f"{'n/a':>9}" if math.isnan(v) else f"{v:8.3f}s"


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("bench_rootless makes a user: run it as root")
    from bench_build import busybox_tar
    from registry_server import start_registry
    from test_rootless import ordinary_user

    work = Path(tempfile.mkdtemp(prefix="bench-rootless-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    busybox = busybox_tar(work)
    busybox.chmod(0o644)
    root_dir = work / "root"
    ctx = work / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "data.txt").write_text("data\n" * 1000)
    os.chmod(ctx / "Dockerfile", 0o644)

    def root(*args: str, env: dict[str, str] | None = None) -> None:
        subprocess.run([PYBUILD, "--root", str(root_dir), *args], check=True, capture_output=True,
                       env={**os.environ, **(env or {})})

    have_peers = bool(shutil.which("podman") and shutil.which("buildah"))
    store = ("--root", str(work / "pm-root"), "--runroot", str(work / "pm-run"), "--storage-driver", "overlay")

    def root_peer(tool: str, *args: str, check: bool = True) -> None:
        subprocess.run([tool, *store, *args], check=check, capture_output=True)

    rows: list[tuple[str, list[float]]] = []
    notes: list[str] = []
    cni_before, cgroups_before = cni_state(), podman_cgroups()
    reg = start_registry(work / "registry")
    try:
        with ordinary_user() as user:
            def rl(*args: str, env: dict[str, str] | None = None) -> None:
                user.pb(*args, env=env)

            def user_peer(tool: str, *args: str, check: bool = True) -> None:
                user.sh(tool, "--storage-driver", "overlay", *args, check=check)

            peers = [Peer("podman/buildah as root", root_peer), Peer("podman/buildah rootless", user_peer)]
            fuse = {"PYBUILD_ROOTLESS_OVERLAY": "fuse-overlayfs"}
            uctx = user.give(ctx, "ctx")
            ubusy = user.give(busybox, "busybox.tar")
            root("import", "--change", 'CMD ["sh"]', str(busybox), "busybox:latest")
            rl("import", "--change", 'CMD ["sh"]', str(ubusy), "busybox:latest")
            rl("run", "--rm", "--network", "none", "busybox", "true")  # the keeper, first layers
            root("run", "--rm", "--network", "none", "busybox", "true")
            if have_peers:
                archive = work / "busybox-docker.tar"
                root("save", "-o", str(archive), "busybox:latest")
                archive.chmod(0o644)
                uarchive = user.give(archive, "busybox-docker.tar")
                for p, tar in zip(peers, (archive, uarchive), strict=True):
                    p.time(("podman", "load", "-q", "-i", str(tar)), runs=1)
                    p.time(("podman", "run", "--rm", *ULIMITS, "--network", "none", "busybox", "true"), runs=1)
            else:
                for p in peers:
                    p.why = f"{p.name}: not installed (apt-get install podman buildah)"
            for label, args in (("run --rm --network none", ["--network", "none"]),
                                ("run --rm (bridge | slirp4netns)", [])):
                argv = ("run", "--rm", *args, "busybox", "true")
                rows.append((label, [median_time(lambda a=argv: root(*a)),  # type: ignore[misc]
                                     median_time(lambda a=argv: rl(*a)),  # type: ignore[misc]
                                     median_time(lambda a=argv: rl(*a, env=fuse)),  # type: ignore[misc]
                                     *(p.time(("podman", "run", "--rm", *ULIMITS, *args, "busybox", "true"))
                                       for p in peers)]))
            cold = ("build", "--no-cache", "-q", "-t", "bench")
            bud = ("buildah", "bud", "-q", "--layers", "--network", "none", "-t", "bench")
            root_bud = (*bud[:2], "--runtime", "/usr/sbin/runc", *bud[2:])
            rows.append(("build, cold (--no-cache)", [
                median_time(lambda: root(*cold, str(ctx))),
                median_time(lambda: rl(*cold, str(uctx))),
                median_time(lambda: rl(*cold, str(uctx), env=fuse)),
                peers[0].time((*root_bud, "--no-cache", str(ctx))),
                peers[1].time((*bud, "--no-cache", str(uctx)))]))
            cached = ("build", "-q", "-t", "bench")
            rows.append(("build, all cached", [
                median_time(lambda: root(*cached, str(ctx))),
                median_time(lambda: rl(*cached, str(uctx))),
                median_time(lambda: rl(*cached, str(uctx), env=fuse)),
                peers[0].time((*root_bud, str(ctx))),
                peers[1].time((*bud, str(uctx)))]))
            ref = f"{reg.addr}/bench/app:1"
            root("tag", "bench", ref)
            root("push", ref)
            rows.append(("pull (after rmi)", [
                median_time(lambda: root("pull", ref), lambda: subprocess.run(
                    [PYBUILD, "--root", str(root_dir), "rmi", ref], capture_output=True)),
                median_time(lambda: rl("pull", ref), lambda: user.pb("rmi", ref, check=False)),
                NAN,
                *(p.time(("podman", "pull", "-q", "--tls-verify=false", ref), ("podman", "rmi", ref))
                  for p in peers)]))
            notes = [p.why for p in peers if p.why]
            if have_peers:
                user_peer("podman", "system", "reset", "-f", check=False)
            r = subprocess.run([PYBUILD, "--root", str(root_dir), "system", "reset", "-a", "-f"],
                               capture_output=True, text=True)
            if r.returncode != 0:
                print(f"root's system reset: {r.stderr.strip()}", file=sys.stderr)
    finally:
        reg.proc.terminate()
        reg.proc.wait()
        if have_peers:
            root_peer("podman", "system", "reset", "-f", check=False)
            subprocess.run(["umount", "-R", str(work / "pm-root" / "overlay")], capture_output=True)
            cni_undo(cni_before)
            podman_cgroups_undo(cgroups_before)
        shutil.rmtree(work, ignore_errors=True)
    print(f"median of {RUNS}, seconds; pybuild as root, rootless (kernel overlayfs), rootless with "
          "fuse-overlayfs forced; podman/buildah as root and rootless (overlay)")
    print(f"{'operation':34}" + "".join(f"{c:>10}" for c in COLUMNS))
    for label, values in rows:
        print(f"{label:34}" + "".join(f" {fmt(v)}" for v in values))
    for n in notes:
        print(f"n/a: {n}")


if __name__ == "__main__":
    main()
