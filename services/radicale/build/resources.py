"""Makes the resource calendars RADICALE_RESOURCES names ({"slug": "display name"}, JSON)
under /reservations/, once each; a calendar no longer named keeps its bookings."""

from __future__ import annotations

import json
import os
from pathlib import Path

ROOT = Path("/var/lib/radicale/collections/collection-root/reservations")


def main() -> None:
    wanted = json.loads(os.environ.get("RADICALE_RESOURCES") or "{}")
    for slug, name in wanted.items():
        folder = ROOT / slug
        props = folder / ".Radicale.props"
        if props.exists():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        props.write_text(json.dumps({
            "tag": "VCALENDAR",
            "D:displayname": name,
            "C:supported-calendar-component-set": "VEVENT",
            "C:calendar-description": f"Réservations / bookings: {name}",
        }, ensure_ascii=False), encoding="utf-8")  # fmt: skip


if __name__ == "__main__":
    main()
