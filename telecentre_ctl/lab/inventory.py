"""The site's hosts.yml for its lab hosts: plain Ansible inventory, strict host keys."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from telecentre_ctl.lab.state import LabState

LAB_RAM_GB = 4


def render(lab: LabState) -> str:
    key, known = lab.paths.key, lab.paths.known_hosts
    common = f"-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
    hosts: dict[str, Any] = {
        h.name: {
            "ansible_host": h.address,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(key),
            "ansible_ssh_common_args": common,
            "ansible_python_interpreter": "/usr/bin/python3",
            "tc_known_hosts_file": str(known),
            "tc_ram_gb": LAB_RAM_GB,
        }
        for h in lab.hosts
    }
    body = yaml.safe_dump(
        {"all": {"children": {"telecentre": {"hosts": hosts}}}}, sort_keys=False, width=100
    )
    header = (
        f"# Written by `telecentre-ctl lab up` for the lab hosts of site '{lab.site}'.\n"
        "# Rewritten by every `lab up` (the previous file is kept as hosts.yml.bak-<time>);\n"
        "# the hosts and their keys disappear with `telecentre-ctl lab down`.\n"
    )
    return header + body


def write(lab: LabState, site_dir: Path) -> Path | None:
    """Write hosts.yml; return the backup made of a different previous file, if any."""
    target = site_dir / "hosts.yml"
    text = render(lab)
    backup = None
    if target.exists() and target.read_text() != text:
        backup = target.with_name(f"hosts.yml.bak-{time.strftime('%Y%m%d-%H%M%S')}")
        target.rename(backup)
    if backup is not None or not target.exists():
        target.write_text(text)
    return backup
