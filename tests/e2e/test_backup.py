"""Backups end to end on the deployed demo site: data seeded through the real services
(WebDAV, CalDAV with a room booking, DokuWiki, Fava, pads, polls, over HTTPS through the
proxy, trusting only the site's CA), backed up with `telecentre-ctl backup`, wiped,
restored with `telecentre-ctl restore`, served again byte-identical; restore drills; a
damaged repository caught by the check; a small loop-mounted backup disk that fills up;
nothing readable in the repository.

Every test leaves the deployed site as it found it (the wiped data is restored, the
loop-mounted disk unmounted, a last good backup made). The pads and the polls live in the
lite profile's PostgreSQL (Debian's, built on the host): their dumps are made, loaded back
by the restore and by the drill for real here. MariaDB's dump and load need its upstream
image, which cannot be pulled without a registry: tests/unit/test_backup.py covers them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from tests.conftest import DeployedSite
from tests.e2e.clients import (
    booking_event,
    fava_add,
    fava_balance,
    fava_session,
    member_calendar,
    pad_edit,
    pad_text,
    pads_session,
    poll_create,
    poll_data,
    poll_vote,
    polls_session,
)

pytestmark = pytest.mark.e2e

# The CLI as users run it, in its own process.
CLI = "from telecentre_ctl.cli.main import main\nmain()\n"
STATE = "/var/lib/telecentre/backup"
CANARY = "CANARY-" + uuid.uuid4().hex  # planted in the data, must never show in the repository
VOLUMES = {
    "webdav": ["/srv/telecentre/webdav/files"],
    "radicale": ["/srv/telecentre/radicale/collections"],
    "fava": ["/srv/telecentre/fava/ledgers"],
}
LEDGER = "/srv/telecentre/fava/ledgers/association.beancount"
# What PostgreSQL holds for a service: its rows as pg_dump writes them.
DATABASES = {"pads": "tc_pads", "polls": "tc_polls"}


def database_rows(site: DeployedSite, service: str) -> str:
    dump = f"docker exec tc-postgres pg_dump -U postgres --data-only {DATABASES[service]}"
    # pg_dump 17.6+ fences its output with \restrict / \unrestrict and a fresh random key
    lines = site.run(dump).stdout.splitlines()
    return "\n".join(ln for ln in lines if not ln.startswith(("\\restrict ", "\\unrestrict ")))


def ctl(site: DeployedSite, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLI, *args],
        capture_output=True, text=True, env=site.env, timeout=1800, check=False,
    )  # fmt: skip


def ctl_json(site: DeployedSite, *args: str, code: int = 0) -> dict[str, Any]:
    proc = ctl(site, *args, "--json")
    assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    data: dict[str, Any] = json.loads(proc.stdout)
    data["_stderr"] = proc.stderr
    return data


def host_json(site: DeployedSite, path: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(site.run(f"cat {path}").stdout)
    return data


def repo(site: DeployedSite) -> str:
    return f"/srv/backup/{site.name}/{site.lab.hosts[0].name}"


def session_for(site_ca: Path, auth: tuple[str, str] | None = None) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment beats verify
    session.verify = str(site_ca)
    session.auth = auth
    return session


@dataclass
class Seeded:
    folder: str
    files: dict[str, str]  # name -> sha256
    calendar_url: str
    event_uid: str
    page_id: str
    page_text: str
    narration: str
    ledger_sha256: str
    pad: str
    pad_lines: list[str]
    poll: str
    poll_data: dict[str, Any]
    booking_uid: str
    rows: dict[str, str]
    member: tuple[str, str]  # in the directory when the backup was made


def seed(site: DeployedSite, lan: str, site_ca: Path, tmp_path: Path, pad_client: Path) -> Seeded:
    """Data put in through the applications, as co-workers would."""
    dav = session_for(site_ca, site.admin)
    folder = f"https://fichiers.{lan}/sauvegarde-{uuid.uuid4().hex[:6]}/"
    assert dav.request("MKCOL", folder, timeout=30).status_code == 201
    files: dict[str, bytes] = {
        "compte rendu d'été à Caen.txt": f"réunion du 3 juin\n{CANARY}\n".encode(),
        "日本語のメモ.md": "# メモ\n".encode(),
        "Ünïcødé ☕ notes.txt": b"caf\xc3\xa9\n" * 1000,
    }
    for name, body in files.items():
        assert dav.put(folder + quote(name), data=body, timeout=30).status_code == 201
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(24 * 1024 * 1024))
    with big.open("rb") as handle:
        assert dav.put(folder + "grand fichier.bin", data=handle, timeout=300).status_code == 201
    sums = {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}
    sums["grand fichier.bin"] = hashlib.sha256(big.read_bytes()).hexdigest()

    import caldav

    client = caldav.DAVClient(
        url=f"https://agenda.{lan}/{site.admin[0]}/",
        username=site.admin[0],
        password=site.admin[1],
        ssl_verify_cert=str(site_ca),
    )
    calendar = client.principal().make_calendar(name=f"Sauvegarde {uuid.uuid4().hex[:6]}")
    uid = f"{uuid.uuid4()}@telecentre"
    calendar.save_event(
        "BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//telecentre-ctl//e2e//FR\nBEGIN:VEVENT\n"
        f"UID:{uid}\nDTSTAMP:20261129T090000Z\nDTSTART:20261201T090000Z\n"
        "DTEND:20261201T100000Z\nSUMMARY:Permanence numérique\nEND:VEVENT\nEND:VCALENDAR\n"
    )
    page_id = f"sauvegarde:page{uuid.uuid4().hex[:6]}"
    text = "====== Sauvegardes ======\nChaque nuit, chiffrées. Vérifiées chaque semaine ✓.\n"
    save_wiki_page(site, lan, site_ca, page_id, text)

    fava = fava_session(site, site_ca)
    narration = f"Cotisation sauvegardée {uuid.uuid4().hex[:6]}"
    fava_add(fava, lan, narration, "15.00")
    assert fava_balance(fava, lan, narration)["Actif:512-Banque"] == "15.00"
    ledger = site.run(f"sha256sum {LEDGER}").stdout.split()[0]

    pads = pads_session(site, site_ca)
    token = pads.get(f"https://pads.{lan}/api/token", timeout=30).json()["token"]
    pad, lines = f"Sauvegarde {uuid.uuid4().hex[:6]}", ["Avant la panne", "Après la restauration"]
    writers = [pad_edit(pad_client, site, lan, site_ca, token, pad, line, lines) for line in lines]
    for proc in writers:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    pad_text(pads, lan, pad, lines)  # stored

    polls = polls_session(site, site_ca)
    poll = poll_create(polls, lan, "Date de l'assemblée générale", ["12 mars", "19 mars"])
    poll_vote(polls, lan, poll, "Alex", [1])
    booking = f"{uuid.uuid4()}@telecentre"
    day = f"2028{uuid.uuid4().int % 12 + 1:02d}{uuid.uuid4().int % 28 + 1:02d}"  # a free slot
    member_calendar(site, lan, site_ca, "imprimante-3d").save_event(
        booking_event(booking, f"{day}T140000Z", f"{day}T170000Z", "Impression des badges")
    )
    rows = {service: database_rows(site, service) for service in DATABASES}
    member = site.add_member("Camille Sauvegarde", f"camille-{uuid.uuid4().hex[:6]}@example.org",
                             "nomade")  # fmt: skip
    return Seeded(folder, sums, str(calendar.url), uid, page_id, text, narration, ledger, pad,
                  lines, poll, poll_data(polls, lan, poll), booking, rows, member)  # fmt: skip


def save_wiki_page(site: DeployedSite, lan: str, site_ca: Path, page_id: str, text: str) -> None:
    wiki = f"https://wiki.{lan}/doku.php"
    session = session_for(site_ca)
    login = session.get(wiki, params={"id": "start", "do": "login"}, timeout=30).text
    token = re.search(r'name="sectok" value="([^"]*)"', login)
    session.post(wiki, timeout=30, data={
        "id": "start", "do": "login", "u": site.admin[0], "p": site.admin[1],
        "sectok": token.group(1) if token else "",
    })  # fmt: skip
    editor = session.get(wiki, params={"id": page_id, "do": "edit"}, timeout=30).text
    sectok = re.search(r'name="sectok" value="([^"]*)"', editor)
    assert sectok, "not logged in to the wiki"
    form = {"id": page_id, "sectok": sectok.group(1), "wikitext": text, "summary": "e2e",
            "do[save]": "1"}  # fmt: skip
    for name in ("changecheck", "date", "prefix", "suffix"):
        found = re.search(rf'name="{name}" value="([^"]*)"', editor)
        if found:
            form[name] = found.group(1)
    session.post(wiki, data=form, timeout=30)
    assert wiki_page(lan, site_ca, page_id) == text.strip()


def wiki_page(lan: str, site_ca: Path, page_id: str) -> str:
    raw = session_for(site_ca).get(
        f"https://wiki.{lan}/doku.php", params={"id": page_id, "do": "export_raw"}, timeout=30
    )
    return raw.text.strip()  # DokuWiki answers 200 for a missing page too: compare bodies


def served_as_seeded(site: DeployedSite, lan: str, site_ca: Path, seeded: Seeded) -> None:
    assert site.run(f"sha256sum {LEDGER}").stdout.split()[0] == seeded.ledger_sha256
    balance = fava_balance(fava_session(site, site_ca), lan, seeded.narration)
    assert balance == {"Actif:512-Banque": "15.00", "Produits:756-Cotisations": "-15.00"}
    for service, rows in seeded.rows.items():  # byte for byte, as backed up
        assert database_rows(site, service) == rows, service
    assert poll_data(polls_session(site, site_ca), lan, seeded.poll) == seeded.poll_data
    printer = member_calendar(site, lan, site_ca, "imprimante-3d")
    assert any(seeded.booking_uid in e.data for e in printer.events())
    text = pad_text(pads_session(site, site_ca), lan, seeded.pad, seeded.pad_lines)
    assert sorted(text.splitlines()) == sorted(seeded.pad_lines)
    dav = session_for(site_ca, site.admin)
    for name, digest in seeded.files.items():
        answer = dav.get(seeded.folder + quote(name), timeout=300)
        assert answer.status_code == 200, name
        assert hashlib.sha256(answer.content).hexdigest() == digest, name
    import caldav

    client = caldav.DAVClient(
        url=f"https://agenda.{lan}/{site.admin[0]}/",
        username=site.admin[0],
        password=site.admin[1],
        ssl_verify_cert=str(site_ca),
    )
    found = [c for c in client.principal().calendars() if str(c.url) == seeded.calendar_url]
    assert found, "the calendar is gone"
    assert any(seeded.event_uid in e.data for e in found[0].events())
    assert wiki_page(lan, site_ca, seeded.page_id) == seeded.page_text.strip()
    assert member_in(lan, site_ca, seeded.member)


def member_in(lan: str, site_ca: Path, member: tuple[str, str]) -> bool:
    """Whether the directory lets this member in (the file share asks it on each request)."""
    answer = session_for(site_ca, member).request(
        "PROPFIND", f"https://fichiers.{lan}/", headers={"Depth": "0"}, timeout=30
    )
    assert answer.status_code in (207, 401), answer.status_code
    return answer.status_code == 207


def wiki_volumes(site: DeployedSite) -> list[str]:
    cfg = host_json(site, "/etc/telecentre/backup/config.json")
    (wiki,) = [s for s in cfg["services"] if s["name"] == "dokuwiki"]
    return list(wiki["volumes"])


# --------------------------------------------------------------------------- the round trip


def test_backup_wipe_restore_round_trip(
    deployed_demo: DeployedSite, lan: str, site_ca: Path, tmp_path: Path, pad_client: Path
) -> None:
    site = deployed_demo
    # the deploy scheduled the nightly backup at site.yml's time, and the weekly drill
    timer = site.run("systemctl show telecentre-backup.timer -p TimersCalendar").stdout
    assert "02:30:00" in timer
    assert site.run("systemctl is-enabled telecentre-backup.timer telecentre-backup-drill.timer")
    assert site.run("stat -c %a /etc/telecentre/backup/restic.pass").stdout.strip() == "600"

    seeded = seed(site, lan, site_ca, tmp_path, pad_client)
    done = ctl_json(site, "backup", str(site.site_dir))
    (host,) = done["hosts"]
    assert host["ok"] is True and re.fullmatch(r"[0-9a-f]{8}", host["snapshot"])
    recorded = host_json(site, f"{STATE}/last-backup.json")
    assert list(recorded) == ["finished", "ok", "snapshot", "message"]
    assert recorded["ok"] is True and recorded["snapshot"] == host["snapshot"]

    # the key and the canary: never in the run log, never readable in the repository
    key = site.secrets()["backup"]["restic_password"]
    for log in (site.site_dir / "logs").glob("backup-*.log"):
        assert key not in log.read_text(encoding="utf-8")
    found = site.run(f"grep -rlF {CANARY} {repo(site)}", check=False)
    assert found.returncode == 1 and not found.stdout, "the canary is readable in the repository"
    assert site.run(f"grep -rlF {CANARY} /srv/telecentre/webdav", check=False).returncode == 0

    # wipe every volume of the three applications, then restore each from the backup
    wiped = {**VOLUMES, "dokuwiki": wiki_volumes(site)}
    for volumes in wiped.values():
        for volume in volumes:
            site.run(f"find {volume} -mindepth 1 -delete")
    # pads and polls live in PostgreSQL: emptied there (the dumps bring them back)
    psql = "docker exec tc-postgres psql -U postgres -v ON_ERROR_STOP=1"
    site.run(f"{psql} -d tc_pads -c 'DELETE FROM pads'")
    site.run(f"{psql} -d tc_polls -c 'TRUNCATE jawanndenn_poll CASCADE'")
    wiped |= {"pads": [], "polls": []}
    # the directory: the member backed up leaves, another one arrives after the backup
    assert member_in(lan, site_ca, seeded.member)
    ctl(site, "members", str(site.site_dir), "remove", seeded.member[0])
    later = site.add_member("Arrivé Après", f"apres-{uuid.uuid4().hex[:6]}@example.org", "nomade")
    assert not member_in(lan, site_ca, seeded.member) and member_in(lan, site_ca, later)
    wiped = {"directory": [], **wiped}
    assert dav_status(site, lan, site_ca, seeded) == 404
    assert all(database_rows(site, s) != seeded.rows[s] for s in DATABASES)
    for service in wiped:
        restored = ctl_json(site, "restore", str(site.site_dir), "--service", service)
        (outcome,) = restored["hosts"]
        assert outcome["ok"] is True, outcome
        assert outcome["snapshot"] == host["snapshot"]
        assert re.fullmatch(r"[0-9a-f]{8}", outcome["safety"])  # the wiped state, kept
        health = site.run(f"docker inspect -f '{{{{.State.Health.Status}}}}' tc-{service}")
        assert health.stdout.strip() == "healthy"
    served_as_seeded(site, lan, site_ca, seeded)
    assert not member_in(lan, site_ca, later)  # the directory is as it was backed up

    # nothing left aside by the restores
    leftovers = site.run("ls -a /srv/telecentre/*/ | grep -E 'pre-restore|restore-staging'",
                         check=False)  # fmt: skip
    assert leftovers.stdout == ""

    # the drill proves the latest snapshot restores, and records it for status
    drill = ctl_json(site, "drill", str(site.site_dir))
    (outcome,) = drill["hosts"]
    assert outcome["ok"] is True and "Restore drill passed" in outcome["message"]
    assert "services' own checks passed: directory" in outcome["message"]  # scratch slapd
    recorded = host_json(site, f"{STATE}/last-drill.json")
    assert list(recorded) == ["finished", "ok", "snapshot", "message"] and recorded["ok"]
    assert site.run("test -e /var/tmp/telecentre-drill", check=False).returncode == 1

    # a backup refuses a wiped volume that held data (and leaves the repository alone)
    snapshots_before = snapshot_ids(site)
    site.run(f"mv {VOLUMES['radicale'][0]} /var/tmp/radicale-aside && mkdir "
             f"{VOLUMES['radicale'][0]}")  # fmt: skip
    try:
        refused = ctl_json(site, "backup", str(site.site_dir), code=1)
        assert "is empty but held" in refused["hosts"][0]["message"]
        assert snapshot_ids(site) == snapshots_before
    finally:
        site.run(f"rmdir {VOLUMES['radicale'][0]} && mv /var/tmp/radicale-aside "
                 f"{VOLUMES['radicale'][0]}")  # fmt: skip
    ctl_json(site, "backup", str(site.site_dir))


def dav_status(site: DeployedSite, lan: str, site_ca: Path, seeded: Seeded) -> int:
    dav = session_for(site_ca, site.admin)
    name = next(iter(seeded.files))
    return dav.get(seeded.folder + quote(name), timeout=30).status_code


def snapshot_ids(site: DeployedSite, config: str | None = None) -> list[str]:
    option = f"--config {config} " if config else ""
    listing = site.run(f"telecentre-backup {option}snapshots").stdout
    return [s["short_id"] for s in json.loads(listing)]


def test_restore_refuses_unknown_input_without_touching_anything(
    deployed_demo: DeployedSite,
) -> None:
    proc = ctl(deployed_demo, "restore", str(deployed_demo.site_dir), "--service", "wiki")
    assert proc.returncode == 2 and "not a backed-up service" in proc.stderr
    proc = ctl(deployed_demo, "restore", str(deployed_demo.site_dir), "--service", "webdav",
               "--snapshot", "deadbeef")  # fmt: skip
    assert proc.returncode == 1 and "no snapshot deadbeef" in proc.stderr
    health = deployed_demo.run("docker inspect -f '{{.State.Health.Status}}' tc-webdav")
    assert health.stdout.strip() == "healthy"


# --------------------------------------------------------------------------- damage


def test_flipped_bytes_in_the_repository_are_reported_by_the_check(
    deployed_demo: DeployedSite,
) -> None:
    """On a copy of the repository (the site's own stays intact for the other tests)."""
    site = deployed_demo
    copy = "/var/tmp/baktest-damaged"
    alt = "/etc/telecentre/backup/damaged.json"
    site.run(f"rm -rf {copy} && cp -a {repo(site)} {copy}")
    try:
        site.run(
            "python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); "
            f'c["repository"]="{copy}"; c["state_dir"]="{copy}-state"; '
            f'json.dump(c, open(sys.argv[2], "w"))\' /etc/telecentre/backup/config.json {alt}'
        )
        clean = site.run(f"telecentre-backup --config {alt} check --read-all", check=False)
        assert clean.returncode == 0, clean.stdout + clean.stderr
        # flip bytes in the middle of the largest data pack
        pack = site.run(f"find {copy}/data -type f -printf '%s %p\\n' | sort -n | tail -1")
        size, path = pack.stdout.split()
        site.run(
            f'python3 -c \'import sys; f=open(sys.argv[1],"r+b"); f.seek({int(size) // 2}); '
            f"b=f.read(16); f.seek({int(size) // 2}); f.write(bytes(x ^ 0xFF for x in b))' {path}"
        )
        damaged = site.run(f"telecentre-backup --config {alt} check --read-all", check=False)
        assert damaged.returncode == 1
        result = json.loads(damaged.stdout)
        assert result["ok"] is False and "damaged" in result["message"]
    finally:
        site.run(f"rm -rf {copy} {copy}-state {alt}")


# --------------------------------------------------------------------------- a full disk


def container_pid(site: DeployedSite) -> int:
    """The lab host's init, seen from the machine (child of its systemd-nspawn)."""
    nspawn = site.lab.hosts[0].pid
    assert nspawn is not None
    children = Path(f"/proc/{nspawn}/task/{nspawn}/children").read_text().split()
    for child in children:
        if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
            return int(child)
    # nspawn may sit behind `sh -c`: one level further
    for child in children:
        for grandchild in Path(f"/proc/{child}/task/{child}/children").read_text().split():
            if Path(f"/proc/{grandchild}/comm").read_text().strip() == "systemd":
                return int(grandchild)
    raise AssertionError(f"no systemd under nspawn {nspawn}")


@pytest.fixture
def small_backup_disk(deployed_demo: DeployedSite, tmp_path: Path) -> Iterator[str]:
    """A 320 MB ext4 file system on a loop device of the machine, mounted over the site's
    backup target inside the lab host (a USB disk, as far as the host can tell). The lab
    host cannot attach loop devices itself: the machine attaches it and mounts it in the
    host's mount namespace (nsenter), through a device node made there for the purpose."""
    image = tmp_path / "usb.img"
    subprocess.run(["truncate", "-s", "320M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-m", "0", str(image)], check=True)
    device = subprocess.run(["losetup", "--find", "--show", str(image)], check=True,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    pid = container_pid(deployed_demo)
    major, minor = (int(x) for x in Path(f"/sys/class/block/{Path(device).name}/dev")
                    .read_text().split(":"))  # fmt: skip
    # the host's mount namespace, and its root as the root (paths are the host's)
    enter = ["nsenter", "--target", str(pid), "--mount", "--root", "--wd", "--"]
    node = "/dev/baktest-usb"  # on the host's /dev (its /run is nodev)
    try:
        subprocess.run([*enter, "mknod", node, "b", str(major), str(minor)], check=True)
        subprocess.run([*enter, "mount", node, "/srv/backup"], check=True)
        yield "/srv/backup"
    finally:
        subprocess.run([*enter, "umount", "/srv/backup"], check=False)
        subprocess.run([*enter, "rm", "-f", node], check=False)
        subprocess.run(["losetup", "-d", device], check=False)


def test_a_full_backup_disk_fails_cleanly(
    deployed_demo: DeployedSite, small_backup_disk: str
) -> None:
    site = deployed_demo
    fill = "/srv/telecentre/webdav/files/remplissage.bin"
    mounted = site.run(f"findmnt -n -o SOURCE,SIZE {small_backup_disk}").stdout
    assert "baktest-usb" in mounted and "M" in mounted, mounted
    try:
        # A backup never makes a repository on a disk that lacks one (not mounted? new?)
        missing = ctl_json(site, "backup", str(site.site_dir), code=1)
        assert "no backup repository" in missing["hosts"][0]["message"]
        site.run("telecentre-backup init")
        first = ctl_json(site, "backup", str(site.site_dir))["hosts"][0]
        assert first["ok"], first

        # new data larger than the disk: refused before anything is written
        site.run(f"head -c 300M /dev/urandom > {fill}")
        refused = ctl_json(site, "backup", str(site.site_dir), code=1)["hosts"][0]
        assert "backup refused" in refused["message"] and "free" in refused["message"]

        # the same data with an old date (copied with its dates kept): the estimate misses
        # it, restic runs into the full disk, and fails cleanly
        site.run(f"touch -d 2001-01-01 {fill}")
        full = ctl_json(site, "backup", str(site.site_dir), code=1)
        message = full["hosts"][0]["message"]
        assert "is full" in message and "Earlier snapshots are intact" in message, message
        assert "error" in full["_stderr"].lower() or "failed" in full["_stderr"].lower()
        recorded = host_json(site, f"{STATE}/last-backup.json")
        assert recorded["ok"] is False and "is full" in recorded["message"]

        # services kept running, earlier snapshots intact and readable
        for service in ("webdav", "radicale", "dokuwiki", "proxy"):
            state = site.run(f"docker inspect -f '{{{{.State.Status}}}}' tc-{service}").stdout
            assert state.strip() == "running", service
        site.run(f"rm -f {fill}")
        listed = site.run(
            f"RESTIC_PASSWORD_FILE=/etc/telecentre/backup/restic.pass restic -r {repo(site)} "
            "--no-lock snapshots --json"
        )
        assert first["snapshot"] in [s["short_id"] for s in json.loads(listed.stdout)]
        checked = site.run(
            f"RESTIC_PASSWORD_FILE=/etc/telecentre/backup/restic.pass restic -r {repo(site)} "
            "--no-lock check --read-data",
            check=False,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
    finally:
        site.run(f"rm -f {fill}")
    # (the fixture unmounts the small disk; the next backup goes to the site's own again)


def test_site_is_left_with_a_good_backup(deployed_demo: DeployedSite) -> None:
    """Runs last in this module: the host's records say ok, as other tiers expect."""
    done = ctl_json(deployed_demo, "backup", str(deployed_demo.site_dir))
    assert done["hosts"][0]["ok"] is True
    assert host_json(deployed_demo, f"{STATE}/last-backup.json")["ok"] is True
