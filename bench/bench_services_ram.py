"""RAM of the running lite profile on a lab host, from its processes.

    sudo .venv/bin/python bench/bench_services_ram.py [SITE_DIR]

SITE_DIR (default inventory/demo) must be deployed on lab hosts (scripts/demo does it).
`docker stats` reads 0 inside lab hosts (no memory cgroup there), so the figure is the sum
of the resident memory (RSS, and PSS where readable) of every process of the host, split
into the service containers, the Docker engine and the rest of the system. The baseline,
measured in the same run, is the host without its services: systemd, sshd and the rest.
Target (issue 5): the whole running lite profile <= 1.5 GB.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from telecentre_ctl.lab import state, testing

TARGET_MB = 1536
# Runs on the host: every process with its RSS/PSS (kB) and the container it belongs to.
PROBE = r"""
import json, os, re
out = []
for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
        status = open(f'/proc/{pid}/status').read()
        cgroup = open(f'/proc/{pid}/cgroup').read()
        comm = open(f'/proc/{pid}/comm').read().strip()
    except OSError:
        continue
    rss = re.search(r'VmRSS:\s+(\d+)', status)
    if not rss:
        continue
    try:
        pss = int(re.search(r'Pss:\s+(\d+)', open(f'/proc/{pid}/smaps_rollup').read()).group(1))
    except (OSError, AttributeError):
        pss = None
    container = re.search(r'docker[-/]([0-9a-f]{64})', cgroup)
    out.append({'pid': int(pid), 'comm': comm, 'rss': int(rss.group(1)), 'pss': pss,
                'container': container.group(1) if container else None})
print(json.dumps(out))
"""


def main() -> None:
    site_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "inventory/demo")
    from telecentre_ctl.site import read_site_name

    lab_state = state.load(read_site_name(site_dir))
    if lab_state is None:
        sys.exit(f"no lab for {site_dir}: run scripts/demo (or lab up + deploy) first")
    lab = testing.Lab(site_dir, lab_state)
    host = lab.hosts[0]
    names = json.loads(
        lab.run(
            host,
            "docker ps --no-trunc --format '{{json .}}' | "
            'python3 -c "import sys,json; print(json.dumps('
            "{json.loads(l)['ID']: json.loads(l)['Names'] "
            'for l in sys.stdin}))"',
        ).stdout
    )
    processes = json.loads(lab.run(host, f"python3 -c {shlex.quote(PROBE)}").stdout)
    groups: dict[str, list[dict[str, int]]] = {}
    for proc in processes:
        if proc["container"]:
            key = names.get(proc["container"], "other container")
        elif proc["comm"] in (
            "dockerd",
            "containerd",
            "containerd-shim",
            "docker-proxy",
            "containerd-shim-runc-v2",
        ):
            key = "docker engine"
        else:
            key = "system (baseline: systemd, sshd, ...)"
        groups.setdefault(key, []).append(proc)
    total = sum(p["rss"] for p in processes) / 1024
    baseline = sum(p["rss"] for p in groups.get("system (baseline: systemd, sshd, ...)", []))
    print(f"host {host.name}: {len(processes)} processes, RSS in MiB (PSS where readable)")
    for key, procs in sorted(groups.items()):
        rss = sum(p["rss"] for p in procs) / 1024
        pss_known = [p["pss"] for p in procs if p["pss"] is not None]
        pss = f"{sum(pss_known) / 1024:7.1f}" if pss_known else "      -"
        print(f"  {key:40s} {rss:7.1f} RSS {pss} PSS  ({len(procs)} processes)")
    services = total - baseline / 1024
    print(f"whole host {total:.0f} MiB = {total / (baseline / 1024):.1f}x the baseline system")
    print(
        f"services + engine {services:.0f} MiB; whole host vs target {TARGET_MB} MiB: "
        f"{total / TARGET_MB:.2f}x ({'met' if total <= TARGET_MB else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
