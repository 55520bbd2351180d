"""Registry credentials and authentication: ``~/.docker/config.json``, credential helpers, challenges.

``Credentials`` come from ``auths``, ``credHelpers`` or ``credsStore``; ``Authenticator`` answers
``WWW-Authenticate`` challenges (Basic, or Bearer tokens fetched from the realm, cached by scope).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.errors import (
    CredentialHelperError,
    InvalidReference,
    RegistryError,
    TransportError,
    Unauthorized,
)
from registry.reference import DOCKER_HUB, DOCKER_HUB_API, Reference
from registry.values import frozen

if TYPE_CHECKING:
    from registry.client.transport import Response, Session

#: the key Docker files Docker Hub credentials under
DOCKER_HUB_KEY = "https://index.docker.io/v1/"


@frozen
class Credentials:
    """A username and password, or an identity (refresh) token used with the OAuth2 flow."""

    username: str = ""
    password: str = ""
    identity_token: str = ""

    def __bool__(self) -> bool:
        return bool(self.username or self.password or self.identity_token)

    def __repr__(self) -> str:  # never show a secret in a traceback
        return f"Credentials(username={self.username!r}, password=***, identity_token=***)"


ANONYMOUS = Credentials()


def config_key(domain: str) -> str:
    """The ``auths``/helper key of a registry domain: Docker Hub keeps its historical URL."""
    return DOCKER_HUB_KEY if domain in (DOCKER_HUB, DOCKER_HUB_API, "index.docker.io") else domain


def server_domain(server: str | None) -> str:
    """The registry domain a ``login``/``logout`` SERVER names (``docker.io`` when none; a URL,
    ``index.docker.io`` and ``registry-1.docker.io`` reduced as Docker does). ``InvalidReference``
    if it names no registry."""
    if not server:
        return DOCKER_HUB
    host = server.split("://", 1)[-1].split("/", 1)[0]
    if host in ("index.docker.io", "registry-1.docker.io"):
        return DOCKER_HUB
    try:
        return Reference.parse(f"{host}/x").domain
    except RegistryError:
        raise InvalidReference(f"invalid registry address {server!r}") from None


def login_host(domain: str) -> str:
    """The host a login for *domain* is checked against (Docker Hub's is its API host)."""
    return DOCKER_HUB_API if domain == DOCKER_HUB else domain


def _host_of(key: str) -> str:
    """``https://host:5000/v1/`` → ``host:5000``: how Docker matches legacy ``auths`` keys."""
    key = re.sub(r"^[a-z]+://", "", key)
    return key.split("/", 1)[0]


def docker_config_dir() -> Path:
    env = os.environ.get("DOCKER_CONFIG")
    return Path(env) if env else Path.home() / ".docker"


class DockerConfig:
    """``config.json`` as a dict; unknown keys are kept as they are when it is written back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {}

    def __repr__(self) -> str:  # its data holds secrets
        return f"DockerConfig(path={self.path!r})"

    @classmethod
    def load(cls, directory: Path | None = None) -> DockerConfig:
        path = (directory or docker_config_dir()) / "config.json"
        config = cls(path)
        try:
            raw = path.read_text()
        except FileNotFoundError:
            return config
        try:
            data = json.loads(raw) if raw.strip() else {}
        except ValueError as e:
            raise RegistryError(f"{path}: invalid JSON: {e}") from None
        if not isinstance(data, dict):
            raise RegistryError(f"{path}: expected a JSON object")
        config.data = data
        return config

    def save(self) -> None:
        """Write atomically with mode 0600 (it holds secrets), as Docker does."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".config.json.")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(self.data, f, indent="\t")
                f.write("\n")
            os.rename(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def helper_for(self, key: str) -> str | None:
        helpers = self.data.get("credHelpers") or {}
        helper = helpers.get(key) or helpers.get(_host_of(key))
        return str(helper) if helper else (str(self.data["credsStore"]) if self.data.get("credsStore") else None)

    def _auth_entry(self, key: str) -> tuple[str, dict[str, Any]] | None:
        auths = self.data.get("auths") or {}
        if key in auths:
            return key, auths[key]
        host = _host_of(key)
        for k, v in auths.items():
            if _host_of(k) == host:
                return k, v
        return None

    def get(self, domain: str) -> Credentials:
        """The credentials for *domain*: its helper if one is configured, else ``auths``."""
        key = config_key(domain)
        helper = self.helper_for(key)
        if helper:
            creds = helper_get(helper, key)
            if creds:
                return creds
        entry = self._auth_entry(key)
        if entry is None:
            return ANONYMOUS
        _, v = entry
        username, password = str(v.get("username") or ""), str(v.get("password") or "")
        if v.get("auth"):
            try:
                username, _, password = base64.b64decode(v["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise RegistryError(f"{self.path}: invalid auth entry for {key}") from None
        return Credentials(username, password, str(v.get("identitytoken") or ""))

    def store(self, domain: str, creds: Credentials) -> str:
        """Save *creds* in the helper when one is configured, else in ``auths``; returns where."""
        key = config_key(domain)
        helper = self.helper_for(key)
        if helper:
            helper_store(helper, key, creds)
            self._drop_auth(key)
            self.save()
            return f"credential helper docker-credential-{helper}"
        entry: dict[str, Any] = {}
        if creds.identity_token:
            entry = {"auth": base64.b64encode(f"{creds.username}:".encode()).decode(),
                     "identitytoken": creds.identity_token}
        else:
            entry = {"auth": base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()}
        self.data.setdefault("auths", {})[key] = entry
        self.save()
        return str(self.path)

    def _drop_auth(self, key: str) -> bool:
        auths = self.data.get("auths") or {}
        found = self._auth_entry(key)
        if found is None:
            return False
        auths.pop(found[0], None)
        return True

    def erase(self, domain: str) -> bool:
        """Remove stored credentials for *domain*; False if there were none."""
        key = config_key(domain)
        removed = False
        helper = self.helper_for(key)
        if helper:
            removed = helper_erase(helper, key)
        if self._drop_auth(key):
            removed = True
            self.save()
        return removed


# -- credential helpers: docker-credential-<name> get|store|erase, JSON over stdin/stdout -------
def _helper(name: str, action: str, stdin: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which(f"docker-credential-{name}")
    if exe is None:
        raise CredentialHelperError(f"credential helper docker-credential-{name} not found in PATH")
    try:
        return subprocess.run([exe, action], input=stdin, capture_output=True, text=True,
                              timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CredentialHelperError(f"docker-credential-{name} {action}: {e}") from None


def helper_get(name: str, server: str) -> Credentials:
    out = _helper(name, "get", server)
    if out.returncode != 0:
        message = (out.stdout or out.stderr).strip()
        if "credentials not found" in message.lower():
            return ANONYMOUS
        raise CredentialHelperError(f"docker-credential-{name} get {server}: {message}")
    try:
        data = json.loads(out.stdout)
        username, secret = str(data.get("Username") or ""), str(data.get("Secret") or "")
    except (ValueError, AttributeError):
        raise CredentialHelperError(f"docker-credential-{name} get: output is not JSON") from None
    if username == "<token>":  # an identity token, by the helper protocol's convention
        return Credentials(identity_token=secret)
    return Credentials(username, secret)


def helper_store(name: str, server: str, creds: Credentials) -> None:
    username, secret = ("<token>", creds.identity_token) if creds.identity_token else (
        creds.username, creds.password)
    out = _helper(name, "store", json.dumps({"ServerURL": server, "Username": username,
                                             "Secret": secret}))
    if out.returncode != 0:
        raise CredentialHelperError(
            f"docker-credential-{name} store: {(out.stdout or out.stderr).strip()}")


def helper_erase(name: str, server: str) -> bool:
    out = _helper(name, "erase", server)
    if out.returncode != 0:
        if "not found" in (out.stdout + out.stderr).lower():
            return False
        raise CredentialHelperError(
            f"docker-credential-{name} erase: {(out.stdout or out.stderr).strip()}")
    return True


# -- challenges --------------------------------------------------------------------------------
@frozen
class Challenge:
    scheme: str  # lower case: "basic" or "bearer"
    params: tuple[tuple[str, str], ...] = ()

    def get(self, key: str) -> str | None:
        return dict(self.params).get(key)


_PARAM = re.compile(r'\s*([a-zA-Z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


def parse_challenges(header: str) -> list[Challenge]:
    """``WWW-Authenticate`` → challenges: ``Bearer realm="…",service="…",scope="…"``, ``Basic …``."""
    out: list[Challenge] = []
    pos = 0
    while pos < len(header):
        m = re.compile(r"\s*,?\s*([A-Za-z][A-Za-z0-9_-]*)\s*").match(header, pos)
        if not m or m.end() == pos:
            break
        scheme = m.group(1).lower()
        pos = m.end()
        params: list[tuple[str, str]] = []
        while pos < len(header):
            pm = _PARAM.match(header, pos)
            if not pm:
                break
            value = pm.group(2) if pm.group(2) is not None else pm.group(3)
            params.append((pm.group(1).lower(), re.sub(r"\\(.)", r"\1", value or "")))
            pos = pm.end()
        out.append(Challenge(scheme, tuple(params)))
    return out


def scope_for(repository: str, actions: Iterable[str]) -> str:
    return f"repository:{repository}:{','.join(sorted(set(actions)))}"


class _Token:
    __slots__ = ("value", "expires")

    def __init__(self, value: str, expires: float) -> None:
        self.value = value
        self.expires = expires


class Authenticator:
    """Answers a registry's challenges with *credentials*; one per registry host, thread-safe.

    Bearer tokens are cached by the set of scopes they were asked for and refreshed before
    they expire (or when the caller reports a 401 with ``invalidate``).
    """

    def __init__(self, session: Session, host: str, credentials: Credentials) -> None:
        self._session = session  # the registry client's (it knows each host's TLS settings)
        self.host = host
        self.credentials = credentials
        self.challenge: Challenge | None = None
        self._tokens: dict[frozenset[str], _Token] = {}
        self._lock = threading.Lock()
        self.refresh_token: str | None = None

    def set_challenge(self, header: str | None) -> None:
        challenges = parse_challenges(header or "")
        chosen = next((c for c in challenges if c.scheme == "bearer"), None) or next(
            (c for c in challenges if c.scheme == "basic"), None)
        self.challenge = chosen

    def invalidate(self, scopes: frozenset[str]) -> None:
        with self._lock:
            self._tokens.pop(scopes, None)

    def header(self, scopes: frozenset[str]) -> str | None:
        """The ``Authorization`` value for a request needing *scopes*, or None (anonymous)."""
        ch = self.challenge
        if ch is None:
            return None
        if ch.scheme == "basic":
            if not (self.credentials.username or self.credentials.password):
                return None
            raw = f"{self.credentials.username}:{self.credentials.password}".encode()
            return "Basic " + base64.b64encode(raw).decode()
        with self._lock:
            tok = self._tokens.get(scopes)
            if tok is None or tok.expires <= time.time():
                tok = self._fetch_token(ch, scopes)
                self._tokens[scopes] = tok
            return "Bearer " + tok.value

    def _fetch_token(self, ch: Challenge, scopes: frozenset[str], *, offline: bool = False) -> _Token:
        realm = ch.get("realm")
        if not realm:
            raise Unauthorized(f"unauthorized: {self.host} sent a Bearer challenge without a realm")
        service = ch.get("service")
        creds = self.credentials
        if creds.identity_token:
            # OAuth2 refresh-token grant, as Docker does with an identity token.
            form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                    "client_id": "pybuild", "scope": " ".join(sorted(scopes))}
            if service:
                form["service"] = service
            r = self._ask(realm, "POST", urllib.parse.urlencode(form).encode(),
                          {"Content-Type": "application/x-www-form-urlencoded"}, None)
        else:
            params: list[tuple[str, str]] = [("scope", s) for s in sorted(scopes)]
            if service:
                params.insert(0, ("service", service))
            if offline:
                params += [("offline_token", "true"), ("client_id", "pybuild")]
            headers = {}
            if creds.username:
                raw = f"{creds.username}:{creds.password}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
            r = self._ask(realm, "GET", None, headers, params)
        if r.status_code in (401, 403):
            raise Unauthorized(
                f"unauthorized: incorrect username or password for {self.host}" if creds else
                f"unauthorized: authentication required for {self.host}; run pybuild login {self.host}")
        if r.status_code >= 500:
            raise TransportError(f"token server {realm}: HTTP {r.status_code}", status=r.status_code)
        if r.status_code != 200:
            raise Unauthorized(f"unauthorized: token server {realm} answered HTTP {r.status_code}")
        try:
            body = r.json()
        except ValueError:
            raise Unauthorized(f"unauthorized: token server {realm} did not answer JSON") from None
        value = body.get("token") or body.get("access_token")
        if not value:
            raise Unauthorized(f"unauthorized: token server {realm} gave no token")
        if body.get("refresh_token"):
            self.refresh_token = str(body["refresh_token"])
        # Docker's rule: at least 60 s; refresh a little early so a token never expires mid-request.
        expires_in = max(int(body.get("expires_in") or 60), 60)
        return _Token(str(value), time.time() + expires_in - 10)

    def _ask(self, realm: str, method: str, body: bytes | None, headers: dict[str, str],
             params: list[tuple[str, str]] | None) -> Response:
        from registry.client.transport import HTTPFailure

        try:
            return self._session.request(method, realm, body=body, headers=headers, params=params,
                                         timeout=60)
        except HTTPFailure as e:
            raise TransportError(f"token server {realm}: {e}") from None

    def login_token(self) -> str | None:
        """For ``login`` against a token registry: fetch a token (asking for an offline refresh
        token) to verify the credentials; returns the identity token if the server gave one."""
        ch = self.challenge
        if ch is None or ch.scheme != "bearer":
            return None
        self._fetch_token(ch, frozenset(), offline=True)
        return self.refresh_token
