"""Host state of state roots that no longer exist: found by its tags, taken off the host.

Every bridge and host-side veth a root makes carries the alias ``pybuild <net12> <mount id>
<maj:min> <inode> <root>`` (the mount that held the root, the identity of its directory, its
real path); the network's iptables rules carry ``pybuild:<net12>``; its netns files are mounts
under the root, named by container id, which names the container's ``pybuild/<id>`` cgroups
and its port proxies; every sandbox's cgroups (containers on any network, RUN steps) are named
by an owner record (``cgroups.OWNERS``) holding the same identity. Roots are found through those
aliases and records only. One is *gone* when the mount
that held it is still there (a root on an unmounted file system is only absent, and is left
alone) and its directory is missing, is another directory now (same path, other inode: then
only its links and rules go), or has lost ``locks/`` (``rm -rf`` removed all but the busy
netns mount points; a live root takes a lock before it makes anything). Nothing untagged,
nothing of a live root, nothing of Docker's is touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from pathlib import Path

from builder.base.errors import NetworkError
from builder.base.state import identity
from builder.base.values import frozen
from builder.network import firewall, helpers, links

PREFIX = "pybuild "
_NETNS = re.compile(r"^(?P<root>/.+)/run/netns/(?P<cid>[0-9a-f]{64})$")


@frozen
class Swept:  # (a frozen value, no dataclass: every network command loads this)
    """What a sweep took off the host, by kind."""

    roots: tuple[str, ...] = ()
    links: tuple[str, ...] = ()
    rules: int = 0
    mounts: tuple[str, ...] = ()
    cgroups: tuple[str, ...] = ()
    processes: tuple[int, ...] = ()
    errors: tuple[str, ...] = ()


class _Root:
    """One incarnation of a root: its path and the identity its tags recorded."""

    def __init__(self, path: str, mount: str = "", inode: int = 0) -> None:
        self.path = path
        self.mount = mount  # "mount-id maj:min" of the mount that held it
        self.inode = inode
        self.links: list[tuple[str, str]] = []  # (name, net12)
        self.mounts: list[str] = []
        self.sids: list[str] = []  # sandboxes whose cgroups its owner records name
        self.replaced = False  # the path now holds another directory


def tag(root: Path, network_id: str) -> str:
    """The alias of a root's bridge or veth (the kernel keeps at most 255 bytes of it)."""
    path, ident = identity(root)
    return f"{PREFIX}{network_id[:12]} {ident} {path}"[:255]


def _mountinfo() -> list[tuple[str, str]]:
    """``("mount-id maj:min", mount point)`` of every mount, octal escapes decoded."""
    out = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            f = line.split(" ", 5)
            out.append((f"{f[0]} {f[2]}", f[4].encode().decode("unicode_escape")))
    return out


def _under(mnt: str, root: str) -> bool:
    """*mnt* is *root* or below it."""
    return mnt == root or mnt.startswith(root.rstrip("/") + "/")


def _candidates() -> dict[tuple[str, str, int], _Root]:
    """Roots named by link aliases, by (path, mount, inode): a path may have held several."""
    roots: dict[tuple[str, str, int], _Root] = {}
    for name, alias in links.tagged_links(PREFIX):
        parts = alias[len(PREFIX):].split(" ", 4)
        if len(parts) != 5 or len(alias) >= 255 or not parts[3].isdigit():
            continue  # cut short (its path cannot be trusted), or not ours
        net12, mnt_id, dev, ino, path = parts
        key = (path, f"{mnt_id} {dev}", int(ino))
        roots.setdefault(key, _Root(path, key[1], key[2])).links.append((name, net12))
    return roots


def _add_owners(roots: dict[tuple[str, str, int], _Root]) -> None:
    """The roots named by cgroup owner records, with the sandboxes they made."""
    from builder.core.sandbox import cgroups

    for sid, text, _ in cgroups.owners():
        parts = text.split(" ", 3)
        if len(parts) != 4 or not parts[2].isdigit() or not parts[3].startswith("/"):
            continue  # torn by a kill: ``remove_orphans`` drops it once it is old
        mnt_id, dev, ino, path = parts
        key = (path, f"{mnt_id} {dev}", int(ino))
        roots.setdefault(key, _Root(path, key[1], key[2])).sids.append(sid)


def _mounts_of(path: str, mounts: list[tuple[str, str]]) -> list[str]:
    """Mount points at or under *path*, deepest first."""
    return sorted({m for _, m in mounts if _under(m, path)}, key=lambda m: (-m.count("/"), m))


def _gone(r: _Root, mounted: set[str]) -> bool:
    if r.mount not in mounted:
        return False  # the mount that held it is gone: the root may be fine on its disk
    try:
        st = os.stat(r.path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    if (f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}", st.st_ino) != (r.mount.split()[1], r.inode):
        # another directory (maybe a live root) took the path: what is under it is not the
        # dead root's, only its tagged links and their rules are
        r.replaced = True
        return True
    return not os.path.isdir(os.path.join(r.path, "locks"))


def sweep(*, root: Path | None = None) -> Swept:
    """Remove what roots that are gone left on the host; with *root*, what that root left,
    gone or not (``system reset`` of a root, present or missing). Cheap when nothing is
    gone: one netlink dump, one read of mountinfo, a ``stat`` per root."""
    mounts = _mountinfo()
    roots = _candidates()
    _add_owners(roots)
    if root is not None:  # its netns files only: the caller deals with the root's other mounts
        path = os.path.realpath(root)
        dead = [r for r in roots.values() if r.path == path] or [_Root(path)]
        dead[0].mounts = sorted(m for _, m in mounts if (n := _NETNS.match(m)) and n["root"] == path)
    else:
        mounted = {mnt for mnt, _ in mounts}
        dead = [r for r in roots.values() if _gone(r, mounted)]
        for r in dead:
            r.mounts = [] if r.replaced else _mounts_of(r.path, mounts)
    if not dead:
        return Swept()
    return _remove(dead)


def _remove(dead: list[_Root]) -> Swept:
    cids = {m["cid"] for r in dead for mnt in r.mounts if (m := _NETNS.match(mnt))}
    cids.update(sid for r in dead for sid in r.sids)
    pids = _stop_helpers(cids, {net12 for r in dead for _, net12 in r.links})
    cgroups = _remove_cgroups(cids)
    gone_links = []
    # veths first: a bridge's removal would only unenslave them
    for r in dead:
        for name, _ in sorted(r.links, key=lambda x: not x[0].startswith("pbv")):
            with contextlib.suppress(Exception):
                if links.delete_link(name):
                    gone_links.append(name)
    rules = 0
    nets = {net12 for r in dead for _, net12 in r.links}
    errors = []
    if nets:
        try:  # a sweep never fails the command it runs in: what it could not do, it reports
            with firewall.locked():
                rules = firewall.remove_tagged_all(firewall.network_tag(n) for n in sorted(nets))
        except NetworkError as e:
            errors.append(str(e))
    unmounted = []
    from builder.base import syscalls

    sc = syscalls.real()
    for r in dead:
        for mnt in r.mounts:
            with contextlib.suppress(OSError):
                sc.umount2(mnt, syscalls.MNT_DETACH)
                unmounted.append(mnt)
        if not r.replaced and not os.path.isdir(os.path.join(r.path, "locks")):
            _remove_leftovers(r)
    return Swept(tuple(r.path for r in dead), tuple(gone_links), rules, tuple(unmounted), tuple(cgroups),
                 tuple(pids), tuple(errors))


def _remove_leftovers(r: _Root) -> None:
    """The netns mount point files ``rm -rf`` could not remove, and the dirs emptied with them
    (only empty ones: a root that is really gone leaves nothing else)."""
    for mnt in r.mounts:
        m = _NETNS.match(mnt)
        if m:
            with contextlib.suppress(OSError):
                os.unlink(mnt)
    for d in (f"{r.path}/run/netns", f"{r.path}/run", r.path):
        with contextlib.suppress(OSError):
            os.rmdir(d)


def _stop_helpers(cids: set[str], nets: set[str]) -> list[int]:
    """Port proxies of these containers and DNS servers of these networks (12-hex ids)."""
    killed = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmd = Path(entry.path, "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        ours = False
        if helpers.PROXY in cmd and "--id" in cmd[:-1]:  # ``proxy --id <cid> …``
            ours = cmd[cmd.index("--id") + 1] in cids
        elif helpers.DNS in cmd[:-2]:  # ``dns <root>/networks <network id> …``
            ours = cmd[cmd.index(helpers.DNS) + 2][:12] in nets
        if ours:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
    return killed


def _remove_cgroups(cids: set[str]) -> list[str]:
    """The ``pybuild/<id>`` cgroups of these sandboxes, their processes killed first."""
    if not cids:
        return []
    from builder.core.sandbox import cgroups

    layout = cgroups.detect()
    removed = []
    for cid in sorted(cids):
        paths = [str(p) for mnt in {*layout.v1.values(), *([layout.v2] if layout.v2 else [])}
                 if (p := Path(mnt) / cgroups.PARENT / cid).is_dir()]
        if not paths:
            cgroups.forget_owner(cid)
            continue
        v2 = next((p for p in paths if layout.v2 and p.startswith(layout.v2)), None)
        with contextlib.suppress(Exception):
            cgroups.Cgroup(id=cid, paths=paths, v2=v2).remove()
            removed += paths
    return removed
