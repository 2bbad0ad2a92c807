"""telecentre-ctl services: what the catalogue offers."""

from __future__ import annotations

import click

from telecentre_ctl.catalog import load_catalog
from telecentre_ctl.output import emit_json, table


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the catalogue as JSON on stdout.")
@click.option(
    "--locale",
    type=click.Choice(["fr", "en"]),
    default="en",
    show_default=True,
    help="Language of the purposes shown.",
)
def services(as_json: bool, locale: str) -> None:
    """List the services a site can enable (catalogue: services/<name>/service.yml).

    \b
    Apps are what co-workers use; dependencies (databases, cache) are added to a
    host automatically when an app needs them; the proxy is always deployed.
    Enable apps under `services:` in site.yml, e.g.  services: {radicale: {}}
    """
    catalog = load_catalog()
    if as_json:
        emit_json(
            [
                {
                    "name": s.name,
                    "kind": s.kind,
                    "title": s.data["title"],
                    "description": s.data["description"],
                    "profiles": list(s.profiles),
                    "memory_mb": s.memory_mb,
                    "image": s.image,
                    "built_locally": s.built_locally,
                    "depends": list(s.depends),
                    "subdomain": s.subdomain,
                    "options": s.options_schema,
                }
                for s in catalog.services.values()
            ]
        )
        return
    rows = [
        (
            s.name,
            s.kind,
            s.text("title", locale),
            ",".join(s.profiles) or "-",
            f"{s.memory_mb} MiB",
            ",".join(s.depends) or "-",
        )
        for s in sorted(catalog.services.values(), key=lambda s: (s.kind != "app", s.name))
    ]
    click.echo(table(["name", "kind", "purpose", "profiles", "memory", "needs"], rows))
