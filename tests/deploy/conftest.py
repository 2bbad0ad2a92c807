"""Deploy-tier fixtures: a fresh site `deploytest` on two real lab hosts, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from telecentre_ctl.lab import testing

SITE = testing.site_name("deploytest")
DECLARED_PORT = 8443  # the site's open_ports: a declared extra port

# The CLI as users run it, in its own process.
CLI = "from telecentre_ctl.cli.main import main\nmain()\n"


@dataclass
class Deployed:
    """The site folder, its lab, the admin's key and how to run the CLI on it."""

    site_dir: Path
    lab: testing.Lab
    admin_key: Path
    env: dict[str, str]

    def cli(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", CLI, *args],
            capture_output=True, text=True, env=self.env, timeout=timeout, check=False,
        )  # fmt: skip

    def deploy(self, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
        proc = self.cli("deploy", str(self.site_dir), "--json", *args)
        data = json.loads(proc.stdout) if proc.stdout.strip() else {}
        return proc, data

    def popen_deploy(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", CLI, "deploy", str(self.site_dir), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env,
        )  # fmt: skip


def write_deploy_site(site_dir: Path, admin_pub: str) -> None:
    site_dir.mkdir(parents=True, exist_ok=True)
    (site_dir / "site.yml").write_text(
        f"name: {SITE}\n"
        'title: "Deploy test"\n'
        "locale: en\n"
        "admin_email: admin@example.org\n"
        f'admins: [{{name: alice, ssh_key: "{admin_pub}"}}]\n'
        "profile: lite\n"
        "services: {}\n"
        f"open_ports: [{DECLARED_PORT}]\n"
        'backup: {target: /srv/backup, time: "02:30", keep: {daily: 7, weekly: 4, monthly: 6}}\n',
        encoding="utf-8",
    )


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    """Two fresh lab hosts for site `deploytest` (not yet deployed), removed afterwards."""
    from telecentre_ctl.secrets import ensure_site_secrets
    from telecentre_ctl.site import load_site

    base = tmp_path_factory.mktemp("deploy")
    key = base / "alice_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alice", "-f", str(key)],
                   check=True)  # fmt: skip
    site_dir = base / SITE
    write_deploy_site(site_dir, key.with_suffix(".pub").read_text().strip())
    env = dict(os.environ)
    env["TELECENTRE_VAULT_PASSWORD_FILE"] = str(base / "vault.pass")
    env.pop("XDG_CONFIG_HOME", None)
    with testing.running_lab(site_dir, 2) as lab:
        saved = os.environ.get("TELECENTRE_VAULT_PASSWORD_FILE")
        os.environ["TELECENTRE_VAULT_PASSWORD_FILE"] = env["TELECENTRE_VAULT_PASSWORD_FILE"]
        try:
            ensure_site_secrets(load_site(site_dir, check_secrets=False))
        finally:
            if saved is None:
                os.environ.pop("TELECENTRE_VAULT_PASSWORD_FILE", None)
            else:
                os.environ["TELECENTRE_VAULT_PASSWORD_FILE"] = saved
        yield Deployed(site_dir, lab, key, env)
