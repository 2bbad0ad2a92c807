"""Filters of role backup: the logic lives in telecentre_ctl.backup (unit-tested there)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from telecentre_ctl import backup, yamlio


def backup_config(
    site: dict[str, Any],
    catalog: dict[str, Any],
    host_services: list[str],
    host: str,
    options: dict[str, Any],
) -> dict[str, Any]:
    # Ansible hands over its own (tagged) types: plain data in, plain data out.
    return backup.host_config(
        yamlio.plain(site),
        yamlio.plain(catalog),
        list(yamlio.plain(host_services)),
        str(host),
        yamlio.plain(options),
    )


class FilterModule:
    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "tc_backup_config": backup_config,
            "tc_backup_calendar": backup.timer_calendar,
            "tc_backup_restic_options": backup.restic_options,
        }
