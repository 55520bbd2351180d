"""``stats`` and ``update`` (also ``container stats|update``): parse, library calls, render
Docker's table (``builder.runtime.containers.stats`` does the sampling and the arithmetic)."""

from __future__ import annotations

import sys
import time
from typing import Any

from builder.base.errors import BuildError
from builder.base.units import binary_size, human_size
from builder.cli import flags
from builder.cli import format as fmt_

DEFAULT_FORMAT = ("table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}"
                  "\t{{.BlockIO}}\t{{.PIDs}}")
HEADERS = {"ID": "CONTAINER ID", "Container": "CONTAINER", "Name": "NAME", "CPUPerc": "CPU %",
           "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %", "NetIO": "NET I/O", "BlockIO": "BLOCK I/O",
           "PIDs": "PIDS"}


def row(ref: str, s: dict[str, Any]) -> dict[str, Any]:
    """A ``docker stats`` row (the fields ``--format`` templates name)."""
    from builder.runtime.containers.stats import figures
    f = figures(s)  # a stopped container's zero sample gives Docker's 0.00% and 0B rows
    return {
        "Container": ref,
        "ID": str(s.get("id", ""))[:12],
        "Name": str(s.get("name", "")).lstrip("/"),
        "CPUPerc": f"{f.cpu_percent:.2f}%",
        "MemUsage": f"{binary_size(f.mem_usage)} / {binary_size(f.mem_limit)}",
        "MemPerc": f"{f.mem_percent:.2f}%",
        "NetIO": f"{human_size(f.net_rx)} / {human_size(f.net_tx)}",
        "BlockIO": f"{human_size(f.block_read)} / {human_size(f.block_write)}",
        "PIDs": str(f.pids),
    }


def _render(fmt: str | None, rows: list[dict[str, Any]]) -> str:
    return fmt_.format_rows(fmt or DEFAULT_FORMAT, rows, HEADERS, type_name="*container.statsContext")


@flags.command("stats")
@flags.option("-a", "--all", "all_", is_flag=True, help="Show all containers (default shows just running).")
@flags.option("--format", "fmt", default=None, help="'table', 'json' or a {{.Field}} template.")
@flags.option("--no-stream", is_flag=True, help="Disable streaming stats and only pull the first result.")
@flags.option("--no-trunc", is_flag=True, help="Do not truncate output.")
@flags.argument("containers", nargs=-1)
@flags.pass_obj
def stats(obj: Any, all_: bool, fmt: str | None, no_stream: bool, no_trunc: bool,
          containers: tuple[str, ...]) -> None:
    """Display a live stream of container(s) resource usage statistics."""
    from builder.runtime.containers import lifecycle
    from builder.runtime.containers import stats as lib
    root = obj.state
    if fmt == "table":
        fmt = DEFAULT_FORMAT

    def targets() -> list[tuple[str, str]]:
        if containers:
            out = []
            for ref in containers:
                try:
                    out.append((ref, lifecycle.get(root, ref).id))
                except BuildError as e:
                    flags.echo(f"Error: {e}", err=True)
                    sys.exit(1)
            return out
        return [(c.id[:12], c.id) for c in lifecycle.list_containers(root, all=all_)]

    def sample_all(previous: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for _ref, cid in shown:
            try:
                c = lifecycle.get(root, cid)
            except BuildError:
                continue  # removed meanwhile
            out[cid] = lib.sample(c, previous.get(cid))
        return out

    def draw(samples: dict[str, dict[str, Any]]) -> str:
        rows = []
        for ref, cid in shown:
            if cid in samples:
                r = row(ref, samples[cid])
                if no_trunc:
                    r["ID"] = cid
                rows.append(r)
        return _render(fmt, rows)

    shown = targets()
    previous = sample_all({})
    if no_stream:
        # Docker's --no-stream waits for a sample with a previous one, so CPU % means something
        time.sleep(lib.INTERVAL)
        flags.echo(draw(sample_all(previous)))
        return
    try:
        while True:
            time.sleep(lib.INTERVAL)
            if not containers:
                shown = targets()
            current = sample_all(previous)
            screen = draw(current)
            if sys.stdout.isatty():
                flags.echo("\033[2J\033[H", nl=False)  # Docker's redraw: clear and home
            flags.echo(screen)
            previous = current
    except KeyboardInterrupt:
        # Ctrl-C ends the stream without a word; docker stats dies of the SIGINT (a shell's 130)
        sys.exit(130)


def _size(ctx: flags.Context, param: flags.Parameter, value: str | None) -> int | None:
    from builder.runtime.containers.options import parse_bytes
    if value is None or value == "":
        return None
    if value.strip() == "-1" and param.name == "memory_swap":
        return -1
    try:
        return parse_bytes(value, what=str(param.name).replace("_", "-"))
    except BuildError as e:
        raise flags.BadParameter(str(e)) from None


def _cpus(ctx: flags.Context, param: flags.Parameter, value: str | None) -> int | None:
    from builder.runtime.containers.options import parse_cpus
    if value is None:
        return None
    try:
        return parse_cpus(value)
    except BuildError as e:
        raise flags.BadParameter(str(e)) from None


def _restart(ctx: flags.Context, param: flags.Parameter, value: str | None) -> Any:
    from builder.runtime.containers.options import RestartPolicy
    if value is None:
        return None
    try:
        return RestartPolicy.parse(value)
    except BuildError as e:
        raise flags.BadParameter(str(e)) from None


@flags.command("update")
@flags.option("-m", "--memory", callback=_size, default=None, help="Memory limit.")
@flags.option("--memory-swap", callback=_size, default=None,
              help="Swap limit equal to memory plus swap: -1 to enable unlimited swap.")
@flags.option("--cpus", callback=_cpus, default=None, help="Number of CPUs.")
@flags.option("-c", "--cpu-shares", type=int, default=None, help="CPU shares (relative weight).")
@flags.option("--pids-limit", type=int, default=None, help="Tune container pids limit (set -1 for unlimited).")
@flags.option("--restart", callback=_restart, default=None, help="Restart policy to apply when a container exits.")
@flags.argument("containers", nargs=-1, required=True)
@flags.pass_obj
def update(obj: Any, memory: int | None, memory_swap: int | None, cpus: int | None, cpu_shares: int | None,
           pids_limit: int | None, restart: Any, containers: tuple[str, ...]) -> None:
    """Update configuration of one or more containers."""
    from builder.runtime.containers import stats as lib
    change = lib.Update(memory=memory, memory_swap=memory_swap, nano_cpus=cpus, cpu_shares=cpu_shares,
                        pids_limit=pids_limit, restart_policy=restart)
    if change.empty:
        flags.echo("Error: you must provide one or more flags when using this command\n"
                   "See 'pybuild update --help'.", err=True)
        sys.exit(1)
    failed = False
    for ref in containers:
        try:
            _c, warnings = lib.update(obj.state, ref, change)
        except BuildError as e:
            flags.echo(f"Error: {e}", err=True)
            failed = True
            continue
        for w in warnings:
            flags.echo(f"WARNING: {w}", err=True)
        flags.echo(ref)
    if failed:
        sys.exit(1)
