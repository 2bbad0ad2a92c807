"""Lab tier: `deploy --purge` on two real hosts deletes only the data of services that no
host of the site runs any more, including one taken out by an earlier deploy (its compose
project gone, its data folder left), and never the data of a service moved to another
host (it may be the only copy); deploy says which data it keeps, and why.

    1. radicale and webdav on host 1 (host 2 runs only the proxy); a file in each one's data;
    2. webdav taken out of site.yml, deployed without --purge: stopped, data kept, said so;
    3. radicale moved to host 2, deployed with --purge: webdav's data goes, radicale's stays
       on host 1 (said so) and radicale runs on host 2.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from telecentre_ctl.lab import testing
from telecentre_ctl.paths import DEMO_SITE
from tests.conftest import DeployedSite, LabFactory, set_services

pytestmark = pytest.mark.lab

SITE = testing.site_name("purge")
RADICALE_CANARY = "/srv/telecentre/radicale/collections/canary-moved"
WEBDAV_CANARY = "/srv/telecentre/webdav/files/canary-removed"


@pytest.fixture(scope="module")
def two_hosts(lab_factory: LabFactory, tmp_path_factory: pytest.TempPathFactory) -> DeployedSite:
    base = tmp_path_factory.mktemp("purge")
    site_dir = testing.write_site(base / SITE, SITE, DEMO_SITE / "site.yml")
    set_services(site_dir, services={"radicale": {}, "webdav": {}})
    lab = lab_factory(site_dir, 2)
    deployed = DeployedSite(lab=lab, site_dir=site_dir, config=base / "config")
    deployed.cli("secrets", str(site_dir))
    return deployed


def place(site: DeployedSite, first: list[str], second: list[str]) -> None:
    path = site.site_dir / "hosts.yml"
    inventory = yaml.safe_load(path.read_text())
    hosts = inventory["all"]["children"]["telecentre"]["hosts"]
    for host, services in zip(site.lab.hosts, (first, second), strict=True):
        hosts[host.name]["tc_services"] = services
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))


def deploy(site: DeployedSite, *args: str) -> tuple[dict[str, Any], str]:
    proc = site.deploy("--json", *args)
    return json.loads(proc.stdout)["hosts"], proc.stderr


def exists(site: DeployedSite, number: int, path: str) -> bool:
    return site.lab.run(site.lab.hosts[number], f"test -e {path}", check=False).returncode == 0


def test_purge_keeps_moved_data_and_deletes_data_removed_earlier(two_hosts: DeployedSite) -> None:
    site = two_hosts
    one, two = (h.name for h in site.lab.hosts)

    # 1. both services on host 1, with data
    place(site, ["radicale", "webdav"], [])
    deploy(site, "--limit", one)
    for canary in (RADICALE_CANARY, WEBDAV_CANARY):
        site.lab.run(site.lab.hosts[0], f"echo kept > {canary}")

    # 2. webdav leaves the site, without --purge: stopped, its data kept, and said so
    set_services(site.site_dir, services={"radicale": {}})
    place(site, ["radicale"], [])
    hosts, stderr = deploy(site, "--limit", one)
    assert not exists(site, 0, "/opt/telecentre/webdav") and exists(site, 0, WEBDAV_CANARY)
    note = "webdav is no longer in the site: its data stays in /srv/telecentre/webdav"
    assert any(n.startswith(note) for n in hosts[one]["notes"]), hosts[one]["notes"]
    assert f"note: {note}" in stderr

    # 3. radicale moves to host 2, with --purge
    place(site, [], ["radicale"])
    hosts, stderr = deploy(site, "--purge")
    assert not exists(site, 0, "/srv/telecentre/webdav"), "the service removed earlier is purged"
    assert exists(site, 0, RADICALE_CANARY), "the data of a moved service must stay"
    assert not exists(site, 0, "/opt/telecentre/radicale")
    moved = f"radicale now runs on {two}: its data here, in /srv/telecentre/radicale, is kept"
    assert any(n.startswith(moved) for n in hosts[one]["notes"]), hosts[one]["notes"]
    assert "note: " + moved in stderr
    health = site.lab.run(
        site.lab.hosts[1], "docker inspect -f '{{.State.Health.Status}}' tc-radicale"
    ).stdout.strip()
    assert health == "healthy"
    assert hosts[two]["status"] in ("ok", "changed") and hosts[one]["status"] in ("ok", "changed")

    # a re-run changes nothing, and still says what it keeps
    hosts, _ = deploy(site, "--purge")
    assert hosts[one]["changed"] == 0 and hosts[two]["changed"] == 0, hosts
    assert exists(site, 0, RADICALE_CANARY)
