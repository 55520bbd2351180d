"""An ``--rm`` container's run dir holds less for its teardown to remove: its volatile overlay
root names its dirs by their own paths (``rootfs.link_lowers(direct=True)``), so no ``l/<n>``,
``u``, ``w`` links are made and removed (each a journalled operation on the state root's
filesystem); where a path would not do (a separator character, a relative path, a page too
small), the links as before. A kept container's root and a build's keep the links (``fsck``
reads a run dir's ``u``). An ended sandbox's cgroups are removed by ``rmdir`` alone (what is in
a busy one killed first). Real namespaces, cgroups and overlay mounts (root, never skipped).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_sandbox_support import HostSnapshot, new_id

from builder.base.errors import SandboxError
from builder.base.state import StateRoot
from builder.core.rootfs import OVERLAY_OPTIONS, Root, link_lowers, prepare_root
from builder.core.sandbox import Executor, Process, Spec, default_mounts


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> StateRoot:
    return StateRoot.open(tmp_path_factory.mktemp("run-rm-rundir"))


@pytest.fixture
def host(tmp_path_factory: pytest.TempPathFactory) -> object:
    snap = HostSnapshot(str(tmp_path_factory.getbasetemp()))
    yield snap
    snap.assert_same()


def _root(tmp_path: Path, *lowers: str, volatile: bool = True) -> Root:
    for d in lowers:
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "up").mkdir()
    (tmp_path / "wk").mkdir()
    return Root(layers=tuple(str(tmp_path / d) for d in lowers), upper=str(tmp_path / "up"),
                work=str(tmp_path / "wk"), volatile=volatile)


def test_direct_names_the_dirs_by_their_paths_and_makes_nothing(tmp_path: Path) -> None:
    root = _root(tmp_path, "a", "b")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (tmp_path / "wk" / "work" / "incompat" / "volatile").mkdir(parents=True)
    data = link_lowers(root, run_dir, tmp_path / "a", direct=True)
    assert data == (f"lowerdir={tmp_path}/a:{tmp_path}/b:{tmp_path}/a,upperdir={tmp_path}/up,"
                    f"workdir={tmp_path}/wk,volatile,{OVERLAY_OPTIONS}")
    assert list(run_dir.iterdir()) == []
    assert not (tmp_path / "wk" / "work" / "incompat" / "volatile").exists()  # forgotten, as with links
    # the same root without direct: the links, as a kept container's and a build's
    linked = link_lowers(root, run_dir, None)
    assert linked == f"lowerdir=l/0:l/1,upperdir=u,workdir=w,volatile,{OVERLAY_OPTIONS}"
    assert sorted(p.name for p in run_dir.iterdir()) == ["l", "u", "w"]
    assert os.readlink(run_dir / "l" / "0") == str(tmp_path / "b")


@pytest.mark.parametrize("layer", ["with,comma", "with:colon", "back\\slash"])
def test_a_path_overlayfs_would_misread_gets_the_links(tmp_path: Path, layer: str) -> None:
    root = _root(tmp_path, "plain", layer)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    data = link_lowers(root, run_dir, None, direct=True)
    assert data == f"lowerdir=l/0:l/1,upperdir=u,workdir=w,volatile,{OVERLAY_OPTIONS}"
    assert os.readlink(run_dir / "l" / "0") == str(tmp_path / layer)


def test_a_relative_path_or_a_full_page_gets_the_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    root = _root(tmp_path, "a")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    rel = Root(layers=("a",), upper=root.upper, work=root.work, volatile=True)
    assert link_lowers(rel, run_dir, None, direct=True).startswith("lowerdir=l/0,upperdir=u,")
    assert os.readlink(run_dir / "l" / "0") == "a"
    long = [f"{'x' * 200}{i}" for i in range(25)]  # 25 paths of >200 bytes: over a page, not as links
    many = _root(tmp_path / "many", *long)
    run_many = tmp_path / "run-many"
    run_many.mkdir()
    assert link_lowers(many, run_many, None, direct=True).startswith("lowerdir=l/0:l/1:")
    assert len(list((run_many / "l").iterdir())) == 25
    # too many for the links too: refused, as before
    many_more = Root(layers=tuple(str(tmp_path / f"m{i}") for i in range(1100)), upper=root.upper,
                     work=root.work, volatile=True)
    for i in range(1100):
        (tmp_path / f"m{i}").mkdir()
    run_more = tmp_path / "run-more"
    run_more.mkdir()
    with pytest.raises(SandboxError, match=r"^too many layers for one overlay mount \(1100\)$"):
        link_lowers(many_more, run_more, None, direct=True)


@pytest.mark.parametrize("volatile", [True, False])
def test_a_sandbox_on_a_volatile_root_runs_without_links(
    busybox_layer: Path, tmp_path: Path, state: StateRoot, host: HostSnapshot, volatile: bool
) -> None:
    """A real sandbox: its run dir while it runs (no ``l``/``u``/``w`` for a volatile root, the
    links for a kept one), its root mounted all the same (what it writes lands in the upper
    dir), and nothing left of the run dir after it."""
    root = prepare_root([busybox_layer], tmp_path / "c", volatile=volatile)
    spec = Spec(process=Process(args=("sh", "-c", "read x; echo written > /f; hostname")), root=root,
                mounts=default_mounts(), hostname="box", id=new_id())
    out: list[bytes] = []
    r, w = os.pipe()
    sandbox = Executor(state).start(spec, stdin=r, stdout=out.append)
    os.close(r)
    try:
        names = sorted(p.name for p in (state.run / spec.id).iterdir())
    finally:
        os.write(w, b"go\n")
        os.close(w)
        result = sandbox.wait()
    assert result.exit_status == 0
    assert b"".join(out) == b"box\n"
    assert root.upper is not None and (Path(root.upper) / "f").read_text() == "written\n"
    links = {"l", "u", "w"}
    assert (links & set(names)) == (set() if volatile else links), names
    assert "rootfs" in names and "state.json" in names
    assert not (state.run / spec.id).exists()


def test_an_idle_cgroup_is_removed_without_a_look_inside(
    state: StateRoot, host: HostSnapshot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Cgroup.remove`` of a sandbox that has ended: ``rmdir`` is the check (no ``cgroup.procs``
    read, nothing killed); a busy one (a process in it) has what is in it killed, then goes."""
    from builder.core.sandbox import Resources
    from builder.core.sandbox.cgroups import Cgroup

    idle = Cgroup.create(new_id(), Resources(account=True), root=state.path)
    paths = list(idle.paths)
    assert paths and all(os.path.isdir(p) for p in paths)

    def no_look(self: Cgroup) -> None:
        raise AssertionError("an idle cgroup's processes were looked for")

    with monkeypatch.context() as m:
        m.setattr(Cgroup, "kill_all", no_look)
        idle.remove()
    assert idle.paths == [] and not any(os.path.exists(p) for p in paths)

    busy = Cgroup.create(new_id(), Resources(account=True), root=state.path)
    paths = list(busy.paths)
    said_r, said_w = os.pipe()
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child: joins the cgroups, says so, waits to be killed
        try:
            for f in busy.procs_files:
                with open(f, "w") as fh:
                    fh.write("0")
            os.write(said_w, b"in")
            os.read(hold_r, 1)
        finally:
            os._exit(3)
    os.close(said_w)
    os.close(hold_r)
    try:
        assert os.read(said_r, 2) == b"in" and busy.pids() == {pid}
    finally:
        busy.remove()  # (on a failure too: nothing left)
        os.close(said_r)
        os.close(hold_w)
        _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9
    assert busy.paths == [] and not any(os.path.exists(p) for p in paths)
