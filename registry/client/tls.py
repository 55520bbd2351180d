"""TLS for registries: ``certs.d`` directories (CA bundles and client certificates), loopback
and insecure-registry rules that allow plain HTTP."""

from __future__ import annotations

import ipaddress
import os
import ssl
from pathlib import Path

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


def system_ca_bundle() -> str | None:
    """The system's CA bundle (``$SSL_CERT_FILE``, else OpenSSL's default file, as Docker uses the
    system pool), falling back to certifi's where the system has none."""
    paths = ssl.get_default_verify_paths()
    for candidate in (os.environ.get("SSL_CERT_FILE"), paths.cafile, paths.openssl_cafile):
        if candidate and os.path.isfile(candidate):
            return candidate
    try:
        import certifi
    except ImportError:
        return None
    return str(certifi.where())


class TLSSettings:
    """How to talk TLS to one host: ``verify`` its certificate (against the system's CAs plus
    ``cas``, the host's ``*.crt`` in ``certs.d``, as Docker adds them to the pool) and a client
    ``cert`` (certificate and key files)."""

    __slots__ = ("verify", "cas", "cert")

    def __init__(self, verify: bool = True, cas: tuple[str, ...] = (),
                 cert: tuple[str, str] | None = None) -> None:
        self.verify = verify
        self.cas = cas
        self.cert = cert

    def __repr__(self) -> str:
        return f"TLSSettings(verify={self.verify}, cas={self.cas}, cert={self.cert})"

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
        return cls(verify, tuple(cas), cert)

    def context(self) -> ssl.SSLContext:
        """An ``ssl`` context for these settings."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if self.verify:
            bundle = system_ca_bundle()
            if bundle:
                ctx.load_verify_locations(cafile=bundle)
            else:
                ctx.load_default_certs()
            for ca in self.cas:
                ctx.load_verify_locations(cafile=ca)
        else:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert:
            ctx.load_cert_chain(*self.cert)
        return ctx
