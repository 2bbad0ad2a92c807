"""Members: the cost of adding one member against adding a hundred, and how long a removed
member keeps a way in.

    sudo .venv/bin/python bench/bench_members.py [SITE_DIR] [--rounds N]

SITE_DIR (default inventory/demo) runs the members' directory and is deployed on lab hosts
(scripts/demo does it). Every figure comes from `telecentre-ctl members` run as a user
runs it, in its own process, against the real directory:

1. `members add` of 1 member (the baseline) against `members import` of a CSV file of 100
   members: the ratio per member, t(100) / 100 / t(1). A request is one SSH connection
   and one `docker exec` whatever its size; each member then costs an LDAP add, one Argon2
   hash (the password-modify operation) and its group changes.
2. `members remove`, then every service asked at once (WebDAV, CalDAV, wiki login, pads,
   polls), again until each refuses the removed member: the time from the start of
   `remove` until every service refused, against the command's own time plus one round of
   logins (timed while the member was in). 1.0x: refused by the first request after the
   command returned (no service caches logins).
Members made here are removed at the end (the site's members.on_remove applies).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from telecentre_ctl.lab import state, testing
from telecentre_ctl.lab.testing import CA_ON_HOST, resolve_to

CLI = [sys.executable, "-c", "from telecentre_ctl.cli.main import main\nmain()\n"]


def ctl(*args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        what = " ".join(args[:3])
        sys.exit(f"telecentre-ctl {what} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return elapsed, proc


def plan_of(site_dir: Path) -> str:
    from telecentre_ctl.site import load_site

    plans = (load_site(site_dir).members or {}).get("plans") or {}
    return sorted(plans)[0]


def one_add(site_dir: Path, plan: str, tag: str) -> tuple[float, str, str]:
    elapsed, proc = ctl("members", str(site_dir), "add", "--name", f"Banc {tag}",
                        "--email", f"banc-{tag}@example.org", "--plan", plan, "--json")  # fmt: skip
    added = json.loads(proc.stdout)["added"][0]
    return elapsed, added["uid"], added["password"]


def import_hundred(site_dir: Path, plan: str, tag: str, folder: Path) -> tuple[float, list[str]]:
    path = folder / f"banc-{tag}.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "email", "plan"])
        for i in range(100):
            writer.writerow([f"Banc {tag} {i:03d}", f"banc-{tag}-{i:03d}@example.org", plan])
    elapsed, proc = ctl("members", str(site_dir), "import", str(path), "--json")
    return elapsed, [m["uid"] for m in json.loads(proc.stdout)["added"]]


def refusals(lan: str, ca: str, login: str, password: str) -> dict[str, Callable[[], bool]]:
    """For each service: a call that is True once the service refuses the member."""

    def status(sub: str, path: str = "/", method: str = "GET") -> int:
        s = requests.Session()
        s.trust_env = False
        return s.request(method, f"https://{sub}.{lan}{path}", auth=(login, password),
                         verify=ca, headers={"Depth": "0"}, timeout=30).status_code  # fmt: skip

    def wiki_refuses() -> bool:
        s = requests.Session()
        s.trust_env = False
        s.verify = ca
        wiki = f"https://wiki.{lan}/doku.php"
        form = s.get(wiki, params={"id": "start", "do": "login"}, timeout=30).text
        token = re.search(r'name="sectok" value="([^"]*)"', form)
        sectok = token.group(1) if token else ""
        data = {"id": "start", "do": "login", "u": login, "p": password, "sectok": sectok}
        page = s.post(wiki, timeout=30, data=data)
        return "do=logout" not in page.text

    return {
        "webdav": lambda: status("fichiers", "/commun/", "PROPFIND") == 401,
        "caldav": lambda: status("agenda", f"/{login}/") == 401,
        "wiki": wiki_refuses,
        "pads": lambda: status("pads") == 401,
        "polls": lambda: status("sondages") == 401,
    }


def all_at_once(checks: dict[str, Callable[[], bool]]) -> dict[str, tuple[bool, float]]:
    """Every service asked at the same time: {service: (refused, seconds it took)}."""

    def timed(check: Callable[[], bool]) -> tuple[bool, float]:
        started = time.perf_counter()
        return check(), time.perf_counter() - started

    with ThreadPoolExecutor(len(checks)) as pool:
        futures = {name: pool.submit(timed, check) for name, check in checks.items()}
        return {name: future.result() for name, future in futures.items()}


def time_to_refusal(
    site_dir: Path, lan: str, ca: str, login: str, password: str
) -> tuple[float, float, float, int]:
    """(seconds one round of logins takes while the member is in: the baseline; seconds of
    the remove command; seconds from its start until every service refused; rounds)."""
    checks = refusals(lan, ca, login, password)
    started = time.perf_counter()
    before = all_at_once(checks)
    baseline = time.perf_counter() - started
    assert not any(refused for refused, _ in before.values()), f"refused before removal: {before}"
    started = time.perf_counter()
    command, _ = ctl("members", str(site_dir), "remove", login)
    rounds, waiting = 0, dict(checks)
    while waiting and time.perf_counter() - started < 600:
        rounds += 1
        answers = all_at_once(waiting)
        waiting = {name: waiting[name] for name, (refused, _) in answers.items() if not refused}
    if waiting:
        sys.exit(f"still let in after 10 min: {sorted(waiting)}")
    return baseline, command, time.perf_counter() - started, rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site_dir", nargs="?", default="inventory/demo", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from telecentre_ctl.site import read_site_name

    name = read_site_name(args.site_dir)
    lab_state = state.load(name)
    if lab_state is None:
        sys.exit(f"no lab for {args.site_dir}: run scripts/demo (or lab up + deploy) first")
    lab = testing.Lab(args.site_dir, lab_state)
    plan = plan_of(args.site_dir)
    lan = f"{name}.home.arpa"
    made: list[str] = []
    ones, hundreds, commands, refusals_all, logins = [], [], [], [], []
    with tempfile.TemporaryDirectory() as scratch, resolve_to(lan, lab.hosts[0].address):
        ca = Path(scratch) / "ca.crt"
        ca.write_text(lab.run(lab.hosts[0], f"cat {CA_ON_HOST}").stdout)
        for round_no in range(args.rounds):
            tag = f"{uuid.uuid4().hex[:6]}"
            t1, uid, password = one_add(args.site_dir, plan, tag)
            t100, uids = import_hundred(args.site_dir, plan, tag, Path(scratch))
            made += uids
            ones.append(t1)
            hundreds.append(t100)
            baseline, command, refused, rounds = time_to_refusal(
                args.site_dir, lan, str(ca), uid, password
            )
            logins.append(baseline)
            commands.append(command)
            refusals_all.append(refused)
            print(f"round {round_no + 1}: add 1 {t1:.2f} s, import 100 {t100:.2f} s; logins to "
                  f"5 services {baseline:.2f} s; remove {command:.2f} s, every service refusing "
                  f"{refused:.2f} s after it started ({rounds} round(s) of logins)")  # fmt: skip
        for start in range(0, len(made), 100):
            ctl("members", str(args.site_dir), "remove", *made[start : start + 100])
    one, hundred = statistics.median(ones), statistics.median(hundreds)
    command, refused = statistics.median(commands), statistics.median(refusals_all)
    login = statistics.median(logins)
    cores = os.cpu_count()
    print(f"\nmedian of {args.rounds} round(s) on {name} ({cores} cores shared with the lab):")
    print(f"  members add, 1 member:        {one:.2f} s (baseline)")
    print(f"  members import, 100 members:  {hundred:.2f} s = {hundred / one:.2f}x the add of one")
    print(f"  per member in the import:     {hundred / 100 / one:.3f}x the add of one")
    print(f"  remove, until every service refuses: {refused:.2f} s = "
          f"{refused / (command + login):.2f}x (the remove command, {command:.2f} s, "
          f"+ one round of logins, {login:.2f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
