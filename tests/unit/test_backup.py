"""Backups: what each host backs up (telecentre_ctl.backup), the recovery sheet, the CLI's
input checks, and the host program (roles/backup/files/telecentre_backup.py) with a fake
at the process boundary (restic, docker), on real folders."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner

from telecentre_ctl import backup
from telecentre_ctl.catalog import load_catalog
from telecentre_ctl.errors import InvalidInput
from telecentre_ctl.paths import ROLES_DIR
from tests.conftest import MakeSite

SCRIPT = ROLES_DIR / "backup" / "files" / "telecentre_backup.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("telecentre_backup", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["telecentre_backup"] = module
    spec.loader.exec_module(module)
    return module


tb = load_script()


@pytest.fixture(autouse=True)
def keep_umask() -> Any:
    """The host program sets umask 077 for itself; it must not leak into this process."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield
    os.umask(previous)


# --------------------------------------------------------------------------- host_config


def demo_config(make_site: MakeSite, **options: Any) -> dict[str, Any]:
    from telecentre_ctl.site import load_site

    site = load_site(make_site())
    host = site.hosts[0].name
    return backup.host_config(
        site.as_data(), site.catalog.as_data(), site.placement()[host], host, options
    )


def test_host_config_of_the_demo_site(make_site: MakeSite) -> None:
    cfg = demo_config(make_site, keep_safety="2", min_free_mb=64)
    names = [s["name"] for s in cfg["services"]]
    from telecentre_ctl.site import load_site

    assert names == [*load_site(make_site()).services, "proxy"]
    by_name = {s["name"]: s for s in cfg["services"]}
    webdav = by_name["webdav"]
    assert webdav["volumes"] == ["/srv/telecentre/webdav/files"]
    assert webdav["database"] is None
    assert webdav["compose_file"] == "/opt/telecentre/webdav/compose.yml"
    dokuwiki = by_name["dokuwiki"]
    declared = load_catalog()["dokuwiki"].data["backup"]["volumes"]
    assert dokuwiki["volumes"] == [f"/srv/telecentre/dokuwiki/{v}" for v in declared]
    assert cfg["repository"] == f"/srv/backup/demo/{cfg['host']}"
    assert cfg["target"] == "/srv/backup"
    assert cfg["keep"] == {"daily": 7, "weekly": 4, "monthly": 6}
    assert cfg["keep_safety"] == 2 and cfg["min_free_mb"] == 64
    assert cfg["password_file"] == "/etc/telecentre/backup/restic.pass"
    assert cfg["sftp_key"] is None  # a local target: no SSH key
    # the configuration is data for the host program, which reads it as it is
    parsed = tb.Config.from_data(json.loads(json.dumps(cfg)))
    assert parsed.service("webdav").volumes == ("/srv/telecentre/webdav/files",)
    assert parsed.keep_safety == 2


def test_host_config_refuses_unknown_options(make_site: MakeSite) -> None:
    with pytest.raises(ValueError, match="unknown backup options: colour"):
        demo_config(make_site, colour="blue")


def test_database_consumers_get_a_dump() -> None:
    catalog = load_catalog().as_data()
    placed = ["postgres", "mariadb", "redis", "nextcloud", "dolibarr", "etherpad"]
    found = {s["name"]: s for s in backup.services_to_back_up(placed, catalog)}
    # the servers themselves are backed up through their consumers' dumps
    assert set(found) == {"nextcloud", "dolibarr", "etherpad"}
    assert found["nextcloud"]["database"] == {
        "engine": "postgres",
        "container": "tc-postgres",
        "name": "tc_nextcloud",
    }
    assert found["dolibarr"]["database"]["engine"] == "mariadb"
    assert found["etherpad"]["volumes"] == ["/srv/telecentre/etherpad/var"]


def test_targets_and_schedule() -> None:
    assert backup.repository("/media/usb/", "comptoir", "box") == "/media/usb/comptoir/box"
    assert backup.repository("sftp:bk@nas:/bk", "c", "h") == "sftp:bk@nas:/bk/c/h"
    assert backup.local_target("sftp:bk@nas:/bk") is None
    assert backup.local_target("/srv/backup/") == "/srv/backup"
    assert backup.sftp_parts("sftp:bk@nas.lan:/bk") == {
        "user": "bk",
        "host": "nas.lan",
        "path": "/bk",
    }
    assert backup.timer_calendar("02:30") == "*-*-* 02:30:00"
    assert backup.restic_options("/srv/backup") == []
    (option,) = backup.restic_options("sftp:bk@nas:/bk")
    assert "StrictHostKeyChecking=yes" in option and "id_ed25519" in option


# --------------------------------------------------------------------------- recovery sheet


def test_recovery_sheet(make_site: MakeSite, tmp_path: Path) -> None:
    from telecentre_ctl.site import load_site

    site = load_site(make_site())
    text = backup.recovery_sheet(site, "k3y-Secret-value", when="2025-01-01")
    assert "k3y-Secret-value" in text
    assert f"/srv/backup/demo/{site.hosts[0].name}" in text
    assert "restic -r" in text and "--password-file key.txt" in text
    assert "7 daily, 4 weekly, 6 monthly" in text
    assert "02:30" in text
    mark_for = tmp_path / "vault" / "demo.pass"
    assert backup.sheet_printed_on(mark_for) is None
    backup.mark_sheet_printed(mark_for)
    assert backup.sheet_printed_on(mark_for)


def cli() -> Any:
    from telecentre_ctl.cli.main import cli as group

    for command in __import__("telecentre_ctl.cli.backup", fromlist=["COMMANDS"]).COMMANDS:
        if command.name not in group.commands:
            group.add_command(command)
    return group


def test_cli_prints_the_recovery_sheet_only_when_asked(make_site: MakeSite) -> None:
    from telecentre_ctl.secrets import read_secrets, vault_password_file

    site_dir = make_site()
    key = read_secrets(site_dir, vault_password_file("demo"))["backup"]["restic_password"]
    result = CliRunner().invoke(cli(), ["backup", str(site_dir), "--print-recovery-sheet"])
    assert result.exit_code == 0, result.output
    assert key in result.stdout
    assert "RECOVERY SHEET" in result.stdout
    assert key not in result.stderr
    assert "keep it away from the box" in result.stderr


def test_cli_restore_refuses_bad_input_without_connecting(make_site: MakeSite) -> None:
    site_dir = make_site()
    runner = CliRunner()
    result = runner.invoke(cli(), ["restore", str(site_dir), "--service", "webdavv"])
    assert result.exit_code == 2
    assert "did you mean 'webdav'" in result.stderr
    result = runner.invoke(
        cli(), ["restore", str(site_dir), "--service", "webdav", "--snapshot", "x; rm"]
    )
    assert result.exit_code == 2
    assert "not a snapshot id" in result.stderr
    with pytest.raises(InvalidInput):
        from telecentre_ctl.site import load_site

        backup.check_restore_request(load_site(site_dir), "postgres", None)


def test_results_become_exit_codes(tmp_path: Path) -> None:
    from telecentre_ctl.errors import HostUnreachable, OperationFailed

    (tmp_path / "h1.json").write_text(
        json.dumps(tb.record("2025-01-01T02:30:00Z", False, None, "the disk is full"))
    )
    (tmp_path / "junk.json").write_text("{")
    records = backup.read_records(tmp_path)
    assert set(records) == {"h1"}
    outcomes = backup.outcomes_from(["h1", "h2"], records, None)
    result = backup.ActionResult("backup", "demo", outcomes)
    assert result.exit_code == 1
    with pytest.raises(OperationFailed, match="h1: the disk is full"):
        backup.raise_for(result, tmp_path)
    ok = backup.HostOutcome("h1", tb.record("t", True, "abcd1234", "done"), "changed")
    assert backup.ActionResult("backup", "demo", [ok]).exit_code == 0
    gone = backup.HostOutcome("h2", None, "unreachable", "ssh: no route")
    both = backup.ActionResult("backup", "demo", [ok, gone])
    assert both.exit_code == 3
    with pytest.raises(HostUnreachable):
        backup.raise_for(both, tmp_path)
    assert both.as_data()["hosts"][1]["message"] == "ssh: no route"


# --------------------------------------------------------------------------- host program: rules


def test_data_folder_rules(tmp_path: Path) -> None:
    data = tmp_path / "srv"
    full, empty, gone = data / "a" / "files", data / "b" / "files", data / "c" / "files"
    full.mkdir(parents=True)
    (full / "x").write_bytes(b"x" * 10)
    empty.mkdir(parents=True)
    cfg = tb.Config(site="s", host="h", repository="/r", password_file="/p", services=(),
                    data_dir=str(data))  # fmt: skip
    trees = {str(p): tb.survey(str(p), None) for p in (full, empty)}
    refusals, notes = tb.check_data_dirs(cfg, trees, {})
    assert refusals == [] and notes == [f"{empty} is empty"]
    # emptied since the last backup: refused (wiped, or its disk not mounted)
    refusals, _ = tb.check_data_dirs(cfg, trees, {str(empty): 3})
    assert refusals and "held 3 entries at the last backup" in refusals[0]
    trees[str(gone)] = tb.survey(str(gone), None)
    refusals, _ = tb.check_data_dirs(cfg, trees, {})
    assert refusals == [f"{gone} is missing (data disk not mounted, or service not deployed)"]
    unmounted = tb.Config(site="s", host="h", repository="/r", password_file="/p", services=(),
                          data_dir=str(tmp_path / "nothing"))  # fmt: skip
    assert "missing" in tb.check_data_dirs(unmounted, trees, {})[0][0]


def test_space_estimate_counts_only_what_changed(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    old.write_bytes(b"o" * 1000)
    new.write_bytes(b"n" * 3000)
    os.utime(old, (1_000_000, 1_000_000))
    tree = tb.survey(str(tmp_path), since=2_000_000)
    assert (tree.size, tree.changed_size, tree.entries) == (4000, 3000, 2)
    cfg = tb.Config(site="s", host="h", repository="/r", password_file="/p", services=(),
                    min_free_mb=1)  # fmt: skip
    assert tb.space_needed(cfg, {"t": tree}, 500) == 3000 + 500 + tb.MIB
    assert tb.survey(str(tmp_path), since=None).changed_size == 4000


def test_retention_and_check_schedule() -> None:
    assert tb.retention_args({"daily": 7, "weekly": 0, "monthly": 6}) == [
        "--keep-daily", "7", "--keep-monthly", "6",
    ]  # fmt: skip
    assert tb.retention_args({}) == []
    now = 1_700_000_000.0
    week_ago = tb.record("2023-11-07T22:13:20Z", True, None, "ok")
    fresh = tb.record("2023-11-14T21:13:20Z", True, None, "ok")
    assert tb.check_due(None, 7, now)
    assert tb.check_due(week_ago, 7, now)
    assert not tb.check_due(fresh, 7, now)
    assert tb.check_due(fresh | {"ok": False}, 7, now)  # a failed check is tried again
    assert not tb.check_due(None, 0, now)


def test_dump_completeness(tmp_path: Path) -> None:
    dump = tmp_path / "d.sql"
    dump.write_bytes(b"CREATE TABLE t();\n--\n-- PostgreSQL database dump complete\n--\n")
    assert tb.dump_complete(str(dump), "postgres")
    assert not tb.dump_complete(str(dump), "mariadb")
    dump.write_bytes(b"CREATE TABLE t();\n")  # cut short
    assert not tb.dump_complete(str(dump), "postgres")
    assert not tb.dump_complete(str(tmp_path / "missing.sql"), "postgres")


def test_plain_messages_for_restic_errors() -> None:
    cfg = tb.Config(site="s", host="h", repository="/nowhere/s/h", password_file="/p",
                    services=(), target="/nowhere")  # fmt: skip
    full = tb.restic_failure(
        "Fatal: unable to save snapshot: write /x: no space left on device", cfg, "the backup"
    )
    assert "the backup disk /nowhere is full" in full and "Earlier snapshots are intact" in full
    assert "does not open" in tb.restic_failure("Fatal: wrong password or no key found", cfg, "x")


def test_sftp_refusals_say_what_to_do(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    (tmp_path / "id_ed25519.pub").write_text("ssh-ed25519 AAAAC3Nza telecentre-backup@box\n")
    cfg = tb.Config(site="s", host="box", repository="sftp:bk@nas:/bk/s/box", password_file="/p",
                    services=(), sftp_key=str(key))  # fmt: skip
    denied = tb.restic_failure(
        "bk@nas: Permission denied (publickey).\nFatal: unable to open repository", cfg, "x"
    )
    assert "refused this host's key" in denied
    assert "ssh-ed25519 AAAAC3Nza telecentre-backup@box" in denied
    impostor = tb.restic_failure("Host key verification failed.\nFatal: ...", cfg, "x")
    assert "backup_sftp_known_hosts" in impostor
    # a local target never gets the sftp advice
    local = tb.Config(site="s", host="h", repository="/r", password_file="/p", services=())
    assert "authorized" not in tb.restic_failure("open /r/x: permission denied", local, "x")


def test_database_commands_keep_the_password_inside_the_container() -> None:
    engine = tb.Engine(tb.Shell())
    pg = engine.dump_command(tb.Database("postgres", "tc-postgres", "tc_nextcloud"))
    assert pg == ["docker", "exec", "tc-postgres", "pg_dump", "-U", "postgres", "tc_nextcloud"]
    maria = engine.dump_command(tb.Database("mariadb", "tc-mariadb", "tc_dolibarr"))
    assert "--single-transaction" in maria and maria[-1] == "tc_dolibarr"
    assert "$(cat /run/secrets/root_password)" in " ".join(maria)


# --------------------------------------------------------------------------- host program: runs


class FakeHost(tb.Shell):  # type: ignore[misc,name-defined]
    """restic and docker as seen from the program: a repository of snapshots in memory,
    running services, databases; and folders on the real disk."""

    def __init__(self, answers: dict[str, Callable[[list[str]], tuple[int, str, str]]]):
        self.calls: list[list[str]] = []
        self.answers = answers
        self.stdins: list[str] = []

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        self.calls.append(argv)
        if kwargs.get("stdin") is not None:
            self.stdins.append(str(kwargs["stdin"]))
        env = kwargs.get("env") or {}
        assert "RESTIC_PASSWORD" not in env  # only ever the password *file*
        key = argv[1]  # restic backup, docker exec, ...
        if argv[0] == "docker" and argv[1] == "compose":
            key = f"compose {argv[3]}"
        rc, out, err = self.answers.get(key, lambda a: (0, "", ""))(argv)
        if kwargs.get("stdout_path"):
            Path(kwargs["stdout_path"]).write_text(out)
            out = ""
        return subprocess.CompletedProcess(argv, rc, out, err)

    def ran(self, word: str) -> list[list[str]]:
        return [c for c in self.calls if word in c]


def config(tmp_path: Path, database: bool = False) -> Any:
    data = tmp_path / "srv"
    files = data / "webdav" / "files"
    files.mkdir(parents=True)
    (files / "rapport été.txt").write_text("contenu")
    db = tb.Database("postgres", "tc-postgres", "tc_webdav") if database else None
    svc = tb.Service("webdav", (str(files),), db, "/opt/telecentre/webdav/compose.yml")
    return tb.Config(
        site="s", host="h", repository=str(tmp_path / "repo"), password_file="/p",
        services=(svc,), target=str(tmp_path), state_dir=str(tmp_path / "state"),
        data_dir=str(data), min_free_mb=1, check_every_days=0,
        scratch_dir=str(tmp_path / "scratch"),
    )  # fmt: skip


SUMMARY = json.dumps({"message_type": "summary", "snapshot_id": "abcdef0123456789",
                      "data_added": 2048})  # fmt: skip
PG_DUMP = "CREATE TABLE t();\n-- PostgreSQL database dump complete\n"


def snapshots_of(paths: list[str]) -> Callable[[list[str]], tuple[int, str, str]]:
    snap = {"id": "abcdef0123456789", "short_id": "abcdef01", "time": "2025-01-01T02:30:00Z",
            "paths": paths, "tags": ["scheduled"]}  # fmt: skip
    return lambda argv: (0, json.dumps([snap]), "")


def test_backup_dumps_then_snapshots_then_prunes(tmp_path: Path) -> None:
    cfg = config(tmp_path, database=True)
    svc = cfg.services[0]
    host = FakeHost({
        "exec": lambda a: (0, PG_DUMP, ""),
        "backup": lambda a: (0, SUMMARY + "\n", ""),
        "snapshots": snapshots_of(svc.paths(cfg.dump_dir)),
    })  # fmt: skip
    done = tb.Backups(cfg, host).backup()
    assert done["snapshot"] == "abcdef01"
    assert "2.0 KB new data" in done["message"]
    (snap,) = host.ran("backup")
    assert svc.dump_file(cfg.dump_dir) in snap and str(svc.volumes[0]) in snap
    assert Path(svc.dump_file(cfg.dump_dir)).read_text() == PG_DUMP
    (forget,) = [c for c in host.ran("forget") if "scheduled" in c]
    assert "--prune" in forget and "--keep-daily" in forget
    # order: dump, then snapshot, then retention
    kinds = [c[1] if c[0] == "restic" else c[0] for c in host.calls]
    assert kinds.index("docker") < kinds.index("backup") < kinds.index("forget")


def test_backup_refuses_a_failed_dump_and_backs_up_nothing(tmp_path: Path) -> None:
    cfg = config(tmp_path, database=True)
    host = FakeHost({"exec": lambda a: (1, "", "pg_dump: connection refused")})
    with pytest.raises(tb.Failure, match=r"dump of tc_webdav failed .*connection refused"):
        tb.Backups(cfg, host).backup()
    assert not host.ran("backup")
    host = FakeHost({"exec": lambda a: (0, "CREATE TABLE t(", "")})  # cut short, exit 0
    with pytest.raises(tb.Failure, match="cut short"):
        tb.Backups(cfg, host).backup()
    assert not host.ran("backup")


def test_retention_only_after_this_runs_snapshot(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    host = FakeHost({"backup": lambda a: (0, SUMMARY, "")})
    tb.Backups(cfg, host).backup()
    # two openings of the repository in all: the backup and the retention
    assert [c[1] for c in host.calls if c[0] == "restic"] == ["backup", "forget"]
    (forget,) = host.ran("forget")
    assert "scheduled" in forget and "safety" not in forget
    host = FakeHost({"backup": lambda a: (1, "", "Fatal: write: no space left on device")})
    with pytest.raises(tb.Failure, match="is full"):
        tb.Backups(cfg, host).backup()
    assert not host.ran("forget")
    host = FakeHost({"backup": lambda a: (0, "", "")})  # exit 0 but no snapshot made
    with pytest.raises(tb.Failure):
        tb.Backups(cfg, host).backup()
    assert not host.ran("forget")


def test_backup_without_repository_says_how_to_make_it(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    missing = "Fatal: repository does not exist: unable to open config file"
    host = FakeHost({"backup": lambda a: (10, "", missing)})
    with pytest.raises(tb.Failure, match=r"no backup repository at .*is the backup disk mounted"):
        tb.Backups(cfg, host).backup()
    assert not host.ran("forget")


def test_backup_refuses_a_wiped_volume(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    host = FakeHost({"backup": lambda a: (0, SUMMARY, ""),
                     "snapshots": snapshots_of(list(cfg.services[0].volumes))})  # fmt: skip
    tb.Backups(cfg, host).backup()
    for f in Path(cfg.services[0].volumes[0]).iterdir():
        f.unlink()
    host.calls.clear()
    with pytest.raises(tb.Failure, match="is empty but held 1 entries"):
        tb.Backups(cfg, host).backup()
    assert not host.ran("backup")


def restore_host(cfg: Any, start_rc: int) -> FakeHost:
    svc = cfg.services[0]
    vol = svc.volumes[0]

    def restore(argv: list[str]) -> tuple[int, str, str]:
        target = argv[argv.index("--target") + 1]
        restored = Path(f"{target}{vol}")
        restored.mkdir(parents=True)
        (restored / "from-backup.txt").write_text("old but good")
        return 0, "", ""

    return FakeHost({
        "snapshots": snapshots_of(svc.paths(cfg.dump_dir)),
        "ls": lambda a: (0, json.dumps({"type": "file", "size": 12}), ""),
        "restore": restore,
        "backup": lambda a: (0, SUMMARY.replace("abcdef01", "5afe7777"), ""),
        f"compose {svc.compose_file}": lambda a: (start_rc if "up" in a else 0, "", "unhealthy"),
    })  # fmt: skip


def test_restore_takes_a_safety_snapshot_and_swaps_the_data(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    vol = Path(cfg.services[0].volumes[0])
    host = restore_host(cfg, start_rc=0)
    done = tb.Backups(cfg, host).restore("webdav", None)
    assert sorted(p.name for p in vol.iterdir()) == ["from-backup.txt"]
    assert not Path(f"{vol}.pre-restore").exists()
    # safety snapshot before the service is stopped, then stop, then start
    steps = {"backup": "safety snapshot", "stop": "stop", "up": "start"}
    order = [steps[w] for c in host.calls for w in ("backup", "stop", "up") if c[1:2] == [w]
             or (c[1] == "compose" and c[4] == w)]  # fmt: skip
    assert order == ["safety snapshot", "stop", "start"]
    assert "safety" in host.ran("backup")[0]
    assert "Restored webdav from snapshot abcdef01" in done["message"]
    (forget,) = host.ran("forget")  # older safety snapshots beyond keep_safety go
    assert "safety" in forget and forget[forget.index("--keep-last") + 1] == "3"


def test_restore_rolls_back_when_the_service_does_not_come_back(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    vol = Path(cfg.services[0].volumes[0])
    host = restore_host(cfg, start_rc=1)
    with pytest.raises(tb.Failure, match="rolled back") as failed:
        tb.Backups(cfg, host).restore("webdav", None)
    assert "did not become healthy" in failed.value.message
    assert sorted(p.name for p in vol.iterdir()) == ["rapport été.txt"]
    assert not Path(f"{vol}.pre-restore").exists()
    assert len([c for c in host.calls if "up" in c]) == 2  # tried, then started again


def test_restore_refuses_when_the_safety_snapshot_fails(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    host = restore_host(cfg, start_rc=0)
    host.answers["backup"] = lambda a: (1, "", "no space left on device")
    with pytest.raises(tb.Failure, match="restore refused: the safety snapshot failed"):
        tb.Backups(cfg, host).restore("webdav", None)
    assert not [c for c in host.calls if "stop" in c]
    assert (Path(cfg.services[0].volumes[0]) / "rapport été.txt").exists()


def test_drill_verifies_files_and_loads_dumps(tmp_path: Path) -> None:
    cfg = config(tmp_path, database=True)
    svc = cfg.services[0]
    dump = svc.dump_file(cfg.dump_dir)
    listing = "\n".join(json.dumps(n) for n in [
        {"struct_type": "snapshot"},
        {"struct_type": "node", "type": "dir", "path": svc.volumes[0]},
        {"struct_type": "node", "type": "file", "path": f"{svc.volumes[0]}/a", "size": 3},
        {"struct_type": "node", "type": "file", "path": dump, "size": len(PG_DUMP)},
    ])  # fmt: skip

    def restore(argv: list[str]) -> tuple[int, str, str]:
        target = argv[argv.index("--target") + 1]
        Path(f"{target}{svc.volumes[0]}").mkdir(parents=True)
        Path(f"{target}{svc.volumes[0]}/a").write_text("abc")
        Path(f"{target}{dump}").parent.mkdir(parents=True)
        Path(f"{target}{dump}").write_text(PG_DUMP)
        return 0, "", ""

    host = FakeHost({"snapshots": snapshots_of(svc.paths(cfg.dump_dir)),
                     "ls": lambda a: (0, listing, ""), "restore": restore})  # fmt: skip
    done = tb.Backups(cfg, host).drill(None)
    assert "restored 2 files" in done["message"]
    assert "database dumps loaded: webdav" in done["message"]
    assert "--verify" in host.ran("restore")[0]
    assert any("tc_webdav_drill" in s for s in host.stdins)  # a scratch database
    assert not Path(cfg.scratch_dir).exists()
    # a file missing from the restored tree fails the drill
    host.answers["restore"] = lambda a: (0, "", "")
    with pytest.raises(tb.Failure, match=r"drill of snapshot abcdef01 FAILED: .* was not restored"):
        tb.Backups(cfg, host).drill(None)


def test_main_records_the_result_in_the_contract_shape(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    path = tmp_path / "config.json"
    data = {k: getattr(cfg, k) for k in ("site", "host", "repository", "password_file",
            "target", "state_dir", "data_dir", "min_free_mb", "check_every_days")}  # fmt: skip
    data["services"] = [{"name": "webdav", "volumes": list(cfg.services[0].volumes)}]
    path.write_text(json.dumps(data))
    host = FakeHost({"backup": lambda a: (1, "", "Fatal: no space left on device")})
    assert tb.main(["--config", str(path), "backup"], shell=host) == 1
    recorded = json.loads((tmp_path / "state" / "last-backup.json").read_text())
    assert list(recorded) == ["finished", "ok", "snapshot", "message"]
    assert recorded["ok"] is False and recorded["snapshot"] is None
    assert recorded["finished"].endswith("Z")
    assert "is full" in recorded["message"]
    assert tb.main(["--config", str(tmp_path / "none.json"), "backup"], shell=host) == 1


def test_sftp_refusal_found_even_when_restic_drops_what_ssh_said(tmp_path: Path) -> None:
    """restic may exit before relaying ssh's stderr: the program asks ssh itself."""
    (tmp_path / "k.pub").write_text("ssh-ed25519 AAAAC3Nza telecentre-backup@box\n")
    options = ("sftp.args=-i /k -o BatchMode=yes",)
    cfg = tb.Config(site="s", host="box", repository="sftp:bk@nas:/bk/s/box", password_file="/p",
                    services=(), sftp_key=str(tmp_path / "k"), restic_options=options)  # fmt: skip
    lost = "Fatal: unable to open repository at sftp:bk@nas:/x: unable to start the sftp session"
    denied = "bk@nas: Permission denied (publickey)."
    # the fake keys answers by argv[1]: "-o" for restic (with its options), "-i" for ssh
    host = FakeHost({"-o": lambda a: (1, "", lost), "-i": lambda a: (255, "", denied)})
    with pytest.raises(tb.Failure, match="refused this host's key") as failed:
        tb.Backups(cfg, host).init()
    assert "telecentre-backup@box" in failed.value.message
    (ssh,) = [c for c in host.calls if c[0] == "ssh"]
    assert ssh == ["ssh", "-i", "/k", "-o", "BatchMode=yes", "bk@nas", "-s", "sftp"]


# --------------------------------------------------------------------------- SQLite, hooks


def live_database(path: Path, rows: int) -> Any:
    """A service's SQLite database in WAL mode, left open with a transaction under way."""
    import sqlite3

    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE items(n INTEGER)")
    db.executemany("INSERT INTO items VALUES (?)", [(i,) for i in range(rows)])
    db.execute("BEGIN")
    db.execute("INSERT INTO items VALUES (-1)")  # not committed: no copy may hold it
    return db


def rows_of(path: str) -> list[int]:
    import sqlite3

    db = sqlite3.connect(path)
    try:
        return sorted(n for (n,) in db.execute("SELECT n FROM items"))
    finally:
        db.close()


def test_sqlite_copy_is_consistent_while_the_service_writes(tmp_path: Path) -> None:
    source = tmp_path / "data" / "db.sqlite3"
    writer = live_database(source, 500)
    os.chmod(source, 0o640)
    try:
        assert (tmp_path / "data" / "db.sqlite3-wal").exists()  # committed rows still in the log
        target = tmp_path / "dumps" / "sqlite" / "db.sqlite3"
        tb.copy_sqlite(str(source), str(target))
        assert rows_of(str(target)) == list(range(500))
        assert tb.sqlite_sound(str(target)) == "ok"
        assert target.stat().st_mode & 0o777 == 0o640
        assert target.stat().st_uid == source.stat().st_uid
    finally:
        writer.rollback()
        writer.close()
    target.write_bytes(target.read_bytes()[:4096] + b"\0" * 4096)
    assert tb.sqlite_sound(str(target)) != "ok"
    with pytest.raises(tb.Failure, match="is missing"):
        tb.copy_sqlite(str(tmp_path / "nope.sqlite3"), str(target))


def vault_config(tmp_path: Path) -> Any:
    """A service like Vaultwarden (SQLite in its volume) and one like Nextcloud (a dump,
    and commands run in its container before and after)."""
    data = tmp_path / "srv"
    vault = data / "vault" / "data"
    vault.mkdir(parents=True)
    (vault / "rsa_key.pem").write_text("key")
    cloud = data / "cloud" / "html"
    cloud.mkdir(parents=True)
    (cloud / "a.txt").write_text("a")
    svcs = (
        tb.Service("vault", (str(vault),), None, "/opt/telecentre/vault/compose.yml",
                   sqlite=(str(vault / "db.sqlite3"),)),
        tb.Service("cloud", (str(cloud),), tb.Database("postgres", "tc-postgres", "tc_cloud"),
                   "/opt/telecentre/cloud/compose.yml",
                   before=(tb.Hook(("occ", "maintenance:mode", "--on"), "www-data"),),
                   after=(tb.Hook(("occ", "maintenance:mode", "--off"), "www-data"),)),
    )  # fmt: skip
    return tb.Config(
        site="s", host="h", repository=str(tmp_path / "repo"), password_file="/p",
        services=svcs, target=str(tmp_path), state_dir=str(tmp_path / "state"),
        data_dir=str(data), min_free_mb=1, check_every_days=0,
        scratch_dir=str(tmp_path / "scratch"),
    )  # fmt: skip


def exec_answer(argv: list[str]) -> tuple[int, str, str]:
    return (0, PG_DUMP, "") if "pg_dump" in argv else (0, "", "")


def steps(host: FakeHost) -> list[str]:
    """What the program did, in order, in words."""
    out = []
    for call in host.calls:
        if call[:2] == ["docker", "exec"]:
            out.append("dump" if "pg_dump" in call else call[-1])
        elif call[0] == "restic":
            out.append(call[1])
    return out


def test_backup_holds_files_and_database_of_one_moment(tmp_path: Path) -> None:
    cfg = vault_config(tmp_path)
    writer = live_database(Path(cfg.services[0].sqlite[0]), 3)
    try:
        host = FakeHost({"exec": exec_answer, "backup": lambda a: (0, SUMMARY, "")})
        tb.Backups(cfg, host).backup()
    finally:
        writer.close()
    # maintenance on, dump, snapshot, maintenance off, then retention
    assert steps(host) == ["--on", "dump", "backup", "--off", "forget"]
    (hook,) = [c for c in host.calls if "--on" in c]
    assert hook[:5] == ["docker", "exec", "--user", "www-data", "tc-cloud"]
    (snap,) = host.ran("backup")
    copy = tb.sqlite_copy(cfg.dump_dir, cfg.services[0].sqlite[0])
    assert copy in snap and rows_of(copy) == [0, 1, 2]
    # the live database and its log are left out: the copy stands for them
    excluded = {snap[i + 1] for i, word in enumerate(snap) if word == "--exclude"}
    assert excluded == {cfg.services[0].sqlite[0] + end for end in ("", "-wal", "-shm", "-journal")}


def test_after_commands_run_whatever_happens(tmp_path: Path) -> None:
    cfg = vault_config(tmp_path)
    live_database(Path(cfg.services[0].sqlite[0]), 1).close()
    full = "Fatal: write: no space left on device"
    host = FakeHost({"exec": exec_answer, "backup": lambda a: (1, "", full)})
    with pytest.raises(tb.Failure, match="is full"):
        tb.Backups(cfg, host).backup()
    assert steps(host) == ["--on", "dump", "backup", "--off"]
    # a "before" that fails: nothing backed up, the service still put back in service
    host = FakeHost({"exec": lambda a: (1, "", "occ: no such command") if "--on" in a
                     else exec_answer(a)})  # fmt: skip
    with pytest.raises(tb.Failure, match="maintenance:mode --on` failed"):
        tb.Backups(cfg, host).backup()
    assert steps(host) == ["--on", "--off"]
    # an "after" that fails is said, with the snapshot made
    host = FakeHost({"exec": lambda a: (1, "", "boom") if "--off" in a else exec_answer(a),
                     "backup": lambda a: (0, SUMMARY, "")})  # fmt: skip
    with pytest.raises(tb.Failure, match="cloud may not be back in service") as err:
        tb.Backups(cfg, host).backup()
    assert err.value.snapshot == "abcdef01"


def test_restore_puts_the_database_copy_in_place_then_back_in_service(tmp_path: Path) -> None:
    cfg = vault_config(tmp_path)
    vault = cfg.services[0]
    db = Path(vault.sqlite[0])
    live_database(db, 2).close()  # today's database, to be replaced
    copy = tb.sqlite_copy(cfg.dump_dir, str(db))

    def restore(argv: list[str]) -> tuple[int, str, str]:
        target = argv[argv.index("--target") + 1]
        Path(f"{target}{vault.volumes[0]}").mkdir(parents=True)
        Path(f"{target}{vault.volumes[0]}/rsa_key.pem").write_text("old key")
        # the snapshot's consistent copy, made by the nightly backup
        made = live_database(Path(f"{target}{copy}.src"), 7)
        made.rollback()
        made.close()
        tb.copy_sqlite(f"{target}{copy}.src", f"{target}{copy}")
        return 0, "", ""

    host = FakeHost({
        "snapshots": snapshots_of([*vault.paths(cfg.dump_dir), copy]),
        "ls": lambda a: (0, json.dumps({"type": "file", "size": 12}), ""),
        "restore": restore, "exec": exec_answer,
        "backup": lambda a: (0, SUMMARY.replace("abcdef01", "5afe7777"), ""),
    })  # fmt: skip
    tb.Backups(cfg, host).restore("vault", None)
    assert rows_of(str(db)) == list(range(7))
    assert not Path(f"{db}-wal").exists()
    assert copy in host.ran("restore")[0]  # asked of restic with the volume
    safety = host.ran("backup")[0]
    assert "safety" in safety and "--exclude" in safety
    # a Nextcloud restored from a snapshot taken in maintenance mode comes out of it
    cloud = vault_config(tmp_path / "c")
    host = restore_host_of(cloud, cloud.services[1])
    tb.Backups(cloud, host).restore("cloud", None)
    assert steps(host)[-2:] == ["--off", "forget"]  # then old safety snapshots go


def restore_host_of(cfg: Any, svc: Any) -> FakeHost:
    def restore(argv: list[str]) -> tuple[int, str, str]:
        target = argv[argv.index("--target") + 1]
        Path(f"{target}{svc.volumes[0]}").mkdir(parents=True)
        dump = Path(f"{target}{svc.dump_file(cfg.dump_dir)}")
        dump.parent.mkdir(parents=True)
        dump.write_text(PG_DUMP)
        return 0, "", ""

    return FakeHost({
        "snapshots": snapshots_of(svc.paths(cfg.dump_dir)),
        "ls": lambda a: (0, json.dumps({"type": "file", "size": 12}), ""),
        "restore": restore, "exec": exec_answer,
        "backup": lambda a: (0, SUMMARY.replace("abcdef01", "5afe7777"), ""),
    })  # fmt: skip


def test_drill_proves_the_sqlite_copies_sound(tmp_path: Path) -> None:
    cfg = vault_config(tmp_path)
    vault = cfg.services[0]
    copy = tb.sqlite_copy(cfg.dump_dir, vault.sqlite[0])
    good = tmp_path / "good.sqlite3"
    live_database(good, 4).close()
    listing = "\n".join(json.dumps(n) for n in [
        {"struct_type": "node", "type": "dir", "path": vault.volumes[0]},
        {"struct_type": "node", "type": "file", "path": copy, "size": good.stat().st_size},
    ])  # fmt: skip

    def restore_with(content: bytes) -> Callable[[list[str]], tuple[int, str, str]]:
        def restore(argv: list[str]) -> tuple[int, str, str]:
            target = argv[argv.index("--target") + 1]
            Path(f"{target}{vault.volumes[0]}").mkdir(parents=True)
            Path(f"{target}{copy}").parent.mkdir(parents=True)
            Path(f"{target}{copy}").write_bytes(content)
            return 0, "", ""

        return restore

    host = FakeHost({"snapshots": snapshots_of([vault.volumes[0], copy]),
                     "ls": lambda a: (0, listing, ""),
                     "restore": restore_with(good.read_bytes())})  # fmt: skip
    assert "SQLite copies sound: vault" in tb.Backups(cfg, host).drill(None)["message"]
    damaged = good.read_bytes()[:4096] + b"\xff" * (good.stat().st_size - 4096)
    host.answers["restore"] = restore_with(damaged)
    with pytest.raises(tb.Failure, match=r"SQLite copy .* is damaged"):
        tb.Backups(cfg, host).drill(None)


def test_standard_hosts_back_up_sqlite_and_use_maintenance_mode(make_site: MakeSite) -> None:
    from telecentre_ctl.site import load_site
    from tests.conftest import EXAMPLE_SITE

    site = load_site(make_site(source=EXAMPLE_SITE))
    host = site.hosts[0].name
    cfg = backup.host_config(site.as_data(), site.catalog.as_data(), site.placement()[host], host)
    found = {s["name"]: s for s in cfg["services"]}
    assert found["vaultwarden"]["sqlite"] == ["/srv/telecentre/vaultwarden/data/db.sqlite3"]
    assert found["nextcloud"]["before"][0]["command"][-2:] == ["maintenance:mode", "--on"]
    assert found["nextcloud"]["after"][0]["command"][-2:] == ["maintenance:mode", "--off"]
    program = tb.Config.from_data(cfg)
    assert program.service("nextcloud").after[0].user == "www-data"
    assert program.service("vaultwarden").container == "tc-vaultwarden"


# --------------------------------------------------------------------------- rebuilt, drill


def directory_config(tmp_path: Path) -> Any:
    """A service like the members' directory: its dump is backed up, its live database
    (data) is rebuilt from it, and the drill runs the service's own check."""
    root = tmp_path / "srv" / "directory"
    dump, data = root / "dump", root / "data"
    for folder, name in ((dump, "directory.ldif"), (data, "data.mdb")):
        folder.mkdir(parents=True)
        (folder / name).write_text("current")
    drill = tb.Drill("telecentre/directory:2.6-1", ("/usr/local/bin/directory", "drill"),
                     ((str(dump), "/var/lib/ldap-dump"),))  # fmt: skip
    svc = tb.Service("directory", (str(dump),), None, "/opt/telecentre/directory/compose.yml",
                     before=(tb.Hook(("/usr/local/bin/directory", "dump")),),
                     rebuilt=(str(data),), drill=drill)  # fmt: skip
    return tb.Config(
        site="s", host="h", repository=str(tmp_path / "repo"), password_file="/p",
        services=(svc,), target=str(tmp_path), state_dir=str(tmp_path / "state"),
        data_dir=str(tmp_path / "srv"), min_free_mb=1, scratch_dir=str(tmp_path / "scratch"),
    )  # fmt: skip


def test_restore_empties_the_rebuilt_volume_and_rolls_it_back(tmp_path: Path) -> None:
    cfg = directory_config(tmp_path)
    svc = cfg.services[0]
    data = Path(svc.rebuilt[0])
    data.chmod(0o750)
    host = restore_host(cfg, start_rc=0)
    tb.Backups(cfg, host).restore("directory", None)
    assert data.is_dir() and not list(data.iterdir())  # the service reloads its dump
    assert data.stat().st_mode & 0o777 == 0o750
    assert not Path(f"{data}.pre-restore").exists()
    # the safety snapshot holds a fresh dump: the before command ran first
    first_exec = next(i for i, c in enumerate(host.calls) if c[:2] == ["docker", "exec"])
    first_backup = next(i for i, c in enumerate(host.calls) if c[1:2] == ["backup"])
    assert first_exec < first_backup
    assert data.as_posix() not in " ".join(host.ran("backup")[0])  # never snapshotted
    (data / "data.mdb").write_text("current")
    host = restore_host(cfg, start_rc=1)  # the service does not come back: all put back
    with pytest.raises(tb.Failure, match="rolled back"):
        tb.Backups(cfg, host).restore("directory", None)
    assert (data / "data.mdb").read_text() == "current"


def test_drill_runs_the_services_own_check_without_network(tmp_path: Path) -> None:
    cfg = directory_config(tmp_path)
    svc = cfg.services[0]
    dump = svc.volumes[0]
    listing = json.dumps({"struct_type": "node", "type": "file", "path": f"{dump}/directory.ldif",
                          "size": 7})  # fmt: skip

    def restore(argv: list[str]) -> tuple[int, str, str]:
        target = argv[argv.index("--target") + 1]
        Path(f"{target}{dump}").mkdir(parents=True)
        Path(f"{target}{dump}/directory.ldif").write_text("current")
        return 0, "", ""

    verdict = '{"ok": true, "entries": 9, "expected": 9, "members": 1}'
    host = FakeHost({"snapshots": snapshots_of([dump]), "ls": lambda a: (0, listing, ""),
                     "restore": restore, "run": lambda a: (0, verdict + "\n", "")})  # fmt: skip
    done = tb.Backups(cfg, host).drill(None)
    assert f"services' own checks passed: directory ({verdict})" in done["message"]
    (run,) = host.ran("run")
    assert run[run.index("--network") + 1] == "none" and "--read-only" in run
    assert f"{cfg.scratch_dir}{dump}:/var/lib/ldap-dump:ro" in run
    assert run[run.index("--entrypoint") + 1] == "/usr/local/bin/directory"
    assert run[-2:] == ["telecentre/directory:2.6-1", "drill"]
    host.answers["run"] = lambda a: (1, '{"ok": false, "entries": 3, "expected": 9}', "")
    with pytest.raises(tb.Failure, match=r"FAILED: the check of telecentre/directory.*entries"):
        tb.Backups(cfg, host).drill(None)
