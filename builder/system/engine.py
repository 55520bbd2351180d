"""System-wide calls on one state root: ``info``, ``version``, ``df`` (disk usage) and
``prune`` (``reset`` is ``builder.system.reset``'s). The CLI and ``pybuild serve`` both call these;
nothing here prints.

* ``info(state)``: Docker's ``/info`` object. ``version_info()``: its ``/version`` object (git's
  commit and runc's version kept in the user cache dir: a repeated ``version`` spawns nothing).
* ``df(state)``: Docker's ``/system/df`` object (``LayersSize``, ``Images``, ``Containers``,
  ``Volumes``, ``BuildCache``); ``df_summary(usage)`` the four rows of ``docker system df``.
  Sizes are bytes on disk: image layers as the store holds them, containers' writable layers,
  volumes' data, the build cache's own blobs and snapshots.
* ``prune(state, all=, volumes=)``: ``docker system prune`` (containers, networks, volumes,
  images, build cache, in Docker's order); ``PRUNE_WARNING``/``prune_warning()`` its prompt.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

from builder import TYPE_CHECKING
from builder.base.units import rfc3339_seconds
from builder.base.values import frozen
from grammar import cache_dir
from registry.errors import RegistryError

if TYPE_CHECKING:
    from typing import Any

    from builder.base.state import StateRoot

#: the Engine API version the CLI's output and ``pybuild serve`` speak, and the oldest served
API_VERSION = "1.41"
MIN_API_VERSION = "1.24"
DISTRIBUTION = "pybuild-oci-toolkit"


# -- version and info ---------------------------------------------------------------------------
def version() -> str:
    """pybuild's version (the installed distribution's; the source tree's when not installed)."""
    # the installed distribution's dist-info folder names its version: a scan of the package
    # folders on the import path costs well under a millisecond, ``importlib.metadata`` ~20 ms
    prefix = DISTRIBUTION.replace("-", "_") + "-"
    for entry in sys.path:
        if entry.rpartition("/")[2] not in ("site-packages", "dist-packages"):
            continue
        with contextlib.suppress(OSError):
            for name in os.listdir(entry):
                if name.startswith(prefix) and name.endswith(".dist-info"):
                    return name[len(prefix):-len(".dist-info")]
    import tomllib  # not installed: the source tree's pyproject.toml

    pyproject = Path(_TREE, "pyproject.toml")
    with contextlib.suppress(OSError, ValueError, KeyError):
        return str(tomllib.loads(pyproject.read_text())["project"]["version"])
    return "0.0.0"


# the source tree (``builder/``'s parent), by this module's dotted name rather than a fixed depth
_TREE = os.path.realpath(__file__).rsplit(os.sep, __name__.count(".") + 1)[0]


# -- git's commit and runc's version: asked once, then kept ---------------------------------------
# Spawning git and runc (a fork, exec and start-up each) cost ``version`` more than all the rest:
# their outputs are kept in the user's cache dir (``grammar.cache_dir()``), under a key that
# changes with what they depend on (the commit HEAD names; runc's file): asked again only then.
PROBES_FILE = "version-probes.json"


def _git_head() -> str | None:
    """The source tree's HEAD commit, read from ``.git``; '' when the tree is no checkout, None
    when its HEAD is not read here (a linked worktree, an unborn branch): git is asked then."""
    git = os.path.join(_TREE, ".git")
    if not os.path.exists(git):
        return ""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        with open(os.path.join(git, "HEAD")) as f:
            head = f.read().strip()
        if not head.startswith("ref: "):
            return head or None  # a detached HEAD names its commit
        ref = head.removeprefix("ref: ")
        with contextlib.suppress(FileNotFoundError), open(os.path.join(git, ref)) as f:
            return f.read().strip() or None
        with open(os.path.join(git, "packed-refs")) as f:
            for line in f:
                commit, _, name = line.rstrip("\n").partition(" ")
                if name == ref:
                    return commit
    return None


def _runc_file() -> str:
    """``runc`` where a spawn finds it (the first executable file of that name in
    ``os.get_exec_path()``, as ``execvp`` searches) and its file's identity; '' when none."""
    for directory in os.get_exec_path():
        path = os.path.join(directory, "runc")
        with contextlib.suppress(OSError):
            if os.path.isfile(path) and os.access(path, os.X_OK):
                st = os.stat(path)
                return f"{path}:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
    return ""


def _runc_answer(out: str) -> tuple[str, str]:
    """(version, commit) from ``runc --version``'s output ('' for a line it lacks)."""
    ver = commit = ""
    for line in out.splitlines():
        if line.startswith("runc version "):
            ver = line.split()[2]
        elif line.startswith("commit:"):
            commit = line.split(":", 1)[1].strip()
    return ver, commit


def _probed(*, git: bool, runc: bool) -> tuple[str, tuple[str, str]]:
    """(the tree's short commit, (runc's version, its commit)) as ``git rev-parse --short HEAD``
    and ``runc --version`` answer ('' when absent or not asked): their kept outputs, else theirs,
    asked side by side (a success's output is kept; that kind's older key goes)."""
    head = _git_head() if git else ""
    asks = {}  # kind -> (its key, '' when not to be kept; the command; its timeout)
    if head != "":  # a checkout (git is asked every time when its HEAD was not read)
        asks["git"] = (f"git:{head}" if head else "", ["git", "-C", _TREE, "rev-parse", "--short", "HEAD"], 5)
    if runc and (runc_file := _runc_file()):
        asks["runc"] = (f"runc:{runc_file}", ["runc", "--version"], 10)
    directory = cache_dir() if asks else None
    path = directory / PROBES_FILE if directory is not None else None
    kept: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError, TypeError):
        kept = dict(json.loads(path.read_text())) if path is not None else {}
    outs = {kind: kept[key] for kind, (key, _, _) in asks.items() if key and isinstance(kept.get(key), str)}
    if len(outs) == len(asks):  # all kept (or nothing to ask)
        return outs.get("git", "").strip(), _runc_answer(outs.get("runc", ""))
    from builder.system import probe  # (and subprocess) only for what is not kept

    changed = False
    procs = {kind: probe.started(argv) for kind, (_, argv, _) in asks.items() if kind not in outs}
    for kind, proc in procs.items():
        key, _, timeout = asks[kind]
        status, outs[kind] = probe.finished(proc, timeout)
        if status != 0 and kind == "git":  # (runc's output is read whatever its status)
            outs[kind] = ""
        elif status == 0 and key:
            kept = {k: v for k, v in kept.items() if not k.startswith(f"{kind}:")} | {key: outs[kind]}
            changed = True
    if changed and path is not None:  # (written under a private name, then renamed into place)
        tmp = path.with_name(f".{PROBES_FILE}.{os.getpid()}.{id(kept)}")  # (serve: threads)
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(kept))
            os.replace(tmp, path)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)  # (when the rename failed)
    return outs.get("git", "").strip(), _runc_answer(outs.get("runc", ""))


def git_commit() -> str:
    """The source tree's commit (short), when pybuild runs from a git checkout; else ''."""
    return _probed(git=True, runc=False)[0]


def arch() -> str:
    """The machine in Go's GOARCH words (amd64, arm64, …), as Docker shows it."""
    m = os.uname().machine  # what ``platform.machine()`` answers, without importing platform
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
            "i386": "386", "ppc64le": "ppc64le", "s390x": "s390x"}.get(m, m)


def python_version() -> str:
    """The interpreter's version, as ``platform.python_version()`` gives it (``platform``
    costs milliseconds to import)."""
    return sys.version.split()[0]


def runc_version() -> tuple[str, str]:
    """(version, commit) of ``runc`` on PATH, ('', '') when absent."""
    return _probed(git=False, runc=True)[1]


def cgroup_version() -> str:
    """"1" on a v1 or hybrid host (controllers on v1 hierarchies), "2" on a unified one."""
    from builder.core.sandbox import cgroups

    return str(cgroups.detect().version or 2)


def version_info() -> dict[str, Any]:
    """Docker's ``/version`` object for the local engine (the library itself: no daemon)."""
    commit, (runc, runc_commit) = _probed(git=True, runc=True)
    ver = version()
    python = f"python{python_version()}"
    cgroups = cgroup_version()
    components: list[dict[str, Any]] = [{
        "Name": "Engine", "Version": ver,
        "Details": {"ApiVersion": API_VERSION, "Arch": arch(), "BuildTime": "",
                    "Experimental": "false", "GitCommit": commit, "GoVersion": python,
                    "KernelVersion": os.uname().release, "MinAPIVersion": MIN_API_VERSION,
                    "Os": "linux", "StorageDriver": "overlay", "CgroupDriver": "cgroupfs",
                    "CgroupVersion": cgroups},
    }]
    if runc:
        components.append({"Name": "runc", "Version": runc, "Details": {"GitCommit": runc_commit}})
    return {
        "Platform": {"Name": "pybuild"},
        "Components": components,
        "Version": ver,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": components[0]["Details"]["GitCommit"],
        "GoVersion": python,
        "Os": "linux",
        "Arch": arch(),
        "KernelVersion": os.uname().release,
        "BuildTime": "",
    }


def _mem_total() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    return 0


def _os_name() -> str:
    with contextlib.suppress(OSError):
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    return "Linux"


def engine_id(state: StateRoot) -> str:
    """A stable ID for this state root (dockerd keeps one in its root too); first writer wins."""
    import uuid

    path = state.path / "engine-id"
    with contextlib.suppress(FileNotFoundError):
        return path.read_text().strip()
    tmp = path.with_name(f".engine-id.{os.getpid()}")
    tmp.write_text(str(uuid.uuid4()).upper() + "\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()


def _backing_fs(path: Path) -> str:
    """The file system under *path* (``/proc/self/mountinfo``, longest mount point prefix)."""
    best, fstype = "", ""
    target = str(path.resolve())
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            pre, _, post = line.partition(" - ")
            mnt = pre.split()[4]
            if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, fstype = mnt, post.split()[0]
    return fstype


def info(state: StateRoot) -> dict[str, Any]:
    """Docker's ``/info`` object for this state root (what pybuild has; the rest in zero form)."""
    import shutil
    from socket import gethostname  # (and its enums: ~2 ms) not for ``version``

    from builder.network.model import DRIVERS
    from builder.runtime.containers import lifecycle

    running = stopped = paused = 0
    for c in lifecycle.list_containers(state, all=True):
        if c.state.status == "paused":
            paused += 1
        elif c.state.running:
            running += 1
        else:
            stopped += 1
    layout_version = cgroup_version()
    runc, runc_commit = runc_version()
    runtimes: dict[str, Any] = {"pybuild": {"path": "builtin"}}
    if runc:
        runtimes["runc"] = {"path": shutil.which("runc") or "runc"}
    networks = sorted({*DRIVERS, "host", "null"})
    out: dict[str, Any] = {
        "ID": engine_id(state),
        "Containers": running + stopped + paused, "ContainersRunning": running,
        "ContainersPaused": paused, "ContainersStopped": stopped,
        # one per image ID, however many tags it has (as dockerd counts)
        "Images": len({str(r.image_id or r.descriptor.digest)
                       for r in state.image_store().images()}),
        "Driver": "overlay",
        "DriverStatus": [["Backing Filesystem", _backing_fs(state.path) or "unknown"],
                         ["Supports d_type", "true"]],
        "DockerRootDir": str(state.path),
        "Plugins": {"Volume": ["local"], "Network": networks, "Authorization": None,
                    "Log": ["json-file"]},
        "MemoryLimit": True, "SwapLimit": False, "KernelMemory": False, "CpuCfsPeriod": True,
        "CpuCfsQuota": True, "CPUShares": True, "CPUSet": True, "PidsLimit": True,
        "IPv4Forwarding": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"
        if Path("/proc/sys/net/ipv4/ip_forward").exists() else False,
        "BridgeNfIptables": True, "BridgeNfIp6tables": True, "Debug": False,
        "NFd": len(os.listdir("/proc/self/fd")), "OomKillDisable": False, "NGoroutines": 0,
        "SystemTime": time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime()),
        "LoggingDriver": "json-file", "CgroupDriver": "cgroupfs",
        "CgroupVersion": layout_version, "NEventsListener": 0,
        "KernelVersion": os.uname().release, "OperatingSystem": _os_name(), "OSVersion": "",
        "OSType": "linux", "Architecture": os.uname().machine,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {"AllowNondistributableArtifactsCIDRs": [],
                           "AllowNondistributableArtifactsHostnames": [],
                           "InsecureRegistryCIDRs": ["127.0.0.0/8"], "IndexConfigs": {},
                           "Mirrors": [m for m in [os.environ.get("PYBUILD_REGISTRY_MIRROR", "")] if m]},
        "NCPU": os.cpu_count() or 1, "MemTotal": _mem_total(), "GenericResources": None,
        "HttpProxy": os.environ.get("HTTP_PROXY", ""), "HttpsProxy": os.environ.get("HTTPS_PROXY", ""),
        "NoProxy": os.environ.get("NO_PROXY", ""), "Name": gethostname(), "Labels": [],
        "ExperimentalBuild": False, "ServerVersion": version(), "Runtimes": runtimes,
        "DefaultRuntime": "pybuild",
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive",
                  "ControlAvailable": False, "Error": "", "RemoteManagers": None},
        "LiveRestoreEnabled": True, "Isolation": "", "InitBinary": "docker-init",
        "ContainerdCommit": {"ID": "", "Expected": ""},
        "RuncCommit": {"ID": runc_commit, "Expected": runc_commit},
        "InitCommit": {"ID": "", "Expected": ""},
        "SecurityOptions": ["name=cgroupns"], "Warnings": None,
    }
    if "_PYBUILD_ROOTLESS" in os.environ:  # the overlay driver chosen, no cgroups, warnings
        from builder.base import rootless
        from builder.core import rootfs
        from builder.core.sandbox import cgroups, delegated

        out.update(rootless.info_fields(rootfs.overlay_driver(state.containers), out,
                                        *delegated.controllers(cgroups.detect())))
    return out


# -- df -----------------------------------------------------------------------------------------
def _du(path: Path) -> int:
    """Bytes allocated under *path* (hard links counted once)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(path):
        for n in filenames + dirnames:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, n))
                if st.st_nlink > 1 and not os.path.isdir(os.path.join(dirpath, n)):
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def _images_usage(state: StateRoot, users: dict[str, int]) -> tuple[int, list[dict[str, Any]]]:
    """(LayersSize, Images): layers shared by several images count once in LayersSize."""
    store = state.image_store()
    images: dict[str, dict[str, Any]] = {}
    layers: dict[str, dict[str, int]] = {}  # image id -> layer digest -> size
    for rec in store.images():
        iid = str(rec.image_id or rec.descriptor.digest)
        entry = images.get(iid)
        if entry is None:
            try:
                img = store.image(rec.descriptor)
            except (RegistryError, OSError, ValueError):
                continue
            layers[iid] = {str(d.digest): d.size for d in img.layers}
            entry = images[iid] = {
                "Id": iid, "ParentId": "", "RepoTags": [], "RepoDigests": [],
                "Created": _epoch(img.config.created), "Size": sum(layers[iid].values()),
                "SharedSize": 0, "VirtualSize": sum(layers[iid].values()),
                "Labels": dict(img.config.container_config.labels or {}),
                "Containers": users.get(iid, 0),
            }
        if rec.reference is not None:
            entry["RepoTags"].append(rec.reference.familiar)
    count: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for ls in layers.values():
        for d, s in ls.items():
            count[d] = count.get(d, 0) + 1
            sizes[d] = s
    for iid, entry in images.items():
        entry["SharedSize"] = sum(s for d, s in layers[iid].items() if count[d] > 1)
        if not entry["RepoTags"]:
            entry["RepoTags"] = ["<none>:<none>"]
    return sum(sizes.values()), sorted(images.values(), key=lambda e: -e["Created"])


def _epoch(created: str | None) -> int:
    return int(rfc3339_seconds(created) or 0)


def _containers_usage(state: StateRoot) -> list[dict[str, Any]]:
    from builder.runtime.containers import inspect, lifecycle

    table = lifecycle.network_endpoints(state)
    out = []
    for c in lifecycle.list_containers(state, all=True):
        with contextlib.suppress(Exception):
            out.append(inspect.summary(state, c, table=table, size=True))
    return out


def _volumes_usage(state: StateRoot) -> list[dict[str, Any]]:
    from builder.runtime.volume import store as volumes

    users = volumes.containers_using(state)
    out = []
    for vol in volumes.list_volumes(state):
        d = vol.to_json()
        d["UsageData"] = {"Size": _du(vol.mountpoint), "RefCount": len(users.get(vol.name, []))}
        out.append(d)
    return out


def _cache_usage(state: StateRoot) -> list[dict[str, Any]]:
    """One entry per build cache record: its layer (a hard link in the cache, shared when an
    image in the store holds it too) or its unpacked snapshot."""
    from builder.imagebuild.cache import BuildCache

    store = state.image_store()
    cache = BuildCache(state.cache, store, layers=state.layers)
    in_images = {str(d) for d in store.referenced()}
    out = []
    for r in cache.inputs_index():
        size = 0
        shared = False
        if r.snapshot and r.diff_id is not None:
            size = _du(state.layers / r.diff_id.encoded)
        elif r.layer is not None:
            size = r.layer.size
            shared = str(r.layer.digest) in in_images
        last = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.last_used)) if r.last_used else None
        out.append({
            "ID": r.key[-25:] if len(r.key) > 25 else r.key, "Parent": "",
            "Type": "regular", "Description": r.created_by, "InUse": False,
            "Shared": shared, "Size": size, "CreatedAt": r.created or last,
            "LastUsedAt": last, "UsageCount": 1,
        })
    return out


def df(state: StateRoot) -> dict[str, Any]:
    """Docker's ``/system/df`` object for this root."""
    from builder.runtime.containers import lifecycle

    users: dict[str, int] = {}
    for c in lifecycle.list_containers(state, all=True):
        users[c.image_id] = users.get(c.image_id, 0) + 1
    layers_size, images = _images_usage(state, users)
    return {"LayersSize": layers_size, "Images": images, "Containers": _containers_usage(state),
            "Volumes": _volumes_usage(state), "BuildCache": _cache_usage(state)}


@frozen  # (no dataclass made at import: ``version`` loads this module)
class UsageRow:
    """One row of ``docker system df``: counts and bytes; *percent* whether RECLAIMABLE shows
    its share of SIZE (all rows but the build cache's, when SIZE is not zero)."""

    type: str
    total: int
    active: int
    size: int
    reclaimable: int
    percent: bool


def df_summary(usage: dict[str, Any]) -> list[UsageRow]:
    """The four rows, computed as Docker's CLI computes them from a ``/system/df`` object."""
    imgs = usage["Images"]
    total = int(usage["LayersSize"])
    used = sum(i["Size"] - i["SharedSize"] for i in imgs if i["Containers"])
    cts = usage["Containers"]
    active_states = ("running", "paused", "restarting")
    ct_size = sum(int(c.get("SizeRw") or 0) for c in cts)
    ct_free = sum(int(c.get("SizeRw") or 0) for c in cts if c["State"] not in active_states)
    vols = usage["Volumes"]
    v_size = sum(int(v["UsageData"]["Size"]) for v in vols)
    v_free = sum(int(v["UsageData"]["Size"]) for v in vols if not v["UsageData"]["RefCount"])
    bc = usage["BuildCache"]
    bc_size = sum(int(b["Size"]) for b in bc if not b["Shared"])
    bc_free = sum(int(b["Size"]) for b in bc if not b["Shared"] and not b["InUse"])
    return [
        UsageRow("Images", len(imgs), sum(1 for i in imgs if i["Containers"]), total,
                 max(0, total - used), True),
        UsageRow("Containers", len(cts), sum(1 for c in cts if c["State"] in active_states),
                 ct_size, ct_free, True),
        UsageRow("Local Volumes", len(vols), sum(1 for v in vols if v["UsageData"]["RefCount"]),
                 v_size, v_free, True),
        UsageRow("Build Cache", len(bc), sum(1 for b in bc if b["InUse"]), bc_size, bc_free, False),
    ]


# -- prune --------------------------------------------------------------------------------------
def prune_warning(*, all: bool = False, volumes: bool = False) -> str:
    """Docker's confirmation text for ``system prune`` (its current CLI's words: volumes pruned
    are the anonymous ones, as Docker 23+ does)."""
    items = ["all stopped containers", "all networks not used by at least one container"]
    if volumes:
        items.append("all anonymous volumes not used by at least one container")
    if all:
        items += ["all images without at least one container associated to them", "all build cache"]
    else:
        items += ["all dangling images", "unused build cache"]
    return "WARNING! This will remove:\n" + "".join(f"  - {i}\n" for i in items) + "\n"


@frozen
class PruneReport:
    """What ``system prune`` removed, per kind, in Docker's order, and the bytes it freed."""

    containers: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    images: tuple[str, ...] = ()  # "untagged: …" / "deleted: …" lines
    build_cache: tuple[str, ...] = ()
    reclaimed: int = 0


def prune(state: StateRoot, *, all: bool = False, volumes: bool = False) -> PruneReport:
    """``docker system prune [-a] [--volumes]``: stopped containers, networks no container
    uses, (with *volumes*) unused anonymous volumes, dangling images (every unused one with
    *all*), build cache unused for 48 hours (all of it with *all*), and always what killed
    builds left under ``run/`` (their RUN layers: nothing can use them)."""
    from builder import network
    from builder.imagebuild.cache import BuildCache
    from builder.runtime import images as images_
    from builder.runtime.containers import lifecycle
    from builder.runtime.volume import store as volume_store

    sizes = {}
    for c in lifecycle.list_containers(state, all=True):
        if not c.state.running:
            with contextlib.suppress(Exception):
                sizes[c.id] = lifecycle.sizes(state, c)[0]
    gone = lifecycle.prune(state)
    reclaimed = sum(sizes.get(cid, 0) for cid in gone)
    nets = network.prune_networks(state)
    vols: list[str] = []
    if volumes:
        vols, freed = volume_store.prune(state)
        reclaimed += freed
    img = images_.prune(state, all=all)
    reclaimed += img.freed
    reclaimed += prune_killed_builds(state)
    cache = BuildCache(state.cache, state.image_store(), layers=state.layers)
    before = {r.key for r in cache.inputs_index()}
    res = cache.prune(all=all)
    after = {r.key for r in cache.inputs_index()}
    reclaimed += res.freed
    from builder.imagebuild.fsck import reap_unused_layers

    reclaimed += reap_unused_layers(state)  # layers only the pruned records named
    return PruneReport(tuple(gone), tuple(nets), tuple(vols), img.deleted,
                       tuple(sorted(before - after)), reclaimed)


def prune_killed_builds(state: StateRoot) -> int:
    """``fsck.reap_killed_builds`` for ``system prune`` and ``builder prune``: the bytes freed.
    Sandboxes whose processes are gone go too, whatever a start's paced sweep has left
    (``handle.reap_stale_now_and_then``)."""
    from builder.core.rootfs import dead_workspaces
    from builder.core.sandbox.handle import reap_stale
    from builder.imagebuild.fsck import reap_killed_builds

    sizes = {d: _du(d) for d in dead_workspaces(state.run)}
    freed = sum(sizes.get(d, 0) for d in reap_killed_builds(state)) if sizes else 0
    reap_stale(state)
    return freed
