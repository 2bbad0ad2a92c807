"""A telecentre site folder: site.yml (what), hosts.yml (where), secrets.yml (vault).

`load_site` checks everything a volunteer can get wrong, all at once, before any connection
is made, and returns a typed `Site`. Each problem names the file, the key and the fix.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from telecentre_ctl import connection, inventory, yamlio
from telecentre_ctl.catalog import PROFILES, Catalog, load_catalog
from telecentre_ctl.compose import DIRECTORY, partners
from telecentre_ctl.connection import Connection, ConnectionProblem
from telecentre_ctl.errors import InvalidInput, Problem

SITE_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{1,30}$")
DOMAIN_RE = re.compile(r"^(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+-]+@([A-Za-z0-9-]+\.)+[A-Za-z]{2,63}$")
TIME_RE = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
ADMIN_NAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
SSH_KEY_RE = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|"
    r"sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]{20,}={0,3}( .*)?$"
)
SFTP_TARGET_RE = re.compile(r"^sftp:[a-z_][a-z0-9_-]*@[A-Za-z0-9.-]+:/\S*$")
HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
LOCALES = ("fr", "en")
TLS_MODES = ("acme", "internal")
ALWAYS_OPEN_PORTS = (22, 80, 443)
# RAM assumed for a host without tc_ram_gb, by profile (GB).
DEFAULT_RAM_GB = {"lite": 2, "standard": 8, "full": 16}
# Memory kept for the host itself (systemd, sshd, Docker engine), in MiB.
SYSTEM_RESERVE_MB = 384
HEADROOM = 0.20
SITE_KEYS = {
    "name",
    "title",
    "locale",
    "domain",
    "tls",
    "admin_email",
    "admins",
    "profile",
    "services",
    "backup",
    "open_ports",
    "smtp",
    "build_ca_bundle",
    "members",
}
REQUIRED_SITE_KEYS = ("name", "title", "admin_email", "admins", "profile", "services", "backup")
BACKUP_KEYS = {"target", "time", "keep"}
KEEP_KEYS = ("daily", "weekly", "monthly")
SMTP_KEYS = {"host", "port", "security", "username", "from"}
MEMBERS_KEYS = {"on_remove", "plans"}
# What becomes of a removed member's own data (files, calendars): kept in place, put in
# one archive in the directory's backed-up archive volume, or deleted. The account is
# disabled at once in every case.
ON_REMOVE = ("keep", "archive", "delete")
MEMBER_GROUPS = ("members", "staff", "admins")
PLAN_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
# Plans when site.yml names none: a membership plan gives groups (members is implied)
# and the quota of the member's own folder on the file share.
DEFAULT_PLANS: dict[str, dict[str, Any]] = {
    "membre": {"groups": ["members"], "quota_gb": 5},
    "equipe": {"groups": ["members", "staff"], "quota_gb": 20},
    "admin": {"groups": ["members", "staff", "admins"], "quota_gb": 20},
}
# How the relay is reached (Vaultwarden's words), and the port each implies.
SMTP_PORTS = {"starttls": 587, "force_tls": 465, "off": 25}


@dataclass(frozen=True)
class Admin:
    name: str
    ssh_key: str


@dataclass(frozen=True)
class Host:
    name: str
    vars: dict[str, Any]  # as Ansible resolves them (telecentre_ctl.inventory)
    connection: Connection  # how status and images reach it (telecentre_ctl.connection)

    @property
    def address(self) -> str:
        return self.connection.address

    @property
    def services(self) -> tuple[str, ...] | None:
        listed = self.vars.get("tc_services")
        return tuple(listed) if listed is not None else None


@dataclass(frozen=True)
class Site:
    dir: Path
    name: str
    title: str
    locale: str
    domain: str | None
    tls: str
    admin_email: str
    admins: tuple[Admin, ...]
    profile: str
    services: dict[str, dict[str, Any]]  # enabled apps -> site options
    backup: dict[str, Any]
    open_ports: tuple[int, ...]
    build_ca_bundle: str | None  # absolute path on the controller
    hosts: tuple[Host, ...]
    catalog: Catalog = field(repr=False)
    smtp: dict[str, Any] | None = None  # the SMTP relay, defaults filled; None: no mail
    members: dict[str, Any] | None = (
        None  # on_remove and plans, defaults filled; None: no directory
    )

    @property
    def base_domain(self) -> str:
        return self.domain or f"{self.name}.home.arpa"

    def subdomain(self, service: str) -> str | None:
        option = self.services.get(service, {}).get("subdomain")
        return str(option) if option else self.catalog[service].subdomain

    def fqdn(self, service: str) -> str:
        return f"{self.subdomain(service)}.{self.base_domain}"

    def url(self, service: str) -> str:
        return f"https://{self.fqdn(service)}/"

    @property
    def portal_url(self) -> str:
        return f"https://{self.base_domain}/"

    def memory_mb(self, service: str) -> int:
        option = self.services.get(service, {}).get("memory_mb")
        return int(option) if option else self.catalog[service].memory_mb

    def ram_gb(self, host: Host) -> float:
        value = host.vars.get("tc_ram_gb")
        return float(value) if value is not None else float(DEFAULT_RAM_GB[self.profile])

    def placement(self) -> dict[str, list[str]]:
        """Host name -> every service it runs: shared dependencies, apps, then the proxy."""
        return {name: list(services) for name, services in self._placement.items()}

    def services_on(self, host_name: str) -> list[str]:
        """What placement() gives for one host, without building the whole mapping."""
        return list(self._placement[host_name])

    @cached_property
    def _placement(self) -> dict[str, tuple[str, ...]]:
        # computed once: status and the checks ask for it once per host
        infra = [s.name for s in self.catalog.infra()]
        placed: dict[str, tuple[str, ...]] = {}
        for host in self.hosts:
            apps = [s for s in self.services if host.services is None or s in host.services]
            deps = sorted({d for a in apps for d in self.catalog[a].depends})
            placed[host.name] = (*deps, *apps, *infra)
        return placed

    def required_secrets(self) -> dict[str, list[str]]:
        """Service -> the secret names it needs, for every service placed on some host."""
        names = sorted({s for services in self.placement().values() for s in services})
        needed = {}
        for name in names:
            # a secret that shares another's value (same_as) is not generated for itself
            own = sorted(
                s for s, spec in self.catalog[name].secrets.items() if "same_as" not in spec
            )
            if own:
                needed[name] = own
        needed["backup"] = ["restic_password"]
        return needed

    def provided_secrets(self) -> list[tuple[str, str]]:
        """(owner, secret) the site's admin gives (never generated): the SMTP password."""
        from telecentre_ctl.compose import provided_secrets

        return provided_secrets(self.as_data())

    def firewall_ports(self, host: str) -> list[dict[str, Any]]:
        ports = {(p, "tcp") for p in (*ALWAYS_OPEN_PORTS, *self.open_ports)}
        for service in self.services_on(host):
            for pub in self.catalog[service].data.get("publish", []):
                ports.add((int(pub["port"]), str(pub.get("protocol", "tcp"))))
        return [{"port": p, "protocol": proto} for p, proto in sorted(ports)]

    def as_data(self) -> dict[str, Any]:
        """site.yml with defaults filled: what Ansible receives as tc_site."""
        return {
            "name": self.name,
            "title": self.title,
            "locale": self.locale,
            "domain": self.domain,
            "base_domain": self.base_domain,
            "tls": self.tls,
            "admin_email": self.admin_email,
            "admins": [{"name": a.name, "ssh_key": a.ssh_key} for a in self.admins],
            "profile": self.profile,
            "services": self.services,
            "backup": self.backup,
            "open_ports": list(self.open_ports),
            "smtp": self.smtp,
            "build_ca_bundle": self.build_ca_bundle,
            "members": self.members,
        }


def read_site_name(site_dir: Path) -> str:
    """The site's slug from site.yml, checked; raises InvalidInput naming the file."""
    site_file = Path(site_dir) / "site.yml"
    if not site_file.is_file():
        raise InvalidInput(
            f"{site_file}: no such file",
            fix=f"create the site first: telecentre-ctl init {site_dir}",
        )
    try:
        data = yamlio.load(site_file)
    except yamlio.YamlProblem as err:
        raise InvalidInput(str(err.problem), fix=f"telecentre-ctl validate {site_dir}") from err
    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str) or not SITE_NAME_RE.match(name):
        raise InvalidInput(
            f"{site_file}: name: missing or not a slug",
            fix="set name: to lower-case letters, digits and dashes, e.g. comptoir",
        )
    return name


def did_you_mean(word: str, choices: list[str] | set[str]) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else ""


class _Checker:
    """Collects problems for one file, with line numbers from the parsed document."""

    def __init__(self, shown: str, raw: Any, problems: list[Problem]) -> None:
        self.shown, self.raw, self.problems = shown, raw, problems

    def add(self, path: tuple[str | int, ...], message: str, fix: str = "") -> None:
        key = ".".join(str(p) for p in path)
        self.problems.append(Problem(self.shown, key, message, fix, yamlio.line_of(self.raw, path)))

    def unknown_keys(self, data: dict[str, Any], allowed: set[str], path: tuple[str, ...]) -> None:
        for key in data:
            if key not in allowed:
                hint = did_you_mean(key, allowed) or f"allowed keys: {', '.join(sorted(allowed))}"
                self.add((*path, key), "unknown key", f"remove it; {hint}")

    def string(self, data: dict[str, Any], key: str, path: tuple[str, ...] = ()) -> str | None:
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.add(
                (*path, key),
                f"must be a non-empty text, not {type(value).__name__}",
                f'write it as {key}: "..."',
            )
            return None
        return value


def _load_yaml_file(path: Path, shown: str, problems: list[Problem]) -> Any:
    if not path.is_file():
        return None
    try:
        return yamlio.load(path, shown)
    except yamlio.YamlProblem as err:
        problems.append(err.problem)
        return None


def _check_site_file(
    raw: Any, catalog: Catalog, problems: list[Problem], site_dir: Path | None = None
) -> dict[str, Any]:
    """Validate site.yml; returns the checked values (missing ones left out)."""
    chk = _Checker("site.yml", raw, problems)
    if not isinstance(raw, dict):
        chk.add((), "must be a mapping of keys (name:, title:, ...)", "see inventory/demo/site.yml")
        return {}
    data = yamlio.plain(raw)
    out: dict[str, Any] = {}
    chk.unknown_keys(data, SITE_KEYS, ())
    for key in REQUIRED_SITE_KEYS:
        if key not in data:
            chk.add((key,), "missing", f"add {key}: (see inventory/example-standard/site.yml)")

    name = data.get("name")
    if name is not None:
        if isinstance(name, str) and SITE_NAME_RE.match(name):
            out["name"] = name
        else:
            chk.add(
                ("name",),
                f"{name!r} is not a slug",
                "use 2-31 lower-case letters, digits or dashes, starting with a letter",
            )
    title = chk.string(data, "title")
    if title is not None:
        if len(title) > 80:
            chk.add(("title",), "longer than 80 characters", "shorten it: it heads the portal page")
        out["title"] = title
    locale = data.get("locale", "fr")
    if locale in LOCALES:
        out["locale"] = locale
    else:
        chk.add(("locale",), f"{locale!r} is not supported", "use fr or en")

    domain = data.get("domain")
    if domain is not None:
        if not isinstance(domain, str) or not DOMAIN_RE.match(domain):
            chk.add(
                ("domain",),
                f"{domain!r} is not a domain name",
                "write a lower-case DNS name such as comptoir.example.org, or remove it "
                "for a LAN-only site",
            )
        elif domain.endswith(".home.arpa") or domain.endswith(".local"):
            chk.add(
                ("domain",),
                f"{domain!r} is a local-only name",
                "remove domain: (LAN-only sites get <name>.home.arpa automatically)",
            )
        else:
            out["domain"] = domain
    tls = data.get("tls", "acme" if domain else "internal")
    if tls not in TLS_MODES:
        chk.add(("tls",), f"{tls!r} is not a TLS mode", "use acme (needs a domain) or internal")
    elif tls == "acme" and not domain:
        chk.add(
            ("tls",),
            "acme needs a public domain",
            "set domain:, or use tls: internal for a LAN-only site",
        )
    else:
        out["tls"] = tls

    email = data.get("admin_email")
    if email is not None:
        if isinstance(email, str) and EMAIL_RE.match(email):
            out["admin_email"] = email
        else:
            chk.add(
                ("admin_email",),
                f"{email!r} is not an e-mail address",
                "write it as someone@example.org",
            )

    out["admins"] = _check_admins(chk, data.get("admins"))
    profile = data.get("profile")
    if profile is not None:
        if profile in PROFILES:
            out["profile"] = profile
        else:
            chk.add(
                ("profile",),
                f"{profile!r} is not a profile",
                f"use one of {', '.join(PROFILES)} {did_you_mean(str(profile), set(PROFILES))}",
            )
    out["services"] = _check_services(chk, data.get("services"), catalog, out.get("profile"))
    if "backup" in data:
        out["backup"] = _check_backup(chk, data["backup"])
    out["open_ports"] = _check_open_ports(chk, data.get("open_ports", []))
    if data.get("smtp") is not None:
        out["smtp"] = _check_smtp(chk, data["smtp"])
    if data.get("build_ca_bundle") is not None:
        out["build_ca_bundle"] = _check_build_ca(chk, data["build_ca_bundle"], site_dir)
    for name in out["services"]:
        needs = (catalog[name].data.get("members") or {}).get("required")
        if needs and DIRECTORY not in out["services"]:
            chk.add(
                ("services", name),
                f"{name} has no accounts of its own: it needs the members' directory",
                "add directory: {} to services:",
            )
    if DIRECTORY in out["services"]:
        out["members"] = _check_members(chk, data.get("members") or {})
    elif data.get("members") is not None:
        chk.add(
            ("members",),
            "members need the members' directory, which this site does not run",
            "add directory: {} to services:, or remove members:",
        )
    return out


def _check_members(chk: _Checker, members: Any) -> dict[str, Any]:
    """site.yml members: what removal does to a member's data, and the membership plans."""
    path = ("members",)
    if not isinstance(members, dict):
        chk.add(path, "must be a mapping with on_remove and plans", "see inventory/demo/site.yml")
        return {"on_remove": "keep", "plans": DEFAULT_PLANS}
    chk.unknown_keys(members, MEMBERS_KEYS, path)
    on_remove = members.get("on_remove", "keep")
    if on_remove not in ON_REMOVE:
        chk.add(
            (*path, "on_remove"),
            f"{on_remove!r} is not a removal policy",
            "use keep (data stays), archive (one archive, backed up) or delete",
        )
    plans = members.get("plans", DEFAULT_PLANS)
    checked: dict[str, dict[str, Any]] = {}
    if not isinstance(plans, dict) or not plans:
        chk.add(
            (*path, "plans"),
            "must map plan names to {groups, quota_gb}",
            "write e.g. plans: {resident: {groups: [members], quota_gb: 20}}",
        )
        plans = {}
    for name, plan in plans.items():
        where = (*path, "plans", str(name))
        if not isinstance(name, str) or not PLAN_RE.match(name):
            chk.add(where, f"{name!r} is not a plan name", "use lower-case letters, digits, dashes")
            continue
        if not isinstance(plan, dict):
            chk.add(where, "must be a mapping", "write {groups: [members], quota_gb: 5}")
            continue
        chk.unknown_keys(plan, {"groups", "quota_gb"}, where)
        groups = plan.get("groups", ["members"])
        if not isinstance(groups, list) or any(g not in MEMBER_GROUPS for g in groups):
            chk.add(
                (*where, "groups"),
                f"{groups!r} names a group that does not exist",
                f"use a list of {', '.join(MEMBER_GROUPS)}",
            )
            continue
        quota = plan.get("quota_gb")
        if (
            isinstance(quota, bool)
            or not isinstance(quota, (int, float))
            or not 0 < quota <= 100000
        ):
            chk.add(
                (*where, "quota_gb"),
                f"{quota!r} is not a quota",
                "give the member's own storage in GB, a number above 0 (e.g. 5 or 0.5)",
            )
            continue
        checked[name] = {"groups": sorted(set(groups) | {"members"}), "quota_gb": quota}
    return {"on_remove": on_remove, "plans": checked}


def _check_build_ca(chk: _Checker, value: Any, site_dir: Path | None) -> str | None:
    """The extra CA bundle that image builds trust (an intercepting HTTPS proxy's CA):
    a PEM file on the controller, absolute or relative to the site folder."""
    key = ("build_ca_bundle",)
    fix = (
        "name a PEM file of CA certificates (e.g. /etc/ssl/certs/ca-certificates.crt, "
        "or your proxy's CA), or remove build_ca_bundle"
    )
    if not isinstance(value, str) or not value.strip():
        chk.add(key, "must be the path of a PEM file", fix)
        return None
    path = Path(value).expanduser()
    if not path.is_absolute() and site_dir is not None:
        path = site_dir / path
    if not path.is_file():
        chk.add(key, f"{path}: no such file", fix)
        return None
    try:
        text = path.read_bytes()[: 4 * 1024 * 1024 + 1].decode("ascii")
    except (OSError, UnicodeDecodeError) as err:
        chk.add(key, f"{path}: not a readable PEM text file ({err})", fix)
        return None
    import ssl

    try:
        if "-----BEGIN CERTIFICATE-----" not in text or len(text) > 4 * 1024 * 1024:
            raise ssl.SSLError("no certificate in it")
        ssl.create_default_context(cadata=text)
    except ssl.SSLError as err:
        chk.add(key, f"{path}: not a PEM bundle of CA certificates ({err})", fix)
        return None
    return str(path.resolve())


def _check_admins(chk: _Checker, admins: Any) -> list[Admin]:
    if admins is None:
        return []
    if not isinstance(admins, list) or not admins:
        chk.add(
            ("admins",),
            "must be a non-empty list of {name, ssh_key}",
            'write admins: [{name: alice, ssh_key: "ssh-ed25519 AAAA..."}]',
        )
        return []
    found: list[Admin] = []
    seen: set[str] = set()
    for i, admin in enumerate(admins):
        if not isinstance(admin, dict):
            chk.add(
                ("admins", i),
                "must be a mapping with name and ssh_key",
                'write {name: alice, ssh_key: "ssh-ed25519 AAAA..."}',
            )
            continue
        chk.unknown_keys(admin, {"name", "ssh_key"}, ("admins", str(i)))
        name, key = admin.get("name"), admin.get("ssh_key")
        ok = True
        if not isinstance(name, str) or not ADMIN_NAME_RE.match(name) or name == "root":
            chk.add(
                ("admins", i, "name"),
                f"{name!r} is not a valid account name",
                "use lower-case letters, digits, - or _ (not root)",
            )
            ok = False
        elif name in seen:
            chk.add(("admins", i, "name"), f"{name!r} is listed twice", "keep one entry per admin")
            ok = False
        if not isinstance(key, str) or not SSH_KEY_RE.match(key.strip()):
            chk.add(
                ("admins", i, "ssh_key"),
                "not an OpenSSH public key",
                "paste one line of ~/.ssh/id_ed25519.pub (ssh-ed25519 AAAA... comment)",
            )
            ok = False
        if ok:
            seen.add(str(name))
            found.append(Admin(str(name), str(key).strip()))
    return found


def _check_services(
    chk: _Checker, services: Any, catalog: Catalog, profile: str | None
) -> dict[str, dict[str, Any]]:
    from jsonschema import Draft202012Validator

    if services is None:
        return {}
    if not isinstance(services, dict):
        chk.add(
            ("services",),
            "must be a mapping of service names to options",
            "write services: {radicale: {}, dokuwiki: {}} (see telecentre-ctl services)",
        )
        return {}
    apps = {s.name for s in catalog.apps()}
    enabled: dict[str, dict[str, Any]] = {}
    for name, options in services.items():
        path = ("services", name)
        if name not in catalog or name not in apps:
            what = (
                "is a shared dependency, added automatically"
                if name in catalog
                else "is not in the catalogue"
            )
            hint = did_you_mean(name, apps) or "list them with: telecentre-ctl services"
            chk.add(path, f"{name!r} {what}", f"remove it; {hint}")
            continue
        if profile and profile not in catalog[name].profiles:
            chk.add(
                path,
                f"{name!r} is not part of the {profile} profile "
                f"(it is in: {', '.join(catalog[name].profiles)})",
                f"choose profile: {catalog[name].profiles[0]} or remove the service",
            )
            continue
        options = {} if options is None else options
        if not isinstance(options, dict):
            chk.add(path, "options must be a mapping", f"write {name}: {{}} for the defaults")
            continue
        allowed = catalog[name].options_schema
        chk.unknown_keys(options, set(allowed), path)
        schema = {"type": "object", "properties": allowed}
        for err in Draft202012Validator(schema).iter_errors(options):
            chk.add(
                (*path, *map(str, err.absolute_path)),
                err.message,
                "see telecentre-ctl services --json for the option's form",
            )
        enabled[name] = options
    return enabled


def _check_backup(chk: _Checker, backup: Any) -> dict[str, Any]:
    path = ("backup",)
    if not isinstance(backup, dict):
        chk.add(
            path,
            "must be a mapping with target, time and keep",
            'write backup: {target: /srv/backup, time: "02:30", keep: {daily: 7}}',
        )
        return {}
    chk.unknown_keys(backup, BACKUP_KEYS, path)
    target = backup.get("target")
    if target is None:
        chk.add((*path, "target"), "missing", "add target: /srv/backup (or sftp:user@host:/path)")
    elif not isinstance(target, str) or not (
        (target.startswith("/") and ".." not in target.split("/") and target != "/")
        or SFTP_TARGET_RE.match(target)
    ):
        chk.add(
            (*path, "target"),
            f"{target!r} is neither an absolute path nor an sftp target",
            "write an absolute path on the host (/srv/backup, a USB disk mount) "
            "or sftp:user@host:/path",
        )
    time = backup.get("time", "02:30")
    if not isinstance(time, str) or not TIME_RE.match(time):
        chk.add(
            (*path, "time"),
            f"{time!r} is not a time of day",
            'write it quoted as HH:MM, e.g. time: "02:30"',
        )
    keep = backup.get("keep", {"daily": 7, "weekly": 4, "monthly": 6})
    if not isinstance(keep, dict):
        chk.add(
            (*path, "keep"), "must be a mapping", "write keep: {daily: 7, weekly: 4, monthly: 6}"
        )
        keep = {}
    else:
        chk.unknown_keys(keep, set(KEEP_KEYS), (*path, "keep"))
        for key, value in keep.items():
            if key in KEEP_KEYS and (
                isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 3650
            ):
                chk.add(
                    (*path, "keep", key),
                    f"{value!r} is not a number of snapshots",
                    "use a whole number from 0 to 3650",
                )
        if keep and not any(isinstance(v, int) and v > 0 for v in keep.values()):
            chk.add((*path, "keep"), "keeps no snapshot at all", "keep at least daily: 1")
    return {"target": target, "time": time, "keep": keep}


def _check_smtp(chk: _Checker, smtp: Any) -> dict[str, Any] | None:
    """The optional SMTP relay the services send mail through; defaults filled."""
    path = ("smtp",)
    if not isinstance(smtp, dict):
        chk.add(path, "must be a mapping", "write smtp: {host: smtp.example.org, username: ...}")
        return None
    chk.unknown_keys(smtp, SMTP_KEYS, path)
    before = len(chk.problems)
    host = smtp.get("host")
    if not isinstance(host, str) or not HOSTNAME_RE.match(host):
        chk.add(
            (*path, "host"),
            f"{host!r} is not a host name",
            "write the relay's name, e.g. host: smtp.example.org",
        )
    security = smtp.get("security", "starttls")
    if security not in SMTP_PORTS:
        chk.add(
            (*path, "security"),
            f"{security!r} is not a way to reach the relay",
            "use starttls (port 587), force_tls (implicit TLS, 465) or off (25, unencrypted)",
        )
        security = "starttls"
    port = smtp.get("port", SMTP_PORTS[security])
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        chk.add((*path, "port"), f"{port!r} is not a port number", "use 1-65535, e.g. port: 587")
    username = smtp.get("username")
    if username is not None and (
        not isinstance(username, str) or not username.strip() or any(c.isspace() for c in username)
    ):
        chk.add(
            (*path, "username"),
            "must be a login without spaces",
            "write username: name@example.org",
        )
    sender = smtp.get("from")
    if sender is not None and (not isinstance(sender, str) or not EMAIL_RE.match(sender)):
        chk.add(
            (*path, "from"),
            f"{sender!r} is not an e-mail address",
            "write from: noreply@example.org",
        )
    if len(chk.problems) > before:
        return None
    found = {"host": host, "port": port, "security": security}
    found |= {k: smtp[k] for k in ("username", "from") if smtp.get(k)}
    return found


def _check_open_ports(chk: _Checker, ports: Any) -> list[int]:
    if not isinstance(ports, list):
        chk.add(("open_ports",), "must be a list of TCP port numbers", "write open_ports: [8443]")
        return []
    seen: list[int] = []
    for i, port in enumerate(ports):
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            chk.add(("open_ports", i), f"{port!r} is not a port number", "use 1-65535")
        elif port in ALWAYS_OPEN_PORTS:
            chk.add(("open_ports", i), f"{port} is always open", "remove it from open_ports")
        elif port in seen:
            chk.add(("open_ports", i), f"port {port} is listed twice", "list each port once")
        else:
            seen.append(port)
    return seen


GROUP = "telecentre"


def _host_problem(
    host: inventory.InventoryHost, problems: list[Problem], var: str, message: str, fix: str
) -> None:
    """A problem with a host variable, reported where that variable was set."""
    origin = host.origins.get(var) or inventory.Origin("hosts.yml", (host.name,))
    problems.append(origin.problem(message, fix))


def _check_hosts(
    raw: Any, site_dir: Path, enabled: dict[str, dict[str, Any]], problems: list[Problem]
) -> list[Host]:
    """The hosts of group telecentre (its child groups' included), with the variables
    Ansible gives them (group_vars/ and host_vars/ beside hosts.yml included)."""
    found = inventory.read(raw, "hosts.yml", site_dir, problems)
    members = found.members(GROUP)
    if not members:
        problems.append(
            Problem(
                "hosts.yml",
                GROUP,
                "no group 'telecentre' with hosts",
                "write telecentre: {hosts: {box1: {ansible_host: 192.0.2.10}}}, "
                "or run: telecentre-ctl lab up SITE_DIR",
                yamlio.line_of(raw, (GROUP,)),
            )
        )
        return []
    every = {name: h.vars for name, h in found.hosts.items()}
    hosts = []
    for name in members:
        host_vars = dict(found.hosts[name].vars)
        add = functools.partial(_host_problem, found.hosts[name], problems)

        ram = host_vars.get("tc_ram_gb")
        if ram is not None and (
            isinstance(ram, bool) or not isinstance(ram, (int, float)) or not 0.25 <= ram <= 4096
        ):
            add("tc_ram_gb", f"{ram!r} is not a RAM size in GB",
                "write the host's memory in GB, e.g. tc_ram_gb: 4")  # fmt: skip
            del host_vars["tc_ram_gb"]
        listed = host_vars.get("tc_services")
        if listed is not None:
            if not isinstance(listed, list) or not all(isinstance(s, str) for s in listed):
                add("tc_services", "must be a list of service names",
                    "write tc_services: [radicale, dokuwiki]")  # fmt: skip
                del host_vars["tc_services"]
            else:
                for service in listed:
                    if service not in enabled:
                        add("tc_services", f"{service!r} is not enabled in site.yml",
                            f"enable it under services: in site.yml or remove it here "
                            f"{did_you_mean(service, set(enabled))}".strip())  # fmt: skip
        try:
            reach = connection.of(name, host_vars, every)
        except ConnectionProblem as err:
            add(err.var, f"{err.var} {err.message}", err.fix)
            continue
        hosts.append(Host(name, host_vars, reach))
    return hosts


def _check_placement(site: Site, problems: list[Problem]) -> None:
    placed = site.placement()
    everywhere = {s for services in placed.values() for s in services}
    for service in site.services:
        if service not in everywhere:
            problems.append(
                Problem(
                    "hosts.yml",
                    "tc_services",
                    f"{service!r} runs on no host",
                    "add it to one host's tc_services",
                )
            )
    routes: dict[str, str] = {}
    for service in site.services:
        sub = site.subdomain(service)
        if sub is None:
            continue
        if sub in routes:
            problems.append(
                Problem(
                    "site.yml",
                    f"services.{service}.subdomain",
                    f"{sub}.{site.base_domain} is already the address of {routes[sub]}",
                    "give one of them another subdomain:",
                )
            )
        routes[sub] = service
    for service in site.services:
        for other in partners(site.catalog[service].data):
            apart = [
                host
                for host, services in placed.items()
                if other in site.services and (service in services) != (other in services)
            ]
            if apart:
                why = (
                    "it logs members in against the directory on its own host"
                    if other == DIRECTORY
                    else "they call each other through its proxy"
                )
                problems.append(
                    Problem(
                        "hosts.yml",
                        "tc_services",
                        f"{service} and {other} must run on the same host ({why}), but "
                        f"{apart[0]} runs only one of them",
                        "list both in the same host's tc_services",
                    )
                )
    for host in site.hosts:
        ports: dict[tuple[int, str], str] = {}
        for service in placed[host.name]:
            for pub in site.catalog[service].data.get("publish", []):
                key = (int(pub["port"]), str(pub.get("protocol", "tcp")))
                if key in ports:
                    problems.append(
                        Problem(
                            "site.yml",
                            f"services.{service}",
                            f"port {key[0]}/{key[1]} on {host.name} is also "
                            f"published by {ports[key]}",
                            "place them on different hosts (tc_services)",
                        )
                    )
                ports[key] = service
        for port in site.open_ports:
            if (port, "tcp") in ports:
                problems.append(
                    Problem(
                        "site.yml",
                        "open_ports",
                        f"port {port} is already used by {ports[(port, 'tcp')]}",
                        "remove it from open_ports",
                    )
                )
        _check_ram(site, host, placed[host.name], problems)


def _check_ram(site: Site, host: Host, services: list[str], problems: list[Problem]) -> None:
    need = SYSTEM_RESERVE_MB + sum(site.memory_mb(s) for s in services)
    have = site.ram_gb(host) * 1024
    if need > have * (1 - HEADROOM):
        source = "tc_ram_gb" if "tc_ram_gb" in host.vars else f"the {site.profile} profile default"
        problems.append(
            Problem(
                "hosts.yml",
                f"telecentre.hosts.{host.name}",
                f"services need {need} MiB but {host.name} has {have:.0f} MiB ({source}); "
                f"at least {HEADROOM:.0%} must stay free",
                "place some services on another host (tc_services), disable some, "
                "or give the real RAM as tc_ram_gb",
            )
        )


def ram_budget(site: Site) -> dict[str, dict[str, float]]:
    """Per host: MiB needed (services + system reserve), MiB available, headroom share."""
    budget = {}
    for host in site.hosts:
        need = SYSTEM_RESERVE_MB + sum(site.memory_mb(s) for s in site.services_on(host.name))
        have = site.ram_gb(host) * 1024
        budget[host.name] = {"need_mb": need, "have_mb": have, "headroom": 1 - need / have}
    return budget


def load_site(site_dir: Path, *, check_secrets: bool = True) -> Site:
    """Load and validate a site folder; raises InvalidInput with every problem found."""
    site_dir = Path(site_dir)
    if not site_dir.is_dir():
        raise InvalidInput(
            f"{site_dir}: no such site folder",
            fix=f"create one with: telecentre-ctl init {site_dir}",
        )
    catalog = load_catalog()
    problems: list[Problem] = []
    for required in ("site.yml", "hosts.yml"):
        if not (site_dir / required).is_file():
            fix = (
                "telecentre-ctl init SITE_DIR writes it"
                if required == "site.yml"
                else "write an Ansible inventory with group telecentre, or run: "
                f"telecentre-ctl lab up {site_dir}"
            )
            problems.append(Problem(required, "", "missing", fix))
    site_raw = _load_yaml_file(site_dir / "site.yml", "site.yml", problems)
    hosts_raw = _load_yaml_file(site_dir / "hosts.yml", "hosts.yml", problems)
    values = _check_site_file(site_raw, catalog, problems, site_dir) if site_raw is not None else {}
    hosts = (
        _check_hosts(hosts_raw, site_dir, values.get("services", {}), problems)
        if hosts_raw is not None
        else []
    )
    complete = all(
        k in values for k in ("name", "title", "admin_email", "profile", "backup", "tls", "locale")
    )
    if problems or not complete or not hosts:
        raise InvalidInput(f"site {site_dir} is invalid", problems=problems)
    site = Site(
        dir=site_dir,
        name=values["name"],
        title=values["title"],
        locale=values["locale"],
        domain=values.get("domain"),
        tls=values["tls"],
        admin_email=values["admin_email"],
        admins=tuple(values["admins"]),
        profile=values["profile"],
        services=values["services"],
        backup=values["backup"],
        open_ports=tuple(values["open_ports"]),
        build_ca_bundle=values.get("build_ca_bundle"),
        hosts=tuple(hosts),
        catalog=catalog.for_profile(values["profile"]),
        smtp=values.get("smtp"),
        members=values.get("members"),
    )
    _check_placement(site, problems)
    if check_secrets:
        from telecentre_ctl.secrets import check_site_secrets

        problems += check_site_secrets(site)
    if problems:
        raise InvalidInput(f"site {site_dir} is invalid", problems=problems)
    return site


def load_many(site_dirs: tuple[Path, ...] | list[Path]) -> list[Site]:
    """Every site given, each folder once, all validated before anything connects; one
    InvalidInput lists the problems of every invalid site (and two folders of one name)."""
    sites: list[Site] = []
    problems: list[Problem] = []
    for site_dir in dict.fromkeys(Path(d).resolve() for d in site_dirs):
        try:
            sites.append(load_site(site_dir))
        except InvalidInput as err:
            problems += err.problems or [Problem(str(site_dir), "", err.message, err.fix)]
    names: dict[str, Path] = {}
    for site in sites:
        if site.name in names:
            problems.append(
                Problem(
                    str(site.dir / "site.yml"),
                    "name",
                    f"{site.name!r} is also the name of {names[site.name]}",
                    "give each telecentre its own name",
                )
            )
        names.setdefault(site.name, site.dir)
    if problems:
        raise InvalidInput("nothing was run: a site is invalid", problems=problems)
    return sites
