"""The list of commands, so that main.py does not import each by hand."""

from __future__ import annotations

import click

from telecentre_ctl.cli.backup import backup_command, drill_command, restore_command
from telecentre_ctl.cli.deploy import deploy
from telecentre_ctl.cli.images import images
from telecentre_ctl.cli.lab import lab
from telecentre_ctl.cli.members import members
from telecentre_ctl.cli.plan import plan
from telecentre_ctl.cli.services import services
from telecentre_ctl.cli.site import init, secrets, validate
from telecentre_ctl.cli.status import status
from telecentre_ctl.cli.upgrade import upgrade

ALL: list[click.Command] = [
    services,
    init,
    validate,
    secrets,
    plan,
    lab,
    deploy,
    upgrade,
    status,
    members,
    images,
    backup_command,
    restore_command,
    drill_command,
]
