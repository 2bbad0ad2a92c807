"""telecentre-ctl images: image bundles for sites without a registry (thin over images.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


def _say(text: str) -> None:
    click.echo(text, err=True)


@click.group()
def images() -> None:
    """Images without a registry: bundle every image a site needs into one file, load it
    into hosts sending only the layers they lack."""


@images.command()
@click.argument("site_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="FILE",
    help="The bundle to write (zstd; replaced only once complete).",
)
@click.option(
    "--builder",
    metavar="HOST",
    help="Host (from hosts.yml) that builds and pulls the images; default: the first host.",
)
@click.option(
    "--level",
    type=click.IntRange(1, 22),
    default=19,
    show_default=True,
    help="zstd level of the bundle (higher: smaller and slower to make; loading is as fast).",
)
@click.option("--json", "as_json", is_flag=True, help="Print what the bundle holds as JSON.")
def bundle(site_dir: Path, output: Path, builder: str | None, level: int, as_json: bool) -> None:
    """Write every image SITE_DIR needs into one compressed file.

    \b
    The builder host gets Docker and runs the service role's image phase for every service
    of the site (playbooks/images.yml): build recipes are built, upstream images pulled (a
    registry must be reachable from the builder for those). The images then travel back
    over SSH (docker save) into FILE. Load it with: deploy SITE_DIR --images FILE, or
    images load SITE_DIR FILE; or by hand: zstd -dc FILE | docker load.
    Exit codes: 0 ok, 1 failed, 2 invalid input, 3 builder unreachable.
    """
    from telecentre_ctl import images as lib
    from telecentre_ctl.cli.deploy import ProgressView
    from telecentre_ctl.site import load_site

    site = load_site(site_dir, check_secrets=False)
    host = lib.builder_host(site, builder)  # exit 2 before anything runs
    view = ProgressView(sys.stderr, [host.name], 0)
    try:
        result = lib.bundle_site(
            site_dir, output, host.name, level=level, say=_say, on_progress=view.update
        )
    finally:
        view.close()
    data = result.as_data()
    _say(
        f"wrote {result.path}: {len(result.index.images)} image(s), {data['bytes'] / 1e6:.1f} MB "
        f"({data['uncompressed_bytes'] / 1e6:.1f} MB uncompressed) in {data['seconds']:.0f} s"
    )
    if as_json:
        click.echo(json.dumps(data, indent=2))


@images.command()
@click.argument("site_dir", type=click.Path(path_type=Path, file_okay=False))
@click.argument("bundle_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--limit", metavar="HOST[,HOST]", help="Only these hosts of the site.")
@click.option("--json", "as_json", is_flag=True, help="Print what each host got as JSON.")
def load(site_dir: Path, bundle_file: Path, limit: str | None, as_json: bool) -> None:
    """Load BUNDLE_FILE into SITE_DIR's hosts (Docker must be there: deploy installs it).

    \b
    The bundle is checked whole first (a damaged file: exit 2, nothing touched). Each host
    gets the images of the services placed on it that it lacks, and only the layers it
    does not have. deploy --images FILE does the same between installing Docker and
    starting the services.
    """
    from telecentre_ctl import images as lib
    from telecentre_ctl.site import load_site

    site = load_site(site_dir, check_secrets=False)
    hosts = [h for h in limit.split(",") if h] if limit else None
    results = lib.load_bundle(site, bundle_file, hosts, say=_say)
    for name, res in sorted(results.items()):
        _say(
            f"  {name}: sent {res.bytes_sent / 1e6:.1f} MB, loaded {len(res.images)} image(s), "
            f"{len(res.present)} already there, layers sent {res.layers_sent} / skipped "
            f"{res.layers_skipped}"
        )
    if as_json:
        data = {"site": site.name, "hosts": {n: r.as_data() for n, r in sorted(results.items())}}
        click.echo(json.dumps(data, indent=2))


@images.command()
@click.argument("bundle_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--verify", is_flag=True, help="Also read the whole file and check every member.")
@click.option("--json", "as_json", is_flag=True, help="Print the bundle's index as JSON.")
def show(bundle_file: Path, verify: bool, as_json: bool) -> None:
    """What BUNDLE_FILE holds: its images, their ids and sizes (exit 2 if damaged)."""
    from telecentre_ctl import images as lib

    index = lib.verify_bundle(bundle_file) if verify else lib.read_index(bundle_file)
    if as_json:
        data = index.as_data()
        data.pop("members")
        data.pop("manifest")
        data.pop("end")
        click.echo(json.dumps(data, indent=2))
        return
    sizes = {m.name: m.csize for m in index.members}
    click.echo(f"{bundle_file}: site {index.site or '?'}, made on {index.builder or '?'}")
    click.echo(f"  {index.created}, zstd level {index.level}, {len(index.images)} image(s)")
    for image in index.images:
        size = sum(sizes[n] for n in image.layer_members)
        click.echo(
            f"  {', '.join(image.tags) or '<untagged>'}  {image.id[:19]}  "
            f"{len(image.layers)} layer(s), {size / 1e6:.1f} MB"
        )
    if verify:
        click.echo("  every member checked: ok")
