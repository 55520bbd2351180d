"""``/containers/{id}/stats`` and ``/containers/{id}/update`` of ``pybuild serve``, judged by
Debian's ``docker`` CLI (``docker stats --no-stream``, ``docker update``) and docker-py."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from serve_client import Daemon

MiB = 1024 * 1024
#: Debian's docker CLI (20.10), as the serve fixture's ``docker()`` runs it
DOCKER_CLI = "/usr/bin/docker"

DOCKER_KEYS = {"read", "preread", "pids_stats", "blkio_stats", "num_procs", "storage_stats", "cpu_stats",
               "precpu_stats", "memory_stats", "name", "id", "networks"}


def _cgroup_file(pid: int, controller: str, name: str) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _hid, ctrls, path = line.split(":", 2)
        if controller in ctrls.split(","):
            return (Path("/sys/fs/cgroup") / controller / path.lstrip("/") / name).read_text().strip()
    raise AssertionError(f"no {controller} cgroup for {pid}")


def test_docker_stats_update_and_docker_py(serve: Daemon) -> None:
    cid = serve.docker("run", "-d", "--name", "st", "-m", "80m", "--pids-limit", "25", "busybox",
                       "sh", "-c", "sleep 300 & wait").stdout.strip()
    try:
        # docker stats --no-stream: the container with plausible figures
        out = serve.docker("stats", "--no-stream", "st").stdout.splitlines()
        assert out[0].split()[:3] == ["CONTAINER", "ID", "NAME"]
        fields = re.split(r"\s{2,}", out[1].strip())
        assert fields[0] == cid[:12] and fields[1] == "st", fields
        assert fields[2].endswith("%") and float(fields[2].rstrip("%")) < 50
        usage, _, limit = fields[3].partition(" / ")
        assert limit == "80MiB", fields
        assert re.fullmatch(r"[\d.]+(B|KiB|MiB)", usage), fields
        assert fields[-1] == "2", fields  # PIDS: sh and its sleep
        # no names: every running container, as the same table
        names = serve.docker("stats", "--no-stream", "--format", "{{.Name}}").stdout.split()
        assert names == ["st"]
        line = serve.docker("stats", "--no-stream", "--format", "{{.Name}} {{.MemPerc}} {{.PIDs}}",
                            "st").stdout.split()
        assert line[0] == "st" and line[2] == "2" and 0 < float(line[1].rstrip("%")) < 20
        # docker-py: Docker's keys, the -m limit, the pids limit, eth0
        c = serve.client.containers.get("st")
        s = c.stats(stream=False)
        assert DOCKER_KEYS <= set(s), set(s) ^ DOCKER_KEYS
        assert s["memory_stats"]["limit"] == 80 * MiB and s["memory_stats"]["usage"] > 0
        assert s["pids_stats"] == {"current": 2, "limit": 25}
        assert "eth0" in s["networks"] and s["name"] == "/st" and s["id"] == cid
        assert s["cpu_stats"]["system_cpu_usage"] > s["precpu_stats"]["system_cpu_usage"] > 0
        one = c.stats(stream=False, one_shot=True)
        assert one["precpu_stats"]["cpu_usage"]["total_usage"] == 0 and one["preread"] == "0001-01-01T00:00:00Z"
        # streamed: JSON objects once a second, each carrying the previous one's CPU figures
        gen = c.stats(stream=True, decode=True)
        first, second = next(gen), next(gen)
        gen.close()
        assert second["precpu_stats"] == first["cpu_stats"] and second["preread"] == first["read"]
        # docker stats streaming: the CLI redraws from the streamed JSON (twice here), then is stopped
        proc = subprocess.Popen([DOCKER_CLI, "stats", "--format", "{{.Name}}={{.PIDs}}", "st"], env=serve.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert proc.stdout is not None
            seen = b""
            deadline = time.monotonic() + 30
            while seen.count(b"st=2") < 2:
                assert time.monotonic() < deadline, seen
                chunk = proc.stdout.read1(4096)  # type: ignore[attr-defined]
                assert chunk, (seen, proc.stderr.read() if proc.stderr else b"")
                seen += chunk
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        # docker update: the live cgroup and the record
        assert serve.docker("update", "--memory", "64m", "--memory-swap", "128m", "--pids-limit", "20",
                            "--restart", "always", "st").stdout.strip() == "st"
        pid = int(serve.pyb("inspect", "-f", "{{.State.Pid}}", "st").stdout)
        assert int(_cgroup_file(pid, "memory", "memory.limit_in_bytes")) == 64 * MiB
        assert _cgroup_file(pid, "pids", "pids.max") == "20"
        hc = json.loads(serve.pyb("inspect", "st").stdout)[0]["HostConfig"]
        assert (hc["Memory"], hc["MemorySwap"], hc["PidsLimit"]) == (64 * MiB, 128 * MiB, 20)
        assert hc["RestartPolicy"]["Name"] == "always"
        # docker-py's update answers Docker's {"Warnings": [...]}
        assert c.update(cpu_shares=256) == {"Warnings": []}
        assert _cgroup_file(pid, "cpu", "cpu.shares") == "256"
        # bad input: a 400 naming the problem, nothing changed
        status, _h, body = serve.api("POST", "/containers/st/update", {"Memory": 1024})
        assert status == 400 and "Minimum memory limit" in json.loads(body)["message"]
        status, _h, body = serve.api("POST", "/containers/st/update", {"PidsLimit": "many"})
        assert status == 400 and "PidsLimit" in json.loads(body)["message"]
        status, _h, body = serve.api("POST", "/containers/st/update", {"CpusetCpus": "0"})
        assert status == 400 and "CpusetCpus is not supported" in json.loads(body)["message"]
        r = serve.docker("update", "--cpuset-cpus", "0", "st", check=False)
        assert r.returncode != 0 and "CpusetCpus is not supported" in r.stderr
        assert int(_cgroup_file(pid, "memory", "memory.limit_in_bytes")) == 64 * MiB
        r = serve.docker("update", "--memory", "lots", "st", check=False)
        assert r.returncode != 0 and "lots" in r.stderr
    finally:
        serve.docker("rm", "-f", "st", check=False)


def test_stats_update_unknown_container_and_stopped(serve: Daemon) -> None:
    for method, path in (("GET", "/containers/nosuch/stats?stream=0"), ("POST", "/containers/nosuch/update")):
        status, _h, body = serve.api(method, path, {} if method == "POST" else None)
        assert status == 404 and json.loads(body)["message"] == "No such container: nosuch"
    r = serve.docker("stats", "--no-stream", "nosuch", check=False)
    assert r.returncode != 0 and "No such container: nosuch" in r.stderr
    serve.docker("create", "--name", "cold", "busybox", "true")
    try:
        # a stopped container: Docker's zero sample, and update changes the record only
        status, _h, body = serve.api("GET", "/containers/cold/stats?stream=0")
        s = json.loads(body)
        assert status == 200 and s["read"] == "0001-01-01T00:00:00Z" and s["memory_stats"] == {}
        t0 = time.monotonic()
        status, _h, body = serve.api("GET", "/containers/cold/stats")  # a stream that ends at once
        assert status == 200 and time.monotonic() - t0 < 5
        assert json.loads(body.splitlines()[0])["read"] == "0001-01-01T00:00:00Z"
        assert serve.json("POST", "/containers/cold/update", {"Memory": 50 * MiB, "PidsLimit": 7}) == {"Warnings": []}
        hc = json.loads(serve.pyb("inspect", "cold").stdout)[0]["HostConfig"]
        assert (hc["Memory"], hc["PidsLimit"]) == (50 * MiB, 7)
    finally:
        serve.docker("rm", "-f", "cold", check=False)
