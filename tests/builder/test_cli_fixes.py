"""The CLI as Docker's users expect it (issue 11) and as a thin layer over the library (issue 12):
flag errors exit 125 everywhere, Ctrl-C to the whole process group prints ``cancelled`` and
leaves nothing, ``ps -a`` shows no ports of a stopped container, ``pull``/``push`` print
Docker's lines on stdout, a wrong password says so; and no CLI module reads records itself."""

# ruff: noqa: F811 - the registry fixtures are imported, then named as test parameters
from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "registry"))

from registry_server import (  # noqa: E402,F401 - fixtures come in by import
    BASIC_USERS,
    Fault,
    FaultProxy,
    Registry,
    basic_registry,
    fault_proxy,
    file_tar,
    make_image,
    plain_registry,
    registry_tmp,
    unique_repo,
)

from builder.cli import cli, flags, main  # noqa: E402
from registry.reference import Reference  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PYBUILD = str(Path(sys.executable).parent / "pybuild")


# -- unknown flags and commands -------------------------------------------------------------------
def _all_commands() -> list[list[str]]:
    """Every command path of the CLI: each top-level command and each group's subcommands."""
    out: list[list[str]] = []
    ctx = flags.Context(cli, info_name="pybuild")
    for name in cli.list_commands(ctx):
        cmd = cli.get_command(ctx, name)
        out.append([name])
        if isinstance(cmd, flags.Group):
            sub_ctx = flags.Context(cmd, info_name=name, parent=ctx)
            out += [[name, sub] for sub in cmd.list_commands(sub_ctx)]
    return out


def _run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_an_unknown_flag_exits_125_for_every_command(capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path) -> None:
    commands = _all_commands()
    assert len(commands) > 60 and ["image", "ls"] in commands and ["network", "create"] in commands
    for path in commands:
        code, out, err = _run_main(["--root", str(tmp_path / "r"), *path, "--no-such-flag"], capsys)
        shown = " ".join(path)
        assert (code, out, err) == (125, "", f"unknown flag: --no-such-flag\nSee 'pybuild {shown} --help'.\n"), path
        code, out, _ = _run_main([*path, "--help"], capsys)
        assert code == 0 and "Usage: pybuild " + shown in out, path
    assert not (tmp_path / "r").exists()  # a flag error touches no state


def test_flag_errors_unknown_commands_and_argument_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run_main(["ps", "-z"], capsys) == (125, "", "unknown shorthand flag: 'z' in -z\n"
                                               "See 'pybuild ps --help'.\n")
    code, _, err = _run_main(["ps", "-n", "abc"], capsys)  # a flag's bad value is a flag error
    assert code == 125 and 'invalid argument "abc" for "-n, --last" flag' in err and err.endswith("See 'pybuild ps --help'.\n")
    code, _, err = _run_main(["build", "-t"], capsys)  # a flag without its value
    assert code == 125 and err.endswith("See 'pybuild build --help'.\n")
    assert _run_main(["nosuchcommand"], capsys) == (
        125, "", "pybuild: 'nosuchcommand' is not a pybuild command.\nSee 'pybuild --help'.\n")
    assert _run_main(["image", "bogus"], capsys)[0] == 125
    assert _run_main(["--bogus", "ps"], capsys)[0] == 125
    # a missing argument is not a flag error: 1, as Docker ("requires at least 1 argument")...
    code, _, err = _run_main(["rm"], capsys)
    assert code == 1 and "Missing argument" in err
    # ...but `run`/`create` say 125 for every usage error, as Docker's do
    assert _run_main(["run"], capsys)[0] == 125
    assert _run_main(["container", "create"], capsys)[0] == 125
    # bare groups show their help and succeed
    code, out, _ = _run_main([], capsys)
    assert code == 0 and "Commands:" in out
    code, out, _ = _run_main(["network"], capsys)
    assert code == 0 and "Manage networks" in out


def test_the_console_script_exits_125_on_an_unknown_flag() -> None:
    r = subprocess.run([PYBUILD, "images", "--bogus"], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (125, "", "unknown flag: --bogus\nSee 'pybuild images --help'.\n")


# -- the CLI holds no library rule -----------------------------------------------------------------
def test_no_cli_module_reads_records_itself() -> None:
    """Records (``container.json``, ``state.json``, network and volume JSON) are read by the
    library only; the CLI calls it."""
    offenders = []
    for p in sorted((REPO / "builder" / "cli").glob("*.py")):
        text = p.read_text()
        for needle in ("container.json", "state.json", ".glob(", "read_bytes(", "read_text("):
            if needle in text:
                offenders.append(f"{p.name}: {needle}")
    assert offenders == []


def test_image_rules_and_inspect_shapes_are_library_calls(busybox: Any) -> None:
    """``builder.runtime.images`` and ``builder.runtime.containers.inspect`` answer without the CLI: what a
    ``pybuild serve`` handler calls."""
    from builder.runtime import images
    from builder.runtime.containers import inspect, lifecycle
    from registry.errors import StoreError

    state = busybox.state
    cid = busybox("create", "--name", "held", "busybox", "true").stdout.strip()
    with pytest.raises(StoreError, match="container " + cid[:12] + " is using its referenced image"):
        images.remove(state, "busybox")
    assert images.prune(state, all=True).deleted == ()  # a used image is no prune candidate
    hist = images.history(state.image_store(), "busybox")
    assert hist[0]["Id"] == busybox.image_id and hist[0]["Tags"] == ["busybox:latest"]
    assert isinstance(hist[0]["Created"], int) and hist[0]["Created"] > 1_600_000_000
    assert all(h["Id"] == "<missing>" and h["Tags"] is None for h in hist[1:])
    shown = images.inspect(state.image_store(), "busybox")
    assert shown["Id"] == busybox.image_id and shown["RepoTags"] == ["busybox:latest"]
    found, missing = images.inspect_any(state, ["busybox", "held", "nothing"])
    assert [f["Id"] for f in found] == [busybox.image_id, cid] and missing == ["nothing"]
    c = lifecycle.get(state, "held")
    summary = inspect.summary(state, c)
    assert summary["Names"] == ["/held"] and summary["Status"] == "Created" and summary["Ports"] == []
    assert inspect.inspect(state, "held")["Name"] == "/held"
    assert images.remove(state, "busybox", force=True) == ["Untagged: busybox:latest"]


def test_image_filters_are_a_library_rule(busybox: Any, busybox_tar: Path) -> None:
    """``images --filter`` as Docker: label (every one holds), before/since an image, dangling,
    reference; values of one key OR; the CLI passes them to ``builder.runtime.images.filter_images``."""
    from builder.base.errors import BuildError
    from builder.runtime import images

    def names(*args: str) -> list[str]:
        out = busybox("images", "--format", "{{.Repository}}:{{.Tag}}", *args).stdout
        return sorted(out.split())

    busybox("import", str(busybox_tar), "old:1", "-c", "LABEL tier=db team=a")
    busybox("import", str(busybox_tar), "new:1", "-c", "LABEL tier=web team=a")
    assert names("--filter", "label=team=a") == ["new:1", "old:1"]
    assert names("--filter", "label=team=a", "--filter", "label=tier=db") == ["old:1"]
    assert names("--filter", "since=old:1", "--filter", "label=team") == ["new:1"]
    assert names("--filter", "before=new:1", "--filter", "label=team") == ["old:1"]
    assert names("--filter", "reference=old:*", "--filter", "reference=new:*") == ["new:1", "old:1"]
    assert names("old") == ["old:1"]
    store = busybox.store()
    with pytest.raises(BuildError, match="Invalid filter 'dangling=maybe'"):
        images.filter_images(store, store.images(), filters={"dangling": ["maybe"]})
    r = busybox("images", "--filter", "since=nosuch:1", check=False)
    assert r.returncode == 1 and "No such image: nosuch:1" in r.stderr


def test_tag_refuses_a_digest_reference(busybox: Any) -> None:
    from builder.runtime import images
    from registry.errors import InvalidReference

    target = "other@sha256:" + "a" * 64
    r = busybox("tag", "busybox", target, check=False)
    assert (r.returncode, r.stderr) == (1, f"Error: refusing to create a tag with a digest reference: {target}\n")
    with pytest.raises(InvalidReference):
        images.tag(busybox.store(), "busybox", target)
    assert str(images.tag(busybox.store(), "busybox", "other:2")) == "docker.io/library/other:2"
    assert busybox("images", "-q", "other:2").stdout == busybox.image_id[7:19] + "\n"


def test_import_changes_are_a_library_call() -> None:
    from builder.base.errors import InvalidChange
    from builder.imagebuild.graph import config_from_changes

    config = config_from_changes(["ENV A=1", "CMD echo $A", "EXPOSE 80"])
    assert config["Env"] == ["A=1"] and config["Cmd"] == ["/bin/sh", "-c", "echo $A"]
    assert config["ExposedPorts"] == {"80/tcp": {}}
    with pytest.raises(InvalidChange, match=r"^invalid --change 'EXPOSE 70000': invalid port 70000/tcp$"):
        config_from_changes(["ENV A=1", "EXPOSE 70000"])
    with pytest.raises(InvalidChange, match="FROM is not a valid change command"):
        config_from_changes(["FROM busybox"])


def test_network_and_volume_filters_are_library_rules(pybuild: Any) -> None:
    """Values of one key OR, keys AND, as Docker; the CLI only passes the filters on."""
    from builder import network
    from builder.base.errors import NetworkError, VolumeError
    from builder.runtime import volume

    pybuild("network", "create", "--internal", "--label", "tier=db", "alpha")
    pybuild("network", "create", "--internal", "beta")
    ls = pybuild("network", "ls", "--format", "json", "--filter", "name=alp", "--filter", "name=bet")
    assert sorted(json.loads(line)["Name"] for line in ls.stdout.splitlines()) == ["alpha", "beta"]
    ls = pybuild("network", "ls", "--format", "json", "--filter", "type=custom", "--filter", "label=tier=db")
    assert [json.loads(line)["Name"] for line in ls.stdout.splitlines()] == ["alpha"]
    nets = network.list_networks(pybuild.state)
    assert {n.name for n in network.filter_networks(nets, {"type": ["builtin"]})} >= {"bridge", "host", "none"}
    with pytest.raises(NetworkError, match="Invalid filter 'type=other'"):
        network.filter_networks(nets, {"type": ["other"]})
    r = pybuild("network", "ls", "--filter", "colour=red", check=False)
    assert (r.returncode, r.stderr) == (1, "Error: Invalid filter 'colour'\n")

    pybuild("volume", "create", "--label", "a=1", "v1")
    pybuild("volume", "create", "v2")
    assert pybuild("volume", "ls", "-q", "--filter", "name=v1", "--filter", "name=v2").stdout == "v1\nv2\n"
    assert pybuild("volume", "ls", "-q", "--filter", "name=v", "--filter", "label=a").stdout == "v1\n"
    vols = volume.list_volumes(pybuild.state)
    assert [v.name for v in volume.filter_volumes(pybuild.state, vols, {"dangling": ["true"]})] == ["v1", "v2"]
    with pytest.raises(VolumeError, match="Invalid filter 'dangling=maybe'"):
        volume.filter_volumes(pybuild.state, vols, {"dangling": ["maybe"]})


def test_logs_and_top_are_library_calls(busybox: Any) -> None:
    from builder.base.errors import ContainerError
    from builder.runtime.containers import inspect, lifecycle, logs

    busybox("run", "-d", "--name", "talker", "busybox", "sh", "-c", "echo one; echo two; exec sleep 600")
    try:
        state = busybox.state
        deadline = time.monotonic() + 30
        while len(list(logs.entries(state, "talker"))) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert [e.data for e in logs.entries(state, "talker", tail="1")] == [b"two\n"]
        assert busybox("logs", "--tail", "1", "talker").stdout == "two\n"
        with pytest.raises(ContainerError, match="invalid --tail value 'x'"):
            list(logs.entries(state, "talker", tail="x"))
        shown = inspect.top(lifecycle.get(state, "talker"))
        assert shown["Titles"] == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
        assert [row[-1] for row in shown["Processes"]] == ["sleep 600"]
        assert busybox("top", "talker").stdout.splitlines()[1].endswith("sleep 600")
    finally:
        busybox("rm", "-f", "talker")


# -- ps -a: no ports once stopped ------------------------------------------------------------------
def test_ps_shows_ports_only_while_running(busybox: Any, busybox_tar: Path) -> None:
    busybox("import", str(busybox_tar), "exposing:1", "-c", "EXPOSE 9090")
    busybox("run", "-d", "--name", "web", "-p", "127.0.0.1::8080", "exposing:1", "sleep", "600")
    try:
        ps = busybox("ps", "--format", "{{.Names}} {{.Ports}}").stdout
        assert re.fullmatch(r"web 127\.0\.0\.1:\d+->8080/tcp, 9090/tcp\n", ps), ps
        busybox("stop", "-t", "0", "web")
        assert busybox("ps", "-a", "--format", "{{.Names}}|{{.Ports}}|{{.State}}").stdout == "web||exited\n"
        table = busybox("ps", "-a").stdout.splitlines()
        ports_at = table[0].index("PORTS")
        assert table[1][ports_at:].split()[0] == "web"  # the PORTS cell is blank
    finally:
        busybox("rm", "-f", "web", check=False)


# -- pull / push lines -----------------------------------------------------------------------------
@pytest.fixture()
def regenv(tmp_path: Path) -> dict[str, str]:
    return {"DOCKER_CONFIG": str(tmp_path / "docker-config"),
            "PYBUILD_CERTS_D": str(tmp_path / "certs.d")}


def test_pull_and_push_print_dockers_lines_on_stdout(pybuild_factory: Callable[[], Any],
                                                     plain_registry: Registry,
                                                     regenv: dict[str, str]) -> None:
    src, dst = pybuild_factory(), pybuild_factory()
    base = file_tar("base", os.urandom(3000))
    img = make_image(src.store(), "app:latest", layers=[base, file_tar("a", os.urandom(3000))])
    repo = f"{plain_registry.addr}/{unique_repo()}"
    layers = [d.digest.short for d in img.layers]

    pushed = src("push", "app", repo, env=regenv).stdout.splitlines()
    assert pushed[0] == f"The push refers to repository [{repo}]"
    assert pushed[-1] == f"latest: digest: {img.descriptor.digest} size: {img.descriptor.size}"
    for s in layers:  # layers go up concurrently: each one's lines in order
        assert [x for x in pushed if x.startswith(s)] == [f"{s}: Preparing", f"{s}: Pushed"]
    assert len(pushed) == 2 + 2 * len(layers)
    again = src("push", "app", repo, env=regenv).stdout.splitlines()
    assert sorted(again[1:-1]) == sorted(f"{s}: Layer already exists" for s in layers)

    pulled = dst("pull", repo, env=regenv).stdout.splitlines()
    path = Reference.parse(repo).path
    assert pulled[:2] == ["Using default tag: latest", f"latest: Pulling from {path}"]
    for s in layers:
        lines = [x for x in pulled if x.startswith(s)]
        assert lines == [f"{s}: Pulling fs layer", f"{s}: Download complete", f"{s}: Pull complete"]
    assert pulled[-3:] == [f"Digest: {img.descriptor.digest}",
                           f"Status: Downloaded newer image for {repo}:latest", f"{repo}:latest"]
    # up to date: Docker compares the manifest first and shows no layer at all
    assert dst("pull", f"{repo}:latest", env=regenv).stdout.splitlines() == [
        f"latest: Pulling from {path}", f"Digest: {img.descriptor.digest}",
        f"Status: Image is up to date for {repo}:latest", f"{repo}:latest"]
    # a new image sharing the base layer: that one "Already exists"
    two = make_image(src.store(), "app:two", layers=[base, file_tar("b", os.urandom(3000))])
    src("push", "app:two", f"{repo}:two", env=regenv)
    lines = dst("pull", f"{repo}:two", env=regenv).stdout.splitlines()
    assert f"{two.layers[0].digest.short}: Already exists" in lines
    assert f"{two.layers[1].digest.short}: Pull complete" in lines


# -- wrong password --------------------------------------------------------------------------------
def test_a_wrong_password_says_so(pybuild: Any, basic_registry: Registry,
                                  regenv: dict[str, str]) -> None:
    addr = basic_registry.addr
    r = pybuild("login", "-u", "alice", "--password-stdin", addr, input="wrong\n", env=regenv,
                check=False)
    assert r.returncode == 1
    assert r.stderr == f"Error: unauthorized: incorrect username or password for {addr}\n"
    # stored but wrong credentials (a changed password): pull and push say the same
    config = Path(regenv["DOCKER_CONFIG"])
    config.mkdir()
    auth = base64.b64encode(b"alice:" + BASIC_USERS["bob"].encode()).decode()
    (config / "config.json").write_text(json.dumps({"auths": {addr: {"auth": auth}}}))
    make_image(pybuild.store(), "app:1")
    for args in (["push", "app:1", f"{addr}/{unique_repo()}:1"], ["pull", f"{addr}/nothing:1"]):
        r = pybuild(*args, env=regenv, check=False)
        assert r.returncode == 1
        assert r.stderr.endswith(f"Error: unauthorized: incorrect username or password for {addr}\n"), r.stderr
        assert "pybuild login" not in r.stderr


def test_login_server_addresses_are_normalised_by_the_library() -> None:
    from registry.auth import login_host, server_domain
    from registry.errors import InvalidReference

    assert server_domain(None) == "docker.io"
    assert server_domain("https://index.docker.io/v1/") == "docker.io"
    assert server_domain("registry-1.docker.io") == "docker.io"
    assert server_domain("http://127.0.0.1:5000/v2/") == "127.0.0.1:5000"
    assert login_host("docker.io") == "registry-1.docker.io" and login_host("r.example:5000") == "r.example:5000"
    with pytest.raises(InvalidReference, match="invalid registry address 'Bad Host!'"):
        server_domain("Bad Host!")


# -- Ctrl-C ------------------------------------------------------------------------------------------
class Interrupted:
    """``pybuild ARGS`` in its own process group, its output read as it comes; ``ctrl_c()``
    sends SIGINT to the whole group, as a terminal does."""

    def __init__(self, root: Path, *args: str, env: dict[str, str] | None = None) -> None:
        environ = {k: v for k, v in os.environ.items() if k != "PYBUILD_ROOT"} | (env or {})
        environ["PYTHONFAULTHANDLER"] = "1"  # a hang shows every thread's stack (SIGABRT)
        self.proc = subprocess.Popen([PYBUILD, "--root", str(root), *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=environ, start_new_session=True)
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self._readers = [threading.Thread(target=self._read, args=(f, sink), daemon=True)
                         for f, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self._readers:
            t.start()

    @staticmethod
    def _read(f: Any, sink: list[bytes]) -> None:
        for line in iter(f.readline, b""):
            sink.append(line)

    def text(self) -> tuple[str, str]:
        return b"".join(self.out).decode(), b"".join(self.err).decode()

    def wait_for(self, cond: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if self.proc.poll() is not None:
                raise AssertionError(f"pybuild ended early ({self.proc.returncode}): {self.text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out: {self.text()}")
            time.sleep(0.02)

    def ctrl_c(self) -> tuple[int, str, str]:
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGABRT)
            time.sleep(1)
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            for t in self._readers:
                t.join(10)
            raise AssertionError(f"pybuild did not end after Ctrl-C: {self.text()}") from None
        for t in self._readers:
            t.join(10)
        return (code, *self.text())

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture()
def interrupted() -> Iterator[Callable[..., Interrupted]]:
    made: list[Interrupted] = []

    def start(root: Path, *args: str, env: dict[str, str] | None = None) -> Interrupted:
        made.append(Interrupted(root, *args, env=env))
        return made[-1]

    yield start
    for p in made:
        p.close()


def _processes_with(marker: str) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if marker.encode() in (p / "cmdline").read_bytes():
                    pids.append(int(p.name))
            except OSError:
                continue
    return pids


def _mounts_under(root: Path) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(root) in line]


def _cancelled(code: int, err: str) -> None:
    assert code == 130, err
    assert err.splitlines()[-1] == "cancelled", err
    assert "supervisor" not in err and "Traceback" not in err and "Aborted" not in err, err


def test_ctrl_c_during_a_build_step_cancels_cleanly(busybox: Any, tmp_path: Path,
                                                    interrupted: Callable[..., Interrupted]) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo step-started && sleep 4321\n")
    p = interrupted(busybox.root, "build", "--progress", "plain", "-t", "never", str(ctx))
    p.wait_for(lambda: "step-started" in p.text()[1] and bool(_processes_with("4321")))
    code, _, err = p.ctrl_c()
    _cancelled(code, err)
    assert _processes_with("4321") == []
    assert _mounts_under(busybox.root) == []
    assert busybox("images", "-q", "never").stdout == ""


def test_ctrl_c_to_an_attached_run_is_forwarded_to_the_container(
        busybox: Any, interrupted: Callable[..., Interrupted]) -> None:
    """As Docker's ``run`` (no ``-t``): the signal goes to the container, and ``run`` exits with
    the container's status; the record is ``exited``, nothing of it stays on the host."""
    script = 'trap "echo got-int; exit 3" INT; echo ready; while true; do sleep 0.05; done'
    p = interrupted(busybox.root, "run", "--name", "trapper", "busybox", "sh", "-c", script)
    p.wait_for(lambda: "ready" in p.text()[0])
    code, out, err = p.ctrl_c()
    assert (code, out, err) == (3, "ready\ngot-int\n", "")
    state = json.loads(busybox("inspect", "--format", "{{json .State}}", "trapper").stdout)
    assert state["Status"] == "exited" and state["ExitCode"] == 3 and state["Pid"] == 0
    cid = busybox("ps", "-aq", "--no-trunc").stdout.strip()
    assert _processes_with(cid) == [] and [m for m in _mounts_under(busybox.root) if cid in m] == []
    busybox("rm", "trapper")


def test_ctrl_c_during_pull_and_push_cancels_cleanly(
        pybuild_factory: Callable[[], Any], plain_registry: Registry, fault_proxy: FaultProxy,
        regenv: dict[str, str], interrupted: Callable[..., Interrupted]) -> None:
    src, dst = pybuild_factory(), pybuild_factory()
    make_image(src.store(), "big:1", layers=[file_tar("big", os.urandom(3_000_000))])
    repo = f"{plain_registry.addr}/{unique_repo()}"
    src("push", "-q", "big:1", f"{repo}:1", env=regenv)
    slow_repo = f"{fault_proxy.addr}/{Reference.parse(repo).path}"

    # pull: the big layer comes at 16 KiB every 50 ms
    slow = Fault("GET", r"/blobs/sha256:", "slow", after=16384, times=10)
    fault_proxy.add(slow)
    p = interrupted(dst.root, "pull", f"{slow_repo}:1", env=regenv)
    p.wait_for(lambda: slow.hits >= 1 and "Pulling fs layer" in p.text()[0])
    code, _, err = p.ctrl_c()
    _cancelled(code, err)
    assert dst("images", "-q").stdout == ""
    assert list((dst.root / "store" / "ingest").glob("blob-*")) == []

    # push: a new layer's upload goes out at 16 KiB every 50 ms
    make_image(src.store(), "big:2", layers=[file_tar("big", os.urandom(3_000_000))])
    fault_proxy.clear()
    slow = Fault(None, r"/blobs/uploads/", "slow", after=16384, times=10)
    fault_proxy.add(slow)
    p = interrupted(src.root, "push", "big:2", f"{slow_repo}:2", env=regenv)
    p.wait_for(lambda: slow.hits >= 2 and "Preparing" in p.text()[0])
    code, _, err = p.ctrl_c()
    _cancelled(code, err)
    tags = src("tags", repo, env=regenv).stdout.split()
    assert tags == ["1"]  # the cancelled push wrote no manifest
