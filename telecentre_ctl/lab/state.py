"""What the lab made for a site, written before each step so `down` can undo a crash."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from telecentre_ctl.errors import OperationFailed
from telecentre_ctl.lab import paths
from telecentre_ctl.lab.network import MAX_SITES, SiteNet


@dataclass
class HostState:
    name: str
    number: int
    address: str
    pid: int | None = None


@dataclass
class LabState:
    site: str
    site_dir: str
    index: int
    hosts: list[HostState] = field(default_factory=list)

    @property
    def net(self) -> SiteNet:
        return SiteNet(self.index)

    @property
    def paths(self) -> paths.SitePaths:
        return paths.SitePaths(self.site)

    def save(self) -> None:
        target = self.paths.state_file
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.replace(tmp, target)


def load(site: str) -> LabState | None:
    return _read(paths.SitePaths(site).state_file)


def load_all() -> list[LabState]:
    root = paths.sites_dir()
    if not root.is_dir():
        return []
    found = (_read(p / "state.json") for p in sorted(root.iterdir()) if p.is_dir())
    return [s for s in found if s is not None]


def _read(path: Path) -> LabState | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        hosts = [HostState(**h) for h in data.pop("hosts", [])]
        return LabState(**data, hosts=hosts)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as err:
        raise OperationFailed(
            f"{path}: unreadable lab state ({err})",
            fix=f"inspect it; if that lab is gone, remove {path.parent} by hand",
        ) from err


def free_index(taken: set[int]) -> int:
    """Lowest site number not used by another lab (call under the global lock)."""
    for index in range(1, MAX_SITES + 1):
        if index not in taken:
            return index
    raise OperationFailed(
        f"all {MAX_SITES} lab site networks are in use",
        fix="stop some labs: telecentre-ctl lab list, then lab down SITE_DIR",
    )
