"""Where the lab keeps its state (per site) and its machine-wide cache (base tree, apt)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from telecentre_ctl.paths import state_dir

# Bump when the base tree's content changes, so that a stale cache is rebuilt.
BASE_VERSION = 2
SUITE = "trixie"


def cache_dir() -> Path:
    return Path(os.environ.get("TELECENTRE_CACHE_DIR", "/var/cache/telecentre-ctl"))


def lab_dir() -> Path:
    return state_dir() / "lab"


def base_tree() -> Path:
    return cache_dir() / f"lab-base-{SUITE}-v{BASE_VERSION}"


def base_lock() -> Path:
    return cache_dir() / "lab-base.lock"


def apt_archives() -> Path:
    """The machine's pool of Debian packages that lab hosts downloaded (see apt.py)."""
    return cache_dir() / "lab-apt-archives"


def host_apt_archives(host: str) -> Path:
    """A host's own /var/cache/apt/archives, on the pool's filesystem so links work."""
    return cache_dir() / "lab-apt-hosts" / host


def global_lock() -> Path:
    return lab_dir() / "lab.lock"


def sites_dir() -> Path:
    return lab_dir() / "sites"


@dataclass(frozen=True)
class SitePaths:
    """Everything the lab makes for one site lives under `root`."""

    site: str

    @property
    def root(self) -> Path:
        return sites_dir() / self.site

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def lock(self) -> Path:
        return sites_dir() / f".{self.site}.lock"

    @property
    def key(self) -> Path:
        return self.root / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    def host_dir(self, name: str) -> Path:
        return self.root / "hosts" / name
