"""Lab-tier fixtures: real lab hosts (systemd-nspawn) for a temporary site folder.

Every tier shares `lab_factory` (tests/conftest.py): N hosts for any site folder.
"""

from __future__ import annotations

import pytest

from telecentre_ctl.lab import testing
from telecentre_ctl.paths import DEMO_SITE
from tests.conftest import LabFactory


@pytest.fixture(scope="session")
def lab(lab_factory: LabFactory, tmp_path_factory: pytest.TempPathFactory) -> testing.Lab:
    """Two lab hosts for a site named `labtest` (the demo's site.yml, renamed)."""
    name = testing.site_name("labtest")
    site_dir = tmp_path_factory.mktemp("sites") / name
    testing.write_site(site_dir, name, DEMO_SITE / "site.yml")
    return lab_factory(site_dir, 2)
