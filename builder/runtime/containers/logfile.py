"""Docker's json-file log driver: one ``{"log","stream","time"}`` object per line, and its reader.

The supervisor writes; ``logs`` reads with ``--tail``, ``--since``/``--until``, ``-t`` and ``-f``.
``LogDriver`` is a container's ``HostConfig.LogConfig`` checked as dockerd checks it:
``json-file`` (``max-size``/``max-file`` rotation: ``<id>-json.log.1``… older first),
``local`` (the same files; dockerd's own format is private to it, its defaults 20m × 5 are
kept), ``none`` (nothing written, reading refused).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from builder.base.errors import ContainerError
from builder.base.values import frozen
from builder.runtime.containers.options import parse_bytes, parse_timestamp_text, rfc3339nano

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO

#: Docker splits lines longer than this into several entries (the last one ends in "\n")
MAX_ENTRY = 16 * 1024


@frozen
class LogEntry:
    stream: str
    time: str
    data: bytes

    def time_ns(self) -> int:
        return parse_timestamp_text(self.time)


#: the log drivers we run, and the options each takes (dockerd's names)
DRIVERS: dict[str, frozenset[str]] = {
    "json-file": frozenset({"max-file", "max-size", "compress", "labels", "labels-regex", "env",
                            "env-regex", "tag"}),
    "local": frozenset({"max-file", "max-size", "compress"}),
    "none": frozenset(),
}
#: dockerd's error reading the logs of a driver that keeps none
NO_READING = "configured logging driver does not support reading"


@frozen
class LogDriver:
    """A container's log driver: ``max_size`` bytes per file (None: unbounded) and ``max_file``
    files kept; ``discard`` for ``none``."""

    name: str = "json-file"
    max_size: int | None = None
    max_file: int = 1

    @property
    def discard(self) -> bool:
        return self.name == "none"

    @classmethod
    def check(cls, name: str | None, options: dict[str, str] | None) -> None:
        """What dockerd refuses at create: an unknown driver or option (``ContainerError``)."""
        driver = name or "json-file"
        if driver not in DRIVERS:
            raise ContainerError.invalid(
                f'error looking up logging plugin {driver}: plugin "{driver}" not found')
        for key in options or {}:
            if driver != "none" and key not in DRIVERS[driver]:
                raise ContainerError.invalid(
                    f"unknown log opt '{key}' for json-file log driver" if driver == "json-file"
                    else f"unknown log opt '{key}' for log driver {driver}")

    @classmethod
    def parse(cls, name: str | None, options: dict[str, str] | None) -> LogDriver:
        """The driver a start uses; dockerd's start-time errors (``invalid size: 'x'``)."""
        cls.check(name, options)
        driver, opts = name or "json-file", dict(options or {})
        if driver == "none":
            return cls("none")
        default_size, default_files = (20 << 20, 5) if driver == "local" else (None, 1)
        size = default_size
        if opts.get("max-size") not in (None, "", "-1"):
            try:
                size = parse_bytes(opts["max-size"], what="log")
            except ContainerError:
                raise ContainerError(f"failed to initialize logging driver: invalid size: "
                                     f"'{opts['max-size']}'") from None
        files = default_files
        if opts.get("max-file"):
            try:
                files = int(opts["max-file"])
            except ValueError:
                raise ContainerError(f"failed to initialize logging driver: strconv.Atoi: "
                                     f"parsing \"{opts['max-file']}\": invalid syntax") from None
            if files < 1:
                raise ContainerError("failed to initialize logging driver: max-file cannot be "
                                     "less than 1")
        return cls(driver, size, files)

    @classmethod
    def of_record(cls, log_path: Path) -> LogDriver:
        """The driver of the container whose log is *log_path* (its ``container.json`` beside)."""
        from builder.runtime.containers.record import CONFIG_FILE

        try:
            conf = json.loads((log_path.parent / CONFIG_FILE).read_bytes())
            lc = (conf.get("HostConfig") or {}).get("LogConfig") or {}
        except (OSError, ValueError, AttributeError):
            return cls()
        try:
            return cls.parse(lc.get("Type"), lc.get("Config"))
        except ContainerError:
            return cls()


def rotated(path: Path) -> list[Path]:
    """The rotated files of a log, oldest first (``.N`` … ``.1``)."""
    out = []
    n = 1
    while (p := path.with_name(f"{path.name}.{n}")).exists():
        out.append(p)
        n += 1
    return out[::-1]


class LogWriter:
    """Appends entries to ``<id>-json.log``; feed it raw bytes per stream, it cuts at newlines.
    The container's ``LogConfig`` (read beside the log unless *driver* is given) decides
    rotation, or that nothing is written (``none``)."""

    def __init__(self, path: Path, driver: LogDriver | None = None) -> None:
        self.path = path
        self.driver = driver if driver is not None else LogDriver.of_record(path)
        self._fd = -1
        if not self.driver.discard:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._partial: dict[str, bytes] = {}

    def feed(self, stream: str, data: bytes) -> None:
        buf = self._partial.get(stream, b"") + data
        out = []
        while True:
            nl = buf.find(b"\n")
            if nl < 0 or nl >= MAX_ENTRY:
                if len(buf) >= MAX_ENTRY:
                    out.append(buf[:MAX_ENTRY])
                    buf = buf[MAX_ENTRY:]
                    continue
                break
            out.append(buf[: nl + 1])
            buf = buf[nl + 1 :]
        self._partial[stream] = buf
        if out:
            self._write(stream, out)

    def flush(self, stream: str | None = None) -> None:
        """Write what is left of a line without its newline (the stream closed mid-line)."""
        for s in [stream] if stream else list(self._partial):
            rest = self._partial.pop(s, b"")
            if rest:
                self._write(s, [rest])

    def _write(self, stream: str, chunks: list[bytes]) -> None:
        if self._fd < 0:
            return
        now = rfc3339nano(ns=time.time_ns())
        entries = [json.dumps({"log": c.decode("utf-8", "replace"), "stream": stream,
                               "time": now}, ensure_ascii=False).encode() + b"\n"
                   for c in chunks]
        limit = self.driver.max_size
        if limit is None:
            # one write per batch with O_APPEND: a reader never sees half an entry from us
            os.write(self._fd, b"".join(entries))
            return
        # rotation as json-file does it: a file takes entries until it has reached max-size
        size = os.fstat(self._fd).st_size
        batch: list[bytes] = []
        held = 0
        for e in entries:
            if size + held >= limit:
                if batch:
                    os.write(self._fd, b"".join(batch))
                self._rotate()
                size, held, batch = 0, 0, []
            batch.append(e)
            held += len(e)
        if batch:
            os.write(self._fd, b"".join(batch))

    def _rotate(self) -> None:
        """json-file's rotation: ``.1`` … ``.(max_file-1)`` shifted, the current file becomes
        ``.1``; with one file the log starts again empty."""
        keep = self.driver.max_file - 1
        if keep > 0:
            for n in range(keep, 0, -1):
                src = self.path if n == 1 else self.path.with_name(f"{self.path.name}.{n - 1}")
                if src.exists():
                    os.replace(src, self.path.with_name(f"{self.path.name}.{n}"))
            os.close(self._fd)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                               0o640)
        else:
            os.ftruncate(self._fd, 0)

    def close(self) -> None:
        self.flush()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _parse(line: bytes) -> LogEntry | None:
    try:
        d = json.loads(line)
        return LogEntry(str(d["stream"]), str(d["time"]), str(d["log"]).encode())
    except (ValueError, KeyError, TypeError):
        return None  # a torn last line while the writer is mid-write


def _tail_lines(f: BinaryIO, n: int) -> tuple[list[bytes], int]:
    """The last *n* complete lines of *f* and the offset just after them (end of file)."""
    f.seek(0, os.SEEK_END)
    end = f.tell()
    pos, buf = end, b""
    while pos > 0 and buf.count(b"\n") <= n:
        step = min(65536, pos)
        pos -= step
        f.seek(pos)
        buf = f.read(step) + buf
    lines = buf.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines[-n:] if n else [], end


def read_logs(
    path: Path,
    *,
    tail: int | None = None,
    since_ns: int = 0,
    until_ns: int = 0,
    follow: bool = False,
    still_running: Callable[[], bool] | None = None,
    poll: float = 0.05,
) -> Iterator[LogEntry]:
    """Entries in order. With *follow*, keep reading new entries until *still_running* says the
    container has ended and the file has no more to give."""
    older = rotated(path)
    if older and not follow:
        # rotated files first (oldest first), then the current one; --tail over all of them
        entries = [e for p in [*older, path] for e in _read_file(p, tail=None, since_ns=since_ns,
                                                                 until_ns=until_ns)]
        yield from entries[-tail:] if tail is not None and tail > 0 else (
            [] if tail == 0 else entries)
        return
    yield from _read_file(path, tail=tail, since_ns=since_ns, until_ns=until_ns, follow=follow,
                          still_running=still_running, poll=poll)


def _read_file(path: Path, *, tail: int | None, since_ns: int, until_ns: int,
               follow: bool = False, still_running: Callable[[], bool] | None = None,
               poll: float = 0.05) -> Iterator[LogEntry]:
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        pending = b""
        if tail is not None and tail >= 0:
            lines, _ = _tail_lines(f, tail)
        else:
            # a last line without its newline is still being written: finish it while following
            *lines, pending = f.read().split(b"\n")
        for line in lines:
            e = _parse(line)
            if e is None:
                continue
            if _keep(e, since_ns, until_ns):
                yield e
        if not follow:
            return
        while True:
            chunk = f.read()
            if chunk:
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    e = _parse(line)
                    if e is not None and _keep(e, since_ns, until_ns):
                        yield e
                continue
            if still_running is not None and not still_running():
                # one last read: the writer may have finished between our read and the check
                chunk = f.read()
                if chunk:
                    pending += chunk
                    continue
                return
            time.sleep(poll)


def _keep(e: LogEntry, since_ns: int, until_ns: int) -> bool:
    if not since_ns and not until_ns:
        return True
    t = e.time_ns()
    return (not since_ns or t >= since_ns) and (not until_ns or t <= until_ns)
