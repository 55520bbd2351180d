#!/usr/bin/env python3
"""Container lifecycle benchmark: ``pybuild run --rm IMG true`` (median of N) and ``run -d`` +
``stop`` + ``rm`` of N containers, side by side with ``runc run`` of the same rootfs and with
``docker run`` on a private engine (``tests/dockerd.py``) when ``dockerd`` is installed.

Run as root: ``.venv/bin/python bench/bench_run.py [-n 20] [--baseline DIR]``; ``--baseline``
names an older source tree (e.g. ``git archive REV | tar -x -C DIR``) whose ``run --rm`` rows are
measured interleaved with ours, on a state root of its own, for a before/after under one load. Commands run with bytecode
caching on (a user's normal environment), each as a whole process, as a user would type them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PYBUILD = str(Path(sys.executable).parent / "pybuild")


def _mkbusybox() -> object:
    spec = importlib.util.spec_from_file_location("mkbusybox", REPO / "testdata" / "mkbusybox.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def timed(fn: Callable[[], object], n: int) -> tuple[float, float]:
    fn()  # warm-up (layer unpack, bytecode, network creation)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def row(name: str, value: tuple[float, float] | None, note: str = "") -> None:
    if value is None:
        print(f"  {name:<52} {'-':>9}     {note}")
        return
    med, best = value
    print(f"  {name:<52} {med * 1000:8.1f} ms (min {best * 1000:6.1f} ms) {note}")


def run(cmd: list[str], env: dict[str, str] | None = None) -> str:
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


def interleaved(a: Callable[[], object], b: Callable[[], object], n: int
                ) -> tuple[tuple[float, float], tuple[float, float]]:
    """Median and min of *a* and of *b*, run alternately (the same load for both)."""
    a()
    b()
    ta: list[float] = []
    tb: list[float] = []
    for _ in range(n):
        for fn, ts in ((a, ta), (b, tb)):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return (statistics.median(ta), min(ta)), (statistics.median(tb), min(tb))


def interleaved_all(fns: list[Callable[[], object]], n: int) -> list[tuple[float, float]]:
    """Median and min of each of *fns*, run in turn *n* times (the same load for all)."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(n):
        for fn, ts in zip(fns, times, strict=True):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return [(statistics.median(ts), min(ts)) for ts in times]


def run_then_rm_f(start: Callable[[str], object], rm_f: Callable[[str], object], tag: str
                  ) -> Callable[[], None]:
    """One ``run -d`` then ``rm -f`` of a fresh container per call (the issue's pair)."""
    counter = iter(range(10**6))

    def pair() -> None:
        name = f"pair{tag}{next(counter)}"
        start(name)
        rm_f(name)

    return pair


def issue_rows(pb: list[str], env: dict[str, str], base_env: dict[str, str] | None,
               d: Callable[..., object] | None, n: int) -> None:
    """Issue 15's three ratios, each row interleaved: pybuild (before, after) and docker."""
    rows: list[tuple[str, list[tuple[str, Callable[[], object]]]]] = []
    for label, extra in (("run --rm --network none IMG true", ["--network", "none"]),
                         ("run --rm IMG true (default bridge)", [])):
        cmd = [*pb, "run", "--rm", *extra, "busybox", "true"]
        fns: list[tuple[str, Callable[[], object]]] = [("pybuild", partial(run, cmd, env))]
        if base_env is not None:
            fns.insert(0, ("before", partial(run, cmd, base_env)))
        if d is not None:
            fns.append(("docker", partial(d, "run", "--rm", *extra, "busybox", "true")))
        rows.append((label, fns))

    def pb_pair(e: dict[str, str], tag: str) -> Callable[[], None]:
        return run_then_rm_f(
            lambda nm: run([*pb, "run", "-d", "--name", nm, "--network", "none", "busybox", "sleep", "1000"], e),
            lambda nm: run([*pb, "rm", "-f", nm], e), tag)

    fns = [("pybuild", pb_pair(env, "a"))]
    if base_env is not None:
        fns.insert(0, ("before", pb_pair(base_env, "b")))
    if d is not None:
        fns.append(("docker", run_then_rm_f(
            lambda nm: d("run", "-d", "--name", nm, "--network", "none", "busybox", "sleep", "1000"),
            lambda nm: d("rm", "-f", nm), "d")))
    rows.append(("run -d + rm -f (--network none)", fns))
    print("issue 15's rows, each interleaved with its peers (load: "
          f"{os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}):")
    for label, row_fns in rows:
        figures = interleaved_all([f for _, f in row_fns], n)
        by = {who: fig for (who, _), fig in zip(row_fns, figures, strict=True)}
        for who, fig in by.items():
            note = f"({fig[0] / by['docker'][0]:.2f}x docker)" if "docker" in by and who != "docker" else ""
            row(f"{who:>8}: {label}", fig, note)


def lifecycle(start: Callable[[str], object], stop: Callable[[str], object], rm: Callable[[str], object],
              n: int) -> tuple[float, float]:
    """Per container: median and min of start+stop+rm over *n* containers."""
    times = []
    for i in range(n):
        name = f"bench{i}"
        t = time.perf_counter()
        start(name)
        stop(name)
        rm(name)
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def _dockerd(tar: Path) -> Any:
    """The peer: a private dockerd (``tests/dockerd.py``, its own bridge and iptables rules) holding
    the busybox image, or None (said why) when it is not installed or does not start."""
    if not (shutil.which("dockerd") or os.path.exists("/usr/sbin/dockerd")):
        print("  (dockerd not installed)")
        return None
    sys.path.insert(0, str(REPO / "tests"))
    from dockerd import Dockerd

    dockerd = Dockerd(bridges=True)
    try:
        dockerd.start()
        dockerd.docker("import", "--change", 'CMD ["sh"]', str(tar), "busybox:latest")
    except Exception as e:  # noqa: BLE001 - the peer is optional; say why it is missing
        print(f"  (dockerd failed: {str(e).splitlines()[0]})")
        dockerd.stop()
        return None
    return dockerd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20)
    ap.add_argument("--baseline", default=None, help="an older source tree to compare with")
    ap.add_argument("--issue-only", action="store_true", help="only issue 15's interleaved rows")
    args = ap.parse_args()
    n = args.n
    if os.geteuid() != 0:
        raise SystemExit("run as root (namespaces, cgroups, bridges)")
    work = Path(tempfile.mkdtemp(prefix="bench-run-"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYBUILD_ROOT"] = str(work / "state")
    mk = _mkbusybox()
    tar = work / "busybox.tar"
    mk.make_tar(tar)  # type: ignore[attr-defined]
    print(f"== container lifecycle, {n} runs each (busybox image, /bin/true)")
    try:
        pb = [PYBUILD]
        run([*pb, "import", "-c", 'CMD ["sh"]', str(tar), "busybox:latest"], env)
        base_env: dict[str, str] = {}
        if args.baseline:
            base_env = {**env, "PYBUILD_ROOT": str(work / "state-base"),
                        "PYTHONPATH": str(Path(args.baseline).resolve())}
            run([*pb, "import", "-c", 'CMD ["sh"]', str(tar), "busybox:latest"], base_env)
            print(f"before/after, interleaved (baseline: {args.baseline}):")
            for label, extra in (("--network none", ["--network", "none"]), ("default bridge", [])):
                cmd = [*pb, "run", "--rm", *extra, "busybox", "true"]
                pair = interleaved(partial(run, cmd, base_env), partial(run, cmd, env), n)
                row(f"  before: run --rm {label}", pair[0])
                row(f"  after:  run --rm {label}", pair[1])
        dockerd = _dockerd(tar)
        d = dockerd.docker if dockerd is not None else None
        try:
            issue_rows(pb, env, base_env if args.baseline else None, d, n)
        finally:
            if dockerd is not None:
                dockerd.stop()
        if args.issue_only:
            return
        print("pybuild:")
        none = timed(lambda: run([*pb, "run", "--rm", "--network", "none", "busybox", "true"], env), n)
        row("pybuild run --rm --network none busybox true", none)
        bridge = timed(lambda: run([*pb, "run", "--rm", "busybox", "true"], env), n)
        row("pybuild run --rm busybox true (default bridge)", bridge)
        life = lifecycle(
            lambda nm: run([*pb, "run", "-d", "--name", nm, "--network", "none", "busybox", "sleep", "1000"], env),
            lambda nm: run([*pb, "stop", "-t", "0", nm], env),
            lambda nm: run([*pb, "rm", nm], env), n)
        row("pybuild run -d + stop + rm (--network none), per ctr", life)
        life_b = lifecycle(
            lambda nm: run([*pb, "run", "-d", "--name", nm, "busybox", "sleep", "1000"], env),
            lambda nm: run([*pb, "stop", "-t", "0", nm], env),
            lambda nm: run([*pb, "rm", nm], env), n)
        row("pybuild run -d + stop + rm (bridge), per ctr", life_b)
        life_f = lifecycle(
            lambda nm: run([*pb, "run", "-d", "--name", nm, "--network", "none", "busybox", "sleep", "1000"], env),
            lambda nm: run([*pb, "rm", "-f", nm], env),
            lambda nm: None, n)
        row("pybuild run -d + rm -f (--network none), per ctr", life_f)
        ps = timed(lambda: run([*pb, "ps", "-a"], env), n)
        row("pybuild ps -a", ps)

        print("runc:")
        if shutil.which("runc"):
            bundle = work / "bundle"
            mk.make_rootfs(bundle / "rootfs")  # type: ignore[attr-defined]
            run(["runc", "spec", "--bundle", str(bundle)])
            cfg = json.loads((bundle / "config.json").read_text())
            cfg["process"]["args"] = ["true"]
            cfg["process"]["terminal"] = False
            (bundle / "config.json").write_text(json.dumps(cfg))
            counter = iter(range(10**6))
            row("runc run (no network setup)", timed(
                lambda: run(["runc", "run", "--bundle", str(bundle), f"pbbench{next(counter)}"]), n))
        else:
            row("runc run", None, "(runc not installed)")

        print("docker (a private dockerd with its default bridge and iptables rules, in its own netns):")
        dockerd = _dockerd(tar)
        if dockerd is not None:
            d = dockerd.docker
            try:
                d_none = timed(lambda: d("run", "--rm", "--network", "none", "busybox", "true"), n)
                row("docker run --rm --network none busybox true", d_none,
                    f"(pybuild {none[0] / d_none[0]:.2f}x)")
                d_bridge = timed(lambda: d("run", "--rm", "busybox", "true"), n)
                row("docker run --rm busybox true (default bridge)", d_bridge,
                    f"(pybuild {bridge[0] / d_bridge[0]:.2f}x)")
                d_life = lifecycle(
                    lambda nm: d("run", "-d", "--name", nm, "--network", "none", "busybox", "sleep", "1000"),
                    lambda nm: d("stop", "-t", "0", nm),
                    lambda nm: d("rm", nm), n)
                row("docker run -d + stop + rm (--network none), per ctr", d_life,
                    f"(pybuild {life[0] / d_life[0]:.2f}x)")
                d_life_f = lifecycle(
                    lambda nm: d("run", "-d", "--name", nm, "--network", "none", "busybox", "sleep", "1000"),
                    lambda nm: d("rm", "-f", nm),
                    lambda nm: None, n)
                row("docker run -d + rm -f (--network none), per ctr", d_life_f,
                    f"(pybuild {life_f[0] / d_life_f[0]:.2f}x)")
            finally:
                dockerd.stop()
        else:
            row("docker run --rm busybox true", None, "(no dockerd)")
    finally:
        subprocess.run([PYBUILD, "rm", "-f", *[f"bench{i}" for i in range(n)]], env=env, capture_output=True)
        sys.path.insert(0, str(REPO))
        from builder import network
        from builder.base.state import StateRoot

        network.reset(StateRoot.open(work / "state"))
        if (work / "state-base").is_dir():
            network.reset(StateRoot.open(work / "state-base"))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
