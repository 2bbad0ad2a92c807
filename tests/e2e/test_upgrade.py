"""Upgrades for real on a lab host, with lite images: a site running Radicale (and the
proxy) is deployed from a copy of the catalogue, whose Radicale recipe then changes:

- vN -> vN+1 works and keeps the calendars (a CalDAV client before and after);
- a broken vN+1 (its healthcheck fails, after it has written into its data) is rolled
  back automatically: old image, data as before, exit 1, and `status` says so;
- an upgrade killed midway (SIGKILL of the controller and of the host's upgrade unit) is
  finished by running it again;
- deploy and upgrade agree: a newer pin is refused by deploy (and --check) before anything
  changes on the host, with the upgrade to run; a recipe rebuilt under the same tag is
  deployed as usual.

The real catalogue is never changed: the copy is selected with TELECENTRE_SERVICES_DIR.
Its healthcheck runs every 2 s so that a failing version is found out in seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from telecentre_ctl.lab import testing
from telecentre_ctl.lab.testing import resolve_to
from telecentre_ctl.paths import DEMO_SITE, SERVICES_DIR
from telecentre_ctl.upgrade import version_of
from tests.conftest import DeployedSite, LabFactory, set_services
from tests.e2e.clients import fetch_ca

pytestmark = pytest.mark.e2e

JOURNAL = "/var/lib/telecentre/backup/upgrade/radicale.json"


class CatalogSite(DeployedSite):
    """A deployed site whose commands read the catalogue copy."""

    catalog: Path

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "TELECENTRE_SERVICES_DIR": str(self.catalog)}


def set_recipe(catalog: Path, tag: str, *, healthy: bool = True, slow: int = 0) -> None:
    """Radicale's entry at `tag`; its recipe marks its version in the data it serves, and
    may start slowly or never pass its healthcheck."""
    entry_file = catalog / "radicale" / "service.yml"
    entry = yaml.safe_load(entry_file.read_text(encoding="utf-8"))
    entry["build"]["tag"] = f"telecentre/radicale:{tag}"
    entry["healthcheck"] |= {"interval": "2s", "retries": 2, "start_period": "60s"}
    entry_file.write_text(yaml.safe_dump(entry, allow_unicode=True), encoding="utf-8")
    build, original = catalog / "radicale" / "build", SERVICES_DIR / "radicale" / "build"
    lines = (original / "entrypoint").read_text(encoding="utf-8").splitlines()
    extra = [f"sleep {slow}"] if slow else []
    if not healthy:  # what a bad release does: changes the data, then never works
        extra.append(f"echo {tag} > /var/lib/radicale/collections/written-by-{tag}")
    (build / "entrypoint").write_text("\n".join([*lines[:3], *extra, *lines[3:]]) + "\n")
    check = (original / "healthcheck").read_text(encoding="utf-8")
    (build / "healthcheck").write_text(check if healthy else "#!/bin/sh\nexit 1\n")
    dockerfile = (original / "Dockerfile").read_text(encoding="utf-8")
    (build / "Dockerfile").write_text(dockerfile + f"LABEL org.telecentre.test-release={tag}\n")


@pytest.fixture(scope="module")
def site(lab_factory: LabFactory, tmp_path_factory: pytest.TempPathFactory) -> CatalogSite:
    base = tmp_path_factory.mktemp("upgrade")
    catalog = base / "services"
    shutil.copytree(SERVICES_DIR, catalog)
    set_recipe(catalog, "3.5-1")
    name = testing.site_name("upgr")
    site_dir = testing.write_site(base / name, name, DEMO_SITE / "site.yml")
    set_services(site_dir, {"radicale": {}})
    lab = lab_factory(site_dir, 1)
    deployed = CatalogSite(lab=lab, site_dir=site_dir, config=base / "config")
    deployed.catalog = catalog
    deployed.cli("secrets", str(site_dir))
    deployed.deploy()
    return deployed


@pytest.fixture(scope="module")
def calendar(site: CatalogSite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A CalDAV client's view of the site; one event made before any upgrade."""
    import caldav

    ca = fetch_ca(site, tmp_path_factory.mktemp("ca") / "ca.crt")
    domain = f"{site.name}.home.arpa"
    password = site.secrets()["radicale"]["admin_password"]
    uid = f"{uuid.uuid4()}@telecentre"

    def events() -> list[str]:
        client = caldav.DAVClient(
            url=f"https://agenda.{domain}/admin/",
            username="admin",
            password=password,
            ssl_verify_cert=str(ca),
        )
        return [e.data for c in client.principal().calendars() for e in c.events()]

    with resolve_to(domain, site.address):
        client = caldav.DAVClient(
            url=f"https://agenda.{domain}/admin/",
            username="admin",
            password=password,
            ssl_verify_cert=str(ca),
        )
        client.principal().make_calendar(name="Atelier").save_event(
            "BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//telecentre-ctl//e2e//FR\nBEGIN:VEVENT\n"
            f"UID:{uid}\nDTSTAMP:20261129T090000Z\nDTSTART:20261201T090000Z\n"
            "DTEND:20261201T100000Z\nSUMMARY:Café réparation\nEND:VEVENT\nEND:VCALENDAR\n"
        )
        events.uid = uid  # type: ignore[attr-defined]
        yield events


def running_image(site: CatalogSite) -> str:
    return site.run("docker inspect --format '{{.Config.Image}}' tc-radicale").stdout.strip()


def upgrade_json(site: CatalogSite, code: int) -> dict[str, Any]:
    proc = site.cli("upgrade", str(site.site_dir), "--json", check=False)
    assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    data: dict[str, Any] = json.loads(proc.stdout)
    data["_stderr"] = proc.stderr
    return data


def has_event(calendar: Any) -> bool:
    return any(calendar.uid in text and "Café réparation" in text for text in calendar())


def test_upgrade_to_the_next_version_keeps_the_data(site: CatalogSite, calendar: Any) -> None:
    set_recipe(site.catalog, "3.5-2")
    done = upgrade_json(site, 0)
    (step,) = [s for s in done["plan"] if s["needed"]]
    assert (step["service"], step["from"], step["to"]) == ("radicale", "3.5-1", "3.5-2")
    assert "3.5-1 -> 3.5-2" in done["_stderr"]
    (host,) = done["upgrades"][0]["hosts"]
    assert host["ok"] and "answering through the proxy" in host["message"], host
    assert running_image(site) == "telecentre/radicale:3.5-2"
    assert has_event(calendar)
    snapshots = json.loads(site.run("telecentre-backup snapshots").stdout)
    safety = [s for s in snapshots if "upgrade" in (s.get("tags") or [])]
    assert safety and safety[-1]["short_id"] == host["snapshot"]
    again = upgrade_json(site, 0)  # nothing left to do
    assert not [s for s in again["plan"] if s["needed"]] and not again["upgrades"]


def test_a_broken_version_is_rolled_back_with_its_data(site: CatalogSite, calendar: Any) -> None:
    set_recipe(site.catalog, "3.5-3", healthy=False)
    failed = upgrade_json(site, 1)
    (host,) = failed["upgrades"][0]["hosts"]
    assert not host["ok"] and "rolled back automatically to 3.5-2" in host["message"], host
    assert "rolled back" in failed["_stderr"]
    assert running_image(site) == "telecentre/radicale:3.5-2"
    health = site.run("docker inspect --format '{{.State.Health.Status}}' tc-radicale")
    assert health.stdout.strip() == "healthy"
    written = site.run("ls /srv/telecentre/radicale/collections").stdout
    assert "written-by-3.5-3" not in written  # the data is the one from before
    assert has_event(calendar)
    report = json.loads(site.cli("status", str(site.site_dir), "--json", check=False).stdout)
    found = [f for f in report["sites"][0]["findings"] if f["code"] == "upgrade_rolled_back"]
    assert found and "3.5-3" in found[0]["message"], report["sites"][0]["findings"]


def test_an_upgrade_killed_midway_is_finished_by_running_it_again(
    site: CatalogSite, calendar: Any
) -> None:
    set_recipe(site.catalog, "3.5-4", slow=8)
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "telecentre-ctl"), "upgrade", str(site.site_dir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=site.env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 600
        step = None
        while time.monotonic() < deadline and proc.poll() is None:
            text = site.run(f"cat {JOURNAL}", check=False).stdout
            journal = json.loads(text) if text.strip() else {}
            step = journal.get("step") if journal.get("new_image", "").endswith("3.5-4") else None
            if step in ("switch", "verify"):
                break
            time.sleep(0.3)
        assert step in ("switch", "verify"), f"the upgrade never reached the switch ({step})"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    site.run("systemctl kill --signal=SIGKILL telecentre-upgrade.service", check=False)
    journal = json.loads(site.run(f"cat {JOURNAL}").stdout)
    assert journal["step"] in ("switch", "verify")  # killed midway indeed
    done = upgrade_json(site, 0)
    assert "interrupted upgrade" in done["_stderr"]
    (host,) = done["upgrades"][0]["hosts"]
    assert host["message"].startswith("Finished an interrupted upgrade"), host
    assert running_image(site) == "telecentre/radicale:3.5-4"
    assert json.loads(site.run(f"cat {JOURNAL}").stdout)["step"] == "done"
    assert has_event(calendar)


def test_fleet_upgrade_isolates_a_site_whose_host_is_down(
    site: CatalogSite, tmp_path: Path
) -> None:
    """Two telecentres: this one, and one whose only host does not answer (nothing listens
    at its address). The canary first: when it is the dead one, the other is not run;
    with --keep-going it is, and the exit code is the worst (3)."""
    name = testing.site_name("dead")
    dead = testing.write_site(tmp_path / "dead", name, site.site_dir / "site.yml")
    known = site.lab.state.paths.known_hosts  # a real known_hosts: the port is what fails
    (dead / "hosts.yml").write_text(
        yaml.safe_dump({"telecentre": {"hosts": {"dead-1": {
            "ansible_host": "127.0.0.1", "ansible_port": 9, "ansible_user": "root",
            "tc_known_hosts_file": str(known)}}}})
    )  # fmt: skip
    site.cli("secrets", str(dead))
    args = ("upgrade", str(dead), str(site.site_dir), "--json")
    stopped = site.cli(*args, check=False)
    assert stopped.returncode == 3, stopped.stderr[-3000:]
    runs = {r["dir"]: r for r in json.loads(stopped.stdout)["sites"]}
    assert runs[str(dead)]["canary"] and runs[str(dead)]["state"] == "unreachable"
    assert runs[str(site.site_dir)]["state"] == "not run"
    assert "SITE" in stopped.stderr and "canary" in stopped.stderr  # the summary table
    both = site.cli(*args, "--keep-going", check=False)
    assert both.returncode == 3, both.stderr[-3000:]
    runs = {r["dir"]: r for r in json.loads(both.stdout)["sites"]}
    assert runs[str(site.site_dir)]["state"] == "ok"
    assert runs[str(dead)]["state"] == "unreachable" and "dead-1" in runs[str(dead)]["message"]


def deploy_json(site: CatalogSite, *args: str, code: int) -> dict[str, Any]:
    proc = site.deploy(*args, "--json", check=False)
    assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    data: dict[str, Any] = json.loads(proc.stdout)
    (data["host"],) = data["hosts"].values()
    data["_stderr"] = proc.stderr
    return data


def test_deploy_leaves_a_version_change_to_upgrade(site: CatalogSite, calendar: Any) -> None:
    """A newer pin in the catalogue: deploy (and --check) refuses the host before changing
    anything on it and names the upgrade to run; the upgrade rules hold for deploy too (a
    downgrade). The upgrade prepares what the new version needs as deploy would (here a
    new secret); after it, deploy agrees with it and changes nothing."""
    before = running_image(site)
    compose = site.run("cat /opt/telecentre/radicale/compose.yml").stdout
    set_recipe(site.catalog, "3.6-1")
    for args in (("--check",), ()):
        refused = deploy_json(site, *args, code=1)
        host = refused["host"]
        assert host["status"] == "failed" and host["changed"] == 0, host
        change = f"radicale {version_of(before)} -> 3.6-1"
        assert host["message"].startswith("deploy refused, nothing was changed on"), host
        assert change in host["message"], host
        command = f"telecentre-ctl upgrade {site.site_dir} --service radicale"
        assert any(command in note for note in host["notes"]), host["notes"]
        assert "REFUSED" in refused["_stderr"] and command in refused["_stderr"]
    assert running_image(site) == before
    assert site.run("cat /opt/telecentre/radicale/compose.yml").stdout == compose
    built = site.run("docker image inspect telecentre/radicale:3.6-1", check=False)
    assert built.returncode != 0  # not even built: the host was left alone
    set_recipe(site.catalog, "3.5-0")  # older than what the host runs
    down = deploy_json(site, "--check", code=1)["host"]
    assert any("is a downgrade" in note and "telecentre-ctl restore" in note
               for note in down["notes"]), down  # fmt: skip
    set_recipe(site.catalog, "3.6-1")
    entry_file = site.catalog / "radicale" / "service.yml"  # a secret new in 3.6-1
    entry = yaml.safe_load(entry_file.read_text(encoding="utf-8"))
    entry["secrets"]["sync_token"] = {"file": True}
    entry_file.write_text(yaml.safe_dump(entry, allow_unicode=True), encoding="utf-8")
    site.cli("secrets", str(site.site_dir))
    upgraded = upgrade_json(site, 0)
    assert upgraded["upgrades"][0]["hosts"][0]["ok"]
    assert running_image(site) == "telecentre/radicale:3.6-1"
    token = site.secrets()["radicale"]["sync_token"]
    assert site.run("docker exec tc-radicale cat /run/secrets/sync_token").stdout == token
    again = deploy_json(site, code=0)["host"]
    assert again["status"] == "ok" and again["changed"] == 0, again
    assert has_event(calendar)


def test_a_recipe_rebuilt_under_the_same_tag_is_deployed(site: CatalogSite, calendar: Any) -> None:
    """No version change: deploy rebuilds the image and recreates the container."""
    tag = version_of(running_image(site))
    image_id = "docker inspect --format '{{.Image}}' tc-radicale"
    before = site.run(image_id).stdout.strip()
    set_recipe(site.catalog, tag)
    dockerfile = site.catalog / "radicale" / "build" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "LABEL org.telecentre.test-rebuild=1\n")
    done = deploy_json(site, code=0)["host"]
    assert done["status"] == "changed", done
    assert running_image(site) == f"telecentre/radicale:{tag}"
    assert site.run(image_id).stdout.strip() != before
    label = site.run(
        "docker inspect --format '{{index .Config.Labels \"org.telecentre.test-rebuild\"}}' "
        "tc-radicale"
    )
    assert label.stdout.strip() == "1"
    assert has_event(calendar)
