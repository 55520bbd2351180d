"""Named volumes under ``<root>/volumes/<name>/{_data,volume.json}`` and the ``-v``/``--mount``/
``--tmpfs`` parsers that turn flags into frozen ``Mount`` records the sandbox applies.

Contract with ``containers``
----------------------------
* ``parse_volume(spec)``, ``parse_mount(spec)``, ``parse_tmpfs(spec)`` → ``MountSpec`` (pure;
  bad syntax is a one-line ``VolumeError``). ``prepare(state, spec, image_rootfs=)`` → ``Mount``:
  creates a missing named or anonymous volume, fills a new empty one from the image's content
  at the mount point (Docker's rule, unless ``nocopy``), creates a missing ``-v`` bind source
  (``--mount`` refuses it). ``check_destinations`` refuses two mounts on one path.
* A container record ``<root>/containers/<id>/container.json`` holds ``"Mounts"``: a list of
  ``Mount.to_record()`` dicts ``{"Type": "volume"|"bind"|"tmpfs", "Name": volume name or "",
  "Source": host path, "Destination": path, "RW": bool, ...}``. ``volume rm``/``prune`` read
  them to refuse or skip volumes in use (or take an ``in_use`` callable instead).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from builder.errors import VolumeError
from builder.state import StateRoot

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
ANONYMOUS_LABEL = "com.docker.volume.anonymous"
RECORD = "volume.json"
DATA = "_data"
PROPAGATION = ("private", "rprivate", "shared", "rshared", "slave", "rslave")

InUse = Callable[[str], Sequence[str]]


# -- volumes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Volume:
    name: str
    mountpoint: Path
    created: str
    driver: str = "local"
    labels: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, str] = field(default_factory=dict)

    @property
    def anonymous(self) -> bool:
        return ANONYMOUS_LABEL in self.labels

    def to_json(self) -> dict[str, Any]:
        """Docker's ``volume inspect`` shape."""
        return {
            "CreatedAt": self.created,
            "Driver": self.driver,
            "Labels": dict(self.labels),
            "Mountpoint": str(self.mountpoint),
            "Name": self.name,
            "Options": dict(self.options),
            "Scope": "local",
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Volume:
        return cls(
            name=str(d["Name"]),
            mountpoint=Path(d["Mountpoint"]),
            created=str(d.get("CreatedAt", "")),
            driver=str(d.get("Driver", "local")),
            labels=dict(d.get("Labels") or {}),
            options=dict(d.get("Options") or {}),
        )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise VolumeError(
            f"invalid volume name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, at least 2 characters"
        )


def _load(state: StateRoot, name: str) -> Volume | None:
    try:
        return Volume.from_json(json.loads((state.volumes / name / RECORD).read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError) as e:
        raise VolumeError(f"corrupt volume record {state.volumes / name / RECORD}: {e}") from e


def create(
    state: StateRoot,
    name: str | None = None,
    *,
    driver: str = "local",
    labels: Mapping[str, str] | None = None,
    options: Mapping[str, str] | None = None,
) -> Volume:
    """``volume create``: an existing volume of that name is returned as is (as Docker does)."""
    if driver != "local":
        raise VolumeError(f"volume driver {driver!r} is not supported (only local)")
    if options:
        raise VolumeError(f"unsupported volume options for the local driver: {', '.join(sorted(options))}")
    labels = dict(labels or {})
    if name is None:
        name = secrets.token_hex(32)
        labels.setdefault(ANONYMOUS_LABEL, "")
    _check_name(name)
    with state.lock("volumes"):
        existing = _load(state, name)
        if existing is not None:
            return existing
        root = state.volumes / name
        tmp = state.volumes / f".{name}.{os.getpid()}.creating"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / DATA).mkdir(parents=True)
        os.chmod(tmp / DATA, 0o755)
        vol = Volume(name=name, mountpoint=root / DATA, created=_now(), labels=labels)
        _write_json_atomic(tmp / RECORD, vol.to_json())
        os.rename(tmp, root)  # the volume appears whole or not at all
        return vol


def get(state: StateRoot, name: str) -> Volume:
    vol = _load(state, name) if NAME_RE.match(name) else None
    if vol is None:
        raise VolumeError(f"no such volume: {name}")
    return vol


def list_volumes(state: StateRoot) -> list[Volume]:
    out = []
    if state.volumes.is_dir():
        for d in sorted(state.volumes.iterdir()):
            if not d.name.startswith(".") and (d / RECORD).exists():
                vol = _load(state, d.name)
                if vol is not None:
                    out.append(vol)
    return out


def containers_using(state: StateRoot) -> dict[str, list[str]]:
    """Volume name → ids of containers whose ``container.json`` ``Mounts`` name it."""
    users: dict[str, list[str]] = {}
    if not state.containers.is_dir():
        return users
    for rec in sorted(state.containers.glob("*/container.json")):
        try:
            d = json.loads(rec.read_text())
        except (OSError, ValueError):
            continue
        for m in d.get("Mounts") or ():
            if isinstance(m, Mapping) and m.get("Type") == "volume" and m.get("Name"):
                users.setdefault(str(m["Name"]), []).append(str(d.get("Id") or rec.parent.name))
    return users


def _in_use_fn(state: StateRoot, in_use: InUse | None) -> InUse:
    if in_use is not None:
        return in_use
    users = containers_using(state)
    return lambda name: users.get(name, [])


def remove(state: StateRoot, name: str, *, force: bool = False, in_use: InUse | None = None) -> None:
    """``volume rm``: refused while a container uses it; ``force`` ignores a missing volume only."""
    with state.lock("volumes"):
        vol = _load(state, name) if NAME_RE.match(name) else None
        if vol is None:
            if force:
                return
            raise VolumeError(f"no such volume: {name}")
        users = _in_use_fn(state, in_use)(name)
        if users:
            raise VolumeError(
                f"remove {name}: volume is in use - [{', '.join(users)}]"
            )
        _delete(state, name)


def _delete(state: StateRoot, name: str) -> None:
    root = state.volumes / name
    trash = state.volumes / f".{name}.{os.getpid()}.removing"
    os.rename(root, trash)  # gone from listings at once, even if the tree is large
    shutil.rmtree(trash)


def prune(
    state: StateRoot, *, all_volumes: bool = False, label_filters: Sequence[str] = (),
    in_use: InUse | None = None,
) -> tuple[list[str], int]:
    """``volume prune``: unused anonymous volumes (all unused with ``all_volumes``), as Docker
    23+; returns the names removed and the bytes reclaimed."""
    removed, space = [], 0
    with state.lock("volumes"):
        used = _in_use_fn(state, in_use)
        for vol in list_volumes(state):
            if not (all_volumes or vol.anonymous) or used(vol.name):
                continue
            if not _labels_match(vol.labels, label_filters):
                continue
            space += _du(vol.mountpoint)
            _delete(state, vol.name)
            removed.append(vol.name)
    return removed, space


def _labels_match(labels: Mapping[str, str], filters: Sequence[str]) -> bool:
    for f in filters:
        k, sep, v = f.partition("=")
        if k not in labels or (sep and labels[k] != v):
            return False
    return True


def _du(path: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for n in filenames + dirnames:
            try:
                total += os.lstat(os.path.join(dirpath, n)).st_blocks * 512
            except OSError:
                pass
    return total


# -- mount specs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MountSpec:
    """A parsed ``-v``/``--mount``/``--tmpfs`` flag: what the user asked for, nothing resolved."""

    type: str  # volume | bind | tmpfs
    destination: str
    source: str = ""  # volume name ("" = anonymous) or host path
    read_only: bool = False
    propagation: str = ""
    selinux: str = ""  # "z" or "Z": accepted and recorded (no SELinux here)
    nocopy: bool = False
    tmpfs_options: tuple[str, ...] = ()
    create_source: bool = False  # -v creates a missing bind source; --mount refuses it
    origin: str = "-v"


@dataclass(frozen=True)
class Mount:
    """A mount ready for the sandbox: bind *source* (or a tmpfs) at *destination*."""

    type: str  # bind | tmpfs (a volume is a bind of its _data directory)
    destination: str
    source: Path | None = None
    read_only: bool = False
    propagation: str = "rprivate"
    tmpfs_options: tuple[str, ...] = ()
    volume: str = ""  # the volume's name when this came from a named or anonymous volume
    anonymous: bool = False
    mode: str = ""

    def to_record(self) -> dict[str, Any]:
        """The ``Mounts`` entry of ``container.json`` (Docker's inspect shape)."""
        return {
            "Type": "volume" if self.volume else self.type,
            "Name": self.volume,
            "Source": str(self.source) if self.source else "",
            "Destination": self.destination,
            "Driver": "local" if self.volume else "",
            "Mode": self.mode,
            "RW": not self.read_only,
            "Propagation": self.propagation if self.type == "bind" and not self.volume else "",
            "Anonymous": self.anonymous,
        }


def _bad(spec: str, why: str) -> VolumeError:
    return VolumeError(f"invalid mount specification {spec!r}: {why}")


def _check_destination(spec: str, dst: str) -> str:
    if not dst:
        raise _bad(spec, "destination can't be empty")
    if not dst.startswith("/"):
        raise _bad(spec, f"mount path must be absolute: {dst!r}")
    norm = os.path.normpath(dst)
    if norm == "/":
        raise _bad(spec, "destination can't be '/'")
    return norm


def parse_volume(spec: str, *, cwd: Path | None = None) -> MountSpec:
    """``-v [SRC:]DST[:OPTS]``: SRC is a volume name or a host path (``./x`` is relative to *cwd*)."""
    if not spec:
        raise _bad(spec, "empty")
    parts = spec.split(":")
    if len(parts) > 3:
        raise _bad(spec, "too many colons")
    if len(parts) == 1:
        src, dst, opts = "", parts[0], ""
    elif len(parts) == 2:
        src, dst, opts = parts[0], parts[1], ""
    else:
        src, dst, opts = parts
    if len(parts) > 1 and not src:
        raise _bad(spec, "source can't be empty")
    dst = _check_destination(spec, dst)
    mode = [o for o in opts.split(",") if o] if opts else []
    ro = rw = False
    propagation = selinux = ""
    nocopy = False
    for o in mode:
        if o in ("ro", "rw"):
            if ro or rw:
                raise _bad(spec, "ro and rw given twice")
            ro, rw = o == "ro", o == "rw"
        elif o in ("z", "Z"):
            selinux = o
        elif o in PROPAGATION:
            propagation = o
        elif o == "nocopy":
            nocopy = True
        elif o in ("consistent", "cached", "delegated"):
            pass  # macOS-only hints; Docker accepts and ignores them on Linux
        else:
            raise _bad(spec, f"unknown option {o!r}")
    if src.startswith(("/", "./", "../")) or src in (".", ".."):
        path = os.path.normpath(os.path.join(str(cwd or Path.cwd()), src))
        if nocopy:
            raise _bad(spec, "nocopy applies to volumes only")
        return MountSpec("bind", dst, path, ro, propagation or "rprivate", selinux,
                         create_source=True, origin="-v")
    if src:
        if not NAME_RE.match(src):
            raise _bad(spec, f"{src!r} is not a valid volume name (or use an absolute host path)")
    if propagation:
        raise _bad(spec, "propagation applies to bind mounts only")
    return MountSpec("volume", dst, src, ro, "", selinux, nocopy, origin="-v")


_TRUE = ("", "1", "true")
_FALSE = ("0", "false")


def _size(text: str, spec: str) -> int:
    m = re.fullmatch(r"(\d+)([bkmgt]?)b?", text.strip().lower())
    if not m:
        raise _bad(spec, f"invalid size {text!r}")
    return int(m.group(1)) * int(1024 ** "bkmgt".index(m.group(2) or "b"))


def parse_mount(spec: str) -> MountSpec:
    """``--mount type=volume|bind|tmpfs,src=,dst=,readonly,...`` (Docker's CSV keys)."""
    fields: dict[str, str] = {}
    flags: set[str] = set()
    for item in spec.split(","):
        if not item:
            raise _bad(spec, "empty field")
        k, sep, v = item.partition("=")
        k = k.strip().lower()
        if k in fields or k in flags:
            raise _bad(spec, f"{k!r} given twice")
        if sep:
            fields[k] = v
        else:
            flags.add(k)
    kind = fields.pop("type", "volume")
    src = ""
    for key in ("source", "src"):
        if key in fields:
            if src:
                raise _bad(spec, "source given twice")
            src = fields.pop(key)
    dst = ""
    for key in ("target", "destination", "dst"):
        if key in fields:
            if dst:
                raise _bad(spec, "target given twice")
            dst = fields.pop(key)
    if not dst:
        raise _bad(spec, "target is required")
    dst = _check_destination(spec, dst)
    ro = False
    for key in ("readonly", "ro"):
        if key in flags:
            flags.discard(key)
            ro = True
        if key in fields:
            val = fields.pop(key).lower()
            if val not in _TRUE + _FALSE:
                raise _bad(spec, f"invalid value for {key}: {val!r}")
            ro = val in _TRUE
    nocopy = False
    if "volume-nocopy" in flags:
        flags.discard("volume-nocopy")
        nocopy = True
    if "volume-nocopy" in fields:
        nocopy = fields.pop("volume-nocopy").lower() in _TRUE
    propagation = fields.pop("bind-propagation", "")
    if propagation and propagation not in PROPAGATION:
        raise _bad(spec, f"invalid bind-propagation {propagation!r}")
    tmpfs: list[str] = []
    if "tmpfs-size" in fields:
        tmpfs.append(f"size={_size(fields.pop('tmpfs-size'), spec)}")
    if "tmpfs-mode" in fields:
        mode = fields.pop("tmpfs-mode")
        if not re.fullmatch(r"[0-7]{1,4}", mode):
            raise _bad(spec, f"invalid tmpfs-mode {mode!r}")
        tmpfs.append(f"mode={mode}")
    if fields or flags:
        raise _bad(spec, f"unexpected key {sorted(set(fields) | flags)[0]!r}")
    if kind == "bind":
        if not src:
            raise _bad(spec, "bind mounts need a source")
        if not src.startswith("/"):
            raise _bad(spec, f"bind source must be an absolute path: {src!r}")
        if nocopy or tmpfs:
            raise _bad(spec, "volume and tmpfs options do not apply to bind mounts")
        return MountSpec("bind", dst, os.path.normpath(src), ro, propagation or "rprivate",
                         origin="--mount")
    if propagation:
        raise _bad(spec, "bind-propagation applies to bind mounts only")
    if kind == "volume":
        if src and not NAME_RE.match(src):
            raise _bad(spec, f"{src!r} is not a valid volume name")
        if tmpfs:
            raise _bad(spec, "tmpfs options do not apply to volumes")
        return MountSpec("volume", dst, src, ro, nocopy=nocopy, origin="--mount")
    if kind == "tmpfs":
        if src:
            raise _bad(spec, "tmpfs mounts take no source")
        if nocopy:
            raise _bad(spec, "volume-nocopy does not apply to tmpfs")
        return MountSpec("tmpfs", dst, "", ro, tmpfs_options=tuple(tmpfs), origin="--mount")
    raise _bad(spec, f"unknown mount type {kind!r} (volume, bind, tmpfs)")


TMPFS_FLAGS = {
    "ro", "rw", "exec", "noexec", "suid", "nosuid", "dev", "nodev", "sync", "async",
    "atime", "noatime", "diratime", "nodiratime", "relatime", "norelatime", "strictatime",
}


def parse_tmpfs(spec: str) -> MountSpec:
    """``--tmpfs /dst[:opts]`` with mount(8)-style options (``size=64m,mode=1777,noexec``)."""
    dst, _, opts = spec.partition(":")
    dst = _check_destination(spec, dst)
    out: list[str] = []
    ro = False
    for o in (opts.split(",") if opts else []):
        k, sep, v = o.partition("=")
        if o in TMPFS_FLAGS:
            ro = ro or o == "ro"
            if o not in ("ro", "rw"):
                out.append(o)
        elif sep and k == "size":
            out.append(f"size={_size(v, spec) if not v.endswith('%') else v}")
        elif sep and k == "mode" and re.fullmatch(r"[0-7]{1,4}", v):
            out.append(o)
        elif sep and k in ("uid", "gid", "nr_inodes") and v.isdigit():
            out.append(o)
        else:
            raise _bad(spec, f"unknown tmpfs option {o!r}")
    return MountSpec("tmpfs", dst, "", ro, tmpfs_options=tuple(out), origin="--tmpfs")


def check_destinations(specs: Iterable[MountSpec]) -> None:
    seen: set[str] = set()
    for s in specs:
        if s.destination in seen:
            raise VolumeError(f"duplicate mount point: {s.destination}")
        seen.add(s.destination)


# -- resolving for a container ------------------------------------------------------------------


def prepare(
    state: StateRoot, spec: MountSpec, *, image_rootfs: Path | None = None,
    labels: Mapping[str, str] | None = None,
) -> Mount:
    """Make what *spec* needs exist and return the mount; a new empty volume is filled from
    *image_rootfs* at the destination (the image's content there), unless ``nocopy``."""
    mode = ",".join(x for x in (("ro" if spec.read_only else ""), spec.selinux) if x)
    if spec.type == "tmpfs":
        return Mount("tmpfs", spec.destination, None, spec.read_only, "", spec.tmpfs_options, mode=mode)
    if spec.type == "bind":
        src = Path(spec.source)
        if not src.exists():
            if not spec.create_source:
                raise VolumeError(
                    f"invalid mount config for type \"bind\": bind source path does not exist: {src}"
                )
            try:
                src.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise VolumeError(f"cannot create bind source {src}: {e.strerror}") from e
        return Mount("bind", spec.destination, src, spec.read_only, spec.propagation or "rprivate", mode=mode)
    vol = create(state, spec.source or None, labels=labels)
    if image_rootfs is not None and not spec.nocopy:
        populate(vol, image_rootfs, spec.destination)
    return Mount("bind", spec.destination, vol.mountpoint, spec.read_only, "rprivate",
                 volume=vol.name, anonymous=vol.anonymous, mode=mode)


def resolve_in_root(root: Path, path: str) -> Path | None:
    """*path* inside *root* with symlinks followed but confined to *root* (None if missing)."""
    parts = [p for p in path.split("/") if p and p != "."]
    cur: list[str] = []
    hops = 0
    while parts:
        p = parts.pop(0)
        if p == "..":
            if cur:
                cur.pop()
            continue
        candidate = root.joinpath(*cur, p)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > 40:
                return None
            target = os.readlink(candidate)
            if target.startswith("/"):
                cur = []
            parts = [x for x in target.split("/") if x and x != "."] + parts
            continue
        cur.append(p)
    return root.joinpath(*cur)


_resolve_in_root = resolve_in_root  # the name builder.containers first used


def populate(volume: Volume, image_rootfs: Path, destination: str) -> bool:
    """Copy the image's content at *destination* into *volume* if the volume is empty (Docker's
    rule for a volume's first use), keeping owners, modes, times, links and special files.
    Returns whether anything was copied."""
    dst = volume.mountpoint
    if any(os.scandir(dst)):
        return False
    src = resolve_in_root(image_rootfs, destination)
    if src is None or not src.is_dir():
        return False
    st = os.lstat(src)
    os.chown(dst, st.st_uid, st.st_gid)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    _copy_tree(src, dst)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    return True


def _copy_tree(src: Path, dst: Path) -> None:
    links: dict[tuple[int, int], str] = {}
    for dirpath, dirnames, filenames in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        out_dir = dst if rel == "." else dst / rel
        for name in dirnames + filenames:
            s = os.path.join(dirpath, name)
            d = os.path.join(out_dir, name)
            st = os.lstat(s)
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                os.mkdir(d, stat.S_IMODE(mode))
            elif stat.S_ISLNK(mode):
                os.symlink(os.readlink(s), d)
            elif st.st_nlink > 1 and (st.st_dev, st.st_ino) in links:
                os.link(links[(st.st_dev, st.st_ino)], d)
                continue
            elif stat.S_ISREG(mode):
                shutil.copyfile(s, d, follow_symlinks=False)
                if st.st_nlink > 1:
                    links[(st.st_dev, st.st_ino)] = d
            else:  # fifo, socket, device node
                os.mknod(d, mode, st.st_rdev)
            os.lchown(d, st.st_uid, st.st_gid)
            if not stat.S_ISLNK(mode):
                os.chmod(d, stat.S_IMODE(mode))
        # directory times last, once their content is written
    for dirpath, dirnames, filenames in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        for name in dirnames + filenames:
            s = os.path.join(dirpath, name)
            target = dst / rel / name if rel != "." else dst / name
            st = os.lstat(s)
            os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
