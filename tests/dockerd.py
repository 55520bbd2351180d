"""A private Docker engine for tests: Debian's ``dockerd`` started by hand, stopped afterwards.

No systemd here: the daemon gets its own data root, exec root, socket and pidfile under one
short temp dir, the cgroupfs driver, no bridge and no iptables rules, and its own network
namespace (``unshare --net``): ``--bridge=none`` deletes a ``docker0`` it finds, and the host's
must stay. The namespace has only ``lo`` and goes with the daemon's last process; the client
reaches the daemon through its unix socket, which a network namespace does not confine. ``/usr/bin/docker`` (Debian's client) is used explicitly: a newer client may come
first on PATH.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from builder.base.syscalls import default_libc_signals

DOCKERD = next((p for p in ("/usr/sbin/dockerd", "/usr/bin/dockerd") if os.path.exists(p)), "dockerd")
DOCKER = "/usr/bin/docker"


class Dockerd:
    """``start()`` / ``stop()`` a daemon; ``docker(*args)`` runs the client against it."""

    def __init__(self, *, bridges: bool = False) -> None:
        """*bridges*: the daemon makes its default bridge and its iptables rules, as a stock
        daemon does (in its own network namespace: the host's are not touched); benches use it
        for a fair ``network create`` and ``run`` on the default bridge."""
        self.bridges = bridges
        # unix socket paths are limited to 108 bytes: keep the base short
        self.base = Path(tempfile.mkdtemp(prefix="pbdk-", dir="/tmp"))
        self.sock = self.base / "docker.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.base / "dockerd.log"

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    def start(self, timeout: float = 60) -> None:
        # lo up, then the daemon in place of the shell (same pid: stop() signals the daemon)
        args = [
            "unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', DOCKERD,
            "--data-root", str(self.base / "data"),
            "--exec-root", str(self.base / "exec"),
            "-H", self.host,
            "--pidfile", str(self.base / "docker.pid"),
            "--exec-opt", "native.cgroupdriver=cgroupfs",
            *([] if self.bridges else ["--bridge=none", "--iptables=false", "--ip-masq=false"]),
            "--ip6tables=false",
            "--containerd-namespace", f"pbtest-{os.getpid()}",
            "--containerd-plugins-namespace", f"pbtest-{os.getpid()}-plugins",
            "--storage-driver", "overlay2",
        ]
        with open(self.log, "wb") as log:
            # dockerd passes signals its parent left ignored (GNU make ignores 32 and 33) on
            # to every container: start it with the dispositions a shell gives
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, preexec_fn=default_libc_signals)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            if self.sock.exists():
                r = subprocess.run([DOCKER, "-H", self.host, "version", "--format", "{{.Server.Version}}"],
                                   capture_output=True, text=True)
                if r.returncode == 0:
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("dockerd did not come up in time")

    def docker(self, *args: str, check: bool = True, input: bytes | None = None,
               env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[Any]:
        environ = dict(os.environ)
        environ.pop("DOCKER_HOST", None)
        environ.update(env or {})
        r = subprocess.run([DOCKER, "-H", self.host, *args], capture_output=True, input=input,
                           env=environ, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {r.returncode}:\n"
                                 f"{r.stdout.decode(errors='replace')}\n{r.stderr.decode(errors='replace')}")
        return r

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # containers first, so that the daemon does not wait on them
            with contextlib.suppress(Exception):
                ids = self.docker("ps", "-aq", check=False, timeout=30).stdout.decode().split()
                if ids:
                    self.docker("rm", "-f", *ids, check=False, timeout=60)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None
        self._unmount_leftovers()
        shutil.rmtree(self.base, ignore_errors=True)

    def _unmount_leftovers(self) -> None:
        """Anything still mounted under our base (a crashed daemon's overlays, its netns)."""
        base = str(self.base)
        try:
            lines = Path("/proc/self/mountinfo").read_text().splitlines()
        except OSError:
            return
        points = sorted({ln.split()[4] for ln in lines if ln.split()[4].startswith(base)},
                        key=len, reverse=True)
        for p in points:
            subprocess.run(["umount", "-l", p], capture_output=True)
