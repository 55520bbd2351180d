"""The server core: listeners, versioned paths, ping/version, errors."""

from __future__ import annotations

import json
from typing import Any

from conftest import DOCKER  # noqa: F401


def test_ping_get_and_head_with_dockers_headers(serve: Any) -> None:
    for path in ("/_ping", "/v1.41/_ping", "/v1.24/_ping"):
        status, headers, body = serve.api("GET", path)
        assert (status, body) == (200, b"OK")
        assert headers["api-version"] == "1.41"
        assert headers["docker-experimental"] == "false"
        assert headers["ostype"] == "linux"
    status, headers, body = serve.api("HEAD", "/_ping")
    assert status == 200 and body == b""
    assert headers["api-version"] == "1.41" and headers["ostype"] == "linux"


def test_version_from_docker_cli_and_docker_py(serve: Any) -> None:
    out = json.loads(serve.docker("version", "--format", "{{json .Server}}").stdout)
    assert out["ApiVersion"] == "1.41"
    assert out["MinAPIVersion"] == "1.24"
    assert out["Os"] == "linux"
    assert out["Components"][0]["Name"] == "Engine"
    v = serve.client.version()
    assert v["ApiVersion"] == "1.41" and v["Version"] == out["Version"]
    assert serve.client.ping() is True
