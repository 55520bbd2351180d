"""``pybuild run`` in the foreground (issue 4): an image from the store run once on the execution core.

Lean on purpose (no container records, no network setup): flag parsing, one ``Spec``, one run.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import click

from builder.errors import SandboxError

_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
              signal.SIGUSR2)
_UNITS = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_bytes(text: str) -> int:
    """Docker's memory sizes: ``64m``, ``1g``, ``512k``, ``1048576``, ``1.5g``."""
    t = text.strip().lower()
    if len(t) > 1 and t.endswith("b") and t[-2] in "kmgt":
        t = t[:-1]
    unit = 1
    if t and t[-1] in _UNITS:
        unit, t = _UNITS[t[-1]], t[:-1]
    try:
        value = float(t)
    except ValueError:
        raise SandboxError(f"invalid size: {text!r}") from None
    if value < 0:
        raise SandboxError(f"invalid size: {text!r}")
    return int(value * unit)


def read_env_file(path: str) -> list[str]:
    """``--env-file``: KEY=VAL lines; ``#`` comments and blanks skipped; a bare KEY takes ours."""
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as e:
        raise SandboxError(f"open {path}: {e.strerror}") from None
    out: list[str] = []
    for n, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        key = s.split("=", 1)[0]
        if not key or any(c.isspace() for c in key):
            raise SandboxError(f"{path}:{n}: invalid environment variable {key!r}")
        out.extend(_env_item(s))
    return out


def _env_item(item: str) -> list[str]:
    if "=" in item:
        return [item]
    value = os.environ.get(item)
    return [f"{item}={value}"] if value is not None else []


def command_line(config: dict[str, Any], args: tuple[str, ...], entrypoint: str | None) -> tuple[str, ...]:
    """Docker's Entrypoint/Cmd interplay: ``--entrypoint`` drops the image's Cmd."""
    if entrypoint is not None:
        ep = [entrypoint] if entrypoint else []
        cmd = list(args)
    else:
        ep = list(config.get("Entrypoint") or [])
        cmd = list(args) if args else list(config.get("Cmd") or [])
    final = tuple(ep + cmd)
    if not final:
        raise SandboxError("no command specified")
    return final


def merge_env(image_env: list[str], extra: list[str]) -> tuple[str, ...]:
    env: dict[str, str] = {}
    for item in [*image_env, *extra]:
        k, _, v = item.partition("=")
        env[k] = v
    return tuple(f"{k}={v}" for k, v in env.items())


def _refuse(flag: str) -> None:
    raise SandboxError(f"{flag} is not supported by the foreground run yet (it comes with containers)")


@click.command("run", context_settings={"allow_interspersed_args": False})
@click.option("--rm", is_flag=True, help="Remove the container's writable layer when it exits (always done).")
@click.option("-i", "--interactive", is_flag=True, help="Keep STDIN open.")
@click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY.")
@click.option("-e", "--env", multiple=True, help="Set environment variables.")
@click.option("--env-file", multiple=True, help="Read a file of environment variables.")
@click.option("-w", "--workdir", default=None, help="Working directory inside the container.")
@click.option("-u", "--user", default=None, help="Username or UID (<name|uid>[:<group|gid>]).")
@click.option("--entrypoint", default=None, help="Overwrite the image's ENTRYPOINT.")
@click.option("--hostname", default=None, help="Container host name.")
@click.option("--network", default="none", help="none (default) or host.")
@click.option("-m", "--memory", default=None, help="Memory limit (e.g. 64m).")
@click.option("--cpus", type=float, default=None, help="Number of CPUs.")
@click.option("--pids-limit", type=int, default=None, help="Process limit (-1: unlimited).")
@click.option("--read-only", is_flag=True, help="Mount the root filesystem read-only.")
@click.option("--cap-add", multiple=True, help="Add Linux capabilities.")
@click.option("--cap-drop", multiple=True, help="Drop Linux capabilities.")
@click.option("--runtime", default=None, help="An OCI runtime (e.g. runc) to run the bundle with.")
@click.option("-d", "--detach", is_flag=True, hidden=True)
@click.option("--name", default=None, hidden=True)
@click.option("-p", "--publish", multiple=True, hidden=True)
@click.option("-v", "--volume", multiple=True, hidden=True)
@click.option("--mount", multiple=True, hidden=True)
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def run(obj: Any, /, **kw: Any) -> None:
    """Run a command in a new container from IMAGE, in the foreground."""
    for flag, key in (("--detach", "detach"), ("--name", "name"), ("--publish", "publish"),
                      ("--volume", "volume"), ("--mount", "mount")):
        if kw[key]:
            _refuse(flag)
    if kw["network"] not in ("none", "host"):
        _refuse(f"--network {kw['network']}")
    sys.exit(_run(obj.state, kw))


def _run(state: Any, kw: dict[str, Any]) -> int:
    import shutil

    from builder.rootfs import LayerCache, image_layers, prepare_root
    from builder.sandbox.etc import etc_mounts
    from builder.sandbox.executor import Executor
    from builder.sandbox.spec import (
        Namespaces,
        Process,
        Resources,
        Spec,
        capabilities,
        default_mounts,
    )
    from registry.errors import RegistryError
    from registry.store import Store

    try:
        store = Store(state.store)
        image = store.resolve(kw["image"])
        layer_dirs = image_layers(store, image, LayerCache(state))
    except RegistryError as e:
        raise SandboxError(f"Unable to find image '{kw['image']}' locally: {e}") from None
    config = image.config.config
    extra: list[str] = []
    for f in kw["env_file"]:
        extra.extend(read_env_file(f))
    for item in kw["env"]:
        extra.extend(_env_item(item))
    sid = os.urandom(32).hex()
    host_net = kw["network"] == "host"
    hostname = kw["hostname"] or (os.uname().nodename if host_net else sid[:12])
    env = list(config.get("Env") or [])
    if not any(e.startswith("PATH=") for e in env + extra):
        env.insert(0, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    extra = [f"HOSTNAME={hostname}"] + extra
    if kw["tty"]:
        extra = ["TERM=xterm"] + extra
    process = Process(
        args=command_line(config, tuple(kw["command"]), kw["entrypoint"]),
        env=merge_env(env, extra),
        cwd=kw["workdir"] or config.get("WorkingDir") or "/",
        user=kw["user"] if kw["user"] is not None else (config.get("User") or ""),
        terminal=kw["tty"],
        capabilities=capabilities(add=tuple(kw["cap_add"]), drop=tuple(kw["cap_drop"])),
        no_new_privs=False,  # Docker's default (--security-opt no-new-privileges turns it on)
    )
    resources = Resources(memory=parse_bytes(kw["memory"]) if kw["memory"] else None,
                          cpus=kw["cpus"], pids=kw["pids_limit"])
    _reap_container_dirs(state.run)
    cdir = state.run / f"{sid[:16]}.ctr"
    try:
        root = prepare_root(layer_dirs, cdir, readonly=kw["read_only"])
        spec = Spec(process=process, root=root,
                    mounts=default_mounts() + etc_mounts(cdir / "etc", hostname=hostname, host_network=host_net),
                    namespaces=Namespaces(net="host" if host_net else "new"),
                    hostname=hostname, resources=resources, id=sid[:16])
        stdin: Any = 0 if kw["interactive"] else None
        with _SignalProxy() as proxy:
            if kw["runtime"]:
                from builder.sandbox.oci import start_oci

                handle = start_oci(spec, kw["runtime"], state, stdin=stdin)
            else:
                handle = Executor(state).start(spec, stdin=stdin, stdout=1 if not kw["tty"] else _out)
            proxy.attach(handle)
            return _wait(handle, tty=kw["tty"], interactive=kw["interactive"])
    finally:
        shutil.rmtree(cdir, ignore_errors=True)


def _reap_container_dirs(run: Any) -> None:
    """Writable layers of earlier runs whose process was killed before removing them."""
    import shutil
    import time

    try:
        entries = list(run.glob("*.ctr"))
    except OSError:
        return
    for d in entries:
        sandbox_dir = d.with_suffix("")
        try:
            if time.time() - d.stat().st_mtime < 60 or sandbox_dir.exists():
                continue
        except OSError:
            continue
        shutil.rmtree(d, ignore_errors=True)


def _out(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(1, view):]


class _SignalProxy:
    """Docker's sig-proxy: signals to us go to the container; those that come before it has
    started are kept and sent once it has (never lost, never killing us first)."""

    def __init__(self) -> None:
        self.handle: Any = None
        self.pending: list[int] = []
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _SignalProxy:
        for sig in _FORWARDED:
            self.previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, num: int, _frame: Any) -> None:
        if self.handle is None:
            self.pending.append(num)
        else:
            self.handle.kill(num)

    def attach(self, handle: Any) -> None:
        self.handle = handle
        while self.pending:
            handle.kill(self.pending.pop(0))

    def __exit__(self, *exc: object) -> None:
        for sig, old in self.previous.items():
            signal.signal(sig, old)


def _wait(handle: Any, *, tty: bool, interactive: bool) -> int:
    """Relay a terminal if asked, wait, return the exit status."""
    restore = _terminal(handle, interactive) if tty else None
    try:
        result = handle.wait()
    finally:
        if restore is not None:
            restore()
    return int(result.exit_status)


def _terminal(handle: Any, interactive: bool) -> Any:
    """Raw mode on our terminal, its size on the container's, SIGWINCH followed; returns an undo."""
    import termios
    import tty as ttymod

    from builder.syscalls import real

    stdio = handle._stdio  # relay_in: our stdin, read by the handle's pump into the pty
    if handle.pty_master is None or not os.isatty(0):
        return None

    def resize(*_: Any) -> None:
        handle.resize(*real().get_winsize(0))

    resize()
    signal.signal(signal.SIGWINCH, resize)
    if interactive:
        stdio.relay_in = 0
    saved = termios.tcgetattr(0)
    ttymod.setraw(0)

    def undo() -> None:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, signal.SIG_DFL)

    return undo


def main() -> None:  # pragma: no cover - ``python -m builder.cli.run``
    """Entry point for ``python -m builder.cli.run [--root DIR] ARGS…`` (the lean foreground run)."""
    from builder.cli import Globals
    from builder.errors import BuildError

    argv = sys.argv[1:]
    root = None
    if len(argv) >= 2 and argv[0] == "--root":
        root, argv = argv[1], argv[2:]

    try:
        run.main(args=argv, prog_name="pybuild run", obj=Globals(root=root, debug=False),
                 standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(125)
    except BuildError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
