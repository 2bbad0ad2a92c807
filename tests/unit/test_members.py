"""Members: what is checked on the controller before anything is sent, the site's members
settings, how services find the directory, the welcome sheet, and the host program's
archive and delete steps on real files. The directory itself runs in the e2e tier."""

from __future__ import annotations

import importlib.util
import json
import re
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner

from telecentre_ctl import compose, members
from telecentre_ctl.cli.main import cli
from telecentre_ctl.errors import InvalidInput
from telecentre_ctl.site import Site, load_site
from tests.conftest import MakeSite

DIRECTORY_SERVICES = {"directory": {}, "webdav": {}, "radicale": {}, "dokuwiki": {}, "fava": {}}
PLANS = {"nomade": {"groups": ["members"], "quota_gb": 2},
         "equipe": {"groups": ["members", "staff"], "quota_gb": 0.5}}  # fmt: skip


def member_site(make_site: MakeSite, **extra: Any) -> Site:
    settings: dict[str, Any] = {"services": DIRECTORY_SERVICES,
                                "members": {"on_remove": "archive", "plans": PLANS}}  # fmt: skip
    settings.update(extra)
    return load_site(make_site(site=settings))


def invalid(make_site: MakeSite, **site: Any) -> str:
    with pytest.raises(InvalidInput) as caught:
        load_site(make_site(site=site))
    return str(caught.value)


# --------------------------------------------------------------------------- identifiers


def test_uid_from_name() -> None:
    assert members.uid_from_name("Élodie Lefèvre") == "elodie.lefevre"
    assert members.uid_from_name("  Jean-Pierre   O'Neil ") == "jeanpierre.oneil"
    assert members.uid_from_name("Ünïcødé ☕") == "unicode"
    assert members.uid_from_name("Bjørn Lœuvre-Straße") == "bjorn.loeuvrestrasse"
    assert members.uid_from_name("李") == "m0"  # nothing ASCII: still a valid identifier
    assert members.uid_from_name("2Pac Shakur").startswith("m")
    assert len(members.uid_from_name("a" * 50 + " " + "b" * 50)) == members.UID_MAX


def test_free_uid_counts_up_past_members_old_and_new() -> None:
    assert members.free_uid("alice", set()) == "alice"
    assert members.free_uid("alice", {"alice", "alice2"}) == "alice3"
    long = "x" * 32
    assert members.free_uid(long, {long}) == "x" * 31 + "2"


def test_one_time_passwords_are_long_readable_and_fresh() -> None:
    made = {members.one_time_password() for _ in range(200)}
    assert len(made) == 200
    for password in made:
        assert re.fullmatch(r"([a-km-z2-9]{5}-){3}[a-km-z2-9]{5}", password)
        assert not set(password) & set("01lo")


# --------------------------------------------------------------------------- site.yml


def test_members_settings_default_and_given(make_site: MakeSite) -> None:
    site = load_site(make_site(site={"services": DIRECTORY_SERVICES}, drop=("members",)))
    assert site.members is not None and site.members["on_remove"] == "keep"
    assert set(site.members["plans"]) == {"membre", "equipe", "admin"}
    site = member_site(make_site)
    assert site.members == {
        "on_remove": "archive",
        "plans": {"nomade": {"groups": ["members"], "quota_gb": 2},
                  "equipe": {"groups": ["members", "staff"], "quota_gb": 0.5}},
    }  # fmt: skip
    assert site.as_data()["members"] == site.members


@pytest.mark.parametrize(
    ("members_value", "expected"),
    [
        ({"on_remove": "shred"}, r"members\.on_remove: 'shred' is not a removal policy"),
        ({"plans": {"x": {"groups": ["boss"], "quota_gb": 1}}}, r"plans\.x\.groups: .*boss"),
        ({"plans": {"x": {"groups": ["members"], "quota_gb": 0}}}, r"plans\.x\.quota_gb: 0 is not"),
        ({"plans": {"x": {"groups": ["members"], "quota_gb": "5"}}}, r"quota_gb: '5' is not"),
        ({"plans": {"Bad Name": {"quota_gb": 1}}}, r"'Bad Name' is not a plan name"),
        ({"plans": {}}, r"members\.plans: must map plan names"),
        ({"plans": {"x": {"quota_gb": 1, "price": 3}}}, r"plans\.x.*price"),
        ({"expiry": 3}, r"members.*expiry"),
    ],
)
def test_bad_members_settings_are_named(
    make_site: MakeSite, members_value: Any, expected: str
) -> None:
    text = invalid(make_site, services=DIRECTORY_SERVICES, members=members_value)
    assert re.search(expected, text), text


def test_members_without_the_directory_are_refused(make_site: MakeSite) -> None:
    text = invalid(make_site, services={"webdav": {}}, members={"on_remove": "keep"})
    assert "members: members need the members' directory" in text
    assert "add directory: {} to services:" in text


def test_member_apps_must_share_the_directorys_host(make_site: MakeSite) -> None:
    hosts = {"telecentre": {"hosts": {
        "a": {"ansible_host": "10.0.0.1",
              "tc_services": ["directory", "radicale", "dokuwiki", "fava"]},
        "b": {"ansible_host": "10.0.0.2", "tc_services": ["webdav"]},
    }}}  # fmt: skip
    with pytest.raises(InvalidInput) as caught:
        load_site(make_site(site={"services": DIRECTORY_SERVICES}, hosts=hosts))
    text = str(caught.value)
    assert "webdav and directory must run on the same host" in text
    assert "logs members in against the directory on its own host" in text
    # without the directory, the same placement is fine: services keep their own accounts
    no_dir = {k: v for k, v in DIRECTORY_SERVICES.items() if k != "directory"}
    hosts["telecentre"]["hosts"]["a"]["tc_services"].remove("directory")
    load_site(make_site(site={"services": no_dir}, hosts=hosts))


# --------------------------------------------------------------------------- services


def test_services_find_the_directory_only_when_the_site_runs_it(make_site: MakeSite) -> None:
    site = member_site(make_site)
    data, catalog = site.as_data(), site.catalog.as_data()
    webdav = compose.compose_project("webdav", data, catalog)["services"]["webdav"]
    assert webdav["environment"]["LDAP_URI"] == "ldap://directory:3389"
    assert webdav["environment"]["LDAP_BASE"] == "dc=telecentre"
    assert webdav["environment"]["WEBDAV_QUOTAS"] == "equipe=512,nomade=2048"
    assert "ldap_password" in webdav["secrets"]
    (reader,) = [
        f for f in compose.secret_files("webdav", data, catalog) if f["name"] == "ldap_password"
    ]
    assert reader["source"] == ["directory", "reader_password"]  # the directory's, not a copy
    fava = compose.compose_project("fava", data, catalog)["services"]["fava"]
    assert (
        fava["environment"]["DIRECTORY_AUTH"]
        == "http://directory:8080/auth?group=staff&group=admins"
    )
    # the directory's own secret is the only one generated for it
    assert site.required_secrets()["directory"] == ["reader_password"]

    plain = load_site(make_site(site={"services": {"webdav": {}, "fava": {}}}))
    data, catalog = plain.as_data(), plain.catalog.as_data()
    webdav = compose.compose_project("webdav", data, catalog)["services"]["webdav"]
    assert not {"LDAP_URI", "LDAP_BASE", "WEBDAV_QUOTAS"} & set(webdav["environment"])
    assert "ldap_password" not in webdav["secrets"]
    assert (
        "DIRECTORY_AUTH"
        not in compose.compose_project("fava", data, catalog)["services"]["fava"]["environment"]
    )


def test_portal_says_to_log_in_with_the_member_login(make_site: MakeSite) -> None:
    site = member_site(make_site)
    entries = {
        e["service"]: e for e in compose.portal_entries(site.as_data(), site.catalog.as_data())
    }
    assert "identifiant de membre" in entries["webdav"]["login"]
    assert "membres/<identifiant>/" in entries["webdav"]["login"]
    assert entries["directory"]["url"] == "https://compte.demo.home.arpa/"
    plain = load_site(make_site(site={"services": {"webdav": {}}}))
    (entry,) = compose.portal_entries(plain.as_data(), plain.catalog.as_data())
    assert "partage" in entry["login"]


def test_directory_starts_before_the_apps_that_use_it(make_site: MakeSite) -> None:
    site = member_site(make_site, services={"webdav": {}, "pads": {}, "directory": {}})
    order = compose.start_order(site.services_on("demo-1"), site.as_data(), site.catalog.as_data())
    assert order.index("postgres") < order.index("directory") < order.index("webdav")
    assert order[-1] == "proxy"


def test_member_data_paths_come_from_the_catalogue(make_site: MakeSite) -> None:
    assert sorted(members.member_data_paths(member_site(make_site))) == [
        "/srv/telecentre/radicale/collections/collection-root/{uid}",
        "/srv/telecentre/webdav/files/membres/{uid}",
    ]


def test_backup_of_the_directory_is_its_dump(make_site: MakeSite) -> None:
    from telecentre_ctl.backup import host_config

    site = member_site(make_site)
    config = host_config(
        site.as_data(), site.catalog.as_data(), site.services_on("demo-1"), "demo-1"
    )
    (entry,) = [s for s in config["services"] if s["name"] == "directory"]
    assert entry["volumes"] == [
        "/srv/telecentre/directory/dump",
        "/srv/telecentre/directory/archive",
    ]
    assert entry["rebuilt"] == ["/srv/telecentre/directory/data"]  # live MDB: never snapshotted
    assert entry["before"] == [{"command": ["/usr/local/bin/directory", "dump"]}]
    assert entry["drill"]["image"] == site.catalog["directory"].image
    assert entry["drill"]["mounts"] == [
        ["/srv/telecentre/directory/dump", "/var/lib/ldap-dump"],
        ["/srv/telecentre/directory/archive", "/var/lib/telecentre-archive"],
    ]


# --------------------------------------------------------------------------- input


def rows_of(text: str, tmp_path: Path, name: str = "members.csv") -> members.Rows:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return members.read_csv(path)


def test_csv_with_bom_semicolons_and_optional_columns(make_site: MakeSite, tmp_path: Path) -> None:
    site = member_site(make_site)
    rows = rows_of("\ufeffname;email;plan;lang\nÉlodie Lefèvre;elodie@example.org;equipe;en\n"
                   "\n\"Martin, Paul\";paul@example.org;nomade;\n", tmp_path)  # fmt: skip
    checked = members.check_rows(site, rows, "members.csv", "")
    chosen = members.assign_uids(checked, taken={"elodie.lefevre"})
    assert [(m.uid, m.plan, m.lang, m.line) for m in chosen] == [
        ("elodie.lefevre2", "equipe", "en", 2),
        ("martin.paul", "nomade", "fr", 4),  # blank line skipped, site's language by default
    ]


def test_bad_rows_are_named_by_line_and_field(make_site: MakeSite, tmp_path: Path) -> None:
    site = member_site(make_site)
    rows = rows_of(
        "name,email,plan,uid\n"
        "Ana,ana@example.org,nomade,ana\n"
        "Bad Mail,not-an-email,nomade,\n"
        ",nobody@example.org,nomade,\n"
        "Carl,carl@example.org,platinum,\n"
        "Dup,ANA@example.org,nomade,\n"
        "Eve,eve@example.org,nomade,Eve!\n"
        "Fred,fred@example.org,nomade,ana\n",
        tmp_path,
    )
    with pytest.raises(InvalidInput) as caught:
        members.check_rows(site, rows, "members.csv", "")
    text = str(caught.value)
    for expected in (
        "members.csv:3: email: 'not-an-email' is not an e-mail address",
        "members.csv:4: name: missing",
        "members.csv:5: plan: 'platinum' is not a plan of this site",
        "use one of: equipe, nomade",
        "members.csv:6: email: ANA@example.org appears twice (also line 2)",
        "members.csv:7: uid: 'Eve!' is not a valid identifier",
        "members.csv:8: uid: ana appears twice (also line 2)",
    ):
        assert expected in text, text
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "empty"),
        ("name,mail,plan\n", ":1: the header lacks email; has unknown mail"),
        ("name,email,plan\n", "no member in the file"),
        ("name,email,plan\nA,a@example.org\n", "line 2: 2 fields where the header has 3"),
    ],
)
def test_malformed_csv_files(tmp_path: Path, content: str, expected: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(expected)):
        rows_of(content, tmp_path)


def test_csv_not_in_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("name,email,plan\nZoé,zoe@example.org,nomade\n".encode("latin-1"))
    with pytest.raises(InvalidInput, match=r"latin1.csv:2: not UTF-8 text"):
        members.read_csv(path)


def test_refusals_of_the_directory_point_at_csv_lines() -> None:
    batch = [members.NewMember("ana", "Ana", "ana@example.org", "nomade", "fr", 2),
             members.NewMember("bob", "Bob", "bob@example.org", "nomade", "fr", 3)]  # fmt: skip
    refusal = InvalidInput("the directory refused: bob: the identifier is already a member's")
    found = members._refusal_with_lines(refusal, batch, "m.csv")
    assert "m.csv:3: uid: bob: the identifier is already a member's" in str(found)
    assert "nothing was changed" in str(found)


# --------------------------------------------------------------------------- sheets


def test_welcome_sheet_in_the_members_language(make_site: MakeSite) -> None:
    site = member_site(make_site)
    fr = members.NewMember("elodie.lefevre", "Élodie Lefèvre", "elodie@example.org", "equipe", "fr")
    sheet = members.welcome_sheet(site, fr, "abcde-fghij-kmnpq-rstuv")
    for expected in ("Bienvenue à Tiers-lieu de démonstration", "elodie.lefevre",
                     "abcde-fghij-kmnpq-rstuv", "https://compte.demo.home.arpa/",
                     "https://demo.home.arpa/", "https://fichiers.demo.home.arpa/",
                     "telecentre-ca.crt", "n'est donné qu'une fois"):  # fmt: skip
        assert expected in sheet, sheet
    en = members.welcome_sheet(site, fr.__class__(**{**fr.__dict__, "lang": "en"}), "x")
    assert "Welcome to" in en and "given only once" in en


# --------------------------------------------------------------------------- CLI


def test_members_need_a_site_that_runs_the_directory(make_site: MakeSite) -> None:
    site_dir = make_site(site={"services": {"webdav": {}}})
    result = CliRunner().invoke(cli, ["members", str(site_dir), "list"])
    assert result.exit_code == 2
    assert "has no members' directory" in result.output
    assert "add directory: {} to services:" in result.output


def test_bad_member_is_refused_before_any_connection(make_site: MakeSite) -> None:
    # the lab host of the demo's hosts.yml does not exist: any connection would fail (exit 3)
    site_dir = make_site(site={"services": DIRECTORY_SERVICES, "members": {"plans": PLANS}})
    result = CliRunner().invoke(cli, ["members", str(site_dir), "add", "--name", "Ana",
                                      "--email", "ana@", "--plan", "gold"])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "--email: 'ana@' is not an e-mail address" in result.output
    assert "--plan: 'gold' is not a plan of this site" in result.output
    assert not (site_dir / "logs" / "members.log").exists()


def test_members_help_teaches_the_plans_and_groups() -> None:
    result = CliRunner().invoke(cli, ["members", "--help"])
    assert result.exit_code == 0
    for word in ("on_remove", "quota_gb", "staff", "admins", "given once", "add", "import",
                 "remove", "list", "reset-password"):  # fmt: skip
        assert word in result.output


# --------------------------------------------------------------------------- host program


def host_program() -> ModuleType:
    path = Path(members.__file__).parent / "members_host.py"
    spec = importlib.util.spec_from_file_location("members_host", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def member_files(root: Path, uid: str) -> list[str]:
    files = root / "webdav" / "files" / "membres" / uid
    (files / "projets").mkdir(parents=True)
    (files / "projets" / "devis été.txt").write_text("devis")
    calendar = root / "radicale" / "collections" / "collection-root" / uid / "agenda"
    calendar.mkdir(parents=True)
    (calendar / "event.ics").write_text("BEGIN:VCALENDAR")
    return [str(root / "webdav/files/membres/{uid}"),
            str(root / "radicale/collections/collection-root/{uid}")]  # fmt: skip


def test_archive_puts_the_members_data_in_one_archive_then_removes_it(tmp_path: Path) -> None:
    host = host_program()
    paths = member_files(tmp_path, "ana")
    member_files(tmp_path, "bob")
    archive = tmp_path / "directory" / "archive"
    (done,) = host.data_step({"policy": "archive", "uids": ["ana"], "paths": paths,
                              "archive_dir": str(archive)})  # fmt: skip
    assert not (tmp_path / "webdav/files/membres/ana").exists()
    assert not (tmp_path / "radicale/collections/collection-root/ana").exists()
    assert (tmp_path / "webdav/files/membres/bob/projets/devis été.txt").exists()  # others kept
    (made,) = archive.iterdir()
    assert done["archive"] == str(made) and made.name.startswith("ana-")
    assert made.stat().st_mode & 0o777 == 0o600
    with tarfile.open(made) as tar:
        names = tar.getnames()
        content = tar.extractfile(next(n for n in names if n.endswith("devis été.txt")))
        assert content is not None and content.read() == b"devis"
    assert any(n.endswith("agenda/event.ics") for n in names)


def test_delete_removes_only_that_members_data(tmp_path: Path) -> None:
    host = host_program()
    paths = member_files(tmp_path, "ana")
    member_files(tmp_path, "bob")
    (done,) = host.data_step({"policy": "delete", "uids": ["ana"], "paths": paths,
                              "archive_dir": str(tmp_path / "archive")})  # fmt: skip
    assert len(done["paths"]) == 2 and not (tmp_path / "archive").exists()
    assert not (tmp_path / "webdav/files/membres/ana").exists()
    assert (tmp_path / "webdav/files/membres/bob").exists()
    # a member without data: nothing to archive, nothing fails
    (none,) = host.data_step({"policy": "archive", "uids": ["carl"], "paths": paths,
                              "archive_dir": str(tmp_path / "archive")})  # fmt: skip
    assert none == {"uid": "carl", "archive": None, "paths": []}


def test_host_program_sends_passwords_only_on_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    host = host_program()
    seen: dict[str, Any] = {}

    def fake_run(argv: list[str], **kwargs: Any) -> Any:
        seen["argv"], seen["input"] = argv, kwargs["input"]
        import subprocess

        return subprocess.CompletedProcess(argv, 0, b'{"added": ["ana"]}\n', b"")

    monkeypatch.setattr(host.subprocess, "run", fake_run)
    code, answer = host.directory_request({"op": "add", "members": [{"password": "s3cret-xyz"}]})
    assert (code, answer) == (0, {"added": ["ana"]})
    assert "s3cret-xyz" not in " ".join(seen["argv"])
    assert b"s3cret-xyz" in seen["input"]


def test_request_travels_inside_the_program_not_on_the_command_line(
    make_site: MakeSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    site = member_site(make_site)
    seen: dict[str, Any] = {}

    def fake_run(argv: list[str], **kwargs: Any) -> Any:
        seen["argv"], seen["input"] = argv, kwargs["input"]
        return subprocess.CompletedProcess(argv, 0, '{"reset": "ana"}\n', "")

    monkeypatch.setattr(members.subprocess, "run", fake_run)
    members.call(site, {"directory": {"op": "reset", "uid": "ana", "password": "p4ss-w0rd"}})
    assert "p4ss-w0rd" not in " ".join(seen["argv"])
    assert seen["argv"][-1] == "python3 -I -S -"
    tail = seen["input"].rsplit("\n", 2)[-2]
    assert tail.startswith("sys.exit(main(json.loads(")
    request = eval(tail.removeprefix("sys.exit(main(").removesuffix("))"), {"json": json})
    assert request == {"directory": {"op": "reset", "uid": "ana", "password": "p4ss-w0rd"}}


def test_an_app_without_accounts_of_its_own_needs_the_directory(make_site: MakeSite) -> None:
    text = invalid(make_site, profile="standard", services={"authelia": {}})
    assert "services.authelia: authelia has no accounts of its own" in text
    assert "add directory: {} to services:" in text
