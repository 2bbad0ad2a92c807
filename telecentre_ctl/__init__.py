"""telecentre-ctl: a rural telecentre's shared services, deployed with Ansible and Docker."""

from __future__ import annotations

__version__ = "0.1.0"
