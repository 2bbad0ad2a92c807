"""telecentre-ctl plan: what deploy would put on each host, rendered locally."""

from __future__ import annotations

from pathlib import Path

import click

from telecentre_ctl.output import emit_json, say, table


@click.command()
@click.argument("site_dir", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write each host's rendered files under DIR/<host>/.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON on stdout.")
def plan(site_dir: Path, out_dir: Path | None, as_json: bool) -> None:
    """Show what a deploy would do, without connecting anywhere.

    \b
    Renders each host's compose files, proxy configuration and portal page with the
    roles' own templates, then summarises: services and their URLs, RAM budget,
    image downloads, open ports.
      telecentre-ctl plan inventory/demo --out /tmp/demo-plan
    """
    from telecentre_ctl.plan import make_plan, write_plan
    from telecentre_ctl.site import load_site

    the_plan = make_plan(load_site(site_dir))
    if out_dir is not None:
        written = write_plan(the_plan, out_dir)
        say(f"wrote {len(written)} file(s) under {out_dir}")
    if as_json:
        emit_json(the_plan.as_json())
        return
    site = the_plan.site
    click.echo(f"site {site.name} ({site.title}) — profile {site.profile}, TLS {site.tls}")
    click.echo(f"portal: {site.portal_url}")
    rows = [(s, site.url(s)) for s in site.services]
    if rows:
        click.echo(table(["service", "url"], rows))
    for host in the_plan.hosts:
        ports = ", ".join(f"{p['port']}/{p['protocol']}" for p in host.open_ports)
        download = f"{host.download_mb} MB to download"
        if host.unknown_downloads:
            download += f" (+ unknown size: {', '.join(host.unknown_downloads)})"
        if host.local_builds:
            download += f"; built locally: {', '.join(host.local_builds)}"
        click.echo(
            f"\nhost {host.name} ({host.address})\n"
            f"  runs:   {', '.join(host.services)}\n"
            f"  RAM:    {host.need_mb:.0f} of {host.have_mb:.0f} MiB "
            f"({host.headroom:.0%} free)\n"
            f"  images: {download}\n"
            f"  open:   {ports}\n"
            f"  files:  {len(host.files)} rendered"
        )
