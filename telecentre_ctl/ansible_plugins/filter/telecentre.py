"""Filters shared by the roles and `telecentre-ctl plan`: the logic templates must not hold."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml

from telecentre_ctl import compose


def to_compose_yaml(document: dict[str, Any]) -> str:
    """Stable YAML for rendered files: same input, same bytes (so roles report no change)."""
    return yaml.safe_dump(
        document, sort_keys=False, default_flow_style=False, width=1000, allow_unicode=True
    )


class FilterModule:
    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "tc_compose": compose.compose_project,
            "tc_proxy_routes": compose.proxy_routes,
            "tc_portal_entries": compose.portal_entries,
            "tc_env_file_lines": compose.env_file_lines,
            "tc_fqdn": compose.fqdn,
            "tc_db_identifier": compose.db_identifier,
            "tc_database_of": compose.database_of,
            "tc_to_yaml": to_compose_yaml,
        }
