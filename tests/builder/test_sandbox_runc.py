"""The same spec through our executor and through ``runc`` (Debian's) gives the same results.

Also pins the ``config.json`` we write against the OCI runtime-spec's basic shape.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from test_sandbox_support import HostSnapshot, new_id

from builder.base.state import StateRoot
from builder.core.rootfs import Root, prepare_root
from builder.core.sandbox import (
    Executor,
    Process,
    Resources,
    Spec,
    default_mounts,
    etc_mounts,
    run_oci,
    to_oci_bundle,
)

RUNC = shutil.which("runc") or "/usr/sbin/runc"

SCRIPT = r"""
echo "pid=$$"
echo "hostname=$(hostname)"
echo "links=$(ip -o link | awk -F': ' '{print $2}' | tr '\n' ' ')"
set -- /proc/[0-9]*; echo "procs=$#"
echo "kcore=$(cat /proc/kcore 2>/dev/null | wc -c)"
echo "timer_list=$(cat /proc/timer_list 2>/dev/null | wc -c)"
mount -t tmpfs x /tmp 2>/dev/null && echo mount=worked || echo mount=refused
(echo 1 > /proc/sys/kernel/domainname) 2>/dev/null && echo procsys=writable || echo procsys=readonly
echo "id=$(id)"
echo "caps=$(grep CapEff /proc/self/status | awk '{print $2}')"
echo "bnd=$(grep CapBnd /proc/self/status | awk '{print $2}')"
echo "nnp=$(grep NoNewPrivs /proc/self/status | awk '{print $2}')"
echo "dev=$(ls /dev | tr '\n' ' ')"
echo "hosts=$(head -1 /etc/hosts)"
echo "cwd=$(pwd)"
echo written > /written
exit 3
"""


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> StateRoot:
    return StateRoot.open(tmp_path_factory.mktemp("runc-state"))




def _spec(root: Root, tmp: Path, *args: str, user: str = "", resources: Resources | None = None) -> Spec:
    return Spec(process=Process(args=args, user=user, cwd="/home/app"), root=root, hostname="twin",
                mounts=default_mounts() + etc_mounts(tmp / "etc", hostname="twin"),
                resources=resources or Resources(), id=new_id())


def _both(state: StateRoot, busybox_layer: Path, tmp: Path, *args: str, **kw: object) -> tuple[tuple[int, str, bool, Path],
                                                                                        tuple[int, str, bool, Path]]:
    results = []
    for name in ("ours", "runc"):
        root = prepare_root([busybox_layer], tmp / name)
        spec = _spec(root, tmp / name, *args, **kw)  # type: ignore[arg-type]
        out: list[bytes] = []
        if name == "ours":
            r = Executor(state).run(spec, stdout=out.append, stderr=out.append, timeout=60)
        else:
            r = run_oci(spec, RUNC, state, stdout=out.append, stderr=out.append, timeout=60)
        results.append((r.exit_status, b"".join(out).decode(), r.oom_killed, Path(root.upper or "")))
    return results[0], results[1]


def test_same_observable_results(state: StateRoot, busybox_layer: Path, tmp_path: Path, host: HostSnapshot) -> None:
    ours, runc = _both(state, busybox_layer, tmp_path, "sh", "-c", SCRIPT)
    assert ours[0] == runc[0] == 3
    assert ours[1] == runc[1], f"ours:\n{ours[1]}\nrunc:\n{runc[1]}"
    assert "pid=1\n" in ours[1] and "procs=1\n" in ours[1]
    assert "mount=refused" in ours[1] and "procsys=readonly" in ours[1]
    assert "kcore=0" in ours[1] and "timer_list=0" in ours[1]
    for upper in (ours[3], runc[3]):
        assert (upper / "written").read_text() == "written\n"


def test_same_user_view(state: StateRoot, busybox_layer: Path, tmp_path: Path, host: HostSnapshot) -> None:
    ours, runc = _both(state, busybox_layer, tmp_path, "sh", "-c", "id; grep -E 'Cap(Eff|Bnd)' /proc/self/status",
                       user="app")
    assert ours[:2] == runc[:2]
    assert ours[1].startswith("uid=1000(app) gid=1000(app) groups=50(staff),1000(app)")


def test_same_oom_report(state: StateRoot, busybox_layer: Path, tmp_path: Path, host: HostSnapshot) -> None:
    ours, runc = _both(state, busybox_layer, tmp_path, "dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1",
                       resources=Resources(memory=64 << 20))
    assert (ours[0], ours[2]) == (runc[0], runc[2]) == (137, True)


def test_same_pids_limit(state: StateRoot, busybox_layer: Path, tmp_path: Path, host: HostSnapshot) -> None:
    script = "sh -c 'while :; do sleep 600 & done' 2>/dev/null; set -- /proc/[0-9]*; echo procs=$#"
    ours, runc = _both(state, busybox_layer, tmp_path, "sh", "-c", script, resources=Resources(pids=12))
    assert ours[0] == runc[0] == 0
    assert int(ours[1].split("procs=")[1]) <= 12 and int(runc[1].split("procs=")[1]) <= 12


def test_bundle_config(state: StateRoot, busybox_layer: Path, tmp_path: Path) -> None:
    root = prepare_root([busybox_layer], tmp_path / "b")
    spec = _spec(root, tmp_path, "echo", "hi", resources=Resources(memory=64 << 20, cpus=1.5, pids=100))
    cfg = json.loads(to_oci_bundle(spec, tmp_path / "bundle").read_text())
    assert cfg["ociVersion"].startswith("1.0")
    assert cfg["root"] == {"path": "rootfs", "readonly": False}
    assert (tmp_path / "bundle" / "rootfs").is_dir()
    assert cfg["process"]["args"] == ["echo", "hi"] and cfg["process"]["user"]["uid"] == 0
    assert {n["type"] for n in cfg["linux"]["namespaces"]} == {"mount", "pid", "network", "ipc", "uts", "cgroup"}
    res = cfg["linux"]["resources"]
    assert res["memory"] == {"limit": 64 << 20, "swap": 128 << 20}
    assert res["cpu"] == {"quota": 150000, "period": 100000} and res["pids"] == {"limit": 100}
    assert "/proc/kcore" in cfg["linux"]["maskedPaths"] and "/proc/sys" in cfg["linux"]["readonlyPaths"]
    assert cfg["linux"]["cgroupsPath"] == f"/pybuild/{spec.id}"
    assert os.path.isabs(cfg["mounts"][-1]["source"])
