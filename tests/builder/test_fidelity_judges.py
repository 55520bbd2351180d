"""Issue 20, cases 1-7: the same context built by Docker's BuildKit (the private ``dockerd``,
Docker 20.10, ``DOCKER_BUILDKIT=1``, our busybox loaded into it) and by pybuild; the flattened
filesystems (names, types, modes, owners, contents, link targets: never mtimes) and the
configs must agree, case by case.

What Docker 20.10 does wins over the issue's text; where this host's Docker cannot judge (COPY
``--parents`` needs the ``1.7-labs`` frontend, which is not available offline) or differs from
current Docker (a bare ENTRYPOINT), the test says so and checks the documented behaviour.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tarfile
import time
from pathlib import Path
from typing import Any

#: the config keys compared
KEYS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "Labels", "Volumes", "ExposedPorts")
#: /etc/hosts and /etc/resolv.conf in the base, so that neither builder makes mount stubs for
#: them (BuildKit 20.10 leaves /etc with a new mtime in every RUN layer of an image without them)
ETC = "COPY hosts resolv.conf /etc/\n"


def _load_busybox(dockerd: Any, busybox: Any, bt: Any, tmp: Path) -> None:
    base = tmp / "base.tar"
    export = tmp / "export"
    export.mkdir()
    (export / "Dockerfile").write_text("FROM busybox\n")
    bt.build(busybox, export, "-t", "busybox:latest", "-o", f"type=docker,dest={base}")
    dockerd.docker("load", "-i", str(base))


def _context(tmp: Path, dockerfile: str, files: dict[str, str] | None = None) -> Path:
    ctx = tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    for name, text in {"hosts": "", "resolv.conf": "", **(files or {})}.items():
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_text(text)
    return ctx


class Built:
    """An image as one builder made it: its config document, its layers' entries and its tree."""

    def __init__(self, config: dict[str, Any], layers: list[list[tarfile.TarInfo]], tree: Path) -> None:
        self.config = config
        self.layers = layers
        self.tree = tree

    def created_by(self) -> list[str]:
        return [h.get("created_by", "") for h in self.config["history"][1:]]

    def settings(self) -> dict[str, Any]:
        return {k: self.config["config"].get(k) for k in KEYS}

    def nonempty_layers(self) -> list[list[tuple[str, bytes, str, int, int]]]:
        """Each layer's entries (name, type, mode, uid, gid) bottom first, without the base's and
        without empty ones (a RUN that changed nothing keeps the empty tar as its layer, in
        BuildKit 20.10 and in pybuild: test_fidelity_judges2 compares those)."""
        return [[(m.name, m.type, oct(stat.S_IMODE(m.mode)), m.uid, m.gid) for m in layer]
                for layer in self.layers[1:] if layer]


def _layers_and_tree(layer_files: list[Any], tree: Path) -> list[list[tarfile.TarInfo]]:
    from builder.core.layers import apply_layer
    from registry.compression import open_decompressed

    out = []
    tree.mkdir()
    for opener in layer_files:
        with opener() as f, tarfile.open(fileobj=open_decompressed(f), mode="r|") as tf:
            out.append(list(tf))
        with opener() as f:
            apply_layer(open_decompressed(f), tree, overlay_format=False)
    return out


def buildkit(dockerd: Any, ctx: Path, tag: str, tmp: Path, *args: str) -> Built:
    """``docker build`` with BuildKit, then ``docker save``: config, layers, flattened tree."""
    r = dockerd.docker("build", "--network", "none", "-t", tag, *args, str(ctx),
                       env={"DOCKER_BUILDKIT": "1"}, check=False, timeout=180)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-3000:]
    save = tmp / "docker-save.tar"
    dockerd.docker("save", "-o", str(save), tag)
    out = tmp / "docker-save"
    with tarfile.open(save) as tf:
        tf.extractall(out)
    manifest = json.loads((out / "manifest.json").read_text())[0]
    config = json.loads((out / manifest["Config"]).read_text())
    openers = [lambda p=out / name: open(p, "rb") for name in manifest["Layers"]]
    return Built(config, _layers_and_tree(openers, tmp / "docker-tree"), tmp / "docker-tree")


def ours(pyb: Any, bt: Any, ctx: Path, tag: str, tmp: Path, *args: str) -> Built:
    bt.build(pyb, ctx, "-t", tag, *args)
    store = pyb.store()
    img = store.resolve(tag)
    openers = [lambda d=d: store.open_blob(d.digest) for d in img.manifest.layers]
    return Built(dict(img.config.data), _layers_and_tree(openers, tmp / "our-tree"), tmp / "our-tree")


def listing(tree: Path) -> dict[str, tuple[str, int, int, str]]:
    """path → (type and mode, uid, gid, content hash or link target); never a time."""
    out: dict[str, tuple[str, int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(tree):
        for n in [*dirnames, *filenames]:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    what = hashlib.sha256(f.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                what = os.readlink(p)
            else:
                what = ""
            out["/" + os.path.relpath(p, tree)] = (oct(st.st_mode), st.st_uid, st.st_gid, what)
    return out


def judge(busybox: Any, bt: Any, dockerd: Any, tmp: Path, dockerfile: str,
          files: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> tuple[Built, Built]:
    """Both builds of one context; asserts equal trees, config and history lines."""
    _load_busybox(dockerd, busybox, bt, tmp)
    ctx = _context(tmp, dockerfile, files)
    tag = "fidelity:" + hashlib.sha256(str(tmp).encode()).hexdigest()[:12]
    try:
        theirs = buildkit(dockerd, ctx, tag, tmp, *args)
    finally:
        dockerd.docker("rmi", "-f", tag, check=False)
    mine = ours(busybox, bt, ctx, tag, tmp, *args)
    assert listing(mine.tree) == listing(theirs.tree)
    assert mine.settings() == theirs.settings()
    assert mine.created_by() == theirs.created_by()
    return theirs, mine


def _read(tree: Path, path: str) -> str:
    return (tree / path.lstrip("/")).read_text()


# -- 1. signals -------------------------------------------------------------------------------------
SIG_PROBE = "grep -E '^Sig(Ign|Blk)' /proc/self/status"


def test_run_step_gets_default_signals_and_a_broken_pipe_ends_it(
        busybox: Any, bt: Any, dockerd: Any, tmp_path: Path) -> None:
    """``yes`` ignoring SIGPIPE (inherited from Python through exec) spins for ever; with
    default dispositions it dies when ``head`` is done, as under BuildKit's runc. The build
    is bounded (``timeout 20`` inside the step: a spinning ``yes`` fails it, not the clock)."""
    theirs, mine = judge(busybox, bt, dockerd, tmp_path, "FROM busybox\n" + ETC + (
        f"RUN {SIG_PROBE} > /sig && timeout 20 sh -c 'yes | head -c 5000000 > /f' && wc -c < /f > /n\n"))
    assert _read(mine.tree, "/sig") == "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
    assert _read(mine.tree, "/n").strip() == "5000000"


def _timed(fn: Any) -> tuple[Any, float]:
    t0 = time.monotonic()
    r = fn()
    return r, time.monotonic() - t0


PIPE = "timeout 1 sh -c 'yes | head -c 100000 > /dev/null' && echo ended"


def test_run_and_exec_processes_get_default_signals(busybox: Any, bt: Any, dockerd: Any,
                                                    tmp_path: Path) -> None:
    """``run``, ``run -d`` and ``exec`` (and ``run --runtime runc``) against Docker's:
    the same SigIgn/SigBlk, and a ``yes | head`` that ends within a second (``timeout 1``
    in the container kills a spinning one, and the check then fails)."""
    _load_busybox(dockerd, busybox, bt, tmp_path)
    probe = f"{SIG_PROBE}; {PIPE}"
    theirs = dockerd.docker("run", "--rm", "--network", "none", "busybox", "sh", "-c", probe).stdout.decode()
    assert theirs.endswith("ended\n") and "SigIgn:\t0000000000000000" in theirs
    r = busybox("run", "--rm", "--network", "none", "busybox", "sh", "-c", probe, timeout=60)
    assert r.stdout == theirs
    if shutil.which("runc"):
        r = busybox("run", "--rm", "--runtime", "runc", "--network", "none", "busybox", "sh", "-c",
                    probe, timeout=60)
        assert r.stdout == theirs

    name = f"sig{tmp_path.name[-10:]}".replace("_", "")
    dockerd.docker("run", "-d", "--name", name, "--network", "none", "busybox", "sleep", "60")
    pid1 = f"{SIG_PROBE.replace('/proc/self/', '/proc/1/')}"
    try:
        their_exec = dockerd.docker("exec", name, "sh", "-c", probe).stdout.decode()
        their_pid1 = dockerd.docker("exec", name, "sh", "-c", pid1).stdout.decode()
    finally:
        dockerd.docker("rm", "-f", name, check=False)
    assert their_exec == theirs
    busybox("run", "-d", "--name", name, "--network", "none", "busybox", "sleep", "60")
    try:
        r, took = _timed(lambda: busybox("exec", name, "sh", "-c", probe, timeout=60))
        assert r.stdout == their_exec
        # the detached container's own process (started by its supervisor) too
        assert busybox("exec", name, "sh", "-c", pid1).stdout == their_pid1
        # the whole exec (CLI start-up included) is bounded; the pipeline itself by timeout 1
        assert took < 30
    finally:
        busybox("rm", "-f", name, check=False)


# -- 2. ENV with several assignments ------------------------------------------------------------------
def test_env_assignments_expand_against_the_env_before_the_instruction(
        busybox: Any, bt: Any, dockerd: Any, tmp_path: Path) -> None:
    """``ENV A=changed S=$A`` gives S the old A; a redefined name keeps its place in Env."""
    theirs, mine = judge(busybox, bt, dockerd, tmp_path, "FROM busybox\n" + ETC + (
        "ENV A=alpha B=beta\nENV A=changed S=$A\nENV B=$A-$B\nLABEL s=$S\n"
        "RUN echo \"$A $S $B\" > /vals\n"))
    assert _read(mine.tree, "/vals") == "changed alpha changed-beta\n"
    assert [e for e in mine.config["config"]["Env"] if not e.startswith("PATH=")] == [
        "A=changed", "B=changed-beta", "S=alpha"]


# -- 3. ARG after ENV of the same name ---------------------------------------------------------------
def test_arg_after_env_wins_in_run_and_later_expansions(busybox: Any, bt: Any, dockerd: Any,
                                                        tmp_path: Path) -> None:
    """BuildKit 20.10 keeps one build environment: ENV and each ARG with a value set names in
    it, the last one winning, so ``ARG C=arg-c`` after ``ENV C=env-c`` gives RUN and later
    words ``arg-c`` while the config keeps ``C=env-c``; a bare ARG with no value changes
    nothing; ``|N`` in RUN's history lists every declaration with that environment's value;
    a stage made FROM this one starts from its environment (the ARG values included) under
    its config's ENV."""
    theirs, mine = judge(busybox, bt, dockerd, tmp_path, "FROM busybox AS one\n" + ETC + (
        "ENV C=env-c D=env-d\nARG C=arg-c\nARG D\n"
        "RUN echo $C $D > /cd && env | sort > /env\n"
        "ENV X=$C Y=$D\nARG E=1\nENV E=2\nARG F=1\nARG F\nRUN echo \"$E $F\" > /ef\n"
        "LABEL l=$C\nENV C=again\nRUN echo $C > /c2\nWORKDIR /w/$D\nARG Q=q\n"
        "FROM one\nRUN echo \"$C $Q $D\" > /child\n"), args=("--build-arg", "D=given-d"))
    assert _read(mine.tree, "/cd") == "arg-c given-d\n"
    assert "C=arg-c\nD=given-d\n" in _read(mine.tree, "/env")
    assert _read(mine.tree, "/ef") == "2 1\n"
    assert _read(mine.tree, "/c2") == "again\n"
    # the child's config ENV (C=again, D=env-d) over stage one's environment (Q=q)
    assert _read(mine.tree, "/child") == "again q env-d\n"
    assert mine.config["config"]["Labels"] == {"l": "arg-c"}
    assert "C=again" in mine.config["config"]["Env"] and "D=env-d" in mine.config["config"]["Env"]


# -- 4. JSON-form COPY destination with a space -------------------------------------------------------
def test_copy_json_destination_with_a_space(busybox: Any, bt: Any, dockerd: Any, tmp_path: Path) -> None:
    """Each source and the destination is one word, never split: a space in the JSON form
    or in a variable's value stays in the path."""
    theirs, mine = judge(busybox, bt, dockerd, tmp_path, "FROM busybox\n" + ETC + (
        'ENV F="a b"\nCOPY ["c.md", "/dst/json form/"]\nCOPY $F /e1/\nCOPY ["$F", "/e2/$F/"]\n'),
        files={"c.md": "c\n", "a b": "ab\n", "a": "a\n", "b": "b\n"})
    assert _read(mine.tree, "/dst/json form/c.md") == "c\n"
    assert _read(mine.tree, "/e1/a b") == "ab\n"
    assert _read(mine.tree, "/e2/a b/a b") == "ab\n"


# -- 5. RUN --mount targets ----------------------------------------------------------------------------
def test_missing_mount_targets_stay_in_the_layer(busybox: Any, bt: Any, dockerd: Any,
                                                 tmp_path: Path) -> None:
    """A bind, cache, tmpfs or secret mount on a path the image lacks leaves its mount point in
    BuildKit's layer: a directory target with its missing parents (0755 root, whoever USER
    is), a file target's parents only; parents that exist are copied up with their owner and
    mode; nothing under another mount. Layer by layer, entry by entry (mode and owner); the
    new directories' mtimes are the build's, in both."""
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret\n")
    start = int(time.time()) - 5
    theirs, mine = judge(busybox, bt, dockerd, tmp_path, "FROM busybox\n" + ETC + (
        "RUN --mount=type=tmpfs,target=/newdir true\n"
        "RUN --mount=type=cache,target=/a/b/c true\n"
        "RUN --mount=type=bind,source=sub,target=/x/y true\n"
        "RUN --mount=type=bind,source=file,target=/bf/file true\n"
        "RUN mkdir -p /home/app && chmod 700 /home/app && chown 1:2 /home/app\n"
        "RUN --mount=type=tmpfs,target=/home/app/t/u true\n"
        "RUN --mount=type=tmpfs,target=/tmp true\n"
        "RUN --mount=type=tmpfs,target=/n1 --mount=type=tmpfs,target=/n1/n2 true\n"
        "RUN --mount=type=secret,id=s,target=/q/r/s cat /q/r/s > /dev/null\n"
        "RUN ln -s /real /lnk && mkdir /real\nRUN --mount=type=tmpfs,target=/lnk/sub true\n"
        "USER 1:2\nRUN --mount=type=cache,target=/c2,uid=5,gid=6,mode=0700 true\n"),
        files={"sub/f": "f\n", "file": "file\n"}, args=("--secret", f"id=s,src={secret}"))
    assert mine.nonempty_layers() == theirs.nonempty_layers()
    assert [("newdir", tarfile.DIRTYPE, "0o755", 0, 0)] in mine.nonempty_layers()
    for built in (theirs, mine):
        for layer in built.layers:
            for m in layer:
                if m.name in ("newdir", "a/b/c", "x/y", "bf", "home/app/t/u", "q/r", "c2"):
                    assert m.mtime >= start, (m.name, m.mtime)


# -- 6. COPY --parents ------------------------------------------------------------------------------------
PARENTS_FILES = {"x/a.txt": "xa\n", "y/a.txt": "ya\n", "x/y/a.txt": "xya\n", "x/y/b.txt": "xyb\n",
                 "p/q/r/deep.txt": "deep\n", "src/top.txt": "top\n", "src/m/mid.txt": "mid\n",
                 "src/m/n/low.txt": "low\n", "src/m/n/skip.md": "no\n"}
PARENTS_DOCKERFILE = "FROM busybox\n" + ETC + (
    "COPY ./x/a.txt ./y/a.txt /no_parents/\n"
    "COPY --parents ./x/a.txt ./y/a.txt /parents/\n"
    "COPY --parents ./x/./y/*.txt /pivoted/\n"
    "COPY --parents ./p/./q/r/deep.txt /pivot/\n"
    "COPY --parents ./src/**/*.txt /star/\n")


def test_copy_parents_pivot_and_doublestar(busybox: Any, bt: Any, dockerd: Any, tmp_path: Path) -> None:
    """The Dockerfile reference's COPY ``--parents`` examples (``./x/a.txt ./y/a.txt`` keep
    ``x/`` and ``y/``; ``./x/./y/*.txt`` keeps what follows the ``./`` pivot) and the issue's
    (``./p/./q/r/deep.txt`` → ``/pivot/q/r/deep.txt``; ``**`` matching any depth, none
    included). This host's Docker 20.10 cannot judge: its built-in frontend refuses the flag
    (``Unknown flag: parents``; it needs ``# syntax=docker/dockerfile:1.7-labs``, not available
    offline), so the test checks that refusal and the reference's documented results; with a
    Docker that takes the flag it compares the two builds instead."""
    _load_busybox(dockerd, busybox, bt, tmp_path)
    ctx = _context(tmp_path, PARENTS_DOCKERFILE, PARENTS_FILES)
    r = dockerd.docker("build", "--network", "none", "-t", "parents:1", str(ctx),
                       env={"DOCKER_BUILDKIT": "1"}, check=False, timeout=180)
    mine = ours(busybox, bt, ctx, "parents:1", tmp_path)
    files = {p: v for p, v in listing(mine.tree).items()
             if p.startswith(("/no_parents", "/parents", "/pivoted", "/pivot/", "/pivot", "/star"))
             and v[0].startswith("0o100")}
    assert {p: _read(mine.tree, p) for p in files} == {
        "/no_parents/a.txt": "ya\n",
        "/parents/x/a.txt": "xa\n", "/parents/y/a.txt": "ya\n",
        "/pivoted/y/a.txt": "xya\n", "/pivoted/y/b.txt": "xyb\n",
        "/pivot/q/r/deep.txt": "deep\n",
        "/star/src/top.txt": "top\n", "/star/src/m/mid.txt": "mid\n", "/star/src/m/n/low.txt": "low\n",
    }
    if r.returncode != 0:
        assert "Unknown flag: parents" in r.stderr.decode(errors="replace")
    else:  # a Docker whose frontend takes --parents judges the whole tree
        judged = tmp_path / "judged"
        judged.mkdir()
        try:
            theirs = buildkit(dockerd, ctx, "parents:1", judged)
        finally:
            dockerd.docker("rmi", "-f", "parents:1", check=False)
        assert listing(mine.tree) == listing(theirs.tree)


# -- 7. a bare ENTRYPOINT ---------------------------------------------------------------------------------
def test_bare_entrypoint_is_refused(busybox: Any, bt: Any, dockerd: Any, tmp_path: Path) -> None:
    """``ENTRYPOINT`` with no argument is a parse error naming the file and line, as BuildKit
    has refused it since moby/buildkit#1862 (``ENTRYPOINT requires at least one argument``);
    ``ENTRYPOINT []`` still clears it. Docker 20.10 (BuildKit 0.8, before that change) still
    takes it and records ``["/bin/sh", "-c", ""]``: where this host's Docker refuses it too,
    its message is the one we give."""
    _load_busybox(dockerd, busybox, bt, tmp_path)
    ctx = _context(tmp_path, "FROM busybox\nENTRYPOINT\n")
    r = dockerd.docker("build", "--network", "none", "-t", "bare:1", str(ctx),
                       env={"DOCKER_BUILDKIT": "1"}, check=False, timeout=180)
    if r.returncode != 0:
        assert "ENTRYPOINT requires at least one argument" in r.stderr.decode(errors="replace")
    else:  # Docker 20.10
        info = json.loads(dockerd.docker("image", "inspect", "bare:1").stdout)[0]["Config"]
        dockerd.docker("rmi", "-f", "bare:1", check=False)
        assert info["Entrypoint"] == ["/bin/sh", "-c", ""]
    before = sorted(p.name for p in (busybox.root / "store").rglob("*"))
    res, _ = bt.build(busybox, ctx, "-t", "bare:1", check=False)
    assert res.returncode != 0
    first = [line for line in res.stderr.splitlines() if not line.startswith("{")][0]
    assert first.endswith("Dockerfile:2:1: ENTRYPOINT requires at least one argument"), res.stderr
    assert sorted(p.name for p in (busybox.root / "store").rglob("*")) == before
    # ENTRYPOINT [] is fine, in both
    (ctx / "Dockerfile").write_text("FROM busybox\n" + ETC + "ENTRYPOINT []\n")
    judge_dir = tmp_path / "empty"
    judge_dir.mkdir()
    theirs = buildkit(dockerd, ctx, "bare:2", judge_dir)
    dockerd.docker("rmi", "-f", "bare:2", check=False)
    mine = ours(busybox, bt, ctx, "bare:2", judge_dir)
    assert mine.settings() == theirs.settings()
    assert mine.config["config"].get("Entrypoint") is None
