"""``RUN --mount=type=ssh`` with ``build --ssh``: a test ``ssh-agent`` holding a generated key,
forwarded into the step (``ssh-add -l`` inside the RUN lists it), key files loaded into a private
agent of the build, BuildKit's defaults (target ``/run/buildkit/ssh_agent.N``, ``SSH_AUTH_SOCK``,
0600 root), ``id``/``target``/``mode``/``uid``/``gid``/``required``; bad input; and Docker's
BuildKit building the same context as the judge.

The image gets the host's ``ssh-add`` and the libraries ``ldd`` names, copied from the context.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


class Agent:
    """``ssh-agent -D`` on a short socket path, holding one generated ed25519 key."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pbt-agent-", dir="/tmp"))
        self.key = self.dir / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pybuild-test-key",
                        "-f", str(self.key)], check=True, capture_output=True)
        self.sock = str(self.dir / "agent.sock")
        self.proc = subprocess.Popen(["ssh-agent", "-D", "-a", self.sock], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        for _ in range(500):  # bound before it listens: wait for ssh-add -l to get an answer
            r = subprocess.run(["ssh-add", "-l"], env={**os.environ, "SSH_AUTH_SOCK": self.sock},
                               capture_output=True)
            if r.returncode in (0, 1):  # 1: no identities yet; 2: cannot connect
                break
            time.sleep(0.02)
        self.env = {**os.environ, "SSH_AUTH_SOCK": self.sock}
        subprocess.run(["ssh-add", "-q", str(self.key)], env=self.env, check=True, capture_output=True)
        self.listing = subprocess.run(["ssh-add", "-l"], env=self.env, check=True, capture_output=True,
                                      text=True).stdout

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def agent() -> Iterator[Agent]:
    a = Agent()
    yield a
    a.stop()
    assert a.proc.poll() is not None


def ssh_add_root(dest: Path) -> None:
    """``/usr/bin/ssh-add`` and the shared libraries it loads, at their paths under *dest*."""
    binary = shutil.which("ssh-add")
    assert binary
    files = [os.path.realpath(binary)]
    for line in subprocess.run(["ldd", binary], check=True, capture_output=True, text=True).stdout.splitlines():
        for word in line.split():
            if word.startswith("/"):
                files.append(word)
    for f in files:
        target = dest / f.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.realpath(f), target)
    (dest / "usr/bin").mkdir(parents=True, exist_ok=True)
    if not (dest / "usr/bin/ssh-add").exists():
        shutil.copy(binary, dest / "usr/bin/ssh-add")


def context(tmp_path: Path, body: str, name: str = "ctx") -> Path:
    ctx = tmp_path / name
    ctx.mkdir()
    ssh_add_root(ctx / "sshroot")
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY sshroot/ /\n" + body)
    return ctx


PROBE = ("RUN --mount=type=ssh sh -c 'echo \"$SSH_AUTH_SOCK\" > /sock; "
         "stat -c \"%a %u %g %F\" \"$SSH_AUTH_SOCK\" > /stat; ssh-add -l > /keys'\n"
         "RUN --mount=type=ssh,id=other,target=/tmp/agent,mode=0660,uid=1000,gid=50,required=true "
         "--mount=type=ssh,id=third "
         "sh -c 'echo \"$SSH_AUTH_SOCK\" > /sock2; ls /run/buildkit 2>&1 > /third; "
         "stat -c \"%a %u %g\" /tmp/agent > /stat2; SSH_AUTH_SOCK=/tmp/agent ssh-add -l > /keys2'\n")


def test_ssh_mount_forwards_the_agent(busybox: Any, bt: Any, agent: Agent, tmp_path: Path) -> None:
    """``--ssh default`` forwards ``$SSH_AUTH_SOCK``; ``--ssh other=KEY`` a private agent with
    the key file, stopped with the build; an optional mount whose id has no ``--ssh`` is left out."""
    ctx = context(tmp_path, PROBE)
    bt.build(busybox, ctx, "-t", "ssh:1", "--ssh", "default", "--ssh", f"other={agent.key}",
             env={"SSH_AUTH_SOCK": agent.sock})
    root = bt.rootfs(busybox, "ssh:1", tmp_path / "fs")
    assert (root / "keys").read_text() == agent.listing
    assert "pybuild-test-key" in agent.listing
    assert (root / "sock").read_text() == "/run/buildkit/ssh_agent.0\n"
    assert (root / "stat").read_text() == "600 0 0 socket\n"
    # a key file is held with no comment, as BuildKit's keyring holds it (judged below)
    assert (root / "keys2").read_text() == agent.listing.replace("pybuild-test-key", "")
    assert (root / "stat2").read_text() == "660 1000 50\n"
    # SSH_AUTH_SOCK is the first ssh mount's target
    assert (root / "sock2").read_text() == "/tmp/agent\n"
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "pb-ssh-" not in ps  # the build's private agent is stopped
    # nothing of the sockets in a layer
    names = [n for layer in bt.layer_names(busybox, "ssh:1") for n in layer]
    assert not any("ssh_agent" in n or n.startswith("tmp/agent") for n in names)


def test_ssh_bad_input(busybox: Any, bt: Any, agent: Agent, tmp_path: Path, store_listing: Any) -> None:
    """A required mount without its ``--ssh`` (BuildKit's words), ``--ssh default`` with no
    ``SSH_AUTH_SOCK``, a missing path, a file that is no key: one line, non-zero, nothing stored,
    no agent left running."""
    ctx = context(tmp_path, "RUN --mount=type=ssh,required=true ssh-add -l\n")
    # the COPY before the RUN is built (and stored) once: what fails must store nothing more
    (ctx / "Dockerfile.prep").write_text("FROM busybox\nCOPY sshroot/ /\n")
    bt.build(busybox, ctx, "-f", str(ctx / "Dockerfile.prep"))
    before = [p for p in store_listing(busybox.root / "store") if not p[0].startswith("ingest")]
    env_no_sock = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    notkey = tmp_path / "notkey"
    notkey.write_text("not a key\n")
    cases = [
        ((), 'Dockerfile:3: no SSH key "" forwarded from the client'),
        (("--ssh", "default"), "invalid empty ssh agent socket, make sure SSH_AUTH_SOCK is set"),
        (("--ssh", "default=/nonexistent/agent"), "--ssh default: /nonexistent/agent: no such file"),
        (("--ssh", f"default={notkey}"), f"--ssh default: cannot load key {notkey}"),
    ]
    for args, want in cases:
        r = busybox("build", *args, str(ctx), check=False, env=env_no_sock)
        assert r.returncode != 0, args
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("Error:")]
        assert len(errors) == 1 and want in errors[0], (want, r.stderr)
        assert "Traceback" not in r.stderr
    after = [p for p in store_listing(busybox.root / "store") if not p[0].startswith("ingest")]
    assert after == before
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "pb-ssh-" not in ps
    # an optional mount without its --ssh: the step runs without the socket
    ctx2 = context(tmp_path, "RUN --mount=type=ssh sh -c 'test ! -e \"$SSH_AUTH_SOCK\" && echo \"$SSH_AUTH_SOCK\" > /s'\n",
                   "ctx2")
    bt.build(busybox, ctx2, "-t", "nossh:1", env=env_no_sock)
    assert (bt.rootfs(busybox, "nossh:1", tmp_path / "fs2") / "s").read_text() == "/run/buildkit/ssh_agent.0\n"


def _load_busybox(dockerd: Any, busybox: Any, bt: Any, tmp_path: Path) -> None:
    base = tmp_path / "base.tar"
    export = tmp_path / "export"
    export.mkdir()
    (export / "Dockerfile").write_text("FROM busybox\n")
    bt.build(busybox, export, "-t", "busybox:latest", "-o", f"type=docker,dest={base}")
    dockerd.docker("load", "-i", str(base))


def _docker_files(dockerd: Any, ref: str, names: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    saved = dockerd.docker("save", ref).stdout
    with tarfile.open(fileobj=io.BytesIO(saved)) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        for layer in manifest[0]["Layers"]:
            data = outer.extractfile(layer).read()  # type: ignore[union-attr]
            with tarfile.open(fileobj=io.BytesIO(data)) as tf:
                for m in tf:
                    if m.name in names and m.isfile():
                        out[m.name] = tf.extractfile(m).read().decode()  # type: ignore[union-attr]
    return out


def test_judge_ssh_mount_matches_buildkit(busybox: Any, bt: Any, dockerd: Any, agent: Agent,
                                          tmp_path: Path) -> None:
    """Docker's BuildKit and pybuild, the same context and ``--ssh`` flags: the same files
    written by the steps (socket path, owner and mode, ``ssh-add -l``), the same layers' names;
    a required mount without ``--ssh`` fails on both sides with BuildKit's words."""
    _load_busybox(dockerd, busybox, bt, tmp_path)
    ctx = context(tmp_path, PROBE)
    env = {"DOCKER_BUILDKIT": "1", "SSH_AUTH_SOCK": agent.sock}
    dockerd.docker("build", "--network", "none", "-t", "sshjudge:1", "--ssh", "default",
                   "--ssh", f"other={agent.key}", str(ctx), env=env)
    bt.build(busybox, ctx, "-t", "sshjudge:1", "--network", "none", "--ssh", "default",
             "--ssh", f"other={agent.key}", env={"SSH_AUTH_SOCK": agent.sock})
    files = ["sock", "stat", "keys", "sock2", "third", "stat2", "keys2"]
    theirs = _docker_files(dockerd, "sshjudge:1", files)
    root = bt.rootfs(busybox, "sshjudge:1", tmp_path / "fs")
    ours = {n: (root / n).read_text() for n in files}
    assert ours == theirs
    assert theirs["keys"] == agent.listing
    # the RUN layers hold the same files, no socket among them. Directories are left out: the
    # mount points BuildKit leaves in a layer (parents of a socket's stub, ``/etc`` of its
    # hosts/resolv.conf stubs) are the execution core's matter (issue 20, case 5), not ssh's
    their_files = [sorted(m.name for m in tarfile.open(fileobj=io.BytesIO(b)) if not m.isdir())  # noqa: SIM115
                   for b in _docker_layers(dockerd, "sshjudge:1")]
    our_files = [sorted(n for n in layer if not n.endswith("/") and not (root / n).is_dir())
                 for layer in bt.layer_names(busybox, "sshjudge:1")]
    assert our_files[-2:] == their_files[-2:] == [["keys", "sock", "stat"],
                                                  ["keys2", "sock2", "stat2", "third"]]
    bad = context(tmp_path, "RUN --mount=type=ssh,required=true true\n", "bad")
    r = dockerd.docker("build", "--network", "none", str(bad), env={"DOCKER_BUILDKIT": "1"}, check=False)
    assert r.returncode != 0
    assert r.stderr.decode().splitlines()[-1] == 'no SSH key "" forwarded from the client'
    ours_r = busybox("build", "--network", "none", str(bad), check=False)
    assert ours_r.returncode != 0
    assert ours_r.stderr.splitlines()[-1] == 'Error: Dockerfile:3: no SSH key "" forwarded from the client'
    dockerd.docker("rmi", "-f", "sshjudge:1", check=False)


def _docker_layers(dockerd: Any, ref: str) -> list[bytes]:
    saved = dockerd.docker("save", ref).stdout
    with tarfile.open(fileobj=io.BytesIO(saved)) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        return [outer.extractfile(la).read() for la in manifest[0]["Layers"]]  # type: ignore[union-attr]


def test_ssh_mount_cache_key(busybox: Any, bt: Any, agent: Agent, tmp_path: Path) -> None:
    """The step's key sees the mount's id, target, owner and mode, never the agent's keys: the
    same step with another agent is CACHED, with another mode it runs again."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN --mount=type=ssh ls -l /run/buildkit > /l\n")
    _, ev = bt.build(busybox, ctx, "--ssh", "default", env={"SSH_AUTH_SOCK": agent.sock})
    assert len(bt.executed(ev)) == 1
    other = Agent()
    try:
        _, ev = bt.build(busybox, ctx, "--ssh", "default", env={"SSH_AUTH_SOCK": other.sock})
    finally:
        other.stop()
    assert bt.executed(ev) == []
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN --mount=type=ssh,mode=0666 ls -l /run/buildkit > /l\n")
    _, ev = bt.build(busybox, ctx, "--ssh", "default", "-t", "m:1", env={"SSH_AUTH_SOCK": agent.sock})
    assert len(bt.executed(ev)) == 1
    listing = (bt.rootfs(busybox, "m:1", tmp_path / "fs") / "l").read_text()
    assert listing.split()[2] == "srw-rw-rw-", listing
