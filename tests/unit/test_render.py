"""Rendering with the roles' templates: compose files, proxy configuration, portal page."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from telecentre_ctl import compose
from telecentre_ctl.lab import testing
from telecentre_ctl.plan import check_compose_file, compose_command, make_plan, write_plan
from telecentre_ctl.site import load_site
from tests.conftest import EXAMPLE_SITE, MakeSite


@pytest.fixture
def demo(make_site: MakeSite):
    return make_plan(load_site(make_site()))


@pytest.fixture
def standard(make_site: MakeSite):
    return make_plan(load_site(make_site(source=EXAMPLE_SITE)))


def compose_docs(plan) -> dict[str, dict]:
    return {
        path.split("/")[-2]: yaml.safe_load(text)
        for host in plan.hosts
        for path, text in host.files.items()
        if path.endswith("compose.yml")
    }


def test_every_service_is_bounded_restarted_and_unprivileged(standard) -> None:
    for name, doc in compose_docs(standard).items():
        (service,) = doc["services"].values()
        assert re.fullmatch(r"[0-9]+m", service["mem_limit"]), name
        assert service["restart"] == "unless-stopped"
        assert "privileged" not in service
        assert "no-new-privileges:true" in service["security_opt"]
        assert service["logging"]["options"] == {"max-size": "10m", "max-file": "3"}
        mounts = " ".join(service.get("volumes", []))
        assert "docker.sock" not in mounts, name


def test_secrets_never_land_in_compose_files(make_site: MakeSite) -> None:
    from telecentre_ctl.secrets import read_secrets, vault_password_file

    site_dir = make_site(source=EXAMPLE_SITE)
    plan = make_plan(load_site(site_dir))
    values = read_secrets(site_dir, vault_password_file("comptoir"))
    rendered = "".join(t for h in plan.hosts for t in h.files.values())
    for service in values.values():
        for value in service.values():
            assert value not in rendered


def test_file_secrets_are_files_and_env_secrets_go_to_env_file(standard) -> None:
    docs = compose_docs(standard)
    nextcloud = docs["nextcloud"]["services"]["nextcloud"]
    assert nextcloud["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/db_password"
    assert (
        docs["nextcloud"]["secrets"]["db_password"]["file"]
        == "/opt/telecentre/nextcloud/secrets/db_password"
    )
    assert "env_file" not in nextcloud
    etherpad = docs["etherpad"]["services"]["etherpad"]
    assert etherpad["env_file"] == ["/opt/telecentre/etherpad/secrets.env"]
    assert "DB_PASS" not in etherpad["environment"]


def test_placeholders_are_filled(standard) -> None:
    docs = compose_docs(standard)
    env = docs["nextcloud"]["services"]["nextcloud"]["environment"]
    assert env["NEXTCLOUD_TRUSTED_DOMAINS"] == "cloud.comptoir.example.org"
    assert env["POSTGRES_HOST"] == "postgres" and env["POSTGRES_DB"] == "tc_nextcloud"
    collabora = docs["collabora"]["services"]["collabora"]["environment"]
    assert collabora["aliasgroup1"] == "https://cloud.comptoir.example.org:443"
    dolibarr = docs["dolibarr"]["services"]["dolibarr"]["environment"]
    assert dolibarr["DOLI_URL_ROOT"] == "https://gestion.comptoir.example.org"
    assert "{" not in yaml.safe_dump(docs)


def test_unknown_placeholder_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown placeholder"):
        compose.fill("{nope}", "x", {"services": {}}, {"x": {}})


def test_databases_stay_on_the_internal_network(standard) -> None:
    docs = compose_docs(standard)
    for name in ("postgres", "mariadb", "redis"):
        assert docs[name]["services"][name]["networks"] == [compose.DATA_NETWORK]
        assert "ports" not in docs[name]["services"][name]
    assert docs["proxy"]["services"]["proxy"]["ports"] == ["80:80/tcp", "443:443/tcp"]


def test_caddyfile_routes_every_app_and_nothing_else(standard) -> None:
    (host,) = standard.hosts
    caddyfile = host.files["/opt/telecentre/proxy/Caddyfile"]
    sites = re.findall(r"^(\S+\.example\.org) \{", caddyfile, re.M)
    apps = standard.site.services
    assert sorted(sites) == sorted(
        [standard.site.base_domain] + [standard.site.fqdn(a) for a in apps]
    )
    assert "local_certs" not in caddyfile  # acme site
    assert "protocols tls1.2 tls1.3" in caddyfile


def test_internal_tls_for_lan_sites(demo) -> None:
    caddyfile = demo.hosts[0].files["/opt/telecentre/proxy/Caddyfile"]
    assert "local_certs" in caddyfile
    portal = demo.hosts[0].files["/opt/telecentre/portal/index.html"]
    assert "telecentre-ca.crt" in portal
    for system in ("Windows", "macOS", "Android", "iOS", "Linux"):
        assert system in portal


def test_portal_lists_exactly_the_enabled_services(make_site: MakeSite) -> None:
    site = load_site(make_site(site={"services": {"radicale": {}, "webdav": {}}, "locale": "en"}))
    portal = make_plan(site).hosts[0].files["/opt/telecentre/portal/index.html"]
    listed = set(re.findall(r'id="service-([a-z-]+)"', portal))
    assert listed == {"radicale", "webdav"}
    assert "Calendars and contacts" in portal and "Open" in portal
    assert 'lang="en"' in portal


def test_portal_escapes_the_title(make_site: MakeSite) -> None:
    site = load_site(make_site(site={"title": "Café <script>alert(1)</script>"}))
    portal = make_plan(site).hosts[0].files["/opt/telecentre/portal/index.html"]
    assert "<script>alert" not in portal and "Café &lt;script&gt;" in portal


def test_rendering_is_stable(make_site: MakeSite) -> None:
    site = load_site(make_site(source=EXAMPLE_SITE))
    assert make_plan(site).hosts[0].files == make_plan(site).hosts[0].files


def test_plan_summary(standard) -> None:
    data = standard.as_json()
    (host,) = data["hosts"]
    assert data["urls"]["portal"] == "https://comptoir.example.org/"
    assert host["download_mb"] > 1000 and host["built_locally"] == ["radicale", "dokuwiki", "proxy"]
    assert host["ram"]["headroom"] >= 0.2
    assert [p["port"] for p in host["open_ports"]] == [22, 80, 443]


COMPOSE = compose_command()
# The only check the standard profile's compose files get here: it skips only where
# nothing demands it (CI sets TELECENTRE_REQUIRE_LAB=1, and then it fails instead).
NEEDS_COMPOSE = pytest.mark.skipif(
    COMPOSE is None and not os.environ.get("CI") and not testing.lab_required(),
    reason="docker compose v2 is not installed (scripts/setup installs it; CI requires it)",
)


@NEEDS_COMPOSE
@pytest.mark.parametrize("source", ["demo", "example-standard"])
def test_rendered_compose_files_pass_docker_compose_config(
    make_site: MakeSite, tmp_path: Path, source: str
) -> None:
    """Upstream images cannot be pulled here: this is how far the standard profile is checked."""
    assert COMPOSE is not None, "docker compose v2 must be installed (scripts/setup does it)"
    from telecentre_ctl.paths import INVENTORY_DIR

    plan = make_plan(load_site(make_site(source=INVENTORY_DIR / source)))
    written = write_plan(plan, tmp_path / "out")
    files = [p for p in written if p.name == "compose.yml"]
    assert len(files) == len(plan.hosts[0].services)
    for path in files:
        assert check_compose_file(COMPOSE, path) is None, path


@NEEDS_COMPOSE
def test_compose_check_catches_a_broken_file(tmp_path: Path) -> None:
    assert COMPOSE is not None
    bad = tmp_path / "compose.yml"
    bad.write_text("services:\n  x:\n    image: a\n    mem_limit: [1]\n", encoding="utf-8")
    assert check_compose_file(COMPOSE, bad)
