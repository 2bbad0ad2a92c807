"""Run a playbook on a site's hosts through ansible-runner, following Ansible's events.

Progress comes from Ansible's events (never from scraping its screen output): each result
event moves one host forward. The full run log (the events' display text) goes to a file
with the site's secrets replaced by a mask; ansible-runner's own artifacts, which hold raw
results, live in a private temporary folder removed after the run.

The same ansible.cfg, inventory and playbook serve `ansible-playbook` run by hand: this
module adds no variables of its own.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import yaml

from telecentre_ctl.errors import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE
from telecentre_ctl.paths import PROJECT_ROOT, ROLES_DIR

ANSIBLE_CONFIG = PROJECT_ROOT / "ansible.cfg"
MASK = "********"
# Secrets shorter than this are not masked: they would mask ordinary words (and the
# catalogue never generates such short secrets).
MIN_SECRET_LEN = 6


# A debug task's message is a note for the person deploying: shown in the summary.
DEBUG_ACTIONS = ("debug", "ansible.builtin.debug", "ansible.legacy.debug")

RESULT_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_skipped": "skipped",
    "runner_on_unreachable": "unreachable",
}


# --------------------------------------------------------------------------- redaction


class Redactor:
    """Replaces every known secret value in a text by a mask."""

    def __init__(self, secrets: Iterable[str]) -> None:
        values = sorted(
            {s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET_LEN},
            key=len,
            reverse=True,
        )
        self._pattern = re.compile("|".join(re.escape(v) for v in values)) if values else None

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)


def secret_values(tree: Any) -> list[str]:
    """Every string leaf of a nested secrets mapping."""
    if isinstance(tree, Mapping):
        return [v for value in tree.values() for v in secret_values(value)]
    if isinstance(tree, list | tuple):
        return [v for value in tree for v in secret_values(value)]
    return [tree] if isinstance(tree, str) else []


# --------------------------------------------------------------------------- task count


def count_tasks(playbook: Path, roles_dir: Path = ROLES_DIR) -> int:
    """How many task results one host produces in `playbook`, estimated statically.

    Counts gathered facts, the role argument checks, every task of imported files and of
    roles (dynamic includes of present roles included), and no handlers. Tasks inside
    loops count once. The estimate sets N in "task n of N"; the display grows N if more
    results arrive.
    """
    plays = _load_yaml(playbook) or []
    total = 0
    for play in plays:
        if not isinstance(play, dict):
            continue
        if "import_playbook" in play or "ansible.builtin.import_playbook" in play:
            target = play.get("import_playbook") or play.get("ansible.builtin.import_playbook")
            total += count_tasks(playbook.parent / str(target), roles_dir)
            continue
        if play.get("gather_facts", False):
            total += 1
        for section in ("pre_tasks",):
            total += _count_list(play.get(section) or [], playbook.parent, roles_dir)
        for role in play.get("roles") or []:
            name = role if isinstance(role, str) else role.get("role") or role.get("name")
            total += _count_role(str(name), roles_dir)
        for section in ("tasks", "post_tasks"):
            total += _count_list(play.get(section) or [], playbook.parent, roles_dir)
    return total


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None


def _count_role(name: str, roles_dir: Path) -> int:
    role = roles_dir / name
    main = role / "tasks" / "main.yml"
    if not main.is_file():
        return 0
    checks = 1 if (role / "meta" / "argument_specs.yml").is_file() else 0
    return checks + _count_list(_load_yaml(main) or [], main.parent, roles_dir)


def _count_list(tasks: list[Any], base: Path, roles_dir: Path) -> int:
    total = 0
    for task in tasks:
        if not isinstance(task, dict):
            continue
        if "block" in task:
            for part in ("block", "always"):
                total += _count_list(task.get(part) or [], base, roles_dir)
            continue
        target = _action(task, "import_tasks") or _action(task, "include_tasks")
        if isinstance(target, str) and "{{" not in target:
            total += _count_list(_load_yaml(base / target) or [], base, roles_dir)
            continue
        role = _action(task, "include_role") or _action(task, "import_role")
        if isinstance(role, dict) and isinstance(role.get("name"), str):
            present = _count_role(role["name"], roles_dir)
            total += present if present else 1  # an absent role: the one failed result
            continue
        total += 1
    return total


def _action(task: dict[str, Any], name: str) -> Any:
    return task.get(f"ansible.builtin.{name}", task.get(name))


# --------------------------------------------------------------------------- progress


@dataclass
class HostProgress:
    """One host's counts as the run goes, and at the end."""

    name: str
    total: int
    done: int = 0
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    task: str = ""
    finished: bool = False
    message: str = ""
    notes: list[str] = field(default_factory=list)  # what the roles' debug tasks told

    @property
    def status(self) -> str:
        if self.unreachable:
            return "unreachable"
        if self.failed:
            return "failed"
        if not self.finished:
            return "interrupted"
        return "changed" if self.changed else "ok"

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("total", "done", "task", "finished"):
            data.pop(key)
        data["status"] = self.status
        return data


@dataclass
class RunResult:
    """What a run did, per host, and where its log is."""

    hosts: dict[str, HostProgress]
    log_file: Path
    rc: int
    check: bool
    seconds: float
    completed: bool  # Ansible reached its final statistics
    problem: str = ""  # why the run stopped short, when it did
    task_times: list[tuple[str, float]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if any(h.status == "unreachable" for h in self.hosts.values()):
            return EXIT_UNREACHABLE
        if not self.completed or any(
            h.status != "ok" and h.status != "changed" for h in self.hosts.values()
        ):
            return EXIT_FAILED
        return EXIT_OK if self.rc == 0 else EXIT_FAILED

    def as_data(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "completed": self.completed,
            "exit_code": self.exit_code,
            "seconds": round(self.seconds, 1),
            "log": str(self.log_file),
            "problem": self.problem,
            "hosts": {name: h.summary() for name, h in sorted(self.hosts.items())},
        }


@dataclass
class EventTracker:
    """Turns ansible-runner events into per-host progress. Pure: no I/O."""

    total: int
    hosts: dict[str, HostProgress] = field(default_factory=dict)
    completed: bool = False
    # (task name, seconds from its start to the next task's start), in run order
    task_times: list[tuple[str, float]] = field(default_factory=list)
    _task_start: tuple[str, float] | None = None

    def host(self, name: str) -> HostProgress:
        if name not in self.hosts:
            self.hosts[name] = HostProgress(name=name, total=self.total)
        return self.hosts[name]

    def feed(self, event: Mapping[str, Any]) -> HostProgress | None:
        """Account for one event; return the host it moved, if any."""
        kind = str(event.get("event", ""))
        data = event.get("event_data") or {}
        if kind in ("playbook_on_task_start", "playbook_on_handler_task_start"):
            self._clock(str(data.get("task", "")), event.get("created"))
            return None
        if kind == "playbook_on_stats":
            self._clock("", event.get("created"))
            self._stats(data)
            return None
        if kind == "runner_on_start":
            progress = self.host(str(data.get("host", "")))
            progress.task = str(data.get("task", ""))
            return progress
        outcome = RESULT_EVENTS.get(kind)
        if outcome is None or not data.get("host"):
            return None
        progress = self.host(str(data["host"]))
        progress.done += 1
        progress.total = max(progress.total, progress.done)
        progress.task = str(data.get("task", progress.task))
        res = data.get("res") or {}
        if outcome == "ok":
            progress.ok += 1
            if res.get("changed"):
                progress.changed += 1
            if str(data.get("task_action", "")) in DEBUG_ACTIONS:
                progress.notes += _notes(res)
        elif outcome == "failed" and not data.get("ignore_errors"):
            progress.failed += 1
            progress.message = _first_line(res.get("msg", "")) or progress.message
        elif outcome == "skipped":
            progress.skipped += 1
        elif outcome == "unreachable":
            progress.unreachable += 1
            progress.message = _first_line(res.get("msg", "")) or progress.message
        return progress

    def _clock(self, task: str, created: Any) -> None:
        try:
            now = datetime.fromisoformat(str(created)).timestamp()
        except ValueError:
            return
        if self._task_start is not None:
            name, began = self._task_start
            self.task_times.append((name, max(0.0, now - began)))
        self._task_start = (task, now) if task else None

    def _stats(self, data: Mapping[str, Any]) -> None:
        """Ansible's final statistics are the authority for the summary."""
        self.completed = True
        names = set()
        for key in ("ok", "changed", "failures", "dark", "skipped", "processed"):
            names |= set((data.get(key) or {}).keys())
        for name in names:
            progress = self.host(name)
            progress.ok = int((data.get("ok") or {}).get(name, 0))
            progress.changed = int((data.get("changed") or {}).get(name, 0))
            progress.failed = int((data.get("failures") or {}).get(name, 0))
            progress.unreachable = int((data.get("dark") or {}).get(name, 0))
            progress.skipped = int((data.get("skipped") or {}).get(name, 0))
            progress.finished = True


def _notes(res: Mapping[str, Any]) -> list[str]:
    """A debug task's message(s), one per loop item that ran: the roles' notes to the user."""
    results = res.get("results")
    items: list[Any] = results if isinstance(results, list) else [res]
    return [
        " ".join(str(r["msg"]).split())
        for r in items
        if isinstance(r, Mapping) and r.get("msg") and not r.get("skipped")
    ]


def _first_line(text: Any) -> str:
    lines = str(text).strip().splitlines()
    return lines[0][:200] if lines else ""


# --------------------------------------------------------------------------- the run


@dataclass
class RunRequest:
    """Everything one ansible-playbook run needs."""

    inventory: Path
    playbook: Path
    log_file: Path
    vault_password_file: Path | None = None
    limit: str | None = None
    check: bool = False
    extravars: dict[str, Any] = field(default_factory=dict)
    tags: str | None = None  # only these tags (comma-separated), e.g. "base,docker"
    env: dict[str, str] = field(default_factory=dict)  # e.g. ANSIBLE_FORKS (bench/)
    secrets: list[str] = field(default_factory=list)  # values to mask in the log


ProgressCallback = Callable[[HostProgress], None]


def _path_with_our_ansible() -> str:
    """PATH with this Python's bin folder first (the project's venv, where its
    ansible-playbook is), so that `.venv/bin/telecentre-ctl` works without the venv on
    PATH: ansible-runner finds ansible-playbook through PATH only."""
    here = str(Path(sys.executable).parent)
    rest = [p for p in os.environ.get("PATH", os.defpath).split(os.pathsep) if p and p != here]
    return os.pathsep.join([here, *rest])


def run_playbook(request: RunRequest, on_progress: ProgressCallback | None = None) -> RunResult:
    """Run the playbook; every host carries on whatever happens to the others."""
    # Heavy, and without type hints: imported only when a run starts.
    ansible_runner: Any = importlib.import_module("ansible_runner")

    redact = Redactor(request.secrets)
    tracker = EventTracker(total=count_tasks(request.playbook))
    request.log_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = Path(tempfile.mkdtemp(prefix="telecentre-run-"))
    started = time.monotonic()
    cmdline = []
    if request.vault_password_file is not None:
        cmdline += ["--vault-password-file", str(request.vault_password_file)]
    if request.check:
        cmdline.append("--check")
    envvars = {
        "ANSIBLE_CONFIG": str(ANSIBLE_CONFIG),
        "ANSIBLE_NOCOLOR": "True",
        "PATH": _path_with_our_ansible(),
    }
    envvars |= request.env
    fd = os.open(request.log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as log:
        _log_header(log, request)

        def handle(event: dict[str, Any]) -> bool:
            text = event.get("stdout")
            if text:
                log.write(redact(str(text)) + "\n")
                log.flush()
            moved = tracker.feed(event)
            if moved is not None and on_progress is not None:
                on_progress(moved)
            return False  # keep raw events (results, maybe secrets) off the disk

        try:
            runner = ansible_runner.run(
                private_data_dir=str(private),
                project_dir=str(PROJECT_ROOT),
                playbook=str(request.playbook.resolve()),
                inventory=str(request.inventory.resolve()),
                limit=request.limit,
                tags=request.tags,
                extravars=request.extravars or None,
                cmdline=" ".join(_quote(c) for c in cmdline) or None,
                envvars=envvars,
                event_handler=handle,
                quiet=True,
                suppress_env_files=True,
                rotate_artifacts=1,
            )
            # pexpect gives no exit status for a process killed by a signal
            rc = int(runner.rc) if runner.rc is not None else -1
            status = str(runner.status)
        finally:
            shutil.rmtree(private, ignore_errors=True)
        seconds = time.monotonic() - started
        problem = ""
        if not tracker.completed:
            problem = _why_short(rc, status)
        log.write(f"\n# ansible-playbook rc={rc} status={status} in {seconds:.1f} s\n")
        if problem:
            log.write(f"# {problem}\n")
    return RunResult(
        hosts=tracker.hosts,
        log_file=request.log_file,
        rc=rc,
        check=request.check,
        seconds=seconds,
        completed=tracker.completed,
        problem=problem,
        task_times=tracker.task_times,
    )


def _why_short(rc: int, status: str) -> str:
    if rc < 0 or rc >= 128:
        return "ansible-playbook was killed (by a signal) before the end of the run"
    if status == "timeout":
        return "ansible-playbook timed out"
    return f"ansible-playbook stopped before running any host to the end (exit {rc})"


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def _log_header(log: TextIO, request: RunRequest) -> None:
    log.write(
        "# telecentre-ctl run log (secrets masked)\n"
        f"# started  {time.strftime('%Y-%m-%d %H:%M:%S %z')}\n"
        f"# playbook {request.playbook}\n"
        f"# hosts    {request.inventory}"
        + (f" --limit {request.limit}" if request.limit else "")
        + (" --check" if request.check else "")
        + "\n\n"
    )


def log_path(site_dir: Path, action: str) -> Path:
    """SITE_DIR/logs/<action>-<time>.log; never overwrites an earlier log."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(site_dir) / "logs" / f"{action}-{stamp}.log"
    n = 1
    while path.exists():
        n += 1
        path = path.with_name(f"{action}-{stamp}-{n}.log")
    return path
