"""The lite profile end to end: the demo site deployed for real on a lab host, used
through the proxy over HTTPS with real clients, trusting only the site's own CA.

The standard profile's upstream images cannot be pulled on our machines (no registry):
they are checked by tests/unit/test_render.py (schema, `docker compose config`), not here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from pathlib import Path

import pytest
import requests

from tests.conftest import DeployedSite

pytestmark = pytest.mark.e2e

DEMO_APPS = {"webdav", "radicale", "dokuwiki"}


def url(lan: str, sub: str, path: str = "/") -> str:
    return f"https://{sub + '.' if sub else ''}{lan}{path}"


def test_portal_lists_exactly_the_enabled_services(
    deployed_demo: DeployedSite, lan: str, site_ca: Path
) -> None:
    page = requests.get(url(lan, ""), verify=str(site_ca), timeout=30)
    assert page.status_code == 200
    assert set(re.findall(r'id="service-([a-z-]+)"', page.text)) == DEMO_APPS
    assert "Tiers-lieu de démonstration" in page.text  # the site's title, in its locale (fr)
    for sub in ("fichiers", "agenda", "wiki"):
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
    auth = ("partage", deployed_demo.secrets()["webdav"]["password"])
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
        base + "big.bin", auth=("partage", "wrong"), verify=str(site_ca), timeout=30
    )
    assert denied.status_code == 401


def test_caldav_event_round_trip(deployed_demo: DeployedSite, lan: str, site_ca: Path) -> None:
    import caldav

    password = deployed_demo.secrets()["radicale"]["admin_password"]
    client = caldav.DAVClient(
        url=url(lan, "agenda", "/admin/"),
        username="admin",
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
        url=url(lan, "agenda", "/admin/"),
        username="admin",
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
    password = deployed_demo.secrets()["dokuwiki"]["admin_password"]
    page_id = f"e2e:page{uuid.uuid4().hex[:6]}"
    login_form = session.get(wiki, params={"id": "start", "do": "login"}, timeout=30).text
    token = re.search(r'name="sectok" value="([^"]*)"', login_form)
    session.post(
        wiki,
        data={
            "id": "start",
            "do": "login",
            "u": "admin",
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


def test_containers_are_hardened_and_keep_secrets_out_of_env(deployed_demo: DeployedSite) -> None:
    names = deployed_demo.run("docker ps -a --format '{{.Names}}'").stdout.split()
    assert sorted(names) == sorted(f"tc-{s}" for s in (*DEMO_APPS, "proxy"))
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
        assert "wiki." not in deployed_demo.run("cat /opt/telecentre/proxy/Caddyfile").stdout
    finally:
        site_file.write_text(original, encoding="utf-8")
        deployed_demo.deploy()
    assert "tc-dokuwiki" in deployed_demo.run("docker ps --format '{{.Names}}'").stdout
