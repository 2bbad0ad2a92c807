"""telecentre-ctl init, validate, secrets: create and check a site folder."""

from __future__ import annotations

from pathlib import Path

import click

from telecentre_ctl.output import say

SITE_DIR = click.argument("site_dir", type=click.Path(path_type=Path))


@click.command()
@SITE_DIR
@click.option("--yes", "-y", is_flag=True, help="Accept the defaults; ask nothing.")
@click.option(
    "--force",
    is_flag=True,
    help="Replace an existing site's site.yml and hosts.yml (existing secrets are kept).",
)
@click.option("--name", help="Site slug, e.g. comptoir (default: the folder name).")
@click.option("--title", help="Name shown to co-workers on the portal.")
@click.option("--locale", type=click.Choice(["fr", "en"]), help="Language of portal and reports.")
@click.option(
    "--profile",
    type=click.Choice(["lite", "standard", "full"]),
    help="lite: small boxes, no registry; standard: Nextcloud and friends.",
)
@click.option("--services", "services_csv", help="Comma-separated apps (default: the profile's).")
@click.option("--domain", help="Public domain; leave empty for a LAN-only site (internal TLS).")
@click.option("--admin-email", help="Contact shown on the portal; ACME account.")
@click.option("--admin-name", help="Account created on the hosts for you.")
@click.option(
    "--ssh-key",
    "ssh_key_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Your SSH public key file (default: ~/.ssh/id_ed25519.pub if present).",
)
@click.option("--host", "host_address", help="Address of the telecentre's server.")
@click.option("--ram-gb", type=float, help="RAM of that server in GB (for the budget check).")
def init(site_dir: Path, yes: bool, force: bool, **answers: object) -> None:
    """Create a site folder: site.yml, hosts.yml and an encrypted secrets.yml.

    \b
    Every question is also a flag; --yes takes the defaults for the rest:
      telecentre-ctl init inventory/comptoir --yes --profile standard \\
          --domain comptoir.example.org --admin-email admin@example.org
    The vault password is written to a 0600 file outside the site folder, and its
    path printed: keep a copy in a safe place. Secrets themselves are never shown.
    """
    from telecentre_ctl.init import InitAnswers, create_site

    interactive = not yes
    created = create_site(site_dir, InitAnswers.gather(site_dir, answers, interactive), force=force)
    say(
        f"created {site_dir}: site.yml, hosts.yml, secrets.yml "
        f"({len(created.secrets_added)} secrets generated, encrypted)"
    )
    say(f"vault password file: {created.password_file}  (mode 0600; keep a copy somewhere safe)")
    say(f"next: telecentre-ctl validate {site_dir} && telecentre-ctl plan {site_dir}")


@click.command()
@SITE_DIR
def validate(site_dir: Path) -> None:
    """Check a site folder without connecting anywhere; exit 2 listing every problem.

    \b
    Checks the YAML, keys and values of site.yml and hosts.yml, the services against
    the catalogue and profile, the RAM budget of each host (20 % headroom), port and
    address collisions, and that secrets.yml holds every secret the services need.
    """
    from telecentre_ctl.site import load_site

    site = load_site(site_dir)
    n = len(site.services)
    say(
        f"{site_dir}: valid — site {site.name}, profile {site.profile}, {n} service(s) "
        f"on {len(site.hosts)} host(s)"
    )


@click.command()
@SITE_DIR
@click.option(
    "--smtp-password",
    is_flag=True,
    help="Also store the password of site.yml's smtp.username: asked for without echo "
    "(or read from standard input when it is not a terminal), never shown or logged.",
)
def secrets(site_dir: Path, smtp_password: bool) -> None:
    """Generate the secrets a site lacks (after enabling a service, or for the demo).

    Existing secrets are never changed. Creates the vault password file if needed
    (0600, outside the site folder) and prints its path, never the secrets.
    """
    import sys

    from telecentre_ctl.secrets import ensure_site_secrets, set_provided_secret
    from telecentre_ctl.site import load_site

    site = load_site(site_dir, check_secrets=False)
    if smtp_password:
        if sys.stdin.isatty():
            value = click.prompt("SMTP password", hide_input=True, err=True)
        else:
            value = sys.stdin.readline().rstrip("\n")
        set_provided_secret(site, "smtp", "password", value)
        say(f"{site_dir}/secrets.yml: smtp.password stored (encrypted)")
    password_file, added, created = ensure_site_secrets(site)
    if created:
        say(f"vault password file created: {password_file}  (keep a copy somewhere safe)")
    say(
        f"{site_dir}/secrets.yml: {len(added)} secret(s) generated"
        + (f" ({', '.join(added)})" if added else ", all present")
    )
