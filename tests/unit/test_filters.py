"""The Python filters the roles use: logic kept out of templates, tested here."""

from __future__ import annotations

import shlex

from telecentre_ctl import compose
from telecentre_ctl.ansible_plugins.filter.telecentre import FilterModule, to_compose_yaml
from telecentre_ctl.catalog import load_catalog

CATALOG = load_catalog().as_data()


def test_every_filter_is_registered() -> None:
    filters = FilterModule().filters()
    assert {
        "tc_compose",
        "tc_proxy_routes",
        "tc_portal_entries",
        "tc_obsolete_services",
        "tc_leftover_services",
        "tc_secret_files",
        "tc_volume_dirs",
        "tc_database_sql",
        "tc_image_ref",
    } <= set(filters)


def test_obsolete_services() -> None:
    found = [
        "/opt/telecentre/webdav/compose.yml",
        "/opt/telecentre/radicale/compose.yml",
        "/opt/telecentre/proxy/compose.yml",
    ]
    assert compose.obsolete_services(found, ["radicale", "proxy"]) == ["webdav"]
    assert compose.obsolete_services([], ["radicale"]) == []


def test_leftover_services_split_removed_from_moved() -> None:
    """Box1 ran webdav, radicale and dokuwiki. Radicale moved to box2; dokuwiki left the
    site; nextcloud's project went in an earlier deploy but its data folder is still here;
    a folder that is no service is not ours to touch."""
    projects = [
        f"/opt/telecentre/{s}/compose.yml" for s in ("webdav", "radicale", "dokuwiki", "proxy")
    ]
    data = [
        f"/srv/telecentre/{d}" for d in ("webdav", "radicale", "dokuwiki", "nextcloud", "notes")
    ]
    placement = {"box1": ["webdav", "proxy"], "box2": ["radicale", "proxy"], "box3": ["radicale"]}
    left = compose.leftover_services(projects, data, placement["box1"], placement, CATALOG)
    assert left == {"removed": ["dokuwiki", "nextcloud"], "moved": {"radicale": ["box2", "box3"]}}
    # where everything still runs, nothing is left over
    assert compose.leftover_services(projects[:1], data[:1], ["webdav"], placement, CATALOG) == {
        "removed": [], "moved": {},
    }  # fmt: skip


SITE = {"name": "c", "tls": "acme", "admin_email": "a@example.org", "services": {}}


def test_secret_files_and_env() -> None:
    files = compose.secret_files("nextcloud", SITE, CATALOG)
    assert [f["name"] for f in files] == ["admin_password", "db_password", "redis_password"]
    assert files[0]["path"] == "/opt/telecentre/nextcloud/secrets/admin_password"
    assert files[0]["source"] == ["nextcloud", "admin_password"]
    # shared with the dependency, readable by the image's www-data
    assert files[2]["source"] == ["redis", "password"] and files[2]["uid"] == 33
    assert compose.secret_files("postgres", SITE, CATALOG)[0]["uid"] == 999
    assert compose.secret_env("etherpad", SITE, CATALOG) == ["db_password", "admin_password"]
    values = {"etherpad": {"admin_password": "a", "db_password": "b"}}
    lines = compose.env_file_lines("etherpad", SITE, CATALOG, values)
    assert lines == ["DB_PASS=b", "ADMIN_PASSWORD=a"]


def test_the_smtp_password_is_given_only_with_a_login() -> None:
    relay = {"host": "smtp.example.org", "port": 587, "security": "starttls"}
    without = compose.secret_files("vaultwarden", SITE | {"smtp": relay}, CATALOG)
    assert [f["name"] for f in without] == ["admin_token"]
    with_login = SITE | {"smtp": relay | {"username": "bot"}}
    names = [f["name"] for f in compose.secret_files("vaultwarden", with_login, CATALOG)]
    assert names == ["admin_token", "smtp_password"]
    assert compose.provided_secrets(with_login) == [("smtp", "password")]
    assert compose.provided_secrets(SITE) == []


def test_volume_dirs() -> None:
    assert compose.volume_dirs("dokuwiki", CATALOG) == [
        {"path": "/srv/telecentre/dokuwiki/data", "uid": 0, "gid": 0},
        {"path": "/srv/telecentre/dokuwiki/acl", "uid": 0, "gid": 0},
    ]
    assert compose.volume_dirs("redis", CATALOG) == []
    # the image runs as a non-root user: its folder is made its own
    assert compose.volume_dirs("etherpad", CATALOG) == [
        {"path": "/srv/telecentre/etherpad/var", "uid": 5001, "gid": 0}
    ]


def test_timers_become_systemd_jobs() -> None:
    (cron,) = compose.timers(["postgres", "redis", "nextcloud", "proxy"], CATALOG)
    assert cron["unit"] == "tc-job-nextcloud-cron"
    assert cron["on_calendar"] == "*-*-* *:00/5:00"
    assert shlex.split(cron["exec"]) == [
        "/usr/bin/docker", "exec", "--user", "www-data", "tc-nextcloud",
        "php", "-f", "/var/www/html/cron.php",
    ]  # fmt: skip
    assert compose.timers(["webdav", "proxy"], CATALOG) == []
    assert compose.timer_calendar("6h") == "*-*-* 00/6:00:00"
    for drifting in ("7m", "60m", "5h", "0m"):
        try:
            compose.timer_calendar(drifting)
        except ValueError:
            continue
        raise AssertionError(drifting)


def test_job_commands_reach_the_program_as_written() -> None:
    """systemd expands $ and % in ExecStart=: the catalogue's words must survive."""
    (jobs,) = compose.timers(["dolibarr"], CATALOG)
    code = shlex.split(jobs["exec"])[-1]
    assert "$$argv" in code and "$argv" not in code.replace("$$argv", "")
    quoted = compose.systemd_quote(["/bin/x", "a b", '"q"', "100%", "\\", "$HOME", ""])
    assert quoted == '/bin/x "a b" "\\"q\\"" 100%% "\\\\" $$HOME ""'


def test_obsolete_jobs() -> None:
    installed = [
        "/etc/systemd/system/tc-job-nextcloud-cron.timer",
        "/etc/systemd/system/tc-job-dolibarr-jobs.timer",
    ]
    jobs = compose.timers(["nextcloud"], CATALOG)
    assert compose.obsolete_jobs(installed, jobs) == ["tc-job-dolibarr-jobs"]
    assert compose.obsolete_jobs(installed[:1], jobs) == []


def test_health_waits_cover_slow_first_starts() -> None:
    # start period (15 min) and every retry: far more than the role's 300 s floor
    assert compose.health_wait("nextcloud", CATALOG, 300) == 15 * 60 + 6 * (30 + 10)
    assert compose.health_wait("proxy", CATALOG, 300) == 300
    assert compose.health_wait("nextcloud", CATALOG, 3600) == 3600


def test_services_trusting_the_site_ca_start_after_the_proxy() -> None:
    placed = ["postgres", "redis", "nextcloud", "collabora", "radicale", "proxy"]
    lan = SITE | {"tls": "internal"}
    assert compose.start_order(placed, lan, CATALOG) == [
        "postgres", "redis", "radicale", "proxy", "nextcloud", "collabora",
    ]  # fmt: skip
    assert compose.start_order(placed, SITE, CATALOG) == placed


def test_database_commands_and_sql() -> None:
    pg = compose.database_commands("nextcloud", CATALOG)
    assert shlex.split(pg["check"])[-1] == "SELECT 1 FROM pg_roles WHERE rolname='tc_nextcloud'"
    sql = compose.database_sql("nextcloud", CATALOG, "s3cr'et")
    assert "CREATE ROLE tc_nextcloud LOGIN PASSWORD 's3cr''et';" in sql
    maria = compose.database_commands("dolibarr", CATALOG)
    inner = shlex.split(maria["check"])[-1]  # what sh -c runs inside the container
    assert shlex.split(inner)[-1] == "SELECT 1 FROM mysql.user WHERE user='tc_dolibarr'"
    assert "$(cat /run/secrets/root_password)" in inner
    assert "GRANT ALL PRIVILEGES ON tc_dolibarr.*" in compose.database_sql("dolibarr", CATALOG, "x")


def test_image_ref() -> None:
    assert compose.image_ref(CATALOG["radicale"]) == CATALOG["radicale"]["build"]["tag"]
    assert compose.image_ref(CATALOG["redis"]).startswith("docker.io/library/redis:7.4")


def test_to_yaml_accepts_str_and_dict_subclasses() -> None:
    class Tagged(str):
        pass

    class TaggedDict(dict):  # type: ignore[type-arg]
        pass

    text = to_compose_yaml(TaggedDict({Tagged("a"): [Tagged("b"), 1, True]}))
    assert text == "a:\n- b\n- 1\n- true\n"


def test_layout_is_the_one_compose_uses() -> None:
    layout = compose.layout()
    doc = compose.compose_project(
        "radicale",
        {"name": "x", "services": {"radicale": {}}, "base_domain": "x.home.arpa"},
        CATALOG,
    )
    assert doc["networks"]["telecentre"]["name"] == layout["proxy_network"]
    assert doc["services"]["radicale"]["volumes"][0].startswith(layout["data_dir"])


def test_recipe_dir_and_digest(tmp_path) -> None:  # type: ignore[no-untyped-def]
    recipe = compose.recipe_dir("radicale", CATALOG)
    assert recipe.endswith("services/radicale/build")
    assert compose.recipe_dir("redis", CATALOG) == ""
    digest = compose.recipe_digest(recipe, "telecentre/debian-base:trixie")
    assert digest.startswith("sha256:") and digest == compose.recipe_digest(
        recipe, "telecentre/debian-base:trixie"
    )


def test_healthchecks_run_often_while_a_service_starts() -> None:
    site = {**SITE, "base_domain": "c.example.org", "locale": "fr", "title": "C"}
    for name in ("radicale", "directory", "nextcloud"):
        check = compose.compose_project(name, site, CATALOG)["services"][name]["healthcheck"]
        assert check["start_interval"] == "2s" and check["interval"] == "30s"
