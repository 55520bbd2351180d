"""An ``--rm`` container's overlay root is mounted ``volatile`` (issue 15): its upper dir is
thrown away when it ends, so the unmount, when its mount namespace goes, need not sync the
whole upper filesystem (an ext4 journal commit the next ``run --rm`` record delete waited on).
A kept container's root is not. ``rootfs.forget_volatile`` lets a work dir that a volatile
overlay used mount again (the kernel refuses it until ``work/incompat/volatile`` goes)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from builder.base import syscalls as sc
from builder.core.rootfs import OVERLAY_OPTIONS, forget_volatile

ROOT_LINE = "grep ' / / ' /proc/self/mountinfo"


def test_rm_root_is_volatile_a_kept_one_is_not(busybox: Any) -> None:
    rm = busybox("run", "--rm", "--network", "none", "busybox", "sh", "-c", ROOT_LINE).stdout
    assert " - overlay " in rm and "volatile" in rm, rm
    kept = busybox("run", "--name", "kept", "--network", "none", "busybox", "sh", "-c", ROOT_LINE).stdout
    assert " - overlay " in kept and "volatile" not in kept, kept
    busybox("rm", "kept")
    assert busybox("ps", "-aq").stdout.strip() == ""


def _mount_twice(tmp: Path, forget: bool) -> int:
    """In a child with a private mount namespace: mount a volatile overlay, unmount it, then
    (after ``forget_volatile`` when *forget*) mount its dirs again; 0 when the second mount
    worked, 1 when the kernel refused it."""
    for d in ("l", "u", "w", "m"):
        (tmp / d).mkdir()
    (tmp / "l" / "f").write_text("x")
    data = f"lowerdir={tmp}/l,upperdir={tmp}/u,workdir={tmp}/w,{OVERLAY_OPTIONS}"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 2
        try:
            s = sc.real()
            sc.private_mount_namespace(s)
            s.mount("overlay", str(tmp / "m"), "overlay", 0, data + ",volatile")
            (tmp / "m" / "g").write_text("y")
            s.umount2(str(tmp / "m"))
            if forget:
                forget_volatile(tmp / "w")
            try:
                s.mount("overlay", str(tmp / "m"), "overlay", 0, data + ",volatile")
            except OSError:
                code = 1
            else:
                code = 0 if (tmp / "m" / "g").read_text() == "y" else 3
                s.umount2(str(tmp / "m"))
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_forget_volatile_lets_the_work_dir_mount_again(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert _mount_twice(tmp_path / "a", forget=False) == 1  # the kernel's guard against a crash
    assert _mount_twice(tmp_path / "b", forget=True) == 0  # and the upper dir's file is there
