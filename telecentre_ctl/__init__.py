"""telecentre-ctl: shared digital services for rural telecentres, deployed with Ansible and Docker."""

from __future__ import annotations

__version__ = "0.1.0"
