"""A RUN step in the sandbox: its spec (process, network, ``--mount``s, secrets) and its run.

The layer is what the process left in the overlay upper dir; what is mounted never reaches it,
so secrets and caches stay out of every layer. The empty mount points of the ``--mount``s
missing from the image do, as in BuildKit's layer, and so do those of the sandbox's own
(``/proc``, ``/dev``, ``/sys``, ``/etc/hosts``…: the directory of a file's stub).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import threading
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

from builder.base.binfmt import ensure
from builder.base.errors import BuildCancelled, BuildError, SandboxError, StepFailed
from builder.base.paths import in_root
from builder.core.rootfs import prepare_root
from builder.core.sandbox import seccomp
from builder.core.sandbox.executor import Executor
from builder.core.sandbox.spec import Mount, Process, Spec, build_namespaces, default_mounts
from builder.imagebuild.execute.inputs import LayerRef, StepInputs
from builder.imagebuild.execute.workspace import Workspace, layer_dirs
from builder.imagebuild.graph.ops import ExecSpec, MountSpec, Step
from builder.network.resolution import extra_hosts_lines

TYPE_CHECKING = False  # not ``typing``'s: a build loads no ``typing`` (~6 ms)
if TYPE_CHECKING:
    from builder.core.sandbox.spec import Mount

HOSTNAME = "buildkitsandbox"
TAIL = 20


class _Lines:
    """Splits output chunks into lines for progress, keeping the last ``TAIL`` for errors."""

    def __init__(self, log: Callable[[str], None], tail: deque[str] | None = None) -> None:
        self.log = log
        self.buf = b""
        self.tail: deque[str] = deque(maxlen=TAIL) if tail is None else tail
        self.lock = threading.Lock()

    def __call__(self, chunk: bytes) -> None:
        with self.lock:
            self.buf += chunk
            *lines, self.buf = self.buf.split(b"\n")
            for raw in lines:
                self._line(raw)

    def _line(self, raw: bytes) -> None:
        text = raw.decode(errors="replace").rstrip("\r")
        self.tail.append(text)
        self.log(text)

    def flush(self) -> None:
        with self.lock:
            if self.buf:
                self._line(self.buf)
                self.buf = b""


def _cache_dir(ws: Workspace, m: MountSpec) -> Path:
    base = ws.state.cache / "mounts"
    d = base / hashlib.sha256(m.id.encode()).hexdigest()[:32]
    if not d.is_dir():
        base.mkdir(parents=True, exist_ok=True)
        tmp = base / f".new-{os.getpid()}-{threading.get_ident()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        os.chown(tmp, m.uid or 0, m.gid or 0)
        os.chmod(tmp, m.mode if m.mode is not None else 0o755)
        try:
            os.rename(tmp, d)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another build made it first
    return d


@contextlib.contextmanager
def _locked(path: Path, *, wait: bool) -> Iterator[bool]:
    fd = os.open(str(path) + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            got = True
        except BlockingIOError:
            got = False
        yield got
    finally:
        os.close(fd)


def _host_tree(ws: Workspace, m: MountSpec, inputs: StepInputs, n: int) -> Path:
    """A plain directory holding the root of the stage or image a bind/cache mount reads from."""
    src = m.source
    assert src is not None
    if src.stage is not None:
        lay = inputs.stage_layers[src.stage]
    else:
        assert src.image is not None
        lay = LayerRef.of_image(src.image)
    dirs = layer_dirs(ws.state, ws.store, lay)
    if len(dirs) == 1:
        return dirs[0]  # bound read-only; a rw mount copies it first
    root = prepare_root(dirs, ws.dir / f"from{n}", overlay=False)
    assert root.path is not None
    return Path(root.path)


def _confined(base: Path, rel: str, what: str) -> Path:
    return in_root(base, rel) if rel else base


def build_mounts(ws: Workspace, step: Step, spec: ExecSpec, *, inputs: StepInputs,
                 stack: contextlib.ExitStack) -> tuple[list[Mount], list[str]]:
    """The sandbox mounts for *spec*'s ``--mount``s, and env entries of ``env=`` secrets."""
    mounts: list[Mount] = []
    env: list[str] = []
    ssh_n = 0
    for n, (path, content, mode) in enumerate(spec.files):
        fdir = ws.dir / "files"
        fdir.mkdir(exist_ok=True)
        f = fdir / str(n)
        f.write_text(content)
        os.chmod(f, mode)
        mounts.append(Mount(path, "bind", str(f), ("rbind", "ro", "nosuid", "nodev")))
    for n, m in enumerate(spec.mounts):
        if m.type == "tmpfs":
            opts = ["nosuid", "nodev"]
            if m.size:
                opts.append(f"size={m.size}")
            mounts.append(Mount(m.target, "tmpfs", "tmpfs", tuple(opts)))
        elif m.type == "secret":
            value = inputs.secrets.get(m.id)
            if value is None:
                if m.required:
                    raise BuildError(f"{step.location}: secret {m.id} not provided (--secret id={m.id},src=…)")
                continue
            if m.env:
                env.append(f"{m.env}={value.decode(errors='replace')}")
                if not m.target:
                    continue
            sdir = ws.dir / "secrets"
            sdir.mkdir(exist_ok=True, mode=0o700)
            f = sdir / str(n)
            fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(fd, "wb") as out:
                out.write(value)
            os.chown(f, m.uid or 0, m.gid or 0)
            os.chmod(f, m.mode if m.mode is not None else 0o400)
            mounts.append(Mount(m.target, "bind", str(f), ("rbind", "ro", "nosuid", "nodev", "noexec")))
        elif m.type == "ssh":
            # here, not at the top: its socket, selectors and subprocess (~10 ms) are for
            # ``RUN --mount=type=ssh`` only, not for every RUN a build executes
            from builder.imagebuild.execute import ssh

            target = m.target or ssh.default_target(ssh_n)
            if ssh_n == 0:
                env += ssh.auth_sock_env(spec.env, target)
            ssh_n += 1
            sock = ssh.mount_socket(sid=m.id, agents_by_id=inputs.ssh, required=m.required,
                                    uid=m.uid or 0, gid=m.gid or 0,
                                    mode=m.mode if m.mode is not None else 0o600, stack=stack,
                                    where=step.location)
            if sock is not None:
                mounts.append(Mount(target, "bind", sock, ("rbind", "rw", "nosuid", "nodev", "noexec")))
        elif m.type == "cache":
            if m.source is not None:
                src = _confined(_host_tree(ws, m, inputs, n), m.source.path, "cache source")
                d = ws.dir / f"cachecopy{n}"
                shutil.copytree(src, d, symlinks=True)
            else:
                d = _cache_dir(ws, m)
                if m.sharing == "locked":
                    stack.enter_context(_locked(d, wait=True))
                elif m.sharing == "private":
                    got = stack.enter_context(_locked(d, wait=False))
                    if not got:  # in use by another build: a throwaway one, as BuildKit does
                        d = ws.dir / f"private{n}"
                        d.mkdir()
            mounts.append(Mount(m.target, "bind", str(d), ("rbind", "rw")))
        elif m.type == "bind":
            assert m.source is not None
            if m.source.kind == "context":
                tree = ws.context
                assert tree is not None and tree.root is not None
                src = _confined(tree.root, m.source.path, "bind source")
            else:
                src = _confined(_host_tree(ws, m, inputs, n), m.source.path, "bind source")
            if not src.exists():
                raise BuildError.not_found(f"{step.location}: --mount source {m.source.path or '/'} not found")
            if not m.readonly:
                # rw: writes are discarded, so the process gets a copy
                copy = ws.dir / f"rw{n}"
                if src.is_dir():
                    shutil.copytree(src, copy, symlinks=True)
                else:
                    shutil.copy2(src, copy)
                src = copy
            mounts.append(Mount(m.target, "bind", str(src),
                                ("rbind", "ro" if m.readonly else "rw")))
        else:
            raise BuildError(f"{step.location}: unsupported --mount type {m.type}")
    return mounts, env


def _mount_points(mounts: list[Mount]) -> list[tuple[str, bool]]:
    """(target, is a file) of the mounts whose point is in the step's root: not under another
    one (``/dev/pts`` is under ``/dev``, a ``--mount`` under ``/proc`` is under ``/proc``)."""
    dests = ["/" + m.destination.strip("/") for m in mounts]
    out = []
    for m, d in zip(mounts, dests, strict=True):
        if d == "/":
            continue
        if any(o != d and d.startswith(o.rstrip("/") + "/") for o in dests):
            continue
        out.append((d, m.type == "bind" and not os.path.isdir(m.source)))
    return out


def _leave_mount_points(ws: Workspace, mounts: list[Mount]) -> None:
    """Make the missing mount points of the step's mounts in its root, so that the layer holds
    them, as BuildKit's does (Docker 20.10): runc's own (``/proc``, ``/dev``, ``/sys``; the
    ``/etc/hosts`` and ``/etc/resolv.conf`` binds) and the ``--mount``s. A directory target
    and its missing parents stay, each 0755 root:root; for a file (``/etc/hosts``, a file
    bind, a secret, an ssh socket) the parents stay and the empty stub file is made and
    removed (BuildKit's mount stub cleaner), so its directory is in the layer with a new
    mtime. The kernel copies up the existing parents, so they keep their owner and mode."""
    targets = _mount_points(mounts)
    if not targets or ws.stub_in_upper(targets):  # (most often: no mount needed)
        return

    def make(root: Path, _sources: list[Path]) -> None:
        for target, is_file in targets:
            parts = [c for c in target.split("/") if c]
            dirs = parts[:-1] if is_file else parts
            for i in range(1, len(dirs) + 1):
                p = in_root(root, "/" + "/".join(dirs[:i]))
                if os.path.lexists(p):
                    if not p.is_dir():
                        break  # the kernel reports it when the sandbox mounts
                    continue
                os.mkdir(p, 0o755)
                os.chmod(p, 0o755)
            else:
                if is_file:
                    stub = in_root(root, target)
                    if not os.path.lexists(stub) and stub.parent.is_dir():
                        stub.touch()
                        stub.unlink()

    ws.with_root(make)


def _etc_files(ws: Workspace, network: str, extra_hosts: tuple[str, ...] = ()) -> list[Mount]:
    etc = ws.dir / "etc"
    etc.mkdir(exist_ok=True)
    # BuildKit's file, to the byte: the sandbox's name on the localhost line
    hosts = f"127.0.0.1\tlocalhost {HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    if extra_hosts:  # the build's --add-host entries, Docker's ``ip<TAB>name``
        for e in extra_hosts:  # refused at the first RUN, in dockerd's words
            if not all(e.partition(":")[::2]):
                raise BuildError(f'bad format for add-host: "{e}"')
        hosts += extra_hosts_lines(extra_hosts)
    (etc / "hosts").write_text(hosts)
    resolv = ""
    if network == "host":
        with contextlib.suppress(OSError):
            resolv = Path("/etc/resolv.conf").read_text()
    (etc / "resolv.conf").write_text(resolv)
    return [Mount(f"/etc/{n}", "bind", str(etc / n), ("rbind", "ro", "nosuid", "nodev", "noexec"))
            for n in ("hosts", "resolv.conf")]


def run_exec(ws: Workspace, step: Step, spec: ExecSpec, inputs: StepInputs) -> None:
    """Run a RUN step in the sandbox over *ws*; raise ``StepFailed`` on a non-zero exit."""
    if spec.network not in ("default", "none", "host"):
        raise BuildError(f"{step.location}: unsupported network mode {spec.network}")
    lines = _Lines(inputs.log)
    err_lines = _Lines(inputs.log_stderr or inputs.log, tail=lines.tail)
    cancel = inputs.cancel
    with contextlib.ExitStack() as stack:
        mounts, secret_env = build_mounts(ws, step, spec, inputs=inputs, stack=stack)
        all_mounts = (*default_mounts(), *_etc_files(ws, spec.network, inputs.extra_hosts), *mounts)
        _leave_mount_points(ws, list(all_mounts))
        # Docker's default seccomp profile, as BuildKit applies it. --security=insecure does not
        # lift it: BuildKit wants the security.insecure entitlement for that, which we do not grant.
        # BuildKit's supplementary groups (memberships only, not the primary group) and its
        # no_new_privs (off)
        process = Process(args=spec.args, env=tuple(spec.env) + tuple(secret_env),
                          cwd=spec.cwd or "/", user=spec.user, seccomp=seccomp.default(),
                          primary_in_groups=False, no_new_privs=False)
        sandbox_spec = Spec(
            process=process,
            root=ws.root,
            mounts=all_mounts,
            namespaces=build_namespaces(spec.network),  # --isolation chroot: the host's
            hostname=HOSTNAME,
        )
        ex = Executor(ws.state)
        try:
            if ws.platform is not None:  # a foreign stage's binaries through the emulator
                ensure(ws.platform)
            box = ex.start(sandbox_spec, stdout=lines, stderr=err_lines)
        except SandboxError as e:
            code = getattr(e, "exit_code", 125)
            raise StepFailed(
                f"{step.location}: {step.name}: {e}", exit_status=code, location=step.location,
                log_tail=list(lines.tail)) from None
        done = threading.Event()

        def watch() -> None:
            # Ctrl-C or a failed sibling stage: stop this step's process too
            while not done.is_set():
                if cancel.wait(0.1):
                    box.kill(9)
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            result = box.wait()
        finally:
            done.set()  # the watcher notices within 0.1 s; not joined, so a step is not held up
            box.teardown()
        lines.flush()
        err_lines.flush()
    if cancel.is_set() and result.exit_status != 0:
        raise BuildCancelled(f"{step.location}: {step.name}: cancelled")
    if result.exit_status != 0:
        raise StepFailed(
            f"{step.location}: {step.name}: process did not complete successfully: "
            f"exit code: {result.exit_status}",
            exit_status=result.exit_status, location=step.location, log_tail=list(lines.tail))
