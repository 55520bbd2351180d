"""Seccomp and ``--security-opt``: the default profile (Docker's semantics) on containers (our
executor and ``--runtime runc``), ``exec`` and RUN steps; ``seccomp=unconfined|FILE``;
``no-new-privileges``; profile parsing, resolving and compiling.

The syscalls are made by ``testdata/seccomp/sysprobe.c``, built static here (gcc -static) and
bound into the busybox image: it prints ``NAME ok`` or ``NAME <errno>`` for each syscall named.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from builder.base.errors import SandboxError
from builder.core.sandbox import seccomp
from builder.core.sandbox.spec import DEFAULT_CAPS, Process, Spec, capabilities

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = shutil.which("gcc")
    assert gcc, "gcc is needed to build the syscall probe (make apt installs it)"
    out = tmp_path_factory.mktemp("probe") / "sysprobe"
    subprocess.run([gcc, "-static", "-O1", "-o", str(out), str(REPO / "testdata/seccomp/sysprobe.c")],
                   check=True, capture_output=True, timeout=120)
    return out


def probe_results(stdout: str) -> dict[str, str]:
    return {k: v for k, _, v in (line.partition(" ") for line in stdout.splitlines()) if v}


def status(stdout: str) -> dict[str, str]:
    return {k: v.strip() for k, _, v in (line.partition(":") for line in stdout.splitlines()) if v}


def run(busybox: Any, probe: Path, *args: str, script: str) -> subprocess.CompletedProcess[str]:
    return busybox("run", "--rm", "--network", "none", "-v", f"{probe}:/sysprobe:ro", *args,
                   "busybox", "sh", "-c", script, check=False)


# the probe's unshare goes last: a new user namespace would change what the calls after it may do
PROBE = ("grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; "
         "/sysprobe keyctl add_key mount clone-newns personality-bad personality-query fork clone3 unshare; "
         "unshare -U true && echo busybox-unshare=ok || echo busybox-unshare=failed")


# -- through `pybuild run` ---------------------------------------------------------------------
def test_default_profile_blocks_unshare_keyctl_mount(busybox: Any, probe: Path) -> None:
    r = run(busybox, probe, script=PROBE)
    assert r.returncode == 0, r.stderr
    got = probe_results(r.stdout)
    assert status(r.stdout)["Seccomp"] == "2"  # a filter is on
    assert status(r.stdout)["NoNewPrivs"] == "0"  # Docker's default: not set
    for call in ("keyctl", "add_key", "mount", "clone-newns", "personality-bad", "unshare"):
        assert got[call] == "EPERM", (call, r.stdout)
    # what the conditional rules let through: the personality query, a clone without namespace flags
    assert got["personality-query"] == "ok" and got["fork"] == "ok"
    assert got["clone3"] == "ENOSYS"  # the rule's own errnoRet: libc falls back to clone
    assert "busybox-unshare=failed" in r.stdout
    assert "unshare(0x10000000): Operation not permitted" in r.stderr


def test_unconfined_lets_the_syscalls_through(busybox: Any, probe: Path) -> None:
    r = run(busybox, probe, "--security-opt", "seccomp=unconfined",
            script=PROBE + "; unshare -Urm sh -c 'mount -t tmpfs x /tmp && echo mount-in-userns=ok'")
    assert r.returncode == 0, r.stderr
    got = probe_results(r.stdout)
    assert status(r.stdout)["Seccomp"] == "0"
    assert got["keyctl"] == "ok" and got["add_key"] == "ok" and got["unshare"] == "ok"
    assert got["personality-bad"] == "ok" and got["clone3"] == "EINVAL"  # reached the kernel
    # mount(2) reached the kernel: it looked the target up (ENOENT) before the capability check
    assert got["mount"] == "ENOENT"
    assert "busybox-unshare=ok" in r.stdout
    assert "mount-in-userns=ok" in r.stdout  # where the caps allow (its own user namespace), it works


def test_cap_sys_admin_brings_its_syscall_group(busybox: Any, probe: Path) -> None:
    r = run(busybox, probe, "--cap-add", "SYS_ADMIN",
            script="/sysprobe keyctl mount clone-newns; mount -t tmpfs x /tmp && echo mounted")
    assert r.returncode == 0, r.stderr
    got = probe_results(r.stdout)
    assert got["mount"] == "ENOENT" and got["clone-newns"] == "ok"  # the CAP_SYS_ADMIN rules apply
    assert got["keyctl"] == "EPERM"  # no capability lifts what the profile does not list
    assert "mounted" in r.stdout


def test_privileged_runs_unconfined(busybox: Any, probe: Path) -> None:
    r = run(busybox, probe, "--privileged", script="grep '^Seccomp:' /proc/self/status; /sysprobe keyctl")
    assert r.returncode == 0, r.stderr
    assert status(r.stdout)["Seccomp"] == "0" and probe_results(r.stdout)["keyctl"] == "ok"


def test_profile_file_blocking_mkdir(busybox: Any, probe: Path, tmp_path: Path) -> None:
    profile = tmp_path / "no-mkdir.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["getcpu", "no_such_syscall"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
        ],
    }, indent=2))
    name = "nomkdir"
    r = busybox("create", "--name", name, "--network", "none", "-v", f"{probe}:/sysprobe:ro",
                "--security-opt", f"seccomp={profile}", "busybox", "sh", "-c",
                "mkdir /made; echo mkdir=$?; /sysprobe keyctl mkdir; touch /file && echo touch=ok")
    cid = r.stdout.strip()
    profile.unlink()  # the record keeps the profile: a start does not need the file any more
    r = busybox("start", "-a", cid, check=False)
    assert r.returncode == 0, r.stderr
    assert "mkdir=1" in r.stdout and "Operation not permitted" in r.stderr
    got = probe_results(r.stdout)
    assert got["mkdir"] == "EPERM" and got["keyctl"] == "ok"  # only what the file lists is blocked
    assert "touch=ok" in r.stdout
    info = json.loads(busybox("inspect", name).stdout)[0]
    (opt,) = info["HostConfig"]["SecurityOpt"]
    assert opt.startswith("seccomp=") and json.loads(opt[len("seccomp="):])["syscalls"][0]["names"] == ["mkdir", "mkdirat"]
    busybox("rm", name)
    # the profile given inline, as the Engine API (and so `docker run` against us) carries it
    r = busybox("run", "--rm", "--security-opt", opt, "busybox", "sh", "-c", "mkdir /made", check=False)
    assert r.returncode == 1 and "Operation not permitted" in r.stderr
    r = busybox("run", "--rm", "--security-opt", 'seccomp={"syscalls": []}', "busybox", "true", check=False)
    assert r.returncode == 125 and "seccomp profile given inline: \"defaultAction\" is missing" in r.stderr


@pytest.mark.parametrize(("content", "expect"), [
    ("{not json", "invalid JSON"),
    ('{"syscalls": []}', '"defaultAction" is missing'),
    ('{"defaultAction": "SCMP_ACT_NOPE"}', "unknown action 'SCMP_ACT_NOPE'"),
    ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"]}]}', 'syscalls[0]: "action" is missing'),
    ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",'
     ' "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]}', "syscalls[0].args[0]: index must be 0 to 5"),
    ('{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_Z80"]}', "unknown architecture"),
])
def test_malformed_profile_is_refused_with_nothing_left(busybox: Any, tmp_path: Path, content: str,
                                                        expect: str) -> None:
    bad = tmp_path / "bad-profile.json"
    bad.write_text(content)
    for verb in ("run", "create"):
        r = busybox(verb, "--security-opt", f"seccomp={bad}", "busybox", "true", check=False)
        assert r.returncode == 125, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and str(bad) in lines[0] and expect in lines[0], r.stderr
    assert busybox("ps", "-aq").stdout.strip() == ""
    records = busybox.root / "containers"
    assert not records.exists() or not [p for p in records.iterdir() if not p.name.startswith(".")]


def test_profile_too_big_for_the_kernel(busybox: Any, tmp_path: Path) -> None:
    big = tmp_path / "huge.json"
    big.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getxattr"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 1, "value": v, "op": "SCMP_CMP_EQ"} for v in range(1, 4200)]}]}))
    r = busybox("run", "--rm", "--network", "none", "--security-opt", f"seccomp={big}", "busybox", "true",
                check=False)
    assert r.returncode == 125
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"Error: seccomp profile {big}: its filter has ")
    assert line.endswith(" instructions, the kernel takes at most 4096")
    assert busybox("ps", "-aq").stdout.strip() == ""
    assert not [p for p in (busybox.root / "run").rglob("*") if p.is_file() and p.name != ".overlay-ok"]


@pytest.mark.parametrize(("opt", "expect"), [
    ("seccomp=/nonexistent/profile.json", "opening seccomp profile (/nonexistent/profile.json) failed"),
    ("seccomp", 'invalid --security-opt "seccomp"'),
    ("bogus=1", 'unknown option "bogus"'),
    ("no-new-privileges=maybe", "no-new-privileges takes true or false"),
    ("systempaths=open", "systempaths takes only unconfined"),
])
def test_bad_security_opt(busybox: Any, opt: str, expect: str) -> None:
    r = busybox("run", "--security-opt", opt, "busybox", "true", check=False)
    assert r.returncode == 125
    assert len(r.stderr.strip().splitlines()) == 1 and expect in r.stderr, r.stderr
    assert busybox("ps", "-aq").stdout.strip() == ""


def test_no_new_privileges(busybox: Any, probe: Path) -> None:
    # a setuid-root copy of the probe, run as app: euid 0 unless no_new_privs holds it back
    script = ("grep '^NoNewPrivs:' /proc/self/status; cp /sysprobe /tmp/p && chmod 4755 /tmp/p && "
              "su app -s /bin/sh -c '/tmp/p euid'")
    results = {}
    for args in ((), ("--security-opt", "no-new-privileges"), ("--security-opt", "no-new-privileges=true"),
                 ("--security-opt", "no-new-privileges:false")):
        r = run(busybox, probe, *args, script=script)
        assert r.returncode == 0, r.stderr
        results[args[1:]] = (status(r.stdout)["NoNewPrivs"], probe_results(r.stdout)["euid"])
    assert results[()] == ("0", "0")
    assert results[("no-new-privileges",)] == ("1", "1000")
    assert results[("no-new-privileges=true",)] == ("1", "1000")
    assert results[("no-new-privileges:false",)] == ("0", "0")


def test_apparmor_and_label_are_accepted_with_a_warning(busybox: Any) -> None:
    r = busybox("run", "--name", "lsm", "--security-opt", "apparmor=unconfined", "--security-opt",
                "label=disable", "--security-opt", "systempaths=unconfined", "busybox", "sh", "-c",
                "grep '^Seccomp:' /proc/self/status; [ \"$(head -c 1 /proc/timer_list | wc -c)\" -gt 0 ] && echo unmasked",
                check=False)
    assert r.returncode == 0, r.stderr
    assert "WARNING: --security-opt apparmor=unconfined is ignored" in r.stderr
    assert "WARNING: --security-opt label=disable is ignored" in r.stderr
    assert "Seccomp:\t2" in r.stdout and "unmasked" in r.stdout  # systempaths=unconfined applies
    info = json.loads(busybox("inspect", "lsm").stdout)[0]
    assert info["HostConfig"]["SecurityOpt"] == ["apparmor=unconfined", "label=disable", "systempaths=unconfined"]
    busybox("rm", "lsm")


def test_exec_gets_the_containers_profile(busybox: Any, probe: Path) -> None:
    busybox("run", "-d", "--name", "ex", "--network", "none", "-v", f"{probe}:/sysprobe:ro",
            "--security-opt", "no-new-privileges", "busybox", "sleep", "60")
    try:
        r = busybox("exec", "ex", "sh", "-c", "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; /sysprobe keyctl")
        assert status(r.stdout)["Seccomp"] == "2" and status(r.stdout)["NoNewPrivs"] == "1"
        assert probe_results(r.stdout)["keyctl"] == "EPERM"
    finally:
        busybox("rm", "-f", "ex")


def test_runc_runtime_gets_the_profile(busybox: Any, probe: Path) -> None:
    r = run(busybox, probe, "--runtime", "runc", script=PROBE)
    assert r.returncode == 0, r.stderr
    got = probe_results(r.stdout)
    assert status(r.stdout)["Seccomp"] == "2"
    for call in ("keyctl", "add_key", "mount", "clone-newns", "personality-bad", "unshare"):
        assert got[call] == "EPERM", (call, r.stdout)
    assert got["fork"] == "ok" and got["personality-query"] == "ok"
    r = run(busybox, probe, "--runtime", "runc", "--security-opt", "seccomp=unconfined",
            script="grep '^Seccomp:' /proc/self/status; /sysprobe keyctl")
    assert status(r.stdout)["Seccomp"] == "0" and probe_results(r.stdout)["keyctl"] == "ok"


# -- a RUN step --------------------------------------------------------------------------------
def test_run_steps_get_the_default_profile(busybox: Any, probe: Path, tmp_path: Path, bt: Any) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    shutil.copy(probe, ctx / "sysprobe")
    (ctx / "Dockerfile").write_text(
        "FROM busybox\nCOPY sysprobe /sysprobe\n"
        "RUN (grep '^Seccomp:' /proc/self/status; /sysprobe keyctl mount unshare fork) > /result\n")
    bt.build(busybox, ctx, "-t", "probed")
    out = busybox("run", "--rm", "--security-opt", "seccomp=unconfined", "probed", "cat", "/result").stdout
    assert status(out)["Seccomp"] == "2"
    got = probe_results(out)
    assert got["keyctl"] == got["mount"] == got["unshare"] == "EPERM" and got["fork"] == "ok"
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN unshare -U true\n")
    r, events = bt.build(busybox, ctx, check=False)
    assert r.returncode != 0
    logs = "\n".join(e["text"] for e in events if e["kind"] == "log")
    assert "Operation not permitted" in logs


# -- the library -------------------------------------------------------------------------------
def test_default_profile_resolves_by_capabilities() -> None:
    p = seccomp.default()
    arches, rules = seccomp.resolve(p, DEFAULT_CAPS, machine="x86_64", kernel=(6, 1, 0))
    assert arches == ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32")
    names = {n for r in rules if r.action == "SCMP_ACT_ALLOW" and not r.args for n in r.names}
    assert {"read", "execve", "capset", "setresuid", "chroot", "ptrace", "arch_prctl"} <= names
    assert not {"mount", "unshare", "setns", "keyctl", "add_key", "request_key", "reboot", "bpf",
                "clone", "clone3", "io_uring_setup", "userfaultfd"} & names
    (clone,) = [r for r in rules if "clone" in r.names]
    assert clone.args == (seccomp.Arg(0, 0x7E020000, 0, "SCMP_CMP_MASKED_EQ"),)
    (clone3,) = [r for r in rules if "clone3" in r.names]
    assert clone3.action == "SCMP_ACT_ERRNO" and clone3.errno_ret == 38  # ENOSYS: libc falls back
    assert sorted(r.args[0].value for r in rules if "personality" in r.names) == [0, 8, 0x20000, 0x20008, 0xFFFFFFFF]
    # an older kernel does not get the ptrace rule; CAP_SYS_PTRACE brings it back
    old = {n for r in seccomp.resolve(p, DEFAULT_CAPS, machine="x86_64", kernel=(4, 4))[1] for n in r.names}
    assert "ptrace" not in old
    admin = seccomp.resolve(p, capabilities(add=("SYS_ADMIN",)), machine="x86_64")[1]
    admin_names = {n for r in admin if not r.args and r.action == "SCMP_ACT_ALLOW" for n in r.names}
    assert {"mount", "unshare", "setns", "clone", "clone3"} <= admin_names
    assert not [r for r in admin if r.args and "clone" in r.names]  # no masked clone rule any more
    arm = seccomp.resolve(p, DEFAULT_CAPS, machine="aarch64")
    assert arm[0] == ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM")
    assert "arch_prctl" not in {n for r in arm[1] for n in r.names}


def test_oci_form_and_compiled_program(tmp_path: Path) -> None:
    p = seccomp.default()
    oci = seccomp.to_oci(p, DEFAULT_CAPS)
    assert oci["defaultAction"] == "SCMP_ACT_ERRNO" and oci["defaultErrnoRet"] == 1
    assert not any("includes" in s or "excludes" in s for s in oci["syscalls"])
    assert {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]} in oci["syscalls"]
    prog = seccomp.program(p, DEFAULT_CAPS, cache_dir=tmp_path)
    assert prog and len(prog) % 8 == 0
    (cached,) = tmp_path.glob("*.bpf")
    assert cached.read_bytes() == prog
    cached.write_bytes(b"\x06\x00\x00\x00\x00\x00\xff\x7f")  # what is in the cache is what is loaded
    assert seccomp.program(p, DEFAULT_CAPS, cache_dir=tmp_path) == cached.read_bytes()
    other = seccomp.program(p, capabilities(add=("SYS_ADMIN",)), cache_dir=tmp_path)
    assert other != prog and len(list(tmp_path.glob("*.bpf"))) == 2


def test_oci_config_carries_the_profile(tmp_path: Path) -> None:
    from builder.core.rootfs import Root
    from builder.core.sandbox.oci import oci_config

    root = Root(path=str(tmp_path))
    cfg = oci_config(Spec(process=Process(args=("true",), seccomp=seccomp.default()), root=root))
    assert cfg["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    cfg = oci_config(Spec(process=Process(args=("true",)), root=root))
    assert "seccomp" not in cfg["linux"]


@pytest.mark.parametrize("nnp", [True, False])
def test_filter_order_against_no_new_privs(nnp: bool) -> None:
    from builder.base import syscalls as sc
    from builder.core.sandbox.child import confine
    from builder.core.sandbox.users import User

    fake = sc.FakeSyscalls()
    confine(fake, Process(args=("x",), no_new_privs=nnp), User(1000, 1000, (1000,), "/"), 40, b"\0" * 16)
    names = [c[0] for c in fake.calls]
    assert names.count("seccomp_filter") == 1
    if nnp:  # the filter last, after no_new_privs is set
        assert fake.calls[-1] == ("seccomp_filter", 16)
        assert ("prctl", sc.PR_SET_NO_NEW_PRIVS, 1) in fake.calls[:-1]
    else:  # first, while CAP_SYS_ADMIN is still held; no no_new_privs at all
        assert names[0] == "seccomp_filter" and "capset" in names[1:]
        assert ("prctl", sc.PR_SET_NO_NEW_PRIVS, 1) not in fake.calls
    fake = sc.FakeSyscalls(fail={"seccomp_filter": 22})
    with pytest.raises(SandboxError, match="cannot load the seccomp filter: .*Invalid argument"):
        confine(fake, Process(args=("x",)), User(0, 0, (0,), "/"), 40, b"\0" * 8)


def test_parse_reports_the_source_and_field() -> None:
    with pytest.raises(SandboxError, match=r"^seccomp profile my\.json: syscalls\[1\]\.args\[0\]: unknown op 'SCMP_CMP_XX'$"):
        seccomp.parse(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["write"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "op": "SCMP_CMP_XX"}]},
        ]}), source="my.json")
    p = seccomp.parse('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"name": "kill", "names": ["tkill"],'
                      ' "action": "SCMP_ACT_ERRNO", "includes": {"caps": ["sys_admin"]}}]}', source="x")
    assert p.rules[0].names == ("kill", "tkill") and p.rules[0].includes_caps == ("CAP_SYS_ADMIN",)
