"""Lab-tier fixtures: real lab hosts (systemd-nspawn) for a temporary site folder.

Other tiers reuse the same machinery: `telecentre_ctl.lab.testing.running_lab(site_dir, n)`
gives N hosts for any site folder and writes its hosts.yml; see `lab_factory` below.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from telecentre_ctl.lab import testing
from telecentre_ctl.paths import DEMO_SITE

LabFactory = Callable[[Path, int], testing.Lab]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = testing.skip_reason()
    if reason is None:
        return
    for item in items:
        if item.get_closest_marker("lab"):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def lab_factory() -> Iterator[LabFactory]:
    """Start N lab hosts for a site folder; every lab started is removed at session end."""
    with ExitStack() as stack:

        def start(site_dir: Path, count: int) -> testing.Lab:
            return stack.enter_context(testing.running_lab(site_dir, count))

        yield start


@pytest.fixture(scope="session")
def lab(lab_factory: LabFactory, tmp_path_factory: pytest.TempPathFactory) -> testing.Lab:
    """Two lab hosts for a site named `labtest` (the demo's site.yml, renamed)."""
    site_dir = tmp_path_factory.mktemp("sites") / "labtest"
    testing.write_site(site_dir, "labtest", DEMO_SITE / "site.yml")
    return lab_factory(site_dir, 2)
