"""``stats`` and ``update`` through the ``pybuild`` CLI on real containers (cgroups, netns), and
the cgroup v2 reader over a fake cgroup2 tree (this host's sandboxes live in v1 hierarchies)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from builder.runtime.containers import stats as lib

MiB = 1024 * 1024


# -- the v2 reader and the CLI's arithmetic, on fake files --------------------------------------
def _v2_tree(tmp_path: Path) -> Path:
    d = tmp_path / "cg"
    d.mkdir()
    files = {
        "cgroup.controllers": "cpu io memory pids\n",
        "memory.current": f"{50 * MiB}\n",
        "memory.max": f"{64 * MiB}\n",
        "memory.stat": f"anon {40 * MiB}\nfile {10 * MiB}\ninactive_file {8 * MiB}\nactive_file {2 * MiB}\n",
        "cpu.stat": "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n"
                    "nr_periods 40\nnr_throttled 3\nthrottled_usec 1200\n",
        "pids.current": "7\n",
        "pids.max": "20\n",
        "io.stat": "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n"
                   "8:16 rbytes=100 wbytes=0 rios=3 wios=0 dbytes=0 dios=0\n",
    }
    for name, text in files.items():
        (d / name).write_text(text)
    return d


def test_v2_reader_gives_dockers_numbers(tmp_path: Path) -> None:
    got = lib.read_cgroup([_v2_tree(tmp_path)])
    mem = got["memory_stats"]
    assert mem["usage"] == 50 * MiB
    assert mem["limit"] == 64 * MiB
    assert mem["stats"]["inactive_file"] == 8 * MiB and mem["stats"]["anon"] == 40 * MiB
    assert got["cpu_usage"] == {"total_usage": 2_500_000_000, "usage_in_usermode": 2_000_000_000,
                                "usage_in_kernelmode": 500_000_000}
    assert got["throttling_data"] == {"periods": 40, "throttled_periods": 3, "throttled_time": 1_200_000}
    assert got["pids_stats"] == {"current": 7, "limit": 20}
    assert got["blkio_stats"]["io_service_bytes_recursive"] == [
        {"major": 8, "minor": 0, "op": "read", "value": 4096},
        {"major": 8, "minor": 0, "op": "write", "value": 8192},
        {"major": 8, "minor": 16, "op": "read", "value": 100},
        {"major": 8, "minor": 16, "op": "write", "value": 0},
    ]
    assert {(e["minor"], e["op"], e["value"]) for e in got["blkio_stats"]["io_serviced_recursive"]} == {
        (0, "read", 1), (0, "write", 2), (16, "read", 3), (16, "write", 0)}


def test_v2_unlimited_is_host_memory_and_figures(tmp_path: Path) -> None:
    d = _v2_tree(tmp_path)
    (d / "memory.max").write_text("max\n")
    (d / "pids.max").write_text("max\n")
    got = lib.read_cgroup([d])
    assert got["memory_stats"]["limit"] == lib.host_memory() > 0
    assert got["pids_stats"] == {"current": 7}
    sample = {
        "memory_stats": got["memory_stats"], "pids_stats": got["pids_stats"], "blkio_stats": got["blkio_stats"],
        "cpu_stats": {"cpu_usage": got["cpu_usage"], "system_cpu_usage": 20_000_000_000, "online_cpus": 2},
        "precpu_stats": {"cpu_usage": {"total_usage": 1_500_000_000}, "system_cpu_usage": 18_000_000_000},
        "networks": {"eth0": {"rx_bytes": 1000, "tx_bytes": 500}, "eth1": {"rx_bytes": 1, "tx_bytes": 2}},
    }
    f = lib.figures(sample)
    # Docker CLI: (cpu delta / system delta) * online cpus * 100 = (1e9 / 2e9) * 2 * 100
    assert f.cpu_percent == pytest.approx(100.0)
    assert f.mem_usage == 42 * MiB  # usage less inactive_file
    assert f.mem_percent == pytest.approx(42 * MiB / lib.host_memory() * 100)
    assert (f.net_rx, f.net_tx, f.block_read, f.block_write, f.pids) == (1001, 502, 4196, 8192, 7)


def test_v1_files_and_net_dev(tmp_path: Path) -> None:
    mem, acct, blk = tmp_path / "memory", tmp_path / "cpuacct", tmp_path / "blkio"
    for d in (mem, acct, blk):
        d.mkdir()
    (mem / "memory.usage_in_bytes").write_text(f"{30 * MiB}\n")
    (mem / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (mem / "memory.max_usage_in_bytes").write_text(f"{31 * MiB}\n")
    (mem / "memory.stat").write_text(f"cache {5 * MiB}\ntotal_inactive_file {4 * MiB}\n")
    (acct / "cpuacct.usage").write_text("123456789\n")
    (acct / "cpuacct.usage_percpu").write_text("100000000 23456789 \n")
    (blk / "blkio.weight").write_text("500\n")
    (blk / "blkio.throttle.io_service_bytes_recursive").write_text("8:0 Read 512\n8:0 Write 1024\nTotal 1536\n")
    got = lib.read_cgroup([mem, acct, blk])
    assert got["memory_stats"]["limit"] == lib.host_memory()
    assert got["cpu_usage"]["total_usage"] == 123456789
    assert got["cpu_usage"]["percpu_usage"] == [100000000, 23456789]
    assert got["blkio_stats"]["io_service_bytes_recursive"] == [
        {"major": 8, "minor": 0, "op": "Read", "value": 512}, {"major": 8, "minor": 0, "op": "Write", "value": 1024}]
    f = lib.figures({"memory_stats": got["memory_stats"], "blkio_stats": got["blkio_stats"]})
    assert f.mem_usage == 26 * MiB and (f.block_read, f.block_write) == (512, 1024)
    dev = ("Inter-|   Receive                                                |  Transmit\n"
           " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls"
           " carrier compressed\n"
           "    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0"
           "       0          0\n"
           "  eth0:    5000      40    1    2    0     0          0         0     3000      30    3    4    0     0"
           "       0          0\n")
    assert lib.net_dev(dev) == {"eth0": {"rx_bytes": 5000, "rx_packets": 40, "rx_errors": 1, "rx_dropped": 2,
                                         "tx_bytes": 3000, "tx_packets": 30, "tx_errors": 3, "tx_dropped": 4}}


# -- real containers ------------------------------------------------------------------------------
def _rows(out: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _bytes(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)([KMGT]?i?B)", text.strip())
    assert m, text
    return float(m.group(1)) * {"B": 1, "KiB": 1024, "MiB": MiB, "GiB": 1024 * MiB}[m.group(2)]


def _cgroup_dir(pid: int, controller: str) -> Path:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _hid, ctrls, path = line.split(":", 2)
        if controller in ctrls.split(","):
            return Path("/sys/fs/cgroup") / controller / path.lstrip("/")
    raise AssertionError(f"no {controller} cgroup for {pid}")


@pytest.fixture
def pb(busybox: Any) -> Iterator[Any]:
    """The ``busybox`` root; every container left is removed at the end, failed test or not."""
    yield busybox
    ids = busybox("ps", "-aq", check=False).stdout.split()
    if ids:
        busybox("rm", "-f", *ids, check=False)


def _pid(pb: Any, name: str) -> int:
    return int(json.loads(pb("inspect", name).stdout)[0]["State"]["Pid"])


def test_stats_memory_limit_pids_and_cpu(pb: Any) -> None:
    # 20 MiB held in /dev/shm (a tmpfs charged to the container's memory cgroup)
    pb("run", "-d", "--name", "mem", "-m", "96m", "--pids-limit", "30", "--shm-size", "64m", "busybox",
       "sh", "-c", "dd if=/dev/zero of=/dev/shm/fill bs=1M count=20 2>/dev/null; touch /tmp/ready; sleep 300 & wait")
    pb("run", "-d", "--name", "busy", "--cpus", "1", "busybox", "sh", "-c", "while :; do :; done")
    pb("run", "-d", "--name", "idle", "busybox", "sleep", "300")
    deadline = time.monotonic() + 20
    while pb("exec", "mem", "test", "-e", "/tmp/ready", check=False).returncode != 0:
        assert time.monotonic() < deadline, "the container never filled /dev/shm"
        time.sleep(0.1)
    r = pb("stats", "--no-stream", "--format", "json", "mem", "busy", "idle")
    rows = {row["Name"]: row for row in _rows(r.stdout)}
    assert set(rows) == {"mem", "busy", "idle"}
    usage, _, limit = rows["mem"]["MemUsage"].partition(" / ")
    assert 19 * MiB <= _bytes(usage) <= 40 * MiB, rows["mem"]
    assert _bytes(limit) == 96 * MiB
    assert float(rows["mem"]["MemPerc"].rstrip("%")) == pytest.approx(_bytes(usage) / (96 * MiB) * 100, abs=0.05)
    assert rows["mem"]["PIDs"] == "2"
    # unlimited: the host's memory
    assert _bytes(rows["idle"]["MemUsage"].partition(" / ")[2]) == pytest.approx(lib.host_memory(), rel=0.001)
    # a busy loop under --cpus 1: near 100 % of one CPU. The host's 2 CPUs are shared with other
    # test runs: a second sample is taken when the first one lost the CPU to them
    seen = [float(rows["busy"]["CPUPerc"].rstrip("%"))]
    while seen[-1] <= 50 and len(seen) < 4:
        out = pb("stats", "--no-stream", "--format", "{{.CPUPerc}}", "busy").stdout
        seen.append(float(out.strip().rstrip("%")))
    assert seen[-1] > 50, seen
    assert max(seen) <= 100 * 1.1, seen  # the quota holds it to one CPU
    assert float(rows["idle"]["CPUPerc"].rstrip("%")) < 5, rows["idle"]
    # eth0 of the bridge network is counted; the table has Docker's header
    table = pb("stats", "--no-stream", "idle").stdout.splitlines()
    assert re.split(r"\s{2,}", table[0]) == ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %",
                                             "NET I/O", "BLOCK I/O", "PIDS"]
    assert table[1].split()[1] == "idle"
    # the library's JSON: Docker's keys, eth0 of the netns, pids limit
    s = lib.stats(pb.state, "mem")
    for key in ("read", "preread", "pids_stats", "memory_stats", "cpu_stats", "precpu_stats", "blkio_stats",
                "networks"):
        assert key in s, key
    assert s["pids_stats"] == {"current": 2, "limit": 30}
    assert s["memory_stats"]["limit"] == 96 * MiB
    assert set(s["networks"]) == {"eth0"}
    assert s["cpu_stats"]["online_cpus"] >= 1 and s["precpu_stats"]["system_cpu_usage"] > 0
    # without names: the running ones; -a adds stopped ones with zero figures
    pb("create", "--name", "cold", "busybox", "true")
    names = {row["Name"] for row in _rows(pb("stats", "--no-stream", "--format", "json").stdout)}
    assert {"mem", "busy", "idle"} <= names and "cold" not in names
    rows = {row["Name"]: row for row in _rows(pb("stats", "-a", "--no-stream", "--format", "json").stdout)}
    assert rows["cold"]["MemUsage"] == "0B / 0B" and rows["cold"]["PIDs"] == "0"
    assert pb("stats", "--no-stream", "--format", "{{.Name}}:{{.PIDs}}", "idle").stdout.strip() == "idle:1"
    full = pb("stats", "--no-stream", "--no-trunc", "--format", "{{.ID}}", "idle").stdout.strip()
    assert len(full) == 64 and full.startswith(rows["idle"]["ID"])
    pb("rm", "-f", "mem", "busy", "idle", "cold")


def test_update_live_record_and_restart(pb: Any) -> None:
    pb("run", "-d", "--name", "upd", "busybox", "sleep", "300")
    r = pb("update", "--memory", "64m", "--pids-limit", "20", "--cpus", "0.5", "--cpu-shares", "512",
           "--restart", "on-failure:3", "upd")
    assert r.stdout.strip() == "upd"
    pid = _pid(pb, "upd")
    assert int(_cgroup_dir(pid, "memory").joinpath("memory.limit_in_bytes").read_text()) == 64 * MiB
    assert _cgroup_dir(pid, "pids").joinpath("pids.max").read_text().strip() == "20"
    assert _cgroup_dir(pid, "cpu").joinpath("cpu.cfs_quota_us").read_text().strip() == "50000"
    assert _cgroup_dir(pid, "cpu").joinpath("cpu.shares").read_text().strip() == "512"
    hc = json.loads(pb("inspect", "upd").stdout)[0]["HostConfig"]
    assert (hc["Memory"], hc["PidsLimit"], hc["NanoCpus"], hc["CpuShares"]) == (64 * MiB, 20, 500_000_000, 512)
    assert hc["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert hc["MemorySwap"] == 128 * MiB
    # stop/start: the new limits hold
    pb("stop", "-t", "0", "upd")
    pb("start", "upd")
    pid = _pid(pb, "upd")
    assert int(_cgroup_dir(pid, "memory").joinpath("memory.limit_in_bytes").read_text()) == 64 * MiB
    assert _cgroup_dir(pid, "pids").joinpath("pids.max").read_text().strip() == "20"
    assert _cgroup_dir(pid, "cpu").joinpath("cpu.shares").read_text().strip() == "512"
    s = lib.stats(pb.state, "upd", one_shot=True)
    assert s["memory_stats"]["limit"] == 64 * MiB and s["pids_stats"]["limit"] == 20
    # raising memory past the current memory+swap, with swap: memsw is written first
    pb("update", "--memory", "300m", "--memory-swap", "600m", "upd")
    memdir = _cgroup_dir(pid, "memory")
    assert int(memdir.joinpath("memory.limit_in_bytes").read_text()) == 300 * MiB
    assert int(memdir.joinpath("memory.memsw.limit_in_bytes").read_text()) == 600 * MiB
    # --pids-limit -1 lifts the limit
    pb("update", "--pids-limit", "-1", "upd")
    assert _cgroup_dir(pid, "pids").joinpath("pids.max").read_text().strip() == "max"
    pb("rm", "-f", "upd")


def test_update_stopped_container_changes_the_record(pb: Any) -> None:
    pb("create", "--name", "stopped", "busybox", "sleep", "300")
    pb("container", "update", "-m", "48m", "--pids-limit", "9", "stopped")
    hc = json.loads(pb("inspect", "stopped").stdout)[0]["HostConfig"]
    assert (hc["Memory"], hc["PidsLimit"]) == (48 * MiB, 9)
    pb("start", "stopped")
    pid = _pid(pb, "stopped")
    assert int(_cgroup_dir(pid, "memory").joinpath("memory.limit_in_bytes").read_text()) == 48 * MiB
    assert _cgroup_dir(pid, "pids").joinpath("pids.max").read_text().strip() == "9"
    pb("rm", "-f", "stopped")


def test_stats_and_update_bad_input(pb: Any) -> None:
    for args in (("stats", "--no-stream", "nosuch"), ("update", "-m", "64m", "nosuch"),
                 ("container", "stats", "--no-stream", "nosuch")):
        r = pb(*args, check=False)
        assert r.returncode == 1 and r.stderr.strip() == "Error: No such container: nosuch", (args, r.stderr)
    pb("create", "--name", "kk", "--pids-limit", "5", "busybox", "true")
    before = pb("inspect", "kk").stdout
    r = pb("update", "--memory", "lots", "kk", check=False)
    assert r.returncode == 125 and "lots" in r.stderr.splitlines()[0] and "--memory" in r.stderr.splitlines()[0]
    for args, why in ((("-m", "1m"), "Minimum memory limit allowed is 6MB"),
                      (("--memory-swap", "64m"), "You should always set the Memory limit when using Memoryswap"),
                      (("-m", "64m", "--memory-swap", "32m"), "Minimum memoryswap limit should be larger"),
                      (("--cpus", "999"), "Range of CPUs is from 0.01"),
                      (("--restart", "sometimes"), "invalid restart policy")):
        r = pb("update", *args, "kk", check=False)
        assert r.returncode != 0 and why in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) <= 2
    r = pb("update", "kk", check=False)
    assert r.returncode == 1 and "one or more flags" in r.stderr
    assert pb("inspect", "kk").stdout == before  # nothing changed
    # --rm containers keep no restart policy
    pb("create", "--rm", "--name", "auto", "busybox", "true")
    r = pb("update", "--restart", "always", "auto", check=False)
    assert r.returncode == 1 and "AutoRemove" in r.stderr
    pb("rm", "-f", "kk", "auto")


def test_set_limits_on_a_fake_cgroup2_dir(tmp_path: Path) -> None:
    from builder.base.errors import SandboxError
    from builder.core.sandbox import cgroups

    d = _v2_tree(tmp_path)
    for name, text in (("memory.swap.max", "max"), ("cpu.max", "max 100000"), ("cpu.weight", "100")):
        (d / name).write_text(text + "\n")
    cgroups.set_limits([str(d)], memory=64 * MiB, memory_swap=96 * MiB, cpus=1.5, cpu_shares=512, pids=20)
    assert (d / "memory.max").read_text() == str(64 * MiB)
    assert (d / "memory.swap.max").read_text() == str(32 * MiB)  # v2 counts swap alone
    assert (d / "cpu.max").read_text() == "150000 100000"
    assert (d / "cpu.weight").read_text() == str(1 + (510 * 9999) // 262142)
    assert (d / "pids.max").read_text() == "20"
    cgroups.set_limits([str(d)], memory_swap=-1, pids=-1)
    assert (d / "memory.swap.max").read_text() == "max" and (d / "pids.max").read_text() == "max"
    # a limit no file can hold is refused before anything is written
    (d / "pids.max").unlink()
    with pytest.raises(SandboxError, match="no pids controller"):
        cgroups.set_limits([str(d)], memory=32 * MiB, pids=5)
    assert (d / "memory.max").read_text() == str(64 * MiB)


def test_stats_streams_until_ctrl_c(pb: Any) -> None:
    import os
    import signal
    import subprocess

    pb("run", "-d", "--name", "live", "busybox", "sleep", "300")
    env = {k: v for k, v in os.environ.items() if k != "PYBUILD_ROOT"}
    proc = subprocess.Popen([*pb.command, "--root", str(pb.root), "stats", "--format", "{{.Name}} {{.PIDs}}",
                             "live"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline(), proc.stdout.readline(), proc.stdout.readline()]
        assert lines == ["live 1\n"] * 3  # one redraw a second
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130
        assert proc.stderr is not None and proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_update_the_kernel_refuses_changes_nothing(pb: Any) -> None:
    """A limit below what the container holds in tmpfs (no swap to push it to) cannot be applied:
    Docker's ``Cannot update container`` error, the live limit and the record as they were."""
    pb("run", "-d", "--name", "full", "-m", "64m", "--shm-size", "64m", "busybox", "sh", "-c",
       "dd if=/dev/zero of=/dev/shm/fill bs=1M count=24 2>/dev/null; touch /tmp/ready; sleep 300 & wait")
    deadline = time.monotonic() + 20
    while pb("exec", "full", "test", "-e", "/tmp/ready", check=False).returncode != 0:
        assert time.monotonic() < deadline, "the container never filled /dev/shm"
        time.sleep(0.1)
    before = pb("inspect", "full").stdout
    r = pb("update", "-m", "8m", "--memory-swap", "16m", "full", check=False)
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith("Error: Cannot update container ") and "memory" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    pid = _pid(pb, "full")
    memdir = _cgroup_dir(pid, "memory")
    assert int(memdir.joinpath("memory.limit_in_bytes").read_text()) == 64 * MiB
    assert int(memdir.joinpath("memory.memsw.limit_in_bytes").read_text()) == 128 * MiB
    assert pb("inspect", "full").stdout == before
