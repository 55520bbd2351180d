"""How a reference finds a container record (``ContainerStore.find``), in Docker's order: the full
ID, then the exact name (``/name`` too), then a unique ID prefix; and the names a create must
avoid. Both read the names alone (``ContainerStore.names``), not every typed record (issue 15:
``run --name`` and ``rm -f NAME`` would otherwise parse each container of the root).
"""

from __future__ import annotations

from typing import Any

import pytest

from builder.base.errors import ContainerError
from builder.runtime.containers.record import ContainerStore, NoSuchContainer


def test_find_by_id_name_and_prefix(busybox: Any) -> None:
    a = busybox("create", "--name", "alpha", "busybox", "true").stdout.strip()
    b = busybox("create", "--name", "beta", "busybox", "true").stdout.strip()
    cs = ContainerStore(busybox.state)
    assert cs.names() == {a: "alpha", b: "beta"}
    assert cs.find(a).name == "alpha" and cs.find(b).name == "beta"
    assert cs.find("alpha").id == a and cs.find("/beta").id == b
    assert cs.find(b[:12]).id == b and cs.find(a[:5].upper()).id == a
    with pytest.raises(NoSuchContainer, match="No such container: gamma"):
        cs.find("gamma")

    # a name wins over the ID prefix it also is
    c = busybox("create", "--name", b[:6], "busybox", "true").stdout.strip()
    assert cs.find(b[:6]).id == c
    assert cs.find(b[:7]).id == b


def test_ambiguous_prefix_and_taken_name(busybox: Any) -> None:
    ids = [busybox("create", "busybox", "true").stdout.strip() for _ in range(20)]
    first = {}
    for cid in ids:  # 20 random IDs over 16 hex digits: two share their first
        first.setdefault(cid[0], []).append(cid)
    shared = next(p for p, same in first.items() if len(same) > 1)
    with pytest.raises(ContainerError, match=f"multiple IDs found with provided prefix: {shared}"):
        ContainerStore(busybox.state).find(shared)

    busybox("create", "--name", "taken", "busybox", "true")
    r = busybox("create", "--name", "taken", "busybox", "true", check=False)
    assert r.returncode == 125
    assert 'The container name "/taken" is already in use' in r.stderr
    assert sorted(ContainerStore(busybox.state).names().values()).count("taken") == 1


def test_exit_codes_of_removed_containers_do_not_pile_up(busybox: Any) -> None:
    """Each ``run --rm`` leaves its exit code (``.exit-<id>``) for a ``wait`` begun before the
    removal; a creation removes those older than ``EXIT_KEEP``, so a root that ran thousands of
    containers does not list thousands of files on every create (``container prune`` did it alone)."""
    import os
    import time

    from builder.runtime.containers.record import EXIT_KEEP, EXIT_PREFIX

    r = busybox("run", "--rm", "busybox", "sh", "-c", "exit 3", check=False)
    assert r.returncode == 3
    d = ContainerStore(busybox.state).path
    kept = [n for n in os.listdir(d) if n.startswith(EXIT_PREFIX)]
    assert len(kept) == 1 and (d / kept[0]).read_text() == "3"
    cid = kept[0].removeprefix(EXIT_PREFIX)
    assert busybox("wait", cid).stdout.strip() == "3"  # what it is kept for
    old = time.time() - EXIT_KEEP - 5
    os.utime(d / kept[0], (old, old))
    (d / f"{EXIT_PREFIX}{'0' * 64}").write_text("0")  # a recent one stays
    busybox("create", "busybox", "true")
    assert sorted(n for n in os.listdir(d) if n.startswith(EXIT_PREFIX)) == [f"{EXIT_PREFIX}{'0' * 64}"]
