"""Image endpoints judged by real clients: Debian's docker CLI (20.10) and docker-py, each
result compared with the same ``pybuild`` command on the same state root."""

# ruff: noqa: F811 - the registry fixtures are imported, then named as test parameters
from __future__ import annotations

import io
import json
import os
import socket
import tarfile
import threading
import time
from typing import Any

import requests
from registry_server import (
    BASIC_USERS,
    Registry,
    basic_registry,  # noqa: F401
    busybox_layer_tar,
    file_tar,
    make_image,
    plain_registry,  # noqa: F401
    registry_tmp,  # noqa: F401
    unique_repo,
)

FMT = "{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}"


def listing(out: str) -> list[str]:
    return sorted(line for line in out.splitlines() if line.strip())


def same_images(serve: Any) -> list[str]:
    """``docker images`` and ``pybuild images`` agree (same format); returns the lines."""
    ours = listing(serve.pyb("images", "--format", FMT).stdout)
    theirs = listing(serve.docker("images", "--format", FMT).stdout)
    assert theirs == ours
    return ours


def registry_tags(reg: Registry, repo: str) -> list[str]:
    r = requests.get(f"{reg.url}/v2/{repo}/tags/list", timeout=10)
    if r.status_code == 404:
        return []
    r.raise_for_status()
    return sorted(r.json().get("tags") or [])


def test_docker_cli_tag_push_rmi_pull_images(serve: Any, plain_registry: Registry) -> None:
    repo = unique_repo("cli")
    ref = f"{plain_registry.addr}/{repo}:1"
    serve.docker("tag", "busybox:latest", ref)
    assert f"{plain_registry.addr}/{repo}:1 {serve.pyb.image_id[7:19]}" in " ".join(
        same_images(serve))
    out = serve.docker("push", ref).stdout
    assert f"The push refers to repository [{plain_registry.addr}/{repo}]" in out
    assert "1: digest: sha256:" in out
    assert registry_tags(plain_registry, repo) == ["1"]
    out = serve.docker("rmi", ref).stdout
    assert out.strip() == f"Untagged: {ref}"
    assert ref not in " ".join(same_images(serve))
    out = serve.docker("pull", ref).stdout
    assert "Already exists" in out and "Digest: sha256:" in out  # busybox's layer was kept
    assert f"{ref} {serve.pyb.image_id[7:19]}" in " ".join(same_images(serve))
    # a second pull: up to date
    assert "Image is up to date for" in serve.docker("pull", ref).stdout


def test_docker_cli_inspect_and_history_match_pybuild(serve: Any) -> None:
    theirs = json.loads(serve.docker("image", "inspect", "busybox").stdout)
    ours = json.loads(serve.pyb("inspect", "busybox").stdout)
    assert theirs == ours
    fmt = "{{.ID}}|{{.CreatedBy}}|{{.Size}}|{{.Comment}}"
    theirs_h = serve.docker("history", "--no-trunc", "--format", fmt, "busybox").stdout
    ours_h = serve.pyb("history", "--no-trunc", "--format", fmt, "busybox").stdout
    assert theirs_h == ours_h and theirs_h.strip()
    r = serve.docker("image", "inspect", "nosuch:image", check=False)
    assert r.returncode == 1 and "No such image: nosuch:image" in r.stderr


def test_docker_cli_save_then_load_into_another_root(serve: Any, pybuild_factory: Any,
                                                     serve_factory: Any, tmp_path: Any) -> None:
    archive = tmp_path / "bb.tar"
    serve.docker("save", "-o", str(archive), "busybox:latest")
    ours = tmp_path / "ours.tar"
    serve.pyb("save", "-o", str(ours), "busybox:latest")
    assert archive.read_bytes() == ours.read_bytes()  # the same bytes as `pybuild save`
    other = serve_factory(pybuild_factory())
    out = other.docker("load", "-i", str(archive)).stdout
    assert "Loaded image: busybox:latest" in out
    assert other.pyb("images", "-q", "--no-trunc").stdout.strip() == serve.pyb.image_id
    # piped, as `docker save busybox | docker load`
    other.docker("rmi", "busybox")
    data = serve.docker("save", "busybox", text=False).stdout
    assert "Loaded image: busybox:latest" in other.docker("load", input=data, text=False
                                                          ).stdout.decode()
    same_images(other)


def test_docker_py_pull_tag_push_remove_save_load(serve: Any, plain_registry: Registry,
                                                  pybuild_factory: Any) -> None:
    # an image with two layers to move around, pushed by pybuild itself
    src = pybuild_factory()
    repo = unique_repo("py")
    ref = f"{plain_registry.addr}/{repo}:v1"
    made = make_image(src.store(), ref, layers=[busybox_layer_tar(),
                                                file_tar("blob", os.urandom(40_000))])
    src("push", ref)
    client = serve.client
    image = client.images.pull(f"{plain_registry.addr}/{repo}", tag="v1")
    assert image.id == str(made.id)
    assert ref in image.tags
    assert image.tag(f"{plain_registry.addr}/{repo}", "v2") is True
    assert sorted(client.images.get(image.id).tags) == sorted([ref, ref.replace(":v1", ":v2")])
    lines = list(client.images.push(f"{plain_registry.addr}/{repo}", tag="v2", stream=True,
                                    decode=True))
    assert any("aux" in x and x["aux"]["Tag"] == "v2" for x in lines), lines
    assert not any("error" in x for x in lines)
    assert registry_tags(plain_registry, repo) == ["v1", "v2"]
    hist = client.images.get(ref).history()
    assert hist[0]["Id"] == str(made.id) and len(hist) == 2
    ours = serve.pyb("history", "--no-trunc", "--format", "{{.ID}} {{.CreatedBy}}", ref).stdout
    assert [f"{h['Id']} {h['CreatedBy']}" for h in hist] == ours.splitlines()
    listed = {i.id: i.tags for i in client.images.list()}
    assert sorted(listed[str(made.id)]) == sorted([ref, ref.replace(":v1", ":v2")])
    ours_list = serve.pyb("images", "--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}"
                          ).stdout.splitlines()
    assert sorted(f"{i} {t}" for i, tags in listed.items() for t in tags) == sorted(ours_list)
    assert client.images.get(ref).attrs == json.loads(serve.pyb("inspect", ref).stdout)[0]
    data = b"".join(client.images.get(ref).save(named=True))
    client.images.remove(ref.replace(":v1", ":v2"))
    client.images.remove(ref)
    assert str(made.id) not in serve.pyb("images", "-q", "--no-trunc").stdout
    loaded = client.images.load(data)
    assert [i.id for i in loaded] == [str(made.id)]
    assert serve.pyb("inspect", "--format", "{{.Id}}", ref).stdout.strip() == str(made.id)


def test_unknown_image_endpoint_and_bad_input(serve: Any) -> None:
    status, _h, body = serve.api("GET", "/v1.41/images/nosuch/json")
    assert status == 404 and json.loads(body) == {"message": "No such image: nosuch:latest"}
    status, _h, body = serve.api("DELETE", "/images/nosuch")
    assert status == 404 and "No such image" in json.loads(body)["message"]
    status, _h, body = serve.api("GET", "/v1.41/nope/nope")
    assert status == 404 and json.loads(body) == {"message": "page not found"}
    status, _h, body = serve.api("GET", "/images/json?filters=%7Bnot-json")
    assert status == 400 and "filters" in json.loads(body)["message"]
    status, _h, body = serve.api("POST", "/images/create?fromImage=UPPER/Case")
    assert status == 400 and "invalid reference format" in json.loads(body)["message"]
    status, _h, body = serve.api("GET", "/v1.12/images/json")
    assert status == 400 and "too old" in json.loads(body)["message"]
    status, _h, body = serve.api("POST", "/images/load", body=b"not a tar at all")
    # as dockerd (issue 23): the failure travels in the 200 stream as errorDetail
    assert status == 200 and "errorDetail" in json.loads(body.splitlines()[-1]), body
    assert serve.pyb("images", "-q").stdout.split() == [serve.pyb.image_id[7:19]]
    # a pull of what the registry does not have: 404 before any stream starts
    status, _h, body = serve.api("POST", "/images/create?fromImage=127.0.0.1:9/none&tag=x")
    assert status >= 400 and json.loads(body)["message"]


def test_fifty_concurrent_image_lists(serve: Any) -> None:
    results: list[Any] = []
    lock = threading.Lock()

    def one() -> None:
        status, _h, body = serve.api("GET", "/v1.41/images/json")
        with lock:
            results.append((status, json.loads(body)))

    threads = [threading.Thread(target=one) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 50
    assert all(s == 200 and [i["Id"] for i in b] == [serve.pyb.image_id] for s, b in results)


def test_client_dropping_mid_save_and_mid_pull_leaves_the_daemon_serving(
        serve: Any, plain_registry: Registry, pybuild_factory: Any) -> None:
    big = file_tar("big", os.urandom(24 << 20))
    make_image(serve.pyb.store(), "big:1", layers=[busybox_layer_tar(), big])
    src = pybuild_factory()
    repo = unique_repo("drop")
    ref = f"{plain_registry.addr}/{repo}:1"
    make_image(src.store(), ref, layers=[busybox_layer_tar(), big])
    src("push", ref)
    for request in (b"GET /v1.41/images/big:1/get HTTP/1.1\r\nHost: x\r\n\r\n",
                    f"POST /v1.41/images/create?fromImage={plain_registry.addr}/{repo}&tag=1 "
                    f"HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode()):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(serve.sock)
        s.sendall(request)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        s.close()  # gone mid-stream
        status, _h, body = serve.api("GET", "/_ping")
        assert (status, body) == (200, b"OK")
    # the daemon lists every image whole, and a fresh save still reads
    assert len(serve.json("GET", "/images/json")) >= 2
    status, _h, data = serve.api("GET", "/images/busybox/get")
    assert status == 200
    assert "manifest.json" in tarfile.open(fileobj=io.BytesIO(data)).getnames()


def test_login_then_push_and_pull_with_the_clients_credentials(serve: Any,
                                                               basic_registry: Registry) -> None:
    addr = basic_registry.addr
    r = serve.docker("login", "-u", "alice", "--password-stdin", addr, check=False,
                     input=BASIC_USERS["alice"] + "\n")
    assert r.returncode == 0 and "Login Succeeded" in r.stdout, r.stderr
    bad = serve.docker("login", "-u", "alice", "--password-stdin", addr, check=False,
                       input="wrong\n")
    assert bad.returncode == 1 and "Error response from daemon" in bad.stderr
    ref = f"{addr}/{unique_repo('auth')}:1"
    serve.docker("tag", "busybox", ref)
    out = serve.docker("push", ref).stdout  # credentials travel in X-Registry-Auth
    assert "1: digest: sha256:" in out
    serve.docker("rmi", ref)
    serve.docker("pull", ref)
    assert ref in " ".join(same_images(serve))
    # the same without credentials: the registry refuses, the daemon says so
    serve.docker("logout", addr)
    r = serve.docker("pull", ref, check=False)
    # a 401 from the daemon makes the CLI ask for a login (which it cannot do without a tty)
    assert r.returncode == 1 and "Please login prior to pull" in r.stdout, (r.stdout, r.stderr)
    # docker-py: login, then push with an explicit auth_config
    client = serve.client
    assert client.login("alice", BASIC_USERS["alice"], registry=addr)["Status"] == \
        "Login Succeeded"
    lines = list(client.images.push(ref, stream=True, decode=True, auth_config={
        "username": "alice", "password": BASIC_USERS["alice"]}))
    assert any("aux" in x for x in lines) and not any("error" in x for x in lines), lines


def test_malformed_auth_bodies_and_headers(serve: Any) -> None:
    status, _h, body = serve.api("POST", "/auth", body="{not json",
                                 headers={"Content-Type": "application/json"})
    assert status == 400 and "malformed JSON" in json.loads(body)["message"]
    status, _h, body = serve.api("POST", "/auth", body={"username": ""})
    assert status == 400 and "required" in json.loads(body)["message"]
    status, _h, body = serve.api("POST", "/images/create?fromImage=127.0.0.1:9/x&tag=1",
                                 headers={"X-Registry-Auth": "%%%not-base64"})
    assert status == 400 and "X-Registry-Auth" in json.loads(body)["message"]
    status, _h, body = serve.api("POST", "/build?buildargs=%7Bbroken",
                                 body=b"", headers={"Content-Type": "application/x-tar"})
    assert status == 400 and "buildargs" in json.loads(body)["message"]


def test_image_in_use_is_a_409_conflict_and_prune_keeps_it(serve: Any) -> None:
    serve.pyb("create", "--name", "user", "busybox", "true")
    r = serve.docker("rmi", "busybox", check=False)
    assert r.returncode == 1 and "conflict: unable to remove repository reference" in r.stderr
    status, _h, body = serve.api("DELETE", f"/images/{serve.pyb.image_id}")
    assert status == 409 and "being used by stopped container" in json.loads(body)["message"]
    pruned = serve.json("POST", '/images/prune?filters={"dangling":["false"]}')
    assert pruned["ImagesDeleted"] is None and pruned["SpaceReclaimed"] >= 0
    assert serve.pyb("images", "-q").stdout.split() == [serve.pyb.image_id[7:19]]
    serve.pyb("rm", "user")
    pruned = serve.json("POST", '/images/prune?filters={"dangling":["false"]}')
    assert {"Untagged": "busybox:latest"} in pruned["ImagesDeleted"]
    assert {"Deleted": serve.pyb.image_id} in pruned["ImagesDeleted"]
    assert serve.docker("images", "-q").stdout.strip() == ""


def test_docker_import_and_save_of_several_images(serve: Any, busybox_tar: Any,
                                                  tmp_path: Any) -> None:
    out = serve.docker("import", "-m", "via docker", "-c", "ENV A=1", "-c", "CMD echo $A",
                       str(busybox_tar), "imported:1").stdout
    image_id = out.strip()
    assert image_id.startswith("sha256:")
    ours = serve.pyb("import", "-m", "via pybuild", str(busybox_tar), "imported:2").stdout.strip()
    layers = [json.loads(serve.pyb("inspect", "--format", "{{json .RootFS.Layers}}", name).stdout)
              for name in ("imported:1", "imported:2")]
    assert layers[0] == layers[1]  # the same rootfs layer, whichever client imported it
    hist = json.loads(serve.docker("image", "inspect", "--format", "{{json .Comment}}",
                                   "imported:1").stdout)
    assert hist == "via docker" and ours != image_id
    cfg = json.loads(serve.docker("image", "inspect", "--format", "{{json .Config}}",
                                  "imported:1").stdout)
    assert cfg["Env"] == ["A=1"] and cfg["Cmd"] == ["/bin/sh", "-c", "echo $A"]
    r = serve.docker("import", "-c", "EXPOSE 99999", str(busybox_tar), "bad:1", check=False)
    assert r.returncode == 1 and "invalid --change 'EXPOSE 99999'" in r.stderr
    assert serve.pyb("images", "-q", "bad:1").stdout.strip() == ""
    # several images in one archive (GET /images/get?names=…&names=…)
    archive = tmp_path / "two.tar"
    serve.docker("save", "-o", str(archive), "imported:1", "busybox:latest")
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert sorted(t for m in manifest for t in m["RepoTags"]) == ["busybox:latest", "imported:1"]


def test_a_client_dropping_mid_upload_leaves_nothing(serve: Any, store_listing: Any) -> None:
    status, _h, archive = serve.api("GET", "/images/busybox/get")
    assert status == 200
    store = serve.pyb.root / "store"
    before = [e for e in store_listing(store) if not e[0].startswith("ingest")]
    for path in ("/v1.41/images/load", "/v1.41/build?t=cut:1"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(serve.sock)
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-tar\r\n"
                  f"Content-Length: {len(archive)}\r\n\r\n".encode() + archive[: len(archive) // 2])
        s.close()  # gone with half the body sent
        assert serve.api("GET", "/_ping")[2] == b"OK"
    # once the daemon noticed: no half-loaded image, no ingest file, no context left
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ingest = [e for e in store_listing(store) if e[0].startswith("ingest/")]
        if not ingest and not list((serve.pyb.root / "tmp").glob("build-*")):
            break
        time.sleep(0.1)
    assert not ingest and not list((serve.pyb.root / "tmp").glob("build-*"))
    assert [e for e in store_listing(store) if not e[0].startswith("ingest")] == before
    assert serve.json("GET", "/images/json")[0]["RepoTags"] == ["busybox:latest"]


def test_image_filters_and_repository_match_pybuild(serve: Any, busybox_tar: Any) -> None:
    serve.pyb("import", "-c", "LABEL team=blue", str(busybox_tar), "labelled:1")
    serve.pyb("tag", "busybox", "127.0.0.1:5000/ns/app:2")
    serve.pyb("import", str(busybox_tar))  # dangling
    fmt = "{{.ID}} {{.Repository}}:{{.Tag}}"
    for args in (["--filter", "label=team=blue"], ["--filter", "label=team"],
                 ["--filter", "dangling=true"], ["--filter", "dangling=false"],
                 ["--filter", "reference=busy*"], ["--filter", "before=labelled:1"],
                 ["--filter", "since=busybox"], ["127.0.0.1:5000/ns/app:2"],
                 ["127.0.0.1:5000/ns/app"], ["busybox:latest"]):
        theirs = listing(serve.docker("images", "--format", fmt, *args).stdout)
        ours = listing(serve.pyb("images", "--format", fmt, *args).stdout)
        assert theirs == ours and theirs, args
    r = serve.docker("images", "--filter", "colour=red", check=False)
    assert r.returncode == 1 and "Invalid filter 'colour'" in r.stderr
