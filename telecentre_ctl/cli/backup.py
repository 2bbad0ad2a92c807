"""telecentre-ctl backup / restore / drill: thin commands over telecentre_ctl.backup."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from telecentre_ctl.output import emit_json, say

if TYPE_CHECKING:
    from telecentre_ctl.backup import ActionResult
    from telecentre_ctl.site import Site

SITE_DIR = click.argument("site_dir", type=click.Path(path_type=Path, file_okay=False))
AS_JSON = click.option(
    "--json", "as_json", is_flag=True, help="Print the result as JSON on stdout."
)


def _run(site: Site, action: str, hosts: list[str], extravars: dict[str, str]) -> ActionResult:
    from telecentre_ctl import backup, runner
    from telecentre_ctl.cli.deploy import ProgressView
    from telecentre_ctl.paths import PLAYBOOKS_DIR

    view = ProgressView(sys.stderr, hosts, runner.count_tasks(PLAYBOOKS_DIR / f"{action}.yml"))
    try:
        return backup.run_action(
            site,
            action,
            hosts=hosts,
            extravars=extravars,
            on_progress=view.update,
            on_start=lambda log: say(f"{action} of {site.name} on {', '.join(hosts)}; log: {log}"),
        )
    finally:
        view.close()


def _report(result: ActionResult, site_dir: Path, as_json: bool) -> None:
    from telecentre_ctl import backup

    for outcome in result.outcomes:
        data = outcome.as_data()
        mark = "ok" if outcome.ok else "FAILED"
        say(f"  {outcome.host}: {mark}: {data.get('message') or outcome.status}")
    if as_json:
        emit_json(result.as_data())
    backup.raise_for(result, site_dir)


@click.command("backup")
@SITE_DIR
@click.option(
    "--now",
    is_flag=True,
    help="Back up now (what `backup` does; the flag is accepted for scripts that spell it).",
)
@click.option(
    "--print-recovery-sheet",
    "sheet",
    is_flag=True,
    help="Print the recovery sheet (with the repository key) on stdout and do nothing else.",
)
@AS_JSON
def backup_command(site_dir: Path, now: bool, sheet: bool, as_json: bool) -> None:
    """Back up SITE_DIR's hosts now, as the nightly timer does: database dumps and the
    services' volumes into the encrypted restic repository at site.yml's backup target,
    then the retention policy, and the repository check when a week has passed.

    \b
    Each host records its result in /var/lib/telecentre/backup/last-backup.json (what
    `status` shows). Refused, with exit 1 and a plain message: a missing or emptied data
    folder, a failed database dump, not enough space on the backup disk. Earlier
    snapshots are never touched by a failed backup.

    \b
    --print-recovery-sheet prints the page to keep on paper, away from the box: where
    the backups are, the repository key, and how to restore with restic alone. It holds
    the key: print it (e.g. `... --print-recovery-sheet | lp`), do not keep the output in
    a file or a log. telecentre-ctl reminds you until it has been printed once.
    Exit codes: 0 ok, 1 a backup failed, 2 invalid site, 3 a host unreachable.
    """
    from telecentre_ctl import backup
    from telecentre_ctl.secrets import read_secrets, vault_password_file
    from telecentre_ctl.site import load_site

    site = load_site(site_dir)
    password_file = vault_password_file(site.name)
    if sheet:
        secrets = read_secrets(site.dir, password_file)
        key = (secrets.get("backup") or {}).get("restic_password", "")
        click.echo(backup.recovery_sheet(site, key))
        earlier = backup.sheet_printed_on(password_file)
        backup.mark_sheet_printed(password_file)
        say(
            "the recovery sheet holds the backup key: print it and keep it away from the box; "
            "do not keep this output in a file or a log"
            + (f" (it was printed before, on {earlier})" if earlier else "")
        )
        return
    hosts = [h.name for h in site.hosts]
    result = _run(site, "backup", hosts, {})
    if backup.sheet_printed_on(password_file) is None:
        say(
            "note: the recovery sheet (the backup key on paper) was never printed for this "
            f"site: telecentre-ctl backup {site_dir} --print-recovery-sheet"
        )
    _report(result, site_dir, as_json)


@click.command("restore")
@SITE_DIR
@click.option("--service", "service", required=True, metavar="S", help="The service to restore.")
@click.option(
    "--snapshot",
    "snapshot",
    metavar="ID",
    help="Snapshot id (default: the latest nightly backup holding the service).",
)
@AS_JSON
def restore_command(site_dir: Path, service: str, snapshot: str | None, as_json: bool) -> None:
    """Restore service S of SITE_DIR from its backup, on the host that runs it.

    \b
    On the host: takes a safety snapshot of the service as it is now, checks the free
    space, stops the service, puts the restored volumes (and its database, from the
    dump) in place, starts it and waits until it is healthy. If anything fails, the data
    from before is put back and the service started again (exit 1); the safety snapshot
    stays in the repository either way.
    Exit codes: 0 restored and healthy, 1 failed (rolled back), 2 invalid input (nothing
    touched), 3 host unreachable.
    """
    from telecentre_ctl import backup
    from telecentre_ctl.site import load_site

    site = load_site(site_dir)
    hosts = backup.check_restore_request(site, service, snapshot)
    extravars = {"backup_restore_service": service}
    if snapshot:
        extravars["backup_restore_snapshot"] = snapshot
    result = _run(site, "restore", hosts, extravars)
    _report(result, site_dir, as_json)


@click.command("drill")
@SITE_DIR
@AS_JSON
def drill_command(site_dir: Path, as_json: bool) -> None:
    """Restore drill: prove that SITE_DIR's latest backup can be restored.

    \b
    On each host, the latest snapshot is restored into a scratch folder, every file is
    verified against the snapshot, each database dump is loaded into a scratch database,
    and the scratch copies are removed. The result goes where `status` reads it
    (/var/lib/telecentre/backup/last-drill.json). The hosts also run a drill every week.
    Exit codes: 0 passed, 1 failed, 2 invalid site, 3 a host unreachable.
    """
    from telecentre_ctl.site import load_site

    site = load_site(site_dir)
    result = _run(site, "drill", [h.name for h in site.hosts], {})
    _report(result, site_dir, as_json)


COMMANDS: list[click.Command] = [backup_command, restore_command, drill_command]
