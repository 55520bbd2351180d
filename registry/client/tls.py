"""TLS for registries: ``certs.d`` directories (CA bundles and client certificates), loopback
and insecure-registry rules that allow plain HTTP."""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import socket
import ssl
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

DEFAULT_CERTS_DIRS = ("/etc/pybuild/certs.d", "/etc/docker/certs.d")


def certs_dirs() -> list[Path]:
    """``$PYBUILD_CERTS_D`` (a ``:``-separated list), else ``/etc/pybuild/certs.d`` then Docker's."""
    env = os.environ.get("PYBUILD_CERTS_D")
    return [Path(p) for p in (env.split(os.pathsep) if env else DEFAULT_CERTS_DIRS) if p]


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def insecure_registries() -> set[str]:
    """``$PYBUILD_INSECURE_REGISTRIES``: comma-separated ``host[:port]`` allowed over plain HTTP
    or with unverified TLS, as Docker's ``insecure-registries`` daemon setting."""
    return {h.strip() for h in os.environ.get("PYBUILD_INSECURE_REGISTRIES", "").split(",") if h.strip()}


def registry_mirror() -> str | None:
    """``$PYBUILD_REGISTRY_MIRROR``: a ``host[:port]`` that serves every ``docker.io`` reference in
    place of Docker Hub (Docker's ``registry-mirrors``, for air-gapped hosts; no fallback to the Hub)."""
    return os.environ.get("PYBUILD_REGISTRY_MIRROR", "").strip() or None


_bundles: dict[tuple[str, ...], str] = {}
_bundle_lock = threading.Lock()


def system_ca_bundle() -> str:
    """The system's CA bundle (``$SSL_CERT_FILE``, else OpenSSL's default file, as Docker uses the
    system pool), falling back to certifi's where the system has none."""
    paths = ssl.get_default_verify_paths()
    for candidate in (os.environ.get("SSL_CERT_FILE"), paths.cafile, paths.openssl_cafile):
        if candidate and os.path.isfile(candidate):
            return candidate
    import certifi

    return str(certifi.where())


def _ca_bundle(cas: tuple[str, ...]) -> str:
    """System CAs plus a registry's own ``*.crt`` in one file, as Docker adds them to the pool."""
    with _bundle_lock:
        if cas not in _bundles:
            parts = [Path(system_ca_bundle()).read_bytes()] + [Path(c).read_bytes() for c in cas]
            fd, path = tempfile.mkstemp(prefix="pybuild-ca-", suffix=".pem")
            with os.fdopen(fd, "wb") as f:
                f.write(b"\n".join(parts))
            atexit.register(_unlink_quietly, path)
            _bundles[cas] = path
        return _bundles[cas]


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@dataclass(frozen=True)
class TLSSettings:
    """``requests`` keyword arguments for one host: ``verify`` and a client ``cert``."""

    verify: bool | str = True
    cert: tuple[str, str] | None = None

    @classmethod
    def for_host(cls, host: str, *, verify: bool = True) -> TLSSettings:
        cas: list[str] = []
        cert: tuple[str, str] | None = None
        for base in certs_dirs():
            d = base / host
            if not d.is_dir():
                continue
            for f in sorted(d.iterdir()):
                if f.suffix == ".crt":
                    cas.append(str(f))
                elif f.suffix == ".cert" and (d / (f.stem + ".key")).is_file():
                    cert = (str(f), str(d / (f.stem + ".key")))
            break  # the first directory that knows the host wins, as in Docker
        v: bool | str = verify
        if verify:
            v = _ca_bundle(tuple(cas)) if cas else system_ca_bundle()
        return cls(v, cert)





#: what OpenSSL says when a TLS handshake is answered in plain HTTP (by version)
_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG",
                      "HTTP_REQUEST", "UNKNOWN_PROTOCOL"})


def answers_plain_http(host: str, timeout: float) -> bool:
    """Whether *host* (``name[:port]``, port 443 by default) answers a TLS handshake in plain
    HTTP. A bare handshake (no CA bundle loaded: urllib3 loads the system's for every new TLS
    connection, even unverified, ~0.1 s) tells a plain-HTTP registry before ``https`` is tried
    in earnest; anything else (TLS, a refusal, a timeout) is False, and the real attempt decides."""
    name, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
    if not name or not port.isdigit():
        name, port = host, "443"
    name = name.strip("[]")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((name, int(port)), timeout=timeout) as sock, \
                ctx.wrap_socket(sock, server_hostname=name):
            return False
    except ssl.SSLError as e:
        return e.reason in _NOT_TLS
    except (OSError, ValueError):
        return False
