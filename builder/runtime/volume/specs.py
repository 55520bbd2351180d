"""Parsing ``-v``, ``--mount`` and ``--tmpfs`` into ``MountSpec`` (pure; bad syntax is a one-line
``VolumeError``), and the ``Mount`` record the sandbox applies and ``container.json`` keeps.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from builder.base.errors import VolumeError
from builder.base.units import parse_size
from builder.runtime.volume.store import NAME_RE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PROPAGATION = ("private", "rprivate", "shared", "rshared", "slave", "rslave")


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
    return VolumeError.invalid(f"invalid mount specification {spec!r}: {why}")


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
    size = parse_size(text)
    if size is None:
        raise _bad(spec, f"invalid size {text!r}")
    return size


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
