"""The private Docker engine of the tests leaves the host's network alone."""

from __future__ import annotations

import os
import subprocess
from typing import Any


def test_private_dockerd_runs_in_its_own_network_namespace(dockerd: Any) -> None:
    # ``--bridge=none`` deletes a docker0 in the daemon's network namespace: not the host's
    pid = dockerd.proc.pid
    assert os.path.basename(os.readlink(f"/proc/{pid}/exe")) == "dockerd"
    assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    links = subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", "-o", "link"], capture_output=True,
                           text=True, check=True).stdout
    assert [ln.split(": ")[1] for ln in links.splitlines()] == ["lo"]
    assert dockerd.docker("info", "--format", "{{.Driver}}").stdout.decode().strip() == "overlay2"
