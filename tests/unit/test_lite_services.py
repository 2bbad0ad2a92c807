"""The lite profile's own services as the site sees them: the extra CA bundle for builds,
their options, their database and backups, and the RAM they leave on a small box."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from telecentre_ctl import backup, compose
from telecentre_ctl.errors import InvalidInput
from telecentre_ctl.site import load_site, ram_budget
from tests.conftest import MakeSite

SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def test_the_demo_names_a_build_ca_bundle_that_builds_receive(make_site: MakeSite) -> None:
    site = load_site(make_site())
    assert site.build_ca_bundle == str(SYSTEM_BUNDLE.resolve())
    assert site.as_data()["build_ca_bundle"] == site.build_ca_bundle


def test_a_relative_build_ca_bundle_is_read_from_the_site_folder(make_site: MakeSite) -> None:
    site_dir = make_site(site={"build_ca_bundle": "proxy-ca.pem"}, secrets=False)
    shutil.copy(SYSTEM_BUNDLE, site_dir / "proxy-ca.pem")
    site = load_site(site_dir, check_secrets=False)
    assert site.build_ca_bundle == str((site_dir / "proxy-ca.pem").resolve())


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no such file"),
        (b"not a certificate\n", "not a PEM bundle"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not a PEM bundle"),
        (b"\xff\xfe binary", "not a readable PEM text file"),
    ],
)
def test_a_bad_build_ca_bundle_is_refused_naming_the_key(
    make_site: MakeSite, content: bytes | None, expected: str
) -> None:
    site_dir = make_site(site={"build_ca_bundle": "ca.pem"}, secrets=False)
    if content is not None:
        (site_dir / "ca.pem").write_bytes(content)
    with pytest.raises(InvalidInput) as err:
        load_site(site_dir, check_secrets=False)
    report = str(err.value)
    assert "build_ca_bundle" in report and expected in report and "fix:" in report, report


def test_site_options_reach_fava_and_radicale(make_site: MakeSite) -> None:
    site_dir = make_site(site={"services": {
        "fava": {"ledgers": {"association": "association", "atelier-bois": "entreprise"}},
        "radicale": {"resources": {"fraiseuse": "Fraiseuse numérique"}},
        "webdav": {}, "dokuwiki": {}}})  # fmt: skip
    site = load_site(site_dir)
    data, catalog = site.as_data(), site.catalog.as_data()
    fava = compose.compose_project("fava", data, catalog)["services"]["fava"]["environment"]
    assert json.loads(fava["FAVA_LEDGERS"]) == {"association": "association",
                                                "atelier-bois": "entreprise"}  # fmt: skip
    radicale = compose.compose_project("radicale", data, catalog)["services"]["radicale"]
    assert json.loads(radicale["environment"]["RADICALE_RESOURCES"]) == {
        "fraiseuse": "Fraiseuse numérique"
    }


def test_a_wrong_option_is_refused(make_site: MakeSite) -> None:
    site_dir = make_site(site={"services": {"fava": {"ledgers": {"Asso": "plan-x"}}}},
                         secrets=False)  # fmt: skip
    with pytest.raises(InvalidInput) as err:
        load_site(site_dir, check_secrets=False)
    assert "services.fava.ledgers" in str(err.value)


def test_pads_and_polls_get_a_database_in_the_lite_postgres(make_site: MakeSite) -> None:
    site = load_site(make_site())
    data, catalog = site.as_data(), site.catalog.as_data()
    (host,) = site.placement()
    assert site.placement()[host][0] == "postgres"  # before its consumers
    pads = compose.compose_project("pads", data, catalog)["services"]["pads"]
    assert pads["environment"]["PGHOST"] == "postgres"
    assert pads["environment"]["PGDATABASE"] == "tc_pads"
    assert "telecentre_data" in pads["networks"]
    postgres = compose.compose_project("postgres", data, catalog)["services"]["postgres"]
    assert postgres["image"] == "telecentre/postgres:17-1" and postgres["read_only"] is True
    dumped = {s["name"]: s["database"] for s in backup.services_to_back_up(
        site.placement()[host], catalog) if s["database"]}  # fmt: skip
    assert dumped == {
        "pads": {"engine": "postgres", "container": "tc-postgres", "name": "tc_pads"},
        "polls": {"engine": "postgres", "container": "tc-postgres", "name": "tc_polls"},
    }


@pytest.mark.parametrize("ram_gb", [4, 2])
def test_the_whole_lite_demo_leaves_a_fifth_of_a_small_box_free(
    make_site: MakeSite, ram_gb: int
) -> None:
    """On a 4 GB box (the demo's) and on the lite profile's 2 GB default."""
    site_dir = make_site(hosts={"telecentre": {"hosts": {"box": {"tc_ram_gb": ram_gb}}}})
    budget = ram_budget(load_site(site_dir))["box"]
    assert budget["have_mb"] == ram_gb * 1024 and budget["headroom"] >= 0.20, budget


def test_a_box_too_small_for_the_lite_demo_is_refused(make_site: MakeSite) -> None:
    hosts = {"telecentre": {"hosts": {"box": {"tc_ram_gb": 1.5}}}}
    site_dir = make_site(hosts=hosts, secrets=False)
    with pytest.raises(InvalidInput) as err:
        load_site(site_dir, check_secrets=False)
    assert "at least 20% must stay free" in str(err.value)
