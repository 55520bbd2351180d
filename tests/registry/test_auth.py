"""``registry.auth``: challenges, ``config.json``, credential helpers, and bearer tokens from a real
token server in front of a real registry."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from registry_server import TOKEN_USERS, Registry

from registry.auth import (
    DOCKER_HUB_KEY,
    Authenticator,
    Credentials,
    DockerConfig,
    config_key,
    parse_challenges,
    scope_for,
)
from registry.client.transport import Session
from registry.errors import CredentialHelperError, RegistryError, Unauthorized


def test_parse_challenges() -> None:
    [c] = parse_challenges('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                           'scope="repository:library/busybox:pull,push"')
    assert c.scheme == "bearer"
    assert c.get("realm") == "https://auth.docker.io/token"
    assert c.get("scope") == "repository:library/busybox:pull,push"
    basic, bearer = parse_challenges('Basic realm="x y", Bearer realm="r",error="insufficient_scope"')
    assert (basic.scheme, basic.get("realm")) == ("basic", "x y")
    assert (bearer.scheme, bearer.get("error")) == ("bearer", "insufficient_scope")
    assert parse_challenges("") == []
    assert scope_for("a/b", {"push", "pull"}) == "repository:a/b:pull,push"


def test_config_json_round_trip_mode_0600_and_unknown_keys_kept(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"psFormat": "table", "auths": {
        "https://reg.example:5000/v1/": {"auth": base64.b64encode(b"old:pw").decode()}}}))
    cfg = DockerConfig.load(tmp_path)
    # Legacy keys with a scheme and path match the bare host, as in Docker.
    assert cfg.get("reg.example:5000") == Credentials("old", "pw")
    cfg.store("docker.io", Credentials("me", "secret"))
    cfg.store("127.0.0.1:5000", Credentials("u", identity_token="refresh-me"))
    assert stat.S_IMODE((tmp_path / "config.json").stat().st_mode) == 0o600
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["psFormat"] == "table"
    assert base64.b64decode(data["auths"][DOCKER_HUB_KEY]["auth"]) == b"me:secret"
    again = DockerConfig.load(tmp_path)
    assert again.get("docker.io") == Credentials("me", "secret")
    assert again.get("127.0.0.1:5000").identity_token == "refresh-me"
    assert again.get("unknown.example") == Credentials()
    assert again.erase("reg.example:5000") and not again.erase("reg.example:5000")
    assert "secret" not in repr(again.get("docker.io"))
    assert config_key("registry-1.docker.io") == DOCKER_HUB_KEY


def test_invalid_config_json_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{nope")
    with pytest.raises(RegistryError, match=r"config.json: invalid JSON"):
        DockerConfig.load(tmp_path)


def _helper(bindir: Path, name: str, get_output: str, code: int = 0) -> None:
    bindir.mkdir(exist_ok=True)
    script = bindir / f"docker-credential-{name}"
    script.write_text(f"#!/bin/sh\ncat > {bindir}/{name}.stdin\necho $1 >> {bindir}/{name}.calls\n"
                      f"printf '%s' '{get_output}'\nexit {code}\n")
    script.chmod(0o755)


def test_creds_store_and_token_username(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    _helper(bindir, "desk", json.dumps({"ServerURL": "x", "Username": "<token>", "Secret": "idt"}))
    _helper(bindir, "nope", "credentials not found in native keychain", code=1)
    _helper(bindir, "broken", "boom", code=3)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    (tmp_path / "config.json").write_text(json.dumps({
        "credsStore": "desk",
        "credHelpers": {"a.example": "nope", "b.example": "broken", "c.example": "missing"}}))
    cfg = DockerConfig.load(tmp_path)
    assert cfg.get("any.example") == Credentials(identity_token="idt")
    assert (bindir / "desk.stdin").read_text() == "any.example"
    assert cfg.get("a.example") == Credentials()
    with pytest.raises(CredentialHelperError, match="docker-credential-broken get b.example: boom"):
        cfg.get("b.example")
    with pytest.raises(CredentialHelperError, match="docker-credential-missing not found"):
        cfg.get("c.example")
    assert cfg.store("any.example", Credentials("u", "p")).endswith("docker-credential-desk")
    assert json.loads((bindir / "desk.stdin").read_text()) == {
        "ServerURL": "any.example", "Username": "u", "Secret": "p"}


def _authenticator(reg: Registry, creds: Credentials) -> Authenticator:
    s = Session()
    a = Authenticator(s, reg.addr, creds)
    a.set_challenge(s.request("GET", f"{reg.url}/v2/").headers["WWW-Authenticate"])
    return a


def test_bearer_tokens_cached_by_scope(token_registry: Registry) -> None:
    import requests

    token = token_registry.token
    assert token is not None
    a = _authenticator(token_registry, Credentials("alice", TOKEN_USERS["alice"][0]))
    pull = frozenset({scope_for("t/cache", {"pull"})})
    before = len(token.requests)
    h1 = a.header(pull)
    assert a.header(pull) == h1 and len(token.requests) == before + 1
    push = frozenset({scope_for("t/cache", {"pull", "push"})})
    assert a.header(push) != h1 and len(token.requests) == before + 2
    r = requests.post(f"{token_registry.url}/v2/t/cache/blobs/uploads/",
                      headers={"Authorization": a.header(push) or ""})
    assert r.status_code == 202
    r = requests.post(f"{token_registry.url}/v2/t/cache/blobs/uploads/",
                      headers={"Authorization": h1 or ""})
    assert r.status_code == 401  # a pull token cannot push


def test_bearer_wrong_password_and_identity_token(token_registry: Registry) -> None:
    bad = _authenticator(token_registry, Credentials("alice", "wrong"))
    with pytest.raises(Unauthorized, match="incorrect username or password"):
        bad.header(frozenset({scope_for("t/x", {"pull"})}))
    good = _authenticator(token_registry, Credentials("alice", TOKEN_USERS["alice"][0]))
    refresh = good.login_token()
    assert refresh
    via_refresh = _authenticator(token_registry, Credentials(identity_token=refresh))
    token = token_registry.token
    assert token is not None
    n = len(token.requests)
    assert via_refresh.header(frozenset({scope_for("t/x", {"pull"})}))
    assert token.requests[n]["method"] == "POST" and token.requests[n]["user"] == "alice"
    stale = _authenticator(token_registry, Credentials(identity_token="revoked"))
    with pytest.raises(Unauthorized):
        stale.header(frozenset({scope_for("t/x", {"pull"})}))


def test_rejected_cached_token_is_refreshed_on_401(token_registry: Registry) -> None:
    import time

    from registry.auth import _Token
    from registry.client import RegistryClient, Repository
    from registry.errors import NameUnknown

    token = token_registry.token
    assert token is not None
    with RegistryClient(token_registry.addr,
                        credentials=Credentials("alice", TOKEN_USERS["alice"][0])) as c:
        repo = Repository(c, "t/refresh")
        with pytest.raises(NameUnknown):
            repo.tags()
        n = len(token.requests)
        c.auth._tokens[repo.scopes] = _Token("not-a-token", time.time() + 300)
        with pytest.raises(NameUnknown):  # a 401, a fresh token, then the real answer
            repo.tags()
        assert len(token.requests) == n + 1


def test_expired_token_is_fetched_again(token_registry: Registry) -> None:
    token = token_registry.token
    assert token is not None
    a = _authenticator(token_registry, Credentials("alice", TOKEN_USERS["alice"][0]))
    scopes = frozenset({scope_for("t/expiry", {"pull"})})
    first = a.header(scopes)
    n = len(token.requests)
    a._tokens[scopes].expires = 0.0  # as if its lifetime had run out
    assert a.header(scopes) != first and len(token.requests) == n + 1
