"""More of Docker 20.10's behaviour (BuildKit with ``DOCKER_BUILDKIT=1``, and its engine) found
while judging issue 20, each checked against the private ``dockerd`` on this host: what a
build records (``WorkingDir``, the mount points left in a RUN layer, empty layers), what the
Dockerfile front end refuses, and what ``create``, ``network`` and ``images`` show.

The builds are compared as in ``test_fidelity_judges`` (flattened trees, config, history).
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_fidelity_judges import ETC, _load_busybox, judge
from test_ssh_mount import Agent

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "registry"))
from registry_server import plain_registry, registry_tmp  # noqa: E402,F401 - fixtures


# -- f. the none network's driver ----------------------------------------------------------------
def test_none_network_driver_is_null(pybuild: Any, dockerd: Any) -> None:
    """dockerd names the driver of its ``none`` network ``null`` (``network ls``, ``inspect``,
    ``--filter driver=``), and refuses a second network of that driver in its words."""
    fmt = "{{.Name}} {{.Driver}} {{.Scope}}"
    theirs = dockerd.docker("network", "ls", "--format", fmt).stdout.decode().splitlines()
    mine = pybuild("network", "ls", "--format", fmt).stdout.splitlines()
    assert "none null local" in theirs and "host host local" in theirs
    assert [ln for ln in mine if not ln.startswith("bridge ")] == [
        ln for ln in theirs if not ln.startswith("bridge ")]
    assert (pybuild("network", "inspect", "-f", "{{.Driver}}", "none").stdout
            == dockerd.docker("network", "inspect", "-f", "{{.Driver}}", "none").stdout.decode())
    fmt = "{{.Name}}"
    assert (pybuild("network", "ls", "--filter", "driver=null", "--format", fmt).stdout
            == dockerd.docker("network", "ls", "--filter", "driver=null", "--format", fmt).stdout.decode()
            == "none\n")
    for driver in ("null", "host"):
        r = dockerd.docker("network", "create", "-d", driver, "again", check=False)
        assert r.returncode != 0
        want = f'only one instance of "{driver}" network is allowed'
        assert want in r.stderr.decode()
        r2 = pybuild("network", "create", "-d", driver, "again", check=False)
        assert r2.returncode != 0 and want in r2.stderr, r2.stderr


# -- e. -p with --network none ------------------------------------------------------------------------
def test_publish_with_network_none_is_kept_and_not_published(busybox: Any, bt: Any, dockerd: Any,
                                                             tmp_path: Path) -> None:
    """dockerd 20.10 takes ``-p``/``-P`` with ``--network none``: HostConfig keeps the
    bindings (and ``PublishAllPorts``), ``Config.ExposedPorts`` the ports, while
    ``NetworkSettings.Ports`` stays empty, created or after a run, and ``port`` prints nothing."""
    _load_busybox(dockerd, busybox, bt, tmp_path)
    fmt = ("{{json .HostConfig.PortBindings}} {{json .HostConfig.PublishAllPorts}} "
           "{{json .NetworkSettings.Ports}} {{json .Config.ExposedPorts}}")
    args = ("-p", "80", "-p", "127.0.0.1:8080:81/udp", "-P", "--network", "none", "busybox", "true")
    seen = []
    for run in (lambda *a: dockerd.docker(*a).stdout.decode(), lambda *a: busybox(*a).stdout):
        cid = run("create", *args).strip()
        try:
            created = run("inspect", "-f", fmt, cid)
            run("start", "-a", cid)
            seen.append((created, run("inspect", "-f", fmt, cid), run("port", cid),
                         run("ps", "-a", "--filter", f"id={cid}", "--format", "{{.Ports}}|")))
        finally:
            run("rm", "-f", cid)
    assert seen[0] == seen[1]
    assert seen[1][0].split()[2] == "{}" and '"81/udp":[{"HostIp":"127.0.0.1","HostPort":"8080"}]' in seen[1][0]
    assert (busybox("run", "--rm", "-p", "90", "--network", "none", "busybox", "echo", "ran").stdout
            == dockerd.docker("run", "--rm", "-p", "90", "--network", "none", "busybox", "echo", "ran").stdout.decode())


# -- d. shell-form COPY of a quoted name with a space -------------------------------------------------
def test_shell_form_copy_of_a_quoted_name_is_refused(busybox: Any, bt: Any, dockerd: Any,
                                                     tmp_path: Path) -> None:
    """``COPY "a b" /x/``: the shell form splits on the space before quotes are read, so
    BuildKit 20.10 fails on ``"a`` with its words; so do we, naming the file and line, and
    the store is left as it was."""
    _load_busybox(dockerd, busybox, bt, tmp_path)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a b").write_text("ab\n")
    (ctx / "Dockerfile").write_text('FROM busybox\nCOPY "a b" /x/\n')
    want = 'failed to process "\\"a": unexpected end of statement while looking for matching double-quote'
    r = dockerd.docker("build", "--network", "none", "-t", "quoted:1", str(ctx),
                       env={"DOCKER_BUILDKIT": "1"}, check=False, timeout=180)
    assert r.returncode != 0 and want in r.stderr.decode(errors="replace")
    before = sorted(p.name for p in (busybox.root / "store").rglob("*"))
    res, _ = bt.build(busybox, ctx, "-t", "quoted:1", check=False)
    assert res.returncode == 1
    first = [line for line in res.stderr.splitlines() if not line.startswith("{")][0]
    assert first.endswith(f"Dockerfile:2: {want}"), res.stderr
    assert sorted(p.name for p in (busybox.root / "store").rglob("*")) == before


# -- a. WorkingDir of a stage FROM scratch ---------------------------------------------------------------
@pytest.mark.parametrize("dockerfile, workdir", [
    ("FROM scratch\nCOPY f /f\n", "/"),
    ("FROM scratch AS s\nENV P=$PATH\nFROM s\nWORKDIR rel\nCOPY f .\n", "/rel"),
    ("FROM busybox\nCOPY f /f\n", None),
    ("FROM busybox\nWORKDIR /w\nWORKDIR x\nCOPY f .\n", "/w/x"),
])
def test_workdir_recorded_as_buildkit_does(busybox: Any, bt: Any, dockerd: Any, tmp_path: Path,
                                           dockerfile: str, workdir: str | None) -> None:
    """BuildKit starts a stage FROM scratch from its empty image, ``Env`` PATH and
    ``WorkingDir: "/"`` (kept by a stage FROM it, a relative WORKDIR joined to it); FROM an
    image without a WorkingDir records none, as that image; WORKDIR sets it."""
    theirs, mine = judge(busybox, bt, dockerd, tmp_path, dockerfile, files={"f": "f\n"})
    for built in (theirs, mine):
        assert built.config["config"].get("WorkingDir") == workdir
        assert built.config["config"]["Env"][0].startswith("PATH=")


# -- b. the mount points of runc's own mounts and of file mounts ------------------------------------------
@pytest.fixture
def ssh_agent() -> Iterator[Agent]:
    a = Agent()
    yield a
    a.stop()


def _mount_judge(busybox: Any, bt: Any, dockerd: Any, tmp: Path, dockerfile: str,
                 args: tuple[str, ...], new: set[str]) -> None:
    start = int(time.time()) - 5
    theirs, mine = judge(busybox, bt, dockerd, tmp, dockerfile, files={"file": "file\n"}, args=args)
    assert mine.nonempty_layers() == theirs.nonempty_layers()
    for built in (theirs, mine):
        for layer in built.layers[1:]:
            for m in layer:
                if m.name in new:
                    assert m.mtime >= start, (m.name, m.mtime)


def test_run_layers_hold_the_stub_directories(busybox: Any, bt: Any, dockerd: Any, ssh_agent: Agent,
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On an image without ``/etc/hosts`` and ``/etc/resolv.conf`` (our busybox), BuildKit 20.10
    has ``/etc`` in every RUN layer (runc made the binds' stub files there, its cleaner removed
    them: the directory stays, with a new mtime); a file mount (secret, ssh socket, file bind)
    leaves its directory the same way, copied up with its owner and mode, its missing parents
    0755 root. Entry by entry (mode and owner), layer by layer."""
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("SSH_AUTH_SOCK", ssh_agent.sock)
    _mount_judge(busybox, bt, dockerd, tmp_path, "FROM busybox\n" + (
        "RUN true\nRUN touch /x\n"
        "RUN --mount=type=secret,id=s,target=/var/www/sec true\n"
        "RUN --mount=type=secret,id=s true\n"
        "RUN --mount=type=bind,source=file,target=/home/app/file true\n"
        "RUN --mount=type=ssh true\n"
        "RUN --mount=type=ssh,target=/tmp/agent.sock true\n"
        "RUN --mount=type=ssh,target=/tmp/sshdir/agent.sock true\n"
        "RUN --mount=type=secret,id=s,target=/tmp/secdir/sec true\n"),
        ("--secret", f"id=s,src={secret}", "--ssh", "default"),
        {"etc", "var/www", "run", "run/secrets", "run/buildkit", "home/app", "tmp", "tmp/sshdir"})


def test_run_layers_hold_runc_mount_points_of_a_bare_image(busybox: Any, bt: Any, dockerd: Any,
                                                           tmp_path: Path) -> None:
    """An image with no ``/dev``, ``/proc``, ``/sys`` or ``/etc``: the first RUN layer holds all
    four (0755 root); once ``/etc/hosts`` and ``/etc/resolv.conf`` are there a RUN changes
    nothing (nor does a mount on an existing file or over ``/etc``), and a secret's stub
    copies up ``/etc`` with the owner and mode an earlier step gave it."""
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret\n")
    _mount_judge(busybox, bt, dockerd, tmp_path, "FROM busybox AS b\nFROM scratch\n" + (
        "COPY --from=b /bin /bin\nRUN true\nCOPY hosts /etc/hosts\nRUN true\n"
        "COPY resolv.conf /etc/resolv.conf\nRUN true\n"
        "RUN --mount=type=secret,id=s,target=/etc/hosts true\n"
        "RUN --mount=type=tmpfs,target=/etc true\n"
        "RUN chmod 700 /etc && chown 3:4 /etc\n"
        "RUN --mount=type=secret,id=s,target=/etc/sec2 true\n"
        "RUN ls /etc > /ls\n"),
        ("--secret", f"id=s,src={secret}"), {"dev", "etc", "proc", "sys"})


# -- c. a step that changed nothing keeps an empty layer --------------------------------------------------
EMPTY_DIFF_ID = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"


def test_a_step_that_changed_nothing_keeps_an_empty_layer(busybox: Any, bt: Any, dockerd: Any,
                                                          tmp_path: Path) -> None:
    """BuildKit 20.10 exports a layer for every RUN, COPY and WORKDIR, the empty tar (1024
    zero bytes) for one that changed nothing, with no ``empty_layer`` in its history entry;
    ``WORKDIR /`` makes no op, so no layer (``empty_layer: true``). ``docker save`` of its
    image: the same layer count, diff_ids where empty, and history flags as ours; a cached
    rebuild gives the same image."""
    theirs, mine = judge(busybox, bt, dockerd, tmp_path, "FROM busybox\n" + ETC + (
        "RUN true\nWORKDIR /etc\nWORKDIR /\nWORKDIR /neww\nCOPY emptydir /tmp/\n"
        "RUN --mount=type=tmpfs,target=/tmp true\nRUN echo > /f\nRUN true\nENV A=1\n"),
        files={"emptydir/.keep": ""}, args=())
    assert mine.nonempty_layers() == theirs.nonempty_layers()

    def shape(b: Any) -> tuple[list[bool], list[str]]:
        ids = b.config["rootfs"]["diff_ids"]
        return ([bool(h.get("empty_layer")) for h in b.config["history"]],
                [i if i == EMPTY_DIFF_ID else "layer" for i in ids])
    assert shape(mine) == shape(theirs)
    assert shape(mine)[1].count(EMPTY_DIFF_ID) == 4  # RUN true twice, WORKDIR /etc, the tmpfs RUN
    tag = "fidelity:" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:12]  # judge's tag
    image_id = str(busybox.store().resolve(tag).id)
    bt.build(busybox, tmp_path / "ctx", "-t", "again:1")
    assert str(busybox.store().resolve("again:1").id) == image_id


# -- g. repo digests only for pulled or pushed images ----------------------------------------------------
def test_repo_digests_only_for_pulled_or_pushed_images(busybox: Any, bt: Any, dockerd: Any,
                                                       pybuild_factory: Any, tmp_path: Path,
                                                       request: pytest.FixtureRequest) -> None:
    """Docker lists a repo digest (``images --digests``, ``{{.Digest}}``, ``RepoDigests``) only
    for an image it pulled or pushed: a loaded one shows ``<none>`` and ``[]``, and so does a
    built one. Judged on a load; the private dockerd cannot reach our registry (its network
    namespace has only ``lo``), so pull and push are checked on ours as Docker documents them:
    the pushed tag's row gets the digest, another tag of the same image not."""
    saved = tmp_path / "busybox.tar"
    busybox("save", "-o", str(saved), "busybox:latest")
    dockerd.docker("load", "-i", str(saved))
    loaded = pybuild_factory()
    loaded("load", "-i", str(saved))
    fmt = "{{.Repository}}:{{.Tag}} {{.Digest}}"
    theirs = dockerd.docker("images", "--format", fmt, "busybox").stdout.decode()
    assert theirs == "busybox:latest <none>\n"
    assert loaded("images", "--format", fmt, "busybox").stdout == theirs
    digests = "{{json .RepoDigests}}"
    assert (loaded("image", "inspect", "-f", digests, "busybox").stdout
            == dockerd.docker("image", "inspect", "-f", digests, "busybox").stdout.decode() == "[]\n")
    assert "<none>" in loaded("images", "--digests").stdout.splitlines()[1]

    reg = request.getfixturevalue("plain_registry")
    env = {"DOCKER_CONFIG": str(tmp_path / "docker-config"), "PYBUILD_CERTS_D": str(tmp_path / "certs.d")}
    repo = f"{reg.addr}/fidelity-{tmp_path.name[-12:].replace('_', '-').lower()}"
    loaded("tag", "busybox", f"{repo}:1")
    loaded("push", f"{repo}:1", env=env)
    digest = str(loaded.store().lookup(f"{repo}:1").descriptor.digest)
    rows = dict(line.split(" ", 1) for line in loaded("images", "--format", fmt).stdout.splitlines())
    assert rows == {f"{repo}:1": digest, "busybox:latest": "<none>"}
    assert loaded("image", "inspect", "-f", digests, "busybox").stdout == f'["{repo}@{digest}"]\n'
    fresh = pybuild_factory()
    fresh("pull", f"{repo}:1", env=env)
    assert fresh("images", "--format", fmt).stdout == f"{repo}:1 {digest}\n"
    assert fresh("image", "inspect", "-f", digests, f"{repo}:1").stdout == f'["{repo}@{digest}"]\n'
