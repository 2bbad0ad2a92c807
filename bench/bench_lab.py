"""Benchmark of the lab: `lab up` of 1, 5 and 20 hosts (warm base tree) and memory per
idle host. Run on demand as root: python bench/bench_lab.py [--sizes 1,5,20]

Ratios are against a baseline measured in the same run (one host), and against the
issue's targets: <= 3 s per host warm, 20 hosts <= 30 s, <= 80 MB RSS per idle host.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from telecentre_ctl.lab import control, testing
from telecentre_ctl.lab.base import ensure_base
from telecentre_ctl.lab.network import netns_path
from telecentre_ctl.lab.state import LabState
from telecentre_ctl.lab.system import pids_in_netns

TARGET_PER_HOST_S = 3.0
TARGET_20_HOSTS_S = 30.0
TARGET_RSS_MB = 80.0
SETTLE_S = 10.0


@dataclass(frozen=True)
class Memory:
    rss_mb: float  # every process of the host, shared pages counted in each
    pss_mb: float  # shared pages split between their users: what a host really costs
    nspawn_rss_mb: float  # the host's systemd-nspawn, on the machine side


def _kib(pid: int, file: str, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def host_memory(lab: LabState) -> list[Memory]:
    """Sum over the processes in each host's network namespace (all of an idle host's)."""
    found = []
    for h in lab.hosts:
        pids = pids_in_netns(netns_path(h.name))
        rss = sum(_kib(pid, "status", "VmRSS") for pid in pids)
        pss = sum(_kib(pid, "smaps_rollup", "Pss") for pid in pids)
        found.append(Memory(rss / 1024, pss / 1024, _kib(h.pid or 0, "status", "VmRSS") / 1024))
    return found


def quiet(_message: str) -> None:
    pass


def run(sizes: list[int]) -> None:
    reason = testing.skip_reason()
    if reason:
        sys.exit(reason)
    started = time.monotonic()
    ensure_base(print)
    print(f"base tree ready ({time.monotonic() - started:.1f} s; warm if under 1 s)")
    with tempfile.TemporaryDirectory() as tmp:
        site_dir = testing.write_site(Path(tmp) / "benchlab", "benchlab")
        per_host: dict[int, float] = {}
        for count in sizes:
            t0 = time.monotonic()
            try:
                lab = control.up(site_dir, count, log=quiet)
                up_s = time.monotonic() - t0
                time.sleep(SETTLE_S)
                memory = host_memory(lab)
            finally:
                t0 = time.monotonic()
                control.down(site_dir, log=quiet)
                down_s = time.monotonic() - t0
            per_host[count] = up_s / count
            rss = sum(m.rss_mb for m in memory) / len(memory)
            pss = sum(m.pss_mb for m in memory) / len(memory)
            nspawn = sum(m.nspawn_rss_mb for m in memory) / len(memory)
            base = per_host[sizes[0]]
            print(
                f"{count:3d} host(s): up {up_s:6.2f} s ({per_host[count]:.2f} s/host, "
                f"x{per_host[count] / base:.2f} of the {sizes[0]}-host baseline, "
                f"x{per_host[count] / TARGET_PER_HOST_S:.2f} of the 3 s target); "
                f"down {down_s:.2f} s"
            )
            print(
                f"           idle host: RSS {rss:.1f} MB (x{rss / TARGET_RSS_MB:.2f} of 80 MB), "
                f"PSS {pss:.1f} MB, + systemd-nspawn {nspawn:.1f} MB RSS on the machine"
            )
            if count == 20:
                print(f"           20 hosts: x{up_s / TARGET_20_HOSTS_S:.2f} of the 30 s target")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,5,20", help="host counts, comma-separated")
    args = parser.parse_args()
    run([int(n) for n in args.sizes.split(",")])


if __name__ == "__main__":
    main()
