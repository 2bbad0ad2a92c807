"""What each host should run, computed from plain data: the catalogue and site.yml.

These functions take the same dictionaries Ansible receives (tc_catalog, tc_site) so the
roles (through the filter plugin) and `plan` (through the same templates) agree by
construction. Templates only substitute what these return.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

OPT_DIR = "/opt/telecentre"  # compose projects and rendered configuration
DATA_DIR = "/srv/telecentre"  # service data, one folder per volume: what backups read
PROXY_NETWORK = "telecentre"
PROXY_SUBNET = "172.31.240.0/24"
DATA_NETWORK = "telecentre_data"  # internal: databases are never reachable from outside
# Root certificate of the proxy's internal CA (LAN sites), in its data volume.
SITE_CA_SOURCE = f"{DATA_DIR}/proxy/data/pki/authorities/local/root.crt"
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # Debian's bundle of public CAs
START_INTERVAL = "2s"  # healthchecks while a service starts
LOG_DRIVER = "local"  # compressed, rotated; the docker role makes it the engine's default too
LOG_OPTIONS = {"max-size": "10m", "max-file": "3"}
PLACEHOLDER_RE = re.compile(r"\{([a-z_]+)(?::([a-z0-9_-]+))?\}")
PLACEHOLDERS = {
    "host",
    "url",
    "host_of",
    "url_of",
    "db_host",
    "db_name",
    "db_user",
    "redis_host",
    "proxy_network",
    "title",
    "locale",
    "admin_email",
    "base_domain",
    "site_ca",
    *(f"smtp_{key}" for key in ("host", "port", "security", "ssl", "username")),
    *(f"smtp_from{part}" for part in ("", "_local", "_domain")),
    "option",
    "directory_base",
    "directory_uri",
    "directory_auth",
    "member_quotas",
}
DATABASE_ENGINES = ("postgres", "mariadb")
# Secrets an admin gives (never generated), and whether a site has them.
PROVIDED_SECRETS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "smtp.password": lambda site: bool((site.get("smtp") or {}).get("username")),
}
# The members' directory (services/directory): where services find it on their host.
DIRECTORY = "directory"
DIRECTORY_BASE = "dc=telecentre"
DIRECTORY_URI = "ldap://directory:3389"
DIRECTORY_AUTH = "http://directory:8080/auth"
JOB_PREFIX = "tc-job"  # systemd units of the catalogue's timers: tc-job-<service>-<timer>
DEFAULT_JOB_TIMEOUT = "30m"


def subdomain(name: str, site: dict[str, Any], catalog: dict[str, Any]) -> str:
    option = (site.get("services", {}).get(name) or {}).get("subdomain")
    return str(option or catalog[name]["route"]["subdomain"])


def fqdn(name: str, site: dict[str, Any], catalog: dict[str, Any]) -> str:
    return f"{subdomain(name, site, catalog)}.{site['base_domain']}"


def database_of(entry: dict[str, Any]) -> str | None:
    return next((d for d in entry.get("depends", []) if d in DATABASE_ENGINES), None)


def db_identifier(name: str) -> str:
    """Database and user name of a consumer: SQL-safe form of the service name."""
    return "tc_" + name.replace("-", "_")


def smtp_value(key: str, site: dict[str, Any]) -> str:
    """One field of the site's SMTP relay ('' when the site has none)."""
    smtp = site.get("smtp") or {}
    if not smtp:
        return ""
    sender = str(smtp.get("from") or site["admin_email"])
    values = {
        "host": smtp["host"],
        "port": smtp.get("port", ""),
        "security": smtp.get("security", "starttls"),
        # Nextcloud's word for implicit TLS; empty for STARTTLS or none
        "ssl": "ssl" if smtp.get("security") == "force_tls" else "",
        "username": smtp.get("username", ""),
        "from": sender,
        "from_local": sender.rpartition("@")[0],
        "from_domain": sender.rpartition("@")[2],
    }
    return str(values[key])


def option_value(name: str, option: str, site: dict[str, Any], catalog: dict[str, Any]) -> str:
    """A site option of a service as one env value, the catalogue's default when site.yml
    says nothing: text and numbers as they are, lists and mappings as JSON."""
    schema = catalog[name].get("options", {})
    if option not in schema:
        raise ValueError(f"{name}: {{option:{option}}} names no option of its catalogue entry")
    given = (site.get("services", {}).get(name) or {}).get(option)
    value = schema[option].get("default") if given is None else given
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return "" if value is None else str(value)


def fill(value: Any, name: str, site: dict[str, Any], catalog: dict[str, Any]) -> Any:
    """Replace {placeholders} in one env value. Unknown placeholders raise ValueError."""
    if not isinstance(value, str):
        return value
    entry = catalog[name]

    def one(match: re.Match[str]) -> str:
        key, arg = match.group(1), match.group(2)
        if key == "host":
            return fqdn(name, site, catalog)
        if key == "url":
            return f"https://{fqdn(name, site, catalog)}"
        if key == "host_of" and arg in catalog and "route" in catalog[arg]:
            return fqdn(arg, site, catalog)
        if key == "url_of" and arg in catalog and "route" in catalog[arg]:
            enabled = arg in (site.get("services") or {})
            return f"https://{fqdn(arg, site, catalog)}" if enabled else ""
        if key.startswith("smtp_") and key in PLACEHOLDERS:
            return smtp_value(key[len("smtp_") :], site)
        if key == "site_ca" and "site_ca" in entry:
            return str(entry["site_ca"]["path"]) if site.get("tls") == "internal" else ""
        if key == "db_host" and database_of(entry):
            return str(database_of(entry))
        if key in ("db_name", "db_user"):
            return db_identifier(name)
        if key == "redis_host":
            return "redis"
        if key == "proxy_network":
            return PROXY_SUBNET
        if key in ("title", "locale", "admin_email", "base_domain"):
            return str(site[key])
        if key == "option" and arg:
            return option_value(name, arg, site, catalog)
        if key.startswith("directory_") or key == "member_quotas":
            return directory_value(key, entry, site)
        raise ValueError(f"{name}: unknown placeholder {match.group(0)} in env")

    return PLACEHOLDER_RE.sub(one, value)


def directory_value(key: str, entry: dict[str, Any], site: dict[str, Any]) -> str:
    """How a service finds the members' directory ('' when the site runs none, so the
    variable is left out and the service keeps its own accounts)."""
    if not runs_directory(site):
        return ""
    if key == "directory_auth":
        groups = (entry.get("members") or {}).get("groups", [])
        query = "&".join(f"group={g}" for g in groups)
        return DIRECTORY_AUTH + (f"?{query}" if query else "")
    values = {
        "directory_base": DIRECTORY_BASE,
        "directory_uri": DIRECTORY_URI,
        "member_quotas": member_quotas(site),
    }
    return values[key]


def memory_mb(name: str, site: dict[str, Any], catalog: dict[str, Any]) -> int:
    option = (site.get("services", {}).get(name) or {}).get("memory_mb")
    return int(option or catalog[name]["memory_mb"])


def environment(name: str, site: dict[str, Any], catalog: dict[str, Any]) -> dict[str, str]:
    """The non-secret environment of a service. A value made only of placeholders that
    fill to nothing (an SMTP relay the site has not, a service it does not run) is left
    out, so the image sees the variable unset rather than empty."""
    env = {}
    for key, value in catalog[name].get("env", {}).items():
        filled = str(fill(value, name, site, catalog))
        if filled or not (isinstance(value, str) and PLACEHOLDER_RE.search(value)):
            env[key] = filled
    return env


def secret_given(spec: dict[str, Any], site: dict[str, Any], catalog: dict[str, Any]) -> bool:
    """Whether a secret of an entry exists on this site: generated ones always do; one
    the site's admin provides (smtp.password) only when the site uses it; one shared with
    an app (the directory's) only when the site runs that app."""
    source = spec.get("same_as")
    if source in PROVIDED_SECRETS:
        return PROVIDED_SECRETS[source](site)
    owner = str(source or "").partition(".")[0]
    if owner in catalog and catalog[owner]["kind"] == "app":
        return owner in (site.get("services") or {})
    return True


def partners(entry: dict[str, Any]) -> list[str]:
    """Apps an entry must share a host with when both run: its colocated_with, and the
    members' directory for an app that logs members in against it."""
    return [*entry.get("colocated_with", []), *([DIRECTORY] if "members" in entry else [])]


def runs_directory(site: dict[str, Any]) -> bool:
    return DIRECTORY in (site.get("services") or {})


def member_quotas(site: dict[str, Any]) -> str:
    """The members' plans as the file service reads them: plan=MiB,plan=MiB (sorted)."""
    plans = (site.get("members") or {}).get("plans") or {}
    return ",".join(
        f"{name}={round(float(p['quota_gb']) * 1024)}" for name, p in sorted(plans.items())
    )


def secret_source(name: str, secret: str, spec: dict[str, Any]) -> tuple[str, str]:
    """(service, secret) of tc_secrets holding the value: its own, or the one it shares."""
    owner, _, other = str(spec.get("same_as", f"{name}.{secret}")).partition(".")
    return owner, other


def _secrets(name: str, site: dict[str, Any], catalog: dict[str, Any]) -> dict[str, Any]:
    specs = catalog[name].get("secrets", {})
    return {s: spec for s, spec in specs.items() if secret_given(spec, site, catalog)}


def secret_env(name: str, site: dict[str, Any], catalog: dict[str, Any]) -> list[str]:
    """Secrets the image only accepts as environment variables (they go to a 0600 env file)."""
    return [s for s, spec in _secrets(name, site, catalog).items() if "env" in spec]


def env_file_lines(
    name: str, site: dict[str, Any], catalog: dict[str, Any], values: dict[str, dict[str, str]]
) -> list[str]:
    """Lines of the 0600 env file; `values` is the whole tc_secrets."""
    specs = catalog[name].get("secrets", {})
    lines = []
    for secret in secret_env(name, site, catalog):
        owner, key = secret_source(name, secret, specs[secret])
        lines.append(f"{specs[secret]['env']}={values[owner][key]}")
    return lines


def image_ref(entry: dict[str, Any]) -> str:
    """The image a service runs: the tag of its local build, or its pinned upstream image."""
    return str(entry["build"]["tag"] if "build" in entry else entry["image"])


def recipe_dir(name: str, catalog: dict[str, Any]) -> str:
    """Folder of a service's build recipe on the controller ('' for pulled images)."""
    from telecentre_ctl.paths import SERVICES_DIR

    build = catalog[name].get("build")
    return str(SERVICES_DIR / name / build["context"]) if build else ""


def recipe_digest(folder: Path | str, base: str = "") -> str:
    """SHA-256 of a build recipe (every file's relative path, executable bit and content)
    and of the base image it builds on. Meant as the label org.telecentre.recipe of the
    images the service role builds: an image already there (loaded from a bundle, or built
    before) from the same recipe is not built again."""
    if not str(folder):
        return ""  # a pulled image has no recipe
    digest = hashlib.sha256(f"base {base}\n".encode())
    root = Path(folder)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        mode = "x" if path.stat().st_mode & 0o111 else "-"
        digest.update(f"{path.relative_to(root).as_posix()} {mode}\n".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return "sha256:" + digest.hexdigest()


def literal(value: str) -> str:
    """A catalogue string as Compose must see it to pass it on unchanged: Compose would
    otherwise read $NAME and $(...) as its own variables."""
    return value.replace("$", "$$")


def compose_project(
    name: str,
    site: dict[str, Any],
    catalog: dict[str, Any],
    host_services: list[str] | None = None,
) -> dict[str, Any]:
    """The compose document for one service on a host (`host_services`: what the host
    runs, which the proxy's network aliases follow)."""
    entry = catalog[name]
    project_dir = f"{OPT_DIR}/{name}"
    service: dict[str, Any] = {
        "image": image_ref(entry),
        "container_name": f"tc-{name}",
        "restart": "unless-stopped",
        "mem_limit": f"{memory_mb(name, site, catalog)}m",
        "logging": {"driver": LOG_DRIVER, "options": dict(LOG_OPTIONS)},
        "labels": {"org.telecentre.site": site["name"], "org.telecentre.service": name},
    }
    if entry.get("no_new_privileges", True):
        service["security_opt"] = ["no-new-privileges:true"]
    if "cap_add" in entry:
        service["cap_drop"] = ["ALL"]
        if entry["cap_add"]:
            service["cap_add"] = list(entry["cap_add"])
    if entry.get("read_only"):
        service["read_only"] = True
    for key in ("user", "tmpfs"):
        if key in entry:
            service[key] = list(entry[key]) if isinstance(entry[key], list) else entry[key]
    if "command" in entry:
        service["command"] = [literal(word) for word in entry["command"]]

    env = environment(name, site, catalog)
    secrets = _secrets(name, site, catalog)
    file_secrets = sorted(s for s, spec in secrets.items() if "env" not in spec)
    for secret in file_secrets:
        if "file_env" in secrets[secret]:
            env[secrets[secret]["file_env"]] = f"/run/secrets/{secret}"
    if env:
        service["environment"] = {k: literal(v) for k, v in sorted(env.items())}
    if secret_env(name, site, catalog):
        service["env_file"] = [f"{project_dir}/secrets.env"]
    if file_secrets:
        service["secrets"] = file_secrets

    volumes = [f"{DATA_DIR}/{name}/{vol}:{path}" for vol, path in entry.get("volumes", {}).items()]
    volumes += [f"{OPT_DIR}/{src}:{dst}:ro" for src, dst in entry.get("config_mounts", {}).items()]
    volumes += [
        f"{project_dir}/files/{src}:{dst}:ro" for src, dst in entry.get("files", {}).items()
    ]
    if "site_ca" in entry and site.get("tls") == "internal":
        volumes.append(f"{site_ca_file(name)}:{entry['site_ca']['path']}:ro")
    if volumes:
        service["volumes"] = volumes
    ports = [
        f"{p['port']}:{p['port']}/{p.get('protocol', 'tcp')}" for p in entry.get("publish", [])
    ]
    if ports:
        service["ports"] = ports
    if "healthcheck" in entry:
        check = dict(entry["healthcheck"])
        check["test"] = [literal(word) for word in check["test"]]
        if "start_period" in check:
            # Checked every few seconds while it starts (Docker 25+), not once per interval:
            # `up --wait` (deploys, restores, upgrades) returns as soon as it is healthy.
            check.setdefault("start_interval", START_INTERVAL)
        service["healthcheck"] = check

    uses_data = entry["kind"] == "dependency" or bool(entry.get("depends"))
    networks = ([PROXY_NETWORK] if entry["kind"] != "dependency" else []) + (
        [DATA_NETWORK] if uses_data else []
    )
    aliases = route_aliases(name, host_services or [], site, catalog)
    if aliases:
        service["networks"] = {n: ({"aliases": aliases} if n == PROXY_NETWORK else None)
                               for n in networks}  # fmt: skip
    else:
        service["networks"] = networks
    doc: dict[str, Any] = {
        "name": f"tc-{name}",
        "services": {name: service},
        "networks": {n: {"external": True, "name": n} for n in networks},
    }
    if file_secrets:
        doc["secrets"] = {s: {"file": f"{project_dir}/secrets/{s}"} for s in file_secrets}
    return doc


def layout() -> dict[str, str]:
    """Where things live on a host and how containers meet: given to the roles as tc_layout."""
    from telecentre_ctl.paths import SERVICES_DIR

    return {
        "opt_dir": OPT_DIR,
        "data_dir": DATA_DIR,
        "proxy_network": PROXY_NETWORK,
        "proxy_subnet": PROXY_SUBNET,
        "data_network": DATA_NETWORK,
        "services_dir": str(SERVICES_DIR),
        "site_ca": SITE_CA_SOURCE,
        "host_ca_bundle": HOST_CA_BUNDLE,
    }


def volume_dirs(name: str, catalog: dict[str, Any]) -> list[dict[str, Any]]:
    """Host folders of a service's data volumes, [{path, uid, gid}]: created once, with
    the owner its entry gives (root otherwise); the service owns them after."""
    owners = catalog[name].get("volume_owners", {})
    found = []
    for vol in catalog[name].get("volumes", {}):
        uid, _, gid = str(owners.get(vol, "0:0")).partition(":")
        found.append({"path": f"{DATA_DIR}/{name}/{vol}", "uid": int(uid), "gid": int(gid)})
    return found


def secret_files(name: str, site: dict[str, Any], catalog: dict[str, Any]) -> list[dict[str, Any]]:
    """Secrets given to the container as files, written with mode 0600:
    [{name, path, uid, source: [service, secret] of tc_secrets holding the value}]."""
    specs = _secrets(name, site, catalog)
    return [
        {
            "name": s,
            "path": f"{OPT_DIR}/{name}/secrets/{s}",
            "uid": specs[s].get("uid", 0),
            "source": list(secret_source(name, s, specs[s])),
        }
        for s in sorted(specs)
        if "env" not in specs[s]
    ]


def provided_secrets(site: dict[str, Any]) -> list[tuple[str, str]]:
    """(owner, secret) the site's admin must put in the vault (never generated)."""
    return [
        (key.partition(".")[0], key.partition(".")[2])
        for key, present in PROVIDED_SECRETS.items()
        if present(site)
    ]


def site_ca_file(name: str) -> str:
    """Where the role puts the site's CA (or the bundle with it) for a service."""
    return f"{OPT_DIR}/{name}/site-ca.crt"


def needs_site_ca(name: str, site: dict[str, Any], catalog: dict[str, Any]) -> bool:
    return "site_ca" in catalog[name] and site.get("tls") == "internal"


def shipped_files(name: str, catalog: dict[str, Any]) -> list[dict[str, str]]:
    """Files of the catalogue folder a service mounts: [{src (relative), dest (on host)}]."""
    return [
        {"src": src, "dest": f"{OPT_DIR}/{name}/files/{src}"}
        for src in sorted(catalog[name].get("files", {}))
    ]


def route_aliases(
    name: str, host_services: list[str], site: dict[str, Any], catalog: dict[str, Any]
) -> list[str]:
    """Public names the service answers to on the proxy network: for the proxy, those of
    every route on its host (so a container calling another's public name reaches this
    host's proxy directly, without going out to the router and back)."""
    if not catalog[name].get("route_aliases"):
        return []
    return sorted(r["host"] for r in proxy_routes(host_services, site, catalog))


def start_order(
    host_services: list[str], site: dict[str, Any], catalog: dict[str, Any]
) -> list[str]:
    """The order the role starts a host's services in: placement order, except that the
    members' directory comes before the apps that log members in against it, and those
    which trust the site's CA (LAN sites) come after the proxy that makes it."""
    late = [s for s in host_services if needs_site_ca(s, site, catalog)]
    early = [s for s in host_services if catalog[s]["kind"] == "dependency" or s == DIRECTORY]
    return early + [s for s in host_services if s not in late and s not in early] + late


def _seconds(duration: str) -> int:
    number, unit = int(duration[:-1]), duration[-1]
    return number * {"s": 1, "m": 60, "h": 3600}[unit]


def health_wait(name: str, catalog: dict[str, Any], floor: int) -> int:
    """Seconds `up --wait` gives a service to become healthy: at least `floor`, and enough
    for its healthcheck's start period and every retry (a first install on a small box
    can take many minutes)."""
    check = catalog[name].get("healthcheck")
    if not check:
        return int(floor)
    interval = _seconds(check.get("interval", "30s"))
    tries = int(check.get("retries", 3)) + 1
    budget = _seconds(check.get("start_period", "0s")) + tries * (
        interval + _seconds(check.get("timeout", "30s"))
    )
    return max(int(floor), budget)


def timer_calendar(every: str) -> str:
    """systemd OnCalendar for 'every 5m' (minutes dividing an hour) or '6h' (hours dividing
    a day). ValueError for other periods, which would drift across the hour or day."""
    number, unit = int(every[:-1]), every[-1]
    if unit == "m" and 0 < number < 60 and 60 % number == 0:
        return f"*-*-* *:00/{number}:00"
    if unit == "h" and 0 < number <= 24 and 24 % number == 0:
        return f"*-*-* 00/{number}:00:00"
    raise ValueError(f"every: {every!r} must be minutes dividing an hour or hours dividing a day")


def systemd_quote(argv: list[str]) -> str:
    """A command line for ExecStart=, each word reaching the program as written: systemd's
    own expansions ($VAR, %specifiers) escaped, and words with blanks, quotes or
    backslashes double-quoted."""
    words = []
    for word in argv:
        escaped = word.replace("%", "%%").replace("$", "$$")
        if not word or any(c.isspace() or c in "\"'\\;" for c in word):
            escaped = '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'
        words.append(escaped)
    return " ".join(words)


def timers(host_services: list[str], catalog: dict[str, Any]) -> list[dict[str, str]]:
    """The systemd jobs of a host: one service and timer unit pair per catalogue timer,
    [{unit, service, description, on_calendar, timeout, exec}]."""
    jobs = []
    for name in host_services:
        for timer in catalog[name].get("timers", []):
            user = ["--user", timer["user"]] if "user" in timer else []
            argv = ["/usr/bin/docker", "exec", *user, f"tc-{name}", *timer["command"]]
            jobs.append(
                {
                    "unit": f"{JOB_PREFIX}-{name}-{timer['name']}",
                    "service": name,
                    "description": f"{name}: {timer['name']} (every {timer['every']})",
                    "on_calendar": timer_calendar(timer["every"]),
                    "timeout": timer.get("timeout", DEFAULT_JOB_TIMEOUT),
                    "exec": systemd_quote(argv),
                }
            )
    return jobs


def obsolete_jobs(unit_files: list[str], jobs: list[dict[str, str]]) -> list[str]:
    """Job units installed on the host (paths of their .timer files) no longer wanted."""
    wanted = {job["unit"] for job in jobs}
    installed = {path.rsplit("/", 1)[-1].removesuffix(".timer") for path in unit_files}
    return sorted(u for u in installed - wanted if u.startswith(f"{JOB_PREFIX}-"))


def database_commands(name: str, catalog: dict[str, Any]) -> dict[str, str]:
    """Shell commands run on the host to check for and create a consumer's database."""
    import shlex

    user = db_identifier(name)
    if database_of(catalog[name]) == "postgres":
        query = f"SELECT 1 FROM pg_roles WHERE rolname='{user}'"
        return {
            "check": f"docker exec tc-postgres psql -U postgres -tAc {shlex.quote(query)}",
            "create": "docker exec -i tc-postgres psql -U postgres -v ON_ERROR_STOP=1",
        }
    # The root password stays inside the container: read from its secret file there.
    client = 'mariadb -uroot -p"$(cat /run/secrets/root_password)"'
    query = f"SELECT 1 FROM mysql.user WHERE user='{user}'"
    return {
        "check": "docker exec tc-mariadb sh -c "
        + shlex.quote(f"{client} -sNe {shlex.quote(query)}"),
        "create": f"docker exec -i tc-mariadb sh -c {shlex.quote(client)}",
    }


def database_sql(name: str, catalog: dict[str, Any], password: str) -> str:
    """SQL creating a consumer's user and database, owned by that user."""
    user = db_identifier(name)
    quoted = password.replace("'", "''")
    if database_of(catalog[name]) == "postgres":
        return (
            f"CREATE ROLE {user} LOGIN PASSWORD '{quoted}';\n"
            f"CREATE DATABASE {user} OWNER {user} ENCODING 'UTF8';\n"
        )
    return (
        f"CREATE DATABASE IF NOT EXISTS {user} CHARACTER SET utf8mb4;\n"
        f"CREATE USER IF NOT EXISTS '{user}'@'%' IDENTIFIED BY '{quoted}';\n"
        f"GRANT ALL PRIVILEGES ON {user}.* TO '{user}'@'%';\n"
    )


def obsolete_services(compose_files: list[str], host_services: list[str]) -> list[str]:
    """Services with a compose project on the host (paths of their compose.yml) that the
    host should no longer run."""
    installed = {path.rstrip("/").split("/")[-2] for path in compose_files}
    return sorted(installed - set(host_services))


def leftover_services(
    compose_files: list[str],
    data_dirs: list[str],
    host_services: list[str],
    placement: dict[str, list[str]],
    catalog: dict[str, Any],
) -> dict[str, Any]:
    """What a host keeps of services it no longer runs: their compose projects (paths of
    compose.yml) and their data folders (DATA_DIR/<service>, maybe left by an earlier
    deploy without --purge). `placement` is the whole site's (host -> services):
      removed: [services no host of the site runs any more]; --purge deletes their data;
      moved:   {service: [hosts that run it now]}; its data here is never purged (it may
               be the only copy: moving or deleting it is for the volunteer).
    Only folders named after catalogue entries count: nothing else in DATA_DIR is touched."""
    found = set(obsolete_services(compose_files, host_services))
    found |= {p.rstrip("/").split("/")[-1] for p in data_dirs} & set(catalog)
    found -= set(host_services)
    runs = {name: sorted(h for h, placed in placement.items() if name in placed) for name in found}
    return {
        "removed": sorted(n for n in found if not runs[n]),
        "moved": {n: runs[n] for n in sorted(found) if runs[n]},
    }


def proxy_routes(
    host_services: list[str], site: dict[str, Any], catalog: dict[str, Any]
) -> list[dict[str, Any]]:
    """One route per app on the host: its public name and the upstream inside Docker."""
    routes = []
    for name in host_services:
        entry = catalog[name]
        if entry["kind"] != "app" or "route" not in entry:
            continue
        routes.append(
            {
                "service": name,
                "host": fqdn(name, site, catalog),
                "upstream": f"{name}:{entry['port']}",
                "max_body_mb": entry["route"].get("max_body_mb", 100),
            }
        )
    return routes


def login_text(entry: dict[str, Any], site: dict[str, Any]) -> str:
    """How co-workers log in to a service, in the site's locale: with their member login
    where the site runs the directory and the service uses it."""
    members = entry.get("members") if runs_directory(site) else None
    return str((members or entry)["login"][site["locale"]])


def portal_entries(site: dict[str, Any], catalog: dict[str, Any]) -> list[dict[str, Any]]:
    """What the portal lists: every enabled app, in the site's locale."""
    locale = site["locale"]
    return [
        {
            "service": name,
            "title": catalog[name]["title"][locale],
            "description": catalog[name]["description"][locale],
            "login": login_text(catalog[name], site),
            "url": f"https://{fqdn(name, site, catalog)}/",
        }
        for name in sorted(site.get("services", {}))
    ]
