"""The lite profile end to end: the demo site deployed for real on a lab host, used
through the proxy over HTTPS with real clients, trusting only the site's own CA.

The standard profile's upstream images cannot be pulled on our machines (no registry):
they are checked by tests/unit/test_render.py (schema, `docker compose config`), not here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import uuid
from pathlib import Path

import pytest
import requests

from tests.conftest import DeployedSite
from tests.e2e.clients import (
    booking_event,
    fava_add,
    fava_balance,
    fava_session,
    member_calendar,
    pad_edit,
    pad_text,
    pads_session,
    poll_create,
    poll_data,
    poll_vote,
    polls_session,
    url,
    wait_healthy,
)

pytestmark = pytest.mark.e2e

DEMO_APPS = {"directory", "webdav", "radicale", "dokuwiki", "fava", "pads", "polls"}


def test_portal_lists_exactly_the_enabled_services(
    deployed_demo: DeployedSite, lan: str, site_ca: Path
) -> None:
    page = requests.get(url(lan, ""), verify=str(site_ca), timeout=30)
    assert page.status_code == 200
    assert set(re.findall(r'id="service-([a-z-]+)"', page.text)) == DEMO_APPS
    assert "Tiers-lieu de démonstration" in page.text  # the site's title, in its locale (fr)
    for sub in ("compte", "fichiers", "agenda", "wiki", "comptes", "pads", "sondages"):
        assert url(lan, sub) in page.text
    ca = requests.get(url(lan, "", "/telecentre-ca.crt"), verify=str(site_ca), timeout=30)
    assert ca.status_code == 200 and ca.text.strip() == site_ca.read_text().strip()


def test_plain_http_is_redirected_to_https(lan: str) -> None:
    answer = requests.get(f"http://wiki.{lan}/doku.php", allow_redirects=False, timeout=30)
    assert answer.status_code in (301, 308)
    assert answer.headers["Location"] == f"https://wiki.{lan}/doku.php"


def test_webdav_files_round_trip(
    deployed_demo: DeployedSite, lan: str, site_ca: Path, tmp_path: Path
) -> None:
    auth = deployed_demo.admin
    base = url(lan, "fichiers", f"/e2e-{uuid.uuid4().hex[:8]}/")
    session = requests.Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment beats verify
    session.verify = str(site_ca)
    session.auth = auth
    assert session.request("MKCOL", base, timeout=30).status_code == 201
    names = ["été à Caen.txt", "日本語のメモ.md", "Ünïcødé ☕ notes.txt"]
    for name in names:
        body = f"contenu de {name}\n".encode()
        assert (
            session.put(base + requests.utils.quote(name), data=body, timeout=30).status_code == 201
        )
        got = session.get(base + requests.utils.quote(name), timeout=30)
        assert got.status_code == 200 and got.content == body
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(50 * 1024 * 1024))
    with big.open("rb") as handle:
        assert session.put(base + "big.bin", data=handle, timeout=300).status_code == 201
    digest = hashlib.sha256()
    with session.get(base + "big.bin", stream=True, timeout=300) as answer:
        assert answer.status_code == 200
        for chunk in answer.iter_content(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(big.read_bytes()).hexdigest()
    listing = session.request("PROPFIND", base, headers={"Depth": "1"}, timeout=30)
    assert listing.status_code == 207
    hrefs = re.findall(r"<[A-Za-z]*:?href>([^<]+)</", listing.text)
    listed = {requests.utils.unquote(h).rstrip("/").rsplit("/", 1)[-1] for h in hrefs}
    assert set(names) | {"big.bin"} <= listed
    denied = requests.get(
        base + "big.bin", auth=(auth[0], "wrong"), verify=str(site_ca), timeout=30
    )
    assert denied.status_code == 401


def test_caldav_event_round_trip(deployed_demo: DeployedSite, lan: str, site_ca: Path) -> None:
    import caldav

    login, password = deployed_demo.admin
    client = caldav.DAVClient(
        url=url(lan, "agenda", f"/{login}/"),
        username=login,
        password=password,
        ssl_verify_cert=str(site_ca),
    )
    principal = client.principal()
    calendar = principal.make_calendar(name=f"Réunions {uuid.uuid4().hex[:6]}")
    uid = f"{uuid.uuid4()}@telecentre"
    calendar.save_event(
        "BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//telecentre-ctl//e2e//FR\nBEGIN:VEVENT\n"
        f"UID:{uid}\nDTSTAMP:20261129T090000Z\nDTSTART:20261201T090000Z\n"
        "DTEND:20261201T100000Z\nSUMMARY:Atelier réparation de vélos\nEND:VEVENT\n"
        "END:VCALENDAR\n"
    )
    again = caldav.DAVClient(
        url=url(lan, "agenda", f"/{login}/"),
        username=login,
        password=password,
        ssl_verify_cert=str(site_ca),
    )
    found = [c for c in again.principal().calendars() if c.url == calendar.url]
    (event,) = [e for e in found[0].events() if uid in e.data]
    assert "Atelier réparation de vélos" in event.data


def test_dokuwiki_page_is_saved_and_served(
    deployed_demo: DeployedSite, lan: str, site_ca: Path
) -> None:
    wiki = url(lan, "wiki", "/doku.php")
    session = requests.Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment beats verify
    session.verify = str(site_ca)
    login, password = deployed_demo.admin
    page_id = f"e2e:page{uuid.uuid4().hex[:6]}"
    login_form = session.get(wiki, params={"id": "start", "do": "login"}, timeout=30).text
    token = re.search(r'name="sectok" value="([^"]*)"', login_form)
    session.post(
        wiki,
        data={
            "id": "start",
            "do": "login",
            "u": login,
            "p": password,
            "sectok": token.group(1) if token else "",
        },
        timeout=30,
    )
    editor = session.get(wiki, params={"id": page_id, "do": "edit"}, timeout=30).text
    sectok = re.search(r'name="sectok" value="([^"]*)"', editor)
    assert sectok, "not logged in: the edit form has no security token"
    text = "====== Horaires ======\nOuvert du lundi au samedi, café offert ☕.\n"
    form = {
        "id": page_id,
        "sectok": sectok.group(1),
        "wikitext": text,
        "summary": "e2e",
        "do[save]": "1",
    }
    for field in ("changecheck", "date", "prefix", "suffix"):
        found = re.search(rf'name="{field}" value="([^"]*)"', editor)
        if found:
            form[field] = found.group(1)
    session.post(wiki, data=form, timeout=30)
    raw = requests.get(
        wiki, params={"id": page_id, "do": "export_raw"}, verify=str(site_ca), timeout=30
    )
    # DokuWiki answers 200 for missing pages too: the body is what proves the save.
    assert raw.text.strip() == text.strip()
    shown = requests.get(wiki, params={"id": page_id}, verify=str(site_ca), timeout=30).text
    assert "café offert" in shown


def test_fava_transaction_reaches_the_balance(
    deployed_demo: DeployedSite, lan: str, site_ca: Path
) -> None:
    """A transaction added through Fava's own API (what its entry form sends) shows in the
    balances; the ledger starts from the French chart of accounts for associations."""
    base = url(lan, "comptes")
    assert requests.get(base, verify=str(site_ca), timeout=30).status_code == 401
    fava = fava_session(deployed_demo, site_ca)
    assert fava.get(base, auth=(deployed_demo.admin[0], "wrong"), timeout=30).status_code == 401
    front = fava.get(base, timeout=60)
    assert front.status_code == 200 and "/association/" in front.url
    accounts = fava.get(
        url(lan, "comptes", "/association/api/query"),
        timeout=60,
        params={"query_string": "SELECT account FROM #accounts WHERE account ~ '^Produits:756'"},
    )
    assert "Produits:756-Cotisations" in accounts.text  # the plan comptable associatif
    narration = f"Cotisation {uuid.uuid4().hex[:8]}"
    fava_add(fava, lan, narration, "42.50")
    assert fava_balance(fava, lan, narration) == {
        "Actif:512-Banque": "42.50",
        "Produits:756-Cotisations": "-42.50",
    }
    sheet = fava.get(url(lan, "comptes", "/association/balance_sheet/"), timeout=60)
    assert sheet.status_code == 200 and "512-Banque" in sheet.text


def test_two_clients_edit_one_pad_and_it_survives_a_restart(
    deployed_demo: DeployedSite, lan: str, site_ca: Path, pad_client: Path
) -> None:
    """Two co-workers (the Yjs/Hocuspocus client the editor runs) write in one pad at the
    same time and each sees the other's line; the pad is in PostgreSQL: after a restart of
    the pads server a third client finds both lines."""
    assert requests.get(url(lan, "pads"), verify=str(site_ca), timeout=30).status_code == 401
    pads = pads_session(deployed_demo, site_ca)
    page = pads.get(url(lan, "pads"), timeout=30)
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert len(pads.get(url(lan, "pads", "/static/app.js"), timeout=30).content) > 100_000
    token = pads.get(url(lan, "pads", "/api/token"), timeout=30).json()["token"]
    pad = f"Réunion {uuid.uuid4().hex[:6]}"
    lines = ["Ordre du jour : le four du fab-lab", "Compte rendu : tout le monde est d'accord ✓"]
    both = [pad_edit(pad_client, deployed_demo, lan, site_ca, token, pad, line, lines)
            for line in lines]  # fmt: skip
    for proc in both:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert sorted(json.loads(out)["lines"]) == sorted(lines)
    # both lines, in the order the concurrent edits were merged
    assert sorted(pad_text(pads, lan, pad, lines).splitlines()) == sorted(lines)
    forged = pad_edit(pad_client, deployed_demo, lan, site_ca, "9999999999.forged", pad, None, [])
    _, err = forged.communicate(timeout=120)
    assert forged.returncode == 1 and "authentication failed" in err

    deployed_demo.run("docker restart tc-pads")
    wait_healthy(deployed_demo, "tc-pads")
    later = pad_edit(pad_client, deployed_demo, lan, site_ca, token, pad, None, lines)
    out, err = later.communicate(timeout=120)
    assert later.returncode == 0, err
    assert sorted(json.loads(out)["lines"]) == sorted(lines)
    listed = pads.get(url(lan, "pads", "/api/pads"), timeout=30).json()["pads"]
    assert pad in [p["name"] for p in listed]


def test_a_poll_is_made_voted_and_counted(
    deployed_demo: DeployedSite, lan: str, site_ca: Path
) -> None:
    """jawanndenn through its own forms, as a browser posts them: a poll on the fab-lab's
    next workshop, two members vote, the results count both."""
    assert requests.get(url(lan, "sondages"), verify=str(site_ca), timeout=30).status_code == 401
    polls = polls_session(deployed_demo, site_ca)
    options = ["Réparation de vélos", "Impression 3D", "Couture"]
    poll = poll_create(polls, lan, "Quel atelier en janvier ?", options)
    assert polls.get(url(lan, "sondages", f"/poll/{poll}"), timeout=30).status_code == 200
    poll_vote(polls, lan, poll, "Camille", [0, 2])
    poll_vote(polls, lan, poll, "Dominique", [1, 2])
    data = poll_data(polls, lan, poll)
    assert data["config"] == {"title": "Quel atelier en janvier ?", "options": options}
    assert data["votes"] == [["Camille", [True, False, True]], ["Dominique", [False, True, True]]]


def test_a_room_is_booked_once_and_shows_busy(
    deployed_demo: DeployedSite, lan: str, site_ca: Path
) -> None:
    """A member's CalDAV account books the meeting room (a resource calendar in Radicale):
    an overlapping booking is refused, the next slot is taken, free/busy shows both."""
    import caldav

    room = member_calendar(deployed_demo, lan, site_ca, "salle-reunion")
    assert room.get_display_name() == "Salle de réunion"
    day = f"2027{uuid.uuid4().int % 12 + 1:02d}{uuid.uuid4().int % 28 + 1:02d}"
    room.save_event(booking_event(str(uuid.uuid4()), f"{day}T090000Z", f"{day}T110000Z", "CA"))
    with pytest.raises(caldav.lib.error.PutError):
        room.save_event(
            booking_event(str(uuid.uuid4()), f"{day}T100000Z", f"{day}T120000Z", "Atelier")
        )
    room.save_event(booking_event(str(uuid.uuid4()), f"{day}T110000Z", f"{day}T120000Z", "Suite"))
    start = dt.datetime.strptime(day, "%Y%m%d").replace(tzinfo=dt.UTC)
    busy = room.freebusy_request(start, start + dt.timedelta(days=1)).data
    assert busy.count("FBTYPE:BUSY") == 2
    assert f"DTSTART:{day}T090000Z" in busy and f"DTSTART:{day}T110000Z" in busy
    # another resource is free at that time
    laser = member_calendar(deployed_demo, lan, site_ca, "decoupe-laser")
    laser.save_event(
        booking_event(str(uuid.uuid4()), f"{day}T100000Z", f"{day}T120000Z", "Découpe")
    )


def test_containers_are_hardened_and_keep_secrets_out_of_env(deployed_demo: DeployedSite) -> None:
    names = deployed_demo.run("docker ps -a --format '{{.Names}}'").stdout.split()
    assert sorted(names) == sorted(f"tc-{s}" for s in (*DEMO_APPS, "postgres", "proxy"))
    inspected = json.loads(deployed_demo.run("docker inspect " + " ".join(names)).stdout)
    secret_values = [v for values in deployed_demo.secrets().values() for v in values.values()]
    for container in inspected:
        name, host = container["Name"], container["HostConfig"]
        assert host["Privileged"] is False, name
        assert host["RestartPolicy"]["Name"] == "unless-stopped", name
        assert host["LogConfig"]["Config"].get("max-size"), name
        assert "ALL" in (host["CapDrop"] or []), name
        assert host["ReadonlyRootfs"] is True, name
        for mount in container["Mounts"]:
            assert "docker.sock" not in mount["Source"], name
        env = "\n".join(container["Config"]["Env"] or [])
        for value in secret_values:
            assert value not in env, f"{name} has a secret in its environment"
    # Lab hosts cannot enforce memory limits (docker inspect shows 0 there; real hosts
    # apply them): check that every compose service declares one.
    compose_files = deployed_demo.run("cat /opt/telecentre/*/compose.yml").stdout
    assert compose_files.count("mem_limit:") == len(names)


def test_tls_is_mozilla_intermediate_compliant(
    deployed_demo: DeployedSite, lan: str, site_ca: Path
) -> None:
    from sslyze import (
        CertificateInfoExtraArgument,
        ScanCommandsExtraArguments,
        Scanner,
        ServerNetworkConfiguration,
        ServerNetworkLocation,
        ServerScanRequest,
        ServerScanStatusEnum,
    )
    from sslyze.mozilla_tls_profile.tls_config_checker import (
        MozillaTlsConfiguration,
        TlsConfigurationEnum,
        check_server_against_tls_configuration,
    )

    host = f"wiki.{lan}"
    request = ServerScanRequest(
        server_location=ServerNetworkLocation(host, 443, deployed_demo.address),
        network_configuration=ServerNetworkConfiguration(host),
        scan_commands_extra_arguments=ScanCommandsExtraArguments(
            certificate_info=CertificateInfoExtraArgument(custom_ca_file=site_ca)
        ),
    )
    scanner = Scanner()
    scanner.queue_scans([request])
    (result,) = list(scanner.get_results())
    assert result.scan_status == ServerScanStatusEnum.COMPLETED
    # Raises ServerNotCompliantWithTlsConfiguration listing every deviation.
    check_server_against_tls_configuration(
        server_scan_result=result,
        tls_config_to_check_against=MozillaTlsConfiguration.get(
            TlsConfigurationEnum.MOZILLA_INTERMEDIATE
        ),
    )


def test_second_deploy_changes_nothing(deployed_demo: DeployedSite) -> None:
    summary = json.loads(deployed_demo.deploy("--json").stdout)
    assert [h["changed"] for h in summary["hosts"].values()] == [0], summary


def test_removed_service_leaves_host_and_portal(
    deployed_demo: DeployedSite, lan: str, site_ca: Path
) -> None:
    site_file = deployed_demo.site_dir / "site.yml"
    original = site_file.read_text(encoding="utf-8")
    site_file.write_text(original.replace("  dokuwiki: {}\n", ""), encoding="utf-8")
    try:
        deployed_demo.deploy()
        assert "tc-dokuwiki" not in deployed_demo.run("docker ps -a --format '{{.Names}}'").stdout
        assert deployed_demo.run("test -d /opt/telecentre/dokuwiki", check=False).returncode != 0
        assert deployed_demo.run("test -d /srv/telecentre/dokuwiki/data").returncode == 0
        portal = requests.get(url(lan, ""), verify=str(site_ca), timeout=30).text
        assert set(re.findall(r'id="service-([a-z-]+)"', portal)) == DEMO_APPS - {"dokuwiki"}
        assert "wiki." not in deployed_demo.run("cat /opt/telecentre/proxy/caddy/Caddyfile").stdout
        # what the running proxy reads, not only the rendered file
        served = deployed_demo.run("docker exec tc-proxy cat /etc/caddy/Caddyfile").stdout
        assert "wiki." not in served and "fichiers." in served
    finally:
        site_file.write_text(original, encoding="utf-8")
        deployed_demo.deploy()
    assert "tc-dokuwiki" in deployed_demo.run("docker ps --format '{{.Names}}'").stdout
