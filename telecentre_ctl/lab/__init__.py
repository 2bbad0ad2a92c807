"""The lab: disposable Debian 13 hosts on this machine (systemd-nspawn, real SSH, Docker).

See DESIGN.md, "The lab". Public operations live in `control`; the CLI wraps them.
"""

from __future__ import annotations
