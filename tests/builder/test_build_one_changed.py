"""The one-file-changed build (issue 15): what its executed COPY and RUN cost, without changing
what they make.

- A RUN's mount stubs (``run._leave_mount_points``) are left in the upper dir without mounting
  the root when every directory on the way is there (``Workspace.stub_in_upper``): the image is
  byte for byte the one the mounted root makes (parents copied up with their owner, mode,
  xattrs and times; the stub's directory stamped now).
- The overlay probe's memo is kept in ``run/`` from build to build.
- A changed COPY and a RUN load neither TLS nor ADD's git and URL code, and the steps'
  workspaces, removed in the background, are gone when the build command returns; a cached
  build imports neither ``dataclasses`` nor ``inspect`` (its records are frozen values).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
EPOCH = "1500000000"  # after the context's and the base's times (kept), before the build's

DOCKERFILE = """\
FROM busybox-a
RUN chown 12:34 /a && chmod 0711 /a/b && touch -d '2001-01-01 00:00:00' /a/b/c /a/b /a
RUN --mount=type=bind,source=f.txt,target=/a/b/c/f.txt \\
    --mount=type=bind,source=f.txt,target=/a/g.txt cat /a/b/c/f.txt > /out
RUN --mount=type=bind,source=f.txt,target=/new/dir/f.txt true
COPY app.conf /a/
RUN cat /a/app.conf > /a/conf.out
"""

# a build in-process, as the CLI runs it, but for the one hook: "fast" records what
# stub_in_upper answered, "mounted" makes every RUN mount its root to leave its stubs (as before)
DRIVER = """\
import json, sys
from builder.imagebuild.execute import workspace
mode, out, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
real = workspace.Workspace.stub_in_upper
answers = []
def hook(self, targets):
    if mode == "mounted":
        return False
    answers.append(real(self, targets))
    return answers[-1]
workspace.Workspace.stub_in_upper = hook
import atexit
atexit.register(lambda: open(out, "w").write(json.dumps(
    {"answers": answers, "modules": sorted(sys.modules)})))
from builder.cli import main
main(argv)
"""


def _context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "f.txt").write_text("f\n")
    (ctx / "app.conf").write_text("conf 0\n")
    for p in [*ctx.rglob("*"), ctx]:
        os.utime(p, (1_000_000_000, 1_000_000_000), follow_symlinks=False)
    return ctx


def _base(pyb: Any, busybox_tar: Path, tmp_path: Path) -> None:
    """``busybox-a``: busybox with /a/b/c, /a/b holding an xattr (COPY takes no directory's)."""
    from registry import archive
    from registry.reference import Reference

    tar = tmp_path / "busybox-a.tar"
    with tarfile.open(busybox_tar) as src, tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as tf:
        for m in src:
            tf.addfile(m, src.extractfile(m) if m.isfile() else None)
        for name, xattrs in (("a", {}), ("a/b", {"SCHILY.xattr.user.note": "kept"}), ("a/b/c", {})):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime, info.pax_headers = tarfile.DIRTYPE, 0o755, 1_000_000_000, xattrs
            tf.addfile(info)
    archive.import_rootfs(pyb.store(), tar, reference=Reference.parse("busybox-a:latest"),
                          config={"Cmd": ["sh"]})


def _build(pyb: Any, ctx: Path, tag: str, mode: str, tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / f"driver-{tag.replace(':', '-')}.json"
    env = {k: v for k, v in os.environ.items() if k != "PYBUILD_ROOT"}
    env["SOURCE_DATE_EPOCH"] = EPOCH
    env["PYTHONPATH"] = str(REPO)
    r = subprocess.run([sys.executable, "-c", DRIVER, mode, str(out), "--root", str(pyb.root),
                        "build", "-q", "-t", tag, str(ctx)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def _members(pyb: Any, ref: str, index: int) -> dict[str, tarfile.TarInfo]:
    from registry.compression import open_decompressed

    store = pyb.store()
    desc = store.resolve(ref).manifest.layers[index]
    with store.open_blob(desc.digest) as f, tarfile.open(fileobj=open_decompressed(f), mode="r|") as tf:
        return {m.name: m for m in tf}


def test_mount_stubs_without_a_mount_make_the_same_image(
        busybox: Any, busybox_tar: Path, pybuild_factory: Any, tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    _base(busybox, busybox_tar, tmp_path)
    fast = _build(busybox, ctx, "stubs:fast", "fast", tmp_path)
    # RUN 1: /etc/hosts and /etc/resolv.conf stubbed in /etc (busybox has neither), no mount;
    # RUN 2: the same and two bind targets whose directories are all there; RUN 3: a directory
    # to make (/new/dir): the mounted root does it; RUN 4 as RUN 1
    assert fast["answers"] == [True, True, False, True]

    other = pybuild_factory()
    shutil.copytree(busybox.root / "store", other.root / "store")
    mounted = _build(other, ctx, "stubs:mounted", "mounted", tmp_path)
    assert mounted["answers"] == []
    assert other.store().resolve("stubs:mounted").id == busybox.store().resolve("stubs:fast").id

    # what the copy-up kept: /a/b (only an ancestor of a stub) its mode, xattr and old time;
    # /a (the owner COPY gave it) and /a/b/c, the stubs' directories, stamped now (clamped to
    # the epoch), as /etc
    layer = _members(busybox, "stubs:fast", 2)
    assert (layer["a"].uid, layer["a"].gid, layer["a"].mtime) == (12, 34, int(EPOCH))
    assert (layer["a/b"].mode, layer["a/b"].mtime) == (0o711, 978307200)
    assert layer["a/b"].pax_headers.get("SCHILY.xattr.user.note") == "kept"
    assert layer["a/b/c"].mtime == int(EPOCH)
    assert layer["etc"].mtime == int(EPOCH)
    assert sorted(layer) == ["a", "a/b", "a/b/c", "etc", "out"]


def test_one_changed_file_runs_light_and_leaves_nothing(busybox: Any, busybox_tar: Path,
                                                        tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    _base(busybox, busybox_tar, tmp_path)
    _build(busybox, ctx, "light:1", "fast", tmp_path)
    run = busybox.root / "run"
    memo = run / ".overlay-ok"
    assert memo.is_file()  # the probe's success, kept for the next build
    probed = memo.stat().st_mtime_ns
    (ctx / "app.conf").write_text("conf 1\n")
    second = _build(busybox, ctx, "light:2", "fast", tmp_path)
    assert second["answers"] == [True]  # only the last RUN ran again (after the COPY)
    assert memo.stat().st_mtime_ns == probed  # not probed again
    loaded = set(second["modules"])
    assert "builder.imagebuild.execute.fileops" in loaded and "builder.core.sandbox.executor" in loaded
    assert not loaded & {"ssl", "_ssl", "builder.imagebuild.sources.url", "builder.imagebuild.sources.git"}
    # the workspaces, removed while the image was assembled, are gone when the command returns
    assert sorted(os.listdir(run)) == [".overlay-ok"]
    layer = _members(busybox, "light:2", -1)
    assert sorted(layer) == ["a", "a/conf.out", "etc"]
    # a cached build makes no dataclass: neither dataclasses nor inspect is imported
    cached = _build(busybox, ctx, "light:3", "fast", tmp_path)
    assert cached["answers"] == []
    assert not set(cached["modules"]) & {"dataclasses", "inspect"}
