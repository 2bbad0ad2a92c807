#!/usr/bin/python3
"""telecentre-backup: the host side of telecentre-ctl's backups (installed by role backup).

    telecentre-backup backup            the services' "before" commands (e.g. maintenance
                                        mode), dumps, SQLite copies, volumes -> one restic
                                        snapshot, the "after" commands (always), retention,
                                        weekly repository check; writes last-backup.json
    telecentre-backup restore --service S [--snapshot ID]
                                        safety snapshot, stop, restore, start, wait healthy;
                                        rolls back on failure; writes last-restore.json
    telecentre-backup drill [--snapshot ID]
                                        restore into a scratch folder, verify, load each
                                        dump into a scratch database; writes last-drill.json
    telecentre-backup upgrade --service S --next FILE [--check-host NAME [--check-ca FILE]]
                                        safety snapshot, switch to FILE's image, wait healthy
                                        and answering through the proxy; rolls back image and
                                        data on failure; a journal lets a killed run be
                                        finished or rolled back by the next; last-upgrade.json
    telecentre-backup check [--subset 5%|--read-all]
    telecentre-backup init | snapshots [--service S]

Everything it needs is in one JSON file written by the role (--config, default below):
which services, volumes and databases this host backs up, the repository, the retention.
The restic password is read by restic itself from a 0600 file (RESTIC_PASSWORD_FILE): it
never appears on a command line, in the environment of other processes, or in a log.

Results are written as {"finished", "ok", "snapshot", "message"} (`status` reads them) and
printed on stdout; the exit status is 0 ok, 1 failed, 2 bad usage. Python 3 standard
library only: the host has no other dependency.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = "/etc/telecentre/backup/config.json"
MIB = 1024 * 1024
LOCK_WAIT_SECONDS = 3 * 3600  # a timer-started run waits this long for a running one
DUMP_TRAILERS = {
    "postgres": b"-- PostgreSQL database dump complete",
    "mariadb": b"-- Dump completed",
}
RESTIC_NO_REPOSITORY = 10  # restic >= 0.17: the repository does not exist
RESTIC_WRONG_PASSWORD = 12
RESTIC_INCOMPLETE = 3  # snapshot made, but some source files could not be read
NO_SPACE = "no space left on device"
HOOK_TIMEOUT = 600  # seconds a service's before/after command may take
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")  # a live database's other files


class Failure(Exception):
    """An operation failed; the message is plain words for the person who reads status."""

    def __init__(self, message: str, snapshot: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.snapshot = snapshot


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Database:
    engine: str  # postgres | mariadb
    container: str  # tc-postgres | tc-mariadb
    name: str  # database (and user) of the consumer


@dataclass(frozen=True)
class Hook:
    """A command run in the service's container around its backup (docker exec)."""

    command: tuple[str, ...]
    user: str | None = None


@dataclass(frozen=True)
class Drill:
    """A service's own check in the drill: `command` run in a throwaway container of
    `image`, no network, each restored volume mounted read-only (host path, container path)."""

    image: str
    command: tuple[str, ...]
    mounts: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Service:
    name: str
    volumes: tuple[str, ...]
    database: Database | None = None
    compose_file: str = ""
    sqlite: tuple[str, ...] = ()  # live SQLite databases in the volumes, copied consistently
    before: tuple[Hook, ...] = ()  # e.g. Nextcloud's maintenance mode on
    after: tuple[Hook, ...] = ()  # ... and off: after a backup (always) and a restore
    rebuilt: tuple[str, ...] = ()  # volumes never snapshotted: emptied by a restore
    drill: Drill | None = None

    @property
    def container(self) -> str:
        return f"tc-{self.name}"

    def dump_file(self, dump_dir: str) -> str:
        return f"{dump_dir}/{self.name}.sql"

    def paths(self, dump_dir: str) -> list[str]:
        """What a snapshot must hold for this service (its SQLite copies aside: older
        snapshots hold the databases in the volumes themselves)."""
        return [*self.volumes, *([self.dump_file(dump_dir)] if self.database else [])]

    def sqlite_copies(self, dump_dir: str) -> list[str]:
        return [sqlite_copy(dump_dir, db) for db in self.sqlite]

    def live_files(self) -> list[str]:
        """The live databases and their companions, left out of snapshots: their copies
        stand for them."""
        return [f"{db}{end}" for db in self.sqlite for end in ("", *SQLITE_COMPANIONS)]


@dataclass(frozen=True)
class Config:
    site: str
    host: str
    repository: str
    password_file: str
    services: tuple[Service, ...]
    target: str | None = None  # local folder holding the repository (None for sftp)
    keep: dict[str, int] = field(default_factory=lambda: {"daily": 7})
    keep_safety: int = 3
    min_free_mb: int = 128
    check_subset: str = "5%"
    check_every_days: int = 7
    state_dir: str = "/var/lib/telecentre/backup"
    cache_dir: str = "/var/cache/telecentre/restic"
    scratch_dir: str = "/var/tmp/telecentre-drill"
    data_dir: str = "/srv/telecentre"
    stop_services: tuple[str, ...] = ()
    health_timeout: int = 300
    restic_options: tuple[str, ...] = ()
    sftp_key: str | None = None  # this host's key for an sftp target (its .pub beside it)

    @property
    def dump_dir(self) -> str:
        return f"{self.state_dir}/dumps"

    def service(self, name: str) -> Service:
        for svc in self.services:
            if svc.name == name:
                return svc
        known = ", ".join(s.name for s in self.services) or "none"
        raise Failure(f"{name} is not backed up on {self.host} (backed up here: {known})")

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Config:
        def hooks(found: list[dict[str, Any]]) -> tuple[Hook, ...]:
            return tuple(Hook(tuple(h["command"]), h.get("user")) for h in found)

        services = tuple(
            Service(
                name=s["name"],
                volumes=tuple(s.get("volumes", [])),
                database=Database(**s["database"]) if s.get("database") else None,
                compose_file=s.get("compose_file", ""),
                sqlite=tuple(s.get("sqlite", [])),
                before=hooks(s.get("before", [])),
                after=hooks(s.get("after", [])),
                rebuilt=tuple(s.get("rebuilt", [])),
                drill=Drill(
                    s["drill"]["image"],
                    tuple(s["drill"]["command"]),
                    tuple((m[0], m[1]) for m in s["drill"].get("mounts", [])),
                )
                if s.get("drill")
                else None,
            )
            for s in data.get("services", [])
        )
        plain = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        plain["services"] = services
        for key in ("stop_services", "restic_options"):
            if key in plain:
                plain[key] = tuple(plain[key])
        return cls(**plain)


def load_config(path: str) -> Config:
    try:
        return Config.from_data(json.loads(Path(path).read_text(encoding="utf-8")))
    except FileNotFoundError as err:
        raise Failure(
            f"no backup configuration at {path}: backups are not set up on this host "
            "(run telecentre-ctl deploy)"
        ) from err
    except (ValueError, TypeError, KeyError) as err:
        raise Failure(f"the backup configuration {path} is unreadable ({err})") from err


# --------------------------------------------------------------------------- helpers


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def human(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(nbytes) < 1000:
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return f"{nbytes:.1f} TB"


def free_bytes(path: str) -> int:
    """Free bytes of the file system holding path (or its nearest existing parent), as
    ordinary users see it (f_bavail): the blocks reserved for root are not counted on."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    st = os.statvfs(probe)
    return st.f_bavail * st.f_frsize


def write_json(path: str, data: dict[str, Any]) -> None:
    """Atomically, mode 0644: status reads it as is."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False) + "\n", encoding="utf-8")
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)


def read_json(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def record(finished: str, ok: bool, snapshot: str | None, message: str) -> dict[str, Any]:
    """The result shape `status` reads. Keep exactly these four keys."""
    return {"finished": finished, "ok": ok, "snapshot": snapshot, "message": message}


@dataclass
class Tree:
    """What a data folder holds, from one walk: entries, bytes, bytes changed since."""

    exists: bool
    entries: int = 0
    size: int = 0
    changed_size: int = 0


def survey(path: str, since: float | None) -> Tree:
    if not os.path.isdir(path):
        return Tree(exists=False)
    tree = Tree(exists=True)
    for root, dirs, files in os.walk(path):
        tree.entries += len(dirs) + len(files)
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            tree.size += st.st_size
            if since is None or st.st_mtime >= since:
                tree.changed_size += st.st_size
    return tree


def check_data_dirs(
    cfg: Config, trees: dict[str, Tree], previous: dict[str, int]
) -> tuple[list[str], list[str]]:
    """(refusals, notes) for the data folders about to be backed up.

    Refused: a missing folder (the data disk is not mounted, or the service was never
    deployed), and a folder found empty that held data at the last backup (wiped, or a
    mount point without its disk): backing it up would let retention push the good
    snapshots out. An empty folder never backed up with data (a new, unused share) is
    backed up, with a note.
    """
    refusals, notes = [], []
    if not os.path.isdir(cfg.data_dir):
        return [f"the data folder {cfg.data_dir} is missing (data disk not mounted?)"], []
    for path, tree in trees.items():
        if not tree.exists:
            refusals.append(f"{path} is missing (data disk not mounted, or service not deployed)")
        elif tree.entries == 0 and previous.get(path, 0) > 0:
            refusals.append(
                f"{path} is empty but held {previous[path]} entries at the last backup "
                "(wiped, or its disk is not mounted)"
            )
        elif tree.entries == 0:
            notes.append(f"{path} is empty")
    return refusals, notes


def space_needed(cfg: Config, trees: dict[str, Tree], dumps_estimate: int) -> int:
    """Bytes the repository may grow by: what changed since the last backup (all of it the
    first time) and the dumps, plus the configured margin. Dedup and compression only make
    the real figure smaller."""
    return sum(t.changed_size for t in trees.values()) + dumps_estimate + cfg.min_free_mb * MIB


def retention_args(keep: dict[str, int]) -> list[str]:
    args = []
    for key in ("daily", "weekly", "monthly"):
        if int(keep.get(key, 0)) > 0:
            args += [f"--keep-{key}", str(int(keep[key]))]
    return args


def check_due(last: Any, every_days: int, now: float) -> bool:
    if every_days <= 0:
        return False
    if not isinstance(last, dict) or not last.get("ok"):
        return True
    try:
        when = datetime.fromisoformat(str(last["finished"]).replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError):
        return True
    return now - when >= every_days * 86400 - 3600  # a timer an hour early still counts


def dump_complete(path: str, engine: str) -> bool:
    """The dump exists, is not empty and ends with its tool's completion trailer."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            handle.seek(max(0, size - 4096))
            tail = handle.read()
    except OSError:
        return False
    return size > 0 and DUMP_TRAILERS[engine] in tail


def sqlite_copy(dump_dir: str, database: str) -> str:
    """Where the consistent copy of a live SQLite database goes (its path mirrored)."""
    return f"{dump_dir}/sqlite{database}"


def copy_sqlite(source: str, target: str) -> None:
    """A consistent copy of a live SQLite database through SQLite's backup API, which
    reads it as one transaction sees it whatever the service writes meanwhile (copying
    the file, or its write-ahead log, mid-write is not). The copy keeps the source's
    owner and mode; companion files the reading made (-shm) get its owner too."""
    try:
        st = os.stat(source)
    except OSError as err:
        raise Failure(
            f"the database {source} is missing ({err.strerror}); nothing was backed up"
        ) from err
    present = {end for end in SQLITE_COMPANIONS if os.path.lexists(source + end)}
    Path(target).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = f"{target}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    try:
        live = sqlite3.connect(Path(source).as_uri() + "?mode=ro", uri=True, timeout=120)
        try:
            copy = sqlite3.connect(tmp)
            try:
                live.backup(copy)
                ok = copy.execute("PRAGMA quick_check").fetchone()
            finally:
                copy.close()
        finally:
            live.close()
    except sqlite3.Error as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise Failure(
            f"the copy of the database {source} failed ({err}); nothing was backed up"
        ) from err
    finally:
        for end in set(SQLITE_COMPANIONS) - present:
            with contextlib.suppress(FileNotFoundError):
                os.chown(source + end, st.st_uid, st.st_gid)
    if not ok or ok[0] != "ok":
        os.unlink(tmp)
        raise Failure(f"the copy of the database {source} is damaged ({ok}); nothing was backed up")
    os.chown(tmp, st.st_uid, st.st_gid)
    os.chmod(tmp, st.st_mode & 0o7777)
    os.replace(tmp, target)


def sqlite_sound(path: str) -> str:
    """'ok', or what SQLite's integrity check says of a restored copy."""
    try:
        db = sqlite3.connect(Path(path).as_uri() + "?mode=ro", uri=True)
        try:
            return "; ".join(str(row[0]) for row in db.execute("PRAGMA integrity_check"))
        finally:
            db.close()
    except sqlite3.Error as err:
        return str(err)


def public_key(private_key: str) -> str:
    try:
        return Path(private_key + ".pub").read_text(encoding="ascii").strip()
    except OSError as err:
        return f"(cannot read {private_key}.pub: {err.strerror})"


def restic_failure(stderr: str, cfg: Config, action: str) -> str:
    """restic's error as a plain sentence, with what to do about it."""
    low = stderr.lower()
    where = cfg.target or cfg.repository
    if NO_SPACE in low:
        free = f" ({human(free_bytes(cfg.target))} free)" if cfg.target else ""
        return (
            f"{action} failed: the backup disk {where} is full{free}. Earlier snapshots are "
            "intact. Free space on it or use a larger disk, then run the backup again."
        )
    if "wrong password" in low or "no key found" in low:
        return f"{action} failed: the repository at {where} does not open with this site's key."
    if cfg.sftp_key and "permission denied" in low:
        return (
            f"{action} failed: the sftp server of {cfg.repository} refused this host's key. "
            "Authorize it there (a line of the backup user's ~/.ssh/authorized_keys): "
            f"{public_key(cfg.sftp_key)} -- then run deploy (or the backup) again."
        )
    if cfg.sftp_key and "host key verification failed" in low:
        return (
            f"{action} failed: the sftp server of {cfg.repository} did not show the host key "
            "given in backup_sftp_known_hosts. Check the server's key (ssh-keyscan, compared "
            "by hand with the server's own), fix backup_sftp_known_hosts, deploy again."
        )
    if "unable to open config file" in low or "does not exist" in low:
        return (
            f"{action} failed: no backup repository at {cfg.repository} (is the backup disk "
            "mounted? `telecentre-ctl deploy` makes the repository)."
        )
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    detail = lines[-1] if lines else "no message"
    return f"{action} failed: restic said: {detail[:300]}"


# --------------------------------------------------------------------------- commands


class Shell:
    """Runs programs. Tests replace it; nothing else in this file starts a process."""

    def run(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        stdin: str | None = None,
        stdout_path: str | None = None,
        stdin_path: str | None = None,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, **(env or {})}
        if stdout_path is not None or stdin_path is not None:
            out = open(stdout_path, "wb") if stdout_path else None  # noqa: SIM115
            inp = open(stdin_path, "rb") if stdin_path else None  # noqa: SIM115
            try:
                proc = subprocess.run(
                    list(argv),
                    stdin=inp if inp else subprocess.DEVNULL,
                    stdout=out if out else subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=full_env,
                    timeout=timeout,
                    check=False,
                )
            finally:
                for handle in (out, inp):
                    if handle:
                        handle.close()
            return subprocess.CompletedProcess(
                proc.args,
                proc.returncode,
                proc.stdout.decode(errors="replace") if proc.stdout else "",
                proc.stderr.decode(errors="replace"),
            )
        return subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
            check=False,
            stdin=None if stdin is not None else subprocess.DEVNULL,
        )


class Restic:
    def __init__(self, cfg: Config, shell: Shell) -> None:
        self.cfg, self.shell = cfg, shell
        self.env = {
            "RESTIC_REPOSITORY": cfg.repository,
            "RESTIC_PASSWORD_FILE": cfg.password_file,
            "RESTIC_CACHE_DIR": cfg.cache_dir,
            "RESTIC_PROGRESS_FPS": "0.016",
        }

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        options = [a for opt in self.cfg.restic_options for a in ("-o", opt)]
        return self.shell.run(["restic", *options, *args], env=self.env)

    def must(self, action: str, *args: str) -> subprocess.CompletedProcess[str]:
        proc = self.run(*args)
        if proc.returncode != 0:
            raise Failure(restic_failure(self.errors(proc), self.cfg, action))
        return proc

    def errors(self, proc: subprocess.CompletedProcess[str]) -> str:
        """restic's stderr; when an sftp session did not start, with ssh's own answer
        asked again (restic may exit before it relays what ssh said)."""
        if not self.cfg.sftp_key or "sftp session" not in proc.stderr.lower():
            return proc.stderr
        where = self.cfg.repository[len("sftp:") :].split(":", 1)[0]
        args = [
            arg
            for option in self.cfg.restic_options
            if option.startswith("sftp.args=")
            for arg in option[len("sftp.args=") :].split()
        ]
        ssh = self.shell.run(["ssh", *args, where, "-s", "sftp"], timeout=60)
        return f"{proc.stderr}\n{ssh.stderr}"

    def exists(self) -> bool:
        proc = self.run("cat", "config")
        if proc.returncode == 0:
            return True
        if proc.returncode == RESTIC_NO_REPOSITORY or "does not exist" in proc.stderr.lower():
            return False
        raise Failure(restic_failure(self.errors(proc), self.cfg, "opening the repository"))

    def snapshots(self, *tags: str) -> list[dict[str, Any]]:
        args = ["snapshots", "--json", "--host", self.cfg.host]
        for tag in tags:
            args += ["--tag", tag]
        found = json.loads(self.must("listing the snapshots", *args).stdout or "[]")
        return sorted(found or [], key=lambda s: str(s.get("time", "")))

    def backup(
        self, paths: list[str], tags: list[str], exclude: Sequence[str] = ()
    ) -> dict[str, Any]:
        args = ["backup", "--json", "--host", self.cfg.host]
        for tag in tags:
            args += ["--tag", tag]
        for path in exclude:
            args += ["--exclude", path]
        proc = self.run(*args, *paths)
        summary: dict[str, Any] = {}
        for line in proc.stdout.splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("message_type") == "summary":
                    summary = event
        snapshot = summary.get("snapshot_id")
        if proc.returncode == RESTIC_INCOMPLETE:
            raise Failure(
                "the backup is incomplete: some files could not be read "
                f"({_last_line(proc.stderr)})",
                snapshot=str(snapshot)[:8] if snapshot else None,
            )
        if proc.returncode != 0 or not snapshot:
            raise Failure(restic_failure(self.errors(proc), self.cfg, "the backup"))
        return summary


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


class Lock:
    """One backup, restore or drill at a time on a host."""

    def __init__(self, path: str) -> None:
        self.path = path

    @contextlib.contextmanager
    def held(self, wait: float) -> Iterator[None]:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", encoding="utf-8") as handle:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError as err:
                    if time.monotonic() >= deadline:
                        raise Failure(
                            "another backup, restore or drill is running on this host; "
                            "try again when it has finished"
                        ) from err
                    time.sleep(2)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


class Engine:
    """Database dumps and loads through `docker exec` into the shared database container.
    The server's superuser credentials stay inside the container."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell

    @staticmethod
    def _mariadb(sql_args: str) -> list[str]:
        return ["sh", "-c", f'exec {sql_args} -uroot -p"$(cat /run/secrets/root_password)" "$@"']

    def dump_command(self, db: Database) -> list[str]:
        if db.engine == "postgres":
            return ["docker", "exec", db.container, "pg_dump", "-U", "postgres", db.name]
        return [
            "docker", "exec", db.container,
            *self._mariadb("mariadb-dump"), "mariadb-dump",
            "--single-transaction", "--routines", "--triggers", "--events", db.name,
        ]  # fmt: skip

    def dump(self, db: Database, path: str) -> None:
        tmp = f"{path}.tmp"
        proc = self.shell.run(self.dump_command(db), stdout_path=tmp)
        if proc.returncode != 0 or not dump_complete(tmp, db.engine):
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            why = _last_line(proc.stderr) or "the dump is empty or cut short"
            raise Failure(f"the database dump of {db.name} failed ({why}); nothing was backed up")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)

    def sql(self, db: Database, statements: str, database: str | None = None) -> None:
        if db.engine == "postgres":
            argv = ["docker", "exec", "-i", db.container, "psql", "-U", "postgres"]
            argv += ["-v", "ON_ERROR_STOP=1", "-q", "-d", database or "postgres"]
        else:
            argv = ["docker", "exec", "-i", db.container, *self._mariadb("mariadb"), "mariadb"]
            argv += [database] if database else []
        proc = self.shell.run(argv, stdin=statements)
        if proc.returncode != 0:
            raise Failure(f"{db.engine} refused: {_last_line(proc.stderr)}")

    def recreate(self, db: Database, name: str, owner: str) -> None:
        if db.engine == "postgres":
            self.sql(db, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE);\n')
            self.sql(db, f'CREATE DATABASE "{name}" OWNER "{owner}" ENCODING \'UTF8\';\n')
        else:
            self.sql(
                db,
                f"DROP DATABASE IF EXISTS `{name}`;\n"
                f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4;\n",
            )

    def drop(self, db: Database, name: str) -> None:
        if db.engine == "postgres":
            self.sql(db, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE);\n')
        else:
            self.sql(db, f"DROP DATABASE IF EXISTS `{name}`;\n")

    def load(self, db: Database, name: str, dump: str) -> None:
        if db.engine == "postgres":
            argv = ["docker", "exec", "-i", db.container, "psql", "-U", "postgres", "-q"]
            argv += ["-v", "ON_ERROR_STOP=1", "--single-transaction", "-d", name]
        else:
            argv = ["docker", "exec", "-i", db.container, *self._mariadb("mariadb"), "mariadb"]
            argv += [name]
        proc = self.shell.run(argv, stdin_path=dump)
        if proc.returncode != 0:
            raise Failure(f"loading the dump into {name} failed: {_last_line(proc.stderr)}")


class Compose:
    def __init__(self, shell: Shell, timeout: int) -> None:
        self.shell, self.timeout = shell, timeout

    def _run(self, svc: Service, *args: str) -> subprocess.CompletedProcess[str]:
        return self.shell.run(["docker", "compose", "--file", svc.compose_file, *args])

    def stop(self, svc: Service) -> None:
        proc = self._run(svc, "stop")
        if proc.returncode != 0:
            raise Failure(f"could not stop {svc.name}: {_last_line(proc.stderr)}")

    def start(self, svc: Service) -> None:
        """Start and wait until healthy, then return it to service (its "after" commands:
        a restored Nextcloud was backed up in maintenance mode)."""
        proc = self._run(svc, "up", "--detach", "--wait", "--wait-timeout", str(self.timeout))
        if proc.returncode != 0:
            raise Failure(
                f"{svc.name} did not become healthy within {self.timeout} s: "
                f"{_last_line(proc.stderr)}"
            )
        self.hooks(svc, svc.after)

    def hooks(self, svc: Service, hooks: Sequence[Hook]) -> None:
        for hook in hooks:
            user = ["--user", hook.user] if hook.user else []
            argv = ["docker", "exec", *user, svc.container, *hook.command]
            try:
                proc = self.shell.run(argv, timeout=HOOK_TIMEOUT)
            except subprocess.TimeoutExpired as err:
                raise Failure(
                    f"{svc.name}: `{' '.join(hook.command)}` took over {HOOK_TIMEOUT} s"
                ) from err
            if proc.returncode != 0:
                why = (
                    _last_line(proc.stderr) or _last_line(proc.stdout) or f"exit {proc.returncode}"
                )
                raise Failure(f"{svc.name}: `{' '.join(hook.command)}` failed ({why})")


# --------------------------------------------------------------------------- actions


class Backups:
    def __init__(self, cfg: Config, shell: Shell | None = None) -> None:
        self.cfg = cfg
        self.shell = shell or Shell()
        self.restic = Restic(cfg, self.shell)
        self.engine = Engine(self.shell)
        self.compose = Compose(self.shell, cfg.health_timeout)
        self.state = cfg.state_dir

    def path(self, name: str) -> str:
        return f"{self.state}/{name}"

    # ---- init

    def init(self) -> str:
        if self.cfg.target:
            Path(self.cfg.target).mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.restic.exists():
            return "the repository exists"
        self.restic.must("making the repository", "init")
        return "created the repository"

    # ---- backup

    def backup(self) -> dict[str, Any]:
        cfg = self.cfg
        if not cfg.services:
            raise Failure("nothing to back up on this host: no service with data")
        previous = read_json(self.path("volumes.json")) or {}
        # volumes.json is written only once a snapshot is made: "since" is its start
        since = float(previous["_started"]) if previous.get("_started") else None
        started = time.time()
        paths = [v for s in cfg.services for v in s.volumes]
        trees = {p: survey(p, since) for p in paths}
        refusals, notes = check_data_dirs(cfg, trees, previous.get("entries", {}))
        if refusals:
            raise Failure("backup refused: " + "; ".join(refusals) + ". Nothing was backed up.")
        # No separate "does the repository exist" call: every restic run opens the
        # repository (a deliberately slow key derivation), and `backup` itself says so.
        dumps = [s for s in cfg.services if s.database]
        dumps_estimate = sum(
            int((os.path.getsize(s.dump_file(cfg.dump_dir)) if os.path.exists(
                s.dump_file(cfg.dump_dir)) else 0) * 1.5) for s in dumps
        )  # fmt: skip
        self.check_space(trees, dumps_estimate)
        Path(cfg.dump_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        entered: list[Service] = []  # services whose "before" ran: their "after" runs
        try:
            for svc in cfg.services:
                if svc.before:
                    entered.append(svc)
                    self.compose.hooks(svc, svc.before)
            for svc in dumps:
                assert svc.database is not None
                self.engine.dump(svc.database, svc.dump_file(cfg.dump_dir))
            summary = self.snapshot(list(cfg.services), ["scheduled"])
        except Failure as err:
            raise Failure(
                " ".join([err.message, *self.back_in_service(entered)]), err.snapshot
            ) from err
        except BaseException:
            self.back_in_service(entered)
            raise
        problems = self.back_in_service(entered)
        snapshot = str(summary["snapshot_id"])[:8]
        write_json(
            self.path("volumes.json"),
            {"_started": started, "entries": {p: t.entries for p, t in trees.items()}},
        )
        added = int(summary.get("data_added", 0))
        message = (
            f"Backup done: snapshot {snapshot} of {len(cfg.services)} service(s) "
            f"({', '.join(s.name for s in cfg.services)}), {human(added)} new data."
        )
        if notes:
            message += " Note: " + "; ".join(notes) + "."
        problems += self.retention()
        problems += self.weekly_check()
        if problems:
            raise Failure(message + " But: " + " ".join(problems), snapshot=snapshot)
        return {"snapshot": snapshot, "message": message, "data_added": added, "summary": summary}

    def back_in_service(self, services: list[Service]) -> list[str]:
        """Every service's "after" commands, whatever happened; what failed, in words."""
        problems = []
        for svc in services:
            try:
                self.compose.hooks(svc, svc.after)
            except Failure as err:
                problems.append(f"{err.message}: {svc.name} may not be back in service.")
        return problems

    def snapshot(
        self, services: list[Service], tags: list[str], stop: bool = True
    ) -> dict[str, Any]:
        """One restic snapshot of the services' volumes, dumps and SQLite copies (made
        here; the live databases left out), the stop_services stopped meanwhile (not for
        the safety snapshots of restores and upgrades)."""
        cfg = self.cfg
        for svc in services:
            for db, copy in zip(svc.sqlite, svc.sqlite_copies(cfg.dump_dir), strict=True):
                copy_sqlite(db, copy)
        paths = [
            p for s in services for p in (*s.paths(cfg.dump_dir), *s.sqlite_copies(cfg.dump_dir))
        ]
        exclude = [f for s in services for f in s.live_files()]
        stopped = [s for s in services if stop and s.name in cfg.stop_services]
        try:
            for svc in stopped:
                self.compose.stop(svc)
            return self.restic.backup(paths, tags, exclude)
        finally:
            for svc in stopped:
                self.compose.start(svc)

    def check_space(self, trees: dict[str, Tree], dumps_estimate: int) -> None:
        cfg = self.cfg
        if cfg.target:
            need = space_needed(cfg, trees, dumps_estimate)
            have = free_bytes(cfg.target)
            if have < need:
                raise Failure(
                    f"backup refused: the backup disk {cfg.target} has {human(have)} free, "
                    f"this backup may need up to {human(need)} (new data and a "
                    f"{cfg.min_free_mb} MB margin). Earlier snapshots are intact. Free space "
                    "on it or use a larger disk."
                )
        if dumps_estimate and free_bytes(cfg.state_dir) < dumps_estimate + cfg.min_free_mb * MIB:
            raise Failure(
                f"backup refused: not enough space in {cfg.state_dir} for the database dumps "
                f"({human(free_bytes(cfg.state_dir))} free, about {human(dumps_estimate)} needed)"
            )

    def retention(self) -> list[str]:
        """forget --prune with the site's policy. Called only once this run's snapshot is
        made, so the listing it applies to is never empty; a failed backup never gets here."""
        cfg = self.cfg
        keep = retention_args(cfg.keep)
        if not keep:
            return ["retention skipped: the policy keeps nothing."]
        proc = self.restic.run(
            "forget", "--host", cfg.host, "--tag", "scheduled", "--group-by", "host",
            *keep, "--prune",
        )  # fmt: skip
        if proc.returncode != 0:
            return [restic_failure(self.restic.errors(proc), cfg, "applying the retention policy")]
        return []

    def forget_old_safety_snapshots(self) -> None:
        """Keep the newest `keep_safety` safety snapshots. Run after a restore made one, so
        the nightly backup pays for no extra opening of the repository; their data goes
        with the next nightly prune."""
        cfg = self.cfg
        if cfg.keep_safety <= 0:
            return
        proc = self.restic.run(
            "forget", "--host", cfg.host, "--tag", "safety", "--group-by", "host,tags",
            "--keep-last", str(cfg.keep_safety),
        )  # fmt: skip
        if proc.returncode != 0:  # the restore itself went fine: say it, do not fail it
            print(restic_failure(self.restic.errors(proc), cfg, "forgetting old safety snapshots"),
                  file=sys.stderr)  # fmt: skip

    def weekly_check(self) -> list[str]:
        if not check_due(read_json(self.path("last-check.json")), self.cfg.check_every_days,
                         time.time()):  # fmt: skip
            return []
        result = self.check(self.cfg.check_subset)
        return [] if result["ok"] else [result["message"]]

    # ---- check

    def check(self, subset: str | None) -> dict[str, Any]:
        args = ["check"] + ([f"--read-data-subset={subset}"] if subset else ["--read-data"])
        proc = self.restic.run(*args)
        ok = proc.returncode == 0
        what = f"{subset} of the data" if subset else "all the data"
        if ok:
            message = f"Repository check passed (read {what})."
        else:
            detail = [
                ln.strip()
                for ln in (proc.stdout + proc.stderr).splitlines()
                if ln.strip() and ("error" in ln.lower() or "fatal" in ln.lower())
            ]
            message = (
                f"The repository check FAILED (read {what}): the backup repository is "
                f"damaged. {'; '.join(detail[:3])[:400]} Make a fresh backup to a new disk."
            )
        result = record(utc_now(), ok, None, message)
        write_json(self.path("last-check.json"), result)
        return result

    # ---- snapshots

    def snapshot_for(self, svc: Service | None, wanted: str | None) -> dict[str, Any]:
        found = self.restic.snapshots()
        if wanted:
            match = [s for s in found if str(s.get("id", "")).startswith(wanted)
                     or s.get("short_id") == wanted]  # fmt: skip
            if not match:
                raise Failure(f"no snapshot {wanted} in the repository of {self.cfg.host}")
            snap = match[-1]
        else:
            scheduled = [s for s in found if "scheduled" in (s.get("tags") or [])]
            if svc is not None:
                scheduled = [s for s in scheduled if set(svc.volumes) <= set(s.get("paths", []))]
            if not scheduled:
                what = f" holding {svc.name}" if svc else ""
                raise Failure(f"no backup snapshot{what} in the repository yet")
            snap = scheduled[-1]
        if svc is not None:
            missing = [p for p in svc.paths(self.cfg.dump_dir)
                       if p not in (snap.get("paths") or [])]  # fmt: skip
            if missing:
                raise Failure(
                    f"snapshot {snap.get('short_id')} does not hold {svc.name} "
                    f"({', '.join(missing)})"
                )
        return snap

    def restore_size(self, snapshot: str, paths: list[str]) -> int:
        args = ["ls", "--json", snapshot, *(["--recursive", *paths] if paths else [])]
        proc = self.restic.must("reading the snapshot", *args)
        total = 0
        for line in proc.stdout.splitlines():
            with contextlib.suppress(ValueError):
                node = json.loads(line)
                if isinstance(node, dict) and node.get("type") == "file":
                    total += int(node.get("size", 0))
        return total

    def restic_restore(self, snapshot: str, target: str, paths: list[str]) -> None:
        args = ["restore", snapshot, "--target", target, "--verify"]
        for p in paths:
            args += ["--include", p]
        self.restic.must("restoring", *args)

    # ---- restore

    def restore(self, name: str, wanted: str | None) -> dict[str, Any]:
        cfg = self.cfg
        svc = cfg.service(name)
        snap = self.snapshot_for(svc, wanted)
        short = str(snap.get("short_id") or str(snap["id"])[:8])
        paths = svc.paths(cfg.dump_dir)
        need = self.restore_size(short, paths) + cfg.min_free_mb * MIB
        have = free_bytes(cfg.data_dir)
        if have < need:
            raise Failure(
                f"restore refused: {cfg.data_dir} has {human(have)} free, restoring {name} "
                f"beside its current data needs {human(need)}. Nothing was changed."
            )
        staging = f"{cfg.data_dir}/{name}/.restore-staging"
        shutil.rmtree(staging, ignore_errors=True)
        Path(staging).mkdir(parents=True, mode=0o700)
        try:
            self.restic_restore(short, staging, [*paths, *svc.sqlite_copies(cfg.dump_dir)])
            safety = self.safety_snapshot(svc)
            moved = self._swap_in(svc, staging, short, safety)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        for old in moved:
            shutil.rmtree(old, ignore_errors=True)
        self.forget_old_safety_snapshots()
        message = (
            f"Restored {name} from snapshot {short} ({snap.get('time', '')[:19]}); it is "
            f"running and healthy. The state before the restore is kept as snapshot {safety}."
        )
        return {"snapshot": short, "message": message, "safety": safety}

    def safety_snapshot(self, svc: Service, action: str = "restore") -> str:
        """The service's data as it is now, before anything is touched: its `before`
        commands first where they run (a dump they make is then today's; a broken service
        is snapshotted as its files are), its `after` ones always."""
        try:
            if svc.before:
                with contextlib.suppress(Failure):
                    self.compose.hooks(svc, svc.before)
            if svc.database:
                Path(self.cfg.dump_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
                self.engine.dump(svc.database, svc.dump_file(self.cfg.dump_dir))
            live = Service(svc.name, tuple(p for p in svc.volumes if os.path.isdir(p)),
                           svc.database, svc.compose_file,
                           tuple(db for db in svc.sqlite if os.path.exists(db)))  # fmt: skip
            summary = self.snapshot([live], ["safety", f"service:{svc.name}", action], stop=False)
        except Failure as err:
            raise Failure(f"{action} refused: the safety snapshot failed ({err.message})") from err
        finally:
            if svc.before:
                self.back_in_service([svc])
        return str(summary["snapshot_id"])[:8]

    def _swap_in(self, svc: Service, staging: str, short: str, safety: str) -> list[str]:
        """Stop, put the restored data in place (old data aside), start, wait healthy.
        On failure, put the old data back and start the service again."""
        moved: list[tuple[str, str]] = []  # (volume, where its old data went)
        loaded_db = False
        self.compose.stop(svc)
        try:
            for vol in svc.volumes:
                restored = f"{staging}{vol}"
                if not os.path.isdir(restored):
                    raise Failure(f"snapshot {short} has no {vol}")
                aside = f"{vol}.pre-restore"
                shutil.rmtree(aside, ignore_errors=True)
                if os.path.lexists(vol):
                    os.rename(vol, aside)
                moved.append((vol, aside))
                os.rename(restored, vol)
            for vol in svc.rebuilt:
                # not in snapshots: emptied, the service rebuilds it from what came back
                aside = f"{vol}.pre-restore"
                shutil.rmtree(aside, ignore_errors=True)
                if os.path.lexists(vol):
                    st = os.stat(vol)
                    os.rename(vol, aside)
                    moved.append((vol, aside))
                    os.mkdir(vol, st.st_mode & 0o7777)
                    os.chown(vol, st.st_uid, st.st_gid)
            self._put_back_sqlite(svc, staging)
            if svc.database:
                db = svc.database
                dump = f"{staging}{svc.dump_file(self.cfg.dump_dir)}"
                if not dump_complete(dump, db.engine):
                    raise Failure(f"the dump of {db.name} in snapshot {short} is missing or cut")
                loaded_db = True
                self.engine.recreate(db, db.name, db.name)
                self.engine.load(db, db.name, dump)
            self.compose.start(svc)
        except (Failure, OSError) as err:
            why = err.message if isinstance(err, Failure) else str(err)
            still = self._roll_back(svc, moved, loaded_db)
            raise Failure(
                f"restore of {svc.name} from snapshot {short} failed ({why}); rolled back to "
                f"the data from before the restore (also kept as snapshot {safety}){still}",
                snapshot=short,
            ) from err
        return [aside for _, aside in moved]

    def _put_back_sqlite(self, svc: Service, staging: str) -> None:
        """The consistent copies take the live databases' places (snapshots made before
        there were copies hold the databases in the volumes: those stay as restored)."""
        for db, copy in zip(svc.sqlite, svc.sqlite_copies(self.cfg.dump_dir), strict=True):
            restored = f"{staging}{copy}"
            if not os.path.exists(restored):
                continue
            for end in SQLITE_COMPANIONS:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(db + end)
            os.replace(restored, db)

    def _roll_back(self, svc: Service, moved: list[tuple[str, str]], loaded_db: bool) -> str:
        """Put the data from before back and start the service; returns what still went
        wrong, if anything (the safety snapshot remains the way back)."""
        problems = []
        with contextlib.suppress(Failure):
            self.compose.stop(svc)
        for vol, aside in reversed(moved):
            shutil.rmtree(vol, ignore_errors=True)
            if os.path.lexists(aside):
                os.rename(aside, vol)
        if loaded_db and svc.database:
            db = svc.database
            try:
                self.engine.recreate(db, db.name, db.name)
                self.engine.load(db, db.name, svc.dump_file(self.cfg.dump_dir))
            except Failure as err:
                problems.append(f"the database could not be put back: {err.message}")
        try:
            self.compose.start(svc)
        except Failure as err:
            problems.append(f"and it did not start again: {err.message}")
        return ("; " + "; ".join(problems)) if problems else ""

    # ---- drill

    def drill(self, wanted: str | None) -> dict[str, Any]:
        cfg = self.cfg
        snap = self.snapshot_for(None, wanted)
        short = str(snap.get("short_id") or str(snap["id"])[:8])
        paths = list(snap.get("paths") or [])
        size = self.restore_size(short, paths)
        need = size + cfg.min_free_mb * MIB
        have = free_bytes(cfg.scratch_dir)
        if have < need:
            raise Failure(
                f"drill refused: {cfg.scratch_dir} has {human(have)} free, restoring snapshot "
                f"{short} needs {human(need)}",
                snapshot=short,
            )
        scratch = cfg.scratch_dir
        shutil.rmtree(scratch, ignore_errors=True)
        Path(scratch).mkdir(parents=True, mode=0o700)
        try:
            # --verify reads every restored file back and compares it with the snapshot
            self.restic_restore(short, scratch, [])
            files, nbytes = self.compare_with_snapshot(short, scratch, paths)
            loaded = []
            for svc in cfg.services:
                if svc.database and svc.dump_file(cfg.dump_dir) in paths:
                    self.drill_dump(svc, f"{scratch}{svc.dump_file(cfg.dump_dir)}", short)
                    loaded.append(svc.name)
            drilled = []
            for svc in cfg.services:
                if svc.drill and all(host in paths for host, _ in svc.drill.mounts):
                    drilled.append(f"{svc.name} ({self.drill_service(svc.drill, scratch)})")
            checked = []
            for svc in cfg.services:
                for copy in svc.sqlite_copies(cfg.dump_dir):
                    if copy in paths:
                        verdict = sqlite_sound(f"{scratch}{copy}")
                        if verdict != "ok":
                            raise Failure(f"the SQLite copy {copy} is damaged: {verdict[:200]}")
                        checked.append(svc.name)
        except Failure as err:
            raise Failure(f"drill of snapshot {short} FAILED: {err.message}", short) from err
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        message = (
            f"Restore drill passed: snapshot {short} ({str(snap.get('time', ''))[:19]}) "
            f"restored {files} files, {human(nbytes)}, identical to the backup"
        )
        if loaded:
            message += f"; database dumps loaded: {', '.join(loaded)}"
        if checked:
            message += f"; SQLite copies sound: {', '.join(sorted(set(checked)))}"
        if drilled:
            message += f"; services' own checks passed: {', '.join(drilled)}"
        return {"snapshot": short, "message": message + "."}

    def compare_with_snapshot(self, short: str, scratch: str, paths: list[str]) -> tuple[int, int]:
        proc = self.restic.must("reading the snapshot", "ls", "--json", short)
        files = nbytes = 0
        for line in proc.stdout.splitlines():
            try:
                node = json.loads(line)
            except ValueError:
                continue
            if not isinstance(node, dict) or "node" not in (
                node.get("struct_type"),
                node.get("message_type"),
            ):
                continue
            restored = f"{scratch}{node['path']}"
            if node.get("type") == "file":
                try:
                    actual = os.lstat(restored).st_size
                except OSError:
                    raise Failure(f"{node['path']} was not restored") from None
                if actual != int(node.get("size", 0)):
                    raise Failure(f"{node['path']} restored with the wrong size")
                files += 1
                nbytes += actual
            elif not os.path.lexists(restored):
                raise Failure(f"{node['path']} was not restored")
        return files, nbytes

    def drill_service(self, drill: Drill, scratch: str) -> str:
        """The service's own check of its restored data; its last output line."""
        argv = ["docker", "run", "--rm", "--network", "none", "--read-only",
                "--tmpfs", "/run", "--tmpfs", "/tmp", "--entrypoint", drill.command[0]]  # fmt: skip
        for host_path, path in drill.mounts:
            argv += ["--volume", f"{scratch}{host_path}:{path}:ro"]
        argv += [drill.image, *drill.command[1:]]
        proc = self.shell.run(argv, timeout=HOOK_TIMEOUT)
        last = _last_line(proc.stdout) or _last_line(proc.stderr)
        if proc.returncode != 0:
            raise Failure(f"the check of {drill.image} on the restored data failed: {last[:300]}")
        return last[:200]

    def drill_dump(self, svc: Service, dump: str, short: str) -> None:
        assert svc.database is not None
        db = svc.database
        if not dump_complete(dump, db.engine):
            raise Failure(f"the dump of {db.name} is missing or cut short")
        scratch_db = f"{db.name}_drill"
        try:
            self.engine.recreate(db, scratch_db, db.name)
            self.engine.load(db, scratch_db, dump)
        finally:
            with contextlib.suppress(Failure):
                self.engine.drop(db, scratch_db)


# --------------------------------------------------------------------------- upgrades
#
# An upgrade moves one service from the image its compose project runs (compose.yml) to
# the one the playbook rendered beside it (compose.next.yml), with a safety snapshot of
# its data first. compose.yml is replaced only once the new version is healthy and answers
# through the proxy, so until then it still says what to go back to. A journal records each
# step (upgrade/<service>.json under the state folder), so that a run killed at any point
# is finished or rolled back by the next one:
#
#   snapshot     the safety snapshot is being taken: nothing has changed yet, start over
#   switch       snapshot taken, the new version is being started
#   verify       the new version is up, being checked through the proxy
#   rollback     the old version and its data are being put back
#   done | rolled-back                                          final states

UPGRADE_FINAL = ("done", "rolled-back")
IMAGE_LINE = re.compile(r"^\s+image:\s*['\"]?([^'\"\s]+)", re.MULTILINE)
PROXY_WAIT_SECONDS = 60


def compose_image(path: str) -> str | None:
    """The image a compose file runs (the service role renders one service per file)."""
    try:
        found = IMAGE_LINE.search(Path(path).read_text(encoding="utf-8"))
    except OSError:
        return None
    return found.group(1) if found else None


def version_of(image: str | None) -> str:
    return image.rsplit(":", 1)[-1] if image and ":" in image else str(image)


@dataclass(frozen=True)
class ProxyCheck:
    """GET / through the host's own proxy (127.0.0.1:443) with the service's public name;
    the certificate verified against the site's CA file, or the system's trust store."""

    server_name: str
    ca_file: str | None = None
    port: int = 443

    def once(self, timeout: float) -> str | None:
        """None when the service answers (any status below 500), else what went wrong."""
        import http.client
        import socket
        import ssl

        try:
            context = ssl.create_default_context(cafile=self.ca_file or None)
            with (
                socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as raw,
                context.wrap_socket(raw, server_hostname=self.server_name) as tls,
            ):
                tls.sendall(
                    f"GET / HTTP/1.1\r\nHost: {self.server_name}\r\nUser-Agent: "
                    "telecentre-upgrade\r\nConnection: close\r\n\r\n".encode("ascii")
                )
                response = http.client.HTTPResponse(tls)
                response.begin()
        except (OSError, ssl.SSLError, http.client.HTTPException) as err:
            return f"https://{self.server_name}/ through the proxy: {type(err).__name__}: {err}"
        if response.status >= 500:
            return f"https://{self.server_name}/ answered HTTP {response.status} through the proxy"
        return None

    def wait(self, seconds: float) -> None:
        """Polls until the service answers; the proxy may need a moment for a new container."""
        deadline = time.monotonic() + seconds
        while True:
            problem = self.once(min(10.0, max(deadline - time.monotonic(), 1.0)))
            if problem is None:
                return
            if time.monotonic() >= deadline:
                raise Failure(problem)
            time.sleep(1)


class Upgrades:
    def __init__(self, backups: Backups, proxy_wait: float = PROXY_WAIT_SECONDS) -> None:
        self.backups = backups
        self.cfg = backups.cfg
        self.proxy_wait = proxy_wait

    def journal_path(self, name: str) -> str:
        return f"{self.cfg.state_dir}/upgrade/{name}.json"

    def journal(self, name: str) -> dict[str, Any] | None:
        found = read_json(self.journal_path(name))
        return found if isinstance(found, dict) else None

    def _write(self, journal: dict[str, Any], step: str) -> None:
        journal["step"] = step
        journal["updated"] = utc_now()
        write_json(self.journal_path(journal["service"]), journal)

    def service(self, name: str, project: Path) -> Service:
        """The backed-up service, or one without data (nothing to snapshot)."""
        compose = str(project / "compose.yml")
        for svc in self.cfg.services:
            if svc.name == name:
                return Service(svc.name, svc.volumes, svc.database, compose)
        return Service(name, (), None, compose)

    def upgrade(self, name: str, next_file: str, check: ProxyCheck | None) -> dict[str, Any]:
        project = Path(next_file).parent
        svc = self.service(name, project)
        new = compose_image(next_file)
        if new is None:
            raise Failure(f"upgrade refused: {next_file} names no image (run the upgrade again)")
        earlier = self.journal(name)
        if earlier and earlier.get("step") not in UPGRADE_FINAL:
            resumed = self._recover(svc, earlier, new, next_file, check)
            if resumed is not None:
                return resumed
        old = compose_image(svc.compose_file)
        if old is None:
            raise Failure(f"upgrade refused: {name} is not deployed here (no {svc.compose_file})")
        if old == new:
            with contextlib.suppress(OSError):
                os.unlink(next_file)
            return {"snapshot": None, "message": f"{name} already runs {version_of(new)}.",
                    "from": version_of(old), "to": version_of(new)}  # fmt: skip
        self.check_space(svc)
        shutil.copy2(svc.compose_file, project / "compose.prev.yml")
        journal: dict[str, Any] = {"service": name, "old_image": old, "new_image": new,
                                   "snapshot": None, "started": utc_now()}  # fmt: skip
        self._write(journal, "snapshot")
        if svc.volumes or svc.database:
            journal["snapshot"] = self.backups.safety_snapshot(svc, "upgrade")
        self._write(journal, "switch")
        return self._forward(svc, journal, next_file, check)

    def check_space(self, svc: Service) -> None:
        """The safety snapshot may need the whole of the service's data on the backup disk
        (dedup only makes it smaller), and a rollback restores it beside the data."""
        cfg = self.cfg
        size = sum(survey(v, None).size for v in svc.volumes)
        dump = svc.dump_file(cfg.dump_dir) if svc.database else None
        if dump and os.path.exists(dump):
            size += int(os.path.getsize(dump) * 1.5)
        need = size + cfg.min_free_mb * MIB
        for where, what in ((cfg.target, "the backup disk"), (cfg.data_dir, "the data disk")):
            if where and svc.volumes and free_bytes(where) < need:
                raise Failure(
                    f"upgrade refused: {what} {where} has {human(free_bytes(where))} free, the "
                    f"safety snapshot of {svc.name} may need {human(need)} (its data and a "
                    f"{cfg.min_free_mb} MB margin). Nothing was changed: free space, then run "
                    "the upgrade again."
                )

    def _forward(
        self, svc: Service, journal: dict[str, Any], next_file: str, check: ProxyCheck | None
    ) -> dict[str, Any]:
        old, new = journal["old_image"], journal["new_image"]
        try:
            self.backups.compose.start(Service(svc.name, (), None, next_file))
            self._write(journal, "verify")
            if check is not None:
                check.wait(self.proxy_wait)
        except Failure as err:
            return self._roll_back(svc, journal, err.message)
        os.replace(next_file, svc.compose_file)
        journal["finished"] = utc_now()
        self._write(journal, "done")
        kept = f"; the data from before is kept as snapshot {journal['snapshot']}"
        return {
            "snapshot": journal["snapshot"],
            "message": f"Upgraded {svc.name} from {version_of(old)} to {version_of(new)}: "
            f"healthy{' and answering through the proxy' if check else ''}"
            f"{kept if journal['snapshot'] else ''}.",
            "from": version_of(old),
            "to": version_of(new),
        }

    def _roll_back(self, svc: Service, journal: dict[str, Any], why: str) -> dict[str, Any]:
        """Old image and the data of the safety snapshot back; raises Failure saying so."""
        self._write(journal | {"why": why}, "rollback")
        journal["why"] = why
        project = Path(svc.compose_file).parent
        previous = project / "compose.prev.yml"
        if previous.is_file():  # compose.yml may have been rewritten meanwhile (a deploy)
            shutil.copy2(previous, svc.compose_file)
        snapshot = journal.get("snapshot")
        old, new = version_of(journal["old_image"]), version_of(journal["new_image"])
        still = ""
        try:
            if snapshot:
                staging = f"{self.cfg.data_dir}/{svc.name}/.rollback-staging"
                shutil.rmtree(staging, ignore_errors=True)
                Path(staging).mkdir(parents=True, mode=0o700)
                try:
                    self.backups.restic_restore(snapshot, staging, svc.paths(self.cfg.dump_dir))
                    moved = self.backups._swap_in(svc, staging, snapshot, snapshot)
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
                for aside in moved:
                    shutil.rmtree(aside, ignore_errors=True)
            else:
                self.backups.compose.start(svc)
        except Failure as err:
            still = f"; BUT the rollback did not finish ({err.message})"
        journal["finished"] = utc_now()
        self._write(journal, "rollback" if still else "rolled-back")
        data = f" with its data from before the upgrade (safety snapshot {snapshot})"
        raise Failure(
            f"upgrade of {svc.name} from {old} to {new} failed ({why}); rolled back "
            f"automatically to {old}{data if snapshot else ''}{still}",
            snapshot=snapshot,
        )

    def _recover(
        self,
        svc: Service,
        journal: dict[str, Any],
        new: str,
        next_file: str,
        check: ProxyCheck | None,
    ) -> dict[str, Any] | None:
        """An earlier run stopped at journal['step']: finish it or roll it back. Returns the
        result when the earlier upgrade is finished, None when it is undone (or had changed
        nothing) and the upgrade asked for now can start from the old version."""
        step = journal.get("step")
        if step == "snapshot":  # nothing changed before the snapshot was made
            os.unlink(self.journal_path(svc.name))
            return None
        if step in ("switch", "verify") and journal.get("new_image") == new:
            result = self._forward(svc, journal, next_file, check)
            result["message"] = "Finished an interrupted upgrade: " + result["message"]
            return result
        try:  # a rollback stopped midway, or a different version is asked for now
            self._roll_back(svc, journal, journal.get("why") or "it was interrupted")
        except Failure as err:
            if journal.get("step") != "rolled-back":
                raise
            print(err.message, file=sys.stderr)
        return None


# --------------------------------------------------------------------------- main


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="telecentre-backup", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("init", help="make the repository if it does not exist")
    sub.add_parser("backup", help="back up every service of this host now")
    restore = sub.add_parser("restore", help="restore one service")
    restore.add_argument("--service", required=True)
    restore.add_argument("--snapshot")
    drill = sub.add_parser("drill", help="restore into a scratch folder and verify")
    drill.add_argument("--snapshot")
    check = sub.add_parser("check", help="check the repository, reading data")
    check.add_argument("--subset", default=None)
    check.add_argument("--read-all", action="store_true")
    upgrade = sub.add_parser("upgrade", help="move one service to the image of compose.next.yml")
    upgrade.add_argument("--service", required=True)
    upgrade.add_argument("--next", required=True, help="the compose file of the new version")
    upgrade.add_argument("--check-host", help="public name to check through the proxy")
    upgrade.add_argument("--check-ca", help="CA certificate of the proxy (internal TLS)")
    snaps = sub.add_parser("snapshots", help="list the snapshots as JSON")
    snaps.add_argument("--service")
    return parser.parse_args(argv)


RESULT_FILES = {
    "backup": "last-backup.json",
    "drill": "last-drill.json",
    "restore": "last-restore.json",
    "upgrade": "last-upgrade.json",
}


def main(argv: Sequence[str] | None = None, shell: Shell | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    os.umask(0o077)
    try:
        cfg = load_config(args.config)
    except Failure as err:
        print(json.dumps(record(utc_now(), False, None, err.message)))
        return 1
    backups = Backups(cfg, shell)
    result_file = RESULT_FILES.get(args.action)
    extra: dict[str, Any] = {}
    try:
        # init and snapshots only read or make the repository (restic locks it itself)
        if args.action == "init":
            print(backups.init())
            return 0
        if args.action == "snapshots":
            svc = cfg.service(args.service) if args.service else None
            found = backups.restic.snapshots()
            if svc is not None:
                found = [s for s in found if set(svc.volumes) <= set(s.get("paths", []))]
            print(json.dumps(found))
            return 0
        with Lock(backups.path("lock")).held(LOCK_WAIT_SECONDS):
            if args.action == "check":
                subset = None if args.read_all else (args.subset or cfg.check_subset)
                result = backups.check(subset)
                print(json.dumps(result, ensure_ascii=False))
                return 0 if result["ok"] else 1
            if args.action == "backup":
                done = backups.backup()
            elif args.action == "restore":
                done = backups.restore(args.service, args.snapshot)
                extra = {"service": args.service, "safety": done["safety"]}
            elif args.action == "upgrade":
                extra = {"service": args.service}
                check = ProxyCheck(args.check_host, args.check_ca) if args.check_host else None
                done = Upgrades(backups).upgrade(args.service, args.next, check)
                extra |= {"from": done["from"], "to": done["to"]}
            else:
                done = backups.drill(args.snapshot)
        result = record(utc_now(), True, done["snapshot"], done["message"])
        code = 0
    except Failure as err:
        result = record(utc_now(), False, err.snapshot, err.message)
        code = 1
    except OSError as err:
        result = record(utc_now(), False, None, f"{args.action} failed: {err}")
        code = 1
    if result_file:
        write_json(backups.path(result_file), result | extra)
    print(json.dumps(result | extra, ensure_ascii=False))
    return code


if __name__ == "__main__":
    sys.exit(main())
