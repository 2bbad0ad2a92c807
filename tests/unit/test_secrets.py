from __future__ import annotations

import stat
from pathlib import Path

import pytest

from telecentre_ctl.errors import InvalidInput
from telecentre_ctl.secrets import (
    ensure_site_secrets,
    new_secret,
    read_secrets,
    vault_password_file,
    write_secrets,
)
from telecentre_ctl.site import load_site
from tests.conftest import EXAMPLE_SITE, MakeSite


def test_secrets_have_at_least_128_bits_and_differ() -> None:
    values = {new_secret() for _ in range(200)}
    assert len(values) == 200
    # token_urlsafe: 6 bits per character; 24 bytes -> 32 characters = 192 bits
    assert min(len(v) for v in values) * 6 >= 128
    assert len(new_secret(1)) * 6 >= 128  # never fewer than 16 bytes


def test_vault_round_trip_and_modes(make_site: MakeSite) -> None:
    site = load_site(make_site(source=EXAMPLE_SITE, secrets=False), check_secrets=False)
    password_file, added, created = ensure_site_secrets(site)
    assert created and stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(password_file.parent.stat().st_mode) == 0o700
    assert not password_file.is_relative_to(site.dir)
    secrets_file = site.dir / "secrets.yml"
    assert secrets_file.read_bytes().startswith(b"$ANSIBLE_VAULT;1.1;AES256")
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    values = read_secrets(site.dir, password_file)
    assert "nextcloud.db_password" in added and "backup.restic_password" in added
    for service, names in site.required_secrets().items():
        for name in names:
            assert values[service][name]
            assert values[service][name].encode() not in secrets_file.read_bytes()


def test_existing_secrets_are_never_changed(make_site: MakeSite) -> None:
    site = load_site(make_site(), check_secrets=False)
    password_file = vault_password_file(site.name)
    before = read_secrets(site.dir, password_file)
    _, added, created = ensure_site_secrets(site)
    assert added == [] and not created
    assert read_secrets(site.dir, password_file) == before


def test_wrong_password_is_a_clear_error(make_site: MakeSite, tmp_path: Path) -> None:
    site_dir = make_site()
    other = tmp_path / "other.pass"
    other.write_text("not the password\n")
    with pytest.raises(InvalidInput) as err:
        read_secrets(site_dir, other)
    assert "cannot decrypt" in str(err.value)


def test_write_is_atomic_and_readable_with_ansible_vault(make_site: MakeSite) -> None:
    import subprocess

    site_dir = make_site()
    password_file = vault_password_file("demo")
    write_secrets(site_dir, password_file, {"x": {"y": "z"}})
    out = subprocess.run(
        [
            "ansible-vault",
            "view",
            "--vault-password-file",
            str(password_file),
            str(site_dir / "secrets.yml"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "tc_secrets" in out.stdout and "z" in out.stdout
    assert not list(site_dir.glob(".secrets.*"))
