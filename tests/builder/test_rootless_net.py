"""Rootless user-defined networks (issue 17): bridges in the user's network namespace (held by
the keeper, served by one slirp4netns), with DNS by name and ``-p``, as an ordinary user made
for the test (``test_rootless.ordinary_user``)."""

from __future__ import annotations

import contextlib
import http.server
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_rootless import User, fetch, user  # noqa: E402,F401 - the module's ordinary user, by import

SERVE = "mkdir -p /www && echo page-of-{name} > /www/index.html && exec httpd -f -p 8080 -h /www"


@contextlib.contextmanager
def _host_server() -> Iterator[str]:
    """A one-page HTTP server on the host's own (non-loopback) address, for the time of the block."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("10.255.255.1", 9))  # no packet sent: the address the host would route from
        addr = s.getsockname()[0]

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"from-the-host\n")

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer((addr, 0), Page)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://{addr}:{srv.server_address[1]}/"
    finally:
        srv.shutdown()
        srv.server_close()
        t.join()



def test_user_network_by_name_and_published_port(user: User) -> None:  # noqa: F811
    user.pb("network", "create", "appnet")
    try:
        user.pb("run", "-d", "--name", "alpha", "--network", "appnet", "busybox", "sh", "-c",
                SERVE.format(name="alpha"))
        user.pb("run", "-d", "--name", "beta", "--network", "appnet", "-p", "18093:8080", "busybox",
                "sh", "-c", SERVE.format(name="beta"))
        # by name, through the network's DNS server (nslookup asks it), ICMP and TCP
        r = user.pb("run", "--rm", "--network", "appnet", "busybox", "sh", "-c",
                    "cat /etc/resolv.conf; nslookup alpha; ping -c 1 -W 5 alpha && echo pinged; "
                    "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://alpha:8080/ && break; "
                    "sleep 0.3; done", check=False)
        assert "pinged" in r.stdout and "page-of-alpha" in r.stdout, r.stdout + r.stderr
        addr = user.pb("inspect", "--format", "{{.NetworkSettings.Networks.appnet.IPAddress}}",
                       "alpha").stdout.strip()
        assert addr and f"Address: {addr}" in r.stdout.replace("Address 1: ", "Address: "), r.stdout
        assert user.pb("exec", "beta", "wget", "-qO-", "http://alpha:8080/").stdout == "page-of-alpha\n"
        # out of the user's namespace through its slirp4netns: a server on the host's address
        with _host_server() as url:
            assert user.pb("exec", "beta", "wget", "-qO-", url).stdout == "from-the-host\n"
        # -p reaches a container on a user network from the host
        assert fetch("http://127.0.0.1:18093/") == b"page-of-beta\n"
        assert "0.0.0.0:18093->8080/tcp" in user.pb("ps").stdout
        keeper = next(p.split()[0] for p in user.processes() if "pybuild-rootless-keeper" in p)
        links = subprocess.run(["nsenter", "-t", keeper, "-n", "ip", "-o", "link"], capture_output=True,
                               text=True, check=True).stdout
        assert "tap0" in links and " pb-" in links and "pbv" in links, links
        assert "tap0" not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        user.pb("rm", "-f", "alpha", "beta")
        user.pb("network", "rm", "appnet")
        assert "appnet" not in user.pb("network", "ls").stdout
        links = subprocess.run(["nsenter", "-t", keeper, "-n", "ip", "-o", "link"], capture_output=True,
                               text=True, check=True).stdout
        assert " pb-" not in links and "pbv" not in links, links  # its bridge and veths went
        # the one slirp4netns of the user's network namespace stays until reset; nothing else
        running = user.processes()
        assert len([p for p in running if "slirp4netns" in p]) == 1, running
        assert not [p for p in running if "httpd" in p or "pybuild.network" in p], running
    finally:
        user.pb("rm", "-f", "alpha", "beta", check=False)
        user.pb("network", "rm", "appnet", check=False)
    user.pb("system", "reset", "-f")
    assert user.processes_left() == []
    assert str(user.home) not in Path("/proc/self/mountinfo").read_text()


def test_reset_with_containers_on_a_user_network_leaves_nothing(user: User) -> None:  # noqa: F811
    user.pb("network", "create", "resetnet")
    user.pb("run", "-d", "--name", "idle", "--network", "resetnet", "-p", "18094:8080", "busybox",
            "sh", "-c", SERVE.format(name="idle"))
    assert fetch("http://127.0.0.1:18094/") == b"page-of-idle\n"
    running = user.processes()
    assert any("pybuild-rootless-keeper" in p for p in running)
    assert any("slirp4netns" in p for p in running)
    user.pb("system", "reset", "-f")
    assert user.processes_left() == []
    assert str(user.home) not in Path("/proc/self/mountinfo").read_text()
    with pytest.raises(OSError):
        urllib.request.urlopen("http://127.0.0.1:18094/", timeout=2)
