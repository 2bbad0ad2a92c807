"""telecentre-ctl upgrade: plan, guard, then move services to the catalogue's versions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from telecentre_ctl.cli.fleet import fleet_options
from telecentre_ctl.errors import (
    EXIT_OK,
    EXIT_UNREACHABLE,
    HostUnreachable,
    InvalidInput,
    OperationFailed,
)
from telecentre_ctl.output import emit_json, say

if TYPE_CHECKING:
    from telecentre_ctl.site import Site
    from telecentre_ctl.upgrade import Step


@click.command("upgrade")
@click.argument("site_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--service", "service", metavar="S", help="Only this service (default: all).")
@click.option(
    "--to",
    "to",
    metavar="VERSION",
    help="A version the catalogue entry knows (upgrade.known), instead of its pinned one.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan and results as JSON.")
@fleet_options
def upgrade(
    site_dirs: tuple[Path, ...],
    service: str | None,
    to: str | None,
    as_json: bool,
    parallel: int,
    keep_going: bool,
) -> None:
    """Move SITE_DIR's services from the versions their hosts run to the versions the
    catalogue pins (services/<name>/service.yml), one service at a time.

    \b
    First the plan (old -> new version per host and service) and the catalogue's rules:
    refused, with nothing changed (exit 2), a skipped major version where upstream forbids
    it (upgrade.major_steps: Nextcloud), a database engine's major version (its data files
    need a migration by hand: upgrade.migrate_major), a downgrade. Then, for each service,
    on its host: a restic safety snapshot of its volumes and database (refused before
    anything changes if the disks lack the space), the new image built or pulled, the
    switch, and a wait until it is healthy and answers through the proxy. If it does not,
    image and data are rolled back automatically, and the upgrade stops there (exit 1;
    `status` shows it). An upgrade interrupted midway (power cut, killed) is finished or
    rolled back by running it again.

    \b
    Several site folders: the first is the canary, upgraded alone; then the others,
    --parallel at a time; the first failure stops the sites not started yet unless
    --keep-going. One summary table on stderr, --json on stdout.
    Exit codes: 0 upgraded (or nothing to do), 1 failed and rolled back, 2 invalid input or
    refused by a rule (nothing touched), 3 a host unreachable.
    """
    options = [*(["--service", service] if service else []), *(["--to", to] if to else [])]
    if len(site_dirs) > 1:
        from telecentre_ctl.cli.fleet import run_sites

        sites = _checked_sites(site_dirs, service)
        run_sites("upgrade", sites, options, parallel, keep_going, as_json)
        return
    site = _checked_sites(site_dirs, service)[0]
    _upgrade_site(site, service, to, as_json)


def _checked_sites(site_dirs: tuple[Path, ...], service: str | None) -> list[Site]:
    from telecentre_ctl.errors import Problem
    from telecentre_ctl.site import did_you_mean, load_many

    sites = load_many(site_dirs)
    if service is None:
        return sites
    problems = []
    for site in sites:
        placed = sorted({s for names in site.placement().values() for s in names})
        if service not in placed:
            hint = did_you_mean(service, placed)
            problems.append(
                Problem(
                    str(site.dir / "site.yml"),
                    "services",
                    f"--service {service}: site {site.name} does not run it",
                    (hint + " " if hint else "") + f"it runs: {', '.join(placed)}",
                )
            )
    if problems:
        raise InvalidInput("nothing was changed", problems=problems)
    return sites


def _upgrade_site(site: Site, service: str | None, to: str | None, as_json: bool) -> None:
    from telecentre_ctl import upgrade

    if to is not None and service is None:
        raise InvalidInput("--to needs --service", fix="name the service: --service S --to V")
    running = upgrade.read_hosts(site)
    plan = upgrade.make_plan(site, running, service, to)
    say(plan.text())
    results: list[dict[str, Any]] = []
    failed: list[str] = []
    code = EXIT_OK
    for name, steps in _by_service(plan.todo):
        outcome = _run_service(site, steps)
        results.append(outcome.as_data())
        for o in outcome.outcomes:
            data = o.as_data()
            mark = "ok" if o.ok else "FAILED"
            say(f"  {o.host}/{name}: {mark}: {data.get('message') or o.status}")
            if not o.ok:
                failed.append(f"{o.host}/{name}: {data.get('message') or o.status}")
        code = outcome.exit_code
        if code != EXIT_OK:
            break
    if not plan.todo:
        say(f"{site.name}: every service already runs its pinned version")
    if as_json:
        emit_json(
            {"site": site.name, "exit_code": code, "plan": plan.as_data(), "upgrades": results}
        )
    if code == EXIT_UNREACHABLE:
        raise HostUnreachable(
            "upgrade stopped, a host is unreachable: " + "; ".join(failed),
            fix="check that the host answers SSH, then run the upgrade again (an interrupted "
            "upgrade is finished or rolled back by the next run)",
        )
    if code != EXIT_OK:
        raise OperationFailed(
            "upgrade stopped: " + "; ".join(failed),
            fix="the services that failed were put back as they were (image and data); read "
            "the message above and the log in SITE_DIR/logs, fix the version in the catalogue, "
            "then run the upgrade again",
        )


def _by_service(steps: list[Step]) -> list[tuple[str, list[Step]]]:
    grouped: dict[str, list[Step]] = {}
    for step in steps:
        grouped.setdefault(step.service, []).append(step)
    return list(grouped.items())


def _run_service(site: Site, steps: list[Step]) -> Any:
    import sys

    from telecentre_ctl import backup, runner, upgrade
    from telecentre_ctl.cli.deploy import ProgressView
    from telecentre_ctl.paths import PLAYBOOKS_DIR

    hosts = [s.host for s in steps]
    view = ProgressView(sys.stderr, hosts, runner.count_tasks(PLAYBOOKS_DIR / "upgrade.yml"))
    name = steps[0].service
    try:
        return backup.run_action(
            site,
            "upgrade",
            hosts=hosts,
            extravars=upgrade.playbook_vars(site, steps[0]),
            on_progress=view.update,
            on_start=lambda log: say(f"upgrading {name} on {', '.join(hosts)}; log: {log}"),
        )
    finally:
        view.close()


COMMANDS: list[click.Command] = [upgrade]
