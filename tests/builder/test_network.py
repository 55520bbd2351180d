"""Networks on the real kernel: netns endpoints made by our API, traffic with busybox via
nsenter, iptables rules and cleanup asserted against snapshots taken before each test."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder import network as N
from builder.base.errors import NetworkError
from builder.base.state import StateRoot
from builder.network import firewall, links

CID_A, CID_B, CID_C = "a" * 64, "b" * 64, "c" * 64


def _links() -> set[str]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return {str(link.get("ifname")) for link in ipr.get_links()}


def _rules() -> list[str]:
    out = []
    for table in ("filter", "nat"):
        text = subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True, check=True).stdout
        out += [f"{table} {line}" for line in text.splitlines() if line.startswith(("-A", ":")) and "PYBUILD" in line]
    return sorted(out)


def _helpers() -> dict[int, bytes]:
    """Our detached helper processes (port proxies, DNS servers) by pid, with their cmdline."""
    found = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError):
                cmd = (p / "cmdline").read_bytes()
                if b"builder.network." in cmd:
                    found[int(p.name)] = cmd
    return found


def _proxies() -> set[int]:
    return set(_helpers())


def _mounts(root: Path) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(root) in line]


def snapshot(root: Path) -> dict[str, object]:
    """What a failed operation must leave unchanged, limited to what this root can own (other
    sessions make and remove bridges, rules and helpers meanwhile): ``pb*`` links and tagged
    rules its records name, the veths its test containers would get, helpers mentioning the
    root or those containers, mounts under the root."""
    from builder.network.core import _veth_name

    st = StateRoot.open(root)
    tags, names, idents = owned(st)
    idents |= {CID_A, CID_B, CID_C}
    nets = [n.id for n in N.list_networks(st)]
    names |= {_veth_name(c, n) for c in (CID_A, CID_B, CID_C) for n in nets}
    rules = [r for r in _rules() if any(t in r for t in tags)]
    links = {n for n in _links() if n in names}
    helpers = {pid for pid, cmd in _helpers().items() if any(i.encode() in cmd for i in idents)}
    return {"links": links, "rules": rules, "proxies": helpers, "mounts": _mounts(root)}


def owned(st: StateRoot) -> tuple[set[str], set[str], set[str]]:
    """(rule tags, interface names, process idents) this state root's records account for."""
    tags, names, idents = set(), set(), {str(st.path)}
    for net in N.list_networks(st):
        tags.add(firewall.network_tag(net.id))
        if net.bridge:
            names.add(net.bridge)
        for ep in net.endpoints():
            idents.add(ep.container_id)
            if ep.host_veth:
                names.add(ep.host_veth)
    return tags, names, idents


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateRoot]:
    """A fresh state root; afterwards none of its links, rules, mounts, netns files or helper
    processes may be left (checked by what its records named, so concurrent users don't matter)."""
    st = StateRoot.open(tmp_path / "root")
    try:
        yield st
    finally:
        tags, names, idents = owned(st)
        N.reset(st)
        assert not names & _links()
        rules = _rules()
        assert not [r for r in rules for t in tags if f'"{t}"' in r or f'"{t}:' in r]
        assert not [c for c in _helpers().values() for i in idents if i.encode() in c]
        assert _mounts(tmp_path) == []
        assert not (st.run / "netns").exists() or not list((st.run / "netns").iterdir())
        if not any(r.split()[1] == "-A" and r.split()[2].startswith("PYBUILD") for r in rules):
            assert rules == []  # no rule of anyone left: hooks and chains are gone too


def sh(netns: Path | None, *argv: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    pre = ["nsenter", f"--net={netns}"] if netns else []
    return subprocess.run([*pre, *argv], capture_output=True, text=True, timeout=timeout)


def ping(netns: Path | None, target: str) -> bool:
    """One echo with a 1 s wait, tried three times: a loaded CI machine may be slow to answer
    the first ARP request."""
    return any(sh(netns, "busybox", "ping", "-c1", "-W1", target).returncode == 0 for _ in range(3))


def unreachable(netns: Path | None, target: str) -> bool:
    """No answer within 1 s (a blocked path never answers, however loaded the machine is)."""
    return sh(netns, "busybox", "ping", "-c1", "-W1", target).returncode != 0


@contextlib.contextmanager
def forward_policy(policy: str) -> Iterator[None]:
    saved = "ACCEPT"
    for line in subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True).stdout.splitlines():
        if line.startswith("-P FORWARD"):
            saved = line.split()[2]
    subprocess.run(["iptables", "-P", "FORWARD", policy], check=True)
    try:
        yield
    finally:
        subprocess.run(["iptables", "-P", "FORWARD", saved], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve_http(netns: Path, root: Path) -> Iterator[None]:
    root.mkdir(exist_ok=True)
    (root / "index.html").write_text("hello from the container\n")
    p = subprocess.Popen(["nsenter", f"--net={netns}", "busybox", "httpd", "-f", "-p", "80", "-h", str(root)])
    try:
        deadline = time.monotonic() + 5
        while sh(netns, "busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:80/").returncode != 0:
            assert time.monotonic() < deadline, "httpd did not start"
            time.sleep(0.02)
        yield
    finally:
        p.kill()
        p.wait()


@contextlib.contextmanager
def outside_netns(tmp_path: Path, host_ip: str, peer_ip: str) -> Iterator[Path]:
    """A namespace that reaches the host through a plain veth: traffic 'from outside'."""
    ns = tmp_path / "outside-ns"
    links.create_netns(ns)
    from pyroute2 import IPRoute

    try:
        with IPRoute() as ipr:
            ipr.link("add", ifname="pbtout0", kind="veth", peer={"ifname": "pbtout1", "net_ns_fd": str(ns)})
            idx = ipr.link_lookup(ifname="pbtout0")[0]
            ipr.addr("add", index=idx, address=host_ip, prefixlen=30)
            ipr.link("set", index=idx, state="up")
        with IPRoute(netns=str(ns)) as ipr:
            idx = ipr.link_lookup(ifname="pbtout1")[0]
            ipr.addr("add", index=idx, address=peer_ip, prefixlen=30)
            ipr.link("set", index=idx, state="up")
            ipr.route("add", dst="0.0.0.0/0", gateway=host_ip)
        yield ns
    finally:
        links.delete_link("pbtout0")
        links.remove_netns(ns)


# -- records and kernel objects ----------------------------------------------------------------


def test_predefined_create_inspect_rm(state: StateRoot) -> None:
    names = [n.name for n in N.list_networks(state)]
    assert names == ["bridge", "host", "none"]
    net = N.create_network(state, "appnet", labels={"team": "a"})
    assert net.bridge in _links()
    assert net.subnet.endswith("/24") and net.gateway.endswith(".1")
    assert firewall.has_tag(firewall.network_tag(net.id))
    assert N.get_network(state, net.id[:6]).name == "appnet"
    rec = (state.networks / f"{net.id}.json").read_text()
    assert '"Name": "appnet"' in rec and '"Subnet"' in rec
    with pytest.raises(NetworkError, match="network with name appnet already exists"):
        N.create_network(state, "appnet")
    with pytest.raises(NetworkError, match="pre-defined network"):
        N.remove_network(state, "bridge")
    N.remove_network(state, "appnet")
    assert net.bridge not in _links()
    assert not firewall.has_tag(firewall.network_tag(net.id))
    with pytest.raises(NetworkError, match="network appnet not found"):
        N.get_network(state, "appnet")


def test_bad_create_leaves_nothing(state: StateRoot) -> None:
    before = snapshot(state.path)
    cases = [
        ({"name": "x", "driver": "overlay"}, "this host is not in a cluster"),
        ({"name": "x", "driver": "ipvlan"}, "unknown network driver 'ipvlan'"),
        ({"name": "x", "driver": "host"}, "only one instance"),
        ({"name": ""}, "invalid name: "),  # dockerd takes any other name (tests/serve/test_api_gaps2.py)
        ({"name": "x", "subnet": "10.77.0.0/33"}, "invalid subnet"),
        ({"name": "x", "subnet": _a_host_route()}, "overlaps a host route"),
        ({"name": "x", "gateway": "10.77.0.1"}, "--gateway needs --subnet"),
        ({"name": "x", "driver": "macvlan"}, "needs -o parent=IFACE"),
        ({"name": "x", "driver": "macvlan", "options": {"parent": "nope0"}}, "parent interface 'nope0' not found"),
        ({"name": "x", "options": {"com.docker.network.bridge.name": "lo"}}, "bridge name lo is already in use"),
    ]
    for kwargs, message in cases:
        with pytest.raises(NetworkError, match=message) as e:
            N.create_network(state, **kwargs)  # type: ignore[arg-type]
        assert "\n" not in str(e.value)
    assert snapshot(state.path) == before
    assert [n.name for n in N.list_networks(state)] == ["bridge", "host", "none"]
    N.create_network(state, "one", subnet="10.77.0.0/24")
    with pytest.raises(NetworkError, match="overlaps network one"):
        N.create_network(state, "two", subnet="10.77.0.128/25")


def _a_host_route() -> str:
    return next(str(r) for r in links.host_routes() if 8 <= r.prefixlen <= 30)


def test_subnet_choice_avoids_existing(state: StateRoot) -> None:
    a = N.create_network(state, "a")
    b = N.create_network(state, "b", subnet="10.78.5.0/24", gateway="10.78.5.254")
    c = N.create_network(state, "c")
    assert a.subnet != c.subnet
    assert b.gateway == "10.78.5.254"
    import ipaddress

    bridge = ipaddress.IPv4Network(N.get_network(state, "bridge").subnet)
    assert not any(bridge.overlaps(ipaddress.IPv4Network(n.subnet)) for n in (a, b, c))


# -- traffic -----------------------------------------------------------------------------------


def test_two_endpoints_reach_each_other_by_ip_and_name_isolated_from_other_network(
    state: StateRoot,
) -> None:
    N.create_network(state, "appnet")
    N.create_network(state, "othernet")
    a = N.attach(state, CID_A, "appnet", name="web", aliases=("www",))
    b = N.attach(state, CID_B, "appnet", name="client")
    c = N.attach(state, CID_C, "othernet", name="intruder")
    assert a.ifname == "eth0" and a.netns == N.netns_path(state, CID_A)
    assert links.is_netns(a.netns)
    assert ping(b.netns, a.ip)
    assert unreachable(c.netns, a.ip)
    with forward_policy("DROP"):  # what dockerd leaves behind
        assert ping(b.netns, a.ip)
        assert ping(a.netns, b.ip)
        assert unreachable(c.netns, a.ip)
    # by name and alias, with the hosts file mounted at /etc/hosts as the sandbox will
    assert b.hosts_path is not None
    hosts = b.hosts_path.read_text()
    assert f"{a.ip}\tweb www {CID_A[:12]}" in hosts
    assert "intruder" not in hosts
    for name in ("web", "www"):
        r = sh(b.netns, "unshare", "-m", "sh", "-c",
               f"mount --bind {b.hosts_path} /etc/hosts && busybox ping -c1 -W3 {name}")
        assert r.returncode == 0, r.stderr
        assert f"({a.ip})" in r.stdout
    assert N.hosts_entries(state, CID_B) == hosts
    # and by DNS: the network's embedded server on its gateway, as resolv.conf says
    resolv = N.resolv_conf(state, CID_B)
    assert b.resolv_path is not None and b.resolv_path.read_text() == resolv
    assert resolv.startswith(f"nameserver {b.gateway}\n") and "options ndots:0" in resolv
    for name in ("web", "www", "WEB.appnet", CID_A[:12]):
        r = sh(b.netns, "busybox", "nslookup", name, b.gateway)
        assert r.returncode == 0 and f"Address: {a.ip}" in r.stdout, (name, r.stdout)
    tcp_query = (
        "import socket,struct\n"
        "q=struct.pack('!HHHHHH',7,256,1,0,0,0)+b'\\x03www\\x00'+struct.pack('!HH',1,1)\n"
        f"s=socket.create_connection(('{b.gateway}',53),timeout=3)\n"
        "s.sendall(struct.pack('!H',len(q))+q)\nn=struct.unpack('!H',s.recv(2))[0]\n"
        "print(socket.inet_ntoa(s.recv(n)[-4:]))"
    )
    r = sh(b.netns, "python3", "-c", tcp_query)  # DNS over TCP too
    assert r.stdout == f"{a.ip}\n", r.stderr
    assert N.resolv_conf(state, CID_C).startswith(f"nameserver {c.gateway}\n")
    dns_pid = N.get_network(state, "appnet").dns_pid
    assert dns_pid in _proxies()
    N.release(state, CID_A)
    N.release(state, CID_B)
    assert dns_pid not in _proxies()  # the server stops with the network's last container
    assert N.get_network(state, "appnet").dns_pid == 0


def test_hosts_file_rewritten_in_place_on_attach_and_detach(state: StateRoot) -> None:
    N.create_network(state, "appnet")
    a = N.attach(state, CID_A, "appnet", name="first")
    assert a.hosts_path is not None
    inode = a.hosts_path.stat().st_ino
    b = N.attach(state, CID_B, "appnet", name="second")
    assert "second" in a.hosts_path.read_text()
    assert a.hosts_path.stat().st_ino == inode
    N.detach(state, CID_B, "appnet")
    assert "second" not in a.hosts_path.read_text()
    assert a.hosts_path.stat().st_ino == inode
    assert b.netns is not None and links.is_netns(b.netns)  # detach keeps the namespace
    assert not links.link_exists(b.host_veth)
    N.release(state, CID_B)
    assert not b.netns.exists()
    assert b.hosts_path is not None and not b.hosts_path.exists()


def test_connect_second_network_and_disconnect(state: StateRoot) -> None:
    N.create_network(state, "front")
    N.create_network(state, "back", subnet="10.79.0.0/24")
    a = N.attach(state, CID_A, "front", name="app")
    db = N.attach(state, CID_B, "back", name="db")
    assert unreachable(a.netns, db.ip)
    a2 = N.attach(state, CID_A, "back", name="app", ip="10.79.0.100")
    assert a2.ifname == "eth1" and a2.ip == "10.79.0.100" and a2.netns == a.netns
    assert ping(a.netns, db.ip)
    assert [e.network_name for e in N.endpoints(state, CID_A)] == ["front", "back"]
    with pytest.raises(NetworkError, match="already connected to network back"):
        N.attach(state, CID_A, "back")
    with pytest.raises(NetworkError, match="already in use"):
        N.attach(state, CID_C, "back", ip="10.79.0.100")
    with pytest.raises(NetworkError, match="user defined networks only"):
        N.attach(state, CID_C, "bridge", ip="10.88.0.9")
    with pytest.raises(NetworkError, match="is in use|has active endpoints"):
        N.remove_network(state, "back")
    N.detach(state, CID_A, "back")
    assert unreachable(a.netns, db.ip)
    assert not links.link_exists("eth1", a.netns)
    with pytest.raises(NetworkError, match="is not connected to network back"):
        N.detach(state, CID_A, "back")
    assert not (N.netns_path(state, CID_C)).exists()  # failed attaches left nothing


def test_default_bridge_outbound_nat_and_no_name_resolution(state: StateRoot, tmp_path: Path) -> None:
    bridge = N.get_network(state, "bridge")
    assert not links.link_exists(bridge.bridge)  # made on first use...
    a = N.attach(state, CID_A, "bridge", name="one")
    b = N.attach(state, CID_B, "bridge", name="two")
    assert links.link_exists(bridge.bridge)
    assert ping(a.netns, b.ip)
    assert a.hosts_path is not None and "two" not in a.hosts_path.read_text()
    # outbound: the "outside" network is reached through the host with MASQUERADE
    with outside_netns(tmp_path, "10.231.0.1", "10.231.0.2") as out:
        server = (
            "import socket\ns=socket.socket()\ns.bind(('0.0.0.0',7777))\ns.listen()\n"
            "print('ready',flush=True)\nc,a=s.accept()\ndata=b''\n"
            "while (d:=c.recv(100)):\n data+=d\nprint(a[0],data.decode().strip(),flush=True)"
        )
        listener = subprocess.Popen(
            ["nsenter", f"--net={out}", "python3", "-c", server], stdout=subprocess.PIPE, text=True,
        )
        try:
            assert listener.stdout is not None and listener.stdout.readline() == "ready\n"
            r = sh(a.netns, "sh", "-c", "echo hi | busybox nc 10.231.0.2 7777")
            assert r.returncode == 0, r.stderr
            got, _ = listener.communicate(timeout=5)
            assert got == "10.231.0.1 hi\n"  # masqueraded behind the host's address
        finally:
            listener.kill()
            listener.wait()
    with pytest.raises(NetworkError, match="user-defined networks only"):
        N.attach(state, CID_C, "bridge", aliases=("x",))


def test_published_port_via_proxy_and_dnat(state: StateRoot, tmp_path: Path) -> None:
    N.create_network(state, "appnet")
    port = free_port()
    web = N.attach(state, CID_A, "appnet", name="web", ports=N.parse_publish(f"{port}:80"))
    assert [str(p) for p in web.ports] == [f"0.0.0.0:{port}->80/tcp"]
    assert web.proxy_pid in _proxies()
    assert web.netns is not None
    with serve_http(web.netns, tmp_path / "www"):
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
        assert body == b"hello from the container\n"
        # the host's own address: the nat OUTPUT hook sends it through DNAT
        body = urllib.request.urlopen(f"http://{_a_host_address()}:{port}/", timeout=5).read()
        assert body == b"hello from the container\n"
        before = _dnat_packets(port)
        with forward_policy("DROP"):
            with outside_netns(tmp_path, "10.232.0.1", "10.232.0.2") as out:
                r = sh(out, "busybox", "wget", "-q", "-O", "-", f"http://10.232.0.1:{port}/")
                assert r.stdout == "hello from the container\n", r.stderr
        assert _dnat_packets(port) > before  # it went through the DNAT rule, not the proxy
    # a random host port (-p 80) and UDP through the proxy
    echo = subprocess.Popen(
        ["nsenter", f"--net={web.netns}", "python3", "-c",
         "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',53))\n"
         "while True:\n d,a=s.recvfrom(100)\n s.sendto(d.upper(),a)"],
    )
    try:
        b = N.attach(state, CID_B, "appnet", ports=N.parse_publish("53/udp") + N.parse_publish("80"))
        assert all(p.host_port > 0 for p in b.ports)
        b_tag = firewall.endpoint_tag(b.network_id, CID_B)
        assert sum(len(v) for v in firewall.tagged(b_tag).values()) == 4  # DNAT + FORWARD each
        N.detach(state, CID_B, "appnet")
        assert b.proxy_pid not in _proxies()
        assert not firewall.has_tag(b_tag)
        uport = free_port()
        N.detach(state, CID_A, "appnet")
        web = N.attach(state, CID_A, "appnet", ports=N.parse_publish(f"127.0.0.1:{uport}:53/udp"))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            for _ in range(20):
                s.sendto(b"ping", ("127.0.0.1", uport))
                with contextlib.suppress(TimeoutError):
                    assert s.recvfrom(100)[0] == b"PING"
                    break
            else:
                pytest.fail("no UDP echo through the proxy")
    finally:
        echo.kill()
        echo.wait()


def test_port_rules_go_even_when_one_was_deleted_by_hand(state: StateRoot) -> None:
    """A container's port rules are deleted by their spec, without reading the rule set; when
    one is missing (a firewall reload, a hand), the rest still go, by their tag."""
    net = N.create_network(state, "appnet")
    N.attach(state, CID_A, "appnet", ports=N.parse_publish("127.0.0.1::80"))
    tag = firewall.endpoint_tag(net.id, CID_A)
    found = firewall.tagged(tag)
    assert sorted(found) == ["filter", "nat"] and len(found["nat"]) == len(found["filter"]) == 1
    subprocess.run(["iptables", "-t", "nat", "-D", *found["nat"][0][1:]], check=True)
    N.detach(state, CID_A, "appnet")
    assert not firewall.has_tag(tag)
    assert firewall.has_tag(firewall.network_tag(net.id))  # the network's own rules stay


def _dnat_packets(port: int) -> int:
    out = subprocess.run(
        ["iptables", "-t", "nat", "-L", "PYBUILD", "-n", "-v", "-x"], capture_output=True, text=True, check=True
    ).stdout
    return sum(int(line.split()[0]) for line in out.splitlines() if f"dpt:{port}" in line)


def test_port_already_in_use_fails_before_anything_is_made(state: StateRoot) -> None:
    N.create_network(state, "appnet")
    before = snapshot(state.path)
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(NetworkError, match=f"Bind for 0.0.0.0:{port} failed: port is already allocated"):
            N.attach(state, CID_A, "appnet", ports=N.parse_publish(f"{port}:80"))
    assert snapshot(state.path) == before
    assert not N.netns_path(state, CID_A).exists()
    assert N.get_network(state, "appnet").containers == {}


def test_none_host_and_shared_netns(state: StateRoot) -> None:
    n = N.attach(state, CID_A, "none")
    assert n.netns is not None and links.is_netns(n.netns)
    r = sh(n.netns, "busybox", "ip", "-o", "link")
    assert "lo:" in r.stdout and "eth0" not in r.stdout
    with pytest.raises(NetworkError, match="network none cannot be connected"):
        N.attach(state, CID_A, "bridge")
    assert N.shared_netns(state, CID_A) == n.netns
    with pytest.raises(NetworkError, match="has no network namespace"):
        N.shared_netns(state, CID_C)
    h = N.attach(state, CID_B, "host", hostname="hosty")
    assert h.netns is None
    assert h.hosts_path is not None and h.hosts_path.read_text() == Path("/etc/hosts").read_text()
    with pytest.raises(NetworkError, match="uses the host network"):
        N.attach(state, CID_B, "bridge")
    N.release(state, CID_A)
    assert not n.netns.exists()


def test_macvlan_on_a_parent_interface(state: StateRoot) -> None:
    from pyroute2 import IPRoute

    # no `dummy` driver in this kernel: a veth pair stands in for the NIC and the LAN behind it
    with IPRoute() as ipr:
        ipr.link("add", ifname="pbtmv0", kind="veth", peer={"ifname": "pbtmv1"})
        for name in ("pbtmv0", "pbtmv1"):
            ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
        ipr.addr("add", index=ipr.link_lookup(ifname="pbtmv1")[0], address="10.233.0.1", prefixlen=24)
    try:
        N.create_network(state, "lan", driver="macvlan", subnet="10.233.0.0/24", options={"parent": "pbtmv0"})
        a = N.attach(state, CID_A, "lan", name="a")
        b = N.attach(state, CID_B, "lan", name="b", ip="10.233.0.77")
        assert a.ip == "10.233.0.2" and b.ip == "10.233.0.77"
        assert ping(a.netns, b.ip)
        assert ping(a.netns, "10.233.0.1")  # the "LAN" behind the parent
        N.release(state, CID_A)
        N.release(state, CID_B)
        N.remove_network(state, "lan")
    finally:
        links.delete_link("pbtmv0")


def test_internal_network_has_no_way_out(state: StateRoot, tmp_path: Path) -> None:
    net = N.create_network(state, "private", internal=True)
    assert not [r for r in _rules() if "MASQUERADE" in r and firewall.network_tag(net.id) in r]
    a = N.attach(state, CID_A, "private", name="a")
    b = N.attach(state, CID_B, "private", name="b")
    with outside_netns(tmp_path, "10.234.0.1", "10.234.0.2") as out:
        assert ping(a.netns, b.ip)
        assert ping(a.netns, a.gateway)
        assert unreachable(a.netns, "10.234.0.2")
        assert unreachable(out, a.ip)


def test_stale_records_after_a_reboot_are_repaired(state: StateRoot) -> None:
    """After a reboot the netns file is a plain file and the bridge is gone: attach recovers."""
    net = N.create_network(state, "appnet")
    a = N.attach(state, CID_A, "appnet", name="a")
    assert a.netns is not None
    N.release(state, CID_A)
    links.delete_link(net.bridge)  # what a reboot does to kernel objects...
    a.netns.parent.mkdir(parents=True, exist_ok=True)
    a.netns.touch()  # ...while files under the state root stay
    b = N.attach(state, CID_A, "appnet", name="a")
    c = N.attach(state, CID_B, "appnet", name="c")
    assert b.netns is not None and links.is_netns(b.netns)
    assert links.link_exists(net.bridge) and firewall.has_tag(firewall.network_tag(net.id))
    assert ping(c.netns, b.ip)


def test_default_bridge_stays_up_between_containers(state: StateRoot) -> None:
    """As Docker's docker0: the bridge and its network rules outlive the last container (making
    them per container costs ~90 ms); each container's veth goes with it; ``reset`` removes all."""
    bridge = N.get_network(state, "bridge")
    tag = firewall.network_tag(bridge.id)
    a = N.attach(state, CID_A, "bridge")
    N.attach(state, CID_B, "bridge")
    N.release(state, CID_A)
    assert links.link_exists(bridge.bridge) and firewall.has_tag(tag)
    assert not links.link_exists(a.host_veth)
    N.release(state, CID_B)
    assert links.link_exists(bridge.bridge) and firewall.has_tag(tag)
    assert N.get_network(state, "bridge").containers == {}
    again = N.attach(state, CID_C, "bridge")  # the next one reuses it
    assert links.link_exists(bridge.bridge) and firewall.has_tag(tag) and again.ip
    N.reset(state)
    assert not links.link_exists(bridge.bridge) and not firewall.has_tag(tag)
    assert not links.link_exists(again.host_veth)


def test_proxy_streams_large_bodies_and_honours_the_host_ip(state: StateRoot, tmp_path: Path) -> None:
    N.create_network(state, "appnet")
    port = free_port()
    web = N.attach(state, CID_A, "appnet", ports=N.parse_publish(f"127.0.0.1:{port}:80"))
    assert web.netns is not None
    www = tmp_path / "www"
    www.mkdir()
    blob = os.urandom(3 * 1024 * 1024)
    (www / "blob").write_bytes(blob)
    with serve_http(web.netns, www):
        urls = [f"http://127.0.0.1:{port}/blob"] * 4
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            bodies = list(pool.map(lambda u: urllib.request.urlopen(u, timeout=10).read(), urls))
        assert all(b == blob for b in bodies)
        # published on 127.0.0.1 only: the host's other addresses do not answer
        host_ip = _a_host_address()
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex((host_ip, port)) == 111  # ECONNREFUSED: no proxy, no DNAT there
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex(("127.0.0.1", port)) == 0


def _a_host_address() -> str:
    """An address of this host on a real interface (not loopback, not one of our bridges)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        names = {link["index"]: link.get("ifname") for link in ipr.get_links()}
        for a in ipr.get_addr(family=2):
            name = str(names.get(a["index"], ""))
            if name != "lo" and not name.startswith("pb"):
                return str(a.get("address"))
    raise AssertionError("no host address to test with")
