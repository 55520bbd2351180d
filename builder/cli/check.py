"""``pybuild system check [--repair]``: flags in, one ``builder.imagebuild.fsck.check`` call, one line a
problem out; exit 1 while problems remain."""

from __future__ import annotations

import sys

from builder.cli import Globals, flags


@flags.command("check")
@flags.option("--repair", is_flag=True,
              help="Remove what nothing references (dead transfers' leftovers, unreferenced "
                   "blobs, stale cache records, killed builds' run dirs, half-unpacked layers).")
@flags.pass_obj
def check(g: Globals, repair: bool) -> None:
    """Check the state root: blobs, images, tags, build cache, run dirs."""
    from builder.imagebuild.fsck import check as run_check

    report = run_check(g.state, repair=repair)
    for p in report.repaired:
        flags.echo(f"repaired: {p}")
    for p in report.problems:
        flags.echo(str(p) + ("" if p.repairable else " (not repairable)"))
    if report.problems:
        n = len(report.problems)
        flags.echo(f"{n} problem{'s' if n != 1 else ''} found"
                   + ("" if repair else "; `pybuild system check --repair` removes what nothing references"),
                   err=True)
        sys.exit(1)
    flags.echo("ok" if not report.repaired else f"ok ({len(report.repaired)} repaired)")
