"""The upgrade probe: sent as source on stdin to `python3 -` on a host by `upgrade`.

A program for the HOST: standard library only, reads and writes nothing but stdout.
Argument: the JSON list of the services placed on the host. Answer, one JSON document:

    {"images": {service: image reference in its compose.yml},
     "journals": {service: the journal of its last upgrade (telecentre-backup upgrade)}}

A service without a compose project is left out of "images" (not deployed).
"""

from __future__ import annotations

import json
import os
import re
import sys

OPT_DIR = "/opt/telecentre"
JOURNAL_DIR = "/var/lib/telecentre/backup/upgrade"
IMAGE_LINE = re.compile(r"^\s+image:\s*['\"]?([^'\"\s]+)", re.MULTILINE)


def read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return None


def main(argv: list[str]) -> int:
    services = json.loads(argv[1]) if len(argv) > 1 else []
    images, journals = {}, {}
    for name in services:
        text = read(os.path.join(OPT_DIR, name, "compose.yml"))
        found = IMAGE_LINE.search(text) if text else None
        if found:
            images[name] = found.group(1)
        journal = read(os.path.join(JOURNAL_DIR, f"{name}.json"))
        if journal:
            try:
                journals[name] = json.loads(journal)
            except ValueError:
                journals[name] = {"step": "unreadable"}
    print(json.dumps({"images": images, "journals": journals}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
