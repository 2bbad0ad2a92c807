"""TELECENTRE_REQUIRE_LAB=1 (set by CI): lab tiers that cannot run fail instead of skipping.

Runs pytest itself on a lab test file with a PATH that lacks the lab's tools, so the lab's
precondition check answers "missing tools" whoever runs this (root or not)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAB_TESTS = "tests/lab/test_lab.py"


def run_lab_tier(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "TELECENTRE_REQUIRE_LAB"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", LAB_TESTS],
        cwd=ROOT,
        env={**clean, "PATH": str(Path(sys.executable).parent), **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_without_the_switch_lab_tests_skip_and_say_why() -> None:
    proc = run_lab_tier()
    assert proc.returncode == 0, proc.stdout
    assert "skipped" in proc.stdout and "missing tools for the lab" in proc.stdout
    assert "passed" not in proc.stdout and "error" not in proc.stdout


def test_with_the_switch_they_fail_with_the_reason() -> None:
    proc = run_lab_tier(TELECENTRE_REQUIRE_LAB="1")
    assert proc.returncode == 1, proc.stdout
    assert "skipped" not in proc.stdout and "passed" not in proc.stdout
    assert "TELECENTRE_REQUIRE_LAB=1 and lab tests need root" in proc.stdout
    assert "missing tools for the lab" in proc.stdout
