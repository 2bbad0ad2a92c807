"""jawanndenn behind the members' login: every request must carry it (HTTP Basic, kept
encrypted in transit by the proxy) before jawanndenn, which has no login, sees it. The
shared account's password is checked here, or, when DIRECTORY_AUTH is set, the members'
directory checks the member's own credentials."""

from __future__ import annotations

import base64
import hmac
import os
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from django.core.wsgi import get_wsgi_application

StartResponse = Callable[..., Any]
USER = os.environ.get("POLLS_USER", "membre")
DIRECTORY_AUTH = os.environ.get("DIRECTORY_AUTH", "")
# Asked by the healthcheck from inside the container, without credentials: a poll that does
# not exist, looked up in the database.
HEALTH_PATH = "/data/healthcheck"
PASSWORD = Path("/run/polls/password").read_text(encoding="utf-8").strip()
polls = get_wsgi_application()


def directory_allows(header: str) -> bool:
    if not header:
        return False
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(DIRECTORY_AUTH, headers={"Authorization": header}),
                         timeout=10) as answer:  # fmt: skip
            return bool(answer.status == 204)
    except OSError:  # 401 (HTTPError), or the directory down: refused
        return False


def authorised(header: str) -> bool:
    if DIRECTORY_AUTH:
        return directory_allows(header)
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(encoded, validate=True)
    except ValueError:
        return False
    return hmac.compare_digest(given, f"{USER}:{PASSWORD}".encode())


def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    health = environ.get("PATH_INFO") == HEALTH_PATH and environ.get("REMOTE_ADDR") == "127.0.0.1"
    if health or authorised(environ.get("HTTP_AUTHORIZATION", "")):
        return polls(environ, start_response)
    start_response(
        "401 Unauthorized",
        [("WWW-Authenticate", 'Basic realm="Sondages", charset="UTF-8"'),
         ("Content-Type", "text/plain; charset=utf-8")],
    )  # fmt: skip
    return [b"Login required.\n"]
