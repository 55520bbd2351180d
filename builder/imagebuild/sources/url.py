"""``ADD`` of a URL: ``--checksum`` checked as a digest when planned, and what goes wrong with a
download said in one line (the URL, then the HTTP status or the connection's failure), never
requests' ``Max retries exceeded … (Caused by NewConnectionError(<object at 0x…>))``."""

from __future__ import annotations

import errno
import hashlib
import socket
import ssl
import urllib.parse
from pathlib import Path

from builder.base.errors import ContextError

_REASONS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset by peer",
    errno.EHOSTUNREACH: "no route to host",
    errno.ENETUNREACH: "network is unreachable",
    errno.ETIMEDOUT: "connection timed out",
}


def check_checksum(url: str, checksum: str) -> str:
    """``--checksum`` as BuildKit takes it: ``sha256:<64 hex>`` (or the bare hex); the
    canonical ``sha256:…`` form."""
    algo, sep, hexpart = checksum.partition(":")
    if not sep:
        algo, hexpart = "sha256", checksum
    if algo != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise ContextError(f"ADD {url}: invalid checksum digest format {checksum!r} "
                           "(expected sha256:<64 hex digits>)")
    return f"sha256:{hexpart}"


def status_error(url: str, status: int, reason: str) -> ContextError:
    text = f"{status} {reason}".strip()
    return ContextError(f"ADD {url}: {_host(url)} answered HTTP {text}")


def request_error(url: str, exc: BaseException) -> ContextError:
    """A failed request (requests or urllib3 exception) as one line."""
    return ContextError(f"ADD {url}: download failed: {_host(url)}: {_reason(exc)}")


def _host(url: str) -> str:
    u = urllib.parse.urlsplit(url)
    host = u.hostname or url
    return f"{host}:{u.port}" if u.port else host


def _reason(exc: BaseException) -> str:
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    timeout = False
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, socket.gaierror):
            return f"cannot resolve the host name ({e.strerror or e})"
        if isinstance(e, ssl.SSLError):
            return f"TLS error: {e.reason or e}"
        if isinstance(e, (socket.timeout, TimeoutError)) or type(e).__name__ in (
                "ConnectTimeout", "ReadTimeout", "ConnectTimeoutError", "ReadTimeoutError"):
            timeout = True
        if isinstance(e, OSError) and e.errno in _REASONS:
            return _REASONS[e.errno]
        # requests wraps urllib3's MaxRetryError, which keeps the cause in .reason
        todo.extend(x for x in (getattr(e, "reason", None), e.__cause__, e.__context__,
                                *getattr(e, "args", ())) if isinstance(x, BaseException))
    if timeout:
        return "timed out"
    name = type(exc).__name__
    return "connection closed before a response" if "Protocol" in name or "Disconnected" in name \
        else f"{name}"


def download(url: str, checksum: str | None, into: Path) -> Path:
    """*url* into a new file under *into*, its sha256 checked against *checksum* if given.
    Nothing is left behind when it fails."""
    import requests

    target = into / f"dl-{hashlib.sha256(url.encode()).hexdigest()[:16]}"
    h = hashlib.sha256()
    try:
        with requests.get(url, stream=True, timeout=30) as resp:
            if resp.status_code != 200:
                raise status_error(url, resp.status_code, resp.reason)
            with open(target, "wb") as f:
                for chunk in resp.iter_content(1 << 20):
                    h.update(chunk)
                    f.write(chunk)
        if checksum and checksum != f"sha256:{h.hexdigest()}":
            # BuildKit's order: what came, then what was asked for
            raise ContextError(f"ADD {url}: checksum mismatch: got sha256:{h.hexdigest()}, "
                               f"expected {checksum}")
    except requests.RequestException as e:
        target.unlink(missing_ok=True)
        raise request_error(url, e) from None
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target
