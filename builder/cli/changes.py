"""``diff``, ``export`` and ``commit`` (also under ``container``): parse, one call to
``builder.containers.changes``, render as Docker's CLI does.
"""

from __future__ import annotations

from typing import Any

import click


def _root(obj: Any) -> Any:
    return obj.state


class _CommitCommand(click.Command):
    """``-p``/``--pause`` is a boolean flag that also takes pflag's ``--pause=false``/``-p=false``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        out: list[str] = []
        for i, a in enumerate(args):
            if a == "--":
                out += args[i:]
                break
            flag, eq, value = a.partition("=")
            if eq and flag in ("-p", "--pause"):
                try:
                    on = click.BOOL.convert(value, None, ctx)
                except click.BadParameter:
                    raise click.UsageError(f'invalid argument "{value}" for "{flag}" flag: '
                                           "strconv.ParseBool: parsing: invalid syntax", ctx) from None
                a = "--pause" if on else "--no-pause"
            out.append(a)
        return super().parse_args(ctx, out)


@click.command("diff")
@click.argument("container")
@click.pass_obj
def diff(obj: Any, container: str) -> None:
    """Inspect changes to files or directories on a container's filesystem."""
    from builder.containers import changes

    for change in changes.changes(_root(obj), container):
        click.echo(f"{changes.KIND_LETTERS[change['Kind']]} {change['Path']}")


@click.command("export")
@click.argument("container")
@click.option("-o", "--output", default=None, help="Write to a file, instead of STDOUT")
@click.pass_obj
def export(obj: Any, container: str, output: str | None) -> None:
    """Export a container's filesystem as a tar archive."""
    from builder.cli.format import output_stream
    from builder.containers import changes

    root = _root(obj)
    with output_stream(output, failure="failed to export container: ") as out:
        changes.export(root, container, out)


@click.command("commit", cls=_CommitCommand)
@click.argument("container")
@click.argument("repository", required=False)
@click.option("-a", "--author", default="", help='Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")')
@click.option("-c", "--change", "change", multiple=True, help="Apply Dockerfile instruction to the created image")
@click.option("-m", "--message", default="", help="Commit message")
@click.option("-p", "--pause/--no-pause", default=True, help="Pause container during commit (default true)")
@click.pass_obj
def commit(obj: Any, container: str, repository: str | None, author: str, change: tuple[str, ...],
           message: str, pause: bool) -> None:
    """Create a new image from a container's changes."""
    from builder.containers import changes

    click.echo(changes.commit(_root(obj), container, repository, message=message, author=author,
                              changes=change, pause=pause))
