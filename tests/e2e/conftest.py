from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from telecentre_ctl.lab.testing import resolve_to
from tests.conftest import DeployedSite
from tests.e2e.clients import PAD_CLIENT, fetch_ca


@pytest.fixture(scope="session")
def site_ca(deployed_demo: DeployedSite, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fetch_ca(deployed_demo, tmp_path_factory.mktemp("ca") / "ca.crt")


@pytest.fixture
def lan(deployed_demo: DeployedSite) -> Iterator[str]:
    """Resolve the site's names to its lab host for the test; yields the base domain."""
    domain = f"{deployed_demo.name}.home.arpa"
    with resolve_to(domain, deployed_demo.address):
        yield domain


@pytest.fixture(scope="session")
def pad_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pads test client and its npm packages (pinned by its lock file), once a session."""
    folder = tmp_path_factory.mktemp("padclient")
    for name in ("package.json", "package-lock.json", "client.mjs"):
        shutil.copy(PAD_CLIENT / name, folder / name)
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=folder,
                   check=True, capture_output=True, timeout=600)  # fmt: skip
    return folder
