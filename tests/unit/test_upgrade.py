"""Upgrades on the controller: versions and the catalogue's rules (run on the standard
entries, whose images cannot run here), the plan, and the fleet orchestration (with a
fake per-site run: the real one is a process per site, tested on lab hosts)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from telecentre_ctl import fleet, upgrade
from telecentre_ctl.catalog import check_entry, load_catalog
from telecentre_ctl.errors import InvalidInput
from tests.conftest import MakeSite

CATALOG = load_catalog()


def test_versions_and_their_order() -> None:
    assert upgrade.version_of("docker.io/library/nextcloud:30.0.4-apache") == "30.0.4-apache"
    assert upgrade.version_of("localhost:5000/x/y") == ""
    assert upgrade.repository_of("telecentre/radicale:3.5-1") == "telecentre/radicale"
    assert upgrade.major("30.0.4-apache") == 30 and upgrade.major("v1") is None
    assert sorted(["3.5-10", "3.5-9", "3.4-1"], key=upgrade.order_key) == [
        "3.4-1",
        "3.5-9",
        "3.5-10",
    ]
    assert upgrade.known_versions(CATALOG["nextcloud"]) == [
        "29.0.3-apache", "30.0.4-apache", "31.0.14-apache", "32.0.13-apache", "33.0.7-apache",
        "34.0.2-apache",
    ]  # fmt: skip


def nextcloud(version: str) -> str:
    return f"docker.io/library/nextcloud:{version}"


def test_nextcloud_goes_one_major_at_a_time() -> None:
    entry = CATALOG["nextcloud"]
    assert upgrade.guard(entry, nextcloud("33.0.7-apache"), entry.image, False) == []
    (problem,) = upgrade.guard(entry, nextcloud("32.0.13-apache"), entry.image, False)
    assert problem.file == "services/nextcloud/service.yml"
    assert problem.key == "upgrade.major_steps"
    assert "skips major versions" in problem.message
    assert "--to 33.0.7-apache" in problem.fix
    (far,) = upgrade.guard(entry, nextcloud("26.0.1-apache"), entry.image, False)
    assert "add a version of major 27" in far.fix


def test_database_majors_need_a_migration_and_downgrades_are_refused() -> None:
    pg = CATALOG["postgres"]
    old = "docker.io/library/postgres:15.10-bookworm"
    (problem,) = upgrade.guard(pg, old, pg.image, migrate=False)
    assert problem.key == "upgrade.migrate_major" and "by hand" in problem.fix
    assert upgrade.guard(pg, old, pg.image, migrate=True) == []
    assert upgrade.guard(pg, "docker.io/library/postgres:16.2-bookworm", pg.image, False) == []
    (down,) = upgrade.guard(pg, pg.image, old, migrate=True)
    assert "downgrade" in down.message and "restore" in down.fix
    maria = CATALOG["mariadb"]
    (bump,) = upgrade.guard(maria, "docker.io/library/mariadb:10.11.10", maria.image, False)
    assert bump.key == "upgrade.migrate_major"


def test_to_must_be_a_known_version() -> None:
    entry = CATALOG["nextcloud"]
    assert upgrade.choose_target(entry, "29.0.3-apache") == nextcloud("29.0.3-apache")
    with pytest.raises(InvalidInput, match="not a version of nextcloud") as err:
        upgrade.choose_target(entry, "31.0.0-apache")
    assert "30.0.4-apache, 31.0.14-apache" in err.value.fix
    with pytest.raises(InvalidInput, match="built from its recipe"):
        upgrade.choose_target(CATALOG["radicale"], "3.4-1")


def test_the_rules_are_checked_by_the_schema() -> None:
    data = dict(CATALOG["radicale"].data)
    bad = check_entry("radicale", data | {"upgrade": {"major_steps": 0}}, "x.yml")
    assert bad and bad[0].key == "upgrade.major_steps"
    assert check_entry("radicale", data | {"upgrade": {"known": ["latest"]}}, "x.yml")
    assert check_entry("radicale", data | {"upgrade": {"hop": 1}}, "x.yml")
    odd = data | {"build": data["build"] | {"tag": "telecentre/radicale:v3"}}
    (problem,) = check_entry("radicale", odd | {"upgrade": {"major_steps": 1}}, "x.yml")
    assert problem.key == "upgrade" and "does not start with its major" in problem.message


def test_pinned_catalog_moves_only_the_services_asked() -> None:
    data = CATALOG.as_data()
    pinned = upgrade.pinned_catalog(data, {"nextcloud": "29.0.3-apache", "radicale": "3.5-2"})
    assert pinned["nextcloud"]["image"] == nextcloud("29.0.3-apache")
    assert pinned["radicale"]["build"]["tag"] == "telecentre/radicale:3.5-2"
    assert pinned["postgres"] is data["postgres"]
    assert data["nextcloud"]["image"] == nextcloud("34.0.2-apache")  # not changed in place


def running(site: Any, **images: str) -> dict[str, dict[str, Any]]:
    host = site.hosts[0].name
    found = {s: site.catalog[s].image for s in site.placement()[host]}
    return {host: {"images": found | images, "journals": {}}}


def test_plan_of_a_site(make_site: MakeSite) -> None:
    from telecentre_ctl.site import load_site

    site = load_site(make_site())
    now = running(site, radicale="telecentre/radicale:3.5-0")
    plan = upgrade.make_plan(site, now)
    assert [(s.service, s.needed) for s in plan.todo] == [("radicale", True)]
    pinned = site.catalog["radicale"].image.rpartition(":")[2]
    assert f"3.5-0 -> {pinned}" in plan.text() and "(up to date)" in plan.text()
    only = upgrade.make_plan(site, now, service="webdav")
    assert [s.service for s in only.steps] == ["webdav"] and not only.todo
    journal = {"step": "verify", "new_image": "telecentre/webdav:x"}
    now[site.hosts[0].name]["journals"]["webdav"] = journal
    (step,) = upgrade.make_plan(site, now, service="webdav").todo
    assert "interrupted upgrade" in step.words()
    gone = {site.hosts[0].name: {"images": {}, "journals": {}}}
    with pytest.raises(InvalidInput, match="refused, nothing was changed") as err:
        upgrade.make_plan(site, gone, service="radicale")
    assert "deploy it first" in str(err.value)


def test_playbook_vars_check_apps_through_the_proxy(make_site: MakeSite) -> None:
    from telecentre_ctl.site import load_site

    site = load_site(make_site())
    host = site.hosts[0].name
    app = upgrade.Step(host, "radicale", None, "telecentre/radicale:3.5-1")
    assert upgrade.playbook_vars(site, app) == {
        "upgrade_service": "radicale",
        "upgrade_version": "3.5-1",
        "upgrade_check_host": site.fqdn("radicale"),
    }
    proxy = upgrade.Step(host, "proxy", None, "telecentre/proxy:2.6-1")
    assert upgrade.playbook_vars(site, proxy)["upgrade_check_host"] == ""


def test_cli_refuses_bad_requests_before_connecting(make_site: MakeSite) -> None:
    from telecentre_ctl.cli.main import cli

    site = make_site()
    result = CliRunner().invoke(cli, ["upgrade", str(site), "--service", "nextclod"])
    assert result.exit_code == 2
    assert "does not run it" in result.output and "radicale" in result.output
    result = CliRunner().invoke(cli, ["upgrade", str(site), "--to", "3.5-1"])
    assert result.exit_code == 2 and "--to needs --service" in result.output


def test_fleet_commands_validate_every_site_first(make_site: MakeSite, tmp_path: Path) -> None:
    from telecentre_ctl.cli.main import cli

    good, bad = make_site(), make_site(site={"name": "Bad Name"}, secrets=False)
    for command in ("deploy", "upgrade"):
        result = CliRunner().invoke(cli, [command, str(good), str(bad)])
        assert result.exit_code == 2, result.output
        assert "nothing was run: a site is invalid" in result.output
        assert not (good / "logs").exists()  # nothing ran, not even the good site
    twin = make_site()
    result = CliRunner().invoke(cli, ["deploy", str(good), str(twin)])
    assert result.exit_code == 2 and "is also the name of" in result.output
    result = CliRunner().invoke(cli, ["deploy", str(good), str(twin), "--limit", "x"])
    assert result.exit_code == 2


def runs(*names: str) -> list[fleet.SiteRun]:
    return [fleet.SiteRun(site_dir=Path(n), name=n) for n in names]


def fake(codes: dict[str, int], log: list[str]) -> fleet.Runner:
    def run(site: fleet.SiteRun) -> None:
        log.append(site.name)
        time.sleep(0.01)
        site.exit_code = codes.get(site.name, 0)

    return run


def test_canary_first_then_the_rest_with_bounded_concurrency() -> None:
    active, peak, order = [0], [0], []
    lock = threading.Lock()

    def run(site: fleet.SiteRun) -> None:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            order.append(site.name)
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        site.exit_code = 0

    done = fleet.run_fleet(runs("a", "b", "c", "d", "e"), run, parallel=2, keep_going=False)
    assert order[0] == "a" and done[0].canary and peak[0] == 2
    assert [r.state for r in done] == ["ok"] * 5
    assert fleet.worst([r.exit_code for r in done]) == 0


def test_a_failed_canary_stops_everything_unless_keep_going() -> None:
    log: list[str] = []
    done = fleet.run_fleet(runs("a", "b", "c"), fake({"a": 1}, log), parallel=2, keep_going=False)
    assert log == ["a"] and [r.state for r in done] == ["FAILED", "not run", "not run"]
    log.clear()
    done = fleet.run_fleet(
        runs("a", "b", "c"), fake({"a": 1, "c": 3}, log), parallel=1, keep_going=True
    )
    assert log == ["a", "b", "c"] and fleet.worst([r.exit_code for r in done]) == 3
    table = fleet.summary_table(done)
    assert "a (canary)" in table and "unreachable" in table


def test_a_failure_stops_the_sites_not_started_yet() -> None:
    log: list[str] = []
    done = fleet.run_fleet(
        runs("a", "b", "c", "d"), fake({"b": 1}, log), parallel=1, keep_going=False
    )
    assert log == ["a", "b"] and done[3].state == "not run"
    assert fleet.worst([r.exit_code for r in done]) == 1


def test_a_crash_in_one_site_is_isolated() -> None:
    def run(site: fleet.SiteRun) -> None:
        if site.name == "b":
            raise RuntimeError("boom")
        site.exit_code = 0

    done = fleet.run_fleet(runs("a", "b", "c"), run, parallel=2, keep_going=True)
    assert [r.state for r in done] == ["ok", "FAILED", "ok"] and "boom" in done[1].message


def test_worst_exit_code() -> None:
    assert fleet.worst([0, 1, 3, None]) == 3
    assert fleet.worst([0, 2, None]) == 1
    assert fleet.worst([None]) == 0


def test_upgrade_probe_reads_images_and_journals(tmp_path: Path, monkeypatch: Any) -> None:
    import io
    import json
    import sys

    from telecentre_ctl import upgrade_probe

    opt, journals = tmp_path / "opt", tmp_path / "journals"
    (opt / "radicale").mkdir(parents=True)
    (opt / "radicale" / "compose.yml").write_text(
        "name: tc-radicale\nservices:\n  radicale:\n    image: telecentre/radicale:3.5-1\n"
    )
    journals.mkdir()
    (journals / "radicale.json").write_text('{"step": "verify"}')
    monkeypatch.setattr(upgrade_probe, "OPT_DIR", str(opt))
    monkeypatch.setattr(upgrade_probe, "JOURNAL_DIR", str(journals))
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    upgrade_probe.main(["-", json.dumps(["radicale", "webdav"])])
    assert json.loads(out.getvalue()) == {
        "images": {"radicale": "telecentre/radicale:3.5-1"},
        "journals": {"radicale": {"step": "verify"}},
    }


def test_status_shows_rolled_back_and_interrupted_upgrades(tmp_path: Path) -> None:
    from telecentre_ctl import status as st
    from tests.unit.test_status import judge, load_variant, probe_set

    site = load_variant(tmp_path, "fr")
    back = {"radicale": {"step": "rolled-back", "new_image": "telecentre/radicale:3.5-3",
                         "finished": "2026-01-05T10:32:00Z"}}  # fmt: skip
    report = judge(site, probe_set("backup.upgrades", back))
    (found,) = [f for f in report.findings if f.code == "upgrade_rolled_back"]
    assert found.level == st.Level.WARNING and "3.5-3" in found.message
    assert "Agendas, contacts et réservations" in found.message and report.exit_code == 0
    stuck = judge(site, probe_set("backup.upgrades", {"radicale": {"step": "verify"}}))
    (found,) = [f for f in stuck.findings if f.code == "upgrade_interrupted"]
    assert found.level == st.Level.DEGRADED and stuck.exit_code == 1
    assert "relancez telecentre-ctl upgrade" in found.message
    done = judge(site, probe_set("backup.upgrades", {"radicale": {"step": "done"}}))
    assert not [f for f in done.findings if f.code.startswith("upgrade_")]
