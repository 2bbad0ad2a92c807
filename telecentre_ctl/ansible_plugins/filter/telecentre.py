"""Filters shared by the roles and `telecentre-ctl plan`: the logic templates must not hold."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml

from telecentre_ctl import compose, upgrade, yamlio


def to_compose_yaml(document: dict[str, Any]) -> str:
    """Stable YAML for rendered files: same input, same bytes (so roles report no change)."""
    # Ansible hands over its own (tagged) str and dict subclasses, which yaml cannot dump.
    document = yamlio.plain(document)
    return yaml.safe_dump(
        document, sort_keys=False, default_flow_style=False, width=1000, allow_unicode=True
    )


def deploy_refusals(
    running: dict[str, Any], host_services: list[str], catalog: dict[str, Any], site_dir: str
) -> list[dict[str, str]]:
    """The services deploy must not move to another version on this host (upgrade.py)."""
    return [r.as_data() for r in upgrade.deploy_refusals(running, host_services, catalog, site_dir)]


class FilterModule:
    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "tc_compose": compose.compose_project,
            "tc_proxy_routes": compose.proxy_routes,
            "tc_portal_entries": compose.portal_entries,
            "tc_env_file_lines": compose.env_file_lines,
            "tc_fqdn": compose.fqdn,
            "tc_image_ref": compose.image_ref,
            "tc_recipe_dir": compose.recipe_dir,
            "tc_recipe_digest": compose.recipe_digest,
            "tc_db_identifier": compose.db_identifier,
            "tc_database_of": compose.database_of,
            "tc_obsolete_services": compose.obsolete_services,
            "tc_leftover_services": compose.leftover_services,
            "tc_volume_dirs": compose.volume_dirs,
            "tc_secret_files": compose.secret_files,
            "tc_secret_env": compose.secret_env,
            "tc_database_commands": compose.database_commands,
            "tc_database_sql": compose.database_sql,
            "tc_start_order": compose.start_order,
            "tc_health_wait": compose.health_wait,
            "tc_needs_site_ca": compose.needs_site_ca,
            "tc_site_ca_file": compose.site_ca_file,
            "tc_shipped_files": compose.shipped_files,
            "tc_timers": compose.timers,
            "tc_obsolete_jobs": compose.obsolete_jobs,
            "tc_to_yaml": to_compose_yaml,
            "tc_pin_versions": upgrade.pinned_catalog,
            "tc_deploy_refusals": deploy_refusals,
            "tc_deploy_refused_message": upgrade.deploy_refused_message,
        }
