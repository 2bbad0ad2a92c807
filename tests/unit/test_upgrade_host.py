"""The host side of upgrades (telecentre-backup upgrade): safety snapshot, switch, checks,
automatic rollback, and the journal that lets a killed run be finished or undone. restic
and docker are faked at the process boundary; folders and compose files are real."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_backup import SUMMARY, FakeHost, config, snapshots_of, tb


def project(tmp_path: Path, image: str = "telecentre/webdav:1.0-1") -> Path:
    folder = tmp_path / "opt" / "webdav"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "compose.yml").write_text(f"services:\n  webdav:\n    image: {image}\n")
    (folder / "compose.next.yml").write_text(
        "name: tc-webdav\nservices:\n  webdav:\n    image: 'telecentre/webdav:1.0-2'\n"
    )
    return folder


def upgrade_host(cfg: Any, folder: Path, new_starts: bool = True) -> FakeHost:
    vol = cfg.services[0].volumes[0]

    def restore(argv: list[str]) -> tuple[int, str, str]:
        restored = Path(f"{argv[argv.index('--target') + 1]}{vol}")
        restored.mkdir(parents=True)
        (restored / "rapport été.txt").write_text("contenu")
        return 0, "", ""

    return FakeHost({
        "snapshots": snapshots_of(cfg.services[0].paths(cfg.dump_dir)),
        "restore": restore,
        "backup": lambda a: (0, SUMMARY.replace("abcdef01", "5afe7777"), ""),
        f"compose {folder / 'compose.next.yml'}": lambda a: (
            (0 if new_starts else 1), "", "container tc-webdav is unhealthy"),
    })  # fmt: skip


def steps(host: FakeHost, folder: Path) -> list[str]:
    words = []
    for call in host.calls:
        if call[:2] == ["restic", "backup"] or (call[0] == "restic" and "backup" in call[1:2]):
            words.append("snapshot")
        elif call[1] == "compose":
            which = "new" if call[3].endswith("compose.next.yml") else "old"
            words.append(f"{call[4]} {which}")
        elif call[0] == "restic" and "restore" in call:
            words.append("restore")
    return words


def test_upgrade_snapshots_then_switches_and_keeps_the_journal(tmp_path: Path) -> None:
    cfg, folder = config(tmp_path), project(tmp_path)
    host = upgrade_host(cfg, folder)
    upgrades = tb.Upgrades(tb.Backups(cfg, host))
    done = upgrades.upgrade("webdav", str(folder / "compose.next.yml"), None)
    assert steps(host, folder) == ["snapshot", "up new"]
    (backup,) = host.ran("backup")
    assert "upgrade" in backup and "safety" in backup and "service:webdav" in backup
    assert "image: 'telecentre/webdav:1.0-2'" in (folder / "compose.yml").read_text()
    assert not (folder / "compose.next.yml").exists()
    assert (done["from"], done["to"], done["snapshot"]) == ("1.0-1", "1.0-2", "5afe7777")
    assert "from 1.0-1 to 1.0-2" in done["message"]
    journal = upgrades.journal("webdav")
    assert journal is not None and journal["step"] == "done"
    assert journal["old_image"] == "telecentre/webdav:1.0-1"


def test_a_new_version_that_fails_is_rolled_back_with_its_data(tmp_path: Path) -> None:
    cfg, folder = config(tmp_path), project(tmp_path)
    vol = Path(cfg.services[0].volumes[0])
    host = upgrade_host(cfg, folder, new_starts=False)
    # what the new version does to the data before it fails: gone after the rollback
    original = host.answers[f"compose {folder / 'compose.next.yml'}"]
    host.answers[f"compose {folder / 'compose.next.yml'}"] = lambda a: (
        (vol / "migrated.db").write_text("v2") and original(a)
    )
    upgrades = tb.Upgrades(tb.Backups(cfg, host))
    with pytest.raises(tb.Failure, match=r"rolled back automatically to 1\.0-1") as failed:
        upgrades.upgrade("webdav", str(folder / "compose.next.yml"), None)
    assert "unhealthy" in failed.value.message and "5afe7777" in failed.value.message
    assert steps(host, folder) == ["snapshot", "up new", "restore", "stop old", "up old"]
    assert sorted(p.name for p in vol.iterdir()) == ["rapport été.txt"]
    assert "telecentre/webdav:1.0-1" in (folder / "compose.yml").read_text()
    journal = upgrades.journal("webdav")
    assert journal is not None and journal["step"] == "rolled-back"
    assert "unhealthy" in journal["why"]


def test_the_proxy_check_failing_rolls_back_too(tmp_path: Path) -> None:
    cfg, folder = config(tmp_path), project(tmp_path)
    host = upgrade_host(cfg, folder)

    class NoAnswer(tb.ProxyCheck):  # type: ignore[misc,name-defined]
        def once(self, timeout: float) -> str | None:
            return "https://files.s.home.arpa/ answered HTTP 502 through the proxy"

    upgrades = tb.Upgrades(tb.Backups(cfg, host), proxy_wait=0)
    with pytest.raises(tb.Failure, match="HTTP 502"):
        upgrades.upgrade("webdav", str(folder / "compose.next.yml"), NoAnswer("files"))
    assert steps(host, folder)[-2:] == ["stop old", "up old"]


def test_a_run_killed_after_the_switch_is_finished_by_the_next(tmp_path: Path) -> None:
    cfg, folder = config(tmp_path), project(tmp_path)
    host = upgrade_host(cfg, folder)
    upgrades = tb.Upgrades(tb.Backups(cfg, host))
    journal = {"service": "webdav", "old_image": "telecentre/webdav:1.0-1",
               "new_image": "telecentre/webdav:1.0-2", "snapshot": "5afe7777"}  # fmt: skip
    upgrades._write(journal, "verify")
    done = upgrades.upgrade("webdav", str(folder / "compose.next.yml"), None)
    assert steps(host, folder) == ["up new"]  # no second snapshot: the first holds the data
    assert done["message"].startswith("Finished an interrupted upgrade")
    assert (upgrades.journal("webdav") or {})["step"] == "done"


def test_a_run_killed_while_rolling_back_rolls_back_then_upgrades_again(tmp_path: Path) -> None:
    cfg, folder = config(tmp_path), project(tmp_path)
    host = upgrade_host(cfg, folder)
    upgrades = tb.Upgrades(tb.Backups(cfg, host))
    journal = {"service": "webdav", "old_image": "telecentre/webdav:1.0-1", "why": "x",
               "new_image": "telecentre/webdav:1.0-2", "snapshot": "5afe7777"}  # fmt: skip
    upgrades._write(journal, "rollback")
    upgrades.upgrade("webdav", str(folder / "compose.next.yml"), None)
    assert steps(host, folder) == ["restore", "stop old", "up old", "snapshot", "up new"]


def test_a_run_killed_during_the_snapshot_starts_over(tmp_path: Path) -> None:
    cfg, folder = config(tmp_path), project(tmp_path)
    host = upgrade_host(cfg, folder)
    upgrades = tb.Upgrades(tb.Backups(cfg, host))
    upgrades._write({"service": "webdav", "old_image": "a", "new_image": "b"}, "snapshot")
    upgrades.upgrade("webdav", str(folder / "compose.next.yml"), None)
    assert steps(host, folder) == ["snapshot", "up new"]


def test_not_enough_space_for_the_snapshot_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, folder = config(tmp_path), project(tmp_path)
    host = upgrade_host(cfg, folder)
    monkeypatch.setattr(tb, "free_bytes", lambda path: 1000)
    with pytest.raises(tb.Failure, match=r"refused: the backup disk .* Nothing was changed"):
        tb.Upgrades(tb.Backups(cfg, host)).upgrade("webdav", str(folder / "compose.next.yml"), None)
    assert host.calls == []
    assert tb.Upgrades(tb.Backups(cfg, host)).journal("webdav") is None


def test_an_upgrade_already_done_does_nothing(tmp_path: Path) -> None:
    cfg, folder = config(tmp_path), project(tmp_path, image="telecentre/webdav:1.0-2")
    host = upgrade_host(cfg, folder)
    done = tb.Upgrades(tb.Backups(cfg, host)).upgrade(
        "webdav", str(folder / "compose.next.yml"), None
    )
    assert host.calls == [] and done["message"] == "webdav already runs 1.0-2."


def test_main_records_the_upgrade_where_status_reads_it(tmp_path: Path) -> None:
    cfg, folder = config(tmp_path), project(tmp_path)
    host = upgrade_host(cfg, folder, new_starts=False)
    data = {k: getattr(cfg, k) for k in ("site", "host", "repository", "password_file",
            "target", "state_dir", "data_dir", "min_free_mb")}  # fmt: skip
    data["services"] = [{"name": "webdav", "volumes": list(cfg.services[0].volumes)}]
    (tmp_path / "config.json").write_text(json.dumps(data))
    argv = ["--config", str(tmp_path / "config.json"), "upgrade", "--service", "webdav",
            "--next", str(folder / "compose.next.yml")]  # fmt: skip
    assert tb.main(argv, host) == 1
    recorded = json.loads((Path(cfg.state_dir) / "last-upgrade.json").read_text())
    assert recorded["ok"] is False and recorded["service"] == "webdav"
    assert "rolled back automatically" in recorded["message"]
