"""Static tier: linters, strict typing, the catalogue against its schema, playbook syntax."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    found = BIN / name
    if found.exists():
        return str(found)
    path = shutil.which(name)
    assert path, f"{name} is not installed: run scripts/setup"
    return path


def check(*command: str, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout}\n{result.stderr}"


def test_ruff() -> None:
    check(tool("ruff"), "check", "telecentre_ctl", "tests", "bench")


def test_ruff_format() -> None:
    check(tool("ruff"), "format", "--check", "telecentre_ctl", "tests", "bench")


def test_mypy_strict_on_the_package() -> None:
    check(tool("mypy"))


def test_yamllint() -> None:
    targets = [p for p in ("services", "inventory", "roles", "playbooks") if (ROOT / p).exists()]
    check(tool("yamllint"), "--strict", *targets)


def test_ansible_lint_production_profile() -> None:
    if not (ROOT / "playbooks").exists():
        pytest.skip("no playbooks yet")
    check(
        tool("ansible-lint"),
        "--offline",
        "--profile",
        "production",
        env={"ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")},
    )


@pytest.mark.parametrize("playbook", sorted(p.name for p in (ROOT / "playbooks").glob("*.yml")))
def test_playbook_syntax(playbook: str) -> None:
    check(
        tool("ansible-playbook"),
        "--syntax-check",
        "-i",
        "inventory/example-standard/hosts.yml",
        f"playbooks/{playbook}",
        env={"ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")},
    )
