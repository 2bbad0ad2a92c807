"""telecentre-ctl status: are the telecentres' services working, in plain words."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from telecentre_ctl.output import emit_json, say

if TYPE_CHECKING:
    from telecentre_ctl.site import Site
    from telecentre_ctl.status import HostResult


def _progress(site: Site, result: HostResult) -> None:
    state = "ok" if result.probe is not None else f"unreachable: {result.error}"
    say(f"  {site.name}/{result.host.name}: {state} ({result.duration_s:.1f} s)")


@click.command()
@click.argument("site_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON on stdout.")
@click.option(
    "--html",
    "html_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write a self-contained HTML report for managers to FILE.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.5, max=600),
    default=10.0,
    show_default=True,
    envvar="TELECENTRE_STATUS_TIMEOUT",
    help="Seconds allowed per host (SSH, probe and HTTPS checks) before it is unreachable.",
)
@click.pass_context
def status(
    ctx: click.Context,
    site_dirs: tuple[Path, ...],
    as_json: bool,
    html_file: Path | None,
    timeout: float,
) -> None:
    """Check every host of one or more sites, in parallel, and say what works.

    \b
    Per host one SSH connection, made as Ansible would from hosts.yml (group and host
    variables, ansible_ssh_common_args with ProxyJump or ProxyCommand; host keys checked
    against tc_known_hosts_file or the known_hosts the ssh arguments name, never added),
    runs one probe: containers and their health, disks, memory, last backup and restore
    drill, site certificate, security updates. Then each service is opened over HTTPS
    through the proxy, with its certificate verified. Up to 64 hosts at a time, each with
    its own --timeout from the moment its turn comes.
      telecentre-ctl status inventory/comptoir inventory/lavoir --html status.html
    \b
    Exit codes: 0 all working (warnings allowed), 1 something is down or at risk
    (service, backup older than 26 h, disk >= 90 %, certificate < 14 days),
    3 a host unreachable, 2 invalid site folder.
    """
    from telecentre_ctl.site import load_site
    from telecentre_ctl.status import collect, html_report, text_report

    unique = list(dict.fromkeys(d.resolve() for d in site_dirs))
    sites = [load_site(d, check_secrets=False) for d in unique]
    progress = _progress if sys.stderr.isatty() and not as_json else None
    report = collect(sites, timeout=timeout, progress=progress)
    if html_file is not None:
        html_file.write_text(html_report(report), encoding="utf-8")
        say(f"wrote {html_file}")
    if as_json:
        emit_json(report.as_json())
    else:
        click.echo("\n\n".join(text_report(s) for s in report.sites))
    ctx.exit(report.exit_code)
