#!/usr/bin/env python3
"""Execution core benchmark: start-to-exit of ``/bin/true`` in a busybox image, and the layer cache.

Prints, side by side in one run: our library call (in-process), the whole ``pybuild run``
command (a process), ``runc run`` of the same bundle, ``docker run --rm`` when an engine
answers; then the first use (unpack) and second use (cache hit) of a 20-layer image.
Run as root: ``.venv/bin/python bench/bench_sandbox.py [-n 50]``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from builder.base.state import StateRoot  # noqa: E402
from builder.core.rootfs import LayerCache, prepare_root  # noqa: E402
from builder.core.sandbox import Executor, Namespaces, Process, Spec, default_mounts, etc_mounts  # noqa: E402
from builder.core.sandbox.oci import to_oci_bundle  # noqa: E402


def _mkbusybox() -> object:
    spec = importlib.util.spec_from_file_location("mkbusybox", REPO / "testdata" / "mkbusybox.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def median_time(fn: Callable[[], object], n: int) -> tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def row(name: str, med: float | None, best: float | None = None, note: str = "") -> None:
    if med is None:
        print(f"  {name:<44} {'-':>9}   {note}")
    else:
        print(f"  {name:<44} {med * 1000:8.1f} ms (min {best * 1000 if best else 0:6.1f} ms) {note}")


def layered_tars(rootfs: Path, count: int) -> list[bytes]:
    """Split a rootfs into *count* layer tars (every directory in each, files spread over them)."""
    entries = sorted(p.relative_to(rootfs).as_posix() for p in rootfs.rglob("*"))
    dirs = [e for e in entries if (rootfs / e).is_dir() and not (rootfs / e).is_symlink()]
    others = [e for e in entries if e not in set(dirs)]
    tars = []
    for i in range(count):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for d in dirs:
                tf.add(rootfs / d, arcname=d, recursive=False)
            for e in others[i::count]:
                tf.add(rootfs / e, arcname=e, recursive=False)
        tars.append(buf.getvalue())
    return tars


def docker_row(busybox_tar: Path, tmp: Path, n: int) -> None:
    """``docker run --rm`` of the same image: the running engine, else a private dockerd started
    here (it comes up in about half a second) and stopped afterwards."""
    docker = shutil.which("docker")
    dockerd = shutil.which("dockerd")
    if docker is None:
        row("docker run --rm", None, note="docker not installed")
        return
    host: list[str] = []
    proc = None
    if subprocess.run([docker, "info"], capture_output=True).returncode != 0:
        if dockerd is None:
            row("docker run --rm", None, note="no docker engine and no dockerd")
            return
        d = tmp / "dockerd"
        d.mkdir()
        sock = f"unix://{d}/docker.sock"
        proc = subprocess.Popen([dockerd, "--data-root", str(d / "data"), "--exec-root", str(d / "exec"),
                                 "--pidfile", str(d / "pid"), "-H", sock, "--bridge", "none",
                                 "--iptables=false", "--ip6tables=false"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        host = ["-H", sock]
        for _ in range(100):
            if subprocess.run([docker, *host, "info"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            proc.terminate()
            proc.wait()
            row("docker run --rm", None, note="a private dockerd did not come up")
            return
    try:
        tag = "pybuild-bench-busybox:latest"
        if subprocess.run([docker, *host, "import", str(busybox_tar), tag], capture_output=True).returncode:
            row("docker run --rm", None, note="docker import failed")
            return

        def docker_run() -> None:
            subprocess.run([docker, *host, "run", "--rm", "--network", "none", tag, "/bin/true"],
                           check=True, stdin=subprocess.DEVNULL)

        note = "(a private dockerd)" if proc is not None else ""
        row("docker run --rm --network none", *median_time(docker_run, n), note=note)
        subprocess.run([docker, *host, "rmi", tag], capture_output=True)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("-n", type=int, default=50, help="runs per measurement (median)")
    args = ap.parse_args()
    n = args.n
    tmp = Path(tempfile.mkdtemp(prefix="bench-sandbox-"))
    try:
        bb = tmp / "busybox.tar"
        _mkbusybox().make_tar(bb)  # type: ignore[attr-defined]
        raw = bb.read_bytes()
        diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
        state = StateRoot.open(tmp / "state")
        layer = LayerCache(state).unpack(diff_id, lambda: io.BytesIO(raw))
        root = prepare_root([layer], tmp / "c")
        mounts = default_mounts() + etc_mounts(tmp / "etc", hostname="bench")
        spec = Spec(process=Process(args=("/bin/true",)), root=root, mounts=mounts, hostname="bench")
        ex = Executor(state)

        print(f"start-to-exit of /bin/true in busybox, median of {n} (runs interleaved, same load)")
        contenders: dict[str, Callable[[], object]] = {}

        def lib() -> None:
            r = ex.run(spec)
            assert r.exit_status == 0

        contenders["pybuild library Executor.run (overlay root)"] = lib
        from builder.core.sandbox import seccomp

        sspec = Spec(process=Process(args=("/bin/true",), seccomp=seccomp.default()), root=root,
                     mounts=mounts, hostname="bench")

        def lib_seccomp() -> None:
            r = ex.run(sspec)
            assert r.exit_status == 0

        contenders["  same, default seccomp profile (cached BPF)"] = lib_seccomp

        # the same bundle for runc: a plain rootfs directory, our config.json
        rootfs = tmp / "bundle-rootfs"
        _mkbusybox().make_rootfs(rootfs)  # type: ignore[attr-defined]
        from builder.core.rootfs import Root

        bspec = Spec(process=Process(args=("/bin/true",)), root=Root(path=str(rootfs)),
                     mounts=mounts, hostname="bench")
        bundle = tmp / "bundle"
        to_oci_bundle(bspec, bundle, sandbox_id="benchrunc")
        runc = shutil.which("runc")
        if runc:
            counter = iter(range(10**6))

            def runc_run() -> None:
                subprocess.run([runc, "--root", str(tmp / "runc"), "run", "--bundle", str(bundle),
                                f"bench{next(counter)}"], check=True, stdin=subprocess.DEVNULL)

            contenders["runc run (same bundle)"] = runc_run

        def lib_plain() -> None:
            r = ex.run(bspec)
            assert r.exit_status == 0

        contenders["pybuild library, the bundle's plain rootfs dir"] = lib_plain
        pybuild = Path(sys.executable).parent / "pybuild"
        croot = tmp / "cli-root"
        imp = subprocess.run([str(pybuild), "--root", str(croot), "import", str(bb), "busybox:latest"],
                             capture_output=True, text=True)
        if imp.returncode == 0:
            def cli() -> None:
                subprocess.run([str(pybuild), "--root", str(croot), "run", "--rm", "--network", "none",
                                "busybox", "/bin/true"], check=True, stdin=subprocess.DEVNULL)

            contenders["pybuild run --rm --network none (registered)"] = cli
            contenders["  same, --security-opt seccomp=unconfined"] = lambda: subprocess.run(
                [str(pybuild), "--root", str(croot), "run", "--rm", "--network", "none",
                 "--security-opt", "seccomp=unconfined", "busybox", "/bin/true"],
                check=True, stdin=subprocess.DEVNULL)
            contenders["  (python -c pass, for scale)"] = lambda: subprocess.run(
                [sys.executable, "-c", "pass"], check=True)
            contenders["  (imports of the run path, no run)"] = lambda: subprocess.run(
                [sys.executable, "-c", "import builder.cli, builder.cli.container_run, "
                 "builder.runtime.containers.service, builder.runtime.containers.supervisor"], check=True, cwd=REPO)
        else:
            row("pybuild run", None, note=f"import failed: {imp.stderr.strip()[:80]}")
        times: dict[str, list[float]] = {k: [] for k in contenders}
        for fn in contenders.values():
            fn()  # warm-up
        for _ in range(n):
            for name, fn in contenders.items():
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
        for name, ts in times.items():
            row(name, statistics.median(ts), min(ts))
        if not runc:
            row("runc run", None, note="runc not installed")

        docker_row(bb, tmp, min(n, 20))

        print("\nseccomp: the default profile's program (x86_64 + x86 + x32)")
        caps = sspec.process.capabilities
        seccomp.compile_bpf.cache_clear()

        def cold_compile() -> object:
            seccomp.compile_bpf.cache_clear()
            return seccomp.compile_bpf(seccomp.default(), caps)

        row("compile through libseccomp (cold)", *median_time(cold_compile, min(n, 20)))
        row("read back from cache/seccomp/", *median_time(
            lambda: seccomp.program(seccomp.default(), caps, cache_dir=state.cache / "seccomp"), n))

        print("\nlayer cache: a 20-layer image (busybox split in 20)")
        tars = layered_tars(rootfs, 20)
        pairs = [("sha256:" + hashlib.sha256(t).hexdigest(), (lambda t=t: io.BytesIO(t))) for t in tars]
        s2 = StateRoot.open(tmp / "state20")
        cache = LayerCache(s2)
        t = time.perf_counter()
        dirs = cache.unpack_all(pairs)
        first = time.perf_counter() - t
        t = time.perf_counter()
        again = cache.unpack_all(pairs)
        second = time.perf_counter() - t
        assert dirs == again
        row("first use (unpack 20 layers)", first, first)
        row("second use (cache hit)", second, second)
        root20 = prepare_root(dirs, tmp / "c20")
        spec20 = Spec(process=Process(args=("/bin/true",)), root=root20, mounts=mounts,
                      namespaces=Namespaces())
        row("run /bin/true over the 20-layer overlay", *median_time(lambda: ex.run(spec20), min(n, 20)))
    finally:
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if os.geteuid() != 0:
        raise SystemExit("run as root (namespaces, overlayfs, cgroups)")
    main()
