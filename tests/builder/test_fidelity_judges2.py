"""More of Docker 20.10's behaviour (BuildKit with ``DOCKER_BUILDKIT=1``, and its engine) found
while judging issue 20, each checked against the private ``dockerd`` on this host: what a
build records (``WorkingDir``, the mount points left in a RUN layer, empty layers), what the
Dockerfile front end refuses, and what ``create``, ``network`` and ``images`` show.

The builds are compared as in ``test_fidelity_judges`` (flattened trees, config, history).
"""

from __future__ import annotations

from typing import Any


# -- f. the none network's driver ----------------------------------------------------------------
def test_none_network_driver_is_null(pybuild: Any, dockerd: Any) -> None:
    """dockerd names the driver of its ``none`` network ``null`` (``network ls``, ``inspect``,
    ``--filter driver=``), and refuses a second network of that driver in its words."""
    fmt = "{{.Name}} {{.Driver}} {{.Scope}}"
    theirs = dockerd.docker("network", "ls", "--format", fmt).stdout.decode().splitlines()
    mine = pybuild("network", "ls", "--format", fmt).stdout.splitlines()
    assert "none null local" in theirs and "host host local" in theirs
    assert [ln for ln in mine if not ln.startswith("bridge ")] == [
        ln for ln in theirs if not ln.startswith("bridge ")]
    assert (pybuild("network", "inspect", "-f", "{{.Driver}}", "none").stdout
            == dockerd.docker("network", "inspect", "-f", "{{.Driver}}", "none").stdout.decode())
    fmt = "{{.Name}}"
    assert (pybuild("network", "ls", "--filter", "driver=null", "--format", fmt).stdout
            == dockerd.docker("network", "ls", "--filter", "driver=null", "--format", fmt).stdout.decode()
            == "none\n")
    for driver in ("null", "host"):
        r = dockerd.docker("network", "create", "-d", driver, "again", check=False)
        assert r.returncode != 0
        want = f'only one instance of "{driver}" network is allowed'
        assert want in r.stderr.decode()
        r2 = pybuild("network", "create", "-d", driver, "again", check=False)
        assert r2.returncode != 0 and want in r2.stderr, r2.stderr
