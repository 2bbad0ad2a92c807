"""Benchmark: a no-op re-run of the full site (playbooks/site.yml) on 1 and 10 lab hosts,
with the project's settings (ansible.cfg: pipelining, ControlPersist=120s, 20 forks)
against Ansible's real defaults, measured in the same run. Prints ratios and seconds per
task. Needs root and the lab (like `telecentre-ctl lab up`). Not a test: it asserts
nothing, it measures.

    sudo python3 bench/bench_deploy.py [--hosts 1,10] [--rounds 3]

The baseline is what stock Ansible does, read from Ansible itself (not typed here): no
pipelining, the ssh connection's default ssh_args (`-C -o ControlMaster=auto
-o ControlPersist=60s`: connections ARE reused within a run) and 5 forks; everything else
(roles, vars plugin, host key checks) stays the project's. Each round runs tuned and
baseline alternately, each with a fresh SSH control folder (no connection left warm from
the previous run: a volunteer's re-run comes minutes later).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from telecentre_ctl import runner  # noqa: E402
from telecentre_ctl.lab import control, testing  # noqa: E402
from telecentre_ctl.paths import PLAYBOOKS_DIR  # noqa: E402

SITE = testing.site_name("deploybch")  # + $TELECENTRE_TEST_SITE_SUFFIX: one per checkout


def write_site(site_dir: Path) -> None:
    site_dir.mkdir(parents=True, exist_ok=True)
    key = site_dir.parent / "admin_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                       check=True)  # fmt: skip
    pub = key.with_suffix(".pub").read_text().strip()
    (site_dir / "site.yml").write_text(
        f"name: {SITE}\ntitle: Bench\nlocale: en\nadmin_email: admin@example.org\n"
        f'admins: [{{name: alice, ssh_key: "{pub}"}}]\nprofile: lite\nservices: {{}}\n'
        'backup: {target: /srv/backup, time: "02:30", keep: {daily: 7, weekly: 4, monthly: 6}}\n'
    )


def ansible_defaults() -> dict[str, str]:
    """Ansible's own defaults for the settings ansible.cfg tunes for speed (the ssh
    connection's, doc fragments included), as environment variables: they override
    ansible.cfg."""
    from ansible import constants
    from ansible.plugins.loader import connection_loader

    connection_loader.get("ssh", class_only=True)  # loads its option definitions
    ssh = constants.config.get_configuration_definitions("connection", "ssh")
    forks = constants.config.get_configuration_definitions()["DEFAULT_FORKS"]["default"]
    return {
        "ANSIBLE_PIPELINING": str(ssh["pipelining"]["default"]),
        "ANSIBLE_SSH_ARGS": str(ssh["ssh_args"]["default"]),
        "ANSIBLE_FORKS": str(forks),
    }


def one_run(site_dir: Path, password: Path, env: dict[str, str]) -> runner.RunResult:
    with tempfile.TemporaryDirectory(prefix="tc-bench-cp-") as cp:
        request = runner.RunRequest(
            inventory=site_dir / "hosts.yml",
            playbook=PLAYBOOKS_DIR / "site.yml",
            log_file=runner.log_path(site_dir, "bench"),
            vault_password_file=password,
            env={"ANSIBLE_SSH_CONTROL_PATH_DIR": cp, **env},
        )
        result = runner.run_playbook(request)
    if result.exit_code != 0:
        raise SystemExit(f"run failed ({result.problem}); see {result.log_file}")
    return result


def bench(hosts: int, rounds: int, workdir: Path, password: Path) -> dict[str, float]:
    from telecentre_ctl.secrets import ensure_site_secrets
    from telecentre_ctl.site import load_site

    site_dir = workdir / f"h{hosts}" / SITE
    write_site(site_dir)
    print(f"\n== {hosts} host(s): lab up, first converge (not measured)", flush=True)
    control.up(site_dir, hosts)
    try:
        ensure_site_secrets(load_site(site_dir, check_secrets=False))
        started = time.monotonic()
        first = one_run(site_dir, password, {})
        print(f"   converged in {time.monotonic() - started:.0f} s", flush=True)
        one_run(site_dir, password, {})  # settle: any handler-driven change is done now
        tuned: list[float] = []
        default: list[float] = []
        tasks = 0
        slowest: list[tuple[str, float]] = []
        baseline = ansible_defaults()
        print(
            "   baseline (Ansible's defaults): "
            + " ".join(f"{k}={v!r}" for k, v in baseline.items())
        )
        for n in range(rounds):
            t = one_run(site_dir, password, {})
            d = one_run(site_dir, password, baseline)
            changed = sum(h.changed for h in (*t.hosts.values(), *d.hosts.values()))
            if changed:
                print(f"   warning: {changed} change(s) in a no-op run", flush=True)
            tuned.append(t.seconds)
            default.append(d.seconds)
            tasks = len(t.task_times)
            slowest = sorted(t.task_times, key=lambda x: -x[1])[:5]
            print(f"   round {n + 1}: tuned {t.seconds:.1f} s, Ansible's defaults "
                  f"{d.seconds:.1f} s", flush=True)  # fmt: skip
        del first
    finally:
        control.down(site_dir)
    tm, dm = statistics.median(tuned), statistics.median(default)
    print(f"   median: tuned {tm:.1f} s, Ansible's defaults {dm:.1f} s, ratio {tm / dm:.2f}x")
    print(f"   {tasks} tasks: {tm / max(tasks, 1):.2f} s/task tuned, "
          f"{dm / max(tasks, 1):.2f} s/task default")  # fmt: skip
    print("   slowest tasks (tuned): " + ", ".join(f"{n} {s:.1f} s" for n, s in slowest))
    return {"hosts": hosts, "tuned": tm, "default": dm, "ratio": tm / dm, "tasks": tasks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="1,10", help="comma-separated host counts")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the lab needs root: run with sudo")
    with tempfile.TemporaryDirectory(prefix="tc-bench-") as tmp:
        workdir = Path(tmp)
        password = workdir / "vault.pass"
        os.environ["TELECENTRE_VAULT_PASSWORD_FILE"] = str(password)
        results = [bench(int(n), args.rounds, workdir, password) for n in args.hosts.split(",")]
    print(
        "\nhosts  tuned s  default s  ratio  s/task tuned  s/task default"
        "   (default = Ansible's defaults: no pipelining, ControlPersist=60s, 5 forks)"
    )
    for r in results:
        tasks = max(int(r["tasks"]), 1)
        per_task = f"{r['tuned'] / tasks:>12.2f}  {r['default'] / tasks:>14.2f}"
        print(f"{int(r['hosts']):>5}  {r['tuned']:>7.1f}  {r['default']:>9.1f}  "
              f"{r['ratio']:>4.2f}x  {per_task}")  # fmt: skip


if __name__ == "__main__":
    main()
