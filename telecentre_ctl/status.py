"""Status of telecentres: collect (SSH probe + HTTPS checks), judge, and report.

Three steps, each testable on its own:

1. collect: per host ONE paramiko connection running ONE probe (telecentre_ctl/probe.py,
   sent on stdin to `python3 -`), then from the controller an HTTPS request to every
   service the host serves, through its proxy: the TCP connection goes to the host's
   address (LAN names do not resolve on the controller), the TLS handshake sends the
   service's name (SNI, Host) and is verified, for internal-TLS sites against the site's
   own CA fetched by the probe over that same SSH connection. All hosts of all sites run
   in parallel; each host has one deadline (`timeout`, default 10 s) for everything.
2. evaluate: a pure function from the probe results to findings, each with a level:
   ok < warning < degraded < unreachable. Never green when something is wrong: anything
   that could not be checked is at least a warning.
3. report: a plain-words headline per site in its locale (fr/en), a table, JSON, HTML.

Rules (what makes a site degraded, exit 1):
  - a service's container is missing, stopped, restarting, paused or unhealthy;
  - a service does not answer through the proxy over verified HTTPS (no answer, TLS
    not trusted, HTTP 5xx);
  - the last backup failed, or is older than 26 h;
  - no backup ever, more than 26 h after deployment (before that: warning "no backup
    yet"); deployment time = the backup state folder's time, else the oldest container's;
  - the last restore drill failed;
  - a disk holding the system, the Docker engine, service data or local backups is
    >= 90 % full (>= 80 %: warning);
  - a certificate served (acme sites) or the site's own CA (internal sites) expires
    within 14 days (within 30 days: warning); internal leaf certificates live 12 h and
    are renewed by Caddy: they count only through the verified handshake.
Warnings only (exit 0): a service starting, memory >= 95 %, security updates pending,
no restore drill for 35 days, a check that ran out of time.
Unreachable (exit 3): no SSH, SSH refused or host key not verified, probe failed or slow.

JSON (`--json`, schema 1), stable: keys are only ever added.
    {"schema": 1, "generated": ISO, "state": LEVEL, "exit_code": 0|1|3,
     "sites": [{"site", "title", "locale", "state": LEVEL, "headline", "portal_url",
        "services": [{"service", "title", "host", "state": STATE, "level": LEVEL,
                      "since": ISO|null, "url": str|null, "detail": str|null}],
        "checks": [{"check": "backup"|"drill"|"disk"|"memory"|"updates"|"certificate",
                    "host", "level", "label", "value", "since": ISO|null}],
        "findings": [{"level", "code", "host", "subject", "message", "since": ISO|null}],
        "hosts": [{"name", "address", "state": LEVEL, "reachable", "error", "fix",
                   "duration_s", "probe": {...raw probe output...}|null}]}]}
LEVEL: ok | warning | degraded | unreachable.
STATE: ok | starting | unhealthy | restarting | down | missing | unreachable | not_checked
       | unknown.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from telecentre_ctl.compose import DATA_DIR, SITE_CA_SOURCE
from telecentre_ctl.errors import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE
from telecentre_ctl.site import Host, Site

SCHEMA_VERSION = 1
DEFAULT_TIMEOUT = 10.0
MAX_PARALLEL = 64  # hosts probed at once
GRACE_S = 2.0  # past its deadline, a host's attempt is given up (its thread left behind)
CA_PATH = SITE_CA_SOURCE
BACKUP_MAX_AGE = timedelta(hours=26)
DRILL_MAX_AGE = timedelta(days=35)
DISK_DEGRADED, DISK_WARNING = 90.0, 80.0
MEMORY_WARNING = 95.0
CERT_DEGRADED, CERT_WARNING = timedelta(days=14), timedelta(days=30)
HTTPS_PORT = 443
PORTAL = "portal"  # key of the portal's HTTPS check (served by the proxy)


class Level(enum.IntEnum):
    OK = 0
    WARNING = 1
    DEGRADED = 2
    UNREACHABLE = 3

    @property
    def key(self) -> str:
        return self.name.lower()


EXIT_CODES = {
    Level.OK: EXIT_OK,
    Level.WARNING: EXIT_OK,
    Level.DEGRADED: EXIT_FAILED,
    Level.UNREACHABLE: EXIT_UNREACHABLE,
}

# What a finding can be (its `code` in JSON); each has a text in both locales below.
FINDING_CODES = (
    "service_down",
    "service_unhealthy",
    "service_restarting",
    "service_missing",
    "service_starting",
    "service_unreachable",
    "service_not_checked",
    "docker_down",
    "host_unreachable",
    "disk_full",
    "disk_nearly_full",
    "memory_high",
    "backup_failed",
    "backup_old",
    "backup_never",
    "backup_none_yet",
    "backup_unreadable",
    "drill_failed",
    "drill_old",
    "upgrade_rolled_back",
    "upgrade_interrupted",
    "cert_expiring",
    "cert_expired",
    "ca_expiring",
    "ca_missing",
    "updates_pending",
)

# --- words: everything a manager reads, in the site's locale ---------------------------

TEXTS: dict[str, dict[str, str]] = {
    "fr": {
        "all_ok": "Tout fonctionne",
        "watch": "à surveiller",
        "and_more": "et {n} autre(s) problème(s)",
        "service_down": "{title} en panne{since}",
        "service_unhealthy": "{title} ne fonctionne plus correctement{since}",
        "service_restarting": "{title} redémarre sans cesse{since}",
        "service_missing": "{title} n'est pas installé{where}",
        "service_starting": "{title} est en train de démarrer",
        "service_unreachable": "{title} : pas d'accès par le réseau",
        "service_not_checked": "{title} n'a pas pu être vérifié à temps",
        "docker_down": "Aucun service ne tourne{where} (moteur de conteneurs arrêté)",
        "host_unreachable": "Serveur {host} injoignable",
        "disk_full": "{disk}{where} plein à {percent} %",
        "disk_nearly_full": "{disk}{where} presque plein ({percent} %)",
        "memory_high": "Mémoire presque pleine{where} ({percent} %)",
        "backup_failed": "La dernière sauvegarde a échoué{when}",
        "backup_old": "Pas de sauvegarde réussie depuis {age}",
        "backup_never": "Aucune sauvegarde depuis l'installation ({age})",
        "backup_none_yet": "Pas encore de sauvegarde",
        "backup_unreadable": "L'état des sauvegardes est illisible{where}",
        "drill_failed": "Le dernier test de restauration a échoué{when}",
        "drill_old": "Pas de test de restauration depuis {age}",
        "upgrade_rolled_back": "La mise à jour de {title} vers {version} a échoué{when} : "
        "l'ancienne version et ses données ont été remises",
        "upgrade_interrupted": "La mise à jour de {title} a été interrompue{where} : "
        "relancez telecentre-ctl upgrade",
        "cert_expiring": "Le certificat de {title} expire dans {days} jour(s)",
        "cert_expired": "Le certificat de {title} a expiré",
        "ca_expiring": "Le certificat du site expire dans {days} jour(s)",
        "ca_missing": "Certificat du site introuvable{where}",
        "updates_pending": "{count} mise(s) à jour de sécurité en attente{where}",
        "where": " sur {host}",
        "since": " depuis {when}",
        "when": " ({when})",
        "today": "{hm}",
        "yesterday": "hier {hm}",
        "date": "le {d:%d/%m} à {hm}",
        "date_year": "le {d:%d/%m/%Y}",
        "hours": "{n} h",
        "days": "{n} jours",
        "disk_main": "Disque principal",
        "disk_data": "Disque des données",
        "disk_backup": "Disque des sauvegardes",
        "disk_software": "Disque des logiciels",
        "state_ok": "fonctionne",
        "state_starting": "démarre",
        "state_unhealthy": "en panne",
        "state_restarting": "en panne",
        "state_down": "en panne",
        "state_missing": "absent",
        "state_unreachable": "inaccessible",
        "state_not_checked": "non vérifié",
        "state_unknown": "inconnu",
        "check_backup": "Sauvegarde",
        "check_drill": "Test de restauration",
        "check_disk": "Disque",
        "check_memory": "Mémoire",
        "check_updates": "Mises à jour de sécurité",
        "check_certificate": "Certificat du site",
        "backup_ok_value": "réussie",
        "backup_failed_value": "échouée",
        "never": "jamais",
        "used": "{percent} % utilisé",
        "pending": "{count} en attente",
        "expires": "expire {when}",
        "service": "service",
        "state": "état",
        "since_col": "depuis",
        "url": "adresse",
        "host": "serveur",
        "checked_at": "Vérifié {when}",
        "level_ok": "Tout va bien",
        "level_warning": "À surveiller",
        "level_degraded": "En panne",
        "level_unreachable": "Injoignable",
        "report_title": "État des services",
        "other_checks": "Sauvegardes et serveur",
    },
    "en": {
        "all_ok": "Everything works",
        "watch": "to watch",
        "and_more": "and {n} more problem(s)",
        "service_down": "{title} down{since}",
        "service_unhealthy": "{title} not working properly{since}",
        "service_restarting": "{title} keeps restarting{since}",
        "service_missing": "{title} is not installed{where}",
        "service_starting": "{title} is starting",
        "service_unreachable": "{title} cannot be reached over the network",
        "service_not_checked": "{title} could not be checked in time",
        "docker_down": "No service runs{where} (container engine stopped)",
        "host_unreachable": "Server {host} unreachable",
        "disk_full": "{disk}{where} {percent}% full",
        "disk_nearly_full": "{disk}{where} nearly full ({percent}%)",
        "memory_high": "Memory nearly full{where} ({percent}%)",
        "backup_failed": "The last backup failed{when}",
        "backup_old": "No successful backup for {age}",
        "backup_never": "No backup since installation ({age})",
        "backup_none_yet": "No backup yet",
        "backup_unreadable": "The backup state cannot be read{where}",
        "drill_failed": "The last restore test failed{when}",
        "drill_old": "No restore test for {age}",
        "upgrade_rolled_back": "The upgrade of {title} to {version} failed{when}: the "
        "previous version and its data were put back",
        "upgrade_interrupted": "The upgrade of {title} was interrupted{where}: run "
        "telecentre-ctl upgrade again",
        "cert_expiring": "The certificate of {title} expires in {days} day(s)",
        "cert_expired": "The certificate of {title} has expired",
        "ca_expiring": "The site's certificate expires in {days} day(s)",
        "ca_missing": "The site's certificate is missing{where}",
        "updates_pending": "{count} security update(s) pending{where}",
        "where": " on {host}",
        "since": " since {when}",
        "when": " ({when})",
        "today": "{hm}",
        "yesterday": "yesterday {hm}",
        "date": "{d:%b} {d.day}, {hm}",
        "date_year": "{d:%b} {d.day}, {d.year}",
        "hours": "{n} h",
        "days": "{n} days",
        "disk_main": "Main disk",
        "disk_data": "Data disk",
        "disk_backup": "Backup disk",
        "disk_software": "Software disk",
        "state_ok": "working",
        "state_starting": "starting",
        "state_unhealthy": "down",
        "state_restarting": "down",
        "state_down": "down",
        "state_missing": "missing",
        "state_unreachable": "unreachable",
        "state_not_checked": "not checked",
        "state_unknown": "unknown",
        "check_backup": "Backup",
        "check_drill": "Restore test",
        "check_disk": "Disk",
        "check_memory": "Memory",
        "check_updates": "Security updates",
        "check_certificate": "Site certificate",
        "backup_ok_value": "succeeded",
        "backup_failed_value": "failed",
        "never": "never",
        "used": "{percent}% used",
        "pending": "{count} pending",
        "expires": "expires {when}",
        "service": "service",
        "state": "state",
        "since_col": "since",
        "url": "address",
        "host": "server",
        "checked_at": "Checked {when}",
        "level_ok": "All good",
        "level_warning": "To watch",
        "level_degraded": "Down",
        "level_unreachable": "Unreachable",
        "report_title": "Service status",
        "other_checks": "Backups and server",
    },
}


def parse_time(value: Any) -> datetime | None:
    """ISO 8601 from Docker (nanoseconds, Z) or from the host; None for empty/zero."""
    if not isinstance(value, str) or not value or value.startswith("0001-"):
        return None
    text = value.strip().replace("Z", "+00:00")
    if "." in text:  # Docker's nanoseconds: keep microseconds
        head, _, tail = text.partition(".")
        digits = "".join(c for c in tail if c.isdigit())
        text = f"{head}.{digits[:6]}{tail[len(digits) :]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Words:
    """Texts and time formats of one locale; times shown in the controller's time zone."""

    def __init__(self, locale: str, now: datetime) -> None:
        self.locale = locale if locale in TEXTS else "en"
        self.texts = TEXTS[self.locale]
        self.now = now

    def __call__(self, key: str, **values: Any) -> str:
        return self.texts[key].format(**values)

    def when(self, moment: datetime | None) -> str:
        if moment is None:
            return ""
        local = moment.astimezone()
        today = self.now.astimezone().date()
        hm = local.strftime("%H:%M")
        if local.date() == today:
            return self("today", hm=hm)
        if local.date() == today - timedelta(days=1):
            return self("yesterday", hm=hm)
        if local.year != today.year:
            return self("date_year", d=local)
        return self("date", d=local, hm=hm)

    def age(self, delta: timedelta) -> str:
        hours = int(delta.total_seconds() // 3600)
        return self("days", n=hours // 24) if hours >= 48 else self("hours", n=hours)


# --- collected results -----------------------------------------------------------------


@dataclass
class HttpsCheck:
    url: str
    ok: bool
    status: int | None = None
    error: str | None = None
    not_after: datetime | None = None


@dataclass
class HostResult:
    host: Host
    probe: dict[str, Any] | None = None
    error: str | None = None
    fix: str = ""
    reason: str | None = None
    https: dict[str, HttpsCheck] = field(default_factory=dict)
    duration_s: float = 0.0


# --- evaluation ------------------------------------------------------------------------


@dataclass
class Finding:
    level: Level
    code: str
    host: str
    subject: str
    message: str
    since: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "level": self.level.key,
            "code": self.code,
            "host": self.host,
            "subject": self.subject,
            "message": self.message,
            "since": iso(self.since),
        }


@dataclass
class ServiceRow:
    service: str
    title: str
    host: str
    state: str
    level: Level
    since: datetime | None
    url: str | None
    detail: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "title": self.title,
            "host": self.host,
            "state": self.state,
            "level": self.level.key,
            "since": iso(self.since),
            "url": self.url,
            "detail": self.detail,
        }


@dataclass
class CheckRow:
    check: str
    host: str
    level: Level
    label: str
    value: str
    since: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "host": self.host,
            "level": self.level.key,
            "label": self.label,
            "value": self.value,
            "since": iso(self.since),
        }


@dataclass
class SiteReport:
    site: Site
    words: Words
    services: list[ServiceRow]
    checks: list[CheckRow]
    findings: list[Finding]
    hosts: list[HostResult]

    @property
    def level(self) -> Level:
        levels = [f.level for f in self.findings]
        levels += [r.level for r in self.services] + [c.level for c in self.checks]
        return max(levels, default=Level.OK)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.level]

    @property
    def multi_host(self) -> bool:
        return len(self.site.hosts) > 1

    @property
    def headline(self) -> str:
        w = self.words
        level = self.level
        worst = [f.message for f in self.findings if f.level == level]
        if level == Level.UNREACHABLE:  # what is known to be broken elsewhere too
            worst += [f.message for f in self.findings if f.level == Level.DEGRADED]
        if level <= Level.WARNING:
            if not worst:
                return w("all_ok")
            sep, colon = (" ; ", " : ") if w.locale == "fr" else ("; ", ": ")
            return f"{w('all_ok')}{sep}{w('watch')}{colon}{_join(worst, w)}"
        return _join(worst, w)

    def host_level(self, name: str) -> Level:
        levels = [f.level for f in self.findings if f.host == name]
        return max(levels, default=Level.OK)

    def as_json(self) -> dict[str, Any]:
        return {
            "site": self.site.name,
            "title": self.site.title,
            "locale": self.words.locale,
            "state": self.level.key,
            "headline": self.headline,
            "portal_url": self.site.portal_url,
            "services": [r.as_json() for r in self.services],
            "checks": [c.as_json() for c in self.checks],
            "findings": [f.as_json() for f in self.findings],
            "hosts": [
                {
                    "name": r.host.name,
                    "address": r.host.address,
                    "state": self.host_level(r.host.name).key,
                    "reachable": r.probe is not None,
                    "error": r.error,
                    "fix": r.fix or None,
                    "duration_s": round(r.duration_s, 3),
                    "probe": r.probe,
                }
                for r in self.hosts
            ],
        }


def _join(messages: list[str], w: Words, limit: int = 3) -> str:
    separator = " ; " if w.locale == "fr" else "; "
    shown = list(dict.fromkeys(messages))
    text = separator.join(shown[:limit])
    if len(shown) > limit:
        text += separator + w("and_more", n=len(shown) - limit)
    return text


def short_title(site: Site, service: str) -> str:
    """The catalogue's title in the site's locale, without the technical part in brackets:
    'Fichiers partagés (WebDAV)' -> 'Fichiers partagés'."""
    title = site.catalog[service].text("title", site.locale)
    return title.split(" (")[0].strip() or service


def routes(site: Site, host: Host) -> dict[str, str]:
    """Check key -> server name for the HTTPS checks through this host's proxy."""
    placed = site.services_on(host.name)
    found = {s: site.fqdn(s) for s in placed if s in site.services and site.subdomain(s)}
    if "proxy" in placed:
        found[PORTAL] = site.base_domain
    return found


def probe_paths(site: Site, host: Host) -> list[str]:
    """Where the disks that matter are: system, Docker engine, service data, backups."""
    paths = ["/", "/var/lib/docker", DATA_DIR]
    for service in site.services_on(host.name):
        for volume in site.catalog[service].data.get("volumes", {}):
            paths.append(f"{DATA_DIR}/{service}/{volume}")
    target = str(site.backup.get("target", ""))
    if target.startswith("/"):
        paths.append(target)
    return paths


class _Judge:
    """Builds the findings and rows of one site; one method per kind of check."""

    def __init__(self, site: Site, now: datetime) -> None:
        self.site = site
        self.now = now
        self.words = Words(site.locale, now)
        self.findings: list[Finding] = []
        self.services: list[ServiceRow] = []
        self.checks: list[CheckRow] = []

    def where(self, host: str) -> str:
        return self.words("where", host=host) if len(self.site.hosts) > 1 else ""

    def find(
        self,
        level: Level,
        code: str,
        host: str,
        subject: str,
        since: datetime | None = None,
        **values: Any,
    ) -> Finding:
        w = self.words
        text = w(
            code,
            host=host,
            where=self.where(host),
            since=w("since", when=w.when(since)) if since else "",
            **values,
        )
        finding = Finding(level, code, host, subject, text, since)
        self.findings.append(finding)
        return finding

    def url_of(self, service: str) -> str | None:
        if service == "proxy":
            return self.site.portal_url
        return self.site.url(service) if self.site.subdomain(service) else None

    # -- per host ------------------------------------------------------------------

    def host(self, result: HostResult) -> None:
        name = result.host.name
        if result.probe is None:
            self.find(Level.UNREACHABLE, "host_unreachable", name, "host")
            for service in self.site.services_on(name):
                self.services.append(
                    ServiceRow(
                        service,
                        short_title(self.site, service),
                        name,
                        "unknown",
                        Level.UNREACHABLE,
                        None,
                        self.url_of(service),
                        result.error,
                    )
                )
            return
        probe = result.probe
        host_now = parse_time(probe.get("now")) or self.now
        self.containers(result, probe.get("docker") or {})
        self.certificate(result, probe)
        self.disks(name, probe.get("disks"))
        self.memory(name, probe.get("memory"))
        self.backup(name, probe, host_now)
        self.updates(name, probe.get("updates"))

    def containers(self, result: HostResult, docker: dict[str, Any]) -> None:
        name = result.host.name
        engine_ok = bool(docker.get("ok"))
        if not engine_ok:
            self.find(Level.DEGRADED, "docker_down", name, "docker")
        found = {
            c.get("service"): c
            for c in docker.get("containers") or []
            if c.get("site") in (None, self.site.name)
        }
        for service in self.site.services_on(name):
            title = short_title(self.site, service)
            row = ServiceRow(service, title, name, "ok", Level.OK, None, self.url_of(service))
            self.services.append(row)
            if not engine_ok:
                row.state, row.level, row.detail = "unknown", Level.DEGRADED, docker.get("error")
                continue
            container = found.get(service)
            if container is None:
                row.state, row.level = "missing", Level.DEGRADED
                row.detail = f"no container tc-{service}"
                self.find(Level.DEGRADED, "service_missing", name, service, title=title)
                continue
            self.container(row, container)
            if row.level == Level.OK:
                self.https(row, result)

    def container(self, row: ServiceRow, c: dict[str, Any]) -> None:
        state, health = c.get("state"), c.get("health")
        started, finished = parse_time(c.get("started_at")), parse_time(c.get("finished_at"))
        if state == "running" and health == "unhealthy":
            row.state, row.level = "unhealthy", Level.DEGRADED
            row.since = parse_time(c.get("failing_since")) or started
            row.detail = c.get("health_output") or None
            code = "service_unhealthy"
        elif state == "running" and health == "starting":
            row.state, row.level, row.since = "starting", Level.WARNING, started
            code = "service_starting"
        elif state == "running":
            row.since = started
            return
        elif state == "restarting":
            row.state, row.level, row.since = "restarting", Level.DEGRADED, finished
            row.detail = f"exit code {c.get('exit_code')}, {c.get('restarts')} restart(s)"
            code = "service_restarting"
        else:  # exited, dead, created, paused, removing, or something new
            row.state, row.level = "down", Level.DEGRADED
            row.since = finished or parse_time(c.get("created"))
            row.detail = f"container {state}" + (
                f", exit code {c.get('exit_code')}" if state in ("exited", "dead") else ""
            )
            code = "service_down"
        self.find(row.level, code, row.host, row.service, row.since, title=row.title)

    def https(self, row: ServiceRow, result: HostResult) -> None:
        key = PORTAL if row.service == "proxy" else row.service
        if key not in routes(self.site, result.host):
            return
        check = result.https.get(key)
        if check is None:
            row.state, row.level, row.detail = "not_checked", Level.WARNING, "out of time"
            self.find(Level.WARNING, "service_not_checked", row.host, row.service, title=row.title)
            return
        if not check.ok:
            row.state, row.level, row.since, row.detail = (
                "unreachable",
                Level.DEGRADED,
                None,
                check.error,
            )
            self.find(Level.DEGRADED, "service_unreachable", row.host, row.service, title=row.title)
            return
        if self.site.tls == "acme" and check.not_after is not None:
            left = check.not_after - self.now
            if left <= timedelta(0):
                row.level = Level.DEGRADED
                self.find(Level.DEGRADED, "cert_expired", row.host, row.service, title=row.title)
            elif left < CERT_WARNING:
                level = Level.DEGRADED if left < CERT_DEGRADED else Level.WARNING
                row.level = max(row.level, level)
                self.find(
                    level,
                    "cert_expiring",
                    row.host,
                    row.service,
                    title=row.title,
                    days=left.days,
                )

    def certificate(self, result: HostResult, probe: dict[str, Any]) -> None:
        if self.site.tls != "internal" or "proxy" not in self.site.services_on(result.host.name):
            return
        name = result.host.name
        label = self.words("check_certificate")
        pem = probe.get("ca_pem")
        not_after = ca_not_after(pem) if isinstance(pem, str) else None
        if not_after is None:
            self.checks.append(CheckRow("certificate", name, Level.DEGRADED, label, "?"))
            self.find(Level.DEGRADED, "ca_missing", name, "certificate")
            return
        left = not_after - self.now
        level = Level.OK
        if left < CERT_WARNING:
            level = Level.DEGRADED if left < CERT_DEGRADED else Level.WARNING
            self.find(level, "ca_expiring", name, "certificate", days=max(left.days, 0))
        value = self.words("expires", when=self.words.when(not_after))
        self.checks.append(CheckRow("certificate", name, level, label, value))

    def disks(self, host: str, disks: Any) -> None:
        if not isinstance(disks, list):
            return
        w = self.words
        for disk in disks:
            percent = float(disk.get("percent", 0.0))
            paths = disk.get("paths") or []
            if disk.get("mount") == "/":
                kind = "disk_main"
            elif paths and all(p == self.site.backup.get("target") for p in paths):
                kind = "disk_backup"
            elif paths == ["/var/lib/docker"]:
                kind = "disk_software"
            else:
                kind = "disk_data"
            level = Level.OK
            shown = round(percent)
            if percent >= DISK_DEGRADED:
                level = Level.DEGRADED
                self.find(level, "disk_full", host, "disk", disk=w(kind), percent=shown)
            elif percent >= DISK_WARNING:
                level = Level.WARNING
                self.find(level, "disk_nearly_full", host, "disk", disk=w(kind), percent=shown)
            self.checks.append(CheckRow("disk", host, level, w(kind), w("used", percent=shown)))

    def memory(self, host: str, memory: Any) -> None:
        if not isinstance(memory, dict) or "percent" not in memory:
            return
        percent = round(float(memory["percent"]))
        level = Level.WARNING if percent >= MEMORY_WARNING else Level.OK
        if level:
            self.find(level, "memory_high", host, "memory", percent=percent)
        self.checks.append(
            CheckRow(
                "memory",
                host,
                level,
                self.words("check_memory"),
                self.words("used", percent=percent),
            )
        )

    def backup(self, host: str, probe: dict[str, Any], host_now: datetime) -> None:
        w = self.words
        section = probe.get("backup")
        if not isinstance(section, dict) or "error" in section:
            self.find(Level.DEGRADED, "backup_unreadable", host, "backup")
            self.checks.append(CheckRow("backup", host, Level.DEGRADED, w("check_backup"), "?"))
            return
        last = section.get("last")
        label = w("check_backup")
        if last is None:
            deployed = deployed_at(probe)
            age = host_now - deployed if deployed else None
            if age is not None and age > BACKUP_MAX_AGE:
                level = Level.DEGRADED
                self.find(level, "backup_never", host, "backup", age=w.age(age))
            else:
                level = Level.WARNING
                self.find(level, "backup_none_yet", host, "backup")
            self.checks.append(CheckRow("backup", host, level, label, w("never")))
        else:
            finished = parse_time(last.get("finished")) if isinstance(last, dict) else None
            ok = isinstance(last, dict) and last.get("ok") is True
            if not isinstance(last, dict) or "unreadable" in last or finished is None:
                level = Level.DEGRADED
                self.find(level, "backup_unreadable", host, "backup")
                value = "?"
            elif not ok:
                level = Level.DEGRADED
                self.find(level, "backup_failed", host, "backup", finished, when=w.when(finished))
                value = w("backup_failed_value")
            elif host_now - finished > BACKUP_MAX_AGE:
                level = Level.DEGRADED
                self.find(
                    level, "backup_old", host, "backup", finished, age=w.age(host_now - finished)
                )
                value = w("backup_ok_value")
            else:
                level, value = Level.OK, w("backup_ok_value")
            self.checks.append(CheckRow("backup", host, level, label, value, finished))
        self.drill(host, section.get("drill"), host_now)
        self.upgrades(host, section.get("upgrades"))

    def upgrades(self, host: str, journals: Any) -> None:
        """The last upgrade of each service (its journal): rolled back, or interrupted."""
        for service, journal in sorted((journals or {}).items()):
            if not isinstance(journal, dict) or service not in self.site.catalog:
                continue
            title = short_title(self.site, service)
            step = journal.get("step")
            if step == "rolled-back":
                finished = parse_time(journal.get("finished"))
                version = str(journal.get("new_image", "")).rsplit(":", 1)[-1]
                self.find(Level.WARNING, "upgrade_rolled_back", host, service, finished,
                          title=title, version=version, when=self.words.when(finished))  # fmt: skip
            elif step != "done":
                self.find(Level.DEGRADED, "upgrade_interrupted", host, service, title=title)

    def drill(self, host: str, drill: Any, host_now: datetime) -> None:
        w = self.words
        label = w("check_drill")
        if drill is None:
            self.checks.append(CheckRow("drill", host, Level.OK, label, w("never")))
            return
        finished = parse_time(drill.get("finished")) if isinstance(drill, dict) else None
        if not isinstance(drill, dict) or finished is None:
            self.find(Level.DEGRADED, "backup_unreadable", host, "drill")
            self.checks.append(CheckRow("drill", host, Level.DEGRADED, label, "?"))
            return
        if drill.get("ok") is not True:
            level, value = Level.DEGRADED, w("backup_failed_value")
            self.find(level, "drill_failed", host, "drill", finished, when=w.when(finished))
        elif host_now - finished > DRILL_MAX_AGE:
            level, value = Level.WARNING, w("backup_ok_value")
            self.find(level, "drill_old", host, "drill", finished, age=w.age(host_now - finished))
        else:
            level, value = Level.OK, w("backup_ok_value")
        self.checks.append(CheckRow("drill", host, level, label, value, finished))

    def updates(self, host: str, updates: Any) -> None:
        if not isinstance(updates, dict) or updates.get("security") is None:
            return
        count = int(updates["security"])
        level = Level.WARNING if count > 0 else Level.OK
        if level:
            self.find(level, "updates_pending", host, "updates", count=count)
        self.checks.append(
            CheckRow(
                "updates",
                host,
                level,
                self.words("check_updates"),
                self.words("pending", count=count),
                parse_time(updates.get("checked")),
            )
        )


def deployed_at(probe: dict[str, Any]) -> datetime | None:
    """When the site was deployed on the host, as far as the host can tell: the backup
    state folder's time (made by the backup role at the first deploy), else the oldest
    container of the site."""
    backup = probe.get("backup") or {}
    moment = parse_time(backup.get("dir_mtime")) if isinstance(backup, dict) else None
    if moment is not None:
        return moment
    created = [
        parse_time(c.get("created")) for c in (probe.get("docker") or {}).get("containers") or []
    ]
    known = [c for c in created if c is not None]
    return min(known) if known else None


def ca_not_after(pem: str) -> datetime | None:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(pem.encode("ascii")).not_valid_after_utc
    except (ValueError, UnicodeEncodeError):
        return None


def evaluate(site: Site, results: Iterable[HostResult], now: datetime | None = None) -> SiteReport:
    """Judge one site from what was collected. Pure: no network, no clock unless `now`
    is left out."""
    now = now or datetime.now(UTC)
    judge = _Judge(site, now)
    collected = list(results)
    for result in collected:
        judge.host(result)
    order = {h.name: i for i, h in enumerate(site.hosts)}
    judge.findings.sort(key=lambda f: (-f.level, order.get(f.host, 0)))
    return SiteReport(site, judge.words, judge.services, judge.checks, judge.findings, collected)


# --- collection ------------------------------------------------------------------------


def probe_source() -> str:
    return (Path(__file__).parent / "probe.py").read_text(encoding="utf-8")


def https_check(
    address: str, server_name: str, ca_pem: str | None, timeout: float, port: int = HTTPS_PORT
) -> HttpsCheck:
    """GET / on address:port with SNI and Host = server_name; the certificate verified
    against ca_pem only when given (pinned), else against the system's trust store."""
    import http.client
    import socket
    import ssl

    url = f"https://{server_name}/"
    try:
        context = (
            ssl.create_default_context(cadata=ca_pem) if ca_pem else (ssl.create_default_context())
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        with (
            socket.create_connection((address, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            cert = tls.getpeercert() or {}
            tls.sendall(
                f"GET / HTTP/1.1\r\nHost: {server_name}\r\nUser-Agent: telecentre-ctl-status"
                "\r\nAccept: */*\r\nConnection: close\r\n\r\n".encode("ascii")
            )
            response = http.client.HTTPResponse(tls)
            response.begin()
            status = response.status
    except ssl.SSLCertVerificationError as err:
        return HttpsCheck(url, False, error=f"certificate not trusted: {err.verify_message}")
    except (TimeoutError, ConnectionRefusedError) as err:
        what = "no answer in time" if isinstance(err, TimeoutError) else "connection refused"
        return HttpsCheck(url, False, error=f"{what} on {address}:{port}")
    except (OSError, ssl.SSLError, http.client.HTTPException) as err:
        return HttpsCheck(url, False, error=f"{type(err).__name__}: {err}")
    not_after = None
    expiry = cert.get("notAfter")
    if isinstance(expiry, str):
        not_after = datetime.fromtimestamp(ssl.cert_time_to_seconds(expiry), UTC)
    if status >= 500:
        return HttpsCheck(url, False, status, f"HTTP {status} from the proxy", not_after)
    return HttpsCheck(url, True, status, None, not_after)


def collect_host(site: Site, host: Host, timeout: float, source: str) -> HostResult:
    """One SSH connection, one probe, then the HTTPS checks; all within `timeout`."""
    from telecentre_ctl.remote import RemoteError, connect, run_script

    started = time.monotonic()
    deadline = started + timeout
    result = HostResult(host)
    target = host.connection
    params = {
        "site": site.name,
        "paths": probe_paths(site, host),
        "ca_path": CA_PATH if site.tls == "internal" else None,
        "budget": max(timeout * 0.5, 1.0),
    }
    try:
        session = connect(target, deadline)
        try:
            raw = run_script(session, target, source, [json.dumps(params)], deadline)
        finally:
            session.close()
        probe = json.loads(raw)
        if not isinstance(probe, dict):
            raise ValueError("not a JSON object")
    except RemoteError as err:
        result.error, result.fix, result.reason = err.message, err.fix, err.reason
        result.duration_s = time.monotonic() - started
        return result
    except ValueError as err:
        result.error, result.reason = f"{host.name}: the probe answered no JSON: {err}", "command"
        result.duration_s = time.monotonic() - started
        return result
    result.probe = probe
    ca_pem = probe.get("ca_pem") if site.tls == "internal" else None
    for key, server_name in routes(site, host).items():
        left = deadline - time.monotonic()
        if left <= 0.05:
            break  # reported "not checked" by evaluate
        if site.tls == "internal" and not ca_pem:
            result.https[key] = HttpsCheck(
                f"https://{server_name}/", False, error="the site's CA is missing on the host"
            )
            continue
        result.https[key] = https_check(target.address, server_name, ca_pem, left)
    result.duration_s = time.monotonic() - started
    return result


@dataclass
class FleetReport:
    sites: list[SiteReport]
    generated: datetime

    @property
    def level(self) -> Level:
        return max((s.level for s in self.sites), default=Level.OK)

    @property
    def exit_code(self) -> int:
        codes = {s.exit_code for s in self.sites}
        for code in (EXIT_UNREACHABLE, EXIT_FAILED):
            if code in codes:
                return code
        return EXIT_OK

    def as_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "generated": iso(self.generated),
            "state": self.level.key,
            "exit_code": self.exit_code,
            "sites": [s.as_json() for s in self.sites],
        }


Progress = Callable[[Site, HostResult], None]


def collect(
    sites: list[Site], timeout: float = DEFAULT_TIMEOUT, progress: Progress | None = None
) -> FleetReport:
    """Status of every host of every site, MAX_PARALLEL at a time. Each host has its own
    `timeout`, counted from the moment its turn comes: a host queued behind slow or dead
    ones is tried like the others. One still running GRACE_S past its deadline (a stuck
    connection) is reported unreachable and a fresh worker takes its place in the pool."""
    import queue
    import threading

    source = probe_source()
    jobs = [(site, host) for site in sites for host in site.hosts]
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for number in range(len(jobs)):
        todo.put(number)
    done: queue.SimpleQueue[tuple[int, HostResult]] = queue.SimpleQueue()
    started: dict[int, float] = {}  # job -> when its attempt began (set by the worker)
    go = threading.Event()

    def worker() -> None:
        go.wait()
        while True:
            try:
                number = todo.get_nowait()
            except queue.Empty:
                return
            site, host = jobs[number]
            started[number] = time.monotonic()
            try:
                result = collect_host(site, host, timeout, source)
            except Exception as error:  # a bug, not the host: say so rather than hide the host
                result = HostResult(host, error=f"{host.name}: status failed: {error!r}")
            done.put((number, result))

    def start_worker(name: str) -> None:
        # Daemon threads: one stuck past its deadline must not keep the command from exiting.
        threading.Thread(target=worker, name=name, daemon=True).start()

    # Every worker is started before any works: starting a thread waits for the GIL, and
    # threads started while others already hash and parse would begin seconds late.
    for number in range(max(1, min(MAX_PARALLEL, len(jobs)))):
        start_worker(f"status-{number}")
    go.set()
    results: dict[int, HostResult] = {}

    def record(number: int, result: HostResult) -> None:
        results[number] = result
        if progress is not None:
            progress(jobs[number][0], result)

    replacements = 0
    while len(results) < len(jobs):
        now = time.monotonic()
        for number, began in list(started.items()):
            if number not in results and now >= began + timeout + GRACE_S:
                host = jobs[number][1]
                late = f"{host.name}: no answer within {timeout:g} s"
                record(number, HostResult(host, error=late, reason="timeout", duration_s=timeout))
                replacements += 1
                start_worker(f"status-r{replacements}")
        running = [b + timeout + GRACE_S for n, b in list(started.items()) if n not in results]
        wait = min(running, default=now + timeout + GRACE_S) - now
        try:
            number, result = done.get(timeout=max(wait, 0.01))
        except queue.Empty:
            continue
        if number not in results:  # a late answer of a host already reported is dropped
            record(number, result)
    now_utc = datetime.now(UTC)
    by_job = {(jobs[n][0].dir.as_posix(), jobs[n][1].name): r for n, r in results.items()}
    reports = [
        evaluate(site, [by_job[(site.dir.as_posix(), h.name)] for h in site.hosts], now_utc)
        for site in sites
    ]
    return FleetReport(reports, now_utc)


# --- output ----------------------------------------------------------------------------


def text_report(report: SiteReport) -> str:
    """The terminal view of one site: headline, then the table."""
    from telecentre_ctl.output import table

    w = report.words
    site = report.site
    lines = [f"{site.title} ({site.name}): {report.headline}"]
    multi = report.multi_host
    headers = [w("service"), w("state"), w("since_col"), w("url")]
    if multi:
        headers.insert(1, w("host"))
    rows: list[list[str]] = []
    for row in report.services:
        cells = [row.title, w(f"state_{row.state}"), w.when(row.since), row.url or ""]
        if multi:
            cells.insert(1, row.host)
        rows.append(cells)
    for check in report.checks:
        cells = [check.label, check.value, w.when(check.since), ""]
        if multi:
            cells.insert(1, check.host)
        rows.append(cells)
    lines.append(table(headers, rows))
    for result in report.hosts:
        if result.probe is None:
            lines.append(f"  {result.error}" + (f"\n    fix: {result.fix}" if result.fix else ""))
    for row in report.services:
        if row.level >= Level.DEGRADED and row.detail and row.state != "unknown":
            lines.append(f"  {row.service} on {row.host}: {row.detail}")
    return "\n".join(lines)


def html_report(fleet: FleetReport) -> str:
    """One self-contained page (inline style, no script, no external resource)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    template = env.get_template("status.html.j2")
    locales = {s.words.locale for s in fleet.sites}
    page_words = Words(locales.pop() if len(locales) == 1 else "en", fleet.generated)
    return template.render(fleet=fleet, w=page_words, Level=Level)
