"""Rootless resource limits through a delegated cgroup v2 subtree (issue 17).

A user may write a cgroup v2 directory only where root (systemd's ``user@UID.service``,
``Delegate=yes``) chowned it to the user: the *delegated* subtree. Rootless, a sandbox asked for
limits gets ``<delegated>/pybuild/<id>`` with the controllers it needs enabled on the way, and
``memory.max``, ``cpu.max``, ``pids.max`` written as root's v2 cgroups get them
(``Cgroup._limit``); without limits, no cgroup, as before. Where there is no delegated
directory, or its ``cgroup.controllers`` lacks a controller a flag needs (on a v1 or hybrid host
the controllers are bound to v1: the v2 mount has none), the flag is refused in one line saying
why.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from builder import TYPE_CHECKING
from builder.base.errors import SandboxError
from builder.core.sandbox.cgroups import PARENT, Cgroup, Layout, rootless_check

if TYPE_CHECKING:
    from builder.core.sandbox.spec import Resources

#: the v2 controller each limit flag needs
CONTROLLER = {"--memory": "memory", "--cpus": "cpu", "--cpu-shares": "cpu", "--pids-limit": "pids",
              "--cpuset-cpus": "cpuset"}


def asked(resources: Resources) -> list[str]:
    """The limit flags *resources* carries, in ``docker run``'s order."""
    return [flag for flag, v in (("--memory", resources.memory), ("--cpus", resources.cpus),
                                 ("--cpu-shares", resources.cpu_shares), ("--pids-limit", resources.pids),
                                 ("--cpuset-cpus", resources.cpuset_cpus or None))
            if v is not None]


def own_cgroup(layout: Layout, proc_cgroup: str | None = None) -> Path | None:
    """This process's directory in the v2 hierarchy (the ``0::`` line of ``/proc/self/cgroup``)."""
    if layout.v2 is None:
        return None
    if proc_cgroup is None:
        try:
            proc_cgroup = Path("/proc/self/cgroup").read_text()
        except OSError:
            return None
    for line in proc_cgroup.splitlines():
        if line.startswith("0::"):
            return Path(layout.v2, line[3:].strip().lstrip("/"))
    return None


def delegated_dir(layout: Layout, proc_cgroup: str | None = None) -> Path | None:
    """The nearest directory from this process's v2 cgroup up that this user may write (its
    ``cgroup.procs`` and ``cgroup.subtree_control`` too): the subtree delegated to it."""
    d = own_cgroup(layout, proc_cgroup)
    if d is None or layout.v2 is None:
        return None
    top = Path(layout.v2)
    while d != top and top in d.parents:
        if all(os.access(p, os.W_OK) for p in (d, d / "cgroup.procs", d / "cgroup.subtree_control")):
            return d
        d = d.parent
    return None


def controllers(layout: Layout) -> tuple[Path | None, list[str]]:
    """The delegated directory (or None) and the controllers it offers, for ``info``."""
    sub = delegated_dir(layout)
    have: list[str] = []
    if sub is not None:
        try:
            have = (sub / "cgroup.controllers").read_text().split()
        except OSError:  # unreadable: the subtree offers no controller we can see
            pass
    return sub, have


def check(resources: Resources, layout: Layout, delegated: Path | None) -> list[str]:
    """The v2 controllers the limits of *resources* need, all present in *delegated*'s
    ``cgroup.controllers``; else a one-line refusal saying which is missing and why."""
    flags = asked(resources)
    if not flags:
        return []
    if delegated is None:
        rootless_check(resources, layout)  # raises: v1, or no subtree delegated to this user
        return []
    try:
        have = (delegated / "cgroup.controllers").read_text().split()
    except OSError as e:
        raise SandboxError(f"rootless: cannot read {delegated}/cgroup.controllers: {e.strerror}") from None
    need = sorted({CONTROLLER[f] for f in flags})
    for flag in flags:
        c = CONTROLLER[flag]
        if c not in have:
            v1 = f"; {c} is bound to cgroup v1 on this host" if c in layout.v1 else ""
            raise SandboxError(
                f"rootless: {flag} needs the {c} controller, and the cgroup v2 subtree delegated to "
                f"this user ({delegated}) has no {c} controller (cgroup.controllers: "
                f"{' '.join(have) or 'empty'}{v1}): run as root to set resource limits")
    return need


def _enable(d: Path, controllers: list[str]) -> None:
    try:
        with open(d / "cgroup.subtree_control", "w") as f:
            f.write(" ".join("+" + c for c in controllers))
    except OSError as e:
        hint = (" (it holds processes: start pybuild in a cgroup below it, e.g. `systemd-run --user "
                "--scope pybuild …`)" if e.errno == errno.EBUSY else "")
        raise SandboxError(f"rootless: cannot enable {' '.join(controllers)} in {d}: {e.strerror}{hint}") from None


def create(sandbox_id: str, resources: Resources, layout: Layout, *, proc_cgroup: str | None = None) -> Cgroup:
    """A rootless sandbox's cgroup: none without limits, else ``<delegated>/pybuild/<id>``."""
    delegated = delegated_dir(layout, proc_cgroup) if asked(resources) else None
    need = check(resources, layout, delegated)
    cg = Cgroup(id=sandbox_id)
    if not need or delegated is None:
        return cg
    _enable(delegated, need)
    parent = delegated / PARENT
    parent.mkdir(exist_ok=True)
    _enable(parent, need)
    p = parent / sandbox_id
    try:
        p.mkdir()
    except OSError as e:
        raise SandboxError(f"rootless: cannot make the cgroup {p}: {e.strerror}") from None
    cg.paths.append(str(p))
    cg.v2, cg.v2_limits = str(p), True
    cg.memory = str(p) if "memory" in need else None
    try:
        cg._limit(resources, layout)
    except BaseException:
        cg.remove()
        raise
    return cg
