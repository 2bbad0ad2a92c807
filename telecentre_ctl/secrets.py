"""Site secrets: generated from a CSPRNG, stored in secrets.yml encrypted with ansible-vault.

The vault password file lives outside the site folder (mode 0600), so a site folder can be
copied, shared or committed without giving its secrets away. secrets.yml holds one mapping,
`tc_secrets: {service: {secret: value}}`, which Ansible receives as it is.
"""

from __future__ import annotations

import os
import secrets as csprng
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from telecentre_ctl.errors import InvalidInput, Problem
from telecentre_ctl.paths import config_dir

if TYPE_CHECKING:
    from telecentre_ctl.site import Site

SECRETS_FILE = "secrets.yml"
VAULT_HEADER = b"$ANSIBLE_VAULT;"
DEFAULT_SECRET_BYTES = 24  # 192 bits; the catalogue may ask for more, never fewer than 16


def vault_password_file(site_name: str) -> Path:
    """Where the site's vault password lives: TELECENTRE_VAULT_PASSWORD_FILE, else per user."""
    override = os.environ.get("TELECENTRE_VAULT_PASSWORD_FILE")
    if override:
        return Path(override)
    return config_dir() / "vault" / f"{site_name}.pass"


def new_secret(nbytes: int = DEFAULT_SECRET_BYTES) -> str:
    return csprng.token_urlsafe(max(nbytes, 16))


def ensure_password_file(path: Path) -> bool:
    """Create the vault password file (0600, folder 0700) if absent. True if created."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(new_secret(32) + "\n")
    return True


def _vault(password_file: Path) -> Any:
    from ansible.parsing.vault import VaultLib, VaultSecret

    try:
        password = password_file.read_bytes().strip()
    except OSError as err:
        raise InvalidInput(
            f"cannot read the vault password file {password_file}: {err.strerror}",
            fix="restore it from your safe copy, or point TELECENTRE_VAULT_PASSWORD_FILE at it",
        ) from err
    if not password:
        raise InvalidInput(
            f"the vault password file {password_file} is empty",
            fix="restore it from your safe copy",
        )
    return VaultLib([("default", VaultSecret(password))])


def read_secrets(site_dir: Path, password_file: Path) -> dict[str, dict[str, str]]:
    """Decrypt secrets.yml; raises InvalidInput if it is missing, plain text or unreadable."""
    from ansible.errors import AnsibleError

    path = Path(site_dir) / SECRETS_FILE
    blob = path.read_bytes()
    if not blob.startswith(VAULT_HEADER):
        raise InvalidInput(
            f"{path} is not encrypted",
            fix=f"encrypt it: ansible-vault encrypt --vault-password-file {password_file} {path}",
        )
    try:
        text = _vault(password_file).decrypt(blob)
    except AnsibleError as err:
        raise InvalidInput(
            f"{path}: cannot decrypt with {password_file}",
            fix="use the password file this site was created with",
        ) from err
    data = yaml.safe_load(text) or {}
    found = data.get("tc_secrets") if isinstance(data, dict) else None
    if not isinstance(found, dict):
        raise InvalidInput(
            f"{path}: no tc_secrets mapping inside the vault",
            fix=f"regenerate it: telecentre-ctl secrets {site_dir}",
        )
    return found


def write_secrets(site_dir: Path, password_file: Path, values: dict[str, dict[str, str]]) -> None:
    """Encrypt and write secrets.yml atomically, mode 0600."""
    text = yaml.safe_dump({"tc_secrets": values}, sort_keys=True)
    blob = _vault(password_file).encrypt(text)
    target = Path(site_dir) / SECRETS_FILE
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".secrets.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(blob)
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def missing_secrets(site: Site, have: dict[str, dict[str, str]]) -> list[tuple[str, str]]:
    return [
        (service, name)
        for service, names in site.required_secrets().items()
        for name in names
        if not (have.get(service) or {}).get(name)
    ]


def fill_missing(
    site: Site, have: dict[str, dict[str, str]]
) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Secrets the site needs and lacks, generated; existing values are never changed."""
    values = {service: dict(names) for service, names in have.items()}
    added = []
    for service, name in missing_secrets(site, have):
        spec = site.catalog[service].secrets.get(name, {}) if service in site.catalog else {}
        values.setdefault(service, {})[name] = new_secret(
            int(spec.get("bytes", DEFAULT_SECRET_BYTES))
        )
        added.append(f"{service}.{name}")
    return values, added


def ensure_site_secrets(site: Site) -> tuple[Path, list[str], bool]:
    """Generate whatever secrets the site lacks. Returns (password file, added, file created)."""
    password_file = vault_password_file(site.name)
    created = ensure_password_file(password_file)
    path = site.dir / SECRETS_FILE
    have = read_secrets(site.dir, password_file) if path.exists() else {}
    values, added = fill_missing(site, have)
    if added or not path.exists():
        write_secrets(site.dir, password_file, values)
    return password_file, added, created


def check_site_secrets(site: Site) -> list[Problem]:
    """Problems with secrets.yml: missing, plain text, unreadable, or lacking a secret."""
    path = site.dir / SECRETS_FILE
    fix = f"generate them: telecentre-ctl secrets {site.dir}"
    if not path.exists():
        return [Problem(SECRETS_FILE, "", "missing", fix)]
    if path.stat().st_size == 0:
        return [Problem(SECRETS_FILE, "", "file is empty", fix)]
    password_file = vault_password_file(site.name)
    if not password_file.exists():
        return [
            Problem(
                SECRETS_FILE,
                "",
                f"cannot open the vault: no password file at {password_file}",
                "restore the password file there, or set TELECENTRE_VAULT_PASSWORD_FILE",
            )
        ]
    try:
        have = read_secrets(site.dir, password_file)
    except InvalidInput as err:
        return [Problem(SECRETS_FILE, "", err.message, err.fix)]
    problems = [
        Problem(SECRETS_FILE, f"tc_secrets.{service}.{name}", "missing", fix)
        for service, name in missing_secrets(site, have)
    ]
    return problems + [
        Problem(
            SECRETS_FILE,
            f"tc_secrets.{owner}.{name}",
            f"missing: site.yml gives {owner}.username, so its password is needed",
            f"store it (asked for, never shown): "
            f"telecentre-ctl secrets {site.dir} --{owner}-password",
        )
        for owner, name in site.provided_secrets()
        if not (have.get(owner) or {}).get(name)
    ]


def set_provided_secret(site: Site, owner: str, name: str, value: str) -> Path:
    """Store a secret the site's admin gives (the SMTP password) in the vault."""
    if (owner, name) not in site.provided_secrets():
        raise InvalidInput(
            f"site.yml: {owner}.username is not set, so no {owner} password is used",
            fix=f"add {owner}: {{host: ..., username: ...}} to site.yml first",
        )
    if not value or "\n" in value:
        raise InvalidInput(
            f"the {owner} password is empty or has several lines", fix="give it again"
        )
    password_file = vault_password_file(site.name)
    ensure_password_file(password_file)
    path = site.dir / SECRETS_FILE
    values = read_secrets(site.dir, password_file) if path.exists() else {}
    values.setdefault(owner, {})[name] = value
    write_secrets(site.dir, password_file, values)
    return password_file
