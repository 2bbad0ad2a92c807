"""Real clients pointed at a lab host: LAN names resolved to its address, TLS verified
against the site's own CA (never disabled)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conftest import DeployedSite

CA_ON_HOST = "/srv/telecentre/proxy/data/pki/authorities/local/root.crt"


@contextmanager
def resolve_to(domain: str, address: str) -> Iterator[None]:
    """Names under `domain` resolve to `address` in this process (as a LAN's DNS would)."""
    original = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and (host == domain or host.endswith("." + domain)):
            host = address
        return original(host, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
    try:
        yield
    finally:
        socket.getaddrinfo = original  # type: ignore[assignment]


def fetch_ca(site: DeployedSite, target: Path) -> Path:
    """The site's internal CA certificate, read over the lab's SSH (not over HTTPS)."""
    target.write_text(site.run(f"cat {CA_ON_HOST}").stdout)
    return target
