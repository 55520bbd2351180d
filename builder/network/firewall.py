"""Netfilter rules for bridge networks through ``iptables-save``/``iptables-restore`` batches.

Every rule lives in our own chains and carries a ``pybuild:<net>[:<container>]`` comment, so
removal deletes exactly what was added; the hook jumps and chains go when no rule is left.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from builder.base.errors import NetworkError
from builder.base.values import frozen

FORWARD = "PYBUILD-FORWARD"
ISOLATION1 = "PYBUILD-ISOLATION-1"
ISOLATION2 = "PYBUILD-ISOLATION-2"
DNAT_CHAIN = "PYBUILD"
POSTROUTING = "PYBUILD-POSTROUTING"
INPUT = "PYBUILD-INPUT"
HOOK_TAG = "pybuild"

CHAINS: dict[str, tuple[str, ...]] = {
    "filter": (ISOLATION1, ISOLATION2, FORWARD, INPUT),
    "nat": (DNAT_CHAIN, POSTROUTING),
}
# (table, builtin chain, rule spec): inserted at the top, in this order, so ours run first
# even under a FORWARD policy of DROP set by dockerd.
HOOKS: tuple[tuple[str, str, str], ...] = (
    ("filter", "FORWARD", f"-m comment --comment {HOOK_TAG} -j {FORWARD}"),
    ("filter", "FORWARD", f"-m comment --comment {HOOK_TAG} -j {ISOLATION1}"),
    ("filter", "INPUT", f"-m comment --comment {HOOK_TAG} -j {INPUT}"),
    ("nat", "PREROUTING", f"-m addrtype --dst-type LOCAL -m comment --comment {HOOK_TAG} -j {DNAT_CHAIN}"),
    (
        "nat",
        "OUTPUT",
        f"! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -m comment --comment {HOOK_TAG} -j {DNAT_CHAIN}",
    ),
    ("nat", "POSTROUTING", f"-m comment --comment {HOOK_TAG} -j {POSTROUTING}"),
)
OURS = {c for cs in CHAINS.values() for c in cs}
LOCK = Path("/run/lock/pybuild-netfilter.lock")


@frozen
class Rule:  # (a frozen value, no dataclass: every network command loads this)
    table: str
    chain: str
    spec: str
    top: bool = False  # insert at position 1 rather than append


def network_tag(network_id: str) -> str:
    return f"pybuild:{network_id[:12]}"


def endpoint_tag(network_id: str, container_id: str) -> str:
    return f"{network_tag(network_id)}:{container_id[:12]}"


def _c(tag: str) -> str:
    return f"-m comment --comment {tag}"


def network_rules(network_id: str, bridge: str, subnet: str, *, internal: bool) -> list[Rule]:
    t = _c(network_tag(network_id))
    rules = [
        # traffic from a bridge never takes a DNAT shortcut: it reaches published ports via
        # the userland proxy, like Docker with its userland proxy on
        Rule("nat", DNAT_CHAIN, f"-i {bridge} {t} -j RETURN", top=True),
        Rule("filter", FORWARD, f"-o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED {t} -j ACCEPT"),
        Rule("filter", FORWARD, f"-i {bridge} -o {bridge} {t} -j ACCEPT"),
        Rule("filter", ISOLATION2, f"-o {bridge} {t} -j DROP"),
        # the network's DNS server on the gateway, whatever the INPUT policy
        Rule("filter", INPUT, f"-i {bridge} -p udp -m udp --dport 53 {t} -j ACCEPT"),
        Rule("filter", INPUT, f"-i {bridge} -p tcp -m tcp --dport 53 {t} -j ACCEPT"),
    ]
    if internal:
        rules += [
            Rule("filter", ISOLATION1, f"-i {bridge} ! -o {bridge} {t} -j DROP"),
            Rule("filter", ISOLATION1, f"-o {bridge} ! -i {bridge} {t} -j DROP"),
        ]
    else:
        rules += [
            Rule("nat", POSTROUTING, f"-s {subnet} ! -o {bridge} {t} -j MASQUERADE"),
            Rule("filter", FORWARD, f"-i {bridge} ! -o {bridge} {t} -j ACCEPT"),
            Rule("filter", ISOLATION1, f"-i {bridge} ! -o {bridge} {t} -j {ISOLATION2}"),
        ]
    return rules


def port_rules(
    network_id: str,
    container_id: str,
    bridge: str,
    container_ip: str,
    ports: Iterable[tuple[str, str, int, int]],
) -> list[Rule]:
    """DNAT + FORWARD accept for ``(proto, host_ip, host_port, container_port)`` tuples."""
    t = _c(endpoint_tag(network_id, container_id))
    rules: list[Rule] = []
    for proto, host_ip, host_port, cport in ports:
        dst = f"-d {host_ip}/32 " if host_ip and host_ip != "0.0.0.0" else ""
        rules.append(
            Rule(
                "nat",
                DNAT_CHAIN,
                f"{dst}! -i {bridge} -p {proto} -m {proto} --dport {host_port} {t} "
                f"-j DNAT --to-destination {container_ip}:{cport}",
            )
        )
        rules.append(
            Rule(
                "filter",
                FORWARD,
                f"-d {container_ip}/32 ! -i {bridge} -o {bridge} -p {proto} -m {proto} "
                f"--dport {cport} {t} -j ACCEPT",
            )
        )
    return rules


# -- running iptables ---------------------------------------------------------------------------


def lock_path() -> Path:
    """The host's lock; rootless, the user's own in the runtime directory (the rules it guards
    are those of the user's network namespace, and the host's lock file is root's)."""
    if "_PYBUILD_ROOTLESS" in os.environ:
        from builder.base import rootless

        return rootless.runtime_dir() / "netfilter.lock"
    return LOCK


@contextmanager
def locked() -> Iterator[None]:
    """Serialise our read-modify-write of the (host-global) rule set across state roots."""
    path = lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _run(argv: list[str], stdin: str | None = None) -> str:
    import subprocess  # only to change rules: a run on the default bridge (made once) changes none

    try:
        p = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise NetworkError.not_found(f"{argv[0]} not found: install the iptables package") from None
    if p.returncode != 0:
        msg = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[-1]
        raise NetworkError(f"{argv[0]} failed: {msg}")
    return p.stdout


@frozen
class Snapshot:
    """One ``iptables-save`` of the tables we use: rules as token lists, and chain names."""

    rules: dict[str, list[list[str]]]
    chains: dict[str, set[str]]

    @classmethod
    def take(cls) -> Snapshot:
        rules: dict[str, list[list[str]]] = {t: [] for t in CHAINS}
        chains: dict[str, set[str]] = {t: set() for t in CHAINS}
        table = ""
        for line in _run(["iptables-save"]).splitlines():
            if line.startswith("*"):
                table = line[1:].strip()
            elif table in CHAINS and line.startswith(":"):
                chains[table].add(line[1:].split()[0])
            elif table in CHAINS and line.startswith("-A "):
                rules[table].append(_split(line))
        return cls(rules, chains)

    def tagged(self, tag: str) -> dict[str, list[list[str]]]:
        """Rules in our chains whose comment is *tag* or starts with ``tag:``."""
        found: dict[str, list[list[str]]] = {}
        for table, chains in CHAINS.items():
            for toks in self.rules[table]:
                c = _comment(toks)
                if toks[1] in chains and (c == tag or c.startswith(tag + ":")):
                    found.setdefault(table, []).append(toks)
        return found

    def hook_present(self, table: str, builtin: str, spec: str) -> bool:
        want = [builtin, *spec.split()]
        return any(t[1:] == want for t in self.rules[table])


def _restore(lines_by_table: dict[str, list[str]]) -> None:
    text = ""
    for table, lines in lines_by_table.items():
        if lines:
            text += f"*{table}\n" + "\n".join(lines) + "\nCOMMIT\n"
    if text:
        _run(["iptables-restore", "-w", "--noflush"], stdin=text)


def _split(line: str) -> list[str]:
    """A saved rule's words: only comments are quoted, in double quotes, ``\\"`` inside
    (``shlex.split`` cost ~20 ms per ``iptables-save`` of a few hundred rules)."""
    if '"' not in line:
        return line.split()
    words = re.finditer(r'"((?:[^"\\]|\\.)*)"|(\S+)', line)
    return [m[1].replace('\\"', '"') if m[1] is not None else m[2] for m in words]


def _join(tokens: list[str]) -> str:
    """Back to restore syntax, which knows double quotes only (``shlex.join`` would quote ``!``)."""
    return " ".join(f'"{t}"' if re.search(r"\s", t) else t for t in tokens)


def _comment(tokens: list[str]) -> str:
    for i, tok in enumerate(tokens[:-1]):
        if tok == "--comment":
            return tokens[i + 1]
    return ""


def enable_forwarding() -> None:
    p = Path("/proc/sys/net/ipv4/ip_forward")
    if p.read_text().strip() != "1":
        p.write_text("1\n")


def _deletions(found: dict[str, list[list[str]]]) -> dict[str, list[str]]:
    return {t: ["-D " + _join(toks[1:]) for toks in rules] for t, rules in found.items()}


def replace_tagged(tag: str, rules: Iterable[Rule]) -> None:
    """In one ``iptables-restore``: drop any rule with *tag*, make the chains and hooks if
    missing, add *rules*. IPv4 forwarding is turned on (as Docker does)."""
    enable_forwarding()
    snap = Snapshot.take()
    batch = _deletions(snap.tagged(tag))
    for table, chains in CHAINS.items():
        lines = batch.setdefault(table, [])
        lines += [f"-N {c}" for c in chains if c not in snap.chains[table]]
        for htable, builtin, spec in HOOKS:
            if htable == table and not snap.hook_present(table, builtin, spec):
                lines.append(f"-I {builtin} 1 {spec}")
    for r in rules:
        cmd = f"-I {r.chain} 1" if r.top else f"-A {r.chain}"
        batch[r.table].append(f"{cmd} {r.spec}")
    _restore(batch)


def add(rules: Iterable[Rule]) -> None:
    """Append (or insert) *rules*; the chains must exist (a network's rules are in place)."""
    batch: dict[str, list[str]] = {}
    for r in rules:
        cmd = f"-I {r.chain} 1" if r.top else f"-A {r.chain}"
        batch.setdefault(r.table, []).append(f"{cmd} {r.spec}")
    _restore(batch)


def remove_exact(rules: Iterable[Rule], tag: str) -> None:
    """Delete *rules*, known to carry *tag*, in one ``iptables-restore`` (no ``iptables-save``:
    ``-D`` with the spec they were added with); if one is missing (a reboot, a flush), every
    rule with *tag* goes the ``remove_tagged`` way. The hooks and chains stay: the rules of
    the network these belong to are still in them."""
    batch: dict[str, list[str]] = {}
    for r in rules:
        batch.setdefault(r.table, []).append(f"-D {r.chain} {r.spec}")
    try:
        _restore(batch)
    except NetworkError:
        remove_tagged(tag)


def tagged(tag: str) -> dict[str, list[list[str]]]:
    return Snapshot.take().tagged(tag)


def remove_tagged(tag: str) -> int:
    """Delete every rule carrying *tag* (or a sub-tag), and the hooks and chains too when no
    rule of ours is left: one ``iptables-save``, one ``iptables-restore``."""
    return remove_tagged_all([tag])


def remove_tagged_all(tags: Iterable[str]) -> int:
    """``remove_tagged`` of several tags in the same two processes."""
    snap = Snapshot.take()
    found: dict[str, list[list[str]]] = {}
    seen: set[int] = set()
    for tag in tags:
        for table, rules in snap.tagged(tag).items():
            for r in rules:
                if id(r) not in seen:
                    seen.add(id(r))
                    found.setdefault(table, []).append(r)
    batch = _deletions(found)
    gone = {id(t) for rules in found.values() for t in rules}
    left = any(t[1] in OURS and id(t) not in gone for rules in snap.rules.values() for t in rules)
    if not left:
        for table, chains in CHAINS.items():
            lines = batch.setdefault(table, [])
            for htable, builtin, spec in HOOKS:
                if htable == table and snap.hook_present(table, builtin, spec):
                    lines.append(f"-D {builtin} {spec}")
            lines += [f"-X {c}" for c in chains if c in snap.chains[table]]
    _restore(batch)
    return sum(len(v) for v in found.values())


def has_tag(tag: str) -> bool:
    return bool(tagged(tag))
