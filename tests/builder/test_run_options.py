"""``run``/``create`` options through the ``pybuild`` CLI on the real sandbox (and ``--runtime
runc``): ports below 1024 for non-root users, ``--add-host``, ``--dns*``, ``--ulimit``,
``--sysctl``, ``--shm-size``, ``--device``; each with its ``inspect`` shape and its bad values
(one line, exit 125, nothing left on the host)."""

from __future__ import annotations

import json
import shutil
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_containers_images import make_image
from test_run_detached import Env, _free_port, _get, _leftovers

from builder.base.state import StateRoot

RUNC = shutil.which("runc") or "/usr/sbin/runc"  # Debian's, installed by `make apt`


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    root = StateRoot.open(tmp_path / "state")
    make_image(root, "busybox:latest")
    e = Env(root)
    yield e
    ids = [p.name for p in root.containers.iterdir() if len(p.name) == 64] if root.containers.is_dir() else []
    for cid in ids:
        e.pb("rm", "-f", "-v", cid, check=False)
    from builder import network

    network.reset(root)
    assert _leftovers(root, ids) == []
    assert [ln for ln in Path("/proc/self/mountinfo").read_text().splitlines() if str(root.path) in ln] == []


def _containers(env: Env) -> list[str]:
    return env.pb("ps", "-a", "-q").stdout.split()


def _refused(env: Env, *args: str, message: str) -> None:
    """``run`` with a bad value: one line naming it, exit 125, no container, nothing left."""
    before = _containers(env)
    r = env.pb("run", "--rm", *args, "busybox", "true", check=False)
    assert r.returncode == 125, (args, r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], (args, r.stderr)
    assert _containers(env) == before


def _host_config(env: Env, ref: str) -> dict[str, object]:
    hc: dict[str, object] = json.loads(env.pb("inspect", ref).stdout)[0]["HostConfig"]
    return hc


def _sysctl(key: str) -> str:
    return Path("/proc/sys", *key.split(".")).read_text().strip()


# -- ports below 1024 --------------------------------------------------------------------------
def test_image_user_serves_port_80_through_publish(env: Env, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM busybox\n"
        # busybox-static has no adduser applet: the user is made as adduser would write it
        "RUN echo 'web:x:1234:1234::/www:/bin/sh' >> /etc/passwd && echo 'web:x:1234:' >> /etc/group"
        " && mkdir /www && echo 'served by web' > /www/index.html\n"
        "USER web\n"
        'CMD ["httpd", "-f", "-p", "80", "-h", "/www"]\n'
    )
    env.pb("build", "-q", "-t", "userweb", str(ctx), timeout=120)
    port = _free_port()
    env.pb("run", "-d", "--name", "uw", "-p", f"{port}:80", "userweb")
    assert _get(f"http://127.0.0.1:{port}/", timeout=10) == "served by web\n"
    top = env.pb("exec", "uw", "sh", "-c", "id -u; cat /proc/sys/net/ipv4/ip_unprivileged_port_start").stdout
    assert top.split() == ["1234", "0"]
    env.pb("rm", "-f", "uw")
    # Docker's defaults belong to the container's own namespace: the host keeps its values
    host_start = _sysctl("net.ipv4.ip_unprivileged_port_start")
    assert host_start != "0"
    out = env.pb("run", "--rm", "--network", "none", "busybox", "cat",
                 "/proc/sys/net/ipv4/ip_unprivileged_port_start", "/proc/sys/net/ipv4/ping_group_range").stdout
    assert out.split() == ["0", "0", "2147483647"]
    out = env.pb("run", "--rm", "--network", "host", "busybox", "cat",
                 "/proc/sys/net/ipv4/ip_unprivileged_port_start").stdout
    assert out.strip() == host_start


# -- names -------------------------------------------------------------------------------------
def test_add_host_and_dns_files(env: Env) -> None:
    show = "cat /etc/hosts; echo ---; cat /etc/resolv.conf"
    flags = ["--add-host", "db:10.1.2.3", "--add-host", "gw:host-gateway", "--add-host", "v6=fd00::7",
             "--dns", "10.0.0.53", "--dns", "10.0.0.54", "--dns-search", "example.test",
             "--dns-option", "ndots:3", "--dns-option", "rotate"]
    env.pb("create", "--name", "names", *flags, "busybox", "sh", "-c", show)
    hc = _host_config(env, "names")
    assert hc["ExtraHosts"] == ["db:10.1.2.3", "gw:host-gateway", "v6:fd00::7"]
    assert (hc["Dns"], hc["DnsSearch"], hc["DnsOptions"]) == (
        ["10.0.0.53", "10.0.0.54"], ["example.test"], ["ndots:3", "rotate"])
    out = env.pb("start", "-a", "names").stdout
    hosts, _, resolv = out.partition("---\n")
    gateway = json.loads(env.pb("network", "inspect", "bridge").stdout)[0]["IPAM"]["Config"][0]["Gateway"]
    assert "10.1.2.3\tdb\n" in hosts and f"{gateway}\tgw\n" in hosts and "fd00::7\tv6\n" in hosts
    # Docker's order: the extra hosts before the container's own line
    assert hosts.index("\tdb\n") < hosts.index(env.state("names")["Config"]["Hostname"])  # type: ignore[index]
    assert [ln for ln in resolv.splitlines() if ln.startswith(("nameserver", "search", "options"))] == [
        "nameserver 10.0.0.53", "nameserver 10.0.0.54", "search example.test", "options ndots:3 rotate"]
    # no network and the host's network: the same files
    out = env.pb("run", "--rm", "--network", "none", *flags, "busybox", "sh", "-c", show).stdout
    assert "10.1.2.3\tdb\n" in out and f"{gateway}\tgw\n" in out and "nameserver 10.0.0.53\n" in out
    assert "search example.test\n" in out
    out = env.pb("run", "--rm", "--network", "host", "--add-host", "db:10.1.2.3", "--dns", "10.0.0.53",
                 "--dns-search", ".", "busybox", "sh", "-c", show).stdout
    hosts, _, resolv = out.partition("---\n")
    assert hosts.startswith(Path("/etc/hosts").read_text().rstrip("\n")) and hosts.endswith("10.1.2.3\tdb\n")
    assert "nameserver 10.0.0.53\n" in resolv and "search" not in resolv
    # defaults in inspect: Docker's empty shapes
    env.pb("create", "--name", "plain", "busybox")
    hc = _host_config(env, "plain")
    assert (hc["ExtraHosts"], hc["Dns"], hc["DnsSearch"], hc["DnsOptions"], hc["Ulimits"], hc["Devices"]) == (
        None, [], [], [], None, [])
    assert hc["ShmSize"] == 64 * 1024 * 1024 and "Sysctls" not in hc


def test_names_bad_values(env: Env) -> None:
    _refused(env, "--add-host", "nocolon", message='bad format for add-host: "nocolon"')
    _refused(env, "--add-host", "db:10.1.2", message='invalid IP address in add-host: "10.1.2"')
    _refused(env, "--dns", "dns.example", message="dns.example is not an ip address")
    _refused(env, "--dns-search", "bad_domain!", message="bad_domain! is not a valid domain")
    env.pb("run", "-d", "--name", "owner", "busybox", "sleep", "30")
    _refused(env, "--network", "container:owner", "--dns", "1.1.1.1",
             message="conflicting options: dns and the network mode")
    _refused(env, "--network", "container:owner", "--add-host", "a:1.2.3.4",
             message="conflicting options: custom host-to-IP mapping and the network mode")


class _Upstream:
    """A DNS server on a loopback address that answers every A query with one address."""

    def __init__(self, host: str, answer: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 53))
        self.sock.settimeout(0.2)
        self.answer = socket.inet_aton(answer)
        self.asked: list[str] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.done.is_set():
            try:
                data, addr = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return
            pos, labels = 12, []
            while data[pos]:
                labels.append(data[pos + 1:pos + 1 + data[pos]].decode())
                pos += 1 + data[pos]
            qtype = struct.unpack("!H", data[pos + 1:pos + 3])[0]
            question = data[12:pos + 5]
            self.asked.append(".".join(labels))
            answers = b""
            if qtype == 1:
                answers = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + self.answer
            header = data[:2] + struct.pack("!HHHHH", 0x8180, 1, 1 if answers else 0, 0, 0)
            self.sock.sendto(header + question + answers, addr)

    def close(self) -> None:
        self.done.set()
        self.thread.join()
        self.sock.close()


def test_dns_on_a_user_network_is_the_upstream_of_its_dns_server(env: Env) -> None:
    upstream = _Upstream("127.0.0.77", "10.9.8.7")
    try:
        env.pb("network", "create", "optnet")
        gateway = json.loads(env.pb("network", "inspect", "optnet").stdout)[0]["IPAM"]["Config"][0]["Gateway"]
        env.pb("run", "-d", "--name", "peer", "--network", "optnet", "busybox", "sleep", "60")
        out = env.pb("run", "--rm", "--network", "optnet", "--dns", "127.0.0.77", "--dns-option", "timeout:2",
                     "busybox", "sh", "-c", "cat /etc/resolv.conf; nslookup far.example.test; nslookup peer").stdout
        # the network's DNS server stays the nameserver, and still knows the peers by name
        assert f"nameserver {gateway}\n" in out and "127.0.0.77" not in out.split("Server:")[0]
        assert "options ndots:0 timeout:2\n" in out
        assert "10.9.8.7" in out and "far.example.test" in upstream.asked
        peer_ip = env.state("peer")["NetworkSettings"]["Networks"]["optnet"]["IPAddress"]  # type: ignore[index]
        assert peer_ip and peer_ip in out and "peer" not in upstream.asked
        # a container without --dns keeps the host's upstreams
        asked = len(upstream.asked)
        env.pb("run", "--rm", "--network", "optnet", "busybox", "nslookup", "other.example.test", check=False)
        assert len(upstream.asked) == asked
    finally:
        upstream.close()


# -- ulimits, sysctls, /dev/shm, devices -------------------------------------------------------
def test_ulimit(env: Env) -> None:
    out = env.pb("run", "--rm", "--ulimit", "nofile=1024:2048", "--ulimit", "core=0", "--ulimit", "nproc=512",
                 "busybox", "sh", "-c", "ulimit -n; ulimit -Hn; ulimit -c; ulimit -u; ulimit -Hu").stdout
    assert out.split() == ["1024", "2048", "0", "512", "512"]
    env.pb("run", "-d", "--name", "lim", "--ulimit", "nofile=1024:2048", "busybox", "sleep", "30")
    assert _host_config(env, "lim")["Ulimits"] == [{"Name": "nofile", "Hard": 2048, "Soft": 1024}]
    # exec'd processes get the container's limits too
    assert env.pb("exec", "lim", "sh", "-c", "ulimit -n; ulimit -Hn").stdout.split() == ["1024", "2048"]
    import resource

    held = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    _refused(env, "--ulimit", f"nofile=1024:{held + 1}", message="needs CAP_SYS_RESOURCE")
    _refused(env, "--ulimit", "nofile", message="invalid ulimit argument: nofile")
    _refused(env, "--ulimit", "bogus=1", message="invalid ulimit type: bogus")
    _refused(env, "--ulimit", "nofile=2048:1024", message="soft limit must be less than or equal to hard limit")
    _refused(env, "--ulimit", "nofile=a:b", message="integers expected")


def test_sysctl(env: Env) -> None:
    host = {k: _sysctl(k) for k in ("net.ipv4.ip_forward", "kernel.shmmax", "fs.mqueue.msg_max")}
    out = env.pb("run", "--rm", "--sysctl", "net.ipv4.ip_forward=1", "--sysctl", "kernel.shmmax=12345678",
                 "--sysctl", "fs.mqueue.msg_max=20", "--sysctl", "net.ipv4.ip_unprivileged_port_start=80",
                 "busybox", "cat", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/kernel/shmmax",
                 "/proc/sys/fs/mqueue/msg_max", "/proc/sys/net/ipv4/ip_unprivileged_port_start").stdout
    assert out.split() == ["1", "12345678", "20", "80"]  # --sysctl wins over Docker's default
    assert {k: _sysctl(k) for k in host} == host
    env.pb("create", "--name", "sys", "--sysctl", "kernel.shmmax=12345678", "busybox")
    assert _host_config(env, "sys")["Sysctls"] == {"kernel.shmmax": "12345678"}
    _refused(env, "--sysctl", "kernel.hostname=x", message="sysctl 'kernel.hostname=x' is not whitelisted")
    _refused(env, "--sysctl", "vm.swappiness=1", message="is not whitelisted")
    _refused(env, "--network", "host", "--sysctl", "net.ipv4.ip_forward=1",
             message='sysctl "net.ipv4.ip_forward" not allowed in host network namespace')
    # refused only when the kernel is asked: the container stays created, as Docker leaves it
    r = env.pb("run", "--name", "nokey", "--sysctl", "net.ipv4.no_such_key=1", "busybox", "true", check=False)
    assert r.returncode == 125 and len(r.stderr.strip().splitlines()) == 1
    assert "net.ipv4.no_such_key" in r.stderr and "no such parameter" in r.stderr
    r = env.pb("run", "--name", "badval", "--sysctl", "net.ipv4.ip_forward=x", "busybox", "true", check=False)
    assert r.returncode == 125 and "net.ipv4.ip_forward=x: Invalid argument" in r.stderr
    assert env.state("nokey")["State"]["Status"] == "created"  # type: ignore[index]
    ids = env.pb("ps", "-a", "-q", "--no-trunc").stdout.split()
    assert len(ids) == 3 and _leftovers(env.root, ids) == []  # no mount, cgroup, netns, veth, process


def test_shm_size(env: Env) -> None:
    df = "df -k /dev/shm | tail -1"
    assert env.pb("run", "--rm", "busybox", "sh", "-c", df).stdout.split()[1] == "65536"
    assert env.pb("run", "--rm", "--shm-size", "128m", "busybox", "sh", "-c", df).stdout.split()[1] == "131072"
    env.pb("create", "--name", "shm", "--shm-size", "1g", "busybox")
    assert _host_config(env, "shm")["ShmSize"] == 1 << 30
    _refused(env, "--shm-size", "abc", message="invalid size: 'abc'")
    _refused(env, "--shm-size", "-1m", message="invalid size: '-1m'")


def test_device(env: Env) -> None:
    if not Path("/dev/fuse").exists():
        pytest.fail("this test needs /dev/fuse on the host (char 10:229, outside Docker's default allow-list)")
    opened = "ls -l {p}; (exec 3<{p}) && echo read-ok; (exec 3<>{p}) && echo rw-ok; true"
    out = env.pb("run", "--rm", "--device", "/dev/fuse:/dev/myfuse", "busybox", "sh", "-c",
                 opened.format(p="/dev/myfuse")).stdout
    assert out.startswith("crw-------") and "10, 229" in out and "read-ok" in out and "rw-ok" in out
    out = env.pb("run", "--rm", "--device", "/dev/fuse:r", "busybox", "sh", "-c", opened.format(p="/dev/fuse")).stdout
    assert "read-ok" in out and "rw-ok" not in out  # the devices cgroup gives read only
    # without --device, the same node made by hand cannot be opened (Docker's default rules)
    out = env.pb("run", "--rm", "busybox", "sh", "-c", "mknod /dev/f c 10 229 && " + opened.format(p="/dev/f")).stdout
    assert "crw" in out and "read-ok" not in out and "rw-ok" not in out
    env.pb("create", "--name", "dev", "--device", "/dev/fuse:/dev/x:rw", "busybox")
    assert _host_config(env, "dev")["Devices"] == [
        {"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/x", "CgroupPermissions": "rw"}]
    _refused(env, "--device", "/dev/no-such-device",
             message='error gathering device information while adding custom device "/dev/no-such-device"')
    _refused(env, "--device", "/etc/passwd", message="not a device node")
    _refused(env, "--device", "/dev/fuse:/dev/x:rwz", message="bad mode specified: rwz")
    _refused(env, "--device", "dev/fuse", message="bad format for path: dev/fuse")


# -- the same through runc ---------------------------------------------------------------------
def test_options_reach_runc_too(env: Env) -> None:
    script = ("grep -w db /etc/hosts; grep nameserver /etc/resolv.conf; ulimit -n; ulimit -Hn; "
              "cat /proc/sys/kernel/shmmax /proc/sys/net/ipv4/ip_unprivileged_port_start; "
              "df -k /dev/shm | tail -1; (exec 3</dev/myfuse) && echo read-ok; (exec 3<>/dev/myfuse) && echo rw-ok; true")
    flags = ["--add-host", "db:10.1.2.3", "--dns", "10.0.0.53", "--ulimit", "nofile=1024:2048",
             "--sysctl", "kernel.shmmax=12345678", "--shm-size", "128m", "--device", "/dev/fuse:/dev/myfuse:r"]
    ours = env.pb("run", "--rm", *flags, "busybox", "sh", "-c", script).stdout
    theirs = env.pb("run", "--rm", "--runtime", RUNC, *flags, "busybox", "sh", "-c", script).stdout
    assert ours == theirs
    lines = ours.splitlines()
    assert lines[:6] == ["10.1.2.3\tdb", "nameserver 10.0.0.53", "1024", "2048", "12345678", "0"]
    assert lines[6].split()[1] == "131072" and lines[7:] == ["read-ok"]
    r = env.pb("run", "--rm", "--runtime", RUNC, "--sysctl", "net.ipv4.no_such_key=1", "busybox", "true",
               check=False)
    assert r.returncode == 125 and "no_such_key" in r.stderr
