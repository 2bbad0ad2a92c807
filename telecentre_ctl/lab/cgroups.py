"""A cgroup of its own for each host's nspawn.

Started with --keep-unit where systemd is not PID 1, nspawn creates `supervisor` and
`payload` next to itself: without this every host would share one `payload` cgroup, and
their systemds would create and remove each other's unit cgroups (units then fail at
random with "Failed to spawn executor"). Each host's nspawn therefore starts inside
telecentre-lab/<host> of the unified (cgroup2) and the name=systemd hierarchies.
"""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path

GROUP = "telecentre-lab"


def hierarchies() -> list[Path]:
    """Mount points of the cgroup2 hierarchy and of the v1 name=systemd one, if any."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines():
        fields = line.split()
        kind, options = fields[fields.index("-") + 1], fields[-1]
        if kind == "cgroup2" or (kind == "cgroup" and "name=systemd" in options.split(",")):
            found.append(Path(fields[4]))
    return found


def create(host: str) -> list[Path]:
    """Make the host's cgroups; return the cgroup.procs files its nspawn must enter."""
    procs = []
    for root in hierarchies():
        group = root / GROUP / host
        group.mkdir(parents=True, exist_ok=True)
        procs.append(group / "cgroup.procs")
    return procs


def remove(host: str) -> None:
    """Remove the host's cgroups, deepest first (only empty ones can go)."""
    for root in hierarchies():
        group = root / GROUP / host
        if not group.is_dir():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(group), key=lambda w: -len(w[0])):
            try:
                os.rmdir(dirpath)
            except OSError:
                continue
        with suppress(OSError):  # other hosts may still be there
            (root / GROUP).rmdir()
