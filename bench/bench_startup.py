"""Start-up time of the CLI against a bare `import click`, measured in the same run.

    .venv/bin/python bench/bench_startup.py [--runs 15]

Target (issue 2): `telecentre-ctl --help` <= 1.5x `python -c "import click"`: ansible,
paramiko and docker are imported only by the commands that need them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "telecentre_ctl.cli.main"]


def median_seconds(command: list[str], runs: int, env: dict[str, str]) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=env, cwd=ROOT)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "XDG_CONFIG_HOME": scratch}
        site = Path(scratch) / "demo"
        site.mkdir()
        for name in ("site.yml", "hosts.yml"):
            shutil.copy(ROOT / "inventory" / "demo" / name, site / name)
        subprocess.run([*CLI, "secrets", str(site)], check=True, capture_output=True, env=env)
        cases = {
            "baseline: python -c 'import click'": [sys.executable, "-c", "import click"],
            "telecentre-ctl --help": [*CLI, "--help"],
            "telecentre-ctl services": [*CLI, "services"],
            "telecentre-ctl validate demo": [*CLI, "validate", str(site)],
        }
        results = {name: median_seconds(cmd, args.runs, env) for name, cmd in cases.items()}
    baseline = next(iter(results.values()))
    print(f"median of {args.runs} runs each")
    for name, seconds in results.items():
        print(f"{name:40s} {seconds * 1000:7.1f} ms  {seconds / baseline:5.2f}x baseline")
    help_ratio = results["telecentre-ctl --help"] / baseline
    print(
        f"target --help <= 1.50x baseline: {'met' if help_ratio <= 1.5 else 'MISSED'} "
        f"({help_ratio:.2f}x)"
    )


if __name__ == "__main__":
    main()
