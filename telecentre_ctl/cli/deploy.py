"""telecentre-ctl deploy: validate the site, then converge its hosts with playbooks/site.yml."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

from telecentre_ctl.cli.fleet import fleet_options
from telecentre_ctl.errors import (
    EXIT_OK,
    EXIT_UNREACHABLE,
    HostUnreachable,
    InvalidInput,
    OperationFailed,
)
from telecentre_ctl.paths import PLAYBOOKS_DIR

if TYPE_CHECKING:
    from telecentre_ctl.runner import HostProgress, RunRequest, RunResult
    from telecentre_ctl.site import Site

STATUS_WORDS = {
    "ok": "ok, nothing to change",
    "changed": "ok, changed",
    "failed": "FAILED",
    "unreachable": "UNREACHABLE",
    "interrupted": "INTERRUPTED",
}


@click.command()
@click.argument("site_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--limit",
    "limit",
    metavar="HOST[,HOST]",
    help="Only these hosts of the site (names from hosts.yml).",
)
@click.option("--check", is_flag=True, help="Dry run: report what would change, change nothing.")
@click.option(
    "--images",
    "images",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    metavar="FILE",
    help="Image bundle from `telecentre-ctl images bundle`: each host gets only the "
    "layers it lacks, then nothing is built or pulled.",
)
@click.option(
    "--purge",
    is_flag=True,
    help="Also delete the data of services taken out of site.yml (kept by default).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the per-host summary as JSON on stdout."
)
@fleet_options
def deploy(
    site_dirs: tuple[Path, ...],
    limit: str | None,
    check: bool,
    images: Path | None,
    purge: bool,
    as_json: bool,
    parallel: int,
    keep_going: bool,
) -> None:
    """Bring SITE_DIR's hosts to the desired state: hardened Debian, firewall, Docker engine,
    then the site's services. Safe to run again: a converged host reports nothing changed.

    \b
    The site is validated first (exit 2, no connection made). Progress per host goes to
    stderr, the full log (secrets masked) to SITE_DIR/logs/deploy-<time>.log.
    Runs exactly: ansible-playbook -i SITE_DIR/hosts.yml playbooks/site.yml
                  --vault-password-file <the site's vault password file>
    Exit codes: 0 ok, 1 a host failed or was refused, 2 invalid site, 3 a host
    unreachable (the other hosts still finish).

    \b
    Versions: deploy never moves a service that keeps data (volumes or a database) to
    another version than its host runs, since it takes no safety snapshot. Such a host is
    refused before anything changes on it, with the command to run instead (telecentre-ctl
    upgrade SITE_DIR --service S), and the upgrade rules (major steps, database majors,
    downgrades) named where they forbid the move; the other hosts go on. A service not
    deployed yet, one without data, and a recipe rebuilt under the same tag are deployed
    as usual. --check reports the same refusals.

    \b
    Several site folders (several telecentres): all are validated first (exit 2 before
    any connection if one is invalid); the first is the canary, deployed alone; then the
    others, --parallel at a time, each in its own process with its log in its folder;
    the first failure stops the sites not started yet unless --keep-going. One summary
    table on stderr, --json on stdout; the exit code is the worst of the sites (3 > 1 > 0).
    """
    from telecentre_ctl import runner
    from telecentre_ctl.secrets import SECRETS_FILE, read_secrets, vault_password_file
    from telecentre_ctl.site import load_many, load_site

    if len(site_dirs) > 1:
        from telecentre_ctl.cli.fleet import run_sites

        if limit:
            raise InvalidInput(
                "--limit names hosts of one site", fix="deploy that site alone with --limit"
            )
        sites = load_many(site_dirs)
        options = ["--check"] if check else []
        options += ["--purge"] if purge else []
        options += ["--images", str(images.resolve())] if images else []
        run_sites("deploy", sites, options, parallel, keep_going, as_json)
        return
    site_dir = site_dirs[0]
    site = load_site(site_dir)
    names = [h.name for h in site.hosts]
    if limit:
        unknown = [h for h in limit.split(",") if h and h not in names]
        if unknown:
            raise InvalidInput(
                f"--limit: {', '.join(unknown)} not in {site_dir / 'hosts.yml'}",
                fix=f"use one of: {', '.join(names)}",
            )
    password_file = vault_password_file(site.name)
    secrets_present = (site.dir / SECRETS_FILE).is_file()
    secrets = runner.secret_values(read_secrets(site.dir, password_file)) if secrets_present else []
    if password_file.is_file():
        secrets.append(password_file.read_text(encoding="utf-8").strip())
    request = runner.RunRequest(
        inventory=site.dir / "hosts.yml",
        playbook=PLAYBOOKS_DIR / "site.yml",
        log_file=runner.log_path(site.dir, "check" if check else "deploy"),
        vault_password_file=password_file if secrets_present else None,
        limit=limit,
        check=check,
        secrets=secrets,
        extravars={"service_purge": True} if purge else {},
    )
    targets = [n for n in names if not limit or n in limit.split(",")]
    loaded: dict[str, Any] = {}
    if images is not None and not check:
        loaded = _load_images(site, request, images, targets)
    view = ProgressView(sys.stderr, targets, runner.count_tasks(request.playbook))
    verb = "checking" if check else "deploying"
    click.echo(f"{verb} {site.name} on {len(targets)} host(s); log: {request.log_file}", err=True)
    try:
        result = runner.run_playbook(request, on_progress=view.update)
    finally:
        view.close()
    print_summary(sys.stderr, result)
    if as_json:
        data = {"site": site.name} | result.as_data()
        if images is not None:
            data["images"] = loaded
        click.echo(json.dumps(data, indent=2))
    code = result.exit_code
    if code == EXIT_OK:
        return
    bad = {n: h for n, h in result.hosts.items() if h.status not in ("ok", "changed")}
    where = ", ".join(f"{n} ({h.status})" for n, h in sorted(bad.items())) or "no host finished"
    detail = f"{result.problem}; " if result.problem else ""
    if code == EXIT_UNREACHABLE:
        raise HostUnreachable(
            f"{detail}unreachable: {where}",
            fix=f"check that the host is up and answers SSH (see {result.log_file}), "
            f"then run deploy again",
        )
    fix = (
        f"read the failed task in {result.log_file}, fix it, then run deploy again "
        "(a re-run picks up where this one stopped)"
    )
    refused = sorted(n for n, h in bad.items() if refused_host(h))
    if refused:
        others = f"; on the other hosts: {fix}" if len(refused) < len(bad) else ""
        fix = (
            f"nothing was changed on {', '.join(refused)}: the notes above say what to run "
            f"for each service (telecentre-ctl upgrade {site_dir} --service S moves it with a "
            f"safety snapshot and automatic rollback), then deploy again{others}"
        )
    raise OperationFailed(f"{detail}not converged: {where}", fix=fix)


def refused_host(host: HostProgress) -> bool:
    """A host left untouched because a service keeping data would change version."""
    from telecentre_ctl.upgrade import DEPLOY_REFUSED

    return host.status == "failed" and host.message.startswith(DEPLOY_REFUSED)


def _load_images(
    site: Site, request: RunRequest, bundle: Path, targets: list[str]
) -> dict[str, Any]:
    """Docker first (roles base and docker), then each host gets the bundle's layers it
    lacks, so that the full run finds the images and builds or pulls nothing."""
    from dataclasses import replace

    from telecentre_ctl import images, runner

    def say(text: str) -> None:
        click.echo(text, err=True)

    say(f"checking {bundle}")
    verified = images.verify_bundle(bundle)  # a damaged bundle: exit 2, no host touched
    say(f"preparing Docker on {len(targets)} host(s) before loading {bundle}")
    first = runner.run_playbook(replace(request, tags="base,docker"))
    if first.exit_code != EXIT_OK:
        print_summary(sys.stderr, first)
        bad = ", ".join(n for n, h in first.hosts.items() if h.status not in ("ok", "changed"))
        raise OperationFailed(
            f"could not prepare Docker to load the images: {bad}",
            fix=f"read {first.log_file}, fix it, then run deploy again",
        )
    results = images.load_bundle(site, bundle, targets, say=say, verified=verified)
    return {host: result.as_data() for host, result in results.items()}


class ProgressView:
    """Per-host progress on stderr: live bars on a terminal, plain lines otherwise."""

    def __init__(self, out: TextIO, hosts: list[str], total: int) -> None:
        self.out = out
        self.tty = out.isatty()
        self.order = list(hosts)
        self.lines: dict[str, str] = {h: f"{h}: waiting" for h in hosts}
        self.width = max((len(h) for h in hosts), default=8)
        self.total = total
        self.drawn = 0
        self.printed: dict[str, int] = {}
        if self.tty:
            self._redraw()

    def update(self, progress: HostProgress) -> None:
        if progress.name not in self.lines:
            self.order.append(progress.name)
            self.width = max(self.width, len(progress.name))
        total = max(progress.total, progress.done, 1)
        counts = f"changed {progress.changed} failed {progress.failed}"
        if progress.unreachable:
            counts += " UNREACHABLE"
        name = progress.name.ljust(self.width)
        if self.tty:
            cols = shutil.get_terminal_size((100, 20)).columns
            bar_width = 20
            filled = int(bar_width * min(progress.done, total) / total)
            bar = "#" * filled + "-" * (bar_width - filled)
            line = f"{name} [{bar}] {progress.done:>3}/{total} {counts}  {progress.task}"
            self.lines[progress.name] = line[: cols - 1]
            self._redraw()
        elif progress.done > self.printed.get(progress.name, 0):  # a line per task result
            self.printed[progress.name] = progress.done
            self.out.write(f"{name}  task {progress.done}/{total}  {counts}  {progress.task}\n")
            self.out.flush()

    def _redraw(self) -> None:
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}F")
        for host in self.order:
            self.out.write("\x1b[2K" + self.lines.get(host, host) + "\n")
        self.drawn = len(self.order)
        self.out.flush()

    def close(self) -> None:
        self.out.flush()


def print_summary(out: TextIO, result: RunResult) -> None:
    """One line per host: what happened, in words and counts."""
    if not result.hosts:
        out.write("no host was reached\n")
        return
    width = max(len(n) for n in result.hosts)
    mode = " (check mode: nothing was changed)" if result.check else ""
    out.write(f"summary{mode}, {result.seconds:.0f} s:\n")
    for name, h in sorted(result.hosts.items()):
        words = "REFUSED" if refused_host(h) else STATUS_WORDS[h.status]
        line = (
            f"  {name.ljust(width)}  {words:<22} ok={h.ok} "
            f"changed={h.changed} failed={h.failed} unreachable={h.unreachable} "
            f"skipped={h.skipped}"
        )
        if h.message and h.status in ("failed", "unreachable"):
            line += f"\n  {' ' * width}  {h.message}"
        for note in h.notes:
            line += f"\n  {' ' * width}  note: {note}"
        out.write(line + "\n")
    out.flush()
