"""Container records on disk: ``containers/<id>/container.json`` (config) and ``state.json``.

Both are written atomically; names are unique under the ``containers`` lock; liveness is
checked by pid *and* start time (``/proc/<pid>/stat``) so a reused pid is never mistaken.
Each record has its own lock (``containers/<id>/lock``, an ``flock``) held through every state
transition; it goes with the record, so a waiter that gets it after a removal learns so.
"""

from __future__ import annotations

import _thread  # not threading (~1.5 ms): a listing takes no lock unless a record needs repair
import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from builder.base.errors import ContainerError
from builder.base.paths import remove_tree
from builder.base.state import StateRoot
from builder.base.values import field, frozen, replace
from builder.runtime.containers.hostconfig import HostConfig
from builder.runtime.containers.names import is_id, new_id, random_name, valid_name
from builder.runtime.containers.options import ZERO_TIME
from builder.runtime.containers.recordparts import JoinedNetwork, MountPoint, State
from registry.config import ContainerConfig
from registry.kinds import ErrorKind

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CONFIG_FILE = "container.json"
STATE_FILE = "state.json"
LOG_SUFFIX = "-json.log"
LOCK_FILE = "lock"
#: name -> ID of the records (``containers/.names.json``): see ``ContainerStore.holder``
INDEX_FILE = ".names.json"  # a dot-file: bookkeeping, not a record
#: ``.exit-<id>``: an ``--rm`` container's exit code, kept ``EXIT_KEEP`` seconds for a ``wait``
#: begun before its removal
EXIT_PREFIX, EXIT_KEEP = ".exit-", 60.0

#: (thread, container id) -> how deeply that thread holds that container's lock
_depth: dict[tuple[int, str], int] = {}
#: container id -> the in-process lock threads queue on before the file lock
_in_process: dict[str, _thread.LockType] = {}
_guard = _thread.allocate_lock()


def _after_fork_in_child() -> None:
    """A forked child holds none of its parent's POSIX locks, and only the forking thread:
    locks other threads held at the fork would never be released here."""
    global _guard
    _depth.clear()
    _in_process.clear()
    _guard = _thread.allocate_lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _lockf(fd: int, *, wait: bool) -> None:
    """An exclusive POSIX lock on the whole file; ``BlockingIOError`` if held and not *wait*."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            raise BlockingIOError(e.errno, "locked") from None
        raise


class NoSuchContainer(ContainerError):
    kind = ErrorKind.NOT_FOUND
    engine = False  # docker: "Error response from daemon: No such container: x" exits 1


class NotRunning(ContainerError):
    kind = ErrorKind.CONFLICT
    engine = False  # docker exec/top/port on a stopped container exits 1


def proc_start_time(pid: int) -> int:
    """Field 22 of ``/proc/<pid>/stat`` (start time in clock ticks), 0 if the pid is gone."""
    if pid <= 0:
        return 0
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return 0
    # comm may hold spaces and parentheses: split after the last ')'
    rest = data[data.rfind(b")") + 2 :].split()
    if rest and rest[0] in (b"Z", b"X"):
        return 0  # a zombie has already exited
    try:
        return int(rest[19])
    except (IndexError, ValueError):
        return 0


def alive(pid: int, start: int) -> bool:
    return pid > 0 and start > 0 and proc_start_time(pid) == start


# no dataclass is made at import (``ps`` loads this module): Container is a frozen value
# (``builder.base.values``: ``replace``, its fields by name), as State and its parts are
@frozen
class Container:
    """``container.json``: what a container was created with, in Docker's inspect shapes.

    ``config`` is Docker's ``Config`` (Cmd, Entrypoint, Env, WorkingDir, User, Labels, Tty,
    OpenStdin, StopSignal, StopTimeout, Healthcheck, ExposedPorts, Volumes, Hostname, Image);
    ``host_config`` is the typed ``HostConfig`` (``containers.hostconfig``), on disk in Docker's
    JSON shape; ``mounts`` are the resolved mount records (``MountPoint``); ``networks`` the
    networks joined besides its own and the endpoint settings a client gave (``JoinedNetwork``).
    """

    id: str
    name: str  # without Docker's leading "/"
    created: str
    image: str  # as the user named it
    image_id: str  # "sha256:…" config digest
    path: str
    args: tuple[str, ...]
    config: ContainerConfig
    host_config: HostConfig
    mounts: tuple[MountPoint, ...] = ()
    networks: Mapping[str, JoinedNetwork] = field(default_factory=dict)
    state: State = field(default_factory=State)

    def __post_init__(self) -> None:
        if not isinstance(self.host_config, HostConfig):  # the JSON form, from code not typed yet
            object.__setattr__(self, "host_config", HostConfig.from_json(self.host_config))

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def command(self) -> list[str]:
        return [self.path, *self.args] if self.path else list(self.args)

    @property
    def labels(self) -> Mapping[str, str]:
        return self.config.labels or {}

    def to_json(self) -> dict[str, Any]:
        return {
            "Id": self.id,
            "Name": "/" + self.name,
            "Created": self.created,
            "Image": self.image,
            "ImageID": self.image_id,
            "Path": self.path,
            "Args": list(self.args),
            "Config": self.config.to_json(),
            "HostConfig": self.host_config.to_json(),
            "Mounts": [m.to_json() for m in self.mounts],
            "Networks": {k: v.to_json() for k, v in self.networks.items()},
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any], state: State | None = None) -> Container:
        return cls(
            id=str(d["Id"]),
            name=str(d["Name"]).lstrip("/"),
            created=str(d.get("Created", ZERO_TIME)),
            image=str(d.get("Image", "")),
            image_id=str(d.get("ImageID", "")),
            path=str(d.get("Path", "")),
            args=tuple(d.get("Args") or ()),
            config=ContainerConfig.from_json(d.get("Config") or {}),
            host_config=HostConfig.from_json(d.get("HostConfig") or {}),
            mounts=tuple(MountPoint.from_json(m) for m in d.get("Mounts") or ()),
            networks={str(k): JoinedNetwork.from_json(v) for k, v in (d.get("Networks") or {}).items()},
            state=state or State(),
        )

    def with_state(self, state: State) -> Container:
        return replace(self, state=state)


class ContainerStore:
    """The ``containers/`` area of a state root: create, find, update and remove records."""

    def __init__(self, root: StateRoot) -> None:
        self.root = root
        self.path = root.containers

    def dir(self, cid: str) -> Path:
        return self.path / cid

    def log_path(self, cid: str) -> Path:
        return self.path / cid / f"{cid}{LOG_SUFFIX}"

    @contextlib.contextmanager
    def names_lock(self) -> Iterator[None]:
        with self.root.lock("containers"):
            yield

    @contextlib.contextmanager
    def lock(self, cid: str, *, wait: bool = True) -> Iterator[None]:
        """Hold *cid*'s lock: every state transition (start, stop, kill, rm, repair) happens
        under it. Raises ``NoSuchContainer`` if the record is gone, or goes while we wait;
        ``BlockingIOError`` with ``wait=False`` if another holder has it. Re-entrant within
        a thread.

        A POSIX record lock (``lockf``), not an ``flock``: a process forked meanwhile (the
        sandbox's helper, an OCI runtime's supervisor) must not keep holding it, and a killed
        holder releases it. POSIX locks are the process's, so threads queue on a ``Lock``."""
        key = (_thread.get_ident(), cid)
        if _depth.get(key):
            _depth[key] += 1
            try:
                yield
            finally:
                _depth[key] -= 1
            return
        with _guard:
            in_process = _in_process.setdefault(cid, _thread.allocate_lock())
        if not in_process.acquire(blocking=wait):
            raise BlockingIOError(f"container {cid} is locked")
        try:
            path = self.dir(cid) / LOCK_FILE
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except (FileNotFoundError, NotADirectoryError):
                raise NoSuchContainer(f"No such container: {cid}") from None
            try:
                _lockf(fd, wait=wait)
                try:
                    same = os.stat(path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if not same or not (self.dir(cid) / CONFIG_FILE).is_file():
                    raise NoSuchContainer(f"No such container: {cid}")
                _depth[key] = 1
                try:
                    yield
                finally:
                    _depth.pop(key, None)
            finally:
                os.close(fd)
        finally:
            in_process.release()

    # -- reading ---------------------------------------------------------------------------------
    def _names(self) -> list[str]:
        """The entries of the containers directory (none before the first container): names,
        not path objects, as ``ps`` reads them on every call."""
        try:
            return os.listdir(self.path)
        except (FileNotFoundError, NotADirectoryError):
            return []

    def ids(self) -> list[str]:
        return sorted(n for n in self._names()
                      if is_id(n) and os.path.isfile(os.path.join(self.path, n, CONFIG_FILE)))

    def load(self, cid: str) -> Container:
        d = self.dir(cid)
        try:
            raw = (d / CONFIG_FILE).read_bytes()
        except FileNotFoundError:
            raise NoSuchContainer(f"No such container: {cid}") from None
        try:
            st = State.from_json(json.loads((d / STATE_FILE).read_bytes()))
        except FileNotFoundError:
            if not d.is_dir():  # renamed away for its removal between our two reads
                raise NoSuchContainer(f"No such container: {cid}") from None
            st = State()  # created, never saved a state
        return Container.from_json(json.loads(raw), st)

    def load_state(self, cid: str) -> State:
        try:
            return State.from_json(json.loads((self.dir(cid) / STATE_FILE).read_bytes()))
        except FileNotFoundError:
            return State()

    def all(self) -> list[Container]:
        out = []
        for cid in self.ids():
            with contextlib.suppress(NoSuchContainer, json.JSONDecodeError):
                out.append(self.load(cid))
        return out

    def _name_of(self, cid: str) -> str | None:
        """A record's name, read without building the typed record; None if it is gone (or not
        made yet) or unreadable (as ``all`` skips it)."""
        try:
            return str(json.loads((self.dir(cid) / CONFIG_FILE).read_bytes())["Name"]).lstrip("/")
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def names(self) -> dict[str, str]:
        """ID -> name of every readable record (a JSON read per container: the index's source)."""
        return {cid: name for cid in self.ids() if (name := self._name_of(cid)) is not None}

    # -- the name index: a name's record in one read, not one per container (Docker keeps it
    # in memory). Changed only under the names lock, it may hold more than the records (names
    # of removed records, a name added before its record appears), never less: an entry counts
    # while its record holds that name. Made from the records when missing or unreadable.
    def _read_index(self) -> dict[str, str] | None:
        try:
            index = json.loads((self.path / INDEX_FILE).read_bytes())
        except (OSError, ValueError):
            return None
        return index if isinstance(index, dict) else None

    def _index(self) -> dict[str, str]:
        """Under the names lock: the index, made again from the records when missing or
        unreadable, or when the names of removed records outnumber the records."""
        index = self._read_index()
        if index is None or len(index) > 2 * len(self._names()) + 32:
            index = {n: cid for cid, n in self.names().items()}
            self._write_index(index)
        return index

    def _write_index(self, index: dict[str, str]) -> None:
        write_atomic(self.path / INDEX_FILE, _dump(index))

    def holder(self, name: str, index: Mapping[str, str] | None = None) -> str | None:
        """The ID of the record named *name*, or None: the index's entry, if that record holds
        the name (without an index, every record is read)."""
        if index is None:
            index = self._read_index()
        if index is None:
            return next((cid for cid, n in self.names().items() if n == name), None)
        cid = index.get(name)
        return cid if cid is not None and self._name_of(cid) == name else None

    def find(self, ref: str) -> Container:
        """By full ID, then exact name (``/name`` accepted), then a unique ID prefix (Docker's order)."""
        ref = ref.strip()
        if not ref:
            raise NoSuchContainer("No such container: ''")
        if is_id(ref) and (self.dir(ref) / CONFIG_FILE).is_file():
            return self.load(ref)
        held = self.holder(ref.lstrip("/"))
        hits = [held] if held else []
        if not hits:
            hits = [cid for cid in self.ids() if cid.startswith(ref.lower())]
            if len(hits) > 1:
                raise ContainerError(f"multiple IDs found with provided prefix: {ref}")
        if hits:
            with contextlib.suppress(NoSuchContainer):  # removed since we read its name
                return self.load(hits[0])
        raise NoSuchContainer(f"No such container: {ref}")

    # -- writing ---------------------------------------------------------------------------------
    def create(self, build: Callable[[str, str], Container], *, name: str | None) -> Container:
        """Allocate an ID and a unique name under the lock, then write the record built by
        ``build(id, name)``. The directory appears complete or not at all."""
        if name is not None:
            name = name.lstrip("/")
            if not valid_name(name):
                raise ContainerError.invalid(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        self.path.mkdir(parents=True, exist_ok=True)
        with self.names_lock():
            self._sweep()
            index = self._index()
            if name is not None and (holder := self.holder(name, index)):
                raise _name_conflict(name, holder)
            if name is None:
                for attempt in range(50):
                    name = random_name(attempt)
                    if not self.holder(name, index):
                        break
            assert name is not None
            cid = new_id()
            container = build(cid, name)
            tmp = self.path / f".tmp-{cid}"
            tmp.mkdir()
            try:
                write_atomic(tmp / CONFIG_FILE, _dump(container.to_json()))
                write_atomic(tmp / STATE_FILE, _dump(container.state.to_json()))
                self._write_index({**index, name: cid})  # before the record appears
                os.rename(tmp, self.dir(cid))
            except BaseException:
                remove_tree(tmp)
                raise
        return container

    def save_config(self, container: Container) -> None:
        write_atomic(self.dir(container.id) / CONFIG_FILE, _dump(container.to_json()))

    def save_state(self, cid: str, state: State) -> None:
        d = self.dir(cid)
        if not d.is_dir():
            raise NoSuchContainer(f"No such container: {cid}")
        write_atomic(d / STATE_FILE, _dump(state.to_json()))

    def update_state(self, cid: str, fn: Callable[[State], State]) -> State:
        """Apply *fn* to the current state under the container's lock and save the result."""
        with self.lock(cid):
            new = fn(self.load_state(cid))
            self.save_state(cid, new)
        return new

    def rename(self, ref: str, new_name: str) -> Container:
        new_name = new_name.lstrip("/")
        if not valid_name(new_name):
            raise ContainerError.invalid(f"Invalid container name ({new_name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        with self.names_lock():
            c = self.find(ref)
            if c.name == new_name:
                raise ContainerError("Renaming a container with the same name as its current name")
            index = self._index()
            if holder := self.holder(new_name, index):
                raise _name_conflict(new_name, holder)
            index[new_name] = c.id
            self._write_index(index)  # both names while the record changes, then the new one
            old, c = c.name, replace(c, name=new_name)
            self.save_config(c)
            if index.get(old) == c.id:
                del index[old]
                self._write_index(index)
        return c

    def sweep(self, *, exit_codes: bool = False) -> None:
        """Remove what creations and removals killed midway left (``ps`` calls this), and with
        *exit_codes* (``container prune``) the old exit codes of ``--rm`` containers."""
        if exit_codes or any(n.startswith((".tmp-", ".rm-")) for n in self._names()):
            with self.names_lock():
                self._sweep()

    def _sweep(self) -> None:
        """What killed creations (``.tmp-``: under the names lock, which we hold) and removals
        (``.rm-``: under the record's lock) left, and exit codes older than ``EXIT_KEEP``."""
        for name in self._names():
            p = self.path / name
            if name.startswith(".tmp-"):
                remove_tree(p)
            elif name.startswith(".rm-"):
                try:
                    fd = os.open(p / LOCK_FILE, os.O_RDWR | os.O_CLOEXEC)
                except OSError:
                    fd = -1
                try:
                    if fd >= 0:
                        _lockf(fd, wait=False)
                    remove_tree(p)
                except BlockingIOError:
                    pass  # its remover is at work
                finally:
                    if fd >= 0:
                        os.close(fd)
            elif name.startswith(EXIT_PREFIX):
                with contextlib.suppress(OSError):  # gone meanwhile (another sweep)
                    if os.stat(p).st_mtime < time.time() - EXIT_KEEP:
                        os.unlink(p)

    def delete(self, cid: str) -> None:
        """Remove the record directory (renamed away first, so a reader never sees half of it)."""
        d = self.dir(cid)
        if not d.exists():
            return
        trash = self.path / f".rm-{cid}"
        try:
            os.rename(d, trash)
        except FileNotFoundError:
            return  # removed meanwhile (an --rm supervisor and `rm -f` may race)
        remove_tree(trash)


def _name_conflict(name: str, holder: str) -> ContainerError:
    return ContainerError.conflict(
        f'Conflict. The container name "/{name}" is already in use by container "{holder}". '
        "You have to remove (or rename) that container to be able to reuse that name.")


def write_atomic(path: Path, data: bytes) -> None:
    """Temp file + rename: readers see the old or the new file, never half of one. No fsync:
    the state must be consistent for concurrent readers, and a host crash ends every
    container anyway (``refresh`` then repairs the records)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{_thread.get_ident()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, indent=1, sort_keys=True).encode() + b"\n"
