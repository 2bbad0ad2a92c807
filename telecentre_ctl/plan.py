"""The desired state of each host, rendered locally with the roles' own templates.

Nothing here connects anywhere: `plan` shows what `deploy` would put on each host (compose
files, proxy configuration, portal page) and what it costs (RAM, downloads, open ports).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from telecentre_ctl.compose import OPT_DIR, timers
from telecentre_ctl.paths import ROLES_DIR
from telecentre_ctl.site import Site, ram_budget

# Rendered file (path on the host) -> (role, template). Per-service files are added below.
SHARED_FILES = {
    f"{OPT_DIR}/proxy/caddy/Caddyfile": ("proxy", "Caddyfile.j2"),
    f"{OPT_DIR}/portal/index.html": ("portal", "index.html.j2"),
}


@dataclass
class HostPlan:
    name: str
    address: str
    services: list[str]
    files: dict[str, str] = field(repr=False)
    need_mb: float
    have_mb: float
    headroom: float
    download_mb: int
    unknown_downloads: list[str]
    local_builds: list[str]
    open_ports: list[dict[str, Any]]


@dataclass
class Plan:
    site: Site
    hosts: list[HostPlan]

    def urls(self) -> dict[str, str]:
        return {"portal": self.site.portal_url} | {s: self.site.url(s) for s in self.site.services}

    def as_json(self) -> dict[str, Any]:
        return {
            "site": self.site.name,
            "profile": self.site.profile,
            "tls": self.site.tls,
            "urls": self.urls(),
            "hosts": [
                {
                    "name": h.name,
                    "address": h.address,
                    "services": h.services,
                    "ram": {
                        "need_mb": h.need_mb,
                        "have_mb": h.have_mb,
                        "headroom": round(h.headroom, 3),
                    },
                    "download_mb": h.download_mb,
                    "download_unknown": h.unknown_downloads,
                    "built_locally": h.local_builds,
                    "open_ports": h.open_ports,
                    "files": sorted(h.files),
                }
                for h in self.hosts
            ],
        }


def template_environment() -> Any:
    """Jinja set up like Ansible's template module, with the project's filters."""
    import jinja2

    from telecentre_ctl.ansible_plugins.filter.telecentre import FilterModule

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(ROLES_DIR)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters.update(FilterModule().filters())
    return env


def render_host(site: Site, host: str, services: list[str]) -> dict[str, str]:
    env = template_environment()
    variables = {
        "tc_site": site.as_data(),
        "tc_catalog": site.catalog.as_data(),
        "tc_host_services": services,
        "inventory_hostname": host,
    }
    files: dict[str, str] = {}
    for service in services:
        template = env.get_template("service/templates/compose.yml.j2")
        files[f"{OPT_DIR}/{service}/compose.yml"] = template.render(variables, service_name=service)
    for target, (role, name) in SHARED_FILES.items():
        files[target] = env.get_template(f"{role}/templates/{name}").render(variables)
    for job in timers(services, site.catalog.as_data()):
        for kind in ("service", "timer"):
            template = env.get_template(f"service/templates/etc/systemd/system/tc-job.{kind}.j2")
            files[f"/etc/systemd/system/{job['unit']}.{kind}"] = template.render(
                variables, service_job=[job, kind]
            )
    return files


def make_plan(site: Site) -> Plan:
    budget = ram_budget(site)
    hosts = []
    for host in site.hosts:
        services = site.services_on(host.name)
        entries = [site.catalog[s] for s in services]
        hosts.append(
            HostPlan(
                name=host.name,
                address=host.address,
                services=services,
                files=render_host(site, host.name, services),
                need_mb=budget[host.name]["need_mb"],
                have_mb=budget[host.name]["have_mb"],
                headroom=budget[host.name]["headroom"],
                download_mb=sum(e.download_mb or 0 for e in entries if not e.built_locally),
                unknown_downloads=[
                    e.name for e in entries if not e.built_locally and e.download_mb is None
                ],
                local_builds=[e.name for e in entries if e.built_locally],
                open_ports=site.firewall_ports(host.name),
            )
        )
    return Plan(site=site, hosts=hosts)


def write_plan(plan: Plan, out_dir: Path) -> list[Path]:
    """Write each host's files under out_dir/<host>/<path on host>."""
    written = []
    for host in plan.hosts:
        for target, content in host.files.items():
            path = out_dir / host.name / target.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
            written.append(path)
    return written


def compose_command() -> list[str] | None:
    """`docker compose` (v2 plugin) or a standalone docker-compose v2, if installed."""
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False
        ).returncode
        == 0
    ):
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone:
        out = subprocess.run([standalone, "version"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and " v1." not in out.stdout and "version 1." not in out.stdout:
            return [standalone]
    return None


def check_compose_file(command: list[str], path: Path) -> str | None:
    """None if `docker compose config` accepts the file, else its complaint.

    Secret files and env files only exist on hosts, so the check runs with
    --no-interpolate against the file alone; a missing referenced file is not an error.
    """
    result = subprocess.run(
        [
            *command,
            "-f",
            str(path),
            "config",
            "--quiet",
            "--no-interpolate",
            "--no-path-resolution",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=path.parent,
    )
    if result.returncode == 0:
        return None
    return (result.stderr or result.stdout).strip()
