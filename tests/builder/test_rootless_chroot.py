"""``pybuild build --isolation chroot`` (issue 17), Buildah's isolation for hosts without user
namespaces: RUN chrooted with a mount namespace of its own only, said in a warning; as root and
as an ordinary user (``test_rootless.ordinary_user``)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_rootless import ordinary_user  # noqa: E402

DOCKERFILE = """\
FROM busybox
RUN hostname > /host-name && ls /proc | grep -c '^[0-9]' > /procs && ip -o link | wc -l > /links \\
 && echo built > /built
"""
WARNING = "WARNING: --isolation chroot: RUN steps run chrooted"


def _check(out: str) -> None:
    name, procs, links = out.split()[:3]
    assert name == socket.gethostname()  # the host's UTS namespace, not "buildkitsandbox"
    assert int(procs) > 10  # the host's processes
    assert int(links) >= 2  # the host's links (a new network namespace has lo alone)


def test_chroot_isolation_as_root(busybox: Any, tmp_path: Path) -> None:
    pb = busybox
    (tmp_path / "Dockerfile").write_text(DOCKERFILE)
    r = pb("build", "--isolation", "chroot", "-t", "chrooted:1", str(tmp_path))
    assert r.stderr.splitlines()[0].startswith(WARNING), r.stderr
    out = pb("run", "--rm", "--network", "none", "chrooted:1", "cat", "/host-name", "/procs", "/links",
             "/built").stdout
    _check(out)
    assert out.split()[-1] == "built"
    # the default isolation: new namespaces, no warning
    (tmp_path / "Dockerfile").write_text(DOCKERFILE.replace("built", "isolated"))
    r = pb("build", "-t", "isolated:1", str(tmp_path))
    assert WARNING not in r.stderr
    out = pb("run", "--rm", "--network", "none", "isolated:1", "cat", "/procs", "/links").stdout
    procs, links = out.split()
    assert int(procs) < 5 and links == "1"  # its own processes; lo alone (RUN's default network)


def test_chroot_isolation_as_an_ordinary_user(busybox_tar: Path, tmp_path: Path) -> None:
    with ordinary_user() as user:
        tar = user.give(busybox_tar, "busybox.tar")
        user.pb("import", "--change", 'CMD ["sh"]', str(tar), "busybox:latest")
        (tmp_path / "Dockerfile").write_text(DOCKERFILE)
        ctx = user.give(tmp_path, "ctx")
        r = user.pb("build", "--isolation", "chroot", "-t", "chrooted:1", str(ctx))
        assert r.stderr.splitlines()[0].startswith(WARNING), r.stderr
        out = user.pb("run", "--rm", "--network", "none", "chrooted:1", "cat", "/host-name", "/procs",
                      "/links", "/built").stdout
        assert out.split()[-1] == "built"
        _check(out)
