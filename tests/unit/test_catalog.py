from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from telecentre_ctl.catalog import check_entry, load_catalog
from telecentre_ctl.errors import InvalidInput
from telecentre_ctl.paths import SERVICES_DIR

ENTRIES = sorted(p.parent.name for p in SERVICES_DIR.glob("*/service.yml"))
STANDARD = {"nextcloud", "collabora", "dolibarr", "etherpad", "vaultwarden"}
LITE = {"webdav", "radicale", "dokuwiki", "fava", "pads", "polls"}


def entry(name: str) -> dict:
    return yaml.safe_load((SERVICES_DIR / name / "service.yml").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", ENTRIES)
def test_every_entry_passes_the_schema_and_rules(name: str) -> None:
    assert check_entry(name, entry(name), f"services/{name}/service.yml") == []


def test_catalogue_has_the_promised_services() -> None:
    catalog = load_catalog()
    assert {s.name for s in catalog.in_profile("standard")} >= STANDARD
    assert {s.name for s in catalog.in_profile("lite")} >= LITE
    assert catalog["nextcloud"].depends == ("postgres", "redis")
    assert catalog["dolibarr"].depends == ("mariadb",)
    assert {s.name for s in catalog.infra()} == {"proxy"}


@pytest.mark.parametrize("name", sorted(LITE | {"proxy"}))
def test_lite_services_build_locally_without_a_registry(name: str) -> None:
    service = load_catalog()[name]
    assert service.built_locally
    dockerfile = (SERVICES_DIR / name / "build" / "Dockerfile").read_text(encoding="utf-8")
    assert "FROM ${BASE}" in dockerfile and "apt-get install" in dockerfile


@pytest.mark.parametrize("name", sorted(STANDARD))
def test_upstream_images_are_pinned(name: str) -> None:
    image = load_catalog()[name].image
    _repo, tag = image.rsplit(":", 1)
    assert tag != "latest" and any(ch.isdigit() for ch in tag), image


def broken(name: str, change: dict) -> list[str]:
    data = copy.deepcopy(entry(name))
    for key, value in change.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return [str(p) for p in check_entry(name, data, f"services/{name}/service.yml")]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"image": "docker.io/library/nextcloud:latest"}, "image"),
        ({"image": "nextcloud"}, "image"),
        ({"memory_mb": None}, "memory_mb"),
        ({"title": {"fr": "x"}}, "title"),
        ({"profiles": ["huge"]}, "profiles"),
        ({"route": None}, "route"),
        ({"surprise": 1}, "surprise"),
        ({"name": "other"}, "folder"),
        ({"backup": {"volumes": ["nope"]}}, "backup.volumes"),
        ({"depends": ["mongodb"]}, "depends"),
    ],
)
def test_broken_entries_are_reported(change: dict, expected: str) -> None:
    problems = broken("nextcloud", change)
    assert problems and any(expected in p for p in problems), problems


def test_build_without_dockerfile_is_reported(tmp_path: Path) -> None:
    data = entry("radicale")
    data["build"] = {"context": "missing", "tag": "telecentre/radicale:1"}
    assert any("Dockerfile" in str(p) for p in check_entry("radicale", data, "x"))


def test_catalogue_problems_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "service.yml").write_text("name: bad\nkind: app\n", encoding="utf-8")
    with pytest.raises(InvalidInput) as err:
        load_catalog(tmp_path)
    assert "services/bad/service.yml" in str(err.value)


def test_a_variant_replaces_keys_for_its_profile_only() -> None:
    catalog = load_catalog()
    lite, standard = catalog.for_profile("lite"), catalog.for_profile("standard")
    assert lite["postgres"].built_locally and lite["postgres"].image == "telecentre/postgres:17-1"
    assert lite["postgres"].memory_mb == 192 and lite["postgres"].data["read_only"] is True
    assert "variants" not in lite["postgres"].data and "download_mb" not in lite["postgres"].data
    assert standard["postgres"].image.startswith("docker.io/library/postgres:")
    assert not standard["postgres"].built_locally and "build" not in standard["postgres"].data
    # shared facts stay one: the dependency's interface is the entry's own
    for key in ("database", "env", "secrets", "volumes", "healthcheck"):
        assert lite["postgres"].data[key] == standard["postgres"].data[key]
    assert catalog.for_profile("lite") is lite  # one view per profile


def test_a_broken_variant_is_reported_with_its_profile() -> None:
    data = entry("postgres")
    data["variants"]["lite"]["memory_mb"] = 1
    problems = [str(p) for p in check_entry("postgres", data, "services/postgres/service.yml")]
    assert any("variants.lite" in p and "1 is less than" in p for p in problems), problems
    data = entry("postgres")
    data["variants"]["lite"]["build"]["context"] = "nowhere"
    problems = [str(p) for p in check_entry("postgres", data, "services/postgres/service.yml")]
    assert any("variants.lite.build.context" in p for p in problems), problems
    data = entry("postgres")
    data["variants"]["huge"] = {}
    assert check_entry("postgres", data, "services/postgres/service.yml")
