"""Who is using the store right now, told apart from who died: leases and ingest files.

A lease (as containerd's content store has) is a file ``<store>/ingest/lease-*`` that its live
holder keeps ``flock``-ed and lists the blobs its transfer wrote or relies on, one digest a
line; an ingest temp file is ``flock``-ed by its writer the same way. The kernel drops a dead
process's locks, so whoever takes the store lock next can tell a killed or cancelled transfer's
leftovers (``sweep``) from a live one's, at once rather than after an age. The store's
file helpers (``file_lock``, ``write_atomic``) live here too.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from registry.errors import DigestError

TYPE_CHECKING = False  # not ``typing``'s: a hot path loads no ``typing`` (~5 ms)
if TYPE_CHECKING:  # a state root's locks (``ps``, ``run``) need no digests
    from registry.digest import Digest


@contextlib.contextmanager
def file_lock(path: Path, *, shared: bool = False, wait: bool = True) -> Iterator[None]:
    """Hold an advisory ``flock`` on *path* (created if missing) for the ``with`` body;
    with ``wait=False`` raise ``BlockingIOError`` at once if another holder has it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
        yield
    finally:
        os.close(fd)


def new_temp(directory: Path | str, prefix: str) -> tuple[int, str]:
    """A new file ``directory/prefix<random>``, opened read-write, mode 0600 (as ``mkstemp``
    makes it, without ``tempfile``: with shutil, bz2, lzma and random, ~3-5 ms of a command)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    while True:
        name = os.path.join(directory, prefix + os.urandom(6).hex())
        try:
            return os.open(name, flags, 0o600), name
        except FileExistsError:
            continue


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write *data* to a temp file beside *path*, fsync, then rename over it."""
    fd, tmp = new_temp(path.parent, f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def claim(path: Path) -> int:
    """Create (or open) *path* and hold its exclusive ``flock``, for as long as the returned fd
    stays open: the mark of a live owner. Robust against a reaper that unlinks the file
    between our open and our lock (we then claim a fresh one)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def try_claim(path: Path) -> int | None:
    """``claim`` *path* if nobody holds it (creating it if missing), else None: a reaper's
    test of whether the owner of what *path* marks is dead."""
    return _try_lock(path, os.O_RDWR | os.O_CREAT)


def _try_lock(path: Path, flags: int = os.O_RDONLY) -> int | None:
    """An fd of *path* (opened with *flags*) holding its exclusive ``flock`` if nobody else
    holds it, else None."""
    try:
        fd = os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _locked_file(directory: Path, prefix: str) -> tuple[int, Path]:
    """A new file under *directory*, opened read-write and ``flock``-ed by us. A sweeper that
    took its lock between our create and our flock unlinks it: then we try another name."""
    while True:
        fd, name = new_temp(directory, prefix)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(name).st_ino == os.fstat(fd).st_ino:
                return fd, Path(name)
        except FileNotFoundError:
            pass
        os.close(fd)


def ingest_file(ingest: Path, prefix: str = "blob-") -> tuple[int, Path]:
    """A new ingest temp file, locked by this process until its fd is closed."""
    return _locked_file(ingest, prefix)


#: the first line of a lease whose holder does not list its blobs (a load, a layer commit)
BLANKET = b"*\n"


class Lease:
    """One live lease: ``hold`` lists a digest before the holder writes or relies on it."""

    def __init__(self, ingest_dir: Path, *, listing: bool = True) -> None:
        self._fd, self.path = _locked_file(ingest_dir, "lease-")
        self._held: set[Digest] = set()
        if not listing:  # a holder that lists nothing relies on any blob: no sweep takes one
            os.write(self._fd, BLANKET)
        #: set by ``fail``: the holder's work did not complete; the lease ends dead
        self.failed = False

    @property
    def listed(self) -> bool:
        return bool(self._held)

    def fail(self) -> None:
        self.failed = True

    def hold(self, digest: Digest) -> None:
        if digest in self._held:
            return
        os.write(self._fd, f"{digest}\n".encode())
        self._held.add(digest)

    def release(self, *, keep_listed: bool) -> None:
        """End the lease. With *keep_listed* the file stays, unlocked: a dead lease whose
        blobs the next ``sweep`` takes unless something else references them."""
        if self._fd < 0:
            return
        if not keep_listed or not self._held:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        os.close(self._fd)
        self._fd = -1


def _digests(path: Path) -> set[Digest]:
    from registry.digest import Digest

    out: set[Digest] = set()
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(DigestError, ValueError):
                out.add(Digest.parse(line.strip()))
    return out


class Leftovers:
    """What dead transfers left: lease files (with the blobs they list) and ingest files.
    Their fds stay locked until ``close``, so nothing revives them while they are judged.
    (A plain class, filled by ``scan``: every command that opens the store loads this module.)"""

    def __init__(self) -> None:
        self.leases: list[Path] = []
        self.listed: set[Digest] = set()
        self.live_listed: set[Digest] = set()
        self.ingest: list[Path] = []
        self.fds: list[int] = []
        #: a live holder lists nothing (``BLANKET``): no blob may go until it is done
        self.blanket = False

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()

    def __bool__(self) -> bool:
        return bool(self.leases or self.ingest)


def scan(ingest_dir: Path) -> Leftovers:
    """Dead leases and ingest files of the store's ingest dir (the caller holds the store lock)."""
    out = Leftovers()
    if ingest_dir.is_dir():
        for p in sorted(ingest_dir.glob("lease-*")):
            fd = _try_lock(p)
            if fd is None:
                out.live_listed |= _digests(p)
                with contextlib.suppress(OSError), open(p, "rb") as f:
                    out.blanket |= f.read(len(BLANKET)) == BLANKET
                continue
            out.fds.append(fd)
            out.leases.append(p)
            out.listed |= _digests(p)
    if ingest_dir.is_dir():
        for p in sorted(ingest_dir.glob("blob-*")):
            fd = _try_lock(p)
            if fd is not None:
                out.fds.append(fd)
                out.ingest.append(p)
    return out


@contextlib.contextmanager
def leftovers(ingest_dir: Path) -> Iterator[Leftovers]:
    found = scan(ingest_dir)
    try:
        yield found
    finally:
        found.close()
