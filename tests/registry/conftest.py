"""Fixtures of the registry tests: real ``docker-registry`` servers, the token server and the
fault proxy, all defined (and documented) in ``registry_server.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
from registry_server import (  # noqa: F401 - fixtures, registered by being imported here
    basic_registry,
    fault_proxy,
    plain_registry,
    registry_factory,
    registry_tmp,
    tls_registry,
    token_registry,
)


@pytest.fixture()
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty DOCKER_CONFIG and certs.d for the test (never the host's)."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    monkeypatch.setenv("PYBUILD_CERTS_D", str(tmp_path / "certs.d"))
    return tmp_path


@pytest.fixture()
def certs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty certs.d (``PYBUILD_CERTS_D``, returned) and DOCKER_CONFIG for the test, and no
    proxy from the environment."""
    d = tmp_path / "certs.d"
    d.mkdir()
    monkeypatch.setenv("PYBUILD_CERTS_D", str(d))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return d
