"""Several telecentres at once: `deploy` and `upgrade` given several site folders.

A thin layer over the single-site commands: every site is validated first (an invalid one
stops everything before any connection, exit 2), then the first site given runs alone as
the canary, then the others run with at most `parallel` at a time. The first failure stops
the sites not yet started unless `keep_going`. Each site runs as its own process (the very
single-site command, with --json), so a site that fails, hangs on a host or crashes
touches no other; its progress goes to a log file in its folder. The exit code is the
worst of the sites: 3 (a host unreachable) > 1 (failed) > 0.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from telecentre_ctl.errors import EXIT_FAILED, EXIT_INVALID, EXIT_OK, EXIT_UNREACHABLE

SEVERITY = {EXIT_OK: 0, EXIT_FAILED: 1, EXIT_UNREACHABLE: 2}


@dataclass
class SiteRun:
    """One site of a fleet run: its exit code (None: not run), time and result."""

    site_dir: Path
    name: str
    canary: bool = False
    exit_code: int | None = None
    seconds: float = 0.0
    message: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    log: Path | None = None

    @property
    def state(self) -> str:
        if self.exit_code is None:
            return "not run"
        return {EXIT_OK: "ok", EXIT_UNREACHABLE: "unreachable", EXIT_INVALID: "invalid"}.get(
            self.exit_code, "FAILED"
        )

    def as_data(self) -> dict[str, Any]:
        return {
            "site": self.name,
            "dir": str(self.site_dir),
            "canary": self.canary,
            "state": self.state,
            "exit_code": self.exit_code,
            "seconds": round(self.seconds, 1),
            "message": self.message,
            "log": str(self.log) if self.log else None,
            "result": self.result,
        }


def worst(codes: Sequence[int | None]) -> int:
    """3 > 1 > 0; a site refused as invalid counts as failed once others ran."""
    ran = [EXIT_FAILED if c == EXIT_INVALID else c for c in codes if c is not None]
    return max(ran, key=lambda c: SEVERITY.get(c, 1), default=EXIT_OK)


Runner = Callable[[SiteRun], None]


def run_fleet(
    runs: list[SiteRun],
    run_one: Runner,
    *,
    parallel: int,
    keep_going: bool,
    on_event: Callable[[str, SiteRun], None] | None = None,
) -> list[SiteRun]:
    """The canary (first) alone, then the rest, `parallel` at a time; stops starting sites
    after the first failure unless keep_going. `run_one` fills in the SiteRun."""
    stop = threading.Event()

    def one(run: SiteRun) -> None:
        if stop.is_set():
            return
        if on_event is not None:
            on_event("start", run)
        started = time.monotonic()
        try:
            run_one(run)
        except Exception as err:  # a bug in one site's run must not take the others down
            run.exit_code, run.message = EXIT_FAILED, f"{type(err).__name__}: {err}"
        run.seconds = time.monotonic() - started
        if run.exit_code != EXIT_OK and not keep_going:
            stop.set()
        if on_event is not None:
            on_event("done", run)

    if not runs:
        return runs
    runs[0].canary = True
    one(runs[0])
    rest = runs[1:]
    if rest and not stop.is_set():
        with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="site") as pool:
            list(pool.map(one, rest))
    return runs


def subprocess_runner(command: str, options: list[str]) -> Runner:
    """Runs `telecentre-ctl COMMAND SITE_DIR --json OPTIONS` for a site, in its own
    process; its progress and messages go to SITE_DIR/logs/fleet-COMMAND-<time>.log."""
    from telecentre_ctl.runner import log_path

    def run(site: SiteRun) -> None:
        site.log = log_path(site.site_dir, f"fleet-{command}")
        site.log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        argv = [sys.executable, "-m", "telecentre_ctl.cli.main", command, str(site.site_dir)]
        with open(site.log, "w", encoding="utf-8") as err:
            proc = subprocess.run(
                [*argv, "--json", *options],
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
                text=True,
                check=False,
            )
        site.exit_code = proc.returncode
        try:
            site.result = json.loads(proc.stdout) if proc.stdout.strip() else {}
        except ValueError:
            site.result = {}
        site.message = last_error(site.log) if proc.returncode != EXIT_OK else ""

    return run


def last_error(log: Path) -> str:
    """The error line the single-site command printed last (its `error: ...`)."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith("error: "):
            return lines[index][len("error: ") :][:300]
    tail = [ln for ln in lines if ln.strip()]
    return tail[-1][:300] if tail else ""


def summary_table(runs: list[SiteRun]) -> str:
    from telecentre_ctl.output import table

    rows = [
        [
            r.name + (" (canary)" if r.canary else ""),
            r.state,
            "" if r.exit_code is None else r.exit_code,
            f"{r.seconds:.0f} s" if r.exit_code is not None else "",
            r.message or (str(r.log) if r.log and r.exit_code else ""),
        ]
        for r in runs
    ]
    return table(["site", "result", "exit", "time", "detail"], rows)
