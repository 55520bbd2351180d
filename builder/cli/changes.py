"""``diff``, ``export`` and ``commit`` (also under ``container``): parse, one call to
``builder.runtime.containers.changes``, render as Docker's CLI does.
"""

from __future__ import annotations

from typing import Any

from builder.cli import flags
from builder.cli.format import output_stream


def _root(obj: Any) -> Any:
    return obj.state


@flags.command("diff")
@flags.argument("container")
@flags.pass_obj
def diff(obj: Any, container: str) -> None:
    """Inspect changes to files or directories on a container's filesystem."""
    from builder.runtime.containers import changes

    for change in changes.changes(_root(obj), container):
        flags.echo(f"{changes.KIND_LETTERS[change['Kind']]} {change['Path']}")


@flags.command("export")
@flags.argument("container")
@flags.option("-o", "--output", default=None, help="Write to a file, instead of STDOUT")
@flags.pass_obj
def export(obj: Any, container: str, output: str | None) -> None:
    """Export a container's filesystem as a tar archive."""
    from builder.runtime.containers import changes

    root = _root(obj)
    with output_stream(output, failure="failed to export container: ") as out:
        changes.export(root, container, out)


@flags.command("commit")
@flags.argument("container")
@flags.argument("repository", required=False)
@flags.option("-a", "--author", default="", help='Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")')
@flags.option("-c", "--change", "change", multiple=True, help="Apply Dockerfile instruction to the created image")
@flags.option("-m", "--message", default="", help="Commit message")
@flags.option("-p", "--pause", is_flag=True, default=True, help="Pause container during commit (default true)")
@flags.pass_obj
def commit(obj: Any, container: str, repository: str | None, author: str, change: tuple[str, ...],
           message: str, pause: bool) -> None:
    """Create a new image from a container's changes."""
    from builder.runtime.containers import changes

    flags.echo(changes.commit(_root(obj), container, repository, message=message, author=author,
                              changes=change, pause=pause))
