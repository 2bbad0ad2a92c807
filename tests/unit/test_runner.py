"""The runner and the deploy command, with Ansible faked at its boundary (ansible-runner)."""

from __future__ import annotations

import io
import json
import os
import socket
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from telecentre_ctl import runner
from telecentre_ctl.errors import EXIT_FAILED, EXIT_INVALID, EXIT_OK, EXIT_UNREACHABLE
from telecentre_ctl.paths import PLAYBOOKS_DIR


def test_redactor_masks_every_secret_longest_first() -> None:
    redact = runner.Redactor(["s3cretvalue", "s3cretvalue-longer", "abc", ""])
    text = "a=s3cretvalue b=s3cretvalue-longer c=abc"
    assert redact(text) == f"a={runner.MASK} b={runner.MASK} c=abc"
    assert runner.Redactor([])("unchanged") == "unchanged"


def test_secret_values_walks_the_nested_secrets() -> None:
    tree = {"nextcloud": {"admin": "one", "db": "two"}, "backup": {"restic_password": "three"}}
    assert sorted(runner.secret_values(tree)) == ["one", "three", "two"]


def test_count_tasks_of_the_real_playbook_matches_its_roles(tmp_path: Path) -> None:
    from telecentre_ctl.paths import ROLES_DIR

    only_host_roles = tmp_path / "roles"
    only_host_roles.mkdir()
    for name in ("base", "docker"):
        (only_host_roles / name).symlink_to(ROLES_DIR / name)
    bare = runner.count_tasks(PLAYBOOKS_DIR / "site.yml", only_host_roles)
    # facts + both roles' argument checks and tasks
    assert 35 <= bare <= 60
    # every role of the play counts its own tasks
    services = sum(
        runner._count_role(n, ROLES_DIR) for n in ("proxy", "service", "backup", "portal")
    )
    assert services > 4
    assert runner.count_tasks(PLAYBOOKS_DIR / "site.yml") == bare + services


def test_count_tasks_follows_imports_blocks_and_roles(tmp_path: Path) -> None:
    roles = tmp_path / "roles"
    (roles / "r" / "tasks").mkdir(parents=True)
    (roles / "r" / "meta").mkdir()
    (roles / "r" / "meta" / "argument_specs.yml").write_text("argument_specs: {}\n")
    (roles / "r" / "tasks" / "main.yml").write_text(
        "- ansible.builtin.import_tasks: more.yml\n- ansible.builtin.debug: {}\n"
    )
    (roles / "r" / "tasks" / "more.yml").write_text(
        "- block:\n    - ansible.builtin.debug: {}\n    - ansible.builtin.debug: {}\n"
        "  always:\n    - ansible.builtin.debug: {}\n"
    )
    book = tmp_path / "play.yml"
    book.write_text(
        "- hosts: all\n  gather_facts: true\n  roles: [r]\n  tasks:\n"
        "    - ansible.builtin.include_role: {name: absent}\n"
        "    - ansible.builtin.include_role: {name: r}\n"
    )
    # facts 1 + role (check 1 + 3 block + 1) + absent slot 1 + role again 5
    assert runner.count_tasks(book, roles) == 1 + 5 + 1 + 5


def _event(kind: str, host: str = "", **data: Any) -> dict[str, Any]:
    event_data = dict(data)
    if host:
        event_data["host"] = host
    return {"event": kind, "event_data": event_data, "created": "2026-01-01T00:00:00.000000"}


def test_debug_messages_are_notes_in_the_summary() -> None:
    t = runner.EventTracker(total=2)
    debug = {"task_action": "ansible.builtin.debug"}
    t.feed(_event("runner_on_ok", "a", task="n", res={"msg": "radicale now\n runs on b"}, **debug))
    looped = {"results": [{"msg": "one"}, {"skipped": True, "msg": "no"}, {"msg": "two"}]}
    t.feed(_event("runner_on_ok", "a", task="m", res=looped, **debug))
    t.feed(_event("runner_on_ok", "a", task="x", res={"msg": "not a note"}, task_action="command"))
    t.feed(_event("runner_on_skipped", "a", task="s", res={"msg": "skipped"}, **debug))
    assert t.hosts["a"].notes == ["radicale now runs on b", "one", "two"]
    assert t.hosts["a"].summary()["notes"] == t.hosts["a"].notes


def _stats(**per_host: dict[str, int]) -> dict[str, Any]:
    keys = ("ok", "changed", "failures", "dark", "skipped")
    data = {k: {h: c.get(k, 0) for h, c in per_host.items()} for k in keys}
    return _event("playbook_on_stats", **data)


def test_tracker_counts_results_per_host_and_trusts_the_final_stats() -> None:
    t = runner.EventTracker(total=3)
    t.feed(_event("playbook_on_task_start", task="one"))
    t.feed(_event("runner_on_start", "a", task="one"))
    t.feed(_event("runner_on_ok", "a", task="one", res={"changed": True}))
    t.feed(_event("runner_item_on_ok", "a", task="one", res={"changed": True}))  # not counted
    t.feed(_event("runner_on_ok", "b", task="one", res={"changed": False}))
    t.feed(_event("runner_on_skipped", "a", task="two"))
    t.feed(_event("runner_on_failed", "b", task="two", res={"msg": "boom\nmore"}))
    t.feed(_event("runner_on_failed", "b", task="x", ignore_errors=True, res={}))
    a, b = t.hosts["a"], t.hosts["b"]
    assert (a.done, a.ok, a.changed, a.skipped) == (2, 1, 1, 1)
    assert (b.done, b.failed, b.message) == (3, 1, "boom")
    assert b.total == 3 and not t.completed
    assert a.status == "interrupted"
    t.feed(_stats(a={"ok": 1, "changed": 1, "skipped": 1}, b={"ok": 1, "failures": 1}))
    assert t.completed and a.status == "changed" and b.status == "failed"
    assert [name for name, _ in t.task_times] == ["one"]


def _result(completed: bool = True, rc: int = 0, **statuses: dict[str, int]) -> runner.RunResult:
    hosts = {}
    for name, counts in statuses.items():
        h = runner.HostProgress(name=name, total=1, finished=completed, **counts)
        hosts[name] = h
    return runner.RunResult(hosts, Path("/x.log"), rc, False, 1.0, completed)


def test_exit_codes_unreachable_over_failed_over_ok() -> None:
    assert _result(a={"ok": 3}).exit_code == EXIT_OK
    assert _result(a={"ok": 3, "changed": 2}).exit_code == EXIT_OK
    assert _result(rc=2, a={"ok": 3}, b={"failed": 1}).exit_code == EXIT_FAILED
    assert _result(rc=4, a={"failed": 1}, b={"unreachable": 1}).exit_code == EXIT_UNREACHABLE
    assert _result(completed=False, rc=-9, a={"ok": 2}).exit_code == EXIT_FAILED
    data = _result(a={"ok": 1, "changed": 1}).as_data()
    assert data["hosts"]["a"] == {
        "name": "a", "ok": 1, "changed": 1, "failed": 0, "unreachable": 0, "skipped": 0,
        "message": "", "notes": [], "status": "changed",
    }  # fmt: skip


class FakeRunnerModule(types.ModuleType):
    """ansible_runner.run as the runner calls it: events in, an object with rc/status out."""

    def __init__(self, events: list[dict[str, Any]], rc: int | None, status: str) -> None:
        super().__init__("ansible_runner")
        self.events, self.rc, self.status = events, rc, status
        self.kwargs: dict[str, Any] = {}

    def run(self, **kwargs: Any) -> Any:
        self.kwargs = kwargs
        assert Path(kwargs["private_data_dir"]).is_dir()
        for event in self.events:
            kwargs["event_handler"](event)
        return types.SimpleNamespace(rc=self.rc, status=self.status)


def _run_with(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake: FakeRunnerModule,
              **request: Any) -> runner.RunResult:  # fmt: skip
    monkeypatch.setitem(sys.modules, "ansible_runner", fake)
    req = runner.RunRequest(
        inventory=tmp_path / "hosts.yml",
        playbook=PLAYBOOKS_DIR / "site.yml",
        log_file=tmp_path / "logs" / "deploy.log",
        **request,
    )
    seen: list[str] = []
    result = runner.run_playbook(req, on_progress=lambda p: seen.append(p.name))
    assert set(seen) <= set(result.hosts)
    return result


def test_run_logs_the_display_text_with_secrets_masked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    events = [
        {**_event("runner_on_ok", "a", task="t", res={"changed": True}),
         "stdout": "changed: [a] => password=hunter2hunter2"},
        _stats(a={"ok": 1, "changed": 1}),
    ]  # fmt: skip
    fake = FakeRunnerModule(events, 0, "successful")
    result = _run_with(monkeypatch, tmp_path, fake, secrets=["hunter2hunter2"], check=True,
                       vault_password_file=tmp_path / "v.pass", limit="a")  # fmt: skip
    log = result.log_file.read_text()
    assert "hunter2hunter2" not in log and f"password={runner.MASK}" in log
    assert oct(result.log_file.stat().st_mode & 0o777) == "0o600"
    assert result.exit_code == EXIT_OK and result.check
    kwargs = fake.kwargs
    assert "--check" in kwargs["cmdline"] and "--vault-password-file" in kwargs["cmdline"]
    assert kwargs["limit"] == "a"
    assert kwargs["envvars"]["ANSIBLE_CONFIG"].endswith("ansible.cfg")
    # the venv's own ansible-playbook comes first on PATH, whatever the caller's PATH
    first = kwargs["envvars"]["PATH"].split(os.pathsep)[0]
    assert first == str(Path(sys.executable).parent)
    assert (Path(first) / "ansible-playbook").is_file()
    assert not Path(kwargs["private_data_dir"]).exists()  # raw artifacts removed


def test_a_killed_ansible_is_reported_as_interrupted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    events = [_event("runner_on_ok", "a", task="t", res={})]
    result = _run_with(monkeypatch, tmp_path, FakeRunnerModule(events, None, "failed"))
    assert not result.completed and result.exit_code == EXIT_FAILED
    assert "killed" in result.problem
    assert result.hosts["a"].status == "interrupted"


def test_progress_view_plain_lines_and_terminal_bars() -> None:
    from telecentre_ctl.cli.deploy import ProgressView

    plain = io.StringIO()
    view = ProgressView(plain, ["a"], 4)
    progress = runner.HostProgress(name="a", total=4, done=1, changed=1, task="Install")
    view.update(progress)
    view.update(progress)  # no new result: no new line
    assert plain.getvalue() == "a  task 1/4  changed 1 failed 0  Install\n"

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    bars = ProgressView(tty, ["a", "b"], 4)
    bars.update(runner.HostProgress(name="a", total=4, done=2, task="Install"))
    bars.update(runner.HostProgress(name="b", total=4, done=4, task="Done"))
    out = tty.getvalue()
    assert "[##########----------]   2/4" in out and "[####################]   4/4" in out
    assert "\x1b[2F" in out  # the second update redraws both lines in place


def _cli() -> Any:
    from telecentre_ctl.cli.main import cli

    return cli


def test_a_broken_site_is_refused_before_any_connection(tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    site = tmp_path / "broken"
    site.mkdir()
    (site / "site.yml").write_text("name: broken\ntitle: 3\nprofile: nope\n")
    (site / "hosts.yml").write_text(json.dumps({"all": {"children": {"telecentre": {"hosts": {
        "h1": {"ansible_host": "127.0.0.1", "ansible_port": port}}}}}}))  # fmt: skip
    result = CliRunner().invoke(_cli(), ["deploy", str(site), "--json"])
    assert result.exit_code == EXIT_INVALID, result.output
    assert "site.yml" in result.output and result.stdout.strip() == ""
    with pytest.raises(TimeoutError):
        listener.accept()  # nobody knocked
    listener.close()
    assert not (site / "logs").exists()


def test_limit_to_an_unknown_host_is_refused(tmp_path: Path, make_site: Any) -> None:
    site = make_site()
    result = CliRunner().invoke(_cli(), ["deploy", str(site), "--limit", "nosuchhost"])
    assert result.exit_code == EXIT_INVALID, result.output
    assert "nosuchhost" in result.output


def test_purge_reaches_the_service_role_and_json_summarises(
    monkeypatch: pytest.MonkeyPatch, make_site: Any
) -> None:
    fake = FakeRunnerModule([_stats(**{"demo-1": {"ok": 3}})], 0, "successful")
    monkeypatch.setitem(sys.modules, "ansible_runner", fake)
    result = CliRunner().invoke(_cli(), ["deploy", str(make_site()), "--purge", "--json"])
    assert result.exit_code == EXIT_OK, result.output
    assert fake.kwargs["extravars"] == {"service_purge": True}
    assert json.loads(result.stdout)["hosts"]["demo-1"]["status"] == "ok"
