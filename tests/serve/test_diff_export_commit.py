"""``docker diff``, ``docker export`` and ``docker commit`` (Debian's CLI, docker-py) through
``pybuild serve``: the same answers as ``pybuild diff|export|commit`` on the same root."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

from serve_client import Daemon

SCRIPT = ("mkdir -p /tmp/new && echo a > /tmp/new/f && echo x >> /etc/passwd && rm /etc/group"
          " && rm -rf /var/www && echo hello > /greeting")


def _names(data: bytes) -> list[tuple[str, int, int]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return [(m.name, m.mode, m.size) for m in tf]


def test_docker_cli_diff_export_commit(serve: Daemon, tmp_path: Path) -> None:
    serve.pyb("run", "--name", "chg", "busybox", "sh", "-c", SCRIPT)
    ours = serve.pyb("diff", "chg").stdout
    assert "D /etc/group" in ours and "A /tmp/new/f" in ours
    assert serve.docker("diff", "chg").stdout == ours
    assert serve.docker("container", "diff", "chg").stdout == ours

    serve.docker("export", "-o", str(tmp_path / "docker.tar"), "chg")
    serve.pyb("export", "-o", str(tmp_path / "ours.tar"), "chg")
    theirs = _names((tmp_path / "docker.tar").read_bytes())
    assert theirs == _names((tmp_path / "ours.tar").read_bytes())
    assert ("greeting", 0o644, 6) in theirs

    image_id = serve.docker("commit", "-m", "via docker", "-a", "someone", "-c", 'CMD ["cat", "/greeting"]',
                            "-c", "ENV K=v", "chg", "viadocker:1").stdout.strip()
    assert image_id.startswith("sha256:")
    assert serve.pyb("run", "--rm", "viadocker:1").stdout == "hello\n"
    info = json.loads(serve.pyb("image", "inspect", "viadocker:1").stdout)[0]
    assert info["Id"] == image_id and info["Author"] == "someone"
    assert info["Config"]["Cmd"] == ["cat", "/greeting"] and "K=v" in info["Config"]["Env"]
    top = serve.docker("history", "--no-trunc", "--format", "{{.CreatedBy}}|{{.Comment}}", "viadocker:1"
                       ).stdout.splitlines()[0]
    assert top == f"sh -c {SCRIPT}|via docker"
    # the same commit made by pybuild gives the same config and history
    ours_id = serve.pyb("commit", "-m", "via docker", "-a", "someone", "-c", 'CMD ["cat", "/greeting"]',
                        "-c", "ENV K=v", "chg", "viapybuild:1").stdout.strip()
    mine = json.loads(serve.pyb("image", "inspect", ours_id).stdout)[0]
    assert mine["Config"] == info["Config"] and mine["RootFS"] == info["RootFS"]

    r = serve.docker("diff", "nope", check=False)
    assert r.returncode == 1 and "No such container: nope" in r.stderr
    r = serve.docker("commit", "-c", "FOO bar", "chg", check=False)
    assert r.returncode == 1 and "FOO bar" in r.stderr


def test_docker_py_diff_export_commit(serve: Daemon) -> None:
    serve.pyb("run", "-d", "--name", "live", "busybox", "sh", "-c", f"{SCRIPT} && exec sleep 600")
    c = serve.client.containers.get("live")
    for _ in range(600):
        if "A /greeting" in serve.pyb("diff", "live").stdout:
            break
    expected = [{"Path": line[2:], "Kind": "CAD".index(line[0])}
                for line in serve.pyb("diff", "live").stdout.splitlines()]
    assert {"Path": "/greeting", "Kind": 1} in expected
    assert c.diff() == expected

    data = b"".join(c.export())
    names = [n for n, _m, _s in _names(data)]
    assert "greeting" in names and "etc/group" not in names and ".dockerenv" in names

    image = c.commit(repository="dockerpy", tag="2", message="from docker-py", changes=["ENV Z=1"],
                     conf={"Labels": {"made": "by-body"}})
    assert serve.pyb("run", "--rm", "dockerpy:2", "sh", "-c", "cat /greeting; echo $Z").stdout == "hello\n1\n"
    info = json.loads(serve.pyb("image", "inspect", "dockerpy:2").stdout)[0]
    assert info["Id"] == image.id
    assert info["Config"]["Labels"] == {"made": "by-body"}
    assert info["Config"]["Cmd"] == ["sh", "-c", f"{SCRIPT} && exec sleep 600"]  # from the container
    c.reload()
    assert c.status == "running" and not c.attrs["State"]["Paused"]  # paused and resumed
    serve.pyb("rm", "-f", "live")


def test_api_errors(serve: Daemon, store_listing: Any) -> None:
    for method, path in (("GET", "/containers/nope/changes"), ("GET", "/v1.41/containers/nope/export"),
                         ("POST", "/commit?container=nope")):
        code, _h, body = serve.api(method, path)
        assert code == 404 and json.loads(body) == {"message": "No such container: nope"}, (path, body)
    serve.pyb("run", "--name", "chg", "busybox", "touch", "/x")
    before = store_listing(serve.pyb.root / "store")
    code, _h, body = serve.api("POST", "/commit?container=chg&changes=FOO%20bar")
    assert code == 400 and "FOO bar" in json.loads(body)["message"]
    code, _h, body = serve.api("POST", "/commit?container=chg&repo=Bad")
    assert code == 400 and "Bad" in json.loads(body)["message"]
    code, _h, body = serve.api("POST", "/commit")
    assert code == 400
    assert store_listing(serve.pyb.root / "store") == before
    code, _h, body = serve.api("POST", "/commit?container=chg&repo=ok&tag=1&comment=c&pause=0")
    assert code == 201 and json.loads(body)["Id"].startswith("sha256:")
