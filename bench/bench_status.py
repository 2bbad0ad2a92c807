"""Benchmark: `telecentre-ctl status` on 1, 10 and 50 lab hosts, against `ansible all -m
ping -f 50` and against a serial `ssh host python3 - < probe` loop on the same 50 hosts,
measured in the same run. Prints seconds, ratios and the controller's peak RSS. Needs
root and the lab. Not a test: it asserts nothing, it measures.

    sudo .venv/bin/python bench/bench_status.py [--hosts 50] [--rounds 3]

The hosts are bare lab hosts (sshd, python3, no Docker): the fan-out is what is measured,
with the real probe and the real HTTPS attempts (refused at once on bare hosts). A first
status run warms each host's cache of `apt-get -s upgrade` (the probe starts it detached);
the benchmark waits until every host has it, as in steady use.

Each status is the command in its own process (start-up included: what a volunteer waits
for). Ansible runs with a fresh SSH control folder each time (no warm connection), with
its defaults otherwise (a neutral ansible.cfg: the project's vars plugin would read the
site and its vault). The issue's targets: status(50) <= 3x status(1), status(50) <= 0.2x
the ansible ping, peak RSS <= 150 MB for 50 hosts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from telecentre_ctl.lab import control  # noqa: E402
from telecentre_ctl.paths import DEMO_SITE  # noqa: E402

SITE = "stattestbench"
RUN_STATUS = (
    "from telecentre_ctl.cli.main import cli, main\n"
    "from telecentre_ctl.cli.status import status\n"
    "cli.commands.setdefault('status', status)\n"
    "main()\n"
)


def write_site(site_dir: Path) -> None:
    site_dir.mkdir(parents=True, exist_ok=True)
    text = re.sub(r"(?m)^name:.*$", f"name: {SITE}", (DEMO_SITE / "site.yml").read_text())
    (site_dir / "site.yml").write_text(text)


def subset(site_dir: Path, count: int, target: Path) -> Path:
    """A copy of the site folder whose hosts.yml keeps the first `count` hosts."""
    target.mkdir(parents=True, exist_ok=True)
    (target / "site.yml").write_text((site_dir / "site.yml").read_text())
    inventory = yaml.safe_load((site_dir / "hosts.yml").read_text())
    hosts = inventory["all"]["children"]["telecentre"]["hosts"]
    kept = dict(list(hosts.items())[:count])
    inventory["all"]["children"]["telecentre"]["hosts"] = kept
    (target / "hosts.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    return target


def machine_busy() -> float:
    """CPU seconds the whole machine (controller and every lab host) has been busy."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


LAST_CPU: dict[str, float] = {}  # of the last timed() run: controller and machine CPU seconds


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, int, int, str]:
    """Seconds, exit code, peak RSS in MB (this process alone), stdout."""
    started, busy = time.perf_counter(), machine_busy()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.perf_counter() - started
        out.seek(0)
        text = out.read().decode(errors="replace")
    LAST_CPU.update(controller=usage.ru_utime + usage.ru_stime, machine=machine_busy() - busy)
    return elapsed, proc.returncode, usage.ru_maxrss // 1024, text


def status_argv(site_dir: Path) -> list[str]:
    return [sys.executable, "-c", RUN_STATUS, "status", str(site_dir), "--json"]


def wait_for_apt_caches(site_dir: Path, limit: float = 600) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        _, _, _, out = timed(status_argv(site_dir))
        hosts = json.loads(out)["sites"][0]["hosts"]
        pending = [h["name"] for h in hosts if (h["probe"] or {}).get("updates", {}).get(
            "security") is None]  # fmt: skip
        if not pending:
            return
        print(f"  waiting for the apt caches of {len(pending)} host(s)", file=sys.stderr)
        time.sleep(10)
    print("  some apt caches never came: their probes wait up to 3 s", file=sys.stderr)


def wait_for_quiet(limit: float = 180, idle: float = 0.25) -> None:
    """Wait until the machine is at most `idle` busy over 3 s (lab hosts finish booting,
    their timers run once): a run measured meanwhile would time the noise."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = machine_busy()
        time.sleep(3)
        busy = (machine_busy() - before) / 3 / (os.cpu_count() or 1)
        if busy <= idle:
            return
        print(f"  waiting for a quiet machine ({busy:.0%} busy)", file=sys.stderr)
    print("  the machine stayed busy: figures are noisy", file=sys.stderr)


def ansible_ping(site_dir: Path, count: int) -> float:
    with tempfile.TemporaryDirectory(prefix="tc-bench-ansible-") as tmp:
        cfg = Path(tmp) / "ansible.cfg"
        cfg.write_text(
            "[defaults]\nhost_key_checking = True\ninterpreter_python = /usr/bin/python3\n"
            f"forks = {count}\n[ssh_connection]\ncontrol_path_dir = {tmp}/cp\n"
        )
        env = {**os.environ, "ANSIBLE_CONFIG": str(cfg)}
        argv = [
            str(Path(sys.executable).with_name("ansible")),
            "all", "-i", str(site_dir / "hosts.yml"), "-m", "ansible.builtin.ping",
            "-f", str(count), "-o",
        ]  # fmt: skip
        elapsed, code, _, out = timed(argv, env)
    if code != 0:
        raise SystemExit(f"ansible ping failed ({code}):\n{out[-2000:]}")
    return elapsed


def serial_ssh(site_dir: Path) -> float:
    from telecentre_ctl.status import probe_source

    inventory = yaml.safe_load((site_dir / "hosts.yml").read_text())
    hosts: dict[str, Any] = inventory["all"]["children"]["telecentre"]["hosts"]
    source = probe_source().encode()
    params = json.dumps({"paths": ["/", "/var/lib/docker", "/srv/telecentre"], "budget": 5})
    started = time.perf_counter()
    for host_vars in hosts.values():
        subprocess.run(
            [
                "ssh", "-F", "/dev/null", "-i", host_vars["ansible_ssh_private_key_file"],
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", f"UserKnownHostsFile={host_vars['tc_known_hosts_file']}",
                "-o", "StrictHostKeyChecking=yes",
                f"root@{host_vars['ansible_host']}", f"python3 - '{params}'",
            ],
            input=source, capture_output=True, check=True,
        )  # fmt: skip
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    args = parser.parse_args()
    sizes = sorted({1, min(10, args.hosts), args.hosts})
    with tempfile.TemporaryDirectory(prefix="tc-bench-status-") as tmp:
        site_dir = Path(tmp) / SITE
        write_site(site_dir)
        started = time.perf_counter()
        control.up(site_dir, args.hosts)
        print(f"lab of {args.hosts} hosts up in {time.perf_counter() - started:.1f} s",
              file=sys.stderr)  # fmt: skip
        try:
            dirs = {n: subset(site_dir, n, Path(tmp) / f"n{n}" / SITE) for n in sizes}
            wait_for_apt_caches(dirs[args.hosts])
            status_s: dict[int, list[float]] = {n: [] for n in sizes}
            rss: dict[int, int] = {n: 0 for n in sizes}
            cpu: dict[int, list[tuple[float, float]]] = {n: [] for n in sizes}
            ping_s: list[float] = []
            serial_s: list[float] = []
            for round_no in range(args.rounds):
                wait_for_quiet()
                for n in sizes:
                    elapsed, _, peak, out = timed(status_argv(dirs[n]))
                    reached = sum(h["reachable"] for h in json.loads(out)["sites"][0]["hosts"])
                    if reached != n:
                        raise SystemExit(f"status({n}) reached only {reached} host(s)")
                    status_s[n].append(elapsed)
                    cpu[n].append((LAST_CPU["controller"], LAST_CPU["machine"]))
                    rss[n] = max(rss[n], peak)
                ping_s.append(ansible_ping(dirs[args.hosts], args.hosts))
                serial_s.append(serial_ssh(dirs[args.hosts]))
                print(f"  round {round_no + 1}/{args.rounds} done", file=sys.stderr)
        finally:
            if not args.keep:
                control.down(site_dir)
    med = {n: statistics.median(v) for n, v in status_s.items()}
    ping, serial = statistics.median(ping_s), statistics.median(serial_s)
    big = args.hosts
    print(f"\nstatus on bare lab hosts, median of {args.rounds} round(s), 2-core machine")
    print(f"{'run':<32}{'seconds':>9}{'peak RSS MB':>13}{'controller CPU s':>18}"
          f"{'machine CPU s':>15}")  # fmt: skip
    for n in sizes:
        own = statistics.median(c for c, _ in cpu[n])
        machine = statistics.median(m for _, m in cpu[n])
        print(f"{f'status ({n} host(s))':<32}{med[n]:>9.2f}{rss[n]:>13}{own:>18.2f}"
              f"{machine:>15.2f}")  # fmt: skip
    print(f"{f'ansible -m ping -f {big} ({big})':<32}{ping:>9.2f}")
    print(f"{f'serial ssh probe loop ({big})':<32}{serial:>9.2f}")
    print("\nratios")
    for n in sizes[1:]:
        target = "  (target <= 3x)" if n == big else ""
        print(f"  status({n}) / status(1)          = {med[n] / med[1]:.2f}x{target}")
    print(f"  status({big}) / ansible ping({big})   = {med[big] / ping:.3f}x  (target <= 0.2x)")
    print(f"  status({big}) / serial ssh loop   = {med[big] / serial:.3f}x")
    print(f"  peak RSS status({big})            = {rss[big]} MB  (target <= 150 MB)")
    own = statistics.median(c for c, _ in cpu[big]) - statistics.median(c for c, _ in cpu[1])
    # The wall-clock ratios depend on the hosts sharing the controller's cores here; the
    # controller's own CPU per host does not, and bounds a real fleet's cost.
    print(
        f"  controller CPU per host, status({big}) = {own / big * 1000:.0f} ms  (target <= 20 ms)"
    )
    hosts = statistics.median(m for _, m in cpu[big]) - statistics.median(c for c, _ in cpu[big])
    print(f"\nper host, status({big}): controller {own / big * 1000:.0f} ms CPU beyond start-up; "
          f"the lab hosts (sshd, probe) {hosts / big * 1000:.0f} ms CPU, on the same "
          f"{os.cpu_count()} cores here, on their own machines in a real fleet")  # fmt: skip


if __name__ == "__main__":
    main()
