"""Several site folders for `deploy` and `upgrade`: the canary first, then the others."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from telecentre_ctl.errors import EXIT_OK
from telecentre_ctl.output import emit_json, say

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:
    from telecentre_ctl.fleet import SiteRun
    from telecentre_ctl.site import Site


def fleet_options(command: F) -> F:
    """--parallel and --keep-going, for the commands that take several site folders."""
    command = click.option(
        "--keep-going",
        is_flag=True,
        help="With several sites: carry on with the others after a site fails.",
    )(command)
    return click.option(
        "--parallel",
        type=click.IntRange(1, 32),
        default=4,
        show_default=True,
        metavar="N",
        help="With several sites: how many run at once after the canary (the first given).",
    )(command)


def run_sites(
    command: str,
    sites: list[Site],
    options: list[str],
    parallel: int,
    keep_going: bool,
    as_json: bool,
) -> None:
    """Runs `command` on every site (already validated) and exits with the worst code."""
    from telecentre_ctl import fleet

    def event(kind: str, run: SiteRun) -> None:
        if kind == "start":
            say(f"{run.name}: {command} started" + (" (canary)" if run.canary else ""))
        else:
            say(f"{run.name}: {run.state} in {run.seconds:.0f} s; log: {run.log}")

    runs = [fleet.SiteRun(site_dir=s.dir, name=s.name) for s in sites]
    say(
        f"{command} of {len(runs)} sites: {runs[0].name} first (canary), then "
        f"{parallel} at a time" + ("" if keep_going else "; the first failure stops the rest")
    )
    fleet.run_fleet(
        runs,
        fleet.subprocess_runner(command, options),
        parallel=parallel,
        keep_going=keep_going,
        on_event=event,
    )
    say(fleet.summary_table(runs))
    code = fleet.worst([r.exit_code for r in runs])
    if as_json:
        emit_json({"command": command, "exit_code": code, "sites": [r.as_data() for r in runs]})
    if code != EXIT_OK:
        raise click.exceptions.Exit(code)
