"""What each host should run, computed from plain data: the catalogue and site.yml.

These functions take the same dictionaries Ansible receives (tc_catalog, tc_site) so the
roles (through the filter plugin) and `plan` (through the same templates) agree by
construction. Templates only substitute what these return.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

OPT_DIR = "/opt/telecentre"  # compose projects and rendered configuration
DATA_DIR = "/srv/telecentre"  # service data, one folder per volume: what backups read
PROXY_NETWORK = "telecentre"
PROXY_SUBNET = "172.31.240.0/24"
DATA_NETWORK = "telecentre_data"  # internal: databases are never reachable from outside
LOG_DRIVER = "local"  # compressed, rotated; the docker role makes it the engine's default too
LOG_OPTIONS = {"max-size": "10m", "max-file": "3"}
PLACEHOLDER_RE = re.compile(r"\{([a-z_]+)(?::([a-z0-9-]+))?\}")
PLACEHOLDERS = {
    "host",
    "url",
    "host_of",
    "db_host",
    "db_name",
    "db_user",
    "redis_host",
    "proxy_network",
    "title",
    "locale",
    "admin_email",
    "base_domain",
}
DATABASE_ENGINES = ("postgres", "mariadb")


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
        raise ValueError(f"{name}: unknown placeholder {match.group(0)} in env")

    return PLACEHOLDER_RE.sub(one, value)


def memory_mb(name: str, site: dict[str, Any], catalog: dict[str, Any]) -> int:
    option = (site.get("services", {}).get(name) or {}).get("memory_mb")
    return int(option or catalog[name]["memory_mb"])


def secret_env(name: str, catalog: dict[str, Any]) -> list[str]:
    """Secrets the image only accepts as environment variables (they go to a 0600 env file)."""
    return [s for s, spec in catalog[name].get("secrets", {}).items() if "env" in spec]


def env_file_lines(name: str, catalog: dict[str, Any], values: dict[str, str]) -> list[str]:
    specs = catalog[name].get("secrets", {})
    return [f"{specs[s]['env']}={values[s]}" for s in secret_env(name, catalog)]


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


def compose_project(name: str, site: dict[str, Any], catalog: dict[str, Any]) -> dict[str, Any]:
    """The compose document for one service on a host."""
    entry = catalog[name]
    project_dir = f"{OPT_DIR}/{name}"
    service: dict[str, Any] = {
        "image": image_ref(entry),
        "container_name": f"tc-{name}",
        "restart": "unless-stopped",
        "mem_limit": f"{memory_mb(name, site, catalog)}m",
        "security_opt": ["no-new-privileges:true"],
        "logging": {"driver": LOG_DRIVER, "options": dict(LOG_OPTIONS)},
        "labels": {"org.telecentre.site": site["name"], "org.telecentre.service": name},
    }
    if "cap_add" in entry:
        service["cap_drop"] = ["ALL"]
        if entry["cap_add"]:
            service["cap_add"] = list(entry["cap_add"])
    if entry.get("read_only"):
        service["read_only"] = True
    for key in ("user", "command", "tmpfs"):
        if key in entry:
            service[key] = list(entry[key]) if isinstance(entry[key], list) else entry[key]

    env = {k: str(fill(v, name, site, catalog)) for k, v in entry.get("env", {}).items()}
    secrets = entry.get("secrets", {})
    file_secrets = sorted(s for s, spec in secrets.items() if "env" not in spec)
    for secret in file_secrets:
        if "file_env" in secrets[secret]:
            env[secrets[secret]["file_env"]] = f"/run/secrets/{secret}"
    if env:
        service["environment"] = dict(sorted(env.items()))
    if secret_env(name, catalog):
        service["env_file"] = [f"{project_dir}/secrets.env"]
    if file_secrets:
        service["secrets"] = file_secrets

    volumes = [f"{DATA_DIR}/{name}/{vol}:{path}" for vol, path in entry.get("volumes", {}).items()]
    volumes += [f"{OPT_DIR}/{src}:{dst}:ro" for src, dst in entry.get("config_mounts", {}).items()]
    if volumes:
        service["volumes"] = volumes
    ports = [
        f"{p['port']}:{p['port']}/{p.get('protocol', 'tcp')}" for p in entry.get("publish", [])
    ]
    if ports:
        service["ports"] = ports
    if "healthcheck" in entry:
        service["healthcheck"] = dict(entry["healthcheck"])

    uses_data = entry["kind"] == "dependency" or bool(entry.get("depends"))
    networks = ([PROXY_NETWORK] if entry["kind"] != "dependency" else []) + (
        [DATA_NETWORK] if uses_data else []
    )
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
    }


def volume_dirs(name: str, catalog: dict[str, Any]) -> list[str]:
    """Host folders of a service's data volumes (created once; the service owns them after)."""
    return [f"{DATA_DIR}/{name}/{vol}" for vol in catalog[name].get("volumes", {})]


def secret_files(name: str, catalog: dict[str, Any]) -> list[dict[str, Any]]:
    """Secrets given to the container as files: [{name, path, uid}], written with mode 0600."""
    specs = catalog[name].get("secrets", {})
    return [
        {"name": s, "path": f"{OPT_DIR}/{name}/secrets/{s}", "uid": specs[s].get("uid", 0)}
        for s in sorted(specs)
        if "env" not in specs[s]
    ]


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


def portal_entries(site: dict[str, Any], catalog: dict[str, Any]) -> list[dict[str, Any]]:
    """What the portal lists: every enabled app, in the site's locale."""
    locale = site["locale"]
    return [
        {
            "service": name,
            "title": catalog[name]["title"][locale],
            "description": catalog[name]["description"][locale],
            "login": catalog[name]["login"][locale],
            "url": f"https://{fqdn(name, site, catalog)}/",
        }
        for name in sorted(site.get("services", {}))
    ]
