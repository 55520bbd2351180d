"""Registry credentials a client sends: ``X-Registry-Auth`` (one ``AuthConfig``, base64url JSON,
for pull and push) and ``X-Registry-Config`` (server address -> ``AuthConfig``, for build).

With no header the registry client falls back to the daemon user's own ``config.json``, as a
CLI command would. ``POST /auth`` (``docker login``) checks credentials against the registry;
the client keeps them, the daemon stores nothing.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from builder.api.errors import bad_request
from builder.api.streams import in_thread
from registry.auth import Credentials
from registry.reference import DOCKER_HUB, DOCKER_HUB_API, Reference


def _decode(header: str, what: str) -> Any:
    text = header.strip()
    if not text:
        return None
    padded = text + "=" * (-len(text) % 4)
    try:
        raw = base64.urlsafe_b64decode(padded.encode())
    except (binascii.Error, ValueError):
        try:
            raw = base64.b64decode(padded.encode())
        except (binascii.Error, ValueError):
            raise bad_request(f"invalid {what} header: not base64") from None
    try:
        return json.loads(raw or b"null")
    except ValueError:
        raise bad_request(f"invalid {what} header: not JSON") from None


def _credentials(d: Mapping[str, Any]) -> Credentials | None:
    username = str(d.get("username") or "")
    password = str(d.get("password") or "")
    token = str(d.get("identitytoken") or d.get("IdentityToken") or "")
    if not (username or password or token):
        return None
    return Credentials(username, password, identity_token=token)


def registry_auth(headers: Mapping[str, str]) -> Credentials | None:
    """The credentials of ``X-Registry-Auth``; None when absent or empty (``{}``)."""
    data = _decode(headers.get("X-Registry-Auth", ""), "X-Registry-Auth")
    if data is None:
        return None
    if not isinstance(data, dict):
        raise bad_request("invalid X-Registry-Auth header: not a JSON object")
    return _credentials(data)


def registry_config(headers: Mapping[str, str]) -> dict[str, Credentials]:
    """``X-Registry-Config``: registry domain -> credentials."""
    data = _decode(headers.get("X-Registry-Config", ""), "X-Registry-Config")
    if not data:
        return {}
    if not isinstance(data, dict):
        raise bad_request("invalid X-Registry-Config header: not a JSON object")
    out: dict[str, Credentials] = {}
    for server, entry in data.items():
        if not isinstance(entry, dict):
            continue
        creds = _credentials(entry)
        if creds is None:
            continue
        host = str(server).split("://", 1)[-1].split("/", 1)[0]
        if host in ("index.docker.io", "registry-1.docker.io", "docker.io"):
            out[DOCKER_HUB] = creds
            continue
        try:
            out[Reference.parse(f"{host}/x").domain] = creds
        except Exception:  # noqa: BLE001 - an entry we cannot use is skipped, as dockerd does
            continue
    return out


# -- POST /auth: `docker login` asks the daemon to check the credentials ------------------------
routes = web.RouteTableDef()


def _login_host(server: str) -> str:
    """The registry host of an ``AuthConfig.serveraddress`` (Docker Hub's API for Hub names)."""
    host = server.split("://", 1)[-1].split("/", 1)[0] if server else DOCKER_HUB
    if host in ("", "index.docker.io", "registry-1.docker.io", DOCKER_HUB):
        return DOCKER_HUB_API
    try:
        return Reference.parse(f"{host}/x").registry
    except Exception:  # noqa: BLE001 - any unparsable address is the client's error
        raise bad_request(f"invalid registry address {server!r}") from None


def check_login(config: Mapping[str, Any]) -> str | None:
    """Verify an ``AuthConfig`` against its registry; the identity token if one was issued."""
    from registry.client import RegistryClient

    creds = _credentials(config)
    if creds is None:
        raise bad_request("username and password (or an identity token) are required")
    with RegistryClient(_login_host(str(config.get("serveraddress") or "")),
                        credentials=creds) as client:
        return client.verify_login()


@routes.post("/auth")
async def auth(request: web.Request) -> web.Response:
    try:
        config = await request.json()
    except ValueError:
        raise bad_request("malformed JSON body: expected an AuthConfig object") from None
    if not isinstance(config, dict):
        raise bad_request("malformed JSON body: expected an AuthConfig object")
    token = await in_thread(check_login, config)
    return web.json_response({"Status": "Login Succeeded", "IdentityToken": token or ""})
