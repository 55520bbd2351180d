# ruff: noqa: F811 - the parameters named judge are the imported fixture
"""Issue 23, docker-compose through ``pybuild serve``: Debian's ``docker-compose`` 1.29 drives
the same project against ``pybuild serve`` and against the private ``dockerd`` (the judge), and
the test compares what a user sees: exit codes, ``ps`` states, ``logs``, ``exec`` output, names
and aliases resolving on the project network, and what ``down -v --rmi local`` leaves.

The project: ``web`` built from the project directory (``build: .``), a named volume, a
published port, a healthcheck, a network alias, scaled to two; ``client`` waits for ``web`` to
be healthy (``depends_on: condition: service_healthy``) and fetches it by its service name.
Then ``web`` is changed, recreated with its volume and scaled down to one.
"""

from __future__ import annotations

import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from test_api_gaps import Judge, judge  # noqa: F401 - the fixture, registered by import

COMPOSE = "/usr/bin/docker-compose"

DOCKERFILE = """\
FROM busybox:latest
RUN mkdir -p /www && echo hello-from-web > /www/index.html
CMD ["httpd", "-f", "-p", "80", "-h", "/www"]
"""

COMPOSE_YML = """\
version: "2.4"
services:
  web:
    build: .
    command: ["sh", "-c", "trap 'exit 0' TERM; echo web-up; touch /data/$$(hostname); httpd -f -p 80 -h /www & wait"]
    ports: ["80"]
    volumes: ["data:/data"]
    networks:
      default:
        aliases: [www]
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://localhost/"]
      interval: 1s
      timeout: 2s
      retries: 20
  client:
    image: busybox:latest
    command: ["sh", "-c", "trap 'exit 0' TERM; wget -q -O - http://web/; echo client-done; sleep 300 & wait"]
    depends_on:
      web:
        condition: service_healthy
volumes:
  data: {}
"""


def _compose(project: Path, name: str, env: dict[str, str], *args: str,
             timeout: float = 180) -> subprocess.CompletedProcess[str]:
    environ = {**env, "COMPOSE_INTERACTIVE_NO_CLI": "1"}
    return subprocess.run([COMPOSE, "-p", name, *args], cwd=project, env=environ,
                          capture_output=True, text=True, timeout=timeout)


_STATE = re.compile(r"Up \([^)]*\)|Up|Exit -?\d+|Paused|Restarting")


def _states(ps_out: str) -> list[tuple[str, str]]:
    """``docker-compose ps``'s (Name, State) rows (State with its health, as compose shows it)."""
    rows = []
    for line in ps_out.splitlines()[2:]:
        cols = re.split(r"\s{2,}", line.strip())
        state = next((c for c in cols[1:] if _STATE.fullmatch(c)), "?")
        rows.append((cols[0], state))
    return sorted(rows)


def _until_healthy(run: Any, within: float = 60) -> tuple[list[tuple[str, str]], bool]:
    """``ps`` after a restart until no service's health is still starting: its last rows, and
    whether every row seen before was one a restarted service shows (its health starting again,
    as Docker resets it, then healthy). A first ``ps`` taken right after the restart says
    starting or healthy by whether the 1 s probe interval has passed yet, on either engine."""
    deadline = time.monotonic() + within
    seen: set[str] = set()
    while True:
        rows = _states(run("ps").stdout)
        seen.update(state for _name, state in rows)
        if not any("health: starting" in state for _name, state in rows) or time.monotonic() > deadline:
            return rows, seen <= {"Up", "Up (health: starting)", "Up (healthy)"}
        time.sleep(0.3)


def _run_project(tmp_path: Path, side: str, env: dict[str, str], docker: Any) -> dict[str, Any]:
    project = tmp_path / side
    project.mkdir()
    (project / "Dockerfile").write_text(DOCKERFILE)
    (project / "docker-compose.yml").write_text(COMPOSE_YML)
    name = "pbcompose"
    out: dict[str, Any] = {}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        r = _compose(project, name, env, *args)
        return r

    try:
        up = run("up", "-d", "--build", "--scale", "web=2")
        assert up.returncode == 0, (side, up.stdout, up.stderr)
        out["up"] = up.returncode
        ps = run("ps")
        out["ps"] = (ps.returncode, _states(ps.stdout))
        # the published port: each web replica has a host port for 80/tcp
        ports = [run("port", "--index", str(i), "web", "80") for i in (1, 2)]
        out["port"] = [(p.returncode, bool(re.fullmatch(r"0\.0\.0\.0:\d+\n", p.stdout)))
                       for p in ports]
        # the client reached web by its service name before it was told to stop
        logs = ""
        for _ in range(50):
            logs = run("logs", "--no-color", "client").stdout
            if "client-done" in logs:
                break
            subprocess.run(["sleep", "0.2"], check=True)
        out["client_logs"] = ("hello-from-web" in logs, "client-done" in logs)
        web_logs = run("logs", "--no-color", "web")
        out["web_logs"] = (web_logs.returncode, web_logs.stdout.count("web-up"))
        # names on the project network: the service, its alias, each container's name, the
        # service with the network's name (one exec: each compose call is a second)
        hosts = ("web", "www", f"{name}_web_1", f"{name}_web_2", f"{name}_client_1",
                 f"web.{name}_default")
        r = run("exec", "-T", "client", "sh", "-c", "for h in " + " ".join(hosts) + "; do "
                "echo $h $(wget -q -O - http://$h/ 2>/dev/null || echo unreachable); done")
        out["lookups"] = (r.returncode, dict(line.split(" ", 1) for line in r.stdout.splitlines()))
        # the named volume is shared by both replicas (each touched /data/<its hostname>)
        ls = run("exec", "-T", "--index=2", "web", "sh", "-c", "ls /data | wc -l")
        out["volume"] = (ls.returncode, ls.stdout.strip())
        ex = run("exec", "-T", "web", "sh", "-c", "exit 3")
        out["exec_exit"] = ex.returncode
        # a changed service is recreated (compose renames the old container, reads the image's
        # ContainerConfig, creates the new one with the old one's volumes), and scaled down
        yml = project / "docker-compose.yml"
        yml.write_text(yml.read_text().replace("retries: 20", "retries: 21"))
        re_up = run("up", "-d", "--scale", "web=1")
        out["recreate"] = (re_up.returncode, re_up.stderr.count("Recreating pbc"),
                           _states(run("ps").stdout))
        ls = run("exec", "-T", "web", "sh", "-c", "ls /data | wc -l")
        out["volume_after_recreate"] = (ls.returncode, ls.stdout.strip())
        rs = run("restart", "web")
        out["restart"] = rs.returncode
        out["ps_after_restart"] = _until_healthy(run)
        r = run("exec", "-T", "client", "wget", "-q", "-O", "-", "http://web/")
        out["after_restart"] = (r.returncode, r.stdout)
        st = run("stop")
        out["stop"] = st.returncode
        ps = run("ps")
        out["ps_after_stop"] = _states(ps.stdout)
        down = run("down", "-v", "--rmi", "local")
        out["down"] = (down.returncode, down.stderr.count("Removing"))
        ps = run("ps")
        out["ps_after_down"] = (ps.returncode, _states(ps.stdout))
        out["volume_left"] = docker("volume", "ls", "-q", "--filter", f"name={name}_data").stdout
        out["image_left"] = docker("images", "-q", f"{name}_web").stdout
        out["network_left"] = docker("network", "ls", "-q", "--filter",
                                     f"name={name}_default").stdout
        out["busybox_kept"] = bool(docker("images", "-q", "busybox:latest").stdout.strip())
    finally:
        _compose(project, name, env, "down", "-v", "--rmi", "local", "-t", "1")
    return out


def test_compose_project_as_on_dockerd(serve: Any, judge: Judge, tmp_path: Path) -> None:
    theirs_env = {**serve.env, "DOCKER_HOST": judge.d.host}
    # both projects at once (two daemons, two directories): half the wall time
    with ThreadPoolExecutor(2) as pool:
        ours_f = pool.submit(_run_project, tmp_path, "pybuild", serve.env,
                             lambda *a: serve.docker(*a, check=False))
        theirs_f = pool.submit(_run_project, tmp_path, "dockerd", theirs_env,
                               lambda *a: judge.docker(*a, check=False))
        ours, theirs = ours_f.result(), theirs_f.result()
    assert ours == theirs
    # and what both gave is what the project means
    assert ours["ps"] == (0, [("pbcompose_client_1", "Up"), ("pbcompose_web_1", "Up (healthy)"),
                              ("pbcompose_web_2", "Up (healthy)")])
    assert ours["client_logs"] == (True, True)
    assert ours["lookups"] == (0, {"web": "hello-from-web", "www": "hello-from-web",
                                   "pbcompose_web_1": "hello-from-web",
                                   "pbcompose_web_2": "hello-from-web",
                                   "pbcompose_client_1": "unreachable",  # not a web server
                                   "web.pbcompose_default": "hello-from-web"})
    assert ours["volume"] == (0, "2")
    assert ours["exec_exit"] == 3
    assert ours["recreate"] == (0, 2, [("pbcompose_client_1", "Up"),
                                       ("pbcompose_web_1", "Up (healthy)")])
    assert ours["volume_after_recreate"] == (0, "3")
    assert ours["ps_after_restart"] == ([("pbcompose_client_1", "Up"),
                                         ("pbcompose_web_1", "Up (healthy)")], True)
    assert ours["ps_after_stop"] == [("pbcompose_client_1", "Exit 0"), ("pbcompose_web_1", "Exit 0")]
    assert ours["volume_left"] == ours["image_left"] == ours["network_left"] == ""
    assert ours["busybox_kept"] is True
