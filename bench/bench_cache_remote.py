#!/usr/bin/env python3
"""A fresh CI runner's build from a registry cache: pybuild's runner B (``--cache-from``, an
empty state root) beside BuildKit (Docker 20.10, ``DOCKER_BUILDKIT=1``, a pruned daemon,
``--cache-from`` an inline-cache image), same project, same ``docker-registry``; wall time,
steps run, and the bytes each one downloaded (counted by a relay in front of the registry).

The private ``dockerd`` (``tests/dockerd.py``) lives in a network namespace of its own: it
reaches the registry through a relay (a TCP listener inside its namespace, joined by a unix
socket to a counting relay on the host side).

    .venv/bin/python bench/bench_cache_remote.py [--size-mb 40]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "registry"))

from registry_server import start_registry  # noqa: E402

PYBUILD = str(Path(sys.executable).parent / "pybuild")

DOCKERFILE = """\
FROM busybox
COPY big.bin /data/big.bin
RUN sha256sum /data/big.bin > /data/sum && head -c {gen} /dev/urandom > /data/gen.bin
COPY small.txt /small.txt
CMD ["cat", "/data/sum"]
"""

#: runs inside the daemon's network namespace: 127.0.0.1:PORT -> the unix socket ARGV[2]
NETNS_RELAY = r"""
import socket, sys, threading
port, path = int(sys.argv[1]), sys.argv[2]
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port)); srv.listen(64)
def pipe(a, b):
    try:
        while (d := a.recv(65536)):
            b.sendall(d)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try: s.shutdown(socket.SHUT_RDWR)
            except OSError: pass
while True:
    c, _ = srv.accept()
    u = socket.socket(socket.AF_UNIX); u.connect(path)
    threading.Thread(target=pipe, args=(c, u), daemon=True).start()
    threading.Thread(target=pipe, args=(u, c), daemon=True).start()
"""


class CountingRelay:
    """A listener (TCP on loopback, or a unix socket) forwarding to the registry, counting the
    bytes the registry sends back (what a client downloads)."""

    def __init__(self, upstream_port: int, unix_path: str | None = None) -> None:
        self.upstream_port = upstream_port
        self.down = 0
        self.lock = threading.Lock()
        if unix_path:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.bind(unix_path)
        else:
            self.sock = socket.socket()
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1] if not unix_path else 0
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self) -> None:
        with self.lock:
            self.down = 0

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pipe, args=(c, up, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(up, c, True), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket, count: bool) -> None:
        try:
            while d := a.recv(65536):
                if count:
                    with self.lock:
                        self.down += len(d)
                b.sendall(d)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


def run(*args: str, env: dict[str, str] | None = None) -> str:
    r = subprocess.run(list(args), capture_output=True, text=True, env={**os.environ, **(env or {})})
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {r.returncode}:\n{r.stderr[-3000:]}")
    return r.stdout + r.stderr


def timed(fn: object) -> tuple[float, str]:
    t = time.perf_counter()
    out = fn()  # type: ignore[operator]
    return time.perf_counter() - t, str(out)


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=40, help="context file size (the RUN makes half)")
    args = ap.parse_args()

    from dockerd import Dockerd

    from registry import archive
    from registry.reference import Reference
    from registry.store import Store

    work = Path(tempfile.mkdtemp(prefix="bench-cache-remote-", dir="/var/tmp"))
    os.environ["DOCKER_CONFIG"] = str(work / "docker-config")
    reg = start_registry(work / "registry")
    host_relay = CountingRelay(reg.port)
    dock_relay = CountingRelay(reg.port, str(work / "relay.sock"))
    d = Dockerd()
    netns_relay: subprocess.Popen[bytes] | None = None
    try:
        # the base image, the same bytes for both
        spec = __import__("importlib.util").util.spec_from_file_location("mkbusybox", REPO / "testdata" / "mkbusybox.py")
        mk = __import__("importlib.util").util.module_from_spec(spec)
        spec.loader.exec_module(mk)
        rootfs = work / "busybox-rootfs.tar"
        mk.make_tar(rootfs)
        base_store = Store(work / "base-store")
        archive.import_rootfs(base_store, rootfs, reference=Reference.parse("busybox:latest"),
                              config={"Cmd": ["sh"]})
        base_tar = work / "busybox.tar"
        with open(base_tar, "wb") as f:
            archive.save_image(base_store, base_store.resolve("busybox:latest").descriptor,
                               [Reference.parse("busybox:latest")], f, format=archive.DOCKER_ARCHIVE)
        ctx = work / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(DOCKERFILE.format(gen=args.size_mb * 500_000))
        (ctx / "big.bin").write_bytes(os.urandom(args.size_mb * 1_000_000))
        (ctx / "small.txt").write_text("small\n")

        # -- pybuild: runner A exports, runner B (empty) builds from the cache ------------------
        results = []
        for kind, cache_to in (("inline image", "type=inline"),
                               ("registry mode=max", "type=registry,ref={ref}-cache,mode=max")):
            ref = f"127.0.0.1:{host_relay.port}/bench/app:{kind.split()[0]}"
            a, b = work / f"pyb-a-{kind.split()[0]}", work / f"pyb-b-{kind.split()[0]}"
            for root in (a, b):
                run(PYBUILD, "--root", str(root), "load", "-i", str(base_tar))
            run(PYBUILD, "--root", str(a), "build", "-q", "--network", "none", "-t", ref,
                "--cache-to", cache_to.format(ref=ref), str(ctx))
            run(PYBUILD, "--root", str(a), "push", ref)
            source = ref if kind.startswith("inline") else f"{ref}-cache"
            host_relay.reset()
            secs, out = timed(lambda b=b, source=source: run(
                PYBUILD, "--root", str(b), "build", "--progress=plain", "--network", "none",
                "-t", "app:1", "--cache-from", source, str(ctx)))
            results.append((f"pybuild runner B ({kind})", secs, host_relay.down,
                            out.count(" CACHED (registry"), out.count(" DONE ")))

        # -- BuildKit: an inline-cache image, a pruned daemon -----------------------------------
        d.start()
        assert d.proc is not None
        port = reg.port
        netns_relay = subprocess.Popen(
            ["nsenter", f"--net=/proc/{d.proc.pid}/ns/net", "--", sys.executable, "-c", NETNS_RELAY,
             str(port), str(work / "relay.sock")], start_new_session=True)
        time.sleep(0.5)
        env = {"DOCKER_BUILDKIT": "1", "DOCKER_HOST": d.host}
        d.docker("load", "-i", str(base_tar))
        bk = f"127.0.0.1:{port}/bench/app:buildkit"
        run("/usr/bin/docker", "build", "-q", "--network", "none", "--build-arg",
            "BUILDKIT_INLINE_CACHE=1", "-t", bk, str(ctx), env=env)
        run("/usr/bin/docker", "push", bk, env=env)
        d.docker("rmi", "-f", bk)
        d.docker("builder", "prune", "-af")
        dock_relay.reset()
        secs, out = timed(lambda: run("/usr/bin/docker", "build", "--progress=plain", "--network",
                                      "none", "--cache-from", bk, "-t", "app:2", str(ctx), env=env))
        results.append(("BuildKit, pruned daemon (inline image)", secs, dock_relay.down,
                        out.count(" CACHED"), out.count(" DONE ")))

        print(f"\nproject: FROM busybox, COPY {args.size_mb} MB, RUN making {args.size_mb // 2} MB, "
              f"COPY 6 B; every step cached on the second runner")
        print(f"{'':42} {'wall':>8} {'downloaded':>12} {'CACHED':>7} {'DONE*':>5}")
        for name, secs, down, hit, done in results:
            print(f"{name:42} {secs:7.2f}s {mb(down):>12} {hit:>7} {done:>5}")
        print("* DONE: vertices that finished running (BuildKit counts its own: metadata, export)")
    finally:
        if netns_relay is not None:
            netns_relay.kill()
            netns_relay.wait()
        d.stop()
        host_relay.close()
        dock_relay.close()
        reg.stop()
        subprocess.run(["umount", "-R", str(work)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
