# ruff: noqa: F811 - the parameters named judge are the imported fixture
"""Issue 23's create options honoured, not only stored (issue 21 step 2), each judged against
the private ``dockerd`` through docker-py (as ``test_api_gaps*.py``) and, for the flags, the
``pybuild`` CLI against the ``docker`` CLI: ``cpuset_cpus``, ``pid_mode="host"``, and links on
the default bridge with their variables and ``/etc/hosts`` entry, before and after a
``DELETE /containers/{id}/{alias}?link=1``.
"""

from __future__ import annotations

import os
import re
from typing import Any

from test_api_gaps import Judge, both, judge  # noqa: F401 - the fixture, registered by import

LAST_CPU = str((os.cpu_count() or 1) - 1)
ALLOWED = f"Cpus_allowed_list:\t{LAST_CPU}"


def test_cpuset_cpus_confines_the_process(serve: Any, judge: Judge) -> None:
    rows = []
    for _name, client in both(serve, judge):
        c = client.containers.create("busybox:latest", ["grep", "Cpus_allowed_list", "/proc/self/status"],
                                     cpuset_cpus=LAST_CPU, network_mode="none", labels={"pbtest.gaps": "1"})
        c.start()
        assert c.wait(timeout=60)["StatusCode"] == 0
        c.reload()
        rows.append((c.logs().decode().strip(), c.attrs["HostConfig"]["CpusetCpus"]))
        c.remove()
    assert rows[0] == rows[1] == (ALLOWED, LAST_CPU)
    # the flag, through each CLI
    ours = serve.pyb("run", "--rm", "--network", "none", "--cpuset-cpus", LAST_CPU, "busybox:latest",
                     "grep", "Cpus_allowed_list", "/proc/self/status").stdout.strip()
    theirs = judge.docker("run", "--rm", "--network", "none", "--cpuset-cpus", LAST_CPU, "busybox:latest",
                          "grep", "Cpus_allowed_list", "/proc/self/status").stdout.strip()
    assert ours == theirs == ALLOWED
    # a CPU this host has not: refused at create
    bad = serve.pyb("run", "--rm", "--cpuset-cpus", "4096", "busybox:latest", "true", check=False)
    assert bad.returncode == 125 and "Requested CPUs are not available" in bad.stderr


PID_PROBE = ["sh", "-c", f"cat /proc/1/comm; test -d /proc/{os.getpid()} && echo sees-the-host; echo $$"]


def _pid_rows(out: str) -> tuple[str, str, bool]:
    comm, seen, me = out.strip().splitlines()
    return comm, seen, me != "1"


def test_pid_mode_host_shares_the_hosts_processes(serve: Any, judge: Judge) -> None:
    with open("/proc/1/comm") as f:
        host_init = f.read().strip()
    rows = []
    top: list[list[str]] = []
    for _name, client in both(serve, judge):
        out = client.containers.run("busybox:latest", PID_PROBE, pid_mode="host", network_mode="none",
                                    remove=True).decode()
        rows.append(_pid_rows(out))
        c = client.containers.create("busybox:latest", ["sleep", "30"], pid_mode="host", network_mode="none",
                                     labels={"pbtest.gaps": "1"})
        assert c.attrs["HostConfig"]["PidMode"] == "host"
        c.start()
        # top lists the container's processes, not every one of the namespace it shares
        top.append([row[-1] for row in c.top()["Processes"]])
        c.remove(force=True)
    assert rows[0] == rows[1] == (host_init, "sees-the-host", True)
    assert top[0] == top[1] == ["sleep 30"]
    ours = serve.pyb("run", "--rm", "--network", "none", "--pid", "host", "busybox:latest", *PID_PROBE).stdout
    theirs = judge.docker("run", "--rm", "--network", "none", "--pid", "host", "busybox:latest", *PID_PROBE).stdout
    assert _pid_rows(ours) == _pid_rows(theirs) == rows[0]
    # without it, the container's own namespace: its first process is pid 1
    out = serve.pyb("run", "--rm", "--network", "none", "busybox:latest", "sh", "-c", "echo $$").stdout
    assert out.strip() == "1"


LINK_PROBE = ["sh", "-c", "env | grep '^DB_' | sort; grep -w db /etc/hosts | tr '\\t' ' '"]


def _masked(text: str, ip: str, hostname: str) -> list[str]:
    """The probe's lines with the linked container's address and hostname as IP and HOST. The
    judge runs with ``--bridge=none``: its links carry an empty address (``tcp://:80``, a hosts
    line starting with a tab), which is where ours has the address (checked against inspect)."""
    out = []
    for ln in text.strip().splitlines():
        ln = ln.replace(hostname, "HOST")
        if ip:
            ln = ln.replace(ip, "IP")
        else:
            ln = re.sub(r"://:", "://IP:", re.sub(r"_ADDR=$", "_ADDR=IP", ln))
            ln = "IP" + ln if ln.startswith(" db ") else ln
        out.append(ln)
    return sorted(out)


def test_links_give_variables_and_a_hosts_entry(serve: Any, judge: Judge) -> None:
    rows = []
    hosts_lines: list[int] = []
    for _name, client in both(serve, judge):
        api = client.api
        target = api.create_container("busybox:latest", ["sleep", "60"], name="pbgaps-linkdb",
                                      ports=[5432, 80, 81, 82],
                                      environment={"DBUSER": "app", "LEVEL": "x=y"},
                                      labels={"pbtest.gaps": "1"})
        api.start(target["Id"])
        info = api.inspect_container(target["Id"])
        ip = info["NetworkSettings"]["IPAddress"]
        assert ip or client is judge.client  # ours is on a real bridge
        hostname = info["Config"]["Hostname"]
        parent = client.containers.create("busybox:latest", LINK_PROBE, name="pbgaps-linker",
                                          links={"pbgaps-linkdb": "db"}, labels={"pbtest.gaps": "1"})
        parent.start()
        assert parent.wait(timeout=60)["StatusCode"] == 0
        first = _masked(parent.logs().decode(), ip, hostname)
        # the link removed (not the container): the next start has neither
        status, _h, body = (serve if client is serve.client else judge).api(
            "DELETE", "/v1.41/containers/pbgaps-linker/db?link=1")
        assert status == 204, body
        parent.start()
        parent.wait(timeout=60)
        second = parent.logs().decode()
        parent.remove(force=True)
        client.containers.get(target["Id"]).remove(force=True)
        rows.append((first, second.count("DB_")))
        hosts_lines.append(sum(1 for ln in second.splitlines() if ln.endswith(" pbgaps-linkdb")))
    # the variables as dockerd's; the hosts line ours only: the judge, with no bridge, has no
    # address to write (dockerd's buildSandboxOptions: "IP<TAB>alias hostname name")
    env_rows = [([ln for ln in first if ln.startswith("DB_")], after) for first, after in rows]
    assert env_rows[0] == env_rows[1]
    first, after = rows[0]
    assert "DB_PORT=tcp://IP:80" in first and "DB_PORT_5432_TCP_ADDR=IP" in first
    assert "DB_PORT_80_TCP_START=tcp://IP:80" in first and "DB_PORT_80_TCP_PORT_END=82" in first
    assert "DB_NAME=/pbgaps-linker/db" in first and "DB_ENV_LEVEL=x=y" in first
    assert "IP db HOST pbgaps-linkdb" in first
    assert hosts_lines[0] == 1  # the first run's: the second start's /etc/hosts has it no more
    # the second run printed the same lines again (the log keeps both): no more DB_ lines
    assert after == sum(ln.count("DB_") for ln in first) == 24  # _ADDR, _PROTO of port 80 once


def test_a_link_to_a_stopped_container_refuses_the_start(serve: Any, judge: Judge) -> None:
    import docker

    missing = []
    for _name, client in both(serve, judge):  # one to no container: refused at create
        try:
            client.containers.create("busybox:latest", ["true"], links={"pbgaps-nope": "db"},
                                     labels={"pbtest.gaps": "1"})
        except docker.errors.APIError as e:
            missing.append((e.status_code, str(e.explanation)))
    assert missing[0] == missing[1] == (400, "could not get container for pbgaps-nope: No such container: pbgaps-nope")
    rows = []
    for _name, client in both(serve, judge):
        target = client.containers.create("busybox:latest", ["true"], name="pbgaps-stopped",
                                          labels={"pbtest.gaps": "1"})
        parent = client.containers.create("busybox:latest", ["true"], name="pbgaps-linker2",
                                          links={"pbgaps-stopped": "db"}, labels={"pbtest.gaps": "1"})
        try:
            parent.start()
            rows.append("started")
        except Exception as e:  # noqa: BLE001 - docker-py's APIError, compared below
            rows.append(str(getattr(e, "explanation", e)))
        parent.remove(force=True)
        target.remove(force=True)
    assert rows[0] == rows[1] == "Cannot link to a non running container: /pbgaps-stopped AS /pbgaps-linker2/db"


def test_an_exec_has_the_links_variables(serve: Any, judge: Judge) -> None:
    rows = []
    for _name, client in both(serve, judge):
        target = client.containers.run("busybox:latest", ["sleep", "60"], name="pbgaps-linkdb3", detach=True,
                                       environment={"DBUSER": "app"}, labels={"pbtest.gaps": "1"})
        parent = client.containers.run("busybox:latest", ["sleep", "60"], name="pbgaps-linker3", detach=True,
                                       links={"pbgaps-linkdb3": "db"}, labels={"pbtest.gaps": "1"})
        code, out = parent.exec_run(["sh", "-c", "env | grep -E '^DB_(NAME|ENV)' | sort"], environment={"X": "1"})
        rows.append((code, out.decode()))
        parent.remove(force=True)
        target.remove(force=True)
    assert rows[0] == rows[1] == (0, "DB_ENV_DBUSER=app\nDB_NAME=/pbgaps-linker3/db\n")
