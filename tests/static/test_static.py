"""Static tier: linters, strict typing, the catalogue against its schema, playbook syntax."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# roles/ holds Python that runs on the hosts (roles/backup/files/telecentre_backup.py) and
# Ansible plugins: linted, formatted and type-checked (pyproject's mypy files) like the package.
PYTHON_TREES = ("telecentre_ctl", "roles", "services", "tests", "bench")
HOST_PROGRAMS = sorted((ROOT / "roles").glob("*/files/*.py"))


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
    check(tool("ruff"), "check", *PYTHON_TREES)


def test_ruff_format() -> None:
    check(tool("ruff"), "format", "--check", *PYTHON_TREES)


def test_mypy_strict_on_the_package() -> None:
    check(tool("mypy"))


def test_mypy_covers_the_host_programs() -> None:
    with (ROOT / "pyproject.toml").open("rb") as f:
        files = tomllib.load(f)["tool"]["mypy"]["files"]
    assert HOST_PROGRAMS, "no host program found under roles/*/files/"
    for program in HOST_PROGRAMS:
        assert any(program.is_relative_to(ROOT / entry) for entry in files), program


@pytest.mark.parametrize("program", HOST_PROGRAMS, ids=lambda p: p.name)
def test_host_programs_use_only_the_standard_library(program: Path) -> None:
    """Hosts have python3 and nothing else: a third-party import would fail only there."""
    tree = ast.parse(program.read_text(encoding="utf-8"), filename=str(program))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
    }
    assert imported - sys.stdlib_module_names == set()


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


@pytest.mark.parametrize("missing", [None, "portal"])
def test_a_missing_role_stops_the_site_playbook(tmp_path: Path, missing: str | None) -> None:
    """A role absent from the tree fails the run at load time, naming it; never a silent
    success (with every role present, the same check passes)."""
    roles = tmp_path / "roles"
    roles.mkdir()
    for role in (ROOT / "roles").iterdir():
        if role.name != missing:
            (roles / role.name).symlink_to(role)
    (tmp_path / "ansible.cfg").write_text(f"[defaults]\nroles_path = {roles}\n")
    result = subprocess.run(
        [tool("ansible-playbook"), "--syntax-check", "-i", "localhost,",
         str(ROOT / "playbooks" / "site.yml")],
        capture_output=True, text=True, check=False, cwd=tmp_path,
        env={**os.environ, "ANSIBLE_CONFIG": str(tmp_path / "ansible.cfg")},
    )  # fmt: skip
    if missing is None:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode != 0
        assert f"the role '{missing}' was not found" in result.stderr


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
