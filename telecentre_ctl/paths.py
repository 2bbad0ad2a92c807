"""Where the project's data lives (catalogue, roles, playbooks) and where state goes."""

from __future__ import annotations

import os
from pathlib import Path

# The package runs from its source tree (pip install -e .): the catalogue, roles and
# playbooks are siblings of the package. TELECENTRE_HOME points elsewhere if needed.
PROJECT_ROOT = Path(os.environ.get("TELECENTRE_HOME", Path(__file__).resolve().parent.parent))
# The catalogue. TELECENTRE_SERVICES_DIR points at another one (a copy with a recipe
# changed, to rehearse an upgrade); the schema is the project's own either way.
SERVICES_DIR = Path(os.environ.get("TELECENTRE_SERVICES_DIR") or PROJECT_ROOT / "services")
SCHEMA_FILE = PROJECT_ROOT / "services" / "schema.json"
ROLES_DIR = PROJECT_ROOT / "roles"
PLAYBOOKS_DIR = PROJECT_ROOT / "playbooks"
INVENTORY_DIR = PROJECT_ROOT / "inventory"
DEMO_SITE = INVENTORY_DIR / "demo"


def config_dir() -> Path:
    """Per-user configuration (vault password files live here, outside any site folder)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "telecentre-ctl"


def state_dir() -> Path:
    """Machine state of the lab (base tree cache, overlays, keys)."""
    return Path(os.environ.get("TELECENTRE_STATE_DIR", "/var/lib/telecentre-ctl"))
