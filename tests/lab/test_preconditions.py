"""Preconditions of the lab: checked before anything is touched, exit 2, the fix named.

These run anywhere (no root needed): the machine's answers are faked.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from telecentre_ctl.errors import EXIT_INVALID, InvalidInput, PreconditionMissing
from telecentre_ctl.lab import control, system, testing


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return testing.write_site(tmp_path / "pre", testing.site_name("pre"))


@pytest.fixture
def as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system.platform, "system", lambda: "Linux")
    monkeypatch.setattr(system.os, "geteuid", lambda: 0)


def test_not_root(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system.platform, "system", lambda: "Linux")
    monkeypatch.setattr(system.os, "geteuid", lambda: 1000)
    with pytest.raises(PreconditionMissing) as err:
        control.up(site, 1)
    assert err.value.exit_code == EXIT_INVALID
    assert "root" in err.value.message and "sudo" in err.value.fix


def test_not_linux(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system.platform, "system", lambda: "Darwin")
    with pytest.raises(PreconditionMissing, match="needs Linux"):
        control.up(site, 1)


@pytest.mark.parametrize(
    ("tool", "package"),
    [
        ("systemd-nspawn", "systemd-container"),
        ("debootstrap", "debootstrap"),
        ("ssh-keygen", "openssh-client"),
        ("nft", "nftables"),
    ],
)
def test_missing_tool_names_the_package(
    site: Path, as_root: None, monkeypatch: pytest.MonkeyPatch, tool: str, package: str
) -> None:
    real_which = shutil.which
    monkeypatch.setattr(system.shutil, "which", lambda t: None if t == tool else real_which(t))
    with pytest.raises(PreconditionMissing) as err:
        control.up(site, 1)
    assert tool in err.value.message
    assert err.value.fix == f"apt-get install {package}"


def test_no_overlay(site: Path, as_root: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system.shutil, "which", lambda t: f"/usr/bin/{t}")
    monkeypatch.setattr(system, "overlay_supported", lambda: False)
    with pytest.raises(PreconditionMissing, match="overlay"):
        control.up(site, 1)


def test_state_on_overlay_fs(site: Path, as_root: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system.shutil, "which", lambda t: f"/usr/bin/{t}")
    monkeypatch.setattr(system, "overlay_supported", lambda: True)
    monkeypatch.setattr(system, "fs_type", lambda path: "overlay")
    with pytest.raises(PreconditionMissing) as err:
        control.up(site, 1)
    assert "TELECENTRE_STATE_DIR" in err.value.fix


def test_hosts_out_of_range(site: Path) -> None:
    with pytest.raises(InvalidInput, match="out of range"):
        control.up(site, 0)
