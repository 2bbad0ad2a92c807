"""Fava for every ledger of the volume, behind HTTP Basic authentication, on cheroot.

Each ledger FAVA_LEDGERS names ({"slug": "chart"}, JSON) is made once from its chart of
accounts (plans/<chart>.beancount) and never overwritten. Fava itself has no login: every
request must carry the account's credentials (the proxy keeps them encrypted in transit),
checked here against the admin password (read from a file, never from the environment), or,
when DIRECTORY_AUTH is set, by the members' directory.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import sys
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from cheroot import wsgi
from fava.application import create_app

LEDGERS = Path("/var/lib/fava/ledgers")
PLANS = Path("/usr/share/fava-plans")
PASSWORD_FILE = Path("/run/fava/admin_password")
REALM = "Fava"

StartResponse = Callable[..., Any]
App = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def authorised(header: str, user: str, password: str) -> bool:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given_user, _, given = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    same_user = hmac.compare_digest(given_user.encode(), user.encode())
    return hmac.compare_digest(given.encode(), password.encode()) and same_user


def directory_allows(url: str, header: str) -> bool:
    """The members' directory checks the request's credentials (and group): 204 or not."""
    if not header:
        return False
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers={"Authorization": header})
    try:
        with opener.open(request, timeout=10) as answer:
            return bool(answer.status == 204)
    except OSError:  # 401 (HTTPError), or the directory down: refused
        return False


def guard(app: App, allowed: Callable[[str], bool], health: str) -> App:
    """Fava behind HTTP Basic: `allowed(Authorization header)` decides. /healthz, asked
    from inside the container only, answers Fava's `health` page without credentials."""

    def guarded(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz" and environ.get("REMOTE_ADDR") == "127.0.0.1":
            return app({**environ, "PATH_INFO": health}, start_response)
        if allowed(environ.get("HTTP_AUTHORIZATION", "")):
            return app(environ, start_response)
        start_response(
            "401 Unauthorized",
            [
                ("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"'),
                ("Content-Type", "text/plain; charset=utf-8"),
            ],
        )
        return [b"Login required.\n"]

    return guarded


def make_ledgers(wanted: dict[str, str]) -> None:
    for slug, plan in wanted.items():
        ledger = LEDGERS / f"{slug}.beancount"
        if not ledger.exists():
            text = (PLANS / f"{plan}.beancount").read_text(encoding="utf-8")
            tmp = ledger.with_name(f".{ledger.name}.tmp")
            tmp.write_text(text.replace("@TITLE@", slug), encoding="utf-8")
            tmp.rename(ledger)


def main() -> None:
    make_ledgers(json.loads(os.environ.get("FAVA_LEDGERS") or '{"association": "association"}'))
    files = sorted(str(p) for p in LEDGERS.glob("*.beancount"))
    if not files:
        sys.exit(f"no ledger (*.beancount) in {LEDGERS}")
    # The poll watcher compares the ledgers' times at each request: no watcher thread, and
    # no inotify, whose instances a box's (or the lab's shared kernel's) containers share.
    app = create_app(files, load=True, poll_watcher=True)
    # healthy: the first ledger answers whether it changed (and is reloaded if it did)
    health = f"/{Path(files[0]).stem}/api/changed"
    directory = os.environ.get("DIRECTORY_AUTH")
    if directory:
        guarded = guard(app, lambda header: directory_allows(directory, header), health)
    else:
        user = os.environ.get("FAVA_USER", "admin")
        password = PASSWORD_FILE.read_text(encoding="utf-8").strip()
        guarded = guard(app, lambda header: authorised(header, user, password), health)
    server = wsgi.Server(("0.0.0.0", 5000), guarded, numthreads=4)
    try:
        server.start()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
