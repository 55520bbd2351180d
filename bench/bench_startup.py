#!/usr/bin/env python3
"""Start-up cost: ``pybuild images``/``ps -a``/``inspect``/``version`` and a fully cached
``pybuild build``, next to the interpreter floor, ``import builder, registry`` (the Python API),
``umoci ls`` and, when a ``dockerd`` is installed, the same ``docker`` commands / a cached
``docker build`` on a private daemon, with the ratios side by side. Both sides hold the same
few containers (``--containers``: half of them running ``sleep``, half exited), so that ``ps -a``
reads records, checks their processes and prints rows.

``--baseline DIR`` runs the same pybuild commands with ``PYTHONPATH=DIR`` (another checkout,
e.g. ``git archive main | tar -x -C DIR``) interleaved with ours, so both see the same load;
run the script with ``PYTHONPATH=OTHER`` to measure another checkout as ours.

    .venv/bin/python bench/bench_startup.py [--images 50] [--containers 4] [--runs 15] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from bench_build import TEN, make_context  # noqa: E402

PYBUILD = str(Path(sys.executable).parent / "pybuild")
# the commands timed beside the docker CLI's own (same arguments)
PEERS = {"images": ["images"], "ps": ["ps", "-a"], "inspect": ["inspect", "busybox"],
         "version": ["version"]}


def run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    # cwd /: ``python -c`` puts the cwd first on sys.path, before PYTHONPATH
    r = subprocess.run(cmd, capture_output=True, env=env, cwd="/")
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr.decode()[-2000:]}")


def byte_compile(tree: Path) -> None:
    """Byte-compile the packages of *tree* as ``pip install`` leaves them: this machine exports
    ``PYTHONDONTWRITEBYTECODE=1``, under which every command would compile them from source."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", "builder", "registry", "grammar"],
                   cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)


def timings(cmds: dict[str, tuple[list[str], dict[str, str] | None]],
            runs: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """The wall times of each command, and the CPU time (user + system) of its own process;
    runs are interleaved (one warm-up each first) so that every command sees the same machine
    load. On a loaded machine the CPU time is the steadier figure for comparing two pybuild
    trees (a docker command's CPU time leaves out the daemon's, so it is no peer figure)."""
    samples: dict[str, list[float]] = {k: [] for k in cmds}
    cpu: dict[str, list[float]] = {k: [] for k in cmds}
    for cmd, env in cmds.values():
        run(cmd, env)
    for _ in range(runs):
        for name, (cmd, env) in cmds.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            run(cmd, env)
            samples[name].append(time.perf_counter() - t)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[name].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return samples, cpu


def make_containers(cli: list[str], n: int, env: dict[str, str] | None = None) -> None:
    """*n* containers of busybox, without a network: the first half running, the rest exited."""
    for i in range(n):
        if i < (n + 1) // 2:
            run([*cli, "run", "-d", "--network", "none", "--name", f"up{i}", "busybox", "sleep", "100000"], env)
        else:
            run([*cli, "run", "--network", "none", "--name", f"exited{i}", "busybox", "true"], env)


def modules_loaded(code: str, env: dict[str, str] | None) -> int:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys; print(len(sys.modules))"],
                         capture_output=True, text=True, env=env, check=True, cwd="/")
    return int(out.stdout.split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--containers", type=int, default=4, help="running and exited, for ps -a")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--baseline", type=Path, help="another checkout to compare (PYTHONPATH)")
    args = ap.parse_args()

    byte_compile(REPO)
    if args.baseline:
        byte_compile(args.baseline)
    base = Path(tempfile.mkdtemp(prefix="bench-startup-", dir="/var/tmp"))
    docker = None
    root = base / "root"
    try:
        spec = importlib.util.spec_from_file_location("mkbusybox", REPO / "testdata" / "mkbusybox.py")
        assert spec and spec.loader
        mk = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mk)
        tar = base / "busybox.tar"
        mk.make_tar(tar)
        run([PYBUILD, "--root", str(root), "import", "--change", 'CMD ["sh"]', str(tar), "busybox:latest"])
        rootfs = base / "tiny"
        (rootfs / "etc").mkdir(parents=True)
        (rootfs / "etc" / "hostname").write_text("bench\n")
        from registry import archive
        from registry.reference import Reference
        from registry.store import Store

        store = Store(root / "store")
        for i in range(args.images):
            archive.import_rootfs(store, rootfs, reference=Reference.parse(f"bench/img{i}:v{i % 7}"))
        ctx = make_context(base, "ten", TEN)
        run([PYBUILD, "--root", str(root), "build", "-q", "-t", "ten:latest", str(ctx)])
        make_containers([PYBUILD, "--root", str(root)], args.containers)

        ours = dict(os.environ)  # a PYTHONPATH given to this script applies to ours
        envs: dict[str, dict[str, str]] = {"": ours}
        if args.baseline:
            envs[" (baseline)"] = {**ours, "PYTHONPATH": str(args.baseline.resolve())}
        cmds: dict[str, tuple[list[str], dict[str, str] | None]] = {
            "python -c pass": ([sys.executable, "-c", "pass"], ours)}
        for suffix, env in envs.items():
            cmds[f"python -c 'import builder, registry'{suffix}"] = (
                [sys.executable, "-c", "import builder, registry"], env)
            for args_ in PEERS.values():
                cmds[f"pybuild {' '.join(args_)}{suffix}"] = ([PYBUILD, "--root", str(root), *args_], env)
            cmds[f"pybuild build (fully cached, 10 steps){suffix}"] = (
                [PYBUILD, "--root", str(root), "build", "-q", "-t", "ten:latest", str(ctx)], env)
        if shutil.which("umoci"):
            cmds["umoci ls --layout STORE"] = (["umoci", "ls", "--layout", str(root / "store")], None)
        if shutil.which("dockerd") or os.path.exists("/usr/sbin/dockerd"):
            from dockerd import Dockerd

            docker = Dockerd()
            docker.start()
            docker_tar = base / "busybox-docker.tar"
            export = base / "export"
            export.mkdir()
            (export / "Dockerfile").write_text("FROM busybox\n")
            run([PYBUILD, "--root", str(root), "build", "-q", "-t", "busybox:latest",
                 "-o", f"type=docker,dest={docker_tar}", str(export)])
            docker.docker("load", "-i", str(docker_tar))
            denv = {**os.environ, "DOCKER_HOST": docker.host, "DOCKER_BUILDKIT": "1"}
            dctx = make_context(base, "ten-docker", TEN)
            build = ["/usr/bin/docker", "build", "-q", "--network", "none", "-t", "ten:latest", str(dctx)]
            run(build, denv)
            make_containers(["/usr/bin/docker"], args.containers, denv)
            for args_ in PEERS.values():
                cmds[f"docker {' '.join(args_)}"] = (["/usr/bin/docker", *args_], denv)
            cmds["docker build (BuildKit, fully cached, 10 steps)"] = (build, denv)

        print(f"== start-up: median (and fastest) of {args.runs} interleaved runs; store of "
              f"{args.images + 2} images, {args.containers} containers; load {os.getloadavg()[0]:.2f}")
        samples, cpu = timings(cmds, args.runs)
        print(f"  (load average after the runs: {os.getloadavg()[0]:.2f})")
        got = {k: statistics.median(v) for k, v in samples.items()}
        # on a busy machine the fastest run is the steadier figure: load only ever adds to it
        fastest = {k: min(v) for k, v in samples.items()}
        for name, secs in got.items():
            print(f"  {name:<58} {secs * 1000:8.1f} ms (min {fastest[name] * 1000:6.1f}),"
                  f" cpu {statistics.median(cpu[name]) * 1000:6.1f} ms")
        pairs = [(f"pybuild {' '.join(a)}", f"docker {' '.join(a)}") for a in PEERS.values()]
        pairs.append(("pybuild build (fully cached, 10 steps)",
                      "docker build (BuildKit, fully cached, 10 steps)"))
        if all(d in got for _, d in pairs):
            print(f"  {'side by side (docker: its CLI and a warm private dockerd)':<58}"
                  f" {'pybuild':>9} {'docker':>9} {'ratio':>7} {'of mins':>8}")
            for ours_, peer in pairs:
                print(f"  {ours_[len('pybuild '):]:<58} {got[ours_] * 1000:6.1f} ms"
                      f" {got[peer] * 1000:6.1f} ms {got[ours_] / got[peer]:6.2f}x"
                      f" {fastest[ours_] / fastest[peer]:7.2f}x")
        for suffix, env in envs.items():
            print(f"  modules after 'import builder, registry'{suffix}: "
                  f"{modules_loaded('import builder, registry', env)}; after the images command's "
                  f"imports: {modules_loaded('import builder.cli, builder.cli.images', env)}")
    finally:
        if docker is not None:
            docker.stop()  # its containers first
        if root.is_dir():  # ours: their supervisors and sleeps end with the records
            subprocess.run([PYBUILD, "--root", str(root), "system", "reset", "--force"],
                           capture_output=True, cwd="/")
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
