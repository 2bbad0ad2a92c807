"""Settings of jawanndenn for a telecentre: secrets read from files, the site's name,
PostgreSQL (jawanndenn's own settings, with what a telecentre needs on top)."""

from __future__ import annotations

import os
from pathlib import Path

SECRETS = Path("/run/polls")


def _secret(name: str) -> str:
    return (SECRETS / name).read_text(encoding="utf-8").strip()


HOST = os.environ["POLLS_HOST"]
# jawanndenn's settings read these from the environment of this process only
os.environ["JAWANNDENN_SECRET_KEY"] = _secret("secret_key")
os.environ["JAWANNDENN_POSTGRES_PASSWORD"] = _secret("db_password")
os.environ["JAWANNDENN_ALLOWED_HOSTS"] = f"{HOST},127.0.0.1,localhost"

from jawanndenn.settings import *  # noqa: E402,F403

CSRF_TRUSTED_ORIGINS = [f"https://{HOST}"]
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
LANGUAGE_CODE = os.environ.get("POLLS_LANG", "fr")
TIME_ZONE = "Europe/Paris"
# one process: django-ratelimit's counters in local memory are enough
SILENCED_SYSTEM_CHECKS = ["django_ratelimit.E003", "django_ratelimit.W001"]
