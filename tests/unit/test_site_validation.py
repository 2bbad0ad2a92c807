"""Site validation: every bad input is reported with file, key and fix; nothing is written."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from telecentre_ctl.errors import InvalidInput
from telecentre_ctl.site import load_site
from tests.conftest import EXAMPLE_SITE, MakeSite

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJFIoYZwAOeX4J3WqvuxLO2YhC4q8efkn34i93YjJhUI a@b"
ONE_HOST = {"telecentre": {"hosts": {"box": {"tc_ram_gb": 4}}}}

# (id, changes to site.yml, keys to drop, hosts.yml document, expected text in the report)
SITE_CASES: list[tuple[str, dict[str, Any], tuple[str, ...], dict[str, Any] | None, str]] = [
    ("name-upper", {"name": "Demo"}, (), None, "name"),
    ("name-too-short", {"name": "d"}, (), None, "is not a slug"),
    ("name-int", {"name": 42}, (), None, "name"),
    ("name-missing", {}, ("name",), None, "name: missing"),
    ("title-empty", {"title": ""}, (), None, "title"),
    ("title-list", {"title": ["a"]}, (), None, "title"),
    ("title-long", {"title": "x" * 81}, (), None, "longer than 80"),
    ("locale", {"locale": "de"}, (), None, "locale"),
    ("domain-bad", {"domain": "not a domain"}, (), None, "is not a domain name"),
    ("domain-upper", {"domain": "Comptoir.Example.org"}, (), None, "domain"),
    ("domain-local", {"domain": "demo.home.arpa"}, (), None, "local-only"),
    ("tls-unknown", {"tls": "selfsigned"}, (), None, "not a TLS mode"),
    ("acme-no-domain", {"tls": "acme"}, (), None, "acme needs a public domain"),
    ("email", {"admin_email": "admin.example.org"}, (), None, "admin_email"),
    ("email-missing", {}, ("admin_email",), None, "admin_email: missing"),
    ("admins-empty", {"admins": []}, (), None, "admins"),
    ("admins-string", {"admins": "alice"}, (), None, "admins"),
    ("admin-root", {"admins": [{"name": "root", "ssh_key": KEY}]}, (), None, "admins.0.name"),
    ("admin-bad-key", {"admins": [{"name": "al", "ssh_key": "AAAA"}]}, (), None, "ssh_key"),
    (
        "admin-twice",
        {"admins": [{"name": "al", "ssh_key": KEY}, {"name": "al", "ssh_key": KEY}]},
        (),
        None,
        "listed twice",
    ),
    (
        "admin-extra-key",
        {"admins": [{"name": "al", "ssh_key": KEY, "shell": "zsh"}]},
        (),
        None,
        "admins.0.shell",
    ),
    ("profile", {"profile": "mega"}, (), None, "profile"),
    ("profile-typo", {"profile": "stanard"}, (), None, "did you mean 'standard'"),
    ("unknown-key", {"servics": {}}, (), None, "did you mean 'services'"),
    ("unknown-service", {"services": {"radical": {}}}, (), None, "did you mean 'radicale'"),
    ("dependency-as-service", {"services": {"postgres": {}}}, (), None, "shared dependency"),
    ("service-not-in-profile", {"services": {"nextcloud": {}}}, (), None, "not part of the lite"),
    ("services-list", {"services": ["radicale"]}, (), None, "services"),
    ("service-options-list", {"services": {"radicale": [1]}}, (), None, "options must be"),
    (
        "service-option-unknown",
        {"services": {"radicale": {"subdomian": "cal"}}},
        (),
        None,
        "did you mean 'subdomain'",
    ),
    (
        "service-option-type",
        {"services": {"radicale": {"memory_mb": "lots"}}},
        (),
        None,
        "services.radicale.memory_mb",
    ),
    (
        "subdomain-collision",
        {"services": {"radicale": {"subdomain": "wiki"}, "dokuwiki": {}}},
        (),
        None,
        "already the address of",
    ),
    ("backup-missing", {}, ("backup",), None, "backup: missing"),
    ("backup-relative", {"backup": {"target": "srv/backup"}}, (), None, "backup.target"),
    ("backup-root", {"backup": {"target": "/"}}, (), None, "backup.target"),
    ("backup-sftp-bad", {"backup": {"target": "sftp:host:/x"}}, (), None, "backup.target"),
    ("backup-time", {"backup": {"target": "/srv/b", "time": "25:00"}}, (), None, "backup.time"),
    ("backup-time-int", {"backup": {"target": "/srv/b", "time": 230}}, (), None, "backup.time"),
    (
        "backup-keep-negative",
        {"backup": {"target": "/srv/b", "keep": {"daily": -1}}},
        (),
        None,
        "backup.keep.daily",
    ),
    (
        "backup-keep-nothing",
        {"backup": {"target": "/srv/b", "keep": {"daily": 0}}},
        (),
        None,
        "keeps no snapshot",
    ),
    (
        "backup-keep-unknown",
        {"backup": {"target": "/srv/b", "keep": {"hourly": 3}}},
        (),
        None,
        "backup.keep.hourly",
    ),
    ("backup-unknown", {"backup": {"target": "/srv/b", "when": "night"}}, (), None, "backup.when"),
    ("open-port-text", {"open_ports": ["http"]}, (), None, "open_ports.0"),
    ("open-port-range", {"open_ports": [70000]}, (), None, "open_ports.0"),
    ("open-port-always", {"open_ports": [443]}, (), None, "always open"),
    ("open-port-twice", {"open_ports": [8443, 8443]}, (), None, "listed twice"),
    ("smtp-string", {"smtp": "smtp.example.org"}, (), None, "smtp: must be a mapping"),
    ("smtp-no-host", {"smtp": {"username": "bot"}}, (), None, "smtp.host"),
    ("smtp-bad-host", {"smtp": {"host": "smtp example"}}, (), None, "is not a host name"),
    (
        "smtp-security",
        {"smtp": {"host": "mx.example.org", "security": "ssl"}},
        (),
        None,
        "force_tls",
    ),
    ("smtp-port", {"smtp": {"host": "mx.example.org", "port": "587"}}, (), None, "smtp.port"),
    ("smtp-from", {"smtp": {"host": "mx.example.org", "from": "noreply"}}, (), None, "smtp.from"),
    (
        "smtp-unknown",
        {"smtp": {"host": "mx.example.org", "pasword": "x"}},
        (),
        None,
        "smtp.pasword",
    ),
    ("hosts-no-group", {}, (), {"servers": {"hosts": {"a": None}}}, "no group 'telecentre'"),
    ("hosts-empty-group", {}, (), {"telecentre": {"hosts": {}}}, "no group 'telecentre'"),
    ("ram-text", {}, (), {"telecentre": {"hosts": {"a": {"tc_ram_gb": "four"}}}}, "tc_ram_gb"),
    (
        "ram-too-small",
        {},
        (),
        {"telecentre": {"hosts": {"a": {"tc_ram_gb": 0.5}}}},
        "at least 20% must stay free",
    ),
    (
        "host-services-unknown",
        {},
        (),
        {"telecentre": {"hosts": {"a": {"tc_services": ["radicle"]}}}},
        "did you mean 'radicale'",
    ),
    (
        "host-services-string",
        {},
        (),
        {"telecentre": {"hosts": {"a": {"tc_services": "radicale"}}}},
        "must be a list",
    ),
    (
        "service-unplaced",
        {},
        (),
        {"telecentre": {"hosts": {"a": {"tc_services": ["radicale"]}}}},
        "'webdav' runs on no host",
    ),
]


@pytest.mark.parametrize(
    ("case", "changes", "drop", "hosts", "expected"), SITE_CASES, ids=[c[0] for c in SITE_CASES]
)
def test_bad_site_is_reported(
    make_site: MakeSite,
    case: str,
    changes: dict[str, Any],
    drop: tuple[str, ...],
    hosts: dict[str, Any] | None,
    expected: str,
) -> None:
    site_dir = make_site(site={}, secrets=False)
    import yaml

    data = yaml.safe_load((site_dir / "site.yml").read_text(encoding="utf-8"))
    data.update(changes)
    for key in drop:
        del data[key]
    if "directory" not in (data.get("services") or {}) and "members" not in changes:
        data.pop("members", None)  # the demo's plans need its directory
    (site_dir / "site.yml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    if hosts is not None:
        (site_dir / "hosts.yml").write_text(yaml.safe_dump(hosts), encoding="utf-8")
    before = snapshot(site_dir)
    with pytest.raises(InvalidInput) as err:
        load_site(site_dir, check_secrets=False)
    report = str(err.value)
    assert expected in report, report
    assert "fix:" in report
    assert snapshot(site_dir) == before


def snapshot(folder: Path) -> dict[str, tuple[bytes, float]]:
    return {p.name: (p.read_bytes(), os.path.getmtime(p)) for p in folder.iterdir()}


# (id, file, raw content, expected)
FILE_CASES = [
    ("site-syntax", "site.yml", b"name: demo\ntitle: [unclosed\n", "site.yml:"),
    ("site-duplicate", "site.yml", b"name: demo\nname: other\n", 'duplicate key "name"'),
    ("site-empty", "site.yml", b"", "file is empty"),
    ("site-comments-only", "site.yml", b"# nothing yet\n", "file is empty"),
    ("site-binary", "site.yml", b"\x00\x01\x02garbage\xff", "binary"),
    ("site-latin1", "site.yml", "title: Caf\xe9\n".encode("latin-1"), "not UTF-8"),
    ("site-scalar", "site.yml", b"just a string\n", "must be a mapping"),
    ("site-huge", "site.yml", b"# x\n" * (13 * 1024 * 1024), "far larger"),
    ("hosts-syntax", "hosts.yml", b"telecentre:\n  hosts: {a: \n", "hosts.yml:"),
    ("hosts-empty", "hosts.yml", b"\n\n", "file is empty"),
    ("hosts-binary", "hosts.yml", bytes(range(256)), "binary"),
]


@pytest.mark.parametrize(
    ("case", "name", "content", "expected"), FILE_CASES, ids=[c[0] for c in FILE_CASES]
)
def test_malformed_files(
    make_site: MakeSite, case: str, name: str, content: bytes, expected: str
) -> None:
    site_dir = make_site(secrets=False)
    (site_dir / name).write_bytes(content)
    before = snapshot(site_dir)
    with pytest.raises(InvalidInput) as err:
        load_site(site_dir, check_secrets=False)
    assert expected in str(err.value)
    assert snapshot(site_dir) == before


def test_line_numbers_point_at_the_key(make_site: MakeSite) -> None:
    site_dir = make_site(secrets=False)
    text = (site_dir / "site.yml").read_text(encoding="utf-8").replace("locale: fr", "locale: de")
    (site_dir / "site.yml").write_text(text, encoding="utf-8")
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith("locale:"))
    with pytest.raises(InvalidInput) as err:
        load_site(site_dir, check_secrets=False)
    assert f"site.yml:{line}: locale" in str(err.value)


def test_all_problems_reported_at_once(make_site: MakeSite) -> None:
    site_dir = make_site(
        site={"locale": "de", "profile": "mega", "admin_email": "x"}, secrets=False
    )
    with pytest.raises(InvalidInput) as err:
        load_site(site_dir, check_secrets=False)
    assert len(err.value.problems) >= 3


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as err:
        load_site(tmp_path / "nowhere")
    assert "telecentre-ctl init" in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput) as err:
        load_site(tmp_path / "empty")
    assert "site.yml" in str(err.value) and "hosts.yml" in str(err.value)


def test_secrets_missing_plain_or_unreadable(make_site: MakeSite, isolated_config: Path) -> None:
    site_dir = make_site(secrets=False)
    with pytest.raises(InvalidInput) as err:
        load_site(site_dir)
    assert "secrets.yml: missing" in str(err.value)
    (site_dir / "secrets.yml").write_text("tc_secrets: {}\n", encoding="utf-8")
    (isolated_config / "telecentre-ctl" / "vault").mkdir(parents=True)
    (isolated_config / "telecentre-ctl" / "vault" / "demo.pass").write_text("pw\n")
    with pytest.raises(InvalidInput) as err:
        load_site(site_dir)
    assert "not encrypted" in str(err.value)


def test_secret_missing_after_enabling_a_service(make_site: MakeSite) -> None:
    site_dir = make_site(site={"services": {"radicale": {}}})
    import yaml

    data = yaml.safe_load((site_dir / "site.yml").read_text(encoding="utf-8"))
    data["services"]["dokuwiki"] = {}
    (site_dir / "site.yml").write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(InvalidInput) as err:
        load_site(site_dir)
    assert "tc_secrets.dokuwiki.admin_password: missing" in str(err.value)
    assert "telecentre-ctl secrets" in str(err.value)


def test_valid_sites_load(make_site: MakeSite) -> None:
    demo = load_site(make_site())
    assert demo.base_domain == "demo.home.arpa"
    assert demo.tls == "internal"
    assert demo.url("radicale") == "https://agenda.demo.home.arpa/"
    standard = load_site(make_site(source=EXAMPLE_SITE))
    assert standard.url("dolibarr") == "https://gestion.comptoir.example.org/"
    placed = standard.placement()["comptoir-box"]
    assert placed[:3] == ["mariadb", "postgres", "redis"] and placed[-1] == "proxy"


def test_ram_budget_names_host_and_fix(make_site: MakeSite) -> None:
    site_dir = make_site(
        source=EXAMPLE_SITE,
        hosts={"telecentre": {"hosts": {"small": {"tc_ram_gb": 4}}}},
        secrets=False,
    )
    with pytest.raises(InvalidInput) as err:
        load_site(site_dir, check_secrets=False)
    text = str(err.value)
    assert "small has 4096 MiB (tc_ram_gb)" in text and "tc_services" in text


def test_placement_with_tc_services(make_site: MakeSite) -> None:
    hosts = {
        "telecentre": {
            "hosts": {
                "files": {"tc_services": ["webdav"]},
                "collab": {"tc_services": ["radicale", "dokuwiki", "fava", "pads", "polls"]},
            }
        }
    }
    apps = {"webdav": {}, "radicale": {}, "dokuwiki": {}, "fava": {}, "pads": {}, "polls": {}}
    site = load_site(make_site(site={"services": apps}, hosts=hosts))
    collab = [s for s in site.services if s != "webdav"]  # in site.yml's order
    assert site.placement() == {
        "files": ["webdav", "proxy"],
        "collab": ["postgres", *collab, "proxy"],
    }


def test_smtp_relay_defaults_and_password(make_site: MakeSite) -> None:
    from telecentre_ctl.secrets import set_provided_secret

    relay = {"host": "smtp.example.org", "security": "force_tls", "username": "bot@example.org"}
    site_dir = make_site(source=EXAMPLE_SITE, site={"smtp": relay})
    site = load_site(site_dir, check_secrets=False)
    assert site.smtp == relay | {"port": 465}
    # the login's password is the admin's to give: never generated, and asked for
    with pytest.raises(InvalidInput) as err:
        load_site(site_dir)
    assert "tc_secrets.smtp.password" in str(err.value) and "--smtp-password" in str(err.value)
    set_provided_secret(site, "smtp", "password", "relay-pass")
    assert load_site(site_dir).smtp is not None
    without_login = make_site(source=EXAMPLE_SITE, site={"smtp": {"host": "smtp.example.org"}})
    assert load_site(without_login).smtp == {
        "host": "smtp.example.org",
        "port": 587,
        "security": "starttls",
    }
    with pytest.raises(InvalidInput, match="username is not set"):
        set_provided_secret(load_site(without_login), "smtp", "password", "x")


def test_nextcloud_and_collabora_share_a_host(make_site: MakeSite) -> None:
    hosts = {
        "telecentre": {
            "hosts": {
                "files": {"tc_services": ["nextcloud"], "tc_ram_gb": 8},
                "office": {"tc_ram_gb": 8, "tc_services": ["collabora", "dolibarr", "etherpad"]},
                "rest": {"tc_ram_gb": 8, "tc_services": ["vaultwarden", "radicale", "dokuwiki"]},
            }
        }
    }
    with pytest.raises(InvalidInput) as err:
        load_site(make_site(source=EXAMPLE_SITE, hosts=hosts, secrets=False), check_secrets=False)
    assert "collabora and nextcloud must run on the same host" in str(err.value)
