"""The single sign-on portal (services/authelia): what reaches its container, and its
configuration file against the catalogue entry and the members' directory.

Authelia's image cannot be pulled here (no registry): it is never run in these tiers. Its
compose file also goes through `docker compose config` in test_render.py."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from telecentre_ctl import compose
from telecentre_ctl.catalog import load_catalog
from telecentre_ctl.paths import SERVICES_DIR
from telecentre_ctl.plan import make_plan
from telecentre_ctl.secrets import read_secrets, vault_password_file
from telecentre_ctl.site import load_site
from tests.conftest import EXAMPLE_SITE, MakeSite

CATALOG = load_catalog().as_data()
ENTRY = CATALOG["authelia"]
CONFIG_FILE = SERVICES_DIR / "authelia" / "config" / "configuration.yml"
CONFIG_TEXT = CONFIG_FILE.read_text(encoding="utf-8")
CONFIG = yaml.safe_load(CONFIG_TEXT)
# The variables the configuration's template reads ({{ env "X" }}, {{ mustEnv "X" }}).
TEMPLATE_ENV = set(re.findall(r'\b(?:mustEnv|env) "([A-Za-z_][A-Za-z0-9_]*)"', CONFIG_TEXT))
RELAY = {"host": "smtp.example.org", "security": "force_tls", "username": "bot@example.org"}


def authelia_service(make_site: MakeSite, site: dict[str, Any] | None = None) -> dict[str, Any]:
    loaded = load_site(make_site(source=EXAMPLE_SITE, site=site), check_secrets=site is None)
    (host,) = make_plan(loaded).hosts
    doc = yaml.safe_load(host.files[f"{compose.OPT_DIR}/authelia/compose.yml"])
    service = dict(doc["services"]["authelia"])
    folder = f"{compose.OPT_DIR}/authelia/secrets"
    assert doc["secrets"] == {s: {"file": f"{folder}/{s}"} for s in service["secrets"]}
    return service


def flat_keys(value: Any, prefix: str = "") -> list[str]:
    """Authelia's key names (session.cookies[].domain) of a parsed configuration."""
    if isinstance(value, dict):
        return [k for key, v in value.items() for k in flat_keys(v, f"{prefix}{key}.")]
    if isinstance(value, list):
        return [k for v in value for k in flat_keys(v, f"{prefix.rstrip('.')}[].")]
    return [prefix.rstrip(".")]


def test_secrets_reach_authelia_as_files_only(make_site: MakeSite) -> None:
    site_dir = make_site(source=EXAMPLE_SITE)
    (host,) = make_plan(load_site(site_dir)).hosts
    text = host.files[f"{compose.OPT_DIR}/authelia/compose.yml"]
    service = yaml.safe_load(text)["services"]["authelia"]
    env = service["environment"]
    expected = {
        "jwt_secret": "AUTHELIA_IDENTITY_VALIDATION_RESET_PASSWORD_JWT_SECRET_FILE",
        "session_secret": "AUTHELIA_SESSION_SECRET_FILE",
        "storage_encryption_key": "AUTHELIA_STORAGE_ENCRYPTION_KEY_FILE",
        "ldap_password": "AUTHELIA_AUTHENTICATION_BACKEND_LDAP_PASSWORD_FILE",
    }
    assert sorted(service["secrets"]) == sorted(expected)  # no relay: no SMTP password
    for secret, variable in expected.items():
        assert env[variable] == f"/run/secrets/{secret}"
    assert "env_file" not in service
    values = read_secrets(site_dir, vault_password_file("comptoir"))
    for owner in ("authelia", "directory"):
        for value in values[owner].values():
            assert value not in text, owner
    # Only the *_FILE variables may carry Authelia's own prefix: any other AUTHELIA_* is a
    # configuration key to Authelia, and a secret given as a value would land in `docker inspect`.
    assert [k for k in env if k.startswith("AUTHELIA_") and not k.endswith("_FILE")] == []


def test_the_directory_is_the_user_backend(make_site: MakeSite) -> None:
    service = authelia_service(make_site)
    env = service["environment"]
    assert env["TC_LDAP_URL"] == compose.DIRECTORY_URI == "ldap://directory:3389"
    assert env["TC_LDAP_BASE"] == compose.DIRECTORY_BASE == "dc=telecentre"
    ldap = CONFIG["authentication_backend"]["ldap"]
    assert ldap["address"] == '{{ mustEnv "TC_LDAP_URL" }}'
    assert ldap["user"] == 'cn=reader,{{ mustEnv "TC_LDAP_BASE" }}'
    assert ldap["implementation"] == "custom"
    assert (ldap["additional_users_dn"], ldap["attributes"]["username"]) == ("ou=people", "uid")
    assert ldap["users_filter"] == "(&({username_attribute}={input})(objectClass=inetOrgPerson))"
    assert ldap["additional_groups_dn"] == "ou=groups"
    assert ldap["groups_filter"] == "(&(member={dn})(objectClass=groupOfNames))"
    assert ldap["attributes"]["group_name"] == "cn"
    # cn=reader is read-only: passwords change on the directory's page, not here
    backend = CONFIG["authentication_backend"]
    assert backend["password_reset"]["disable"] and backend["password_change"]["disable"]
    # the LDAP password is the directory's reader password, read by Authelia's uid
    site = {"services": {"directory": {}, "authelia": {}}}
    files = {f["name"]: f for f in compose.secret_files("authelia", site, CATALOG)}
    assert files["ldap_password"]["source"] == ["directory", "reader_password"]
    assert {f["uid"] for f in files.values()} == {8000} and service["user"] == "8000:8000"


def test_site_values_come_from_the_environment(make_site: MakeSite) -> None:
    service = authelia_service(make_site)
    env = service["environment"]
    assert env["X_AUTHELIA_CONFIG"] == "/etc/authelia/configuration.yml"
    assert env["X_AUTHELIA_CONFIG_FILTERS"] == "template"
    assert env["TC_BASE_DOMAIN"] == "comptoir.example.org"
    assert env["TC_URL"] == "https://sso.comptoir.example.org"
    mount = (
        f"{compose.OPT_DIR}/authelia/files/config/configuration.yml:{env['X_AUTHELIA_CONFIG']}:ro"
    )
    assert mount in service["volumes"]
    assert f"{compose.DATA_DIR}/authelia/data:/var/lib/authelia" in service["volumes"]
    assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    assert "cap_add" not in service
    (cookie,) = CONFIG["session"]["cookies"]
    assert cookie["domain"] == '{{ env "TC_BASE_DOMAIN" }}'
    assert cookie["authelia_url"] == '{{ env "TC_URL" }}'
    # without a relay: nothing about mail reaches the container
    assert not [k for k in env if "SMTP" in k]


def test_mail_goes_through_the_sites_relay(make_site: MakeSite) -> None:
    env = authelia_service(make_site, site={"smtp": RELAY})["environment"]
    assert env["TC_SMTP_HOST"] == "smtp.example.org" and env["TC_SMTP_PORT"] == "465"
    assert env["TC_SMTP_SECURITY"] == "force_tls" and env["TC_SMTP_USERNAME"] == "bot@example.org"
    assert env["TC_SMTP_FROM"] == "admin@example.org"
    assert env["AUTHELIA_NOTIFIER_SMTP_PASSWORD_FILE"] == "/run/secrets/smtp_password"
    notifier = CONFIG["notifier"]
    # The template keeps one of the two (the choice is in comments, see the file's header).
    assert set(notifier) == {"disable_startup_check", "smtp", "filesystem"}
    assert notifier["filesystem"]["filename"].startswith(ENTRY["volumes"]["data"] + "/")
    assert "password" not in notifier["smtp"]


def test_configuration_reads_only_variables_the_entry_sets() -> None:
    assert TEMPLATE_ENV, "the configuration reads no variable: is the template filter still used?"
    unset = TEMPLATE_ENV - set(ENTRY["env"])
    assert not unset, f"read by the configuration, set by no env: of the entry: {unset}"
    assert all(name.startswith("TC_") for name in TEMPLATE_ENV)


def test_configuration_gives_no_secret_that_a_file_gives() -> None:
    """Authelia refuses to start when a secret is in the file and in a *_FILE variable."""
    file_vars = {spec["file_env"] for spec in ENTRY["secrets"].values()}
    as_file_var = {
        "AUTHELIA_" + key.upper().replace(".", "_") + "_FILE": key for key in flat_keys(CONFIG)
    }
    assert set(as_file_var) & file_vars == set()
    assert all(v.startswith("AUTHELIA_") and v.endswith("_FILE") for v in file_vars)
    assert CONFIG["storage"]["local"]["path"].startswith(ENTRY["volumes"]["data"] + "/")
    assert ENTRY["backup"]["sqlite"] == [
        "data/" + CONFIG["storage"]["local"]["path"].rsplit("/", 1)[1]
    ]


@pytest.mark.parametrize("line", [ln for ln in CONFIG_TEXT.splitlines() if "{{" in ln])
def test_template_actions_keep_the_file_plain_yaml(line: str) -> None:
    """A template action is either a value inside single quotes or a control action ending
    a comment line; the template also reads comments, so they hold no other braces."""
    stripped = line.strip()
    if stripped.startswith("#"):
        assert re.fullmatch(r"# \{\{- (if |else|end|\$)[^#]*\}\}", stripped), line
    else:
        assert re.fullmatch(r"(- )?[a-z_]+: '[^']*'", stripped), line


def test_the_healthcheck_uses_a_tool_of_the_image() -> None:
    test = ENTRY["healthcheck"]["test"]
    assert test[:2] == ["CMD", "wget"] and test[-1].endswith(f":{ENTRY['port']}/api/health")
    assert CONFIG["server"]["disable_healthcheck"] is True  # the root file system is read-only
    assert CONFIG["server"]["address"] == f"tcp://:{ENTRY['port']}/"


def test_authelia_is_for_the_standard_and_full_profiles() -> None:
    assert ENTRY["profiles"] == ["standard", "full"]
    assert ENTRY["image"].startswith("docker.io/authelia/authelia:4.39.")
    assert "directory" in compose.partners(ENTRY)  # members: shares the directory's host
