"""deploy and upgrade agree: what deploy refuses to move on a host (a service keeping data
going to another version, an interrupted upgrade) and why, from the same rules as
`upgrade`. The real run of that check, on a lab host, is in tests/e2e/test_upgrade.py."""

from __future__ import annotations

import io
from typing import Any

import yaml

from telecentre_ctl import upgrade
from telecentre_ctl.ansible_plugins.filter.telecentre import FilterModule
from telecentre_ctl.catalog import load_catalog
from telecentre_ctl.compose import image_ref
from telecentre_ctl.paths import PLAYBOOKS_DIR, PROJECT_ROOT

LITE = load_catalog().for_profile("lite").as_data()
STANDARD = load_catalog().for_profile("standard").as_data()
SITE = "/srv/sites/comptoir"


def refusals(catalog: dict[str, Any], journals: dict[str, Any] | None = None,
             **images: str) -> list[upgrade.Refusal]:  # fmt: skip
    running = {"images": images, "journals": journals or {}}
    return upgrade.deploy_refusals(running, sorted(catalog), catalog, SITE)


def pinned(catalog: dict[str, Any], name: str) -> str:
    return image_ref(catalog[name])


def test_a_fresh_host_and_the_pinned_versions_are_deployed() -> None:
    """Only image references are compared: a recipe rebuilt under the same tag (the role
    rebuilds it from the recipe's digest) is no version change."""
    assert refusals(LITE) == []
    assert refusals(LITE, radicale=pinned(LITE, "radicale"), proxy=pinned(LITE, "proxy")) == []


def test_a_service_keeping_data_is_not_moved_by_deploy() -> None:
    (refused,) = refusals(LITE, radicale="telecentre/radicale:3.5-0")
    assert refused.service == "radicale"
    assert refused.change == f"3.5-0 -> {upgrade.version_of(pinned(LITE, 'radicale'))}"
    assert f"run telecentre-ctl upgrade {SITE} --service radicale" in refused.note
    assert "keeps data" in refused.note and "then deploy again" in refused.note
    # a database of its own is data too (the pads keep theirs in PostgreSQL)
    (pads,) = refusals(LITE, pads="telecentre/pads:3.4.3-1")
    assert "--service pads" in pads.note
    assert upgrade.keeps_data(load_catalog()["pads"])
    assert upgrade.keeps_data(load_catalog()["postgres"])  # its data folder


def test_a_service_without_data_is_switched_by_deploy_even_backwards() -> None:
    assert not upgrade.keeps_data(load_catalog()["redis"])
    assert not upgrade.keeps_data(load_catalog()["collabora"])
    assert refusals(STANDARD, redis="docker.io/library/redis:7.4.9-alpine") == []
    newer = "docker.io/collabora/code:99.1.1.1"
    assert refusals(STANDARD, collabora=newer) == []
    entry = load_catalog()["collabora"]
    assert upgrade.guard(entry, newer, entry.image, migrate=False) == []  # upgrade agrees


def test_the_upgrade_rules_hold_for_deploy() -> None:
    (skip,) = refusals(STANDARD, nextcloud="docker.io/library/nextcloud:32.0.13-apache")
    assert "refused by its upgrade rules" in skip.note and "skips major versions" in skip.note
    assert "services/nextcloud/service.yml, upgrade.major_steps" in skip.note
    assert "--service nextcloud --to 33.0.7-apache" in skip.note
    (major,) = refusals(STANDARD, postgres="docker.io/library/postgres:15.10-bookworm")
    assert "upgrade.migrate_major" in major.note and "migrate by hand" in major.note
    (down,) = refusals(LITE, radicale="telecentre/radicale:9.9-1")
    assert "is a downgrade" in down.note and "telecentre-ctl restore" in down.note
    # a site moved from the standard to the lite profile: PostgreSQL 16 -> Debian's 17
    (variant,) = refusals(LITE, postgres="docker.io/library/postgres:16.13-bookworm")
    assert variant.change == "16.13-bookworm -> 17-1" and "migrate_major" in variant.note


def test_an_interrupted_upgrade_is_finished_by_upgrade_first() -> None:
    journal = {"step": "verify", "new_image": "telecentre/radicale:3.5-9"}
    (refused,) = refusals(LITE, {"radicale": journal}, radicale=pinned(LITE, "radicale"))
    assert refused.change == "upgrade to 3.5-9 interrupted"
    assert "at 'verify'" in refused.note and "finish it or roll it back" in refused.note
    done = {"radicale": {"step": "rolled-back", "new_image": "telecentre/radicale:3.5-9"}}
    assert refusals(LITE, done, radicale=pinned(LITE, "radicale")) == []


def test_the_filters_give_ansible_plain_data_and_one_line() -> None:
    filters = FilterModule().filters()
    running = {"images": {"radicale": "telecentre/radicale:3.5-0"}, "journals": {}}
    found = filters["tc_deploy_refusals"](running, ["radicale", "proxy"], LITE, SITE)
    assert [set(r) for r in found] == [{"service", "change", "note"}]
    line = filters["tc_deploy_refused_message"](found, "box-1")
    assert line.startswith(upgrade.DEPLOY_REFUSED) and "nothing was changed on box-1" in line
    assert "radicale 3.5-0 -> " in line and "\n" not in line


def test_the_check_comes_before_anything_changes() -> None:
    """The first play of site.yml, tagged always: deploy --images runs the roles base and
    docker alone first (--tags), and the check must come before them too."""
    plays = yaml.safe_load((PLAYBOOKS_DIR / "site.yml").read_text(encoding="utf-8"))
    first = plays[0]
    assert "always" in first["tags"] and "roles" not in first
    assert [t["ansible.builtin.command"]["argv"][:2] for t in first["tasks"][:1]] == [
        ["python3", "-"]
    ]
    assert "upgrade_probe.py" in first["tasks"][0]["ansible.builtin.command"]["stdin"]
    assert (PROJECT_ROOT / "telecentre_ctl" / "upgrade_probe.py").is_file()
    assert all("roles" in play for play in plays[1:])


def test_the_summary_says_refused_and_what_to_run(tmp_path: Any) -> None:
    from telecentre_ctl.cli.deploy import print_summary, refused_host
    from telecentre_ctl.runner import HostProgress, RunResult

    message = upgrade.deploy_refused_message(
        [{"service": "radicale", "change": "3.5-1 -> 3.5-2"}], "box-1"
    )
    host = HostProgress("box-1", 3, done=2, ok=2, failed=1, finished=True, message=message,
                        notes=["radicale 3.5-1 -> 3.5-2: not switched by deploy"])  # fmt: skip
    other = HostProgress("box-2", 3, failed=1, finished=True, message="apt failed")
    assert refused_host(host) and not refused_host(other)
    out = io.StringIO()
    print_summary(out, RunResult({"box-1": host}, tmp_path / "log", 2, True, 1.0, True))
    text = out.getvalue()
    assert "check mode" in text and "REFUSED" in text and "FAILED" not in text
    assert "note: radicale 3.5-1 -> 3.5-2" in text
