"""A ``Spec`` as an OCI runtime-spec bundle (``config.json``), and running it with an OCI runtime.

``run_oci`` mounts an overlay root in a private mount namespace, then drives ``runc``
(create/start/delete, as a subreaper) so that exit status and OOM are reported like ours.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

from builder.base import syscalls as sc
from builder.base.errors import CommandNotExecutable, CommandNotFound, SandboxError
from builder.base.state import StateRoot
from builder.core import rootfs as _rootfs
from builder.core.layers import MergedView
from builder.core.sandbox import cgroups as _cg
from builder.core.sandbox import seccomp
from builder.core.sandbox.executor import overlay_lowers
from builder.core.sandbox.handle import Result, Sandbox
from builder.core.sandbox.spec import Spec
from builder.core.sandbox.stdio import Input, Output, Stdio, read_line, read_to_eof
from builder.core.sandbox.users import resolve_user

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

OCI_VERSION = "1.0.2"

_NS_TYPES = (("pid", "pid"), ("net", "network"), ("ipc", "ipc"), ("uts", "uts"), ("cgroup", "cgroup"))


def _read_root_file(spec: Spec, path: str) -> str | None:
    root = spec.root
    if root.is_overlay:
        data = MergedView([*root.layers, *([root.upper] if root.upper else [])]).read_file(path)
    else:
        assert root.path is not None
        data = MergedView([root.path]).read_file(path)
    return data.decode(errors="replace") if data is not None else None


def oci_config(spec: Spec, *, root_path: str = "rootfs", sandbox_id: str = "") -> dict[str, Any]:
    """The ``config.json`` object of *spec* (users resolved from the image's files now)."""
    p = spec.process
    user = resolve_user(p.user, _read_root_file(spec, "/etc/passwd"), _read_root_file(spec, "/etc/group"),
                        primary_in_groups=p.primary_in_groups, add_groups=p.add_groups)
    env = list(p.env)
    if not any(e.startswith("HOME=") for e in env):
        env.append(f"HOME={user.home}")
    caps = list(p.capabilities)
    granted = caps if user.uid == 0 else []
    mounts = []
    for m in spec.mounts:
        opts = list(m.options)
        if m.type == "bind" and "bind" not in opts and "rbind" not in opts:
            opts.insert(0, "rbind")
        mounts.append({"destination": m.destination, "type": m.type,
                       "source": m.source or m.type, "options": opts})
    namespaces: list[dict[str, str]] = [{"type": "mount"}]
    for attr, oci_name in _NS_TYPES:
        v = getattr(spec.namespaces, attr)
        if v == "new":
            namespaces.append({"type": oci_name})
        elif v != "host":
            namespaces.append({"type": oci_name, "path": v})
    r = spec.resources
    resources: dict[str, Any] = {
        "devices": [{"allow": False, "access": "rwm"}] + [
            {"allow": True, "type": rule[0], "major": _dev_num(rule.split()[1].split(":")[0]),
             "minor": _dev_num(rule.split()[1].split(":")[1]), "access": rule.split()[2]}
            for rule in (*_cg.DEVICE_RULES, *r.device_rules)
        ],
    }
    if r.memory is not None:
        swap = r.memory_swap if r.memory_swap is not None else 2 * r.memory
        resources["memory"] = {"limit": r.memory, "swap": swap}
    if r.cpus is not None:
        resources["cpu"] = {"quota": max(1000, int(r.cpus * 100000)), "period": 100000}
    if r.cpu_shares:
        resources.setdefault("cpu", {})["shares"] = r.cpu_shares
    if r.pids is not None:
        resources["pids"] = {"limit": r.pids}
    cfg: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": p.terminal,
            "user": {"uid": user.uid, "gid": user.gid,
                     "additionalGids": list(user.groups)},
            "args": list(p.args),
            "env": env,
            "cwd": p.cwd,
            "capabilities": {"bounding": caps, "effective": granted, "permitted": granted,
                             "inheritable": [], "ambient": []},
            "rlimits": [{"type": x.type, "hard": _rlim(x.hard), "soft": _rlim(x.soft)} for x in p.rlimits],
            "noNewPrivileges": p.no_new_privs,
        },
        "root": {"path": root_path, "readonly": spec.root.readonly},
        "hostname": spec.hostname,
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "resources": resources,
            "maskedPaths": list(spec.masked_paths),
            "readonlyPaths": list(spec.readonly_paths),
        },
    }
    if p.seccomp is not None:
        cfg["linux"]["seccomp"] = seccomp.to_oci(p.seccomp, p.capabilities)
    if spec.sysctls:
        cfg["linux"]["sysctl"] = dict(spec.sysctls)
    if spec.devices:
        cfg["linux"]["devices"] = [
            {"path": d.path, "type": d.type, "major": d.major, "minor": d.minor, "fileMode": d.mode,
             "uid": d.uid, "gid": d.gid}
            for d in spec.devices
        ]
    if sandbox_id:
        cfg["linux"]["cgroupsPath"] = f"/{_cg.PARENT}/{sandbox_id}"
    return cfg


def _rlim(v: int) -> int:
    """RLIM_INFINITY (-1 here) as the unsigned 64-bit value the runtime-spec wants."""
    return (1 << 64) - 1 if v < 0 else v


def _dev_num(s: str) -> int:
    return -1 if s == "*" else int(s)


def to_oci_bundle(spec: Spec, directory: str | os.PathLike[str], *, sandbox_id: str = "") -> Path:
    """Write *spec* as an OCI bundle in *directory*; returns the ``config.json`` path.

    A plain root is referenced by its absolute path; an overlay root by ``rootfs`` (an empty
    directory made here), which must be mounted before the runtime runs (``run_oci`` does).
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    if spec.root.is_overlay:
        (d / "rootfs").mkdir(exist_ok=True)
        root_path = "rootfs"
    else:
        assert spec.root.path is not None
        root_path = os.path.abspath(spec.root.path)
    cfg = oci_config(spec, root_path=root_path, sandbox_id=sandbox_id or spec.id)
    path = d / "config.json"
    path.write_text(json.dumps(cfg, indent=2) + "\n")
    return path


def run_oci(
    spec: Spec,
    runtime: str,
    state: StateRoot,
    *,
    stdout: Output = None,
    stderr: Output = None,
    stdin: Input = None,
    timeout: float | None = None,
) -> Result:
    """Run *spec* with the OCI runtime *runtime* (e.g. ``runc``) and report like ``Executor.run``."""
    return start_oci(spec, runtime, state, stdout=stdout, stderr=stderr, stdin=stdin).wait(timeout)


def start_oci(
    spec: Spec,
    runtime: str,
    state: StateRoot,
    *,
    stdout: Output = None,
    stderr: Output = None,
    stdin: Input = None,
) -> Sandbox:
    """Start *spec* with the OCI runtime; the handle's ``pid`` is the container's init (signal it
    with ``kill``), ``wait`` reports the exit status and OOM, then removes the bundle."""
    if spec.process.terminal:
        raise SandboxError("a terminal (-t) is not supported with --runtime")
    runtime_path = shutil.which(runtime) or runtime
    if not os.access(runtime_path, os.X_OK) or os.path.isdir(runtime_path):
        raise SandboxError.not_found(f"OCI runtime {runtime!r} not found")
    sid = spec.id or os.urandom(8).hex()
    bundle = state.run / sid
    bundle.parent.mkdir(parents=True, exist_ok=True)
    bundle.mkdir()
    runc_root = state.run / ".runc"
    stdio: Stdio | None = None
    try:
        to_oci_bundle(spec, bundle, sandbox_id=sid)
        data = overlay_lowers(spec, bundle) if spec.root.is_overlay else ""
        stdio = Stdio(stdin, stdout, stderr, terminal=False)
        status_r, status_w = os.pipe()
        err_r, err_w = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the runtime's supervisor
            _oci_main(spec, runtime_path, str(runc_root), bundle, sid, data, stdio, status_w, err_w, parent)
        os.close(status_w)
        os.close(err_w)
        stdio.after_fork()
        line = read_line(status_r)
        err = read_to_eof(err_r)
        os.close(err_r)
        if not line:
            os.waitpid(pid, 0)
            os.close(status_r)
            _raise_runtime_error(err.decode(errors="replace"))
        handle = _OciHandle(id=sid, pid=int(line), run_dir=bundle, cgroup=None, helper=pid,
                            status_fd=status_r, stdio=stdio)
        handle._status_buf = line
        return handle
    except BaseException:
        if stdio is not None:
            stdio.close_all()
        shutil.rmtree(bundle, ignore_errors=True)
        _remove_empty_parents()
        raise


class _OciHandle(Sandbox):
    def _parse_status(self) -> int:
        parts = self._status_buf.decode().split()
        if len(parts) < 3:
            raise SandboxError("the OCI runtime supervisor died before reporting an exit status")
        self._oom = parts[2] == "1"
        return int(parts[1])

    def wait(self, timeout: float | None = None) -> Result:
        try:
            res = super().wait(timeout)
        finally:
            _remove_empty_parents()
        if getattr(self, "_oom", False) and not res.oom_killed:
            res = Result(res.exit_status, oom_killed=True, signal=res.signal, timed_out=res.timed_out)
            self._result = res
        return res


def _raise_runtime_error(msg: str) -> None:
    low = msg.lower()
    if "executable file not found" in low or "no such file or directory" in low and "exec" in low:
        raise CommandNotFound(msg)
    if "permission denied" in low and "exec" in low:
        raise CommandNotExecutable(msg)
    raise SandboxError(msg or "the OCI runtime failed")


def _runtime_log_error(log: Path) -> str:
    msg = ""
    with contextlib.suppress(OSError):
        for line in log.read_text().splitlines():
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if rec.get("level") in ("error", "fatal"):
                    msg = str(rec.get("msg", ""))
    return msg


def _oci_main(
    spec: Spec, runtime: str, runc_root: str, bundle: Path, sid: str, data: str, stdio: Stdio,
    status_w: int, err_w: int, parent: int,
) -> None:  # pragma: no cover - forked supervisor
    code = 0
    try:
        s = sc.real()
        s.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)
        sc.private_mount_namespace(s)
        if spec.root.is_overlay:
            _rootfs.mount_root(s, spec.root, str(bundle / "rootfs"), str(bundle), data)
        s.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
        stdio.in_child()
        log = bundle / "runtime.log"
        base = [runtime, "--root", runc_root, "--log", str(log), "--log-format", "json"]
        pidfile = bundle / "init.pid"
        created = subprocess.run(
            [*base, "create", "--bundle", str(bundle), "--pid-file", str(pidfile), sid],
            stdin=0, stdout=1, stderr=subprocess.DEVNULL, close_fds=True,
            preexec_fn=sc.default_libc_signals,  # runc passes an ignored signal on to the process
        )
        if created.returncode != 0:
            os.write(err_w, (_runtime_log_error(log) or f"{runtime} create failed").encode())
            subprocess.run([*base, "delete", "--force", sid], capture_output=True)
            os._exit(1)
        cpid = int(pidfile.read_text())
        started = subprocess.run([*base, "start", sid], stdin=subprocess.DEVNULL, capture_output=True)
        if started.returncode != 0:
            os.write(err_w, (_runtime_log_error(log) or f"{runtime} start failed").encode())
            subprocess.run([*base, "delete", "--force", sid], capture_output=True)
            os._exit(1)
        os.close(err_w)
        for fd in (0, 1, 2):
            os.close(fd)
        os.write(status_w, f"{cpid}\n".encode())
        while True:
            try:
                _, status = os.waitpid(cpid, 0)
                break
            except InterruptedError:
                continue
        oom = _cg.Cgroup(id=sid, memory=_memory_dir(sid)).oom_killed()
        subprocess.run([*base, "delete", "--force", sid], capture_output=True)
        os.write(status_w, f"{status}\n{1 if oom else 0}\n".encode())
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.write(err_w, f"{type(e).__name__}: {e}".encode())
        code = 1
    finally:
        os._exit(code)


def _memory_dir(sid: str) -> str | None:
    layout = _cg.detect()
    mnt = layout.v1.get("memory") or (layout.v2 if "memory" in layout.v2_controllers else None)
    return os.path.join(mnt, _cg.PARENT, sid) if mnt else None


def _remove_empty_parents() -> None:
    layout = _cg.detect()
    for mnt in {*layout.v1.values(), *([layout.v2] if layout.v2 else [])}:
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(mnt, _cg.PARENT))

