"""Shared fixtures: throwaway site folders with their own vault password file."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from telecentre_ctl.paths import DEMO_SITE, INVENTORY_DIR

EXAMPLE_SITE = INVENTORY_DIR / "example-standard"


@pytest.fixture(autouse=True)
def isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Vault password files and other per-user state go to a temporary folder."""
    config = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    monkeypatch.delenv("TELECENTRE_VAULT_PASSWORD_FILE", raising=False)
    yield config


MakeSite = Callable[..., Path]


@pytest.fixture
def make_site(tmp_path: Path) -> MakeSite:
    """Copy the demo (or another) site, apply changes to site.yml/hosts.yml, add secrets."""
    counter = iter(range(1000))

    def make(
        source: Path = DEMO_SITE,
        site: dict[str, Any] | None = None,
        hosts: dict[str, Any] | None = None,
        drop: tuple[str, ...] = (),
        secrets: bool = True,
    ) -> Path:
        target = tmp_path / f"site{next(counter)}"
        target.mkdir()
        for name in ("site.yml", "hosts.yml"):
            shutil.copy(source / name, target / name)
        if site is not None:
            data = yaml.safe_load((target / "site.yml").read_text(encoding="utf-8"))
            data.update(site)
            for key in drop:
                data.pop(key, None)
            (target / "site.yml").write_text(
                yaml.safe_dump(data, allow_unicode=True), encoding="utf-8"
            )
        if hosts is not None:
            (target / "hosts.yml").write_text(yaml.safe_dump(hosts), encoding="utf-8")
        if secrets:
            from telecentre_ctl.secrets import ensure_site_secrets
            from telecentre_ctl.site import load_site

            ensure_site_secrets(load_site(target, check_secrets=False))
        return target

    return make
