"""Rendering with the roles' templates: compose files, proxy configuration, portal page."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

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
        if name == "collabora":  # its jail helper needs file capabilities (entry's notes)
            assert "security_opt" not in service and service["cap_drop"] == ["ALL"]
        else:
            assert "no-new-privileges:true" in service["security_opt"], name
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
    assert not compose.PLACEHOLDER_RE.search(yaml.safe_dump(docs))
    radicale = docs["radicale"]["services"]["radicale"]["environment"]
    assert json.loads(radicale["RADICALE_RESOURCES"])["imprimante-3d"] == "Imprimante 3D"


def test_options_reach_the_environment_as_json() -> None:
    catalog = {"x": {"options": {"rooms": {"type": "object", "default": {"a": "A"}},
                                 "size": {"type": "integer"}}}}  # fmt: skip
    site: dict[str, Any] = {"services": {"x": {}}}
    assert compose.fill("{option:rooms}", "x", site, catalog) == '{"a":"A"}'
    site = {"services": {"x": {"rooms": {"b": "Bé"}, "size": 3}}}
    assert compose.fill("{option:rooms}/{option:size}", "x", site, catalog) == '{"b":"Bé"}/3'
    assert compose.fill("{option:size}", "x", {"services": {"x": None}}, catalog) == ""
    with pytest.raises(ValueError, match="names no option"):
        compose.fill("{option:nope}", "x", site, catalog)


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
    caddyfile = host.files["/opt/telecentre/proxy/caddy/Caddyfile"]
    sites = re.findall(r"^(\S+\.example\.org) \{", caddyfile, re.M)
    apps = standard.site.services
    assert sorted(sites) == sorted(
        [standard.site.base_domain] + [standard.site.fqdn(a) for a in apps]
    )
    assert "local_certs" not in caddyfile  # acme site
    assert "protocols tls1.2 tls1.3" in caddyfile


def test_internal_tls_for_lan_sites(demo) -> None:
    caddyfile = demo.hosts[0].files["/opt/telecentre/proxy/caddy/Caddyfile"]
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
    assert "Calendars, contacts and bookings" in portal and "Open" in portal
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
    built = host["built_locally"]
    assert host["download_mb"] > 1000 and built == ["directory", "radicale", "dokuwiki", "proxy"]
    assert host["ram"]["headroom"] >= 0.2
    assert [p["port"] for p in host["open_ports"]] == [22, 80, 443]


COMPOSE = compose_command()
# The only check the standard profile's compose files get here: it skips only where
# nothing demands it (CI sets TELECENTRE_REQUIRE_LAB=1, and then it fails instead).
NEEDS_COMPOSE = pytest.mark.skipif(
    COMPOSE is None and not os.environ.get("CI") and not testing.lab_required(),
    reason="docker compose v2 is not installed (scripts/setup installs it; CI requires it)",
)


# The standard profile also as a LAN site with a mail relay: the site's CA mounts and every
# mail variable and secret are rendered then.
LAN_RELAY = {"tls": "internal", "smtp": {"host": "smtp.example.org", "username": "bot"}}


@NEEDS_COMPOSE
@pytest.mark.parametrize("source", ["demo", "example-standard", "example-standard-lan-smtp"])
def test_rendered_compose_files_pass_docker_compose_config(
    make_site: MakeSite, tmp_path: Path, source: str
) -> None:
    """Upstream images cannot be pulled here: this is how far the standard profile is checked."""
    assert COMPOSE is not None, "docker compose v2 must be installed (scripts/setup does it)"
    from telecentre_ctl.paths import INVENTORY_DIR

    lan = source.endswith("-lan-smtp")
    site_dir = make_site(
        source=INVENTORY_DIR / source.removesuffix("-lan-smtp"),
        site=LAN_RELAY if lan else None,
        drop=("domain",) if lan else (),
    )
    plan = make_plan(load_site(site_dir, check_secrets=not lan))
    written = write_plan(plan, tmp_path / "out")
    files = [p for p in written if p.name == "compose.yml"]
    assert len(files) == len(plan.hosts[0].services)
    if source.startswith("example-standard"):  # the single sign-on portal and its directory
        assert {"authelia", "directory"} <= {p.parent.name for p in files}
    for path in files:
        assert check_compose_file(COMPOSE, path) is None, path


@NEEDS_COMPOSE
def test_compose_check_catches_a_broken_file(tmp_path: Path) -> None:
    assert COMPOSE is not None
    bad = tmp_path / "compose.yml"
    bad.write_text("services:\n  x:\n    image: a\n    mem_limit: [1]\n", encoding="utf-8")
    assert check_compose_file(COMPOSE, bad)


# --- what the standard profile's first deploy needs (upstream images' own sources) ------

RELAY = {"host": "smtp.example.org", "security": "starttls", "username": "bot@example.org"}


def env_of(plan, name: str) -> dict[str, str]:
    return compose_docs(plan)[name]["services"][name].get("environment", {})


def test_mail_only_through_a_configured_relay(make_site: MakeSite) -> None:
    """Vaultwarden exits when SMTP_FROM is set without SMTP_HOST."""
    bare = make_plan(load_site(make_site(source=EXAMPLE_SITE)))
    for name in ("vaultwarden", "nextcloud"):
        assert not [k for k in env_of(bare, name) if k.startswith(("SMTP_", "MAIL_"))], name
    site = load_site(make_site(source=EXAMPLE_SITE, site={"smtp": RELAY}), check_secrets=False)
    relayed = make_plan(site)
    vault = env_of(relayed, "vaultwarden")
    assert vault["SMTP_HOST"] == "smtp.example.org" and vault["SMTP_PORT"] == "587"
    assert vault["SMTP_FROM"] == "admin@example.org" and vault["SMTP_SECURITY"] == "starttls"
    assert vault["SMTP_PASSWORD_FILE"] == "/run/secrets/smtp_password"
    cloud = env_of(relayed, "nextcloud")
    assert (cloud["MAIL_FROM_ADDRESS"], cloud["MAIL_DOMAIN"]) == ("admin", "example.org")
    assert "SMTP_SECURE" not in cloud  # STARTTLS: Nextcloud's empty value, left unset


def test_every_route_passes_the_client_address(standard) -> None:
    caddyfile = standard.hosts[0].files["/opt/telecentre/proxy/caddy/Caddyfile"]
    proxies = caddyfile.count("reverse_proxy ")
    assert proxies == len(standard.site.services)
    assert caddyfile.count("header_up X-Real-IP {remote_host}") == proxies


def test_containers_reach_public_names_through_the_proxy(standard) -> None:
    networks = compose_docs(standard)["proxy"]["services"]["proxy"]["networks"]
    aliases = networks[compose.PROXY_NETWORK]["aliases"]
    assert "cloud.comptoir.example.org" in aliases and "office.comptoir.example.org" in aliases
    assert len(aliases) == len(standard.site.services)


def test_nextcloud_is_wired_to_collabora(standard) -> None:
    nextcloud = compose_docs(standard)["nextcloud"]["services"]["nextcloud"]
    env = nextcloud["environment"]
    assert env["TC_OFFICE_URL"] == "https://office.comptoir.example.org"
    assert env["OVERWRITECLIURL"] == "https://cloud.comptoir.example.org"
    assert env["REDIS_HOST_PASSWORD_FILE"] == "/run/secrets/redis_password"
    hook = "/opt/telecentre/nextcloud/files/hooks/before-starting.sh"
    assert (
        f"{hook}:/docker-entrypoint-hooks.d/before-starting/50-telecentre.sh:ro"
        in (nextcloud["volumes"])
    )
    assert "TC_SITE_CA" not in env  # a public domain: public certificates
    collabora = compose_docs(standard)["collabora"]["services"]["collabora"]
    assert collabora["environment"]["aliasgroup1"] == "https://cloud.comptoir.example.org:443"
    assert "curl" not in " ".join(collabora["healthcheck"]["test"])


def test_lan_sites_give_the_site_ca(make_site: MakeSite) -> None:
    site = load_site(make_site(source=EXAMPLE_SITE, site={"tls": "internal"}, drop=("domain",)))
    docs = compose_docs(make_plan(site))
    nextcloud = docs["nextcloud"]["services"]["nextcloud"]
    path = "/usr/local/share/telecentre/site-ca.crt"
    assert nextcloud["environment"]["TC_SITE_CA"] == path
    assert f"/opt/telecentre/nextcloud/site-ca.crt:{path}:ro" in nextcloud["volumes"]
    bundle = "/opt/telecentre/collabora/site-ca.crt:/etc/ssl/certs/ca-certificates.crt:ro"
    assert bundle in docs["collabora"]["services"]["collabora"]["volumes"]
    assert (
        "office.comptoir.home.arpa"
        in (docs["proxy"]["services"]["proxy"]["networks"][compose.PROXY_NETWORK]["aliases"])
    )


def test_pinned_versions_are_supported(standard) -> None:
    def version(name: str) -> tuple[int, ...]:
        tag = standard.site.catalog[name].image.rsplit(":", 1)[1]
        return tuple(int(p) for p in re.findall(r"[0-9]+", tag.split("-")[0]))

    assert version("nextcloud")[0] >= 31  # 30 is end of life
    assert version("vaultwarden") >= (1, 33)  # security fixes
    assert version("redis") >= (7, 4, 6)  # CVE-2025-49844


def test_redis_has_a_password_on_no_command_line(standard) -> None:
    redis = compose_docs(standard)["redis"]["services"]["redis"]
    assert redis["secrets"] == ["password"]
    script = redis["command"][-1]
    assert "requirepass $$(cat /run/secrets/password)" in script  # $$: Compose's escape
    assert script.startswith("exec redis-server - ")


def test_background_jobs_are_planned_as_timers(standard) -> None:
    files = standard.hosts[0].files
    for unit in ("tc-job-nextcloud-cron", "tc-job-dolibarr-jobs"):
        timer = files[f"/etc/systemd/system/{unit}.timer"]
        assert "OnCalendar=*-*-* *:00/5:00" in timer
        service = files[f"/etc/systemd/system/{unit}.service"]
        assert "Type=oneshot" in service and "ExecStart=/usr/bin/docker exec " in service
    dolibarr = files["/etc/systemd/system/tc-job-dolibarr-jobs.service"]
    assert "/run/secrets/cron_key" in dolibarr  # the key is read inside, never on argv


def test_job_units_pass_systemd_analyze(standard, tmp_path: Path) -> None:
    """systemd's own parser reads the rendered units (docker's binary and unit, absent
    here, stood in for: verify checks both exist)."""
    import shutil
    import subprocess

    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze comes with systemd, which the lab needs"
    units = []
    for path, text in standard.hosts[0].files.items():
        if path.startswith("/etc/systemd/system/tc-job-"):
            unit = tmp_path / path.rsplit("/", 1)[-1]
            unit.write_text(text.replace("/usr/bin/docker", "/bin/echo"), encoding="utf-8")
            units.append(str(unit))
    assert len(units) == 4
    # the units require the engine's unit, which this machine may lack
    (tmp_path / "docker.service").write_text("[Service]\nExecStart=/bin/true\n", encoding="utf-8")
    out = subprocess.run(
        [analyze, "verify", "--man=no", *units], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr


def test_dolibarr_and_etherpad_state(standard) -> None:
    docs = compose_docs(standard)
    dolibarr = docs["dolibarr"]["services"]["dolibarr"]
    assert dolibarr["environment"]["DOLI_INSTANCE_UNIQUE_ID_FILE"] == (
        "/run/secrets/instance_unique_id"
    )
    assert "instance_unique_id" in dolibarr["secrets"]
    etherpad = docs["etherpad"]["services"]["etherpad"]
    assert "/srv/telecentre/etherpad/var:/opt/etherpad-lite/var" in etherpad["volumes"]


@NEEDS_COMPOSE
def test_compose_passes_catalogue_strings_on_unchanged(standard, tmp_path: Path) -> None:
    """With Compose's own interpolation on (as `up` does), commands and healthchecks are
    taken as literal text: no variable substituted, no invalid interpolation. (`config`
    prints $ as $$ again, so that its output is a compose file in turn.)"""
    import json
    import subprocess

    assert COMPOSE is not None
    for name, doc in compose_docs(standard).items():
        (service,) = doc["services"].values()
        service.pop("env_file", None)  # only on hosts
        path = tmp_path / f"{name}.yml"
        path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        out = subprocess.run(
            [*COMPOSE, "-f", str(path), "config", "--format", "json", "--no-path-resolution"],
            capture_output=True,
            text=True,
            check=True,
        )
        seen = json.loads(out.stdout)["services"][name]
        entry = standard.site.catalog[name].data
        if "command" in entry:
            assert seen["command"] == [compose.literal(w) for w in entry["command"]], name
        if "healthcheck" in entry:
            test = [compose.literal(w) for w in entry["healthcheck"]["test"]]
            assert seen["healthcheck"]["test"] == test, name
