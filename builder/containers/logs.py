"""Docker's json-file log driver: one ``{"log","stream","time"}`` object per line, and its reader.

The supervisor writes; ``logs`` reads with ``--tail``, ``--since``/``--until``, ``-t`` and ``-f``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from builder.containers.options import parse_timestamp_text, rfc3339nano

#: Docker splits lines longer than this into several entries (the last one ends in "\n")
MAX_ENTRY = 16 * 1024


@dataclass(frozen=True)
class LogEntry:
    stream: str
    time: str
    data: bytes

    def time_ns(self) -> int:
        return parse_timestamp_text(self.time)


class LogWriter:
    """Appends entries to ``<id>-json.log``; feed it raw bytes per stream, it cuts at newlines."""

    def __init__(self, path: Path) -> None:
        self.path = path
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
        now = rfc3339nano(ns=time.time_ns())
        lines = b"".join(
            json.dumps(
                {"log": c.decode("utf-8", "replace"), "stream": stream, "time": now},
                ensure_ascii=False,
            ).encode()
            + b"\n"
            for c in chunks
        )
        # one write per batch with O_APPEND: a reader never sees half an entry from us
        os.write(self._fd, lines)

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
