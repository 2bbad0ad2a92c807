"""Status: judged from probe results, table-driven. Never green when something is wrong.

Fakes only at the boundary: the probe's JSON and the HTTPS results are built here as the
real probe and checks return them; the HTTPS check, the probe itself and the SSH timeout
run for real against local servers.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from telecentre_ctl import connection
from telecentre_ctl import probe as probe_mod
from telecentre_ctl import status as st
from telecentre_ctl.connection import Connection
from telecentre_ctl.errors import EXIT_FAILED, EXIT_INVALID, EXIT_OK, EXIT_UNREACHABLE
from telecentre_ctl.paths import DEMO_SITE
from telecentre_ctl.site import Site, load_site
from tests.conftest import MakeSite

NOW = dt.datetime(2025, 3, 12, 10, 0, tzinfo=dt.UTC)
# The demo's apps on two boxes: files and calendars on one, everything else on the other
# (without the members' directory, which keeps its services on its own host).
BOX1 = ["webdav", "radicale"]
DEMO_APPS = yaml.safe_load((DEMO_SITE / "site.yml").read_text())["services"]
SPREAD_APPS = {s: {} for s in DEMO_APPS if s != "directory"}
BOX2 = [s for s in SPREAD_APPS if s not in BOX1]
TWO_HOSTS = {
    "telecentre": {
        "hosts": {
            "box1": {"tc_ram_gb": 4, "tc_services": BOX1},
            "box2": {"tc_ram_gb": 4, "tc_services": BOX2},
        }
    }
}


def ago(**delta: float) -> str:
    return (NOW - dt.timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%S.123456789Z")


# --- certificates for the internal CA and local TLS servers ---------------------------


def make_ca(days: float, names: tuple[str, ...] = ()) -> tuple[str, str, str]:
    """A CA valid for `days` from NOW, and a leaf for `names`: (ca_pem, leaf_pem, key_pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test root")])
    start = min(NOW, dt.datetime.now(dt.UTC)) - dt.timedelta(days=1)
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(NOW + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names or ("x.test",)]),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = leaf_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ca.public_bytes(pem).decode(), leaf.public_bytes(pem).decode(), key_pem.decode()


CA_10_YEARS = make_ca(3650)[0]


# --- a healthy probe, and the ways it can go wrong --------------------------------------


def load_variant(
    base: Path, name: str, site: dict[str, Any] | None = None, hosts: dict[str, Any] | None = None
) -> Site:
    """The demo site with changes to site.yml / hosts.yml (no secrets: status needs none)."""
    target = base / name
    target.mkdir()
    data = yaml.safe_load((DEMO_SITE / "site.yml").read_text(encoding="utf-8"))
    data.update(site or {})
    if "directory" not in data["services"]:
        data.pop("members", None)
    (target / "site.yml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    (target / "hosts.yml").write_text(
        yaml.safe_dump(hosts or {"telecentre": {"hosts": {"demo-1": {"tc_ram_gb": 4}}}}),
        encoding="utf-8",
    )
    return load_site(target, check_secrets=False)


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Site]:
    """Loaded once per module (loading validates the catalogue: not free)."""
    base = tmp_path_factory.mktemp("status-sites")
    return {
        "fr": load_variant(base, "fr"),
        "en": load_variant(base, "en", {"locale": "en"}),
        "acme": load_variant(base, "acme", {"domain": "comptoir.example.org", "tls": "acme"}),
        "two": load_variant(base, "two", {"services": SPREAD_APPS}, hosts=TWO_HOSTS),
    }


@pytest.fixture
def site(sites: dict[str, Site]) -> Site:
    """The demo site (webdav, radicale, dokuwiki, proxy) on one host, locale fr."""
    return sites["fr"]


def healthy_probe(site: Site, host: str) -> dict[str, Any]:
    containers = [
        {
            "name": f"tc-{s}",
            "service": s,
            "site": site.name,
            "state": "running",
            "health": "healthy",
            "created": ago(days=3),
            "started_at": ago(hours=5),
            "finished_at": "0001-01-01T00:00:00Z",
            "exit_code": 0,
            "restarts": 0,
            "failing_since": None,
            "health_output": "",
        }
        for s in site.placement()[host]
    ]
    return {
        "probe": 1,
        "now": ago(),
        "hostname": host,
        "uptime_s": 1000.0,
        "docker": {"ok": True, "error": None, "containers": containers},
        "disks": [
            {"mount": "/", "paths": ["/", "/srv/telecentre"], "percent": 41.0},
            {"mount": "/srv/backup", "paths": ["/srv/backup"], "percent": 12.0},
        ],
        "memory": {"total_bytes": 4 << 30, "available_bytes": 3 << 30, "percent": 25.0},
        "backup": {
            "last": {"finished": ago(hours=7), "ok": True, "snapshot": "ab12", "message": "ok"},
            "drill": {"finished": ago(days=6), "ok": True, "snapshot": "ab12", "message": "ok"},
            "dir_mtime": ago(days=30),
        },
        "ca_pem": CA_10_YEARS,
        "updates": {"security": 0, "total": 2, "checked": ago(hours=1), "error": None},
    }


def healthy_https(site: Site, host: str) -> dict[str, st.HttpsCheck]:
    host_obj = next(h for h in site.hosts if h.name == host)
    # Caddy's internal leaf certificates live 12 hours; ACME ones 90 days
    life = dt.timedelta(days=60) if site.tls == "acme" else dt.timedelta(hours=12)
    return {
        key: st.HttpsCheck(f"https://{name}/", True, 200, None, NOW + life)
        for key, name in st.routes(site, host_obj).items()
    }


def result_for(site: Site, host: str, mutate: Callable[[st.HostResult], Any] | None = None):
    host_obj = next(h for h in site.hosts if h.name == host)
    result = st.HostResult(host_obj, healthy_probe(site, host), https=healthy_https(site, host))
    if mutate is not None:
        mutate(result)
    return result


def judge(site: Site, *mutations: Callable[[st.HostResult], Any]) -> st.SiteReport:
    results = []
    for host in site.hosts:
        result = result_for(site, host.name)
        for mutate in mutations:
            mutate(result)
        results.append(result)
    return st.evaluate(site, results, NOW)


def container(service: str, **changes: Any) -> Callable[[st.HostResult], None]:
    def mutate(result: st.HostResult) -> None:
        assert result.probe is not None
        for c in result.probe["docker"]["containers"]:
            if c["service"] == service:
                c.update(changes)

    return mutate


def drop_container(service: str) -> Callable[[st.HostResult], None]:
    def mutate(result: st.HostResult) -> None:
        assert result.probe is not None
        docker = result.probe["docker"]
        docker["containers"] = [c for c in docker["containers"] if c["service"] != service]

    return mutate


def probe_set(path: str, value: Any) -> Callable[[st.HostResult], None]:
    """Set probe[a][b]... = value for path 'a.b'."""

    def mutate(result: st.HostResult) -> None:
        assert result.probe is not None
        *parents, last = path.split(".")
        node = result.probe
        for key in parents:
            node = node[key]
        node[last] = value

    return mutate


def https(key: str, check: st.HttpsCheck | None) -> Callable[[st.HostResult], None]:
    def mutate(result: st.HostResult) -> None:
        if check is None:
            result.https.pop(key, None)
        else:
            result.https[key] = check

    return mutate


def unreachable(result: st.HostResult) -> None:
    result.probe, result.https = None, {}
    result.error, result.reason = f"{result.host.name}: no answer", "timeout"


def backup(**values: Any) -> Callable[[st.HostResult], None]:
    return probe_set("backup.last", {"snapshot": "x", "message": "m", **values})


def drill(**values: Any) -> Callable[[st.HostResult], None]:
    return probe_set("backup.drill", {"snapshot": "x", "message": "m", **values})


def disk(percent: float, mount: str = "/srv/telecentre/webdav/files") -> Callable[..., None]:
    def mutate(result: st.HostResult) -> None:
        assert result.probe is not None
        result.probe["disks"].append({"mount": mount, "paths": [mount], "percent": percent})

    return mutate


def no_backup_deployed(hours: float) -> list[Callable[[st.HostResult], None]]:
    return [probe_set("backup.last", None), probe_set("backup.dir_mtime", ago(hours=hours))]


BAD = st.HttpsCheck
# (id, mutations, expected level, finding codes that must be present)
CASES: list[tuple[str, list[Callable[[st.HostResult], Any]], st.Level, set[str]]] = [
    ("healthy", [], st.Level.OK, set()),
    # services
    (
        "stopped",
        [container("webdav", state="exited", finished_at=ago(minutes=40))],
        st.Level.DEGRADED,
        {"service_down"},
    ),
    ("dead", [container("webdav", state="dead")], st.Level.DEGRADED, {"service_down"}),
    (
        "created-never-started",
        [container("radicale", state="created")],
        st.Level.DEGRADED,
        {"service_down"},
    ),
    ("paused", [container("radicale", state="paused")], st.Level.DEGRADED, {"service_down"}),
    (
        "restarting",
        [container("dokuwiki", state="restarting", restarts=9)],
        st.Level.DEGRADED,
        {"service_restarting"},
    ),
    (
        "unhealthy",
        [container("dokuwiki", health="unhealthy", failing_since=ago(minutes=20))],
        st.Level.DEGRADED,
        {"service_unhealthy"},
    ),
    (
        "unknown-state",
        [container("dokuwiki", state="removing")],
        st.Level.DEGRADED,
        {"service_down"},
    ),
    ("missing", [drop_container("radicale")], st.Level.DEGRADED, {"service_missing"}),
    ("proxy-down", [container("proxy", state="exited")], st.Level.DEGRADED, {"service_down"}),
    ("starting", [container("webdav", health="starting")], st.Level.WARNING, {"service_starting"}),
    ("no-healthcheck-running", [container("webdav", health=None)], st.Level.OK, set()),
    (
        "docker-engine-down",
        [probe_set("docker", {"ok": False, "error": "no socket", "containers": []})],
        st.Level.DEGRADED,
        {"docker_down"},
    ),
    (
        "other-site-container",
        [container("webdav", site="othersite")],
        st.Level.DEGRADED,
        {"service_missing"},
    ),
    # through the proxy
    (
        "https-refused",
        [https("webdav", BAD("u", False, error="connection refused"))],
        st.Level.DEGRADED,
        {"service_unreachable"},
    ),
    (
        "https-502",
        [https("radicale", BAD("u", False, 502, "HTTP 502 from the proxy"))],
        st.Level.DEGRADED,
        {"service_unreachable"},
    ),
    (
        "https-untrusted",
        [https("dokuwiki", BAD("u", False, error="certificate not trusted"))],
        st.Level.DEGRADED,
        {"service_unreachable"},
    ),
    (
        "portal-down",
        [https(st.PORTAL, BAD("u", False, error="timeout"))],
        st.Level.DEGRADED,
        {"service_unreachable"},
    ),
    ("https-not-checked", [https("webdav", None)], st.Level.WARNING, {"service_not_checked"}),
    ("https-401-is-up", [https("webdav", BAD("u", True, 401))], st.Level.OK, set()),
    # backups
    (
        "backup-failed",
        [backup(finished=ago(hours=8), ok=False)],
        st.Level.DEGRADED,
        {"backup_failed"},
    ),
    ("backup-27h", [backup(finished=ago(hours=27), ok=True)], st.Level.DEGRADED, {"backup_old"}),
    ("backup-25h", [backup(finished=ago(hours=25), ok=True)], st.Level.OK, set()),
    (
        "backup-ok-not-true",
        [backup(finished=ago(hours=2), ok="yes")],
        st.Level.DEGRADED,
        {"backup_failed"},
    ),
    ("backup-no-time", [backup(ok=True)], st.Level.DEGRADED, {"backup_unreadable"}),
    (
        "backup-unreadable",
        [probe_set("backup.last", {"unreadable": "bad json"})],
        st.Level.DEGRADED,
        {"backup_unreadable"},
    ),
    (
        "backup-section-error",
        [probe_set("backup", {"error": "PermissionError"})],
        st.Level.DEGRADED,
        {"backup_unreadable"},
    ),
    ("no-backup-yet", no_backup_deployed(3), st.Level.WARNING, {"backup_none_yet"}),
    ("no-backup-ever", no_backup_deployed(30), st.Level.DEGRADED, {"backup_never"}),
    (
        "no-backup-no-dir-old-containers",
        [probe_set("backup", {"last": None, "drill": None, "dir_mtime": None})],
        st.Level.DEGRADED,
        {"backup_never"},
    ),
    ("drill-failed", [drill(finished=ago(days=1), ok=False)], st.Level.DEGRADED, {"drill_failed"}),
    ("drill-old", [drill(finished=ago(days=40), ok=True)], st.Level.WARNING, {"drill_old"}),
    ("drill-never", [probe_set("backup.drill", None)], st.Level.OK, set()),
    (
        "upgrade-rolled-back",
        [probe_set("backup.upgrades", {"radicale": {"step": "rolled-back", "new_image": "r:2"}})],
        st.Level.WARNING,
        {"upgrade_rolled_back"},
    ),
    (
        "upgrade-interrupted",
        [probe_set("backup.upgrades", {"radicale": {"step": "switch"}})],
        st.Level.DEGRADED,
        {"upgrade_interrupted"},
    ),
    # disks and memory
    ("disk-79", [disk(79.9)], st.Level.OK, set()),
    ("disk-80", [disk(80.0)], st.Level.WARNING, {"disk_nearly_full"}),
    ("disk-89", [disk(89.9)], st.Level.WARNING, {"disk_nearly_full"}),
    ("disk-90", [disk(90.0)], st.Level.DEGRADED, {"disk_full"}),
    ("disk-root-full", [disk(99.0, "/")], st.Level.DEGRADED, {"disk_full"}),
    ("memory-96", [probe_set("memory.percent", 96.0)], st.Level.WARNING, {"memory_high"}),
    # certificates
    ("ca-10-days", [probe_set("ca_pem", make_ca(10)[0])], st.Level.DEGRADED, {"ca_expiring"}),
    ("ca-20-days", [probe_set("ca_pem", make_ca(20)[0])], st.Level.WARNING, {"ca_expiring"}),
    ("ca-missing", [probe_set("ca_pem", None)], st.Level.DEGRADED, {"ca_missing"}),
    ("ca-garbage", [probe_set("ca_pem", "not a cert")], st.Level.DEGRADED, {"ca_missing"}),
    # updates
    ("security-updates", [probe_set("updates.security", 3)], st.Level.WARNING, {"updates_pending"}),
    (
        "updates-unknown",
        [probe_set("updates", {"security": None, "error": "still checking"})],
        st.Level.OK,
        set(),
    ),
    # the host
    ("unreachable", [unreachable], st.Level.UNREACHABLE, {"host_unreachable"}),
    # combinations: the worst wins, nothing is hidden
    (
        "degraded+warning",
        [disk(85), container("webdav", state="exited")],
        st.Level.DEGRADED,
        {"disk_nearly_full", "service_down"},
    ),
    (
        "backup-failed+disk-full",
        [backup(finished=ago(hours=2), ok=False), disk(95)],
        st.Level.DEGRADED,
        {"backup_failed", "disk_full"},
    ),
    (
        "all-services-down",
        [container(s, state="exited") for s in ("webdav", "radicale", "dokuwiki", "proxy")],
        st.Level.DEGRADED,
        {"service_down"},
    ),
    (
        "warnings-only",
        [disk(81), probe_set("updates.security", 1), container("webdav", health="starting")],
        st.Level.WARNING,
        {"disk_nearly_full", "updates_pending", "service_starting"},
    ),
]


@pytest.mark.parametrize(
    ("mutations", "level", "codes"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_site_level(
    site: Site, mutations: list[Callable[..., Any]], level: st.Level, codes: set[str]
) -> None:
    report = judge(site, *mutations)
    found = {f.code for f in report.findings}
    assert report.level == level, report.findings
    assert codes <= found, found
    assert (
        report.exit_code
        == {
            st.Level.OK: EXIT_OK,
            st.Level.WARNING: EXIT_OK,
            st.Level.DEGRADED: EXIT_FAILED,
            st.Level.UNREACHABLE: EXIT_UNREACHABLE,
        }[level]
    )
    if level == st.Level.OK:
        assert report.headline == "Tout fonctionne"
        assert not report.findings
    else:  # never green: the headline says what is wrong, in words
        assert report.headline != "Tout fonctionne"
        assert all(
            f.message in report.headline or len(report.findings) > 3
            for f in report.findings
            if f.level == report.level
        )


def test_every_service_row_matches_its_container(site: Site) -> None:
    report = judge(site, container("webdav", state="exited", finished_at=ago(minutes=40)))
    rows = {r.service: r for r in report.services}
    assert rows["webdav"].state == "down" and rows["webdav"].level == st.Level.DEGRADED
    assert rows["webdav"].since is not None
    assert abs(rows["webdav"].since - (NOW - dt.timedelta(minutes=40))) < dt.timedelta(seconds=1)
    assert {rows[s].state for s in ("radicale", "dokuwiki", "proxy")} == {"ok"}
    assert rows["proxy"].url == site.portal_url
    assert rows["webdav"].url == site.url("webdav")


def test_headline_names_the_service_and_the_time(site: Site) -> None:
    stopped = NOW - dt.timedelta(minutes=40)
    report = judge(site, container("webdav", state="exited", finished_at=ago(minutes=40)))
    hm = stopped.astimezone().strftime("%H:%M")
    # "Fichiers partagés (WebDAV)" loses its technical part in brackets
    assert report.headline == f"Fichiers partagés en panne depuis {hm}"


def test_headline_in_english(sites: dict[str, Site]) -> None:
    site = sites["en"]
    assert judge(site).headline == "Everything works"
    report = judge(site, disk(95, "/"))
    assert report.headline == "Main disk 95% full"
    report = judge(site, disk(85, "/"))
    assert report.headline == "Everything works; to watch: Main disk nearly full (85%)"


def test_headline_lists_at_most_three_problems(site: Site) -> None:
    report = judge(
        site, *[container(s, state="exited") for s in ("webdav", "radicale", "dokuwiki", "proxy")]
    )
    assert report.headline.endswith("et 1 autre(s) problème(s)")
    assert len(report.findings) == 4


def test_unreachable_host_keeps_the_others_reported(sites: dict[str, Site]) -> None:
    site = sites["two"]
    results = [
        result_for(site, "box1", container("radicale", state="exited")),
        result_for(site, "box2", unreachable),
    ]
    report = st.evaluate(site, results, NOW)
    assert report.level == st.Level.UNREACHABLE and report.exit_code == EXIT_UNREACHABLE
    rows = {r.service: r for r in report.services}
    assert rows["dokuwiki"].state == "unknown" and rows["dokuwiki"].host == "box2"
    assert rows["webdav"].state == "ok" and rows["radicale"].state == "down"
    assert "Serveur box2 injoignable" in report.headline
    # known trouble not hidden
    assert "Agendas, contacts et réservations en panne" in report.headline
    assert "sur box1" in " ".join(f.message for f in report.findings if f.host == "box1") or (
        all(f.subject != "disk" for f in report.findings)
    )


def test_multi_host_messages_say_where(sites: dict[str, Site]) -> None:
    site = sites["two"]
    results = [result_for(site, "box1", disk(95, "/")), result_for(site, "box2")]
    report = st.evaluate(site, results, NOW)
    assert report.headline == "Disque principal sur box1 plein à 95 %"


@pytest.mark.parametrize(
    ("days", "level", "code"),
    [
        (60, st.Level.OK, None),
        (20, st.Level.WARNING, "cert_expiring"),
        (10, st.Level.DEGRADED, "cert_expiring"),
        (-1, st.Level.DEGRADED, "cert_expired"),
    ],
)
def test_acme_certificates(sites: dict[str, Site], days: int, level: st.Level, code: str | None):
    site = sites["acme"]
    expiring = st.HttpsCheck("u", True, 200, None, NOW + dt.timedelta(days=days, hours=1))
    report = judge(site, https("webdav", expiring), probe_set("ca_pem", None))
    assert report.level == level
    assert (code in {f.code for f in report.findings}) if code else not report.findings


def test_internal_leaf_certificates_of_12_hours_are_fine(site: Site) -> None:
    short = st.HttpsCheck("u", True, 200, None, NOW + dt.timedelta(hours=11))
    assert judge(site, https("webdav", short)).level == st.Level.OK


def test_fleet_exit_code_is_the_worst(site: Site) -> None:
    ok = judge(site)
    degraded = judge(site, disk(95))
    down = judge(site, unreachable)
    assert st.FleetReport([ok, ok], NOW).exit_code == EXIT_OK
    assert st.FleetReport([ok, degraded], NOW).exit_code == EXIT_FAILED
    assert st.FleetReport([down, degraded, ok], NOW).exit_code == EXIT_UNREACHABLE


def test_json_schema_is_stable(site: Site) -> None:
    report = st.FleetReport([judge(site, container("webdav", state="exited"))], NOW)
    data = json.loads(json.dumps(report.as_json()))
    assert set(data) == {"schema", "generated", "state", "exit_code", "sites"}
    assert data["schema"] == 1 and data["state"] == "degraded" and data["exit_code"] == 1
    one = data["sites"][0]
    assert set(one) == {
        "site",
        "title",
        "locale",
        "state",
        "headline",
        "portal_url",
        "services",
        "checks",
        "findings",
        "hosts",
    }
    assert set(one["services"][0]) == {
        "service",
        "title",
        "host",
        "state",
        "level",
        "since",
        "url",
        "detail",
    }
    assert set(one["checks"][0]) == {"check", "host", "level", "label", "value", "since"}
    assert set(one["findings"][0]) == {"level", "code", "host", "subject", "message", "since"}
    assert set(one["hosts"][0]) == {
        "name",
        "address",
        "state",
        "reachable",
        "error",
        "fix",
        "duration_s",
        "probe",
    }
    assert {c["check"] for c in one["checks"]} == {
        "backup",
        "drill",
        "disk",
        "memory",
        "updates",
        "certificate",
    }


def test_html_report_is_self_contained_and_plain(site: Site) -> None:
    fleet = st.FleetReport([judge(site, container("webdav", state="exited"))], NOW)
    page = st.html_report(fleet)
    assert page.startswith("<!DOCTYPE html>") and 'lang="fr"' in page
    assert "Fichiers partagés en panne" in page
    assert "<script" not in page and "src=" not in page and "stylesheet" not in page
    for technical in ("exited", "container", "docker", "tc-webdav"):
        assert technical not in page.lower()


def test_parse_time_handles_docker_and_host_formats() -> None:
    assert st.parse_time("0001-01-01T00:00:00Z") is None
    assert st.parse_time("") is None and st.parse_time(None) is None
    assert st.parse_time("2025-03-12T09:59:00.123456789Z") == dt.datetime(
        2025, 3, 12, 9, 59, 0, 123456, tzinfo=dt.UTC
    )
    assert st.parse_time("2025-03-12T09:59:00+00:00") == dt.datetime(
        2025, 3, 12, 9, 59, tzinfo=dt.UTC
    )
    assert st.parse_time("yesterday") is None


def test_words_say_when_in_plain_words() -> None:
    now = dt.datetime.now(dt.UTC)
    fr, en = st.Words("fr", now), st.Words("en", now)
    assert fr.when(now) == now.astimezone().strftime("%H:%M")
    assert fr.when(now - dt.timedelta(days=1)).startswith("hier ")
    assert fr.when(now - dt.timedelta(days=5)).startswith("le ")
    assert en.when(now - dt.timedelta(days=1)).startswith("yesterday ")
    assert fr.age(dt.timedelta(hours=30)) == "30 h" and fr.age(dt.timedelta(days=3)) == "3 jours"


# --- the probe, run for real on this machine ---------------------------------------------


def test_probe_runs_as_sent_and_answers_json(tmp_path: Path) -> None:
    """The probe as the controller sends it: source on stdin to `python3 -`."""
    params = {
        "paths": ["/", str(tmp_path), "/nonexistent"],
        "ca_path": None,
        "budget": 2,
        "updates_wait": 0,
        "apt_cache": str(tmp_path / "apt.json"),
    }
    proc = subprocess.run(
        [sys.executable, "-", json.dumps(params)],
        input=st.probe_source(),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    data = json.loads(proc.stdout)
    assert data["probe"] == 1 and st.parse_time(data["now"]) is not None
    assert {"docker", "disks", "memory", "backup", "updates", "ca_pem"} <= set(data)
    assert data["disks"] and all(0 <= d["percent"] <= 100 for d in data["disks"])
    assert all("/nonexistent" not in d["paths"] for d in data["disks"])
    assert 0 < data["memory"]["percent"] < 100


def test_probe_uses_only_the_standard_library() -> None:
    import ast

    tree = ast.parse(st.probe_source())
    modules = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert modules <= set(sys.stdlib_module_names) | {"__future__"}, modules


def test_probe_counts_security_updates() -> None:
    output = (
        "Inst libssl3t64 [3.5.1-1] (3.5.1-1+deb13u1 Debian-Security:13/stable-security [amd64])\n"
        "Inst tzdata [2025a-1] (2025b-0+deb13u1 Debian:13.1/stable [all])\n"
        "Conf libssl3t64 (3.5.1-1+deb13u1 Debian-Security:13/stable-security [amd64])\n"
    )
    assert probe_mod._count_upgrades(output) == {"total": 2, "security": 1}


def test_probe_failing_since_is_the_start_of_the_failing_run() -> None:
    log = [
        {"Start": "t1", "ExitCode": 1},
        {"Start": "t2", "ExitCode": 0},
        {"Start": "t3", "ExitCode": 1},
        {"Start": "t4", "ExitCode": 1},
    ]
    assert probe_mod._failing_since({"Log": log}) == "t3"
    assert probe_mod._failing_since({"Log": log[:2]}) is None


def test_probe_reads_docker_over_its_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fake Docker engine on a UNIX socket, answering the two calls the probe makes."""
    import http.server
    import socketserver

    listed = [{"Id": "abc"}]
    inspected = {
        "Name": "/tc-webdav",
        "Created": "2025-03-12T08:00:00.1Z",
        "RestartCount": 0,
        "Config": {"Labels": {"org.telecentre.service": "webdav", "org.telecentre.site": "d"}},
        "State": {
            "Status": "running",
            "StartedAt": "2025-03-12T08:00:01.1Z",
            "FinishedAt": "0001-01-01T00:00:00Z",
            "ExitCode": 0,
            "Health": {
                "Status": "unhealthy",
                "Log": [{"Start": "s", "ExitCode": 1, "Output": "boom"}],
            },
        },
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(listed if self.path.startswith("/containers/json") else inspected)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: Any) -> None:
            pass

        def address_string(self) -> str:
            return "unix"

    class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
        daemon_threads = True

    path = str(tmp_path / "docker.sock")
    server = Server(path, Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(probe_mod, "DOCKER_SOCKET", path)
    try:
        docker = probe_mod.docker_section(5)
    finally:
        server.shutdown()
    assert docker["ok"], docker
    (c,) = docker["containers"]
    assert (c["service"], c["state"], c["health"]) == ("webdav", "running", "unhealthy")
    assert c["failing_since"] == "s" and c["health_output"] == "boom"


# --- HTTPS checks, for real against a local TLS server ------------------------------------


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """An HTTPS server on 127.0.0.1 for wiki.demo.home.arpa; yields (port, ca_pem)."""
    ca_pem, leaf_pem, key_pem = make_ca(3650, ("wiki.demo.home.arpa",))
    (tmp_path / "leaf.pem").write_text(leaf_pem + key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "leaf.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: list[str] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    request = tls.recv(4096).decode()
                    seen.append(request)
                    tls.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
            except (OSError, ssl.SSLError):
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield port, ca_pem
    listener.close()


def test_https_check_pins_the_site_ca(tls_server: tuple[int, str]) -> None:
    port, ca_pem = tls_server
    check = st.https_check("127.0.0.1", "wiki.demo.home.arpa", ca_pem, 5, port=port)
    assert check.ok and check.status == 401 and check.not_after is not None


def test_https_check_never_trusts_an_unknown_ca(tls_server: tuple[int, str]) -> None:
    port, _ = tls_server
    check = st.https_check("127.0.0.1", "wiki.demo.home.arpa", None, 5, port=port)
    assert not check.ok and "certificate not trusted" in str(check.error)
    other_ca = make_ca(3650)[0]
    check = st.https_check("127.0.0.1", "wiki.demo.home.arpa", other_ca, 5, port=port)
    assert not check.ok and "certificate not trusted" in str(check.error)


def test_https_check_verifies_the_name(tls_server: tuple[int, str]) -> None:
    port, ca_pem = tls_server
    check = st.https_check("127.0.0.1", "fichiers.demo.home.arpa", ca_pem, 5, port=port)
    assert not check.ok and "certificate not trusted" in str(check.error)


def test_https_check_reports_a_closed_port() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe_socket:
        port = probe_socket.getsockname()[1]
    check = st.https_check("127.0.0.1", "wiki.demo.home.arpa", CA_10_YEARS, 2, port=port)
    assert not check.ok and "refused" in str(check.error)


# --- SSH: bounded time, host keys never added --------------------------------------------


def silent_server() -> tuple[socket.socket, int]:
    """Accepts TCP connections and never says anything: a host that hangs."""
    server = socket.create_server(("127.0.0.1", 0))
    return server, server.getsockname()[1]


def plain_connection(name: str, port: int, known: Path) -> Connection:
    return connection.of(
        name,
        {"ansible_host": "127.0.0.1", "ansible_port": port, "ansible_user": "root",
         "tc_known_hosts_file": str(known)},
    )  # fmt: skip


def test_ssh_to_a_silent_host_costs_at_most_the_timeout(tmp_path: Path) -> None:
    from telecentre_ctl.remote import RemoteError, connect

    server, port = silent_server()
    known = tmp_path / "known_hosts"
    known.write_text("")
    started = time.monotonic()
    with server, pytest.raises(RemoteError) as err:
        connect(plain_connection("slow", port, known), time.monotonic() + 1.5)
    assert time.monotonic() - started < 3
    assert err.value.exit_code == EXIT_UNREACHABLE


def test_ssh_without_known_hosts_is_refused(tmp_path: Path) -> None:
    from telecentre_ctl.remote import RemoteError, connect

    with pytest.raises(RemoteError) as err:
        connect(plain_connection("box", 22, tmp_path / "none"), time.monotonic() + 2)
    assert err.value.reason == "hostkey" and "known_hosts" in str(err.value)


def test_ssh_uses_reject_policy_never_autoadd() -> None:
    source = Path(st.__file__).with_name("remote.py").read_text()
    assert "RejectPolicy()" in source and "AutoAddPolicy" not in source


def test_collect_bounds_every_host_and_reports_the_others(
    make_site: MakeSite, tmp_path: Path
) -> None:
    """Two hosts that hang (SSH accepts, never answers): the whole status still ends in
    about one timeout, and each host is reported unreachable."""
    server1, port1 = silent_server()
    server2, port2 = silent_server()
    known = tmp_path / "known_hosts"
    known.write_text("")
    hosts = {
        "telecentre": {
            "hosts": {
                name: {
                    "ansible_host": "127.0.0.1",
                    "ansible_port": port,
                    "tc_known_hosts_file": str(known),
                    "tc_ram_gb": 4,
                    "tc_services": services,
                }
                for name, port, services in (
                    ("box1", port1, BOX1),
                    ("box2", port2, BOX2),
                )
            }
        }
    }
    site = load_site(make_site(site={"services": SPREAD_APPS}, hosts=hosts, secrets=False),
                     check_secrets=False)  # fmt: skip
    started = time.monotonic()
    with server1, server2:
        fleet = st.collect([site], timeout=1.5)
    assert time.monotonic() - started < 4
    assert fleet.exit_code == EXIT_UNREACHABLE
    assert [r.probe for r in fleet.sites[0].hosts] == [None, None]


class FakeFleet:
    """Hosts faked at the SSH boundary (remote.connect / run_script) and at HTTPS: `dead`
    ones answer nothing until their deadline, `stuck` ones never return, the others
    answer after `delay` seconds. Records when each host's attempt began."""

    def __init__(self, dead: set[str], stuck: set[str] | None = None, delay: float = 0.0):
        self.dead, self.stuck, self.delay = dead, stuck or set(), delay
        self.began: dict[str, float] = {}
        self.release = threading.Event()

    def connect(self, target: Connection, deadline: float) -> Any:
        from telecentre_ctl.remote import RemoteError

        self.began[target.name] = time.monotonic()
        if target.name in self.stuck:
            self.release.wait()
        if target.name in self.dead:
            time.sleep(max(deadline - time.monotonic(), 0))
            raise RemoteError(target, "timeout", "no answer (connection timed out)")
        return self

    def close(self) -> None:
        pass

    def run_script(self, session: Any, target: Connection, *args: Any) -> bytes:
        time.sleep(self.delay)
        return b"{}"


def fleet_site(make_site: MakeSite, count: int) -> Site:
    hosts = {"telecentre": {"vars": {"tc_ram_gb": 4, "tc_known_hosts_file": "/dev/null"},
                            "hosts": {f"box{i:03d}": {"ansible_host": "192.0.2.1"}
                                      for i in range(count)}}}  # fmt: skip
    return load_site(make_site(hosts=hosts, secrets=False), check_secrets=False)


@pytest.fixture
def fake_fleet(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeFleet]:
    from telecentre_ctl import remote

    def make(**kwargs: Any) -> FakeFleet:
        fleet = FakeFleet(**kwargs)
        monkeypatch.setattr(remote, "connect", fleet.connect)
        monkeypatch.setattr(remote, "run_script", fleet.run_script)
        monkeypatch.setattr(
            st, "https_check", lambda *a, **k: st.HttpsCheck("https://x/", True, 200)
        )
        return fleet

    return make


def test_hosts_queued_behind_dead_ones_are_tried_with_their_own_timeout(
    make_site: MakeSite, fake_fleet: Callable[..., FakeFleet], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight rounds of dead hosts fill the pool before the live ones get their turn (more
    than a timeout plus grace for the whole fleet); the live ones, slow but within their
    own timeout, are reached all the same."""
    monkeypatch.setattr(st, "MAX_PARALLEL", 2)
    monkeypatch.setattr(st, "GRACE_S", 0.3)
    site = fleet_site(make_site, 18)
    names = [h.name for h in site.hosts]
    fleet = fake_fleet(dead=set(names[:16]), delay=0.2)
    started = time.monotonic()
    report = st.collect([site], timeout=0.3)
    assert set(fleet.began) == set(names)
    results = {r.host.name: r for r in report.sites[0].hosts}
    assert [n for n in names if results[n].error is None] == names[16:]
    assert all(results[n].reason == "timeout" for n in names[:16])
    # the live hosts' turn came after eight rounds of dead hosts' timeouts
    assert min(fleet.began[n] for n in names[16:]) - started >= 8 * 0.3 - 0.05
    assert report.exit_code == EXIT_UNREACHABLE


def test_a_stuck_host_is_given_up_and_its_worker_replaced(
    make_site: MakeSite, fake_fleet: Callable[..., FakeFleet], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(st, "MAX_PARALLEL", 2)
    monkeypatch.setattr(st, "GRACE_S", 0.2)
    site = fleet_site(make_site, 5)
    names = [h.name for h in site.hosts]
    fleet = fake_fleet(dead=set(), stuck=set(names[:2]))
    try:
        report = st.collect([site], timeout=0.3)
    finally:
        fleet.release.set()
    results = {r.host.name: r for r in report.sites[0].hosts}
    assert [results[n].error for n in names[:2]] == [
        f"{n}: no answer within 0.3 s" for n in names[:2]
    ]
    assert all(results[n].error is None and results[n].probe == {} for n in names[2:])


# --- the command ------------------------------------------------------------------------


def fake_collect(fleet: st.FleetReport) -> Callable[..., st.FleetReport]:
    def collect(sites: list[Site], timeout: float, progress: Any = None) -> st.FleetReport:
        assert timeout == 10.0
        return fleet

    return collect


@pytest.mark.parametrize(
    ("mutations", "code"),
    [
        ([], EXIT_OK),
        ([disk(85)], EXIT_OK),
        ([disk(95)], EXIT_FAILED),
        ([unreachable], EXIT_UNREACHABLE),
    ],
    ids=["ok", "warning", "degraded", "unreachable"],
)
def test_command_exit_codes_and_outputs(
    site: Site,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    mutations: list[Callable[..., Any]],
    code: int,
) -> None:
    from telecentre_ctl.cli.status import status

    fleet = st.FleetReport([judge(site, *mutations)], NOW)
    monkeypatch.setattr(st, "collect", fake_collect(fleet))
    runner = CliRunner()
    text = runner.invoke(status, [str(site.dir)])
    assert text.exit_code == code, text.output
    assert text.output.startswith(f"{site.title} ({site.name}): {fleet.sites[0].headline}")
    assert "SERVICE" in text.output and "Fichiers partagés" in text.output
    page = tmp_path / "status.html"
    as_json = runner.invoke(status, [str(site.dir), "--json", "--html", str(page)])
    assert as_json.exit_code == code
    assert json.loads(as_json.stdout)["exit_code"] == code
    assert page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_command_rejects_an_invalid_site_before_connecting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from telecentre_ctl.cli.main import cli

    monkeypatch.setattr(st, "collect", lambda *a, **k: pytest.fail("connected"))
    from telecentre_ctl.cli.status import status

    if "status" not in cli.commands:
        cli.add_command(status)
    result = CliRunner().invoke(cli, ["status", str(tmp_path / "nowhere")])
    assert result.exit_code == EXIT_INVALID
    assert "no such site folder" in result.output


def test_help_does_not_import_paramiko() -> None:
    code = (
        "import sys; from telecentre_ctl.cli.status import status\n"
        "try:\n    status(['--help'])\nexcept SystemExit: pass\n"
        "assert 'paramiko' not in sys.modules, 'paramiko imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_cases_cover_every_finding_code() -> None:
    """Each text a manager can read is reached by at least one table case."""
    codes = {c for case in CASES for c in case[3]}
    codes |= {"cert_expiring", "cert_expired"}  # test_acme_certificates
    assert set(st.FINDING_CODES) - codes == set()
    assert set(st.FINDING_CODES) <= set(st.TEXTS["en"])
    assert set(st.TEXTS["fr"]) == set(st.TEXTS["en"])


def test_cases_are_independent(site: Site) -> None:
    """Mutations never leak between cases (each judge starts from a fresh probe)."""
    before = copy.deepcopy(healthy_probe(site, site.hosts[0].name))
    judge(site, container("webdav", state="exited"))
    after = healthy_probe(site, site.hosts[0].name)
    before["now"] = after["now"]
    assert before == after
