"""``run``, ``create``, ``exec`` and ``cp``: the container commands with many flags, apart from
the listing and lifecycle verbs of ``builder.cli.containers``. Parse, one library call, render.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from builder.base.errors import ContainerError
from builder.base.values import replace
from builder.cli import fail, flags

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from builder.runtime.containers.record import Container


def _root(obj: Any) -> Any:
    return obj.state


# -- run / create ------------------------------------------------------------------------------
def run_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Every ``run``/``create`` flag (Docker's names), applied bottom-up."""
    opts = [
        flags.option("--name", default=None, help="Assign a name to the container."),
        flags.option("-e", "--env", multiple=True, help="Set environment variables."),
        flags.option("--env-file", multiple=True, help="Read in a file of environment variables."),
        flags.option("-v", "--volume", "volumes", multiple=True, help="Bind mount a volume."),
        flags.option("--mount", "mounts", multiple=True, help="Attach a filesystem mount to the container."),
        flags.option("--tmpfs", multiple=True, help="Mount a tmpfs directory."),
        flags.option("-p", "--publish", multiple=True, help="Publish a container's port(s) to the host."),
        flags.option("-P", "--publish-all", is_flag=True, help="Publish all exposed ports to random ports."),
        flags.option("--network", "--net", "network", default=None, help="Connect a container to a network."),
        flags.option("--network-alias", "--net-alias", "network_aliases", multiple=True,
                     help="Add network-scoped alias for the container."),
        flags.option("--ip", default=None, help="IPv4 address (e.g., 172.30.100.104)."),
        flags.option("-w", "--workdir", default=None, help="Working directory inside the container."),
        flags.option("-u", "--user", default=None, help="Username or UID (format: <name|uid>[:<group|gid>])."),
        flags.option("--entrypoint", default=None, help="Overwrite the default ENTRYPOINT of the image."),
        flags.option("-i", "--interactive", is_flag=True, help="Keep STDIN open even if not attached."),
        flags.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY."),
        flags.option("-h", "--hostname", default=None, help="Container host name."),
        flags.option("-m", "--memory", default=None, help="Memory limit."),
        flags.option("--memory-swap", default=None,
                     help="Swap limit equal to memory plus swap: '-1' to enable unlimited swap."),
        flags.option("-c", "--cpu-shares", type=int, default=None, help="CPU shares (relative weight)."),
        flags.option("--cpus", default=None, help="Number of CPUs."),
        flags.option("--cpuset-cpus", default=None, help="CPUs in which to allow execution (0-3, 0,1)."),
        flags.option("--pid", default=None, help="PID namespace to use (host: the host's)."),
        flags.option("--pids-limit", type=int, default=None, help="Tune container pids limit (-1 for unlimited)."),
        flags.option("--read-only", is_flag=True, help="Mount the container's root filesystem as read only."),
        flags.option("--cap-add", multiple=True, help="Add Linux capabilities."),
        flags.option("--cap-drop", multiple=True, help="Drop Linux capabilities."),
        flags.option("--privileged", is_flag=True, help="Give extended privileges to this container."),
        flags.option("--init", is_flag=True, help="Run an init inside the container that forwards signals and reaps processes."),
        flags.option("--restart", default="no", help="Restart policy to apply when a container exits."),
        flags.option("--stop-signal", default=None, help="Signal to stop the container."),
        flags.option("--stop-timeout", type=int, default=None, help="Timeout (in seconds) to stop a container."),
        flags.option("-l", "--label", "labels", multiple=True, help="Set meta data on a container."),
        flags.option("--platform", default=None, help="Set platform if server is multi-platform capable."),
        flags.option("--pull", default="missing", help='Pull image before running ("always", "missing", "never").'),
        flags.option("--health-cmd", default=None, help="Command to run to check health."),
        flags.option("--health-interval", default=None, help="Time between running the check (ms|s|m|h)."),
        flags.option("--health-timeout", default=None, help="Maximum time to allow one check to run (ms|s|m|h)."),
        flags.option("--health-retries", type=int, default=None, help="Consecutive failures needed to report unhealthy."),
        flags.option("--health-start-period", default=None, help="Start period for the container to initialize."),
        flags.option("--no-healthcheck", is_flag=True, help="Disable any container-specified HEALTHCHECK."),
        flags.option("--runtime", default=None, help="An OCI runtime (e.g. runc) to run the container with."),
        flags.option("--security-opt", multiple=True,
                     help="Security options: seccomp=unconfined|builtin|PROFILE.json, no-new-privileges[=true|false], systempaths=unconfined."),
        flags.option("--add-host", "add_hosts", multiple=True,
                     help="Add a custom host-to-IP mapping (host:ip; ip may be host-gateway)."),
        flags.option("--dns", multiple=True, help="Set custom DNS servers."),
        flags.option("--dns-search", multiple=True, help="Set custom DNS search domains."),
        flags.option("--dns-option", "dns_options", multiple=True, help="Set DNS options."),
        flags.option("--ulimit", "ulimits", multiple=True, help="Ulimit options (name=soft[:hard])."),
        flags.option("--sysctl", "sysctls", multiple=True, help="Sysctl options (namespaced ones only)."),
        flags.option("--shm-size", default=None, help="Size of /dev/shm."),
        flags.option("--device", "devices", multiple=True,
                     help="Add a host device to the container (/dev/x[:/dev/y][:rwm])."),
        flags.argument("image"),
        flags.argument("command", nargs=-1, type=flags.UNPROCESSED),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _options(kw: dict[str, Any], *, detach: bool, rm: bool) -> Any:
    from builder.runtime.containers.create import RunOptions
    from builder.runtime.containers.security import IGNORED_SECURITY_OPTS

    for opt in kw["security_opt"]:
        if opt.partition("=")[0].partition(":")[0] in IGNORED_SECURITY_OPTS:
            flags.echo(f"WARNING: --security-opt {opt} is ignored: pybuild applies no AppArmor or "
                       "SELinux profile", err=True)

    return RunOptions(
        image=kw["image"], command=tuple(kw["command"]), name=kw["name"], detach=detach, rm=rm,
        env=kw["env"], env_files=kw["env_file"], volumes=kw["volumes"], mounts=kw["mounts"],
        tmpfs=kw["tmpfs"], publish=kw["publish"], publish_all=kw["publish_all"],
        network=kw["network"] or "", network_aliases=kw["network_aliases"], ip=kw["ip"],
        workdir=kw["workdir"], user=kw["user"], entrypoint=kw["entrypoint"],
        interactive=kw["interactive"], tty=kw["tty"], hostname=kw["hostname"], memory=kw["memory"],
        memory_swap=kw["memory_swap"], cpu_shares=kw["cpu_shares"], cpus=kw["cpus"],
        cpuset_cpus=kw["cpuset_cpus"], pid=kw["pid"],
        pids_limit=kw["pids_limit"], read_only=kw["read_only"],
        cap_add=kw["cap_add"], cap_drop=kw["cap_drop"], privileged=kw["privileged"], init=kw["init"],
        restart=kw["restart"], stop_signal=kw["stop_signal"], stop_timeout=kw["stop_timeout"],
        labels=kw["labels"], pull=kw["pull"], health_cmd=kw["health_cmd"],
        health_interval=kw["health_interval"], health_timeout=kw["health_timeout"],
        health_retries=kw["health_retries"], health_start_period=kw["health_start_period"],
        no_healthcheck=kw["no_healthcheck"], runtime=kw["runtime"], security_opt=kw["security_opt"],
        add_hosts=kw["add_hosts"],
        dns=kw["dns"], dns_search=kw["dns_search"], dns_options=kw["dns_options"], ulimits=kw["ulimits"],
        sysctls=kw["sysctls"], shm_size=kw["shm_size"], devices=kw["devices"],
        platform=kw["platform"],
    )


class _PullOutput:
    """What ``run``/``create`` show when the image has to be pulled: Docker's line, then the
    registry CLI's progress (bars on a terminal, plain lines otherwise), all on stderr."""

    def __init__(self) -> None:
        self.renderer: Any = None

    def announce(self, ref: str, missing: bool) -> None:
        from builder.cli.registry import Renderer

        if missing:
            flags.echo(f"Unable to find image '{ref}' locally", err=True)
        self.renderer = Renderer(verb="Pulling")

    def __call__(self, ev: Any) -> None:
        if self.renderer is not None:
            self.renderer(ev)

    def close(self) -> None:
        if self.renderer is not None:
            self.renderer.close()


@flags.command("run", interspersed=False, usage_status=125)
@flags.option("-d", "--detach", is_flag=True, help="Run container in background and print container ID.")
@flags.option("--rm", is_flag=True, help="Automatically remove the container when it exits.")
@flags.option("--detach-keys", default=None, help="Override the key sequence for detaching a container.")
@run_options
@flags.pass_obj
def run(obj: Any, /, detach: bool, rm: bool, detach_keys: str | None, **kw: Any) -> None:
    """Create and run a new container from an image."""
    from builder.runtime.containers import service

    o = _options(kw, detach=detach, rm=rm)
    root = _root(obj)
    if not detach:
        if o.tty and o.interactive:  # Docker's client refuses a tty without one, creating nothing
            from builder.cli.attach import check_tty

            check_tty(tty=True, stdin=True)
        if detach_keys is not None:  # refused before anything is created (Docker checks them when attaching)
            from builder.runtime.containers.attached import detach_keys as parse_keys

            parse_keys(detach_keys)
    pulled = _PullOutput()
    if not detach and o.interactive and o.tty and os.isatty(0) and o.restart in ("no", ""):
        # Docker's way: the container under a supervisor of its own, this terminal attached to it
        # (so that the detach keys leave it running)
        _run_attached(root, o, detach_keys, pulled)
    if detach or o.restart not in ("no", ""):
        try:
            c = service.run_detached(root, o, progress=pulled, on_pull=pulled.announce)
        finally:
            pulled.close()
        if detach:
            flags.echo(c.id)
            return
        # the restart policy outlives us: run detached, show this first run, exit with its code
        from builder.cli.containers import follow_first_run, started_ns

        sys.exit(follow_first_run(root, c.id, since_ns=started_ns(c)))
    sys.stdout.flush()

    def created(_c: Container) -> None:
        pulled.close()

    try:
        code = service.run_foreground(root, o, progress=pulled, on_pull=pulled.announce, on_created=created)
    finally:
        pulled.close()
    sys.exit(code)


def _run_attached(root: Any, o: Any, detach_keys: str | None, pulled: _PullOutput) -> None:
    from builder.cli.attach import session, window
    from builder.runtime.containers import attached

    keys = attached.detach_keys(detach_keys)
    o = replace(o, console_size=window())  # the pty is made at our size (Docker's ConsoleSize)
    try:
        c, sock = attached.run_connected(root, o, progress=pulled, on_pull=pulled.announce,
                                         on_created=lambda _c: pulled.close())
    finally:
        pulled.close()
    if session(sock, tty=True, stdin=True, detach_keys=keys)[0]:
        sys.exit(0)  # detached: the container goes on (Docker's `run -it` says nothing, exits 0)
    sys.exit(attached.exit_code(root, c.id))


@flags.command("create", interspersed=False, usage_status=125)
@flags.option("--rm", is_flag=True, help="Automatically remove the container when it exits.")
@run_options
@flags.pass_obj
def create(obj: Any, /, rm: bool, **kw: Any) -> None:
    """Create a new container (without starting it)."""
    from builder.runtime.containers import service

    pulled = _PullOutput()
    try:
        # not detached: docker create records the streams attached (a later start -a uses them)
        c = service.create(_root(obj), _options(kw, detach=False, rm=rm), progress=pulled,
                           on_pull=pulled.announce)
    finally:
        pulled.close()
    flags.echo(c.id)


# -- exec --------------------------------------------------------------------------------------
@flags.command("exec", interspersed=False)
@flags.option("-d", "--detach", is_flag=True, help="Detached mode: run command in the background.")
@flags.option("-i", "--interactive", is_flag=True, help="Keep STDIN open even if not attached.")
@flags.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY.")
@flags.option("-e", "--env", multiple=True, help="Set environment variables.")
@flags.option("--env-file", multiple=True, help="Read in a file of environment variables.")
@flags.option("-u", "--user", default=None, help="Username or UID (format: <name|uid>[:<group|gid>]).")
@flags.option("-w", "--workdir", default=None, help="Working directory inside the container.")
@flags.option("--privileged", is_flag=True, help="Give extended privileges to the command.")
@flags.option("--detach-keys", default=None, help="Override the key sequence for detaching a container.")
@flags.argument("container")
@flags.argument("command", nargs=-1, required=True, type=flags.UNPROCESSED)
@flags.pass_obj
def exec_(obj: Any, detach: bool, interactive: bool, tty: bool, env: tuple[str, ...],
          env_file: tuple[str, ...], user: str | None, workdir: str | None, privileged: bool,
          detach_keys: str | None, container: str, command: tuple[str, ...]) -> None:
    """Execute a command in a running container."""
    from builder.runtime.containers import execs, lifecycle
    from builder.runtime.containers.attached import detach_keys as parse_keys
    try:
        parse_keys(detach_keys, what="escape")
    except ContainerError as e:
        fail(str(e))  # dockerd refuses the exec: exit 1
    root = _root(obj)
    if not detach and tty and interactive and not os.isatty(0):
        # Docker's client looks the container up (so "No such container" comes first), then
        # checks the terminal before it creates the exec: a stopped container is "not a TTY" too
        from builder.cli.attach import check_tty

        lifecycle.get(root, container)
        check_tty(tty=True, stdin=True)
    c, process = execs.prepare(root, container, command, env=env, env_files=env_file, user=user,
                               workdir=workdir, tty=tty, privileged=privileged)
    if detach:
        execs.start_detached(root, c, process)
        return
    if tty and interactive and os.isatty(0):
        _exec_attached(root, c, process, detach_keys)
    saved = None
    if tty and interactive and os.isatty(0):
        import termios
        import tty as _tty

        saved = termios.tcgetattr(0)
        _tty.setraw(0, termios.TCSANOW)  # TCSAFLUSH would drop typed-ahead input
    try:
        h = execs.start(root, c, process, stdin=0 if interactive else None)
        if tty:
            from builder.runtime.containers.supervisor import follow_window_size

            follow_window_size(h)
        r = h.wait()
    finally:
        if saved is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, saved)
    sys.exit(r.exit_status)


def _exec_attached(root: Any, c: Any, process: Any, detach_keys: str | None) -> None:
    """``exec -it`` on a terminal: the process under a helper of its own, this terminal attached
    to it, so that the detach keys leave it running (Docker's client then says
    ``read escape sequence`` and exits 1)."""
    from builder.cli.attach import session, window
    from builder.runtime.containers import attached

    keys = attached.detach_keys(detach_keys, what="escape")
    sock = attached.exec_connected(root, c, process, console_size=window())
    detached, code = session(sock, tty=True, stdin=True, detach_keys=keys)
    if detached:
        flags.echo("read escape sequence", err=True)
        sys.exit(1)
    sys.exit(code if code is not None else 1)


# -- cp ----------------------------------------------------------------------------------------
@flags.command("cp")
@flags.option("-L", "--follow-link", is_flag=True, help="Always follow symbol link in SRC_PATH.")
@flags.option("-a", "--archive", is_flag=True, help="Archive mode (copy all uid/gid information).")
@flags.argument("src")
@flags.argument("dest")
@flags.pass_obj
def cp(obj: Any, follow_link: bool, archive: bool, src: str, dest: str) -> None:
    """Copy files/folders between a container and the local filesystem (``-`` for a tar stream)."""
    from builder.runtime.containers import copy, lifecycle
    root = _root(obj)

    def split(arg: str) -> tuple[str | None, str]:
        if arg.startswith(("/", ".")) or ":" not in arg:
            return None, arg
        name, _, path = arg.partition(":")
        return name, path

    sc, sp = split(src)
    dc, dp = split(dest)
    if (sc is None) == (dc is None):
        raise ContainerError.invalid("copying between containers or between two local paths is not supported: "
                             "one of SRC and DEST must be CONTAINER:PATH")
    if sc is not None:
        c = lifecycle.get(root, sc)
        copy.copy_from(root, c, sp, sys.stdout.buffer if dp == "-" else dp, follow=follow_link,
                       archive=archive)
    else:
        assert dc is not None
        c = lifecycle.get(root, dc)
        copy.copy_to(root, c, sys.stdin.buffer if sp == "-" else sp, dp)

