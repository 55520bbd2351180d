"""``pybuild diff``, ``export`` and ``commit`` judged against real Docker (the ``dockerd`` fixture):
the same changes made in a Docker container and in a pybuild one give the same ``diff`` lines
and the same exported files; a committed image runs here and in Docker with the same output.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

#: adds, modifies and deletes files and dirs (some in dirs Docker also lists as changed)
SCRIPT = ("mkdir -p /tmp/new/sub && echo a > /tmp/new/sub/f && echo x >> /etc/passwd && rm /etc/group"
          " && rm -rf /var/www && mkdir /root/d && touch /root/d/e && rm /usr/sbin/httpd"
          " && chmod 700 /home && ln -s /etc/passwd /root/link && echo hi > /greeting"
          " && mkdir /usr/share && rm -rf /usr/share && touch /etc/hosts /etc/hostname"
          # a dir deleted and made again (opaque), a file made a dir and a dir a file, owners
          " && rm -rf /sbin && mkdir /sbin && touch /sbin/x && rm /linuxrc && mkdir /linuxrc"
          " && rm -rf /usr/bin && echo > /usr/bin && chmod 700 /root && chown 1:1 /etc/passwd"
          # what goes to volumes and binds is not the container's; the work dir is
          " && echo v > /data/f && echo b > /mnt/b/f && touch made")


def _members(tar: Path) -> dict[str, tuple[str, int, int, str]]:
    """name -> (type, mode, size, link target): what an export holds, timestamps aside (Go's
    archive/tar also sets the file type bits in the mode field, which Python's tarfile never
    writes: the type is the entry's type flag either way, so only permission bits are kept)."""
    out = {}
    with tarfile.open(tar) as tf:
        for m in tf:
            out[m.name.rstrip("/")] = (m.type.decode(), m.mode & 0o7777, m.size, m.linkname)
    return out


def _top_layer(saved: Path) -> dict[str, tuple[str, int, int, str]]:
    """The members of the top layer of a ``save``d image (timestamps aside)."""
    with tarfile.open(saved) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
        layer = tf.extractfile(manifest[0]["Layers"][-1])
        assert layer is not None
        import gzip

        data = layer.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    (saved.parent / "layer.tar").write_bytes(data)
    return _members(saved.parent / "layer.tar")


def _docker_order(line: str) -> list[tuple[bool, str]]:
    kind, _, path = line.partition(" ")
    parts = path.strip("/").split("/")
    return [(kind == "D" and i == len(parts) - 1, p) for i, p in enumerate(parts)]


def _docker_busybox(busybox: Any, dockerd: Any, tmp_path: Path) -> None:
    saved = tmp_path / "busybox-save.tar"
    busybox("save", "-o", str(saved), "busybox:latest")
    dockerd.docker("load", "-i", str(saved))


def _wait_for(cond: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_diff_and_export_match_docker(busybox: Any, dockerd: Any, tmp_path: Path) -> None:
    _docker_busybox(busybox, dockerd, tmp_path)
    name = f"chg-{os.getpid()}-{tmp_path.name[-8:]}"
    (tmp_path / "bind1").mkdir()
    (tmp_path / "bind2").mkdir()
    mounts = ["-w", "/work", "-v", "/data", "-v"]
    dockerd.docker("run", "--name", name, *mounts, f"{tmp_path / 'bind1'}:/mnt/b", "busybox:latest", "sh", "-c",
                   SCRIPT)
    try:
        theirs = dockerd.docker("diff", name).stdout.decode().splitlines()
        dockerd.docker("export", "-o", str(tmp_path / "docker.tar"), name)
        docker_id = dockerd.docker("commit", "-m", "msg", "-c", "ENV K=v", "-c", 'CMD ["x"]', name, "judge:1"
                                   ).stdout.decode().strip()
        docker_image = json.loads(dockerd.docker("image", "inspect", docker_id).stdout)[0]
        docker_history = json.loads(dockerd.docker("history", "--format", "{{json .}}", "--no-trunc", docker_id
                                                   ).stdout.decode().splitlines()[0])
        dockerd.docker("save", "-o", str(tmp_path / "judge.tar"), "judge:1")
    finally:
        dockerd.docker("rmi", "-f", "judge:1", check=False)
        dockerd.docker("rm", "-f", name, check=False)
    busybox("run", "--name", "c1", *mounts, f"{tmp_path / 'bind2'}:/mnt/b", "busybox", "sh", "-c", SCRIPT)
    ours = busybox("diff", "c1").stdout.splitlines()
    # dockerd lists a directory's entries in Go's map order, which varies run to run: the same
    # lines, in the one order we give (names sorted, deletions after the rest in each directory)
    assert ours == sorted(theirs, key=_docker_order), "\n".join(ours) + "\n---\n" + "\n".join(theirs)
    assert "D /etc/group" in ours and "A /tmp/new/sub/f" in ours and "C /etc/passwd" in ours
    assert "A /mnt/b" in ours and "A /data" in ours and "A /work/made" in ours and "A /data/f" not in ours
    assert busybox("container", "diff", "c1").stdout.splitlines() == ours

    # the same commit: the same config, history entry and layer
    our_id = busybox("commit", "-m", "msg", "-c", "ENV K=v", "-c", 'CMD ["x"]', "c1", "judge:1").stdout.strip()
    our_image = json.loads(busybox("image", "inspect", our_id).stdout)[0]
    for key in ("Cmd", "Entrypoint", "Env", "WorkingDir", "User", "Volumes", "Labels", "ExposedPorts"):
        assert our_image["Config"].get(key) == docker_image["Config"].get(key), key
    our_history = json.loads(busybox("history", "--format", "{{json .}}", "--no-trunc", our_id
                                     ).stdout.splitlines()[0])
    assert (our_history["CreatedBy"], our_history["Comment"]) == (docker_history["CreatedBy"], "msg")
    assert our_history["Size"] == docker_history["Size"]
    busybox("save", "-o", str(tmp_path / "ours-judge.tar"), "judge:1")
    # the same layer: entries alike, whiteouts by name (dockerd hard-links them to one another)
    our_layer, docker_layer = _top_layer(tmp_path / "ours-judge.tar"), _top_layer(tmp_path / "judge.tar")
    assert sorted(our_layer) == sorted(docker_layer)
    assert {k: v for k, v in our_layer.items() if ".wh." not in k} == {
        k: v for k, v in docker_layer.items() if ".wh." not in k}
    assert "data" in our_layer and "mnt/b" in our_layer and "mnt/b/f" not in our_layer

    busybox("export", "-o", str(tmp_path / "ours.tar"), "c1")
    docker_members, our_members = _members(tmp_path / "docker.tar"), _members(tmp_path / "ours.tar")
    assert our_members == docker_members
    assert "greeting" in our_members and "etc/group" not in our_members and ".dockerenv" in our_members
    # to stdout when redirected; `container export` the same command
    out = subprocess.run([*busybox.command, "--root", str(busybox.root), "container", "export", "c1"],
                         capture_output=True, check=True).stdout
    (tmp_path / "stdout.tar").write_bytes(out)
    assert _members(tmp_path / "stdout.tar") == docker_members


def test_commit_running_container_loads_into_docker(busybox: Any, dockerd: Any, tmp_path: Path) -> None:
    busybox("run", "-d", "--name", "r1", "busybox", "sh", "-c",
            "echo hello > /greeting && rm /etc/group && exec sleep 600")
    _wait_for(lambda: busybox("exec", "r1", "test", "-f", "/greeting", check=False).returncode == 0,
              "the container's first change")
    # a running container's diff and export see its live changes
    assert busybox("diff", "r1").stdout.splitlines() == ["C /etc", "D /etc/group", "A /greeting"]
    busybox("export", "-o", str(tmp_path / "running.tar"), "r1")
    assert "greeting" in _members(tmp_path / "running.tar")

    since = time.time()
    image_id = busybox("commit", "-m", "my message", "-a", "Me <me@example.com>",
                       "-c", 'CMD ["cat", "/greeting"]', "-c", "ENV K=v", "r1", "committed:1").stdout.strip()
    assert image_id.startswith("sha256:") and len(image_id) == 71
    # paused while committing, resumed after: it still runs
    state = json.loads(busybox("inspect", "r1").stdout)[0]["State"]
    assert state["Status"] == "running" and state["Running"] and not state["Paused"]
    from builder.base import events

    cid = json.loads(busybox("inspect", "r1").stdout)[0]["Id"]
    actions = [e["Action"] for e in events.history(busybox.state, since=since - 1)
               if e["Type"] == "container" and e["Actor"]["ID"] == cid]
    assert actions[-3:] == ["pause", "unpause", "commit"]

    assert busybox("run", "--rm", "committed:1").stdout == "hello\n"
    assert busybox("run", "--rm", "committed:1", "sh", "-c", "echo $K; test -e /etc/group || echo gone"
                   ).stdout == "v\ngone\n"
    rows = busybox("history", "--no-trunc", "--format", "{{.CreatedBy}}|{{.Comment}}|{{.Size}}",
                   "committed:1").stdout.splitlines()
    assert rows[0].startswith("sh -c echo hello > /greeting") and "|my message|" in rows[0]
    assert len(rows) == 2
    info = json.loads(busybox("image", "inspect", "committed:1").stdout)[0]
    assert info["Id"] == image_id
    assert info["Author"] == "Me <me@example.com>"
    assert info["Config"]["Cmd"] == ["cat", "/greeting"] and "K=v" in info["Config"]["Env"]
    assert len(info["RootFS"]["Layers"]) == 2

    # Docker loads it and runs it with the same output
    busybox("save", "-o", str(tmp_path / "committed.tar"), "committed:1")
    dockerd.docker("load", "-i", str(tmp_path / "committed.tar"))
    try:
        assert dockerd.docker("run", "--rm", "committed:1").stdout == b"hello\n"
        assert dockerd.docker("run", "--rm", "committed:1", "sh", "-c", "echo $K").stdout == b"v\n"
        theirs = json.loads(dockerd.docker("image", "inspect", "committed:1").stdout)[0]
        assert theirs["Id"] == image_id and theirs["Comment"] in ("", "my message")
        hist = dockerd.docker("history", "--no-trunc", "--format", "{{.Comment}}", "committed:1").stdout
        assert hist.decode().splitlines()[0] == "my message"
    finally:
        dockerd.docker("rmi", "-f", "committed:1", check=False)
    busybox("rm", "-f", "r1")


def test_commit_stopped_without_changes_and_without_tag(busybox: Any) -> None:
    busybox("create", "--name", "never", "busybox", "true")
    assert busybox("diff", "never").stdout == ""
    image_id = busybox("commit", "-p=false", "never").stdout.strip()
    rows = json.loads(busybox("image", "inspect", image_id).stdout)[0]
    assert len(rows["RootFS"]["Layers"]) == 1  # nothing changed: no new layer, as Docker
    hist = busybox("history", "--format", "{{.CreatedBy}}|{{.Size}}", image_id).stdout.splitlines()
    assert hist[0] == "true|0B" and len(hist) == 2
    assert "<none>" in busybox("images", "-a").stdout


def test_bad_input(busybox: Any, store_listing: Any) -> None:
    for args in (["diff", "nope"], ["export", "-o", "/dev/null", "nope"], ["commit", "nope"],
                 ["container", "commit", "nope", "x:1"]):
        r = busybox(*args, check=False)
        assert (r.returncode, r.stderr) == (1, "Error: No such container: nope\n"), args
    busybox("run", "--name", "c1", "busybox", "touch", "/new")
    before = store_listing(busybox.root / "store")
    r = busybox("commit", "-c", "FOO bar", "c1", "x:1", check=False)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "'FOO bar'" in r.stderr, r.stderr
    r = busybox("commit", "-c", "EXPOSE 99999", "c1", check=False)
    assert r.returncode == 1 and "'EXPOSE 99999'" in r.stderr, r.stderr
    r = busybox("commit", "c1", "Bad:Ref", check=False)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Bad:Ref" in r.stderr, r.stderr
    r = busybox("commit", "c1", "x@sha256:" + "a" * 64, check=False)
    assert r.returncode == 1 and "digest" in r.stderr, r.stderr
    assert store_listing(busybox.root / "store") == before
    assert busybox("images", "--format", "{{.Repository}}").stdout.split() == ["busybox"]

    # export to a terminal is refused, as Docker does
    import pty

    leader, follower = pty.openpty()
    try:
        p = subprocess.run([*busybox.command, "--root", str(busybox.root), "export", "c1"], stdout=follower,
                           stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(follower)
        os.close(leader)
    assert p.returncode == 1
    assert p.stderr == "Error: cowardly refusing to save to a terminal. Use the -o flag or redirect\n"
    r = busybox("export", "-o", str(busybox.root / "nodir" / "x.tar"), "c1", check=False)
    assert (r.returncode, r.stderr) == (1, f"Error: failed to export container: open {busybox.root}/nodir/x.tar: "
                                           "no such file or directory\n")
    # a failed export leaves no file behind
    r = busybox("export", "-o", str(busybox.root / "x.tar"), "nope", check=False)
    assert r.returncode == 1 and not list(busybox.root.glob("*x.tar*"))


def test_copy_fallback_root_gives_the_same_answers(busybox: Any, pybuild_factory: Any, busybox_tar: Path,
                                                   tmp_path: Path) -> None:
    """A root without overlayfs (the plain-tree fallback) diffs, exports and commits as an
    overlay one does."""
    from registry import archive
    from registry.reference import Reference

    plain = pybuild_factory()
    archive.import_rootfs(plain.store(), busybox_tar, reference=Reference.parse("busybox:latest"),
                          config={"Cmd": ["sh"]})
    script = SCRIPT.split(" && echo v > /data/f")[0]
    busybox("run", "--name", "c1", "busybox", "sh", "-c", script)
    no_overlay = {"PYBUILD_NO_OVERLAY": "1"}
    plain("run", "--name", "c1", "busybox", "sh", "-c", script, env=no_overlay)
    assert (plain.root / "containers" / json.loads(plain("inspect", "c1").stdout)[0]["Id"] / "rootfs").is_dir()
    assert plain("diff", "c1").stdout == busybox("diff", "c1").stdout
    busybox("export", "-o", str(tmp_path / "overlay.tar"), "c1")
    plain("export", "-o", str(tmp_path / "plain.tar"), "c1")
    assert _members(tmp_path / "plain.tar") == _members(tmp_path / "overlay.tar")
    plain("commit", "c1", "plain:1")
    assert plain("run", "--rm", "plain:1", "cat", "/greeting", env=no_overlay).stdout == "hi\n"
