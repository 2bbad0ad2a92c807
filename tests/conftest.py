"""Shared fixtures: throwaway site folders, lab hosts, and a deployed demo site."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from telecentre_ctl.lab import testing
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
            if "directory" not in (data.get("services") or {}) and "members" not in site:
                data.pop("members", None)  # the demo's plans need its directory
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


# --- lab tiers: real lab hosts, shared by every test session ----------------------------

LabFactory = Callable[[Path, int], "testing.Lab"]


def needs_lab(item: pytest.Item) -> bool:
    return bool(item.get_closest_marker("lab") or item.get_closest_marker("e2e"))


LAB_MISSING = pytest.StashKey[str]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Lab and end-to-end tests skip, saying why, where lab hosts cannot run (not root),
    unless TELECENTRE_REQUIRE_LAB=1 (CI): then each of them fails with that reason."""
    if not any(needs_lab(item) for item in items):
        return
    reason = testing.skip_reason()
    if reason is None:
        return
    for item in filter(needs_lab, items):
        if testing.lab_required():
            item.stash[LAB_MISSING] = reason
        else:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(tryfirst=True)  # before any fixture starts a lab
def pytest_runtest_setup(item: pytest.Item) -> None:
    reason = item.stash.get(LAB_MISSING, None)
    if reason is not None:
        pytest.fail(f"{testing.REQUIRE_LAB_ENV}=1 and {reason}", pytrace=False)


@pytest.fixture(scope="session")
def lab_factory() -> Iterator[LabFactory]:
    """Start N lab hosts for a site folder; every lab started is removed at session end."""
    with ExitStack() as stack:

        def start(site_dir: Path, count: int) -> testing.Lab:
            return stack.enter_context(testing.running_lab(site_dir, count))

        yield start


@dataclass
class DeployedSite:
    """A copy of the demo site deployed for real on one lab host, shared by the tiers that
    use services (e2e, status, backup). Its vault password file lives in `config`."""

    lab: testing.Lab
    site_dir: Path
    config: Path
    # (login, first password) of the member of the admin plan the fixture adds: the
    # account the tests use on every service (the site runs the members' directory)
    admin: tuple[str, str] = ("", "")

    @property
    def name(self) -> str:
        return self.lab.state.site

    @property
    def address(self) -> str:
        return self.lab.hosts[0].address

    @property
    def password_file(self) -> Path:
        return self.config / "telecentre-ctl" / "vault" / f"{self.name}.pass"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "XDG_CONFIG_HOME": str(self.config),
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        }

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run telecentre-ctl as a user would, in its own process."""
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "telecentre-ctl"), *args],
            capture_output=True,
            text=True,
            env=self.env,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"telecentre-ctl {' '.join(args)} exited {proc.returncode}\n"
                f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return proc

    def deploy(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cli("deploy", str(self.site_dir), *args, check=check)

    def add_member(self, name: str, email: str, plan: str) -> tuple[str, str]:
        """`members add` as a volunteer runs it; (login, first password)."""
        proc = self.cli("members", str(self.site_dir), "add", "--name", name, "--email", email,
                        "--plan", plan, "--json")  # fmt: skip
        added = json.loads(proc.stdout)["added"][0]
        return str(added["uid"]), str(added["password"])

    def secrets(self) -> dict[str, dict[str, str]]:
        from telecentre_ctl.secrets import read_secrets

        return read_secrets(self.site_dir, self.password_file)

    def run(self, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.lab.run(self.lab.hosts[0], command, check=check)


@pytest.fixture(scope="session")
def deployed_demo(
    lab_factory: LabFactory, tmp_path_factory: pytest.TempPathFactory
) -> DeployedSite:
    """The demo site (renamed e2edemo) on one lab host, deployed once per session."""
    base = tmp_path_factory.mktemp("deployed")
    name = testing.site_name("e2edemo")
    site_dir = testing.write_site(base / name, name, DEMO_SITE / "site.yml")
    lab = lab_factory(site_dir, 1)
    deployed = DeployedSite(lab=lab, site_dir=site_dir, config=base / "config")
    with_test_plan(site_dir)
    deployed.cli("secrets", str(site_dir))
    deployed.deploy()
    deployed.admin = deployed.add_member("Équipe Essais", "equipe-essais@example.org", "equipe")
    return deployed


def set_services(site_dir: Path, services: dict[str, Any]) -> None:
    """A site's services replaced (its members settings dropped without the directory)."""
    data = yaml.safe_load((site_dir / "site.yml").read_text(encoding="utf-8"))
    data["services"] = services
    if "directory" not in services:
        data.pop("members", None)
    (site_dir / "site.yml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")


# A plan with a small quota, so that tests can fill a member's folder.
TEST_PLAN = {"essai": {"groups": ["members"], "quota_gb": 0.01}}


def with_test_plan(site_dir: Path) -> None:
    data = yaml.safe_load((site_dir / "site.yml").read_text(encoding="utf-8"))
    data["members"]["plans"] |= TEST_PLAN
    (site_dir / "site.yml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
