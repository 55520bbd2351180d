"""``pybuild login/logout/pull/push/copy/manifest inspect/tags`` run as a user would, against real
``docker-registry`` servers, with a temporary DOCKER_CONFIG and certs.d."""

# ruff: noqa: F811 - the registry fixtures are imported, then named as test parameters
from __future__ import annotations

import base64
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "registry"))

from registry_server import (  # noqa: E402,F401 - fixtures come in by import
    BASIC_USERS,
    TOKEN_USERS,
    Registry,
    basic_registry,
    busybox_layer_tar,
    file_tar,
    make_image,
    plain_registry,
    registry_tmp,
    tls_registry,
    token_registry,
    unique_repo,
)

from registry.digest import Digest  # noqa: E402
from registry.model import Index, Platform  # noqa: E402
from registry.reference import Reference  # noqa: E402


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    return {"DOCKER_CONFIG": str(tmp_path / "docker-config"),
            "PYBUILD_CERTS_D": str(tmp_path / "certs.d")}


def image(pybuild: Any, name: str = "app:1", **kw: Any) -> Any:
    return make_image(pybuild.store(), name, layers=[busybox_layer_tar(),
                                                     file_tar("d", os.urandom(50_000))], **kw)


def config_json(env: dict[str, str]) -> dict[str, Any]:
    return dict(json.loads((Path(env["DOCKER_CONFIG"]) / "config.json").read_text()))


def test_login_writes_config_0600_then_push_and_pull_use_it(pybuild: Any, tmp_path: Path,
                                                            basic_registry: Registry,
                                                            env: dict[str, str]) -> None:
    addr = basic_registry.addr
    r = pybuild("login", "-u", "alice", "--password-stdin", addr, input=BASIC_USERS["alice"] + "\n",
                env=env)
    assert "Login Succeeded" in r.stdout
    path = Path(env["DOCKER_CONFIG"]) / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    entry = config_json(env)["auths"][addr]
    assert base64.b64decode(entry["auth"]).decode() == f"alice:{BASIC_USERS['alice']}"

    img = image(pybuild)
    target = f"{addr}/{unique_repo()}:v1"
    out = pybuild("push", "app:1", target, env=env)
    assert f"v1: digest: {img.descriptor.digest} size: {img.descriptor.size}" in out.stdout
    assert out.stdout.count(": Pushed") == 2  # the layers; the config is not shown

    other = type(pybuild)(tmp_path / "other-root")
    other.root.mkdir()
    pulled = other("pull", target, env=env)
    assert f"Digest: {img.descriptor.digest}" in pulled.stdout
    assert "Status: Downloaded newer image for" in pulled.stdout
    assert other.store().resolve(target).descriptor.digest == img.descriptor.digest
    again = other("pull", target, env=env)
    assert "Status: Image is up to date for" in again.stdout
    assert ": Already exists" not in again.stdout  # up to date: no layer is shown, as Docker

    assert "Removing login credentials" in pybuild("logout", addr, env=env).stdout
    assert addr not in config_json(env).get("auths", {})
    denied = other("pull", target, env=env, check=False)
    assert denied.returncode != 0
    assert f"unauthorized: authentication required for {addr}" in denied.stderr


def test_login_with_wrong_password_fails_and_writes_nothing(pybuild: Any, basic_registry: Registry,
                                                            env: dict[str, str]) -> None:
    r = pybuild("login", "-u", "alice", "--password-stdin", basic_registry.addr, input="nope\n",
                env=env, check=False)
    assert r.returncode != 0
    assert "unauthorized" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (Path(env["DOCKER_CONFIG"]) / "config.json").exists()


def test_unknown_tag_is_not_found(pybuild: Any, plain_registry: Registry,
                                  env: dict[str, str]) -> None:
    image(pybuild)
    repo = f"{plain_registry.addr}/{unique_repo()}"
    pybuild("push", "-q", "app:1", f"{repo}:v1", env=env)
    r = pybuild("pull", f"{repo}:nope", env=env, check=False)
    assert r.returncode != 0
    assert "not found" in r.stderr and f"{repo}:nope" in r.stderr
    r = pybuild("pull", "Bad Ref!", env=env, check=False)
    assert r.returncode != 0 and "invalid reference" in r.stderr


HELPER = r"""#!/bin/sh
# A docker-credential helper for tests: secrets in a JSON file beside it; calls logged.
store="$(dirname "$0")/secrets.json"
[ -f "$store" ] || echo '{}' > "$store"
input="$(cat)"
echo "$1 $input" >> "$(dirname "$0")/calls.log"
exec python3 - "$1" "$store" "$input" <<'PY'
import json, sys
action, path, data = sys.argv[1], sys.argv[2], sys.argv[3]
secrets = json.load(open(path))
if action == "get":
    if data.strip() not in secrets:
        print("credentials not found in native keychain"); sys.exit(1)
    user, secret = secrets[data.strip()]
    print(json.dumps({"ServerURL": data.strip(), "Username": user, "Secret": secret}))
elif action == "store":
    d = json.loads(data)
    secrets[d["ServerURL"]] = [d["Username"], d["Secret"]]
    json.dump(secrets, open(path, "w"))
elif action == "erase":
    if data.strip() not in secrets:
        print("credentials not found in native keychain"); sys.exit(1)
    del secrets[data.strip()]
    json.dump(secrets, open(path, "w"))
PY
"""


def test_credential_helper_from_cred_helpers(pybuild: Any, tmp_path: Path,
                                             basic_registry: Registry,
                                             env: dict[str, str]) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-test"
    helper.write_text(HELPER)
    helper.chmod(0o755)
    addr = basic_registry.addr
    Path(env["DOCKER_CONFIG"]).mkdir()
    (Path(env["DOCKER_CONFIG"]) / "config.json").write_text(
        json.dumps({"credHelpers": {addr: "test"}}))
    env = {**env, "PATH": f"{bindir}:{os.environ['PATH']}"}

    pybuild("login", "-u", "bob", "--password-stdin", addr, input=BASIC_USERS["bob"], env=env)
    assert json.loads((bindir / "secrets.json").read_text()) == {addr: ["bob", BASIC_USERS["bob"]]}
    assert "auths" not in config_json(env) or addr not in config_json(env)["auths"]

    img = image(pybuild)
    target = f"{addr}/{unique_repo()}:v1"
    pybuild("push", "-q", "app:1", target, env=env)
    other = type(pybuild)(tmp_path / "other-root")
    other.root.mkdir()
    other("pull", "-q", target, env=env)
    assert other.store().resolve(target).descriptor.digest == img.descriptor.digest
    calls = (bindir / "calls.log").read_text().splitlines()
    assert calls[0].startswith("store ") and any(c == f"get {addr}" for c in calls)

    pybuild("logout", addr, env=env)
    assert json.loads((bindir / "secrets.json").read_text()) == {}


def test_token_login_keeps_identity_token_and_pull_uses_it(pybuild: Any, tmp_path: Path,
                                                           token_registry: Registry,
                                                           env: dict[str, str]) -> None:
    addr = token_registry.addr
    pybuild("login", "-u", "alice", "--password-stdin", addr, input=TOKEN_USERS["alice"][0],
            env=env)
    entry = config_json(env)["auths"][addr]
    assert entry["identitytoken"]  # the token server's refresh token, not the password
    assert TOKEN_USERS["alice"][0] not in base64.b64decode(entry["auth"]).decode()
    img = image(pybuild)
    target = f"{addr}/{unique_repo()}:v1"
    token = token_registry.token
    assert token is not None
    before = len(token.requests)
    pybuild("push", "-q", "app:1", target, env=env)
    assert any(r["method"] == "POST" and r["user"] == "alice" for r in token.requests[before:])
    other = type(pybuild)(tmp_path / "other-root")
    other.root.mkdir()
    other("pull", "-q", target, env=env)
    assert other.store().resolve(target).descriptor.digest == img.descriptor.digest
    # A pull-only user may pull but not push.
    pybuild("login", "-u", "reader", "--password-stdin", addr, input=TOKEN_USERS["reader"][0],
            env=env)
    other("pull", "-q", target, env=env)
    r = pybuild("push", "app:1", f"{addr}/{unique_repo()}:v1", env=env, check=False)
    assert r.returncode != 0 and "unauthorized" in r.stderr


def test_push_copy_tags_manifest_inspect(pybuild: Any, tmp_path: Path, plain_registry: Registry,
                                         env: dict[str, str]) -> None:
    img = image(pybuild)
    repo = f"{plain_registry.addr}/{unique_repo()}"
    digest = pybuild("push", "-q", "app:1", f"{repo}:v1", env=env).stdout.strip()
    assert digest == str(img.descriptor.digest)
    assert pybuild("tags", repo, env=env).stdout.split() == ["v1"]

    shown = json.loads(pybuild("manifest", "inspect", f"{repo}:v1", env=env).stdout)
    assert [d["digest"] for d in shown["layers"]] == [str(d.digest) for d in img.layers]
    raw = pybuild("manifest", "inspect", "--raw", f"{repo}:v1", env=env, text=False).stdout
    assert Digest.of(raw) == img.descriptor.digest

    layout = tmp_path / "layout"
    out = pybuild("copy", f"docker://{repo}:v1", f"oci:{layout}:t", env=env).stdout
    assert f"Digest: {img.descriptor.digest}" in out
    pybuild("copy", f"oci:{layout}:t", "local:back:1", env=env)
    assert pybuild.store().resolve("back:1").descriptor.digest == img.descriptor.digest
    pybuild("copy", "back:1", f"{repo}:copied", env=env)
    assert sorted(pybuild("tags", repo, env=env).stdout.split()) == ["copied", "v1"]

    # --all-tags pushes every local tag of the repository.
    local = Reference.parse(f"{repo}:a")
    pybuild.store().add(img.descriptor, local)
    pybuild.store().add(img.descriptor, local.with_tag("b"))
    out = pybuild("push", "--all-tags", repo, env=env)
    assert out.stdout.count("digest: ") == 2
    assert sorted(pybuild("tags", repo, env=env).stdout.split()) == ["a", "b", "copied", "v1"]
    assert "Layer already exists" in out.stdout


def test_copy_multi_platform_index_then_pull_platform(pybuild: Any, tmp_path: Path,
                                                      plain_registry: Registry,
                                                      env: dict[str, str]) -> None:
    store = pybuild.store()
    descs = []
    for arch in ("amd64", "arm64"):
        im = make_image(store, None, platform=Platform("linux", arch),
                        layers=[busybox_layer_tar(), file_tar("arch", arch.encode())])
        descs.append(im.descriptor.with_platform(Platform("linux", arch)))
    index = Index.build(descs)
    store.add(store.put_manifest(index), Reference.parse("multi:1"))
    target = f"{plain_registry.addr}/{unique_repo()}:multi"
    pybuild("copy", "--all-platforms", "multi:1", target, env=env)
    other = type(pybuild)(tmp_path / "other-root")
    other.root.mkdir()
    out = other("pull", "--platform", "linux/arm64", target, env=env)
    assert f"Digest: {index.digest}" in out.stdout
    got = other.store().resolve(target)
    assert got.descriptor.digest == descs[1].digest and got.config.platform.architecture == "arm64"
    r = other("pull", "--platform", "linux/s390x", target, env=env, check=False)
    assert r.returncode != 0 and "no matching manifest for linux/s390x" in r.stderr


def test_tls_registry_needs_its_ca_or_tls_verify_false(pybuild: Any, tls_registry: Registry,
                                                       env: dict[str, str]) -> None:
    image(pybuild)
    target = f"{tls_registry.addr}/{unique_repo()}:v1"
    r = pybuild("push", "app:1", target, env=env, check=False)
    assert r.returncode != 0 and "certificate verify failed" in r.stderr
    pybuild("push", "-q", "--tls-verify=false", "app:1", target, env=env)
    tls_registry.certs_d(Path(env["PYBUILD_CERTS_D"]))
    assert "Status:" in pybuild("pull", target, env=env).stdout


def test_quiet_prints_only_the_result(pybuild: Any, plain_registry: Registry,
                                      env: dict[str, str]) -> None:
    image(pybuild)
    target = f"{plain_registry.addr}/{unique_repo()}:v1"
    r = pybuild("push", "-q", "app:1", target, env=env)
    assert r.stderr == "" and len(r.stdout.splitlines()) == 1
    r = pybuild("pull", "-q", target, env=env)
    assert r.stderr == "" and r.stdout.strip() == target


def test_renderer_draws_bars_on_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    from builder.cli.registry import Renderer
    from registry.transfer import Event

    r = Renderer(verb="Pulling", tty=True)
    a, b, c = Digest.of(b"a"), Digest.of(b"b"), Digest.of(b"c")
    r(Event("start", a, 2_000_000))
    r(Event("progress", a, 2_000_000, 1_000_000))
    r(Event("done", a, 2_000_000, 2_000_000))
    r(Event("exists", b, 5, 5))
    r(Event("mounted", c, 5, 5, detail="other/repo"))
    r(Event("retry", detail="HTTP 503 (retry 1 in 0.2s)"))
    r.close()
    err = capsys.readouterr().err
    assert f"{a.short}: Download complete" in err and "total" in err and "\r" in err
    assert f"{b.short}: Already exists" in err and f"{c.short}: Mounted from other/repo" in err
    assert "Retrying: HTTP 503" in err
    quiet = Renderer(verb="Pulling", quiet=True, tty=True)
    quiet(Event("start", a, 10))
    assert capsys.readouterr().err == ""


def test_docker_hub_references_go_to_the_registry_mirror(pybuild: Any, plain_registry: Registry,
                                                          env: dict[str, str]) -> None:
    """``$PYBUILD_REGISTRY_MIRROR`` serves ``docker.io`` names; the suite points it at a closed
    loopback port so that no test can ever reach Docker Hub."""
    assert os.environ["PYBUILD_REGISTRY_MIRROR"] == "127.0.0.1:9"
    r = pybuild("pull", "busybox:nowhere", env=env, check=False)
    assert r.returncode != 0 and "127.0.0.1:9" in r.stderr, r.stderr
    image(pybuild)
    repo = unique_repo()  # user/name: docker.io/user/name on the Hub, /user/name on the mirror
    mirrored = {**env, "PYBUILD_REGISTRY_MIRROR": plain_registry.addr}
    pybuild("push", "-q", "app:1", f"{plain_registry.addr}/{repo}:v1", env=env)
    pybuild("pull", "-q", f"{repo}:v1", env=mirrored)
    assert f"{repo}:v1" in pybuild("images", "--format", "{{.Repository}}:{{.Tag}}").stdout
