"""`telecentre-ctl init`: a new site folder from a few answers, validated before it is written."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import yaml

from telecentre_ctl.catalog import load_catalog
from telecentre_ctl.errors import InvalidInput
from telecentre_ctl.secrets import SECRETS_FILE, ensure_site_secrets
from telecentre_ctl.site import SITE_NAME_RE, load_site

SITE_FILES = ("site.yml", "hosts.yml")


@dataclass(frozen=True)
class InitAnswers:
    name: str
    title: str
    locale: str
    profile: str
    services: list[str]
    domain: str | None
    admin_email: str
    admin_name: str
    ssh_key: str
    host_address: str | None
    ram_gb: float | None

    @classmethod
    def gather(cls, site_dir: Path, given: dict[str, Any], interactive: bool) -> InitAnswers:
        """Flags first, then a prompt (interactive) or the default (--yes)."""

        def ask(key: str, text: str, default: Any) -> Any:
            if given.get(key) is not None:
                return given[key]
            if interactive:
                return click.prompt(text, default=default, show_default=True, err=True)
            return default

        slug = site_dir.resolve().name.lower().replace("_", "-")
        name = ask("name", "Site name (slug)", slug if SITE_NAME_RE.match(slug) else "telecentre")
        title = ask("title", "Title shown to co-workers", name.replace("-", " ").title())
        locale = ask("locale", "Language (fr/en)", "fr")
        profile = ask("profile", "Profile (lite/standard/full)", "lite")
        default_apps = ",".join(s.name for s in load_catalog().in_profile(str(profile)))
        services_csv = ask("services_csv", "Services (comma-separated)", default_apps)
        domain = ask("domain", "Public domain (empty for LAN only)", "") or None
        email = ask("admin_email", "Contact e-mail", "admin@example.org")
        admin = ask("admin_name", "Your account name on the hosts", "admin")
        key_file = given.get("ssh_key_file") or _default_key_file()
        if key_file is None and interactive:
            key_file = Path(click.prompt("Your SSH public key file", err=True))
        if key_file is None:
            raise InvalidInput(
                "no SSH public key to give the admin account",
                fix="pass --ssh-key ~/.ssh/id_ed25519.pub (create one with ssh-keygen -t ed25519)",
            )
        host = ask("host_address", "Address of the server (empty to decide later)", "") or None
        return cls(
            name=str(name),
            title=str(title),
            locale=str(locale),
            profile=str(profile),
            services=[s.strip() for s in str(services_csv).split(",") if s.strip()],
            domain=domain,
            admin_email=str(email),
            admin_name=str(admin),
            ssh_key=_read_key(Path(key_file)),
            host_address=host,
            ram_gb=given.get("ram_gb"),
        )


def _default_key_file() -> Path | None:
    for name in ("id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"):
        candidate = Path.home() / ".ssh" / name
        if candidate.is_file():
            return candidate
    return None


def _read_key(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip().splitlines()[0]
    except (OSError, UnicodeDecodeError, IndexError) as err:
        raise InvalidInput(
            f"{path}: cannot read an SSH public key", fix="pass --ssh-key with a .pub file"
        ) from err


def site_document(a: InitAnswers) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": a.name, "title": a.title, "locale": a.locale}
    if a.domain:
        doc["domain"] = a.domain
    doc |= {
        "tls": "acme" if a.domain else "internal",
        "admin_email": a.admin_email,
        "admins": [{"name": a.admin_name, "ssh_key": a.ssh_key}],
        "profile": a.profile,
        "services": {s: {} for s in a.services},
        "backup": {
            "target": "/srv/backup",
            "time": "02:30",
            "keep": {"daily": 7, "weekly": 4, "monthly": 6},
        },
    }
    return doc


def hosts_document(a: InitAnswers) -> dict[str, Any]:
    host: dict[str, Any] = {}
    if a.host_address:
        host["ansible_host"] = a.host_address
    if a.ram_gb:
        host["tc_ram_gb"] = a.ram_gb
    return {"telecentre": {"hosts": {f"{a.name}-1": host or None}}}


HEADER = {
    "site.yml": "# Site {name}: what this telecentre runs. Check with: telecentre-ctl validate\n",
    "hosts.yml": "# Ansible inventory of site {name} (group telecentre). A host without\n"
    "# ansible_host is reached by its name; `telecentre-ctl lab up` rewrites this\n"
    "# file for local lab hosts.\n",
}


@dataclass(frozen=True)
class Created:
    password_file: Path
    secrets_added: list[str]


def create_site(site_dir: Path, answers: InitAnswers, *, force: bool) -> Created:
    """Write the site, validated first in a scratch folder so bad answers touch nothing."""
    existing = [f for f in (*SITE_FILES, SECRETS_FILE) if (site_dir / f).exists()]
    if existing and not force:
        raise InvalidInput(
            f"{site_dir} already holds a site ({', '.join(existing)})",
            fix="choose another folder, or pass --force to replace site.yml and "
            "hosts.yml (secrets are kept)",
        )
    with tempfile.TemporaryDirectory(prefix="telecentre-init-") as scratch:
        draft = Path(scratch)
        for name, doc in (
            ("site.yml", site_document(answers)),
            ("hosts.yml", hosts_document(answers)),
        ):
            text = HEADER[name].format(name=answers.name) + yaml.safe_dump(
                doc, sort_keys=False, allow_unicode=True, width=1000
            )
            (draft / name).write_text(text, encoding="utf-8")
        if (site_dir / SECRETS_FILE).exists():
            shutil.copy2(site_dir / SECRETS_FILE, draft / SECRETS_FILE)
        site = load_site(draft, check_secrets=False)
        password_file, added, _ = ensure_site_secrets(site)
        site_dir.mkdir(parents=True, exist_ok=True)
        for name in (*SITE_FILES, SECRETS_FILE):
            shutil.copy2(draft / name, site_dir / name)
    return Created(password_file=password_file, secrets_added=added)
