"""The session's host-leak guard counts only what its own state roots account for."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path
from types import ModuleType

import pytest


def _conftest(config: pytest.Config) -> ModuleType:
    """The suite's root conftest as pytest loaded it (``import conftest`` may give a sub-dir's)."""
    path = str(Path(__file__).with_name("conftest.py"))
    return next(m for m in config.pluginmanager.get_plugins() if getattr(m, "__file__", None) == path)


def test_guard_counts_only_links_and_rules_of_its_own_roots(tmp_path: Path, pytestconfig: pytest.Config) -> None:
    conftest = _conftest(pytestconfig)
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    nid = secrets.token_hex(32)
    cid = secrets.token_hex(32)
    bridge = f"pb-{secrets.token_hex(5)}"
    rec = {"Id": nid, "Bridge": bridge, "Containers": {cid: {"HostVeth": "pbvdeadbeef0000"}}}
    (ours / "case0" / "root" / "networks").mkdir(parents=True)
    (ours / "case0" / "root" / "networks" / f"{nid}.json").write_text(json.dumps(rec))
    (ours / "case0" / "root" / "containers" / cid).mkdir(parents=True)
    (theirs / "x").mkdir(parents=True)
    chain = "PYBUILD-GUARDTEST"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    try:
        subprocess.run(["iptables", "-N", chain], check=True)
        subprocess.run(["iptables", "-A", chain, "-m", "comment", "--comment", f"pybuild:{nid[:12]}:{cid[:12]}",
                        "-j", "RETURN"], check=True)
        mine = conftest._owned(str(ours))
        assert conftest._links(mine) == {bridge}
        assert [r.split()[2] for r in conftest._rules(mine)] == [chain]
        other = conftest._owned(str(theirs))
        assert conftest._links(other) == set() and conftest._rules(other) == set()
        # what a fixture read before resetting its root counts after the record is gone
        os.unlink(ours / "case0" / "root" / "networks" / f"{nid}.json")
        assert conftest._links(conftest._owned(str(ours))) == set()
        conftest._SEEN_NAMES.update(conftest._network_names([]) | {bridge})
        try:
            assert conftest._links(conftest._owned(str(ours))) == {bridge}
        finally:
            conftest._SEEN_NAMES.discard(bridge)
    finally:
        subprocess.run(["iptables", "-F", chain], capture_output=True)
        subprocess.run(["iptables", "-X", chain], capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)


def test_guard_counts_cgroups_of_its_containers_only(tmp_path: Path, pytestconfig: pytest.Config) -> None:
    conftest = _conftest(pytestconfig)
    cid = secrets.token_hex(32)
    (tmp_path / "a" / "root" / "containers" / cid).mkdir(parents=True)
    base = Path("/sys/fs/cgroup/pids/pybuild")
    cg, foreign = base / cid, base / secrets.token_hex(32)
    for _ in range(50):  # another session may remove an empty pybuild/ between the mkdirs
        try:
            base.mkdir(exist_ok=True)
            cg.mkdir()
            foreign.mkdir()
            break
        except FileNotFoundError:
            continue
    try:
        assert conftest._cgroups(conftest._owned(str(tmp_path))) == {str(cg)}
    finally:
        cg.rmdir()
        foreign.rmdir()
        try:
            base.rmdir()
        except OSError:
            pass  # another sandbox uses it
