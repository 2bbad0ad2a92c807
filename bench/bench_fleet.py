"""Benchmark: `deploy` of many telecentres at once (fleet mode: the canary, then the others
--parallel at a time, each site in its own process) against a serial loop of single-site
deploys, measured in the same run on the same converged lab hosts. Prints the wall-time
ratio and the controller's CPU per host (telecentre-ctl, ansible-playbook and ssh: every
process of the controller side). Needs root and the lab. Not a test: it measures.

    sudo python3 bench/bench_fleet.py [--sites 10] [--parallel 10] [--rounds 2]

Each site is small: one lab host, no app (base and docker roles, the proxy, backups, the
portal). The first deploy of every site (not measured) converges them, through fleet mode
itself; the measured runs are no-op re-runs, alternately fleet and serial. The lab hosts
run on the controller's own cores here: the serial loop leaves them idle between sites,
the fleet makes them work at once, so the ratio says how much of a deploy is waiting.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from telecentre_ctl.lab import control, testing  # noqa: E402

CTL = str(Path(sys.executable).parent / "telecentre-ctl")


def write_site(site_dir: Path, name: str, pub: str) -> Path:
    site_dir.mkdir(parents=True, exist_ok=True)
    (site_dir / "site.yml").write_text(
        f"name: {name}\ntitle: Bench {name}\nlocale: en\nadmin_email: admin@example.org\n"
        f'admins: [{{name: alice, ssh_key: "{pub}"}}]\nprofile: lite\nservices: {{}}\n'
        'backup: {target: /srv/backup, time: "02:30", keep: {daily: 7, weekly: 4, monthly: 6}}\n'
    )
    return site_dir


def timed(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the controller side) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        what = " ".join(argv[1:3])
        raise SystemExit(f"{what} ... exited {proc.returncode}\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--parallel", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the lab needs root: run with sudo")
    with tempfile.TemporaryDirectory(prefix="tc-bench-fleet-") as tmp:
        work = Path(tmp)
        os.environ["TELECENTRE_VAULT_PASSWORD_FILE"] = str(work / "vault.pass")
        key = work / "admin_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                       check=True)  # fmt: skip
        pub = key.with_suffix(".pub").read_text().strip()
        sites = [
            write_site(work / f"s{i}", testing.site_name(f"fleet{i}"), pub)
            for i in range(args.sites)
        ]
        try:
            started = time.monotonic()
            for site in sites:
                control.up(site, 1)
                subprocess.run([CTL, "secrets", str(site)], check=True, capture_output=True)
            print(f"{args.sites} sites of 1 lab host up in {time.monotonic() - started:.0f} s",
                  flush=True)  # fmt: skip
            fleet = [CTL, "deploy", *map(str, sites), "--parallel", str(args.parallel)]
            wall, _ = timed(fleet)
            print(f"first deploy (fleet, converging, not measured): {wall:.0f} s", flush=True)
            fleet_runs: list[tuple[float, float]] = []
            serial_runs: list[tuple[float, float]] = []
            for n in range(args.rounds):
                fleet_runs.append(timed(fleet))
                walls, cpus = zip(*(timed([CTL, "deploy", str(s)]) for s in sites), strict=True)
                serial_runs.append((sum(walls), sum(cpus)))
                print(f"  round {n + 1}: fleet {fleet_runs[-1][0]:.1f} s, "
                      f"serial loop {serial_runs[-1][0]:.1f} s", flush=True)  # fmt: skip
        finally:
            for site in sites:
                control.down(site)
    fw = statistics.median(w for w, _ in fleet_runs)
    sw = statistics.median(w for w, _ in serial_runs)
    fc = statistics.median(c for _, c in fleet_runs)
    sc = statistics.median(c for _, c in serial_runs)
    n = args.sites
    print(f"\nno-op deploy of {n} sites (1 lab host each), median of {args.rounds} round(s), "
          f"{os.cpu_count()} cores shared by controller and hosts")  # fmt: skip
    print(f"{'run':<34}{'seconds':>9}{'controller CPU s':>18}{'CPU per host ms':>17}")
    print(f"{f'fleet deploy --parallel {args.parallel}':<34}{fw:>9.1f}{fc:>18.1f}"
          f"{fc / n * 1000:>17.0f}")  # fmt: skip
    print(f"{'serial loop of single-site deploys':<34}{sw:>9.1f}{sc:>18.1f}{sc / n * 1000:>17.0f}")
    print("\nratios")
    print(f"  fleet / serial loop, wall time   = {fw / sw:.2f}x")
    print(f"  fleet / serial loop, controller CPU = {fc / sc:.2f}x")


if __name__ == "__main__":
    main()
