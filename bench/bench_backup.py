"""Backup throughput against plain `tar` of the same data, and the growth of a second
backup of unchanged data, measured in one run on a lab host (Debian 13, restic 0.18).

    .venv/bin/python bench/bench_backup.py [--mb 400] [--runs 3] [--site-dir DIR]

Without --site-dir a lab host `baktestbench-1` is started for the run and removed after;
with it, the first host of that (running) lab is used. The data is made on the host: a
service volume of incompressible files (photos, archives), text (documents, wiki pages)
and many small files (calendars), backed up by the real host program
(roles/backup/files/telecentre_backup.py: data checks, space estimate, restic, retention)
into a fresh repository on the same disk, and archived by `tar -cf` to the same disk. A
backup counts once it is on the disk: restic syncs its pack files, so tar's archive is
synced too (`sync FILE`) inside its timing. Each is timed twice: with the data in the page
cache (warm), and after the machine's caches were dropped (cold, as for a nightly backup
of files nobody read that day).

Targets (issue 7): backup throughput >= 0.7x tar's; a second backup of unchanged data
adds <= 5% of the first one's bytes. Prints ratios; it is not a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from telecentre_ctl.lab import testing
from telecentre_ctl.lab.state import HostState

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "roles" / "backup" / "files" / "telecentre_backup.py"
BENCH = "/srv/bench"
DATA = f"{BENCH}/data/files/files"  # data_dir/<service>/<volume>, as on a real host


@contextmanager
def bench_host(site_dir: str | None) -> Iterator[tuple[testing.Lab, HostState]]:
    if site_dir is not None:
        from telecentre_ctl.lab import state
        from telecentre_ctl.site import read_site_name

        found = state.load(read_site_name(Path(site_dir)))
        if found is None:
            raise SystemExit(f"no running lab for {site_dir}: telecentre-ctl lab up {site_dir}")
        lab = testing.Lab(Path(site_dir), found)
        try:
            yield lab, lab.hosts[0]
        finally:
            lab.run(lab.hosts[0], f"rm -rf {BENCH}", check=False)
        return
    with tempfile.TemporaryDirectory() as tmp:
        site = testing.write_site(Path(tmp) / "baktestbench", "baktestbench")
        with testing.running_lab(site, 1) as lab:
            yield lab, lab.hosts[0]


def make_data(lab: testing.Lab, host: HostState, total_mb: int) -> None:
    """60% incompressible, 30% text, 10% small files (about 4 KB each)."""
    random_mb, text_mb, small_mb = int(total_mb * 0.6), int(total_mb * 0.3), int(total_mb * 0.1)
    lab.run(host, f"rm -rf {BENCH} && mkdir -p {DATA}/photos {DATA}/docs {DATA}/agenda")
    lab.run(host, f"for i in $(seq 1 {random_mb // 8}); do head -c 8M /dev/urandom "
                  f"> {DATA}/photos/img$i.jpg; done")  # fmt: skip
    # text: varied words (compressible, not trivially so)
    lab.run(
        host,
        "python3 - <<'EOF'\n"
        "import random\n"
        "words = open('/usr/share/common-licenses/GPL-3').read().split()\n"
        f"for i in range({max(1, text_mb // 4)}):\n"
        f"    with open('{DATA}/docs/doc%03d.txt' % i, 'w') as f:\n"
        "        n = 0\n"
        "        while n < 4 * 1024 * 1024:\n"
        "            line = ' '.join(random.choices(words, k=12)) + '\\n'\n"
        "            f.write(line); n += len(line)\n"
        f"for i in range({small_mb * 256}):\n"
        f"    with open('{DATA}/agenda/event%05d.ics' % i, 'wb') as f:\n"
        "        f.write(random.randbytes(4096))\n"
        "EOF",
    )


def configure(lab: testing.Lab, host: HostState) -> str:
    install = "DEBIAN_FRONTEND=noninteractive apt-get install -y -q restic >/dev/null"
    lab.run(host, f"command -v restic >/dev/null || (apt-get update -q >/dev/null && {install})")
    lab.run(host, f"cat > {BENCH}/telecentre-backup <<'EOF'\n{SCRIPT.read_text()}\nEOF\n"
                  f"chmod 755 {BENCH}/telecentre-backup")  # fmt: skip
    config = {
        "site": "bench", "host": host.name, "repository": f"{BENCH}/repo",
        "target": BENCH, "password_file": f"{BENCH}/pass", "state_dir": f"{BENCH}/state",
        "cache_dir": f"{BENCH}/cache", "data_dir": f"{BENCH}/data", "min_free_mb": 16,
        "check_every_days": 0, "keep": {"daily": 7},
        "services": [{"name": "files", "volumes": [DATA]}],
    }  # fmt: skip
    lab.run(host, f"head -c 32 /dev/urandom | base64 > {BENCH}/pass && chmod 600 {BENCH}/pass")
    lab.run(host, f"echo {shlex.quote(json.dumps(config))} > {BENCH}/config.json")
    return f"{BENCH}/telecentre-backup --config {BENCH}/config.json"


def drop_caches() -> None:
    """Drop the machine's page cache (lab hosts share the controller's kernel)."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def timed(lab: testing.Lab, host: HostState, command: str, cold: bool = False) -> tuple[float, str]:
    if cold:
        lab.run(host, "sync")
        drop_caches()
    out = lab.run(host, f"sync; s=$(date +%s.%N); {command} >{BENCH}/out.txt; "
                        f"e=$(date +%s.%N); sync; echo $s $e; cat {BENCH}/out.txt")  # fmt: skip
    first, _, rest = out.stdout.partition("\n")
    start, end = (float(x) for x in first.split())
    return end - start, rest


def repo_bytes(lab: testing.Lab, host: HostState) -> int:
    return int(lab.run(host, f"du -sb {BENCH}/repo | cut -f1").stdout.split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=400, help="size of the data (MB)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--site-dir", help="use the first host of this running lab")
    args = parser.parse_args()
    with bench_host(args.site_dir) as (lab, host):
        make_data(lab, host, args.mb)
        tool = configure(lab, host)
        data_bytes = int(lab.run(host, f"du -sb {DATA} | cut -f1").stdout.split()[0])
        seconds: dict[str, list[float]] = {}
        raw_env = f"RESTIC_PASSWORD_FILE={BENCH}/pass RESTIC_CACHE_DIR={BENCH}/rawcache"
        growth_first = growth_second = 0
        tar = f"tar -cf {BENCH}/out.tar -C {DATA} . && sync {BENCH}/out.tar"
        for _ in range(args.runs):
            for cache in ("warm", "cold"):
                cold = cache == "cold"
                lab.run(host, f"rm -rf {BENCH}/repo {BENCH}/state {BENCH}/cache {BENCH}/out.tar")
                lab.run(host, f"cat {DATA}/*/* >/dev/null")  # warm: the data in the page cache
                seconds.setdefault(f"tar {cache}", []).append(timed(lab, host, tar, cold)[0])
                # restic alone, no checks nor retention: what the program adds on top of it
                lab.run(host, f"rm -rf {BENCH}/out.tar {BENCH}/raw {BENCH}/rawcache; "
                              f"{raw_env} restic -q -r {BENCH}/raw init >/dev/null")  # fmt: skip
                lab.run(host, f"cat {DATA}/*/* >/dev/null")
                raw = f"{raw_env} restic -q -r {BENCH}/raw backup {DATA}"
                seconds.setdefault(f"restic {cache}", []).append(timed(lab, host, raw, cold)[0])
                lab.run(host, f"rm -rf {BENCH}/raw {BENCH}/rawcache; {tool} init >/dev/null")
                lab.run(host, f"cat {DATA}/*/* >/dev/null")
                took, out = timed(lab, host, f"{tool} backup", cold)
                assert json.loads(out.strip().splitlines()[-1])["ok"], out
                seconds.setdefault(f"backup {cache}", []).append(took)
            size_first = repo_bytes(lab, host)
            _, out = timed(lab, host, f"{tool} backup")
            assert json.loads(out.strip().splitlines()[-1])["ok"], out
            growth_first, growth_second = size_first, repo_bytes(lab, host) - size_first
        med = {name: statistics.median(values) for name, values in seconds.items()}
        load = lab.run(host, "cat /proc/loadavg").stdout.split()[0]
    mb = data_bytes / 1e6
    print(f"data: {mb:.0f} MB on {host.name}; median of {args.runs} runs; load {load}")
    for cache in ("warm", "cold"):
        tar_s, raw_s, backup_s = (med[f"{what} {cache}"] for what in ("tar", "restic", "backup"))
        print(f"\n{cache} page cache")
        print(f"  tar -cf + sync (same disk)     {tar_s:6.2f} s  {mb / tar_s:7.1f} MB/s")
        print(f"  restic backup alone            {raw_s:6.2f} s  {mb / raw_s:7.1f} MB/s"
              f"  ({tar_s / raw_s:.2f}x tar)")  # fmt: skip
        print(f"  telecentre-backup backup       {backup_s:6.2f} s  {mb / backup_s:7.1f} MB/s"
              "  (checks, restic, retention)")  # fmt: skip
        ratio = tar_s / backup_s
        print(f"  throughput ratio backup/tar    {ratio:.2f}x   target >= 0.70x: "
              f"{'met' if ratio >= 0.7 else 'MISSED'}")  # fmt: skip
    print()
    growth = growth_second / growth_first
    print(f"repository: first backup {growth_first / 1e6:.1f} MB, second (unchanged data) "
          f"+{growth_second / 1e3:.1f} KB")  # fmt: skip
    print(f"second/first bytes           {growth:.4f}   target <= 0.05: "
          f"{'met' if growth <= 0.05 else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
