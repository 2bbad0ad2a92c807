"""`telecentre-ctl lab`: disposable local Debian 13 hosts to rehearse a site on."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import click

SITE_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@click.group()
def lab() -> None:
    """Local lab hosts: real Debian 13 systems (systemd, OpenSSH, Docker-capable) booted
    with systemd-nspawn on this machine, so that a site can be deployed without risk.

    \b
    Needs root and: systemd-container debootstrap openssh-client iproute2 nftables.
    The Debian base tree is downloaded once (about a minute), then hosts start in seconds.
    \b
      sudo telecentre-ctl lab up inventory/demo --hosts 2
      sudo telecentre-ctl lab ssh inventory/demo demo-1
      sudo telecentre-ctl lab down inventory/demo
    """


@lab.command()
@click.argument("site_dir", type=SITE_DIR)
@click.option("--hosts", "count", default=1, show_default=True, help="Number of lab hosts.")
def up(site_dir: Path, count: int) -> None:
    """Start lab hosts for SITE_DIR and point its hosts.yml at them.

    Hosts are named <site>-1, <site>-2, ... on 10.213.<n>.0/24, reach each other and
    Debian's archive (NAT), and accept root SSH only with the lab's own key; their fresh
    host keys go to a known_hosts file that hosts.yml makes Ansible check strictly. An
    existing hosts.yml is kept as hosts.yml.bak-<time>. Running it again on a running lab
    is harmless; a different --hosts recreates the lab.

    \b
    Example:
      sudo telecentre-ctl lab up inventory/demo --hosts 2
      ansible-playbook -i inventory/demo/hosts.yml playbooks/site.yml
    """
    from telecentre_ctl.lab import control

    control.up(site_dir, count)


@lab.command()
@click.argument("site_dir", type=click.Path(file_okay=False, path_type=Path))
def down(site_dir: Path) -> None:
    """Stop SITE_DIR's lab hosts and remove everything the lab made for them.

    Processes, mounts, network namespaces, veths, the bridge, NAT rules, overlays and
    the hosts' Docker data go; the cached base tree and hosts.yml stay. Running it when
    no lab is up does nothing. SITE_DIR may be a folder deleted while its lab ran.

    \b
    Example:
      sudo telecentre-ctl lab down inventory/demo
    """
    from telecentre_ctl.lab import control

    control.down(site_dir)


@lab.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def list_(as_json: bool) -> None:
    """Show every lab host on this machine: site, name, address, state.

    State is running, stopped, or crashed (its nspawn is gone: run lab down, then up).

    \b
    Example:
      telecentre-ctl lab list --json
    """
    from telecentre_ctl.lab import control

    hosts = control.list_hosts()
    if as_json:
        click.echo(json.dumps([asdict(h) for h in hosts], indent=2))
        return
    if not hosts:
        click.echo("no lab hosts", err=True)
        return
    rows = [("SITE", "NAME", "ADDRESS", "STATE")] + [
        (h.site, h.name, h.address, h.state) for h in hosts
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@lab.command(context_settings={"ignore_unknown_options": True})
@click.argument("site_dir", type=SITE_DIR)
@click.argument("host")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def ssh(site_dir: Path, host: str, command: tuple[str, ...]) -> None:
    """Open a root shell on lab HOST of SITE_DIR, or run COMMAND there.

    HOST is a name (demo-1), its number (1) or its address. The lab key and known_hosts
    are used; host keys are checked strictly.

    \b
    Examples:
      sudo telecentre-ctl lab ssh inventory/demo demo-1
      sudo telecentre-ctl lab ssh inventory/demo 2 -- systemctl is-system-running
    """
    from telecentre_ctl.lab import control

    argv = control.ssh_command(site_dir, host, command)
    os.execvp(argv[0], argv)
