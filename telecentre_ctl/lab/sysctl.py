"""Machine settings the lab needs, and their original values to restore after the last lab.

- net.ipv4.ip_forward = 1: hosts reach Debian's archive through NAT.
- fs.inotify.max_user_instances: every host's systemd takes several inotify instances,
  all counted against root; with the default 128, about the 15th host fails units with
  "Failed to create inotify object: Too many open files".
"""

from __future__ import annotations

import json
from pathlib import Path

from telecentre_ctl.lab import paths

IP_FORWARD = "net/ipv4/ip_forward"
INOTIFY_INSTANCES = "fs/inotify/max_user_instances"
INOTIFY_PER_HOST = 32
INOTIFY_FLOOR = 1024


def _saved_file() -> Path:
    return paths.lab_dir() / "sysctl.orig.json"


def _saved() -> dict[str, str]:
    try:
        data: dict[str, str] = json.loads(_saved_file().read_text())
        return data
    except FileNotFoundError:
        return {}


def raise_at_least(key: str, value: int) -> None:
    """Set /proc/sys/<key> to value if lower; remember the first original value."""
    proc = Path("/proc/sys") / key
    current = proc.read_text().strip()
    if int(current) >= value:
        return
    saved = _saved()
    if key not in saved:
        saved[key] = current
        _saved_file().parent.mkdir(parents=True, exist_ok=True)
        _saved_file().write_text(json.dumps(saved, indent=2) + "\n")
    proc.write_text(f"{value}\n")


def prepare(total_hosts: int) -> None:
    raise_at_least(IP_FORWARD, 1)
    raise_at_least(INOTIFY_INSTANCES, max(INOTIFY_FLOOR, 128 + INOTIFY_PER_HOST * total_hosts))


def restore() -> None:
    """Called when the last lab is down: put back what the machine had before."""
    for key, value in _saved().items():
        (Path("/proc/sys") / key).write_text(value + "\n")
    _saved_file().unlink(missing_ok=True)
