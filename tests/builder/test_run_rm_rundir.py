"""An ``--rm`` container's run dir holds less for its teardown to remove: its volatile overlay
root names its lower dirs by their paths from the run dir (``<root>/run/<id>``:
``../../layers/…``; ``rootfs.link_lowers(direct=True)``), so no ``l/<n>`` links are made and
removed (each a journalled operation on the state root's filesystem), and no host path shows in
the container's mount table (``u`` and ``w`` stay links: a path to a work dir would end in
``/work``); where that would not do (a dir outside the state root, a separator
character, a symlinked ``run``, a page too small), the links as before. A kept container's root
and a build's keep the links (``fsck`` reads a run dir's ``u``). An ended sandbox's cgroups are
removed by ``rmdir`` alone (what is in a busy one killed first). Real namespaces, cgroups and
overlay mounts (root, never skipped).
"""

from __future__ import annotations

import os
import shutil
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


def _root(top: Path, *lowers: str, volatile: bool = True) -> Root:
    """A root whose dirs are in the state root *top* (layers/…, containers/c/…)."""
    for d in lowers:
        (top / "layers" / d).mkdir(parents=True)
    (top / "containers" / "c" / "upper").mkdir(parents=True)
    (top / "containers" / "c" / "work").mkdir()
    return Root(layers=tuple(str(top / "layers" / d) for d in lowers), upper=str(top / "containers" / "c" / "upper"),
                work=str(top / "containers" / "c" / "work"), volatile=volatile)


def _run_dir(top: Path, sid: str = "sid") -> Path:
    run_dir = top / "run" / sid
    run_dir.mkdir(parents=True)
    return run_dir


def test_direct_names_the_dirs_from_the_run_dir_and_makes_nothing(tmp_path: Path) -> None:
    root = _root(tmp_path, "a", "b")
    run_dir = _run_dir(tmp_path)
    (tmp_path / "containers" / "c" / "work" / "work" / "incompat" / "volatile").mkdir(parents=True)
    (run_dir / "stubs").mkdir()
    data = link_lowers(root, run_dir, run_dir / "stubs", direct=True)
    assert data == ("lowerdir=../../run/sid/stubs:../../layers/b:../../layers/a,"
                    f"upperdir=u,workdir=w,volatile,{OVERLAY_OPTIONS}")
    assert str(tmp_path) not in data
    assert sorted(p.name for p in run_dir.iterdir()) == ["stubs", "u", "w"]
    assert os.readlink(run_dir / "w") == str(tmp_path / "containers" / "c" / "work")
    run_dir = _run_dir(tmp_path, "other")
    (run_dir / "stubs").mkdir()
    assert not (tmp_path / "containers" / "c" / "work" / "work" / "incompat" / "volatile").exists()
    # the same root without direct: the links, as a kept container's and a build's
    linked = link_lowers(root, run_dir, None)
    assert linked == f"lowerdir=l/0:l/1,upperdir=u,workdir=w,volatile,{OVERLAY_OPTIONS}"
    assert sorted(p.name for p in run_dir.iterdir()) == ["l", "stubs", "u", "w"]
    assert os.readlink(run_dir / "l" / "0") == str(tmp_path / "layers" / "b")


@pytest.mark.parametrize("layer", ["with,comma", "with:colon", "back\\slash"])
def test_a_path_overlayfs_would_misread_gets_the_links(tmp_path: Path, layer: str) -> None:
    root = _root(tmp_path, "plain", layer)
    run_dir = _run_dir(tmp_path)
    data = link_lowers(root, run_dir, None, direct=True)
    assert data == f"lowerdir=l/0:l/1,upperdir=u,workdir=w,volatile,{OVERLAY_OPTIONS}"
    assert os.readlink(run_dir / "l" / "0") == str(tmp_path / "layers" / layer)


def test_outside_the_state_root_a_symlinked_run_or_a_full_page_gets_the_links(tmp_path: Path) -> None:
    root = _root(tmp_path / "top", "a")
    (tmp_path / "elsewhere").mkdir()
    outside = Root(layers=(str(tmp_path / "elsewhere"),), upper=root.upper, work=root.work, volatile=True)
    run_dir = _run_dir(tmp_path / "top", "one")
    assert link_lowers(outside, run_dir, None, direct=True).startswith("lowerdir=l/0,upperdir=u,")
    assert os.readlink(run_dir / "l" / "0") == str(tmp_path / "elsewhere")
    # ``run`` a symlink: ``..`` from the run dir would not lead back to the state root
    (tmp_path / "real-run").mkdir()
    (tmp_path / "top2").mkdir()
    os.symlink(tmp_path / "real-run", tmp_path / "top2" / "run")
    two = _root(tmp_path / "top2", "a")
    linked_run = tmp_path / "top2" / "run" / "two"
    linked_run.mkdir()
    assert link_lowers(two, linked_run, None, direct=True).startswith("lowerdir=l/0,upperdir=u,")
    long = [f"{'x' * 200}{i}" for i in range(25)]  # 25 names of >200 bytes: over a page, not as links
    many = _root(tmp_path / "top3", *long)
    run_many = _run_dir(tmp_path / "top3")
    assert link_lowers(many, run_many, None, direct=True).startswith("lowerdir=l/0:l/1:")
    assert len(list((run_many / "l").iterdir())) == 25
    # too many for the links too: refused, as before
    many_more = Root(layers=tuple(str(tmp_path / f"m{i}") for i in range(1100)), upper=root.upper,
                     work=root.work, volatile=True)
    for i in range(1100):
        (tmp_path / f"m{i}").mkdir()
    run_more = _run_dir(tmp_path / "top", "more")
    with pytest.raises(SandboxError, match=r"^too many layers for one overlay mount \(1100\)$"):
        link_lowers(many_more, run_more, None, direct=True)


@pytest.mark.parametrize("volatile", [True, False])
def test_a_sandbox_on_a_volatile_root_runs_without_links(
    busybox_layer: Path, tmp_path: Path, state: StateRoot, host: HostSnapshot, volatile: bool
) -> None:
    """A real sandbox: its run dir while it runs (no ``l/`` for a volatile root, the links for a
    kept one), its root mounted all the same (what it writes lands in the upper
    dir), and nothing left of the run dir after it."""
    sid = new_id()
    root = prepare_root([busybox_layer], state.path / "containers" / sid, volatile=volatile)
    spec = Spec(process=Process(args=("sh", "-c", f"read x; echo written > /f; hostname; grep -c {state.path} "
                                      "/proc/self/mountinfo; true")), root=root,
                mounts=default_mounts(), hostname="box", id=sid)
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
    assert b"".join(out) == b"box\n0\n"  # (no host path in its mount table)
    assert root.upper is not None and (Path(root.upper) / "f").read_text() == "written\n"
    assert ("l" in names) == (not volatile) and {"u", "w"} <= set(names), names
    assert "rootfs" in names and "state.json" in names
    assert not (state.run / spec.id).exists()
    shutil.rmtree(state.path / "containers" / sid)  # (the container's dir: its owner's, here the test's)


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
