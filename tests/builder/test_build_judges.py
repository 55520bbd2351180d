"""Independent judges of what ``pybuild build`` makes: a real Docker engine (``docker load`` +
``docker run``), ``umoci unpack`` + ``runc run``, and our own sandbox must print the same."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from test_build_contexts import CASES_DIR, build_case

RUN_CASES = sorted(p.name for p in CASES_DIR.iterdir()
                   if (p / "expected.json").exists() and "run" in json.loads((p / "expected.json").read_text()))


def own_run(pyb: Any, ref: str, tmp: Path) -> str:
    """Entrypoint + Cmd of *ref* run by our execution core, as ``pybuild run`` does."""
    from builder.core.rootfs import LayerCache, image_layers, prepare_root
    from builder.core.sandbox.executor import Executor
    from builder.core.sandbox.spec import Process, Spec

    state = pyb.state
    store = pyb.store()
    img = store.resolve(ref)
    cfg = img.config.config
    dirs = image_layers(store, img, LayerCache(state))
    root = prepare_root(dirs, tmp / "container")
    out: list[bytes] = []
    proc = Process(args=tuple((cfg.get("Entrypoint") or []) + (cfg.get("Cmd") or [])),
                   env=tuple(cfg.get("Env") or ()), cwd=cfg.get("WorkingDir") or "/",
                   user=cfg.get("User") or "")
    try:
        res = Executor(state).run(Spec(process=proc, root=root), stdout=out.append, stderr=out.append)
    finally:
        shutil.rmtree(tmp / "container", ignore_errors=True)
    assert res.exit_status == 0, b"".join(out)
    return b"".join(out).decode()


def runc_run(pyb: Any, ref: str, tmp: Path) -> str:
    """``-o type=oci`` archive → ``umoci unpack`` → ``runc run``."""
    archive = tmp / "oci.tar"
    layout = tmp / "layout"
    bundle = tmp / "bundle"
    runc_root = tmp / "runc-root"
    with tarfile.open(archive) as tf:
        tf.extractall(layout)
    # the name ``-o type=oci`` gave the image in index.json (as ``pybuild save`` names it)
    index = json.loads((layout / "index.json").read_text())
    names = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert any(ref.endswith(n) for n in names), names
    tag = names[0]
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)], check=True,
                   capture_output=True)
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["process"]["terminal"] = False
    (bundle / "config.json").write_text(json.dumps(cfg))
    cid = f"pbjudge-{tmp.name[-12:]}"
    try:
        r = subprocess.run(["runc", "--root", str(runc_root), "run", "-b", str(bundle), cid],
                           capture_output=True, timeout=60)
    finally:
        subprocess.run(["runc", "--root", str(runc_root), "delete", "-f", cid], capture_output=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.decode()


@pytest.mark.parametrize("case", RUN_CASES)
def test_docker_runc_and_own_run_agree(case: str, busybox: Any, bt: Any, dockerd: Any, tmp_path: Path) -> None:
    tag = f"judge-{case}:latest"
    archive = tmp_path / "docker.tar"
    ctx, expected, _ = build_case(busybox, bt, case, tmp_path, tag, "-o", f"type=docker,dest={archive}",
                                  "-o", f"type=oci,dest={tmp_path / 'oci.tar'}")
    want = expected["run"]["stdout"]

    ours = own_run(busybox, tag, tmp_path)
    assert ours == want

    # the same image through Docker: load, run
    dockerd.docker("load", "-i", str(archive))
    try:
        r = dockerd.docker("run", "--rm", "--network", "none", tag)
        assert r.stdout.decode() == want
        # Docker sees the config we wrote
        info = json.loads(dockerd.docker("image", "inspect", tag).stdout)[0]["Config"]
        img = busybox.store().resolve(tag)
        assert info.get("Cmd") == img.config.config.get("Cmd")
        assert info.get("Env") == img.config.config.get("Env")
    finally:
        dockerd.docker("rmi", "-f", tag, check=False)

    # umoci + runc as the third judge
    assert runc_run(busybox, tag, tmp_path) == want


def test_docker_sees_identical_layers(busybox: Any, bt: Any, dockerd: Any, tmp_path: Path) -> None:
    """Docker's own view of our layers: ``docker save`` gives back the same diff_ids."""
    ctx, expected = (CASES_DIR / "whiteout"), {}
    tag = "judge-layers:latest"
    archive = tmp_path / "d.tar"
    local = tmp_path / "ctx"
    shutil.copytree(ctx, local)
    bt.build(busybox, local, "-t", tag, "-o", f"type=docker,dest={archive}")
    dockerd.docker("load", "-i", str(archive))
    try:
        info = json.loads(dockerd.docker("image", "inspect", tag).stdout)[0]
        img = busybox.store().resolve(tag)
        assert info["RootFS"]["Layers"] == [str(d) for d in img.config.diff_ids]
        assert info["Id"] == str(img.id)
        # (Docker mounts its own /etc/hostname, so look at a path it does not touch)
        r = dockerd.docker("run", "--rm", "--network", "none", tag, "ls", "/stuff")
        assert r.stdout.decode() == "new\n"
    finally:
        dockerd.docker("rmi", "-f", tag, check=False)
    assert expected == {}


def test_config_and_history_match_buildkit(busybox: Any, bt: Any, dockerd: Any, tmp_path: Path) -> None:
    """The same Dockerfile through Docker's BuildKit and through pybuild: identical config
    and identical ``created_by`` history lines."""
    import os

    ctx = tmp_path / "ctx"
    shutil.copytree(CASES_DIR / "config", ctx)
    (ctx / "expected.json").unlink()
    (ctx / "f.txt").write_text("f\n")
    with open(ctx / "Dockerfile", "a") as f:
        f.write("ARG A=1\nRUN echo $A > /tmp/a\nCOPY f.txt /tmp/x/\nADD f.txt /tmp/y\n"
                "WORKDIR /tmp/w2\nCOPY --chown=app f.txt .\nHEALTHCHECK NONE\n")
    base = tmp_path / "base.tar"
    export = tmp_path / "export"
    export.mkdir()
    (export / "Dockerfile").write_text("FROM busybox\n")
    bt.build(busybox, export, "-t", "busybox:latest", "-o", f"type=docker,dest={base}")
    dockerd.docker("load", "-i", str(base))
    r = dockerd.docker("build", "--network", "none", "-t", "parity:1", str(ctx),
                       env={"DOCKER_BUILDKIT": "1"})
    assert r.returncode == 0
    save = tmp_path / "docker-save.tar"
    dockerd.docker("save", "-o", str(save), "parity:1")
    with tarfile.open(save) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
        theirs = json.load(tf.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
    bt.build(busybox, ctx, "-t", "parity:1")
    ours = busybox.store().resolve("parity:1").config.data

    def created(cfg: dict[str, Any]) -> list[str]:
        return [h.get("created_by", "") for h in cfg["history"][1:]]

    assert created(ours) == created(theirs)
    keys = ("Env", "Cmd", "Entrypoint", "ExposedPorts", "Volumes", "WorkingDir", "User", "Labels",
            "StopSignal", "Healthcheck", "Shell", "OnBuild")
    assert {k: ours["config"].get(k) for k in keys} == {k: theirs["config"].get(k) for k in keys}
    assert ours.get("author") == theirs.get("author")
    assert os.path.exists(save)


def _load_busybox_into(dockerd: Any, busybox: Any, bt: Any, tmp_path: Path) -> None:
    base = tmp_path / "base.tar"
    export = tmp_path / "export"
    export.mkdir()
    (export / "Dockerfile").write_text("FROM busybox\n")
    bt.build(busybox, export, "-t", "busybox:latest", "-o", f"type=docker,dest={base}")
    dockerd.docker("load", "-i", str(base))


STEPS_DOCKERFILE = (
    "FROM busybox AS base\nARG X=val\nARG Y\nENV E=env1\nLABEL a=b\n"
    "WORKDIR /app/$X\nRUN echo \"$X\" 'q $X' $NOPE > /tmp/x && ln /tmp/x /tmp/h\n"
    "COPY f.txt big ./\nENV Z=1\nRUN true\nWORKDIR /app/$X\nworkdir sub\nCMD [\"sh\"]\n"
    "FROM base\nRUN echo two\n"
    "FROM scratch AS s\nCOPY --from=base /tmp/x /x\n"
    "FROM busybox\nCOPY --from=s /x /x\n" + "".join(f"RUN echo {i} > /{i}\n" for i in range(9))
)


def _buildkit_steps(stderr: str) -> list[str]:
    """The step names of ``docker build --progress=plain`` (``#n [stage i/N] NAME``), once each."""
    import re

    seen: dict[str, None] = {}
    for line in stderr.splitlines():
        m = re.match(r"#\d+ (\[(?!internal\]).*)$", line)
        if m:
            seen.setdefault(m.group(1))
    return list(seen)


def _stage(step: str) -> tuple[str, str]:
    """``[stage-3  1/11] FROM x`` → ``("stage-3", "11")``."""
    import re

    m = re.match(r"\[(\S+)\s+\d+/(\d+)\]", step)
    assert m, step
    return m.group(1), m.group(2)


def test_steps_sizes_and_history_match_buildkit(busybox: Any, bt: Any, dockerd: Any, tmp_path: Path) -> None:
    """One Dockerfile through BuildKit and through pybuild: the same step lines
    (``[base 2/7] WORKDIR /app/val``, ``[stage-3 10/11] RUN ...``), the same history
    ``created_by`` (``RUN |2 X=over Y= ...``), the same SIZE per history line and for the
    image, as ``docker history``/``docker images`` show them."""
    import time

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f.txt").write_text("hello world\n")
    (ctx / "big").write_bytes(b"x" * 1234567)
    (ctx / "Dockerfile").write_text(STEPS_DOCKERFILE)
    _load_busybox_into(dockerd, busybox, bt, tmp_path)
    shown: list[str] = []
    for target, tag in (("base", "steps-base:1"), ("", "steps:1")):
        extra = ("--target", target) if target else ()
        r = dockerd.docker("build", "--progress=plain", "--network", "none", "--build-arg", "X=over",
                           "-t", tag, *extra, str(ctx), env={"DOCKER_BUILDKIT": "1"})
        theirs_steps = _buildkit_steps(r.stderr.decode())
        t0 = int(time.time())
        _, events = bt.build(busybox, ctx, "--build-arg", "X=over", "-t", tag, *extra)
        ours_steps = list(dict.fromkeys(e["name"] for e in events if e["kind"] in ("start", "cached", "done")
                                        and e["name"]))
        # BuildKit does not build a stage the target does not need, nor do we. (A FROM vertex
        # BuildKit already showed in an earlier build of the same daemon may not be shown again:
        # the FROM lines it prints must be ours, and ours are checked by rule below.)
        def steps(names: list[str]) -> list[str]:
            return sorted(n for n in names if "] FROM " not in n)

        assert steps(ours_steps) == steps(theirs_steps), (ours_steps, theirs_steps)
        # Stages on the same base share one FROM vertex, shown once; which stage's name it gets
        # is BuildKit's pick and varies from run to run: its image must be one of ours, and its
        # name that of a stage we built
        our_froms = {n.split("] ", 1)[1] for n in ours_steps if "] FROM " in n}
        our_stages = {_stage(n) for n in ours_steps}
        for n in theirs_steps:
            if "] FROM " in n:
                assert n in ours_steps or (n.split("] ", 1)[1] in our_froms
                                           and _stage(n) in our_stages), (n, ours_steps)

        fmt = "{{.Size}}|{{.CreatedBy}}"
        theirs = dockerd.docker("history", "--no-trunc", "--format", fmt, tag).stdout.decode().splitlines()
        ours = busybox("history", "--no-trunc", "--format", fmt, tag).stdout.splitlines()
        assert ours == theirs
        size = "{{.Size}}"
        assert busybox("images", "--format", size, tag).stdout == \
            dockerd.docker("images", "--format", size, tag).stdout.decode()
        # every step this build added is dated now, metadata ones included (none from the base)
        img = busybox.store().resolve(tag)
        from datetime import datetime

        added = img.config.history[len(busybox.store().resolve("busybox:latest").config.history):]
        assert added
        for h in added:
            when = datetime.strptime(h["created"][:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
            assert when.timestamp() >= t0 - 1, h
        shown.extend(ours_steps)
    # the rules, spelled out: FROM an image is 1/N, FROM scratch or a stage is no step, metadata
    # instructions are not counted, numbers are padded to the width of N, WORKDIR is expanded
    for want in ("[base 1/7] FROM docker.io/library/busybox", "[base 2/7] WORKDIR /app/over",
                 "[base 7/7] WORKDIR sub", "[s 1/1] COPY --from=base /tmp/x /x",
                 "[stage-3  2/11] COPY --from=s /x /x", "[stage-3 11/11] RUN echo 8 > /8",
                 "[base 3/7] RUN echo \"over\" 'q $X' $NOPE > /tmp/x && ln /tmp/x /tmp/h"):
        assert want in shown, want
    created_by = [h.get("created_by") for h in busybox.store().resolve("steps-base:1").config.history]
    assert "ARG X=val" in created_by
    assert "RUN |2 X=over Y= /bin/sh -c true # buildkit" in created_by


def test_docker_sees_our_sizes(busybox: Any, bt: Any, dockerd: Any, tmp_path: Path) -> None:
    """Our image loaded into Docker: ``docker history`` and ``docker images`` give the sizes
    ``pybuild history``/``images`` give (symlinks and hard links counted as Docker does; an
    empty WORKDIR layer 0B)."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "big").write_bytes(b"y" * 2_345_678)
    (ctx / "Dockerfile").write_text(
        "FROM busybox\nWORKDIR /w\nRUN echo hi > /a && ln -s /a /l && ln /a /h && mkdir /d\n"
        "COPY big /w/\nRUN rm /w/big\n")
    archive = tmp_path / "ours.tar"
    bt.build(busybox, ctx, "-t", "sizes:1", "-o", f"type=docker,dest={archive}")
    dockerd.docker("load", "-i", str(archive))
    try:
        fmt = "{{.Size}}|{{.CreatedBy}}"
        theirs = dockerd.docker("history", "--no-trunc", "--format", fmt, "sizes:1").stdout.decode()
        ours = busybox("history", "--no-trunc", "--format", fmt, "sizes:1").stdout
        assert ours == theirs
        lines = ours.splitlines()
        assert lines[-2].startswith("0B|WORKDIR /w")
        assert lines[1].startswith("2.35MB|COPY big /w/")
        assert busybox("images", "--format", "{{.Size}}", "sizes:1").stdout == \
            dockerd.docker("images", "--format", "{{.Size}}", "sizes:1").stdout.decode()
        inspect = json.loads(busybox("image", "inspect", "sizes:1").stdout)[0]
        assert inspect["Size"] == json.loads(dockerd.docker("image", "inspect", "sizes:1").stdout)[0]["Size"]
    finally:
        dockerd.docker("rmi", "-f", "sizes:1", check=False)


# what a RUN step sees, printed by one step each (``==N`` first, so a difference names its probe)
RUN_PROBES = (
    "cat /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/net/ipv4/ping_group_range",
    "env | sort | grep -v HOSTNAME",
    "hostname; cat /etc/hosts; grep -v nameserver /etc/resolv.conf; true",
    "umask; pwd",
    "grep -E 'Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp:' /proc/self/status",
    "ulimit -a",
    # the root's options name each side's own layer paths; ours adds nodev (see sandbox/child.py)
    "awk '$2 == \"/\" {print $2, $3; next} {print $2, $3, $4}' /proc/self/mounts | sort",
    "ls -la /dev | awk '{print $1, $NF}' | sort",
    "cat /proc/self/oom_score_adj; ls -ld /tmp /root",
)
RUN_USERS = ("root", "app", "1000:50", "4242", "app:daemon")


def test_run_steps_see_what_buildkit_run_steps_see(busybox: Any, bt: Any, dockerd: Any,
                                                   tmp_path: Path) -> None:
    """A RUN step is not a ``docker run`` container. BuildKit leaves its network namespace at
    the kernel's ``ip_unprivileged_port_start``/``ping_group_range``, gives it only the groups
    the user is a member of (no primary group in ``groups=``) and its own ``/etc/hosts``; ours
    prints what BuildKit's RUN prints: environment, capabilities, seccomp, limits, mounts,
    devices, and ``id`` for every form of USER."""
    import re

    _load_busybox_into(dockerd, busybox, bt, tmp_path)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM busybox\n"
        + "".join(f"RUN echo '=={i}'; {p}\n" for i, p in enumerate(RUN_PROBES))
        + "".join(f"USER {u}\nRUN echo {u}: $(id)\n" for u in RUN_USERS))

    def printed(stderr: str) -> list[str]:
        return [m.group(1) for ln in stderr.splitlines() if (m := re.match(r"#\d+ \d+\.\d+ (.*)$", ln))]

    r = dockerd.docker("build", "--progress=plain", "--no-cache", "--network", "none", str(ctx),
                       env={"DOCKER_BUILDKIT": "1"})
    theirs = printed(r.stderr.decode())
    ours = printed(busybox("build", "--progress=plain", "--no-cache", "--network", "none",
                           str(ctx)).stderr)
    import difflib

    assert ours == theirs, "\n".join(difflib.unified_diff(theirs, ours, "buildkit", "pybuild",
                                                          lineterm="", n=1))
    assert theirs[1] == "1024"  # the kernel's default: BuildKit does not lower it for RUN
    assert "root: uid=0(root) gid=0(root)" in theirs
    assert "127.0.0.1\tlocalhost buildkitsandbox" in theirs
    # a container still has Docker's: the primary group listed, unprivileged ports from 0
    run = busybox("run", "--rm", "--network", "none", "-u", "app", "busybox", "sh", "-c",
                  "id; cat /proc/sys/net/ipv4/ip_unprivileged_port_start").stdout.splitlines()
    assert run == ["uid=1000(app) gid=1000(app) groups=50(staff),1000(app)", "0"]


def test_a_container_sees_what_a_docker_run_container_sees(busybox: Any, bt: Any, dockerd: Any,
                                                          tmp_path: Path) -> None:
    """``pybuild run`` against ``docker run`` of the same image: environment, capabilities
    (none inheritable), seccomp, no_new_privs, limits, mounts (masked files under the
    container's /dev/null, masked directories under an empty tmpfs), devices and ``id``."""
    import difflib

    _load_busybox_into(dockerd, busybox, bt, tmp_path)
    script = "; ".join(f"echo '=={i}'; {p}" for i, p in enumerate(RUN_PROBES[3:])) + "; id"
    args = ("--rm", "--network", "none", "busybox", "sh", "-c", script)
    theirs = dockerd.docker("run", *args).stdout.decode().splitlines()
    ours = busybox("run", *args).stdout.splitlines()
    assert ours == theirs, "\n".join(difflib.unified_diff(theirs, ours, "docker run", "pybuild run",
                                                          lineterm="", n=1))
    assert "CapInh:\t0000000000000000" in theirs and "NoNewPrivs:\t0" in theirs


def test_container_config_and_process_env_match_dockerd(busybox: Any, bt: Any, dockerd: Any,
                                                       tmp_path: Path) -> None:
    """``inspect``'s Config as dockerd records it (``-e`` entries first, then the image's ENV;
    no PATH/HOSTNAME/TERM of the process's own; anonymous volumes; attach flags of ``create``)
    and the environment its processes get (PATH, HOSTNAME, TERM replaced or followed by the
    Env; ``exec -e`` on top)."""
    _load_busybox_into(dockerd, busybox, bt, tmp_path)
    ctx = tmp_path / "envimg"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nENV B=2 A=0\n")
    archive = tmp_path / "envimg.tar"
    bt.build(busybox, ctx, "-t", "envimg:latest", "-o", f"type=docker,dest={archive}")
    dockerd.docker("load", "-i", str(archive))
    cases = {
        "c1": ("create", "--name", "c1", "-e", "A=1", "-e", "C=3", "-v", "/data", "-h", "hh",
               "--network", "none", "envimg", "sleep", "100"),
        "c2": ("create", "--name", "c2", "-t", "-i", "--network", "none", "busybox", "sh"),
        "c3": ("run", "-d", "--name", "c3", "--network", "none", "envimg", "sleep", "100"),
    }
    keys = ("Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr", "ExposedPorts",
            "Tty", "OpenStdin", "StdinOnce", "Env", "Cmd", "Image", "Volumes", "WorkingDir",
            "Entrypoint", "Labels")
    execs = (("c1", "cat", "/proc/1/environ"), ("c3", "env"), ("-e", "PATH=/x:/usr/bin", "-e", "Z=9", "c3", "env"),
             ("-t", "c3", "env"))

    def observe(cli: Any) -> tuple[dict[str, Any], list[list[str]]]:
        configs = {}
        for name, args in cases.items():
            cli(*args)
            info = json.loads(cli("inspect", name))[0]
            configs[name] = {k: info["Config"].get(k) for k in keys} | {
                "Hostname given": info["Config"]["Hostname"] == "hh" if name == "c1" else None}
        cli("start", "c1")
        short = json.loads(cli("inspect", "c3"))[0]["Id"][:12]  # c3's hostname
        envs = [cli("exec", *e).replace("\0", "\n").replace("\r", "").replace(short, "<id>").split()
                for e in execs]
        return configs, envs

    def theirs_cli(*args: str) -> str:
        return str(dockerd.docker(*args).stdout.decode())

    def ours_cli(*args: str) -> str:
        return str(busybox(*args).stdout)

    def judge() -> tuple[dict[str, Any], list[list[str]]]:
        try:
            return observe(theirs_cli)
        finally:
            dockerd.docker("rm", "-f", *cases, check=False)

    theirs = judge()
    if theirs[0]["c1"]["Env"][:2] == ["C=3", "A=1"]:
        # dockerd 20.10 itself now and then swaps the `-e` entries (measured: 1 create in 30
        # gives C=3 before A=1, the others keep the command line's order); the judge gets a
        # second round, ours gets one and must keep the order given
        theirs = judge()
    try:
        ours = observe(ours_cli)
    finally:
        busybox("rm", "-f", *cases, check=False)
    assert ours == theirs
    configs, envs = theirs
    assert configs["c1"]["Env"] == ["A=1", "C=3", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "B=2"]
    assert envs[0][:4] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=hh", "A=1", "C=3"]
