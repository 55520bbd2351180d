"""Issue 23: the Engine API as docker-py and the docker CLI drive it, judged against the private
``dockerd`` (fixture ``dockerd``): each test asks both daemons the same thing and compares.

Where the answer cannot be the same (ids, times, paths under each daemon's root), the test
compares what a client relies on: status codes, messages, key sets, values we set.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "registry"))

from registry_server import Registry, unique_repo  # noqa: E402
from serve_client import uhttp  # noqa: E402

NOT_A_MANAGER = ('This node is not a swarm manager. Use "docker swarm init" or "docker swarm '
                 'join" to connect this node to swarm and try again.')

_LOADED: set[str] = set()


class Judge:
    """dockerd's side of a comparison: a docker-py client, raw HTTP and the CLI."""

    def __init__(self, dockerd: Any) -> None:
        self.d = dockerd
        self.sock = str(dockerd.sock)
        self.client = docker.DockerClient(base_url=dockerd.host, version="1.41", timeout=120)

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], bytes]:
        return uhttp(self.sock, method, path, body)

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = self.d.docker(*args, check=check)
        return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(),
                                           r.stderr.decode())


@pytest.fixture
def judge(dockerd: Any, serve: Any) -> Iterator[Judge]:
    """dockerd with the same ``busybox:latest`` as the ``serve`` daemon (loaded once)."""
    j = Judge(dockerd)
    if dockerd.host not in _LOADED:
        tar = serve.pyb.root.parent / "busybox-judge.tar"
        serve.docker("save", "-o", str(tar), "busybox:latest")
        dockerd.docker("load", "-i", str(tar))
        tar.unlink()
        _LOADED.add(dockerd.host)
    try:
        yield j
    finally:
        for c in j.client.containers.list(all=True, filters={"label": "pbtest.gaps"}):
            c.remove(force=True)
        j.client.close()


def both(serve: Any, judge: Judge) -> list[tuple[str, Any]]:
    """(name, docker-py client) of each daemon, ours first."""
    return [("pybuild", serve.client), ("dockerd", judge.client)]


def api_error(call: Any) -> tuple[int, str]:
    with pytest.raises(docker.errors.APIError) as info:
        call()
    err = info.value
    return err.status_code, str(err.explanation)


# -- item 1: swarm endpoints as dockerd without a swarm; /distribution ---------------------------

SWARM_CALLS = [
    ("GET", "/v1.41/swarm"), ("POST", "/v1.41/swarm/leave?force=1"), ("POST", "/v1.41/swarm/leave"),
    ("GET", "/v1.41/swarm/unlockkey"), ("POST", "/v1.41/swarm/unlock"),
    ("POST", "/v1.41/swarm/update?version=1"),
    ("GET", "/v1.41/nodes"), ("GET", "/v1.41/nodes/x"), ("DELETE", "/v1.41/nodes/x"),
    ("POST", "/v1.41/nodes/x/update?version=1"),
    ("GET", "/v1.41/services"), ("POST", "/v1.41/services/create"), ("GET", "/v1.41/services/x"),
    ("DELETE", "/v1.41/services/x"), ("POST", "/v1.41/services/x/update?version=1"),
    ("GET", "/v1.41/services/x/logs?stdout=1"),
    ("GET", "/v1.41/tasks"), ("GET", "/v1.41/tasks/x"), ("GET", "/v1.41/tasks/x/logs?stdout=1"),
    ("GET", "/v1.41/secrets"), ("POST", "/v1.41/secrets/create"), ("GET", "/v1.41/secrets/x"),
    ("DELETE", "/v1.41/secrets/x"), ("GET", "/v1.41/configs"), ("POST", "/v1.41/configs/create"),
    ("GET", "/v1.41/configs/x"), ("DELETE", "/v1.41/configs/x"),
    ("GET", "/v1.41/swarm/nothing"), ("GET", "/nodes"),
]


def test_swarm_endpoints_answer_as_dockerd_without_a_swarm(serve: Any, judge: Judge) -> None:
    for method, path in SWARM_CALLS:
        body = {} if method == "POST" else None
        ours = serve.api(method, path, body)
        theirs = judge.api(method, path, body)
        assert (ours[0], json.loads(ours[2])) == (theirs[0], json.loads(theirs[2])), (method, path)
    assert json.loads(serve.api("GET", "/swarm")[2]) == {"message": NOT_A_MANAGER}
    # docker-py, as test tear-downs and info readers call it
    for _name, client in both(serve, judge):
        # docker-py takes dockerd's 503 "not part of a swarm" as done
        assert client.swarm.leave(force=True) is True
        assert api_error(lambda c=client: c.nodes.list()) == (503, NOT_A_MANAGER)
        assert api_error(lambda c=client: c.services.list()) == (503, NOT_A_MANAGER)
        assert api_error(lambda c=client: c.secrets.list()) == (503, NOT_A_MANAGER)
        assert api_error(lambda c=client: c.configs.list()) == (503, NOT_A_MANAGER)
        info = client.info()
        assert info["Swarm"]["LocalNodeState"] == "inactive"
        assert info["Swarm"]["ControlAvailable"] is False
    # the docker CLI: same words, same exit status
    for args in (["node", "ls"], ["service", "ls"], ["secret", "ls"], ["swarm", "leave", "-f"],
                 ["info", "--format", "{{json .Swarm}}"]):
        ours_r = serve.docker(*args, check=False)
        theirs_r = judge.docker(*args, check=False)
        assert (ours_r.returncode, ours_r.stdout, ours_r.stderr) == (
            theirs_r.returncode, theirs_r.stdout, theirs_r.stderr), args
    # ours only (dockerd would make a swarm): init and join are refused, nothing changes
    status, _h, body = serve.api("POST", "/swarm/init", {})
    assert status == 503 and "no swarm mode" in json.loads(body)["message"]


def test_distribution_inspect_names_descriptor_and_platforms(serve: Any,
                                                             plain_registry: Registry) -> None:
    # the judge's network namespace cannot reach this registry: the shape is dockerd's API
    # (DistributionInspect: Descriptor {mediaType, digest, size}, Platforms [ocispec.Platform])
    ref = f"{plain_registry.addr}/{unique_repo('dist')}:1"
    serve.docker("tag", "busybox:latest", ref)
    out = serve.docker("push", ref).stdout
    digest = out.strip().splitlines()[-1].split("digest: ")[1].split()[0]
    data = serve.client.api.inspect_distribution(ref)
    assert data["Descriptor"]["digest"] == digest
    assert data["Descriptor"]["mediaType"].endswith("manifest.v2+json") or \
        data["Descriptor"]["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert data["Descriptor"]["size"] > 0
    arch = serve.client.info()["Architecture"]
    goarch = {"x86_64": "amd64", "aarch64": "arm64"}.get(arch, arch)
    assert data["Platforms"] == [{"architecture": goarch, "os": "linux"}]
    reg = serve.client.images.get_registry_data(ref)
    assert reg.id == digest and reg.has_platform(f"linux/{goarch}")
    # unknown tag: 404 naming it; bad name: 400
    code, msg = api_error(lambda: serve.client.api.inspect_distribution(ref[:-1] + "nope"))
    assert code == 404 and "nope" in msg
    code, msg = api_error(lambda: serve.client.api.inspect_distribution("Bad Name"))
    assert code == 400


# -- item 2: container inspect's HostConfig, every field dockerd sends -----------------------------

CREATE_OPTIONS: dict[str, Any] = dict(
    cpuset_cpus="0", cpuset_mems="0", group_add=["audio"], cpu_shares=512, mem_swappiness=10,
    oom_score_adj=5, volume_driver="local", mem_reservation="8m", mem_limit="64m",
    memswap_limit="128m", labels={"pbtest.gaps": "1"})
#: HostConfig values a client gave that both daemons must report as given
GIVEN = {"CpusetCpus": "0", "CpusetMems": "0", "GroupAdd": ["audio"], "CpuShares": 512,
         "MemorySwappiness": 10, "OomScoreAdj": 5, "VolumeDriver": "local",
         "MemoryReservation": 8 * 1024 * 1024, "Memory": 64 * 1024 * 1024,
         "MemorySwap": 128 * 1024 * 1024, "Runtime": "runc"}


def keys_of(d: dict[str, Any]) -> set[str]:
    return set(d)


def test_inspect_has_every_dockerd_field_with_given_values(serve: Any, judge: Judge) -> None:
    got = {}
    for name, client in both(serve, judge):
        c = client.containers.create("busybox:latest", ["sleep", "30"], **CREATE_OPTIONS)
        got[name] = c.attrs
        c.remove(force=True)
    ours, theirs = got["pybuild"], got["dockerd"]
    assert keys_of(theirs) <= keys_of(ours), keys_of(theirs) - keys_of(ours)
    hc_ours, hc_theirs = ours["HostConfig"], theirs["HostConfig"]
    missing = keys_of(hc_theirs) - keys_of(hc_ours)
    assert not missing, missing  # KeyError: 'UTSMode' and its kind, no more
    for key, value in GIVEN.items():
        assert hc_ours[key] == hc_theirs[key] == value, key
    # unset fields: dockerd's zero values (null and [] alike to a client)
    for key in ("UTSMode", "PidMode", "CgroupnsMode", "Isolation", "VolumesFrom", "Links",
                "DeviceCgroupRules", "IpcMode", "ShmSize", "MaskedPaths", "ReadonlyPaths",
                "KernelMemory", "BlkioWeight", "CpuPeriod", "CpuQuota", "ConsoleSize"):
        assert hc_ours[key] == hc_theirs[key], key
    ns_ours, ns_theirs = ours["NetworkSettings"], theirs["NetworkSettings"]
    assert keys_of(ns_theirs) <= keys_of(ns_ours), keys_of(ns_theirs) - keys_of(ns_ours)
    ep_theirs = next(iter(ns_theirs["Networks"].values()))
    ep_ours = next(iter(ns_ours["Networks"].values()))
    assert keys_of(ep_theirs) <= keys_of(ep_ours), keys_of(ep_theirs) - keys_of(ep_ours)
    for key in ("IPAMConfig", "Links", "DriverOpts", "Aliases"):
        assert ep_ours[key] == ep_theirs[key] is None, key
    assert keys_of(theirs["Config"]) <= keys_of(ours["Config"])
    # the docker CLI reads them as well
    for client_run, cid in ((serve.docker, None), (judge.docker, None)):
        assert cid is None
        out = client_run("create", "--cpuset-cpus", "0", "--label", "pbtest.gaps=1",
                         "busybox:latest", "true").stdout.strip()
        fmt = "{{.HostConfig.CpusetCpus}}|{{.HostConfig.UTSMode}}|{{.HostConfig.Runtime}}"
        assert client_run("inspect", "-f", fmt, out).stdout.strip() == "0||runc"
        client_run("rm", out)


def test_uts_mode_host_is_honoured(serve: Any, judge: Judge) -> None:
    import socket

    outs = []
    for _name, client in both(serve, judge):
        out = client.containers.run("busybox:latest", ["hostname"], uts_mode="host",
                                    network_mode="none", remove=True)
        outs.append(out)
    assert outs[0] == outs[1] == socket.gethostname().encode() + b"\n"


# -- item 10: Env without "=", the runtime's name ------------------------------------------------

def test_env_entry_without_equals_is_kept_and_unset(serve: Any, judge: Judge) -> None:
    envs = []
    for _name, client in both(serve, judge):
        c = client.containers.create("busybox:latest", ["sh", "-c", "env | sort"],
                                     environment=["A=1", "B"],
                                     labels={"pbtest.gaps": "1"})
        assert c.attrs["Config"]["Env"][:2] == ["A=1", "B"]
        c.start()
        assert c.wait(timeout=60)["StatusCode"] == 0
        envs.append([e for e in c.logs().decode().splitlines() if not e.startswith("HOSTNAME=")])
        c.remove(force=True)
    assert envs[0] == envs[1]
    assert "A=1" in envs[0] and not [e for e in envs[0] if e.startswith("B=")]


def test_runtime_is_named_runc_our_name_kept_in_version(serve: Any, judge: Judge) -> None:
    for name, client in both(serve, judge):
        info = client.info()
        assert info["DefaultRuntime"] == "runc" and "runc" in info["Runtimes"], name
        c = client.containers.create("busybox:latest", ["true"], labels={"pbtest.gaps": "1"})
        assert c.attrs["HostConfig"]["Runtime"] == "runc"
        c.remove()
    assert serve.client.version()["Platform"]["Name"] == "pybuild"
    assert "Default Runtime: runc" in serve.docker("info").stdout


# -- item 3: exec and attach streams ----------------------------------------------------------------

def _raw(sock: Any) -> Any:
    return getattr(sock, "_sock", sock)


def _read_all(sock: Any, timeout: float = 20) -> tuple[bytes, bool]:
    """Everything until EOF (True) or *timeout* (False)."""
    import time

    s = _raw(sock)
    s.settimeout(0.5)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            return data, True
        data += chunk
    return data, False


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    while data:
        assert len(data) >= 8 and data[1:4] == b"\0\0\0", data[:8]
        size = int.from_bytes(data[4:8], "big")
        out.append((data[0], data[8:8 + size]))
        data = data[8 + size:]
    return out


def test_exec_tty_raw_and_socket_frames(serve: Any, judge: Judge) -> None:
    results = []
    for _name, client in both(serve, judge):
        c = client.containers.run("busybox:latest", ["sleep", "60"], detach=True,
                                  network_mode="none", labels={"pbtest.gaps": "1"})
        try:
            tty = c.exec_run(["echo", "hi"], tty=True)
            plain = c.exec_run(["sh", "-c", "echo out; echo err >&2"], demux=True)
            eid = client.api.exec_create(c.id, ["sh", "-c", "echo out; sleep 0.2; echo err >&2"])
            sock = client.api.exec_start(eid["Id"], socket=True)
            data, eof = _read_all(sock)
            sock.close()
            tid = client.api.exec_create(c.id, ["echo", "raw"], tty=True)
            tsock = client.api.exec_start(tid["Id"], socket=True, tty=True)
            tdata, teof = _read_all(tsock)
            tsock.close()
            results.append((tty, plain, _frames(data), eof, tdata, teof))
        finally:
            c.remove(force=True)
    ours, theirs = results
    assert ours == theirs
    assert ours[0] == (0, b"hi\r\n")  # raw bytes: no 8-byte frame headers with a TTY
    assert ours[2] == [(1, b"out\n"), (2, b"err\n")] and ours[4] == b"raw\r\n"


@pytest.mark.parametrize("keys, typed", [(None, b"\x10\x11"), ("ctrl-x,y", b"\x18y")])
def test_attach_detach_keys_end_the_stream_container_runs(serve: Any, judge: Judge,
                                                          keys: str | None, typed: bytes) -> None:
    outs = []
    for _name, client in both(serve, judge):
        c = client.containers.run("busybox:latest", ["cat"], detach=True, tty=True,
                                  stdin_open=True, network_mode="none",
                                  labels={"pbtest.gaps": "1"})
        try:
            params = {"stdin": 1, "stdout": 1, "stream": 1}
            if keys:
                params["detachKeys"] = keys
            sock = client.api.attach_socket(c.id, params=params)
            _raw(sock).sendall(b"abc\n")
            echoed = b""
            while b"abc\r\n" not in echoed:  # the terminal echoes what was typed
                echoed += _raw(sock).recv(4096)
            _raw(sock).sendall(typed)
            _data, eof = _read_all(sock)
            sock.close()
            c.reload()
            outs.append((eof, c.status))
        finally:
            c.remove(force=True)
    assert outs[0] == outs[1] == (True, "running")


def test_attach_bad_detach_keys(serve: Any, judge: Judge) -> None:
    codes = []
    for _name, client in both(serve, judge):
        c = client.containers.create("busybox:latest", ["true"], labels={"pbtest.gaps": "1"})
        code, _h, _b = uhttp(client.api.base_url and (serve.sock if client is serve.client
                                                      else judge.sock),
                             "POST", f"/v1.41/containers/{c.id}/attach?stream=1&stdout=1"
                             "&detachKeys=ctrl-nope")
        codes.append(code)
        c.remove()
    assert codes[0] == codes[1]


# -- item 4: kill answers once the container is dead; item 8: commit of a stopped container ----

def test_kill_replies_after_the_container_died(serve: Any, judge: Judge) -> None:
    for name, client in both(serve, judge):
        for _ in range(3):
            c = client.containers.run("busybox:latest", ["sleep", "60"], detach=True,
                                      network_mode="none", labels={"pbtest.gaps": "1"})
            c.kill()
            st = client.api.inspect_container(c.id)["State"]
            assert (st["Status"], st["Running"], st["ExitCode"]) == ("exited", False, 137), name
            c.remove()  # no 409: it is not running any more
        # another signal is only delivered: the reply does not wait
        c = client.containers.run("busybox:latest", ["sleep", "60"], detach=True,
                                  network_mode="none", labels={"pbtest.gaps": "1"})
        c.kill("SIGWINCH")
        assert client.api.inspect_container(c.id)["State"]["Running"] is True
        c.remove(force=True)
    for run in (serve.docker, judge.docker):
        cid = run("run", "-d", "--network", "none", "busybox:latest", "sleep", "60").stdout.strip()
        run("kill", cid)
        assert run("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}",
                   cid).stdout.strip() == "exited 137"
        run("rm", cid)


def test_commit_of_a_stopped_container_with_pause(serve: Any, judge: Judge) -> None:
    got = []
    for name, client in both(serve, judge):
        c = client.containers.run("busybox:latest", ["sh", "-c", "echo x > /made"], detach=True,
                                  network_mode="none", labels={"pbtest.gaps": "1"})
        assert c.wait(timeout=60)["StatusCode"] == 0
        image = c.commit(repository="gaps-committed", tag="1", pause=True)
        out = client.containers.run(image.id, ["cat", "/made"], remove=True,
                                    network_mode="none")
        got.append(out)
        c.remove()
        client.images.remove(image.id, force=True)
        assert name
    assert got == [b"x\n", b"x\n"]


# -- item 10: prune's SpaceReclaimed, wait on a container with a restart policy -------------------

def test_prune_reports_space_reclaimed(serve: Any, judge: Judge) -> None:
    got = []
    for _name, client in both(serve, judge):
        c = client.containers.run("busybox:latest",
                                  ["dd", "if=/dev/zero", "of=/big", "bs=1024", "count=2048"],
                                  detach=True, network_mode="none",
                                  labels={"pbtest.gaps": "1", "pbtest.prune": "1"})
        assert c.wait(timeout=60)["StatusCode"] == 0
        r = client.containers.prune(filters={"label": "pbtest.prune=1"})
        got.append((r["ContainersDeleted"] == [c.id], r["SpaceReclaimed"]))
    (ok1, ours), (ok2, theirs) = got
    assert ok1 and ok2
    # 2 MiB written: each daemon counts its writable layer (ours by blocks, as du)
    assert 2 * 1024 * 1024 <= ours < 3 * 1024 * 1024 and 2 * 1024 * 1024 <= theirs < 3 * 1024 * 1024


def test_wait_returns_at_the_first_exit_of_a_restarting_container(serve: Any,
                                                                  judge: Judge) -> None:
    codes = []
    for _name, client in both(serve, judge):
        c = client.containers.run("busybox:latest", ["sh", "-c", "sleep 0.5; exit 3"],
                                  detach=True, network_mode="none",
                                  restart_policy={"Name": "on-failure", "MaximumRetryCount": 5},
                                  labels={"pbtest.gaps": "1"})
        codes.append(c.wait(timeout=30)["StatusCode"])
        c.remove(force=True)
    assert codes == [3, 3]


# -- item 7: log drivers ------------------------------------------------------------------------

def _log_config(client: Any, driver: str, config: dict[str, str]) -> Any:
    return docker.types.LogConfig(type=driver, config=config)


def test_log_drivers_as_dockerd(serve: Any, judge: Judge) -> None:
    seen = []
    for _name, client in both(serve, judge):
        row: list[Any] = []
        # unknown driver and unknown option: refused at create with dockerd's words
        for driver, config in (("bogus", {}), ("json-file", {"bogus": "1"}),
                               ("local", {"bogus": "1"})):
            row.append(api_error(lambda d=driver, cf=config, cl=client: cl.containers.create(
                "busybox:latest", ["true"], log_config=_log_config(cl, d, cf),
                labels={"pbtest.gaps": "1"})))
        # a bad size: created, refused at start
        c = client.containers.create("busybox:latest", ["true"], labels={"pbtest.gaps": "1"},
                                     log_config=_log_config(client, "json-file",
                                                            {"max-size": "bogus"}))
        row.append(api_error(c.start))
        c.remove()
        # none: runs, keeps no logs, reading them is refused
        c = client.containers.run("busybox:latest", ["echo", "hi"], detach=True,
                                  network_mode="none", labels={"pbtest.gaps": "1"},
                                  log_config=_log_config(client, "none", {}))
        assert c.wait(timeout=60)["StatusCode"] == 0
        row.append(api_error(c.logs))
        row.append(c.attrs["HostConfig"]["LogConfig"])
        c.remove()
        # json-file and local with options: kept in inspect, logs read back
        for driver in ("json-file", "local"):
            c = client.containers.run("busybox:latest", ["sh", "-c", "echo a; echo b"],
                                      detach=True, network_mode="none",
                                      labels={"pbtest.gaps": "1"},
                                      log_config=_log_config(client, driver,
                                                             {"max-size": "1k", "max-file": "3"}))
            assert c.wait(timeout=60)["StatusCode"] == 0
            row.append((c.attrs["HostConfig"]["LogConfig"], c.logs()))
            c.remove()
        seen.append(row)
    assert seen[0] == seen[1]
    assert seen[0][0] == (400, 'error looking up logging plugin bogus: plugin "bogus" not found')
    assert seen[0][3] == (500, "failed to initialize logging driver: invalid size: 'bogus'")
    assert seen[0][4] == (501, "configured logging driver does not support reading")
    # the docker CLI says the same
    outs = [run("logs", cid, check=False) for run, cid in (
        (serve.docker, serve.docker("create", "--log-driver", "none", "--label", "pbtest.gaps=1",
                                    "busybox:latest", "true").stdout.strip()),
        (judge.docker, judge.docker("create", "--log-driver", "none", "--label", "pbtest.gaps=1",
                                    "busybox:latest", "true").stdout.strip()))]
    assert [(o.returncode, o.stderr) for o in outs] == [(1, "Error response from daemon: "
                                                         "configured logging driver does not "
                                                         "support reading\n")] * 2
    serve.docker("rm", "-f", *serve.docker("ps", "-aq").stdout.split())


def test_json_file_rotation_keeps_max_file_files(serve: Any, judge: Judge) -> None:
    script = "i=0; while [ $i -lt 300 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done"
    got = []
    for _name, client in both(serve, judge):
        c = client.containers.run("busybox:latest", ["sh", "-c", script], detach=True,
                                  network_mode="none", labels={"pbtest.gaps": "1"},
                                  log_config=_log_config(client, "json-file",
                                                         {"max-size": "4k", "max-file": "2"}))
        assert c.wait(timeout=60)["StatusCode"] == 0
        lines = c.logs().decode().splitlines()
        got.append(lines)
        c.remove()
    # how many survive depends on each daemon's entry size (Docker's time has 9 digits, its
    # encoder escapes otherwise): the rule is the same, a file rotates once it reached max-size
    for lines in got:
        # old entries gone, the newest kept, in order: at most two 4k files of ~90-byte entries
        assert lines[-1] == "line-299-xxxxxxxxxxxxxxxxxxxxxxxx"
        assert 30 < len(lines) < 100, len(lines)
        nums = [int(x.split("-")[1]) for x in lines]
        assert nums == list(range(nums[0], 300))


# -- item 6: the archive endpoints see volumes and bind mounts ----------------------------------

def _tar_of(name: str, data: bytes) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _files_of(chunks: Any) -> dict[str, bytes]:
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as t:
        return {m.name: (t.extractfile(m).read() if m.isfile() else b"")  # type: ignore[union-attr]
                for m in t.getmembers()}


def test_archive_sees_volume_and_bind_mounts(serve: Any, judge: Judge, tmp_path: Path) -> None:
    results = []
    for name, client in both(serve, judge):
        bind = tmp_path / f"bind-{name}"
        bind.mkdir()
        (bind / "b.txt").write_text("from the host\n")
        vol = f"gapsvol-{name}"
        c = client.containers.run("busybox:latest", ["sh", "-c", "echo v > /vol1/v.txt"],
                                  detach=True, network_mode="none", labels={"pbtest.gaps": "1"},
                                  volumes={vol: {"bind": "/vol1", "mode": "rw"},
                                           str(bind): {"bind": "/mnt/b", "mode": "rw"}})
        try:
            assert c.wait(timeout=60)["StatusCode"] == 0
            row = []
            for path in ("/vol1", "/vol1/v.txt", "/mnt/b/b.txt"):  # stopped: GET and HEAD
                chunks, st = c.get_archive(path)
                row.append((path, _files_of(chunks), st["name"], st["size"] if
                            not st["mode"] & (1 << 31) else "dir"))
            assert c.put_archive("/vol1", _tar_of("put.txt", b"put\n"))
            assert c.put_archive("/mnt/b", _tar_of("put.txt", b"bput\n"))
            row.append(("host", (bind / "put.txt").read_bytes()))
            out = client.containers.run("busybox:latest", ["cat", "/vol1/put.txt"], remove=True,
                                        network_mode="none", volumes={vol: {"bind": "/vol1"}})
            row.append(("volume", out))
            results.append(row)
        finally:
            c.remove(force=True)
            client.volumes.get(vol).remove(force=True)
    assert results[0] == results[1]
    assert results[0][1][1] == {"v.txt": b"v\n"}
    # the docker CLI's cp of a stopped container's volume (ours are made at the first start:
    # a created container's volumes are not there yet, unlike dockerd's)
    for run, where in ((serve.docker, "ours"), (judge.docker, "theirs")):
        cid = run("run", "-d", "-v", "/anon", "--network", "none", "--label", "pbtest.gaps=1",
                  "busybox:latest", "true").stdout.strip()
        run("wait", cid)
        src = tmp_path / f"cp-{where}.txt"
        src.write_text("cp\n")
        run("cp", str(src), f"{cid}:/anon/in.txt")
        run("cp", f"{cid}:/anon/in.txt", str(tmp_path / f"back-{where}.txt"))
        assert (tmp_path / f"back-{where}.txt").read_text() == "cp\n"
        run("rm", "-v", cid)


# -- item 9: networks: a created container connected at start, endpoint fields -----------------

def test_created_container_reconnected_with_aliases_joins_at_start(serve: Any,
                                                                   judge: Judge) -> None:
    rows = []
    for name, client in both(serve, judge):
        net = client.networks.create(f"gapsnet-{name}", driver="bridge")
        other = client.networks.create(f"gapsother-{name}", driver="bridge")
        try:
            web = client.containers.create("busybox:latest", ["sleep", "60"],
                                           network=net.name, labels={"pbtest.gaps": "1"},
                                           name=f"gapsweb-{name}")
            # what docker-compose does before a start: off the network, on again with aliases
            net.disconnect(web)
            net.connect(web, aliases=["web", "www"])
            other.connect(web, aliases=["side"])
            web.start()
            web.reload()
            nets = web.attrs["NetworkSettings"]["Networks"]
            row: list[Any] = [sorted(nets)[0].split("-")[0], sorted(nets)[1].split("-")[0]]
            ep = nets[net.name]
            row.append(sorted(a for a in ep["Aliases"] or [] if a in ("web", "www")))
            row.append(sorted(a for a in nets[other.name]["Aliases"] or [] if a == "side"))
            row.append(ep["IPAddress"] != "" and nets[other.name]["IPAddress"] != "")
            for key in ("IPAMConfig", "Links", "DriverOpts"):
                row.append((key, key in ep, ep.get(key)))
            for alias in ("web", "www"):
                out = client.containers.run("busybox:latest", ["ping", "-c", "1", "-W", "3", alias],
                                            network=net.name, remove=True)
                row.append(b"1 packets received" in out)
            rows.append(row)
        finally:
            for c in client.containers.list(all=True, filters={"label": "pbtest.gaps"}):
                c.remove(force=True)
            net.remove()
            other.remove()
    assert rows[0] == rows[1]
    assert rows[0][:5] == ["gapsnet", "gapsother", ["web", "www"], ["side"], True]


# -- item 5: the build stream ---------------------------------------------------------------------

def _build_error(client: Any, dockerfile: str, tmp: Path, **kw: Any) -> str:
    ctx = tmp / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    with pytest.raises(docker.errors.BuildError) as info:
        client.images.build(path=str(ctx), rm=True, **kw)
    return str(info.value.msg)


def test_build_run_failure_text_and_network_mode(serve: Any, judge: Judge,
                                                 tmp_path: Path) -> None:
    texts = []
    for name, client in both(serve, judge):
        d = tmp_path / name
        d.mkdir()
        row = [_build_error(client, "FROM busybox:latest\nRUN echo hi && exit 3\n", d),
               _build_error(client, 'FROM busybox:latest\nRUN ["sh", "-c", "exit 4"]\n', d)]
        # networkmode honoured at RUN: none has only a loopback
        (d / "ctx" / "Dockerfile").write_text(
            "FROM busybox:latest\nRUN ls /sys/class/net | sort | tr '\\n' ' ' > /nets\n")
        image, _logs = client.images.build(path=str(d / "ctx"), rm=True, network_mode="none",
                                           tag=f"gaps-net-{name}:1")
        # read after the container's end, then removed: docker-py's ``run(remove=True)`` joins
        # its log stream only after removing the container, and dockerd sometimes ends that
        # stream empty then (docker/docker-py#2427: the judge's flake, an empty listing)
        c = client.containers.run(image.id, ["cat", "/nets"], detach=True, network_mode="none",
                                  labels={"pbtest.gaps": "1"})
        assert c.wait(timeout=60)["StatusCode"] == 0
        row.append(c.logs())
        c.remove()
        client.images.remove(image.id, force=True)
        texts.append(row)
    assert texts[0] == texts[1]
    assert texts[0][:2] == ["The command '/bin/sh -c echo hi && exit 3' returned a non-zero code: 3",
                            "The command 'sh -c exit 4' returned a non-zero code: 4"]
    assert texts[0][2] == b"lo "


def test_volumes_from_gives_the_other_containers_mounts(serve: Any, judge: Judge,
                                                        tmp_path: Path) -> None:
    rows = []
    for name, client in both(serve, judge):
        bind = tmp_path / f"vf-{name}"
        bind.mkdir()
        (bind / "h.txt").write_text("host\n")
        src = client.containers.run("busybox:latest", ["sh", "-c", "echo v > /data/f"],
                                    detach=True, network_mode="none", name=f"gapsvf-{name}",
                                    labels={"pbtest.gaps": "1"},
                                    volumes=["/data", f"{bind}:/ctx:ro"])
        assert src.wait(timeout=60)["StatusCode"] == 0
        row = []
        for spec in (src.name, f"{src.name}:ro"):
            c = client.containers.run("busybox:latest", ["sh", "-c",
                                      "cat /data/f /ctx/h.txt; touch /data/y 2>&1; "
                                      "touch /ctx/x 2>&1; true"],
                                      detach=True, network_mode="none", volumes_from=[spec],
                                      labels={"pbtest.gaps": "1"})
            c.wait(timeout=60)
            row.append((c.logs(), [v.replace(src.name, "SRC") for v in c.attrs["HostConfig"]["VolumesFrom"]]))
            c.remove()
        code, msg = api_error(lambda cl=client: cl.containers.create(
            "busybox:latest", ["true"], volumes_from=["nope"]))
        row.append((code, msg))
        rows.append(row)
        src.remove(v=True)
    assert rows[0][:2] == rows[1][:2]
    assert rows[0][2] == rows[1][2] == (400, "No such container: nope")
    assert b"v\nhost\n" in rows[0][0][0] and b"Read-only" in rows[0][1][0]


def test_build_and_load_failures_travel_in_the_200_stream(serve: Any, judge: Judge) -> None:
    import io
    import tarfile

    def ctx(dockerfile: str) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(dockerfile)
            t.addfile(info, io.BytesIO(dockerfile.encode()))
        return buf.getvalue()

    truncated = serve.api("GET", "/images/get?names=busybox:latest")[2][:3000]
    rows = []
    for api in (serve.api, judge.api):
        row = []
        for df in ("FROM busybox:latest\nADD http://127.0.0.1:9/x /x\n",
                   "FROM busybox:latest\nCOPY missing /x\n", "FROM busybox:latest\nFOO bar\n"):
            status, _h, body = api("POST", "/v1.41/build?rm=1", ctx(df))
            last = [json.loads(x) for x in body.splitlines() if x.strip()][-1]
            row.append((status, "errorDetail" in last, "message" in last))
        status, _h, body = api("POST", "/v1.41/images/load?quiet=1", truncated)
        last = [json.loads(x) for x in body.splitlines() if x.strip()][-1]
        row.append((status, "errorDetail" in last))
        rows.append(row)
    assert rows[0] == rows[1]
    # an ADD or COPY failure: 200 and errorDetail; a Dockerfile that does not parse: 400
    assert rows[0] == [(200, True, False), (200, True, False), (400, False, True), (200, True)]
