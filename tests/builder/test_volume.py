"""Volumes: records, in-use refusal, prune, ``-v``/``--mount``/``--tmpfs`` parsing (tables of good
and bad specs), bind-source rules and populating a new volume from an image's content."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from builder.base.errors import VolumeError
from builder.base.state import StateRoot
from builder.runtime import volume as V

PYBUILD = [sys.executable, "-c", "from builder.cli import main; main()"]


@pytest.fixture
def state(tmp_path: Path) -> StateRoot:
    return StateRoot.open(tmp_path / "root")


def write_container(state: StateRoot, cid: str, name: str, mounts: list[V.Mount]) -> None:
    """A container record as ``builder.runtime.containers`` writes it (the documented ``Mounts`` format)."""
    d = state.containers / cid
    d.mkdir(parents=True)
    (d / "container.json").write_text(
        json.dumps({"Id": cid, "Name": "/" + name, "Mounts": [m.to_record() for m in mounts]})
    )


# -- records ------------------------------------------------------------------------------------


def test_create_get_list_remove(state: StateRoot) -> None:
    vol = V.create(state, "data", labels={"app": "web"})
    assert vol.mountpoint == state.volumes / "data" / "_data" and vol.mountpoint.is_dir()
    assert V.create(state, "data") == vol  # idempotent, as in Docker
    rec = json.loads((state.volumes / "data" / "volume.json").read_text())
    assert rec["Name"] == "data" and rec["Driver"] == "local" and rec["Labels"] == {"app": "web"}
    assert rec["Mountpoint"] == str(vol.mountpoint) and rec["CreatedAt"].endswith("Z")
    anon = V.create(state)
    assert len(anon.name) == 64 and anon.anonymous and not vol.anonymous
    assert [v.name for v in V.list_volumes(state)] == sorted(["data", anon.name])
    assert V.get(state, "data") == vol
    V.remove(state, "data")
    assert not (state.volumes / "data").exists()
    with pytest.raises(VolumeError, match="no such volume: data"):
        V.get(state, "data")
    with pytest.raises(VolumeError, match="no such volume: data"):
        V.remove(state, "data")
    V.remove(state, "data", force=True)
    for bad, message in [("a", "invalid volume name"), ("-x", "invalid volume name"), ("a/b", "invalid volume name")]:
        with pytest.raises(VolumeError, match=message):
            V.create(state, bad)
    with pytest.raises(VolumeError, match="driver 'nfs' is not supported"):
        V.create(state, "x1", driver="nfs")
    with pytest.raises(VolumeError, match="unsupported volume options"):
        V.create(state, "x1", options={"type": "tmpfs"})
    assert not list(state.volumes.glob(".*"))  # no half-made volume left


def test_in_use_refused_and_prune(state: StateRoot) -> None:
    used = V.prepare(state, V.parse_volume("used:/data"))
    V.create(state, "idle")
    anon_used = V.prepare(state, V.parse_volume("/cache"))
    anon_idle = V.create(state)
    write_container(state, "c" * 64, "web", [used, anon_used])
    with pytest.raises(VolumeError, match=r"remove used: volume is in use - \[c{64}\]"):
        V.remove(state, "used")
    with pytest.raises(VolumeError, match="in use"):
        V.remove(state, "idle", in_use=lambda n: ["x" * 64])  # a caller-supplied in-use view
    removed, _ = V.prune(state)
    assert removed == [anon_idle.name]  # only unused anonymous volumes by default
    (V.get(state, "idle").mountpoint / "f").write_bytes(b"x" * 5000)
    removed, space = V.prune(state, all_volumes=True)
    assert removed == ["idle"] and space >= 5000
    assert sorted(v.name for v in V.list_volumes(state)) == sorted(["used", anon_used.volume])


# -- parsing ------------------------------------------------------------------------------------

GOOD_V = [
    ("data:/srv", V.MountSpec("volume", "/srv", "data")),
    ("data:/srv:ro", V.MountSpec("volume", "/srv", "data", read_only=True)),
    ("data:/srv:rw,nocopy", V.MountSpec("volume", "/srv", "data", nocopy=True)),
    ("/var/lib/x", V.MountSpec("volume", "/var/lib/x", "")),
    ("/srv/", V.MountSpec("volume", "/srv", "")),
    ("/h:/c", V.MountSpec("bind", "/c", "/h", propagation="rprivate", create_source=True)),
    ("/h:/c:ro,Z", V.MountSpec("bind", "/c", "/h", True, "rprivate", "Z", create_source=True)),
    ("/h:/c:z,rshared", V.MountSpec("bind", "/c", "/h", False, "rshared", "z", create_source=True)),
    ("/h/../h2:/c:cached", V.MountSpec("bind", "/c", "/h2", propagation="rprivate", create_source=True)),
    ("./rel:/c", V.MountSpec("bind", "/c", "/base/rel", propagation="rprivate", create_source=True)),
]

BAD_V = [
    ("", "empty"),
    ("data:srv", "mount path must be absolute: 'srv'"),
    ("relative", "mount path must be absolute"),
    ("data:/", "destination can't be '/'"),
    (":/srv", "source can't be empty"),
    ("a:b:c:d", "too many colons"),
    ("data:/srv:rx", "unknown option 'rx'"),
    ("data:/srv:ro,rw", "ro and rw given twice"),
    ("data:/srv:shared", "propagation applies to bind mounts only"),
    ("/h:/c:nocopy", "nocopy applies to volumes only"),
    ("bad name:/srv", "not a valid volume name"),
    ("x:/srv", "not a valid volume name"),
]


@pytest.mark.parametrize(("spec", "want"), GOOD_V)
def test_parse_volume_good(spec: str, want: V.MountSpec) -> None:
    assert V.parse_volume(spec, cwd=Path("/base")) == want


@pytest.mark.parametrize(("spec", "message"), BAD_V)
def test_parse_volume_bad(spec: str, message: str) -> None:
    with pytest.raises(VolumeError, match="invalid mount specification") as e:
        V.parse_volume(spec)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert e.value.exit_code == 125


GOOD_MOUNT = [
    ("type=volume,src=data,dst=/srv", V.MountSpec("volume", "/srv", "data", origin="--mount")),
    ("source=data,target=/srv,readonly", V.MountSpec("volume", "/srv", "data", True, origin="--mount")),
    ("type=volume,destination=/srv,volume-nocopy", V.MountSpec("volume", "/srv", "", nocopy=True, origin="--mount")),
    ("type=volume,dst=/srv,ro=false", V.MountSpec("volume", "/srv", "", origin="--mount")),
    ("type=bind,src=/h,dst=/c,ro=1,bind-propagation=rslave",
     V.MountSpec("bind", "/c", "/h", True, "rslave", origin="--mount")),
    ("type=tmpfs,dst=/t,tmpfs-size=64m,tmpfs-mode=1770",
     V.MountSpec("tmpfs", "/t", tmpfs_options=("size=67108864", "mode=1770"), origin="--mount")),
]

BAD_MOUNT = [
    ("type=volume,src=data", "target is required"),
    ("type=bind,dst=/c", "bind mounts need a source"),
    ("type=bind,src=rel,dst=/c", "bind source must be an absolute path"),
    ("type=tmpfs,src=x,dst=/t", "tmpfs mounts take no source"),
    ("type=nfs,dst=/t", "unknown mount type 'nfs'"),
    ("type=volume,dst=/t,colour=blue", "unexpected key 'colour'"),
    ("type=volume,dst=/t,,", "empty field"),
    ("type=volume,dst=/t,dst=/u", "'dst' given twice"),
    ("type=volume,target=/t,dst=/u", "target given twice"),
    ("type=volume,dst=/t,readonly=maybe", "invalid value for readonly"),
    ("type=tmpfs,dst=/t,tmpfs-size=lots", "invalid size 'lots'"),
    ("type=tmpfs,dst=/t,tmpfs-mode=999", "invalid tmpfs-mode"),
    ("type=volume,dst=/t,tmpfs-size=1m", "tmpfs options do not apply to volumes"),
    ("type=volume,dst=/t,bind-propagation=shared", "bind-propagation applies to bind mounts only"),
    ("type=bind,src=/h,dst=/c,bind-propagation=weird", "invalid bind-propagation"),
    ("type=volume,src=bad/name,dst=/t", "not a valid volume name"),
]


@pytest.mark.parametrize(("spec", "want"), GOOD_MOUNT)
def test_parse_mount_good(spec: str, want: V.MountSpec) -> None:
    assert V.parse_mount(spec) == want


@pytest.mark.parametrize(("spec", "message"), BAD_MOUNT)
def test_parse_mount_bad(spec: str, message: str) -> None:
    with pytest.raises(VolumeError) as e:
        V.parse_mount(spec)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_parse_tmpfs_and_duplicates() -> None:
    t = V.parse_tmpfs("/run:rw,noexec,nosuid,size=65536k,mode=1777")
    assert t == V.MountSpec("tmpfs", "/run", tmpfs_options=("noexec", "nosuid", "size=67108864", "mode=1777"), origin="--tmpfs")
    assert V.parse_tmpfs("/t:ro").read_only
    assert V.parse_tmpfs("/t:size=50%").tmpfs_options == ("size=50%",)
    for bad, message in [("t", "must be absolute"), ("/t:bogus", "unknown tmpfs option 'bogus'"),
                         ("/t:mode=abc", "unknown tmpfs option 'mode=abc'")]:
        with pytest.raises(VolumeError, match=message):
            V.parse_tmpfs(bad)
    V.check_destinations([V.parse_volume("a1:/x"), V.parse_tmpfs("/y")])
    with pytest.raises(VolumeError, match="duplicate mount point: /x"):
        V.check_destinations([V.parse_volume("a1:/x"), V.parse_tmpfs("/x/")])


# -- prepare / populate -------------------------------------------------------------------------


def test_prepare_binds_tmpfs_and_records(state: StateRoot, tmp_path: Path) -> None:
    missing = tmp_path / "made" / "by" / "v"
    m = V.prepare(state, V.parse_volume(f"{missing}:/c:ro"))
    assert missing.is_dir() and m == V.Mount("bind", "/c", missing, True, "rprivate", mode="ro")
    assert m.to_record() == {"Type": "bind", "Name": "", "Source": str(missing), "Destination": "/c",
                             "Driver": "", "Mode": "ro", "RW": False, "Propagation": "rprivate",
                             "Anonymous": False}
    with pytest.raises(VolumeError, match="bind source path does not exist: /nonexistent/src"):
        V.prepare(state, V.parse_mount("type=bind,src=/nonexistent/src,dst=/c"))
    assert not Path("/nonexistent").exists()
    t = V.prepare(state, V.parse_mount("type=tmpfs,dst=/t,tmpfs-size=1m"))
    assert t.type == "tmpfs" and t.tmpfs_options == ("size=1048576",) and t.source is None
    v = V.prepare(state, V.parse_volume("cache:/var/cache"))
    assert v.source == V.get(state, "cache").mountpoint and v.volume == "cache"
    assert v.to_record()["Type"] == "volume" and v.to_record()["Name"] == "cache"
    a = V.prepare(state, V.parse_volume("/anon"))
    assert a.anonymous and V.get(state, a.volume).anonymous


def make_image_rootfs(root: Path) -> None:
    data = root / "var" / "lib" / "app"
    (data / "sub").mkdir(parents=True)
    os.chmod(data, 0o750)
    os.chown(data, 33, 33)
    (data / "conf").write_text("key=value\n")
    os.chown(data / "conf", 1000, 50)
    os.chmod(data / "conf", 0o640)
    (data / "sub" / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(data / "sub" / "run.sh", 0o4755)
    os.link(data / "conf", data / "conf.hard")
    os.symlink("conf", data / "conf.link")
    os.mkfifo(data / "pipe")
    os.utime(data / "conf", (1_000_000, 1_000_000))
    # an image whose mount point is a symlink (absolute, as images have): followed inside the root
    (root / "srv").symlink_to("/var/lib/app")
    (root / "etc").mkdir()
    (root / "escape").symlink_to("../../../../etc")


def test_populate_new_volume_from_image(state: StateRoot, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    make_image_rootfs(rootfs)
    m = V.prepare(state, V.parse_volume("appdata:/var/lib/app"), image_rootfs=rootfs)
    vol = m.source
    assert vol is not None
    st = os.stat(vol)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (33, 33, 0o750)
    conf = os.lstat(vol / "conf")
    assert (conf.st_uid, conf.st_gid, stat.S_IMODE(conf.st_mode)) == (1000, 50, 0o640)
    assert conf.st_mtime == 1_000_000
    assert (vol / "conf").read_text() == "key=value\n"
    assert os.lstat(vol / "conf.hard").st_ino == conf.st_ino
    assert os.readlink(vol / "conf.link") == "conf"
    assert stat.S_ISFIFO(os.lstat(vol / "pipe").st_mode)
    assert stat.S_IMODE(os.stat(vol / "sub" / "run.sh").st_mode) == 0o4755
    # second use, or a non-empty volume: nothing is copied again
    (vol / "conf").write_text("changed\n")
    assert not V.populate(V.get(state, "appdata"), rootfs, "/var/lib/app")
    assert (vol / "conf").read_text() == "changed\n"
    # through an absolute symlink in the image, confined to the rootfs
    s = V.prepare(state, V.parse_volume("viasym:/srv"), image_rootfs=rootfs)
    assert s.source is not None and (s.source / "conf").read_text() == "key=value\n"
    e = V.prepare(state, V.parse_volume("escape:/escape"), image_rootfs=rootfs)
    assert e.source is not None and list(e.source.iterdir()) == []  # rootfs/etc is empty
    # nocopy, and a destination the image does not have
    n = V.prepare(state, V.parse_volume("nocp:/var/lib/app:nocopy"), image_rootfs=rootfs)
    assert n.source is not None and list(n.source.iterdir()) == []
    x = V.prepare(state, V.parse_volume("none:/not/there"), image_rootfs=rootfs)
    assert x.source is not None and list(x.source.iterdir()) == []


# -- CLI ----------------------------------------------------------------------------------------


def run_cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PYBUILD, "--root", str(root), *args], capture_output=True, text=True)


def test_volume_cli(state: StateRoot) -> None:
    root = state.path
    assert run_cli(root, "volume", "create", "web-data", "--label", "tier=db").stdout == "web-data\n"
    anon = run_cli(root, "volume", "create").stdout.strip()
    assert len(anon) == 64
    ls = run_cli(root, "volume", "ls")
    assert ls.stdout.splitlines() == ["DRIVER    VOLUME NAME", f"local     {anon}", "local     web-data"]
    assert run_cli(root, "volume", "ls", "-q", "--filter", "label=tier=db").stdout == "web-data\n"
    assert run_cli(root, "volume", "ls", "-q", "-f", "name=web").stdout == "web-data\n"
    info = json.loads(run_cli(root, "volume", "inspect", "web-data").stdout)
    assert info[0]["Name"] == "web-data" and info[0]["Labels"] == {"tier": "db"}
    assert info[0]["Mountpoint"] == str(root / "volumes" / "web-data" / "_data")
    assert info[0]["Scope"] == "local" and info[0]["Driver"] == "local"
    m = V.prepare(state, V.parse_volume("web-data:/srv"))
    write_container(state, "d" * 64, "db", [m])
    busy = run_cli(root, "volume", "rm", "web-data")
    assert busy.returncode == 1
    assert busy.stderr == f"Error: remove web-data: volume is in use - [{'d' * 64}]\n"
    assert run_cli(root, "volume", "ls", "-q", "-f", "dangling=true").stdout == f"{anon}\n"
    missing = run_cli(root, "volume", "inspect", "nope")
    assert missing.returncode == 1 and missing.stderr == "Error: No such volume: nope\n"
    bad = run_cli(root, "volume", "create", "a")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "invalid volume name" in bad.stderr
    pruned = run_cli(root, "volume", "prune", "-f")
    assert pruned.stdout == f"Deleted Volumes:\n{anon}\n\nTotal reclaimed space: 0B\n"
    assert run_cli(root, "volume", "rm", "-f", "nope").returncode == 0


def test_volume_commands_load_no_parsers_typing_nor_datetime(tmp_path: Path) -> None:
    """``volume create|ls|inspect|rm`` need the store only: the package is lazy, so neither the
    ``-v`` parsers (``specs``: dataclasses) nor ``provision`` load; nor typing, nor datetime."""
    from test_startup_budget import loaded

    root = ["--root", str(tmp_path / "root")]
    for argv in (["volume", "create", "lean"], ["volume", "ls"], ["volume", "inspect", "lean"],
                 ["volume", "rm", "lean"]):
        mods = loaded([*root, *argv], tmp_path)
        assert "builder.runtime.volume.store" in mods
        back = mods & {"builder.runtime.volume.specs", "builder.runtime.volume.provision", "dataclasses",
                       "typing", "datetime"}
        assert not back, f"{argv} loads {sorted(back)}"
    assert run_cli(tmp_path / "root", "volume", "ls", "-q").stdout == ""
