"""Members end to end on the deployed demo site (which runs the members' directory): one
account, made by `telecentre-ctl members`, logs into the file share (WebDAV), the calendars
(a real CalDAV client), the wiki, the pads, the polls and, for the staff, the accounting,
over HTTPS through the proxy; removal locks it out of all of them by the time the command
returns; 200 members come in from one CSV file; passwords show nowhere but where given."""

from __future__ import annotations

import csv
import html
import json
import re
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import DeployedSite
from tests.e2e.clients import url

pytestmark = pytest.mark.e2e

CLI = "from telecentre_ctl.cli.main import main\nmain()\n"
ARCHIVE = "/srv/telecentre/directory/archive"


def ctl(site: DeployedSite, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True,
                          env=site.env, timeout=900, check=False)  # fmt: skip


def session(site_ca: Path, auth: tuple[str, str] | None) -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment beats verify
    s.verify = str(site_ca)
    s.auth = auth
    return s


def wiki_login(lan: str, site_ca: Path, login: str, password: str) -> bool:
    """DokuWiki answers 200 whatever happens: logged in when the page offers to log out."""
    wiki = url(lan, "wiki", "/doku.php")
    s = session(site_ca, None)
    form = s.get(wiki, params={"id": "start", "do": "login"}, timeout=30).text
    token = re.search(r'name="sectok" value="([^"]*)"', form)
    page = s.post(wiki, timeout=30, data={"id": "start", "do": "login", "u": login, "p": password,
                                          "sectok": token.group(1) if token else ""})  # fmt: skip
    return "do=logout" in page.text or 'name="do" value="logout"' in page.text


def caldav_event(lan: str, site_ca: Path, login: str, password: str) -> str:
    """A real CalDAV client makes a calendar and an event in it; returns the event's uid."""
    import caldav

    client = caldav.DAVClient(url=url(lan, "agenda", f"/{login}/"), username=login,
                              password=password, ssl_verify_cert=str(site_ca))  # fmt: skip
    calendar = client.principal().make_calendar(name=f"Perso {uuid.uuid4().hex[:6]}")
    uid = f"{uuid.uuid4()}@telecentre"
    calendar.save_event(
        "BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//telecentre-ctl//e2e//FR\nBEGIN:VEVENT\n"
        f"UID:{uid}\nDTSTAMP:20261129T090000Z\nDTSTART:20261202T090000Z\n"
        "DTEND:20261202T100000Z\nSUMMARY:Premier jour au tiers-lieu\nEND:VEVENT\nEND:VCALENDAR\n"
    )
    return uid


def status_of(lan: str, site_ca: Path, sub: str, auth: tuple[str, str], path: str = "/") -> int:
    return session(site_ca, auth).get(url(lan, sub, path), timeout=60).status_code


def files_status(lan: str, site_ca: Path, auth: tuple[str, str]) -> int:
    """207 when the file share lets the member in (a PROPFIND of commun/), else 401.
    Credentials go as UTF-8, as browsers send them (requests would use Latin-1)."""
    utf8 = (auth[0].encode(), auth[1].encode())
    answer = session(site_ca, None).request(
        "PROPFIND",
        url(lan, "fichiers", "/commun/"),
        headers={"Depth": "0"},
        auth=utf8,
        timeout=60,
    )
    return answer.status_code


@pytest.fixture(scope="module")
def zoe(deployed_demo: DeployedSite) -> tuple[str, str]:
    """A member of the small test plan, added as a volunteer would (welcome sheet on stdout)."""
    proc = deployed_demo.cli("members", str(deployed_demo.site_dir), "add", "--name", "Zoé Ébène",
                             "--email", "zoe.e2e@example.org", "--plan", "essai")  # fmt: skip
    sheet = proc.stdout
    login = re.search(r"Identifiant\s+(\S+)", sheet)
    password = re.search(r"Mot de passe provisoire\s+(\S+)", sheet)
    assert login and password, sheet
    assert login.group(1) == "zoe.ebene"
    assert "https://compte." in sheet and "https://fichiers." in sheet
    return login.group(1), password.group(1)


def test_a_new_member_logs_into_every_service(
    deployed_demo: DeployedSite, lan: str, site_ca: Path, zoe: tuple[str, str]
) -> None:
    login, password = zoe
    dav = session(site_ca, zoe)
    own = url(lan, "fichiers", f"/membres/{login}/")
    body = "Premier fichier de Zoé ✓\n".encode()
    assert dav.put(own + "bonjour.txt", data=body, timeout=30).status_code == 201
    got = dav.get(own + "bonjour.txt", timeout=30)
    assert got.status_code == 200 and got.content == body
    shared = url(lan, "fichiers", f"/commun/zoe-{uuid.uuid4().hex[:6]}.txt")
    assert dav.put(shared, data=b"pour tous", timeout=30).status_code == 201
    admin = session(site_ca, deployed_demo.admin)
    assert admin.get(shared, timeout=30).content == b"pour tous"  # shared with every member
    theirs = admin.get(own + "bonjour.txt", timeout=30)  # Zoé's own folder: refused
    assert theirs.status_code in (401, 403) and theirs.content != body
    listing = dav.request("PROPFIND", url(lan, "fichiers", "/membres/"),
                          headers={"Depth": "1"}, timeout=30)  # fmt: skip
    assert listing.status_code == 403  # who the members are is nobody's business

    assert caldav_event(lan, site_ca, login, password)
    assert wiki_login(lan, site_ca, login, password)
    assert not wiki_login(lan, site_ca, login, password + "x")
    assert status_of(lan, site_ca, "pads", zoe) == 200
    assert status_of(lan, site_ca, "sondages", zoe) == 200
    assert status_of(lan, site_ca, "comptes", zoe) == 401  # accounting: staff only
    assert status_of(lan, site_ca, "comptes", deployed_demo.admin) == 200


def test_the_plans_quota_holds_on_the_members_own_folder(
    lan: str, site_ca: Path, zoe: tuple[str, str]
) -> None:
    dav = session(site_ca, zoe)
    own = url(lan, "fichiers", f"/membres/{zoe[0]}/")
    six_mib = b"x" * (6 * 1024 * 1024)
    assert dav.put(own + "a.bin", data=six_mib, timeout=120).status_code == 201
    refused = dav.put(own + "b.bin", data=six_mib, timeout=120)  # 12 MiB > 10 MiB (essai)
    assert refused.status_code == 507
    assert dav.get(own + "b.bin", timeout=30).status_code == 404
    assert dav.put(own + "a.bin", data=six_mib[:1024], timeout=60).status_code == 204  # smaller
    assert dav.put(own + "b.bin", data=six_mib, timeout=120).status_code == 201  # fits now
    assert dav.delete(own + "b.bin", timeout=30).status_code == 204
    # a PUT sent in chunks (a generator: no Content-Length) counts its announced size, as
    # macOS's Finder sends it; without one it is refused, never let past the quota
    chunked = dav.put(own + "c.bin", data=iter([b"y" * 1024]), timeout=60)
    assert chunked.status_code == 411 and dav.get(own + "c.bin", timeout=30).status_code == 404
    announce = {"X-Expected-Entity-Length": str(len(six_mib))}
    fits = dav.put(own + "c.bin", data=iter([six_mib]), headers=announce, timeout=120)
    assert fits.status_code == 201 and dav.get(own + "c.bin", timeout=30).content == six_mib
    over = dav.put(own + "d.bin", data=iter([b"z" * 1024]), headers=announce, timeout=60)
    assert over.status_code == 507  # 1 KiB + 6 MiB + 6 MiB announced > 10 MiB
    assert dav.delete(own + "c.bin", timeout=30).status_code == 204
    # the shared folder is not counted in the member's quota
    big = url(lan, "fichiers", f"/commun/gros-{uuid.uuid4().hex[:6]}.bin")
    assert dav.put(big, data=six_mib * 2, timeout=120).status_code == 201
    assert dav.delete(big, timeout=30).status_code == 204


def test_members_choose_their_own_password_on_the_account_page(
    deployed_demo: DeployedSite, lan: str, site_ca: Path
) -> None:
    login, first = deployed_demo.add_member("Paul Martin", "paul.e2e@example.org", "nomade")
    page = session(site_ca, None).get(url(lan, "compte"), timeout=30)
    assert page.status_code == 200 and 'name="current"' in page.text
    # the credentials check of the services is not reachable from outside
    outside = session(site_ca, (login, first)).get(url(lan, "compte", "/auth"), timeout=30)
    assert outside.status_code == 404
    mine = "Un mot de passe à moi ✓"
    changed = session(site_ca, None).post(url(lan, "compte"), timeout=30, data={
        "uid": login, "current": first, "new": mine, "confirm": mine})  # fmt: skip
    assert changed.status_code == 200 and "C'est fait" in html.unescape(changed.text)
    assert files_status(lan, site_ca, (login, mine)) == 207
    assert files_status(lan, site_ca, (login, first)) == 401
    other = "encore un autre"
    wrong = session(site_ca, None).post(url(lan, "compte"), timeout=30, data={
        "uid": login, "current": "pas le bon", "new": other, "confirm": other})  # fmt: skip
    assert wrong.status_code == 403
    reset = deployed_demo.cli("members", str(deployed_demo.site_dir), "reset-password", login,
                              "--json")  # fmt: skip
    new = json.loads(reset.stdout)["reset"][0]["password"]
    assert files_status(lan, site_ca, (login, new)) == 207
    assert files_status(lan, site_ca, (login, mine)) == 401


def test_removal_locks_the_member_out_of_every_service_at_once(
    deployed_demo: DeployedSite, lan: str, site_ca: Path
) -> None:
    login, password = deployed_demo.add_member("Léa Départ", "lea.e2e@example.org", "nomade")
    auth = (login, password)
    own = url(lan, "fichiers", f"/membres/{login}/")
    assert session(site_ca, auth).put(own + "cv.txt", data=b"mon cv", timeout=30).status_code == 201
    caldav_event(lan, site_ca, login, password)
    assert wiki_login(lan, site_ca, login, password)

    removed = deployed_demo.cli("members", str(deployed_demo.site_dir), "remove", login, "--json")
    answer = json.loads(removed.stdout)
    # by the time the command has returned, every service refuses the account
    assert files_status(lan, site_ca, auth) == 401
    assert status_of(lan, site_ca, "agenda", auth, f"/{login}/") == 401
    assert not wiki_login(lan, site_ca, login, password)
    assert status_of(lan, site_ca, "pads", auth) == 401
    assert status_of(lan, site_ca, "sondages", auth) == 401
    # the demo's policy: the member's files and calendars go into one archive, kept
    (archived,) = answer["data"]
    assert archived["archive"].startswith(f"{ARCHIVE}/{login}-")
    listing = deployed_demo.run(f"tar -tzf {archived['archive']}").stdout
    assert f"membres/{login}/cv.txt" in listing and f"collection-root/{login}/" in listing
    assert deployed_demo.run(f"stat -c %a {archived['archive']}").stdout.strip() == "600"
    gone = deployed_demo.run(f"test -e /srv/telecentre/webdav/files/membres/{login}", check=False)
    assert gone.returncode == 1
    listed = json.loads(deployed_demo.cli("members", str(deployed_demo.site_dir), "list",
                                          "--all", "--json").stdout)["members"]  # fmt: skip
    (former,) = [m for m in listed if m["uid"] == login]
    assert former["status"] == "removed"
    again = deployed_demo.cli("members", str(deployed_demo.site_dir), "remove", login, check=False)
    assert again.returncode == 2 and "not a current member" in again.stderr


def test_import_of_200_members_all_or_nothing(
    deployed_demo: DeployedSite, lan: str, site_ca: Path, tmp_path: Path
) -> None:
    site_dir = str(deployed_demo.site_dir)
    before = len(
        json.loads(deployed_demo.cli("members", site_dir, "list", "--json").stdout)["members"]
    )
    rows = [{"name": f"Membre {i:03d} Ünïcødé", "email": f"membre{i:03d}@example.org",
             "plan": "nomade" if i % 2 else "resident"} for i in range(200)]  # fmt: skip
    bad = tmp_path / "avec-erreur.csv"
    with bad.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["name", "email", "plan"])
        writer.writeheader()
        no_mail = {"name": "Sans Mail", "email": "sans-arobase", "plan": "nomade"}
        writer.writerows([*rows[:150], no_mail, *rows[150:]])
    refused = ctl(deployed_demo, "members", site_dir, "import", str(bad))
    assert refused.returncode == 2
    assert f"{bad}:152: email: 'sans-arobase' is not an e-mail address" in refused.stderr
    after_refusal = json.loads(deployed_demo.cli("members", site_dir, "list", "--json").stdout)
    assert len(after_refusal["members"]) == before  # nothing added

    good = tmp_path / "membres.csv"
    with good.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["name", "email", "plan"])
        writer.writeheader()
        writer.writerows(rows)
    sheets = tmp_path / "fiches"
    done = ctl(deployed_demo, "members", site_dir, "import", str(good), "--sheets", str(sheets))
    assert done.returncode == 0, done.stderr
    made = sorted(sheets.iterdir())
    assert len(made) == 200
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in made)
    listed = json.loads(deployed_demo.cli("members", site_dir, "list", "--json").stdout)["members"]
    assert len(listed) == before + 200
    sheet = (sheets / "membre.042.unicode.txt").read_text(encoding="utf-8")
    password = re.search(r"Mot de passe provisoire\s+(\S+)", sheet)
    assert password and "resident" in sheet
    auth = ("membre.042.unicode", password.group(1))
    assert files_status(lan, site_ca, auth) == 207
    # the same file again: every row is already there, nothing changes
    twice = ctl(deployed_demo, "members", site_dir, "import", str(good))
    assert (
        twice.returncode == 2 and "membre000@example.org is the e-mail of a member" in twice.stderr
    )


def test_first_passwords_never_reach_logs(
    deployed_demo: DeployedSite, zoe: tuple[str, str]
) -> None:
    """The passwords given this session are in no log: the site's (deploy, members), the
    directory's and the services' container logs, the host's journal."""
    passwords = [zoe[1], deployed_demo.admin[1]]
    for log in (deployed_demo.site_dir / "logs").iterdir():
        text = log.read_text(encoding="utf-8", errors="replace")
        for password in passwords:
            assert password not in text, log
    members_log = (deployed_demo.site_dir / "logs" / "members.log").read_text(encoding="utf-8")
    assert f"add {zoe[0]}(essai)" in members_log
    for container in ("tc-directory", "tc-webdav", "tc-radicale", "tc-dokuwiki", "tc-proxy"):
        logs = deployed_demo.run(f"docker logs {container} 2>&1").stdout
        for password in passwords:
            assert password not in logs, container
    journal = deployed_demo.run("journalctl --no-pager -q 2>/dev/null | tail -n 20000").stdout
    for password in passwords:
        assert password not in journal


def test_status_reports_the_directory(deployed_demo: DeployedSite) -> None:
    proc = deployed_demo.cli("status", str(deployed_demo.site_dir), "--json")
    report: dict[str, Any] = json.loads(proc.stdout)
    (site,) = report["sites"]
    (directory,) = [s for s in site["services"] if s["service"] == "directory"]
    assert directory["state"] == "ok" and directory["level"] == "ok", directory
    assert directory["title"].startswith("Mon compte")
    assert directory["url"] == f"https://compte.{deployed_demo.name}.home.arpa/"
