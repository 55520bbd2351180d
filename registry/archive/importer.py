"""``import``: a rootfs tarball (plain or compressed) or a directory as a one-layer image, with
``--change`` lines (the Dockerfile instructions ``docker import`` takes) applied to its config.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import shlex
import signal
import tarfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from registry import compression
from registry import mediatypes as mt
from registry.archive.spool import Spool, copy_stream
from registry.errors import ArchiveError
from registry.model import Descriptor, ImageConfig, Manifest, Platform
from registry.reference import Reference
from registry.store import Store


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_CHANGE_COMMANDS = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "USER", "VOLUME", "WORKDIR",
                    "STOPSIGNAL")
_OTHER_INSTRUCTIONS = ("ADD", "ARG", "COPY", "FROM", "HEALTHCHECK", "MAINTAINER", "ONBUILD", "RUN",
                       "SHELL")


def parse_changes(changes: Iterable[str], base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Apply ``--change`` lines (the Dockerfile instructions ``docker import`` takes) to a
    container config (``Cmd``, ``Env``…); returns the new config. Raises ``ArchiveError``."""
    config: dict[str, Any] = json.loads(json.dumps(dict(base or {})))
    cmd_set = False
    for line in changes:
        text = line.strip()
        keyword, _, rest = text.partition(" ")
        if "\t" in keyword:
            keyword, _, more = keyword.partition("\t")
            rest = more + " " + rest
        word, rest = keyword.upper(), rest.strip()
        where = f"invalid --change {line!r}"
        if word not in _CHANGE_COMMANDS:
            if word in _OTHER_INSTRUCTIONS:
                raise ArchiveError(f"{where}: {word} is not a valid change command")
            raise ArchiveError(f"{where}: unknown instruction: {keyword or '(empty)'}")
        if not rest:
            raise ArchiveError(f"{where}: {word} requires at least one argument")
        if word in ("CMD", "ENTRYPOINT"):
            argv = _exec_form(rest, where)
            value = argv if argv is not None else ["/bin/sh", "-c", rest]
            if word == "CMD":
                config["Cmd"] = value
                cmd_set = True
            else:
                config["Entrypoint"] = value
                if not cmd_set:
                    config.pop("Cmd", None)
        elif word == "ENV":
            env = {e.partition("=")[0]: e for e in config.get("Env") or []}
            for k, v in _pairs(rest, where, legacy_ok=True):
                env[k] = f"{k}={v}"
            config["Env"] = list(env.values())
        elif word == "LABEL":
            labels = dict(config.get("Labels") or {})
            labels.update(_pairs(rest, where, legacy_ok=False))
            config["Labels"] = labels
        elif word == "EXPOSE":
            ports = dict(config.get("ExposedPorts") or {})
            for p in _words(rest, where):
                ports.update({port: {} for port in _expose(p, where)})
            config["ExposedPorts"] = ports
        elif word == "USER":
            config["User"] = rest
        elif word == "VOLUME":
            argv = _exec_form(rest, where)
            vols = dict(config.get("Volumes") or {})
            for v in argv if argv is not None else _words(rest, where):
                if not v.strip():
                    raise ArchiveError(f"{where}: VOLUME specified can not be an empty string")
                vols[v] = {}
            config["Volumes"] = vols
        elif word == "WORKDIR":
            config["WorkingDir"] = posixpath.normpath(
                posixpath.join(config.get("WorkingDir") or "/", rest))
        elif word == "STOPSIGNAL":
            _check_signal(rest, where)
            config["StopSignal"] = rest
    return config


def _exec_form(rest: str, where: str) -> list[str] | None:
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None  # Docker falls back to the shell form when the JSON does not parse
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ArchiveError(f"{where}: exec form must be a JSON array of strings")
    return value


def _words(rest: str, where: str) -> list[str]:
    try:
        return shlex.split(rest, posix=True)
    except ValueError as e:
        raise ArchiveError(f"{where}: {e}") from None


def _pairs(rest: str, where: str, *, legacy_ok: bool) -> list[tuple[str, str]]:
    words = _words(rest, where)
    if words and "=" not in words[0]:
        if not legacy_ok or len(words) < 2:
            raise ArchiveError(f"{where}: expected KEY=VALUE")
        key, _, value = rest.partition(" ")
        return [(key.strip(), " ".join(_words(value.strip(), where)))]
    out = []
    for w in words:
        k, eq, v = w.partition("=")
        if not eq or not k:
            raise ArchiveError(f"{where}: {w!r} is not KEY=VALUE")
        out.append((k, v))
    return out


def _expose(spec: str, where: str) -> list[str]:
    port, _, proto = spec.partition("/")
    proto = (proto or "tcp").lower()
    lo, dash, hi = port.partition("-")
    try:
        first, last = int(lo), int(hi) if dash else int(lo)
    except ValueError:
        raise ArchiveError(f"{where}: invalid port {spec!r}") from None
    if proto not in ("tcp", "udp", "sctp") or not 0 < first <= last <= 65535:
        raise ArchiveError(f"{where}: invalid port {spec!r}")
    return [f"{p}/{proto}" for p in range(first, last + 1)]


def _check_signal(text: str, where: str) -> None:
    if text.isdigit():
        if 0 < int(text) <= 64:
            return
    else:
        name = text.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        if name in signal.Signals.__members__ or name.startswith("SIGRTM"):
            return
    raise ArchiveError(f"{where}: invalid signal {text!r}")


@dataclass(frozen=True)
class Imported:
    descriptor: Descriptor
    config: ImageConfig
    reference: Reference | None


def import_rootfs(
    store: Store,
    source: BinaryIO | Path,
    *,
    reference: Reference | None = None,
    changes: Sequence[str] = (),
    message: str | None = None,
    platform: Platform | None = None,
    source_name: str = "-",
) -> Imported:
    """``docker import``: a rootfs tarball (plain or compressed) or a directory becomes a
    one-layer image (uncompressed layer), configured by *changes*, tagged *reference*."""
    container_config = parse_changes(changes)
    with store.lease():
        spool = Spool(store)
        try:
            if isinstance(source, Path) and source.is_dir():
                _tar_directory(source, spool)
            else:
                f = open(source, "rb") if isinstance(source, Path) else contextlib.nullcontext(source)
                with f as stream:
                    try:
                        copy_stream(compression.open_decompressed(stream), spool.write)
                    except (OSError, EOFError, ValueError) as e:
                        raise ArchiveError(f"{source_name}: cannot read the tarball: {e}") from None
                    except Exception as e:  # zstandard.ZstdError
                        raise ArchiveError(f"{source_name}: cannot read the tarball: {e}") from None
            spool.finish()
            _check_tar(spool.path, source_name)
            diff_id = spool.publish(store)
            size = store.blob_size(diff_id)
            created = now_rfc3339()
            comment = message or f"Imported from {source_name}"
            p = platform or Platform.host()
            data: dict[str, Any] = {
                "architecture": p.architecture, "os": p.os, "created": created,
                "comment": comment, "config": container_config,
                "rootfs": {"type": "layers", "diff_ids": [str(diff_id)]},
                "history": [{"created": created, "comment": comment}],
            }
            if p.variant:
                data["variant"] = p.variant
            config = ImageConfig.build(data)
            manifest = Manifest.build(Descriptor(mt.OCI_CONFIG, config.digest, config.size),
                                      [Descriptor(mt.OCI_LAYER, diff_id, size)])
            store.put_image(manifest, config)
            desc = manifest.descriptor()
            store.add(desc, reference)
            return Imported(desc, config, reference)
        finally:
            spool.discard()


def _tar_directory(root: Path, spool: Spool) -> None:
    """The tree under *root* as a tar with sorted entries and numeric owners only."""

    def clean(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        ti.uname = ti.gname = ""
        return ti

    with tarfile.open(fileobj=spool, mode="w|", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
        for path in _walk_sorted(root):
            tf.add(path, arcname=path.relative_to(root).as_posix(), recursive=False, filter=clean)


def _walk_sorted(root: Path) -> Iterator[Path]:
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        path = Path(entry.path)
        yield path
        if entry.is_dir(follow_symlinks=False):
            yield from _walk_sorted(path)


def _check_tar(path: Path, source_name: str) -> None:
    try:
        with tarfile.open(path, "r:") as tf:
            for _ in tf:
                pass
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ArchiveError(f"{source_name}: not a valid tar archive: {e}") from None
