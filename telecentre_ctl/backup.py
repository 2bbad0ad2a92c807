"""Backups, restores and restore drills: what each host backs up, and running them.

The work happens on the hosts, in `telecentre-backup` (roles/backup/files), driven by one
JSON configuration per host computed here (`host_config`, given to the role through its
filter) so that the controller and the hosts agree by construction. The commands run
playbooks/backup.yml, restore.yml and drill.yml through the deploy runner (progress from
Ansible's events, secrets masked in the log) and read back the result each host records:

    /var/lib/telecentre/backup/last-backup.json   {"finished", "ok", "snapshot", "message"}
    /var/lib/telecentre/backup/last-drill.json    (same shape; `status` reads both)
    /var/lib/telecentre/backup/last-restore.json  (same, plus "service" and "safety")
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from telecentre_ctl.compose import DATA_DIR, OPT_DIR, database_of, db_identifier, image_ref
from telecentre_ctl.errors import (
    EXIT_OK,
    EXIT_UNREACHABLE,
    HostUnreachable,
    InvalidInput,
    OperationFailed,
)
from telecentre_ctl.paths import PLAYBOOKS_DIR

if TYPE_CHECKING:
    from telecentre_ctl.runner import HostProgress, RunResult
    from telecentre_ctl.site import Site

STATE_DIR = "/var/lib/telecentre/backup"
CONFIG_DIR = "/etc/telecentre/backup"
PASSWORD_FILE = f"{CONFIG_DIR}/restic.pass"
SFTP_KEY = f"{CONFIG_DIR}/id_ed25519"  # the host's own key for an sftp target
SCRIPT = "/usr/local/sbin/telecentre-backup"
RESULT_FILES = {
    "backup": "last-backup.json",
    "drill": "last-drill.json",
    "restore": "last-restore.json",
}
RECORD_KEYS = ("finished", "ok", "snapshot", "message")
SHEET_MARK = "recovery-sheet-printed"


# --------------------------------------------------------------------------- what to back up


def repository(target: str, site: str, host: str) -> str:
    """The restic repository of one host: a folder per site and host under the target,
    so that hosts never share a repository (nor its locks and retention)."""
    return f"{target.rstrip('/')}/{site}/{host}"


def local_target(target: str) -> str | None:
    """The folder whose free space bounds the repository, when it is on the host."""
    return (target.rstrip("/") or "/") if target.startswith("/") else None


def services_to_back_up(host_services: list[str], catalog: dict[str, Any]) -> list[dict[str, Any]]:
    """The host's services with data, in placement order: volume folders, database, live
    SQLite databases (copied through SQLite's backup API), and the commands run in the
    container before and after (e.g. Nextcloud's maintenance mode)."""
    found = []
    for name in host_services:
        spec = catalog[name].get("backup") or {}
        volumes = [f"{DATA_DIR}/{name}/{vol}" for vol in spec.get("volumes", [])]
        database = None
        if spec.get("database"):
            engine = database_of(catalog[name])
            if engine is None:
                raise ValueError(f"{name}: backup.database set but no postgres/mariadb in depends")
            database = {"engine": engine, "container": f"tc-{engine}", "name": db_identifier(name)}
        if volumes or database:
            entry: dict[str, Any] = {
                "name": name,
                "volumes": volumes,
                "database": database,
                "compose_file": f"{OPT_DIR}/{name}/compose.yml",
            }
            entry |= {key: spec[key] for key in ("before", "after") if spec.get(key)}
            if spec.get("sqlite"):
                entry["sqlite"] = [f"{DATA_DIR}/{name}/{path}" for path in spec["sqlite"]]
            if spec.get("rebuilt"):
                entry["rebuilt"] = [f"{DATA_DIR}/{name}/{vol}" for vol in spec["rebuilt"]]
            if spec.get("drill"):
                mounts = catalog[name].get("volumes", {})
                entry["drill"] = {
                    "image": image_ref(catalog[name]),
                    "command": list(spec["drill"]["command"]),
                    "mounts": [[f"{DATA_DIR}/{name}/{vol}", mounts[vol]]
                               for vol in spec.get("volumes", [])],
                }  # fmt: skip
            found.append(entry)
    return found


def host_config(
    site: dict[str, Any],
    catalog: dict[str, Any],
    host_services: list[str],
    host: str,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """telecentre-backup's configuration for one host (the role writes it as JSON).

    `site` is tc_site (Site.as_data()), `options` the role's tunables (backup_* variables
    without the prefix): keep_safety, min_free_mb, check_subset, check_every_days,
    stop_services, health_timeout, scratch_dir, restic_options.
    """
    options = dict(options or {})
    backup = site["backup"]
    target = str(backup["target"])
    stop = [s for s in options.pop("stop_services", []) if s in host_services]
    config: dict[str, Any] = {
        "site": site["name"],
        "host": host,
        "repository": repository(target, site["name"], host),
        "target": local_target(target),
        "password_file": PASSWORD_FILE,
        "sftp_key": SFTP_KEY if sftp_parts(target) else None,
        "state_dir": STATE_DIR,
        "data_dir": DATA_DIR,
        "keep": {k: int(v) for k, v in (backup.get("keep") or {}).items()},
        "stop_services": stop,
        "services": services_to_back_up(list(host_services), catalog),
    }
    allowed = {
        "keep_safety",
        "min_free_mb",
        "check_subset",
        "check_every_days",
        "health_timeout",
        "scratch_dir",
        "cache_dir",
        "restic_options",
    }
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"unknown backup options: {', '.join(unknown)}")
    casts: dict[str, Callable[[Any], Any]] = {
        "keep_safety": int,
        "min_free_mb": int,
        "check_every_days": int,
        "health_timeout": int,
        "check_subset": str,
        "scratch_dir": str,
        "cache_dir": str,
        "restic_options": lambda v: [str(x) for x in v],
    }
    config.update({k: casts[k](v) for k, v in options.items()})
    return config


def timer_calendar(time_of_day: str) -> str:
    """systemd OnCalendar for a daily HH:MM."""
    hours, minutes = time_of_day.split(":")
    return f"*-*-* {int(hours):02d}:{int(minutes):02d}:00"


def sftp_parts(target: str) -> dict[str, str] | None:
    """sftp:user@host:/path -> {user, host, path}; None for a local path."""
    if not target.startswith("sftp:"):
        return None
    user_host, _, path = target[len("sftp:") :].partition(":")
    user, _, host = user_host.partition("@")
    return {"user": user, "host": host, "path": path}


def restic_options(target: str) -> list[str]:
    """restic -o options for the target: for sftp, the host's own key and verified host
    keys (the role writes both under /etc/telecentre/backup)."""
    if sftp_parts(target) is None:
        return []
    return [
        f"sftp.args=-i {SFTP_KEY} -o BatchMode=yes -o StrictHostKeyChecking=yes "
        f"-o UserKnownHostsFile={CONFIG_DIR}/known_hosts"
    ]


# --------------------------------------------------------------------------- recovery sheet


def recovery_sheet(site: Site, password: str, when: str | None = None) -> str:
    """The page to print and keep away from the box: how to get the data back without
    telecentre-ctl, with the repository key. It holds a secret: shown only on request."""
    when = when or time.strftime("%Y-%m-%d")
    target = str(site.backup["target"])
    hosts = [h.name for h in site.hosts] or ["<host>"]
    repos = "\n".join(f"    {h}: {repository(target, site.name, h)}" for h in hosts)
    sftp = sftp_parts(target)
    where = (
        f"on the sftp server {sftp['host']} (user {sftp['user']})"
        if sftp
        else f"on each host, in the folder {target} (a USB disk or a local folder)"
    )
    first = repository(target, site.name, hosts[0])
    schedule = (
        f"{site.backup.get('time', '02:30')}; kept: {_keep_words(site.backup.get('keep') or {})}"
    )
    return f"""\
==================================================================================
 RECOVERY SHEET - {site.title} ({site.name})                     printed {when}
==================================================================================
Keep this page on paper, away from the telecentre (a safe, a board member's home).
Whoever holds it AND the backup disk can read every backed-up file. Without the key
below, nobody can read the backups - not even you.

Backups are restic repositories, {where}:
{repos}

Repository key (restic password):

    {password}

Backed up every night at {schedule}.

To get the data back with telecentre-ctl (the usual way):
    telecentre-ctl restore {site.dir} --service <name> [--snapshot <id>]

Without telecentre-ctl, on any Linux machine with restic (apt install restic):
    1. Put the key in a file only you can read:  install -m 600 /dev/null key.txt
       then write the key above into key.txt.
    2. List the snapshots:
         restic -r {first} --password-file key.txt snapshots
    3. Restore one (each holds /srv/telecentre/<service>/<volume>, the database
       dumps under {STATE_DIR}/dumps/<service>.sql, and consistent copies of
       SQLite databases under {STATE_DIR}/dumps/sqlite/, to put in their places):
         restic -r {first} --password-file key.txt restore <id> --target /tmp/restore
    4. Databases: load <service>.sql with psql (PostgreSQL) or mariadb (MariaDB).
    5. Remove key.txt when done.
==================================================================================
"""


def _keep_words(keep: dict[str, Any]) -> str:
    parts = [f"{int(keep[k])} {k}" for k in ("daily", "weekly", "monthly") if keep.get(k)]
    return ", ".join(parts) or "nothing"


def sheet_mark(password_file: Path) -> Path:
    """Beside the vault password file (outside the site folder): when the sheet was printed."""
    return password_file.with_name(f"{password_file.stem}.{SHEET_MARK}")


def mark_sheet_printed(password_file: Path) -> None:
    mark = sheet_mark(password_file)
    mark.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    mark.write_text(time.strftime("%Y-%m-%d %H:%M:%S %z") + "\n", encoding="utf-8")


def sheet_printed_on(password_file: Path) -> str | None:
    try:
        return sheet_mark(password_file).read_text(encoding="utf-8").strip() or "?"
    except OSError:
        return None


# --------------------------------------------------------------------------- running


@dataclass
class HostOutcome:
    host: str
    record: dict[str, Any] | None  # what the host recorded, or None if it never got there
    status: str  # from the run: ok, changed, failed, unreachable, interrupted
    run_message: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.record and self.record.get("ok")) and self.status in ("ok", "changed")

    def as_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"host": self.host, "status": self.status}
        if self.record is not None:
            data |= {k: self.record.get(k) for k in RECORD_KEYS}
            data |= {k: v for k, v in self.record.items() if k not in RECORD_KEYS}
        else:
            data |= {"ok": False, "snapshot": None, "message": self.run_message}
        return data


@dataclass
class ActionResult:
    action: str
    site: str
    outcomes: list[HostOutcome]
    run: RunResult | None = None
    log_file: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        if any(o.status == "unreachable" for o in self.outcomes):
            return EXIT_UNREACHABLE
        if self.outcomes and all(o.ok for o in self.outcomes):
            return EXIT_OK
        return 1

    def as_data(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "site": self.site,
            "exit_code": self.exit_code,
            "log": str(self.log_file) if self.log_file else None,
            "hosts": [o.as_data() for o in self.outcomes],
        } | self.extra


def hosts_running(site: Site, service: str) -> list[str]:
    return [h for h, services in site.placement().items() if service in services]


def check_restore_request(site: Site, service: str, snapshot: str | None) -> list[str]:
    """The hosts to restore `service` on; InvalidInput (nothing touched) if it cannot be."""
    import re

    backed_up = sorted(
        {
            s["name"]
            for h, services in site.placement().items()
            for s in services_to_back_up(services, site.catalog.as_data())
        }
    )
    if service not in backed_up:
        from telecentre_ctl.site import did_you_mean

        hint = did_you_mean(service, backed_up)
        raise InvalidInput(
            f"--service {service}: not a backed-up service of site {site.name}",
            fix=(hint + " " if hint else "") + f"use one of: {', '.join(backed_up) or 'none'}",
        )
    if snapshot is not None and not re.fullmatch(r"[0-9a-f]{8,64}", snapshot):
        raise InvalidInput(
            f"--snapshot {snapshot!r} is not a snapshot id",
            fix="use an 8-character id shown by `telecentre-ctl backup` or, on the host, "
            "by `telecentre-backup snapshots`",
        )
    return hosts_running(site, service)


def read_records(folder: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            found[path.stem] = data
    return found


def outcomes_from(
    hosts: list[str], records: dict[str, dict[str, Any]], run: RunResult | None
) -> list[HostOutcome]:
    out = []
    for host in hosts:
        progress = run.hosts.get(host) if run is not None else None
        status = progress.status if progress is not None else "interrupted"
        message = progress.message if progress is not None else ""
        record = records.get(host)
        # A host whose task failed only because the operation failed still reports its
        # record: the operation's own words are the message to show.
        out.append(HostOutcome(host=host, record=record, status=status, run_message=message))
    return out


def run_action(
    site: Site,
    action: str,
    *,
    hosts: list[str],
    extravars: dict[str, Any] | None = None,
    on_progress: Callable[[HostProgress], None] | None = None,
    on_start: Callable[[Path], None] | None = None,
) -> ActionResult:
    """Run playbooks/<action>.yml on `hosts` and collect what each host recorded."""
    from telecentre_ctl import runner
    from telecentre_ctl.secrets import SECRETS_FILE, read_secrets, vault_password_file

    password_file = vault_password_file(site.name)
    secrets_present = (site.dir / SECRETS_FILE).is_file()
    masked = runner.secret_values(read_secrets(site.dir, password_file)) if secrets_present else []
    if password_file.is_file():
        masked.append(password_file.read_text(encoding="utf-8").strip())
    with tempfile.TemporaryDirectory(prefix="telecentre-backup-") as results:
        os.chmod(results, 0o700)
        request = runner.RunRequest(
            inventory=site.dir / "hosts.yml",
            playbook=PLAYBOOKS_DIR / f"{action}.yml",
            log_file=runner.log_path(site.dir, action),
            vault_password_file=password_file if secrets_present else None,
            limit=",".join(hosts),
            extravars={"backup_results_dir": results} | (extravars or {}),
            secrets=masked,
        )
        if on_start is not None:
            on_start(request.log_file)
        run = runner.run_playbook(request, on_progress=on_progress)
        records = read_records(Path(results))
    return ActionResult(
        action=action,
        site=site.name,
        outcomes=outcomes_from(hosts, records, run),
        run=run,
        log_file=request.log_file,
    )


def raise_for(result: ActionResult, site_dir: Path) -> None:
    """Turn a result into the contract's exit codes (0 returns)."""
    code = result.exit_code
    if code == EXIT_OK:
        return
    bad = [o for o in result.outcomes if not o.ok]
    lines = "; ".join(
        f"{o.host}: {(o.record or {}).get('message') or o.run_message or o.status}" for o in bad
    )
    log = f" (log: {result.log_file})" if result.log_file else ""
    if code == EXIT_UNREACHABLE:
        raise HostUnreachable(
            f"{result.action}: host unreachable: {lines}",
            fix=f"check that the host is up and answers SSH{log}, then run it again",
        )
    fixes = {
        "backup": "read the message above; once fixed, run the backup again",
        "restore": "the service was put back as it was; read the message above and the log",
        "drill": "the latest backup could not be proven restorable: make a fresh backup and "
        "run the drill again; if it fails again, check the backup disk",
    }
    raise OperationFailed(f"{result.action} failed: {lines}", fix=fixes[result.action] + log)
