"""Fixtures of the registry tests: real ``docker-registry`` servers, the token server and the
fault proxy, all defined (and documented) in ``registry_server.py``."""

from __future__ import annotations

from registry_server import (  # noqa: F401 - fixtures, registered by being imported here
    basic_registry,
    fault_proxy,
    plain_registry,
    registry_factory,
    registry_tmp,
    tls_registry,
    token_registry,
)
