"""``cp`` both ways with Docker's path rules, through a tar stream made or unpacked by a
forked child confined to the container's root (``/proc/<init>/root`` while it runs, a private
overlay mount of its layers and upper dir while it is stopped).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from builder.base import syscalls as sc
from builder.base.errors import ContainerError
from builder.base.state import StateRoot
from builder.core.rootfs import LayerCache, forget_volatile, image_layers
from builder.runtime.containers.record import Container


def _enter_root(root: StateRoot, c: Container) -> None:
    """In the forked child: chroot into the container's filesystem view."""
    s = sc.real()
    st = c.state
    if st.status == "running" and st.pid:
        os.chroot(f"/proc/{st.pid}/root")
        os.chdir("/")
        return

    image = root.image_store().resolve(c.image_id)
    layers = image_layers(root.image_store(), image, LayerCache(root))
    cdir = root.containers / c.id
    if (cdir / "rootfs").is_dir():  # the copy fallback: a plain tree
        os.chroot(cdir / "rootfs")
        os.chdir("/")
        return
    upper, work = cdir / "upper", cdir / "work"
    upper.mkdir(exist_ok=True)
    work.mkdir(exist_ok=True)
    sc.private_mount_namespace(s)
    # one mount point per container, used in private mount namespaces only (nothing left behind)
    mnt = cdir / "cpmnt"
    mnt.mkdir(exist_ok=True)
    lowers = [str(p) for p in reversed(layers)]
    # volumes and bind mounts are seen as `docker cp` sees them: their contents at their place
    binds = [(m.source, m.destination) for m in c.mounts
             if m.type in ("volume", "bind") and m.source and m.destination and os.path.exists(m.source)]
    target = str(mnt)
    if binds:
        # their mount points, as a top layer on a tmpfs of this namespace
        s.mount("tmpfs", target, "tmpfs", 0, "mode=0755")
        stub, merged = mnt / "stub", mnt / "merged"
        stub.mkdir()
        merged.mkdir()
        for src, dst in binds:
            point = stub / dst.strip("/")
            point.parent.mkdir(parents=True, exist_ok=True)
            if os.path.isdir(src):
                point.mkdir(exist_ok=True)
            else:
                point.touch()
        lowers.insert(0, str(stub))
        target = str(merged)
    forget_volatile(work)  # an --rm container's root, mounted volatile, in this boot
    s.mount("overlay", target, "overlay", 0,
            f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work},redirect_dir=off,"
            "index=off,metacopy=off")
    for src, dst in binds:
        s.mount(src, target + "/" + dst.strip("/"), None, sc.MS_BIND | sc.MS_REC)
    os.chroot(target)
    os.chdir("/")


def _fork(root: StateRoot, c: Container, job: str, path: str, fd: int, *, follow: bool = False,
          other: int | None = None) -> int:
    """Run *job* ("read": tar *path* into *fd*; "write": untar *fd* under *path*) in a child
    confined to the container; returns the child's pid. *other* is the pipe's end the parent
    keeps: the child closes its copy (an untar holding the write end would wait for an EOF that
    never comes when the tar lacks its end-of-archive blocks)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            if other is not None:
                os.close(other)
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            _enter_root(root, c)
            f = os.fdopen(fd, "wb" if job == "read" else "rb")
            if job == "read":
                _tar_path(path, f, follow=follow)
            else:
                _untar_into(path, f)
            f.close()
            code = 0
        except ContainerError as e:
            os.write(2, f"Error: {e}\n".encode())
            code = 3
        except OSError as e:
            os.write(2, f"Error: {path}: {e.strerror}\n".encode())
            code = 3
        finally:
            os._exit(code)
    return pid


def _tar_path(path: str, out: BinaryIO, *, follow: bool) -> None:
    contents_only = path.endswith("/.")
    p = path.rstrip("/") if not contents_only else path[:-2]
    p = p or "/"
    try:
        st = os.stat(p) if follow else os.lstat(p)
    except FileNotFoundError:
        raise ContainerError(f"Could not find the file {path} in container") from None
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        if contents_only and stat.S_ISDIR(st.st_mode):
            for name in sorted(os.listdir(p)):
                tf.add(os.path.join(p, name), arcname=name)
        else:
            name = os.path.basename(p.rstrip("/")) or "."
            if follow and os.path.islink(p):
                tf.add(os.path.realpath(p), arcname=name)
            else:
                tf.add(p, arcname=name)


def _untar_into(dest_dir: str, f: BinaryIO) -> None:
    if not os.path.isdir(dest_dir):
        raise ContainerError.not_found(f"no such directory: {dest_dir}")
    with tarfile.open(fileobj=f, mode="r|") as tf:
        tf.extractall(dest_dir, filter="tar")


def _wait(pid: int, what: str, stderr_note: str = "") -> None:
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise ContainerError(f"copying {what} failed{stderr_note}")


@dataclass(frozen=True)
class PathStat:
    """What ``lstat`` says of a path inside a container (``docker cp``'s stat header)."""

    kind: str  # "file", "dir", "symlink" or "missing"
    size: int = 0
    mode: int = 0
    mtime_ns: int = 0
    link_target: str = ""


def path_stat(root: StateRoot, c: Container, path: str) -> PathStat:
    """*path* inside the container, as ``lstat`` sees it there (via a tiny child)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.close(r)
            _enter_root(root, c)
            out = b"missing"
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                st = os.lstat(path)
                link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
                if link and not path.endswith("/"):
                    kind = "symlink"
                else:
                    st = os.stat(path)
                    kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
                out = json.dumps([kind, st.st_size, st.st_mode, st.st_mtime_ns, link]).encode()
            os.write(w, out)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    if not data or data == b"missing":
        return PathStat("missing")
    kind, size, mode, mtime, link = json.loads(data)
    return PathStat(str(kind), int(size), int(mode), int(mtime), str(link))


def stat_in(root: StateRoot, c: Container, path: str) -> str:
    """``file``, ``dir`` or ``missing`` for *path* inside the container (via a tiny child)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.close(r)
            _enter_root(root, c)
            kind = b"missing"
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                kind = b"dir" if stat.S_ISDIR(os.stat(path).st_mode) else b"file"
            os.write(w, kind)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    data = os.read(r, 16)
    os.close(r)
    os.waitpid(pid, 0)
    return data.decode() or "missing"


def copy_from(root: StateRoot, c: Container, src: str, dest: str | BinaryIO, *, follow: bool = False,
              archive: bool = False) -> None:
    """``cp CONTAINER:SRC DEST`` (DEST a host path, or a binary stream for ``-``)."""
    if not src.startswith("/"):
        src = "/" + src  # Docker: relative to the container's root
    r, w = os.pipe()
    pid = _fork(root, c, "read", src, w, follow=follow, other=r)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as stream:
            if not isinstance(dest, str):
                shutil.copyfileobj(stream, dest)
            else:
                _extract_to_host(stream, src, Path(dest), archive=archive)
    finally:
        _wait(pid, f"{c.name}:{src}")


def _host_filter(archive: bool) -> Callable[[tarfile.TarInfo, str], tarfile.TarInfo | None]:
    """tarfile's ``tar`` filter (no absolute paths, nothing written outside the destination,
    even through a symlink: the tar comes from the container), and, unless *archive* (``-a``),
    files owned by whoever runs ``cp``, as Docker does."""

    def f(m: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        out = tarfile.tar_filter(m, path)
        if out is not None and not archive:
            out = out.replace(uid=None, gid=None, uname=None, gname=None, deep=False)  # type: ignore[arg-type]
        return out

    return f


def _extract_to_host(stream: BinaryIO, src: str, dest: Path, *, archive: bool = False) -> None:
    """Unpack the container's tar under *dest* by Docker's rules, streaming (the first entry
    decides whether it lands in *dest* or is renamed to it)."""
    keep = _host_filter(archive)
    contents_only = src.endswith("/.")
    with tarfile.open(fileobj=stream, mode="r|") as tf:
        rename: tuple[str, str] | None = None
        target_dir = dest
        for n, m in enumerate(tf):
            if n == 0:
                src_is_dir = contents_only or m.isdir()
                if dest.is_dir():
                    target_dir = dest
                else:
                    if str(dest).endswith("/"):
                        raise ContainerError.invalid(f"destination directory {dest} must exist")
                    if dest.exists() and src_is_dir:
                        raise ContainerError(f"cannot copy a directory to a file: {dest}")
                    if not dest.parent.is_dir():
                        raise ContainerError.invalid(f"destination directory {dest.parent} must exist")
                    if contents_only:
                        dest.mkdir()
                    else:
                        target_dir, rename = dest.parent, (m.name, dest.name)
            if rename and (m.name == rename[0] or m.name.startswith(rename[0] + "/")):
                m.name = rename[1] + m.name[len(rename[0]):]
            if rename and m.islnk() and (m.linkname == rename[0] or m.linkname.startswith(rename[0] + "/")):
                m.linkname = rename[1] + m.linkname[len(rename[0]):]
            tf.extract(m, target_dir, filter=keep)


def copy_to(root: StateRoot, c: Container, src: str | BinaryIO, dest: str) -> None:
    """``cp SRC CONTAINER:DEST`` (SRC a host path, or a tar stream for ``-``)."""
    if not dest.startswith("/"):
        dest = "/" + dest
    if isinstance(src, str):
        sp = Path(src.rstrip("/") if not src.endswith("/.") else src[:-2])
        if not sp.exists() and not sp.is_symlink():
            raise ContainerError.not_found(f"no such file or directory: {src}")
        kind = stat_in(root, c, dest)
        contents_only = src.endswith("/.")
        if kind == "dir":
            target_dir, arc = dest, sp.name
            if contents_only:
                arc = "."
        else:
            if dest.endswith("/"):
                raise ContainerError.invalid(f"destination directory {dest} must exist")
            if kind == "file" and sp.is_dir():
                raise ContainerError(f"cannot copy a directory to a file: {dest}")
            parent = os.path.dirname(dest.rstrip("/")) or "/"
            if stat_in(root, c, parent) != "dir":
                raise ContainerError.invalid(f"destination directory {parent} must exist in the container")
            target_dir, arc = parent, os.path.basename(dest.rstrip("/"))
            if contents_only:
                raise ContainerError.invalid(f"destination directory {dest} must exist")
        payload: BinaryIO | tuple[Path, str] = (sp, arc)
    else:
        target_dir, payload = dest, src
    r, w = os.pipe()
    pid = _fork(root, c, "write", target_dir, r, other=w)
    os.close(r)
    try:
        with os.fdopen(w, "wb") as out, contextlib.suppress(BrokenPipeError):
            if isinstance(payload, tuple):
                # the tar is made as it is sent: nothing of it is held in memory
                path, arc = payload
                with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
                    if arc == ".":
                        for child in sorted(path.iterdir()):
                            tf.add(child, arcname=child.name)
                    else:
                        tf.add(path, arcname=arc)
            else:
                shutil.copyfileobj(payload, out)
    finally:
        _wait(pid, f"to {c.name}:{dest}")
