"""Debian packages download once per machine, yet every host keeps its own apt cache.

Binding one shared directory as every host's /var/cache/apt/archives would share apt's
lock too: two hosts installing at once (Ansible's forks) would fail on it. So each host
gets its own directory, seeded with hard links to the machine's pool, and what a host
downloaded is linked back into the pool (`harvest`) before its directory goes.
"""

from __future__ import annotations

import os
from pathlib import Path

from telecentre_ctl.lab import paths
from telecentre_ctl.lab.system import safe_rmtree


def _link_debs(source: Path, target: Path) -> int:
    linked = 0
    for deb in source.glob("*.deb"):
        try:
            os.link(deb, target / deb.name)
            linked += 1
        except FileExistsError:
            continue
    return linked


def seed(host: str) -> Path:
    pool = paths.apt_archives()
    pool.mkdir(parents=True, exist_ok=True)
    own = paths.host_apt_archives(host)
    (own / "partial").mkdir(parents=True, exist_ok=True)
    _link_debs(pool, own)
    return own


def harvest(host: str) -> int:
    """Link the packages this host downloaded into the pool; return how many were new."""
    own = paths.host_apt_archives(host)
    return _link_debs(own, paths.apt_archives()) if own.is_dir() else 0


def remove(host: str) -> None:
    harvest(host)
    safe_rmtree(paths.host_apt_archives(host))
