"""Members of a telecentre: one account in the site's directory for every service.

`telecentre-ctl members` checks what it is given locally first (names, e-mails, plans,
CSV rows: all problems at once, nothing sent), then sends ONE request over SSH to the
directory's host (telecentre_ctl/members_host.py), where `directory members` changes the
tree inside the container, all or nothing. A new member's first password is made here,
given once (welcome sheet, --json), and otherwise goes nowhere: not in logs, not on a
command line. Removal locks the account out of every service at once (the entry leaves
ou=people, which every service searches, and loses its password), then applies the site's
members.on_remove policy to the member's own data (the catalogue's members.data paths).
"""

from __future__ import annotations

import csv
import io
import json
import secrets
import subprocess
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from telecentre_ctl.compose import DATA_DIR, DIRECTORY
from telecentre_ctl.errors import (
    HostUnreachable,
    InvalidInput,
    OperationFailed,
    Problem,
)
from telecentre_ctl.site import EMAIL_RE, LOCALES, Host, Site

UID_MAX = 32
CSV_FIELDS = ("name", "email", "plan")
CSV_OPTIONAL = ("uid", "lang")
PASSWORD_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # no 0/o, 1/l: read from paper
PASSWORD_GROUPS = 4  # 4 x 5 characters of 32: 100 bits
SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=15")
SSH_UNREACHABLE = 255
ARCHIVE_DIR = f"{DATA_DIR}/{DIRECTORY}/archive"
MAX_IMPORT_BYTES = 5 * 1024 * 1024
# Letters that Unicode does not decompose into a base letter and an accent.
LETTERS_WITHOUT_ACCENTS = str.maketrans(
    {"ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ß": "ss", "đ": "d",
     "Đ": "D", "ł": "l", "Ł": "L", "þ": "th", "Þ": "TH", "ð": "d", "Ð": "D"}
)  # fmt: skip


@dataclass(frozen=True)
class NewMember:
    uid: str
    name: str
    email: str
    plan: str
    lang: str
    line: int | None = None  # in the CSV file it came from


def one_time_password() -> str:
    """A first password to be read from paper: 4 groups of 5, 100 bits from the OS."""
    groups = (
        "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(5)) for _ in range(PASSWORD_GROUPS)
    )
    return "-".join(groups)


def uid_from_name(name: str) -> str:
    """firstname.lastname in plain lower-case ASCII ("Élodie Lefèvre" -> elodie.lefevre)."""
    spelled = name.translate(LETTERS_WITHOUT_ACCENTS)
    ascii_name = unicodedata.normalize("NFKD", spelled).encode("ascii", "ignore").decode()
    words = ["".join(c for c in w.lower() if c.isalnum()) for w in ascii_name.split()]
    uid = ".".join(w for w in words if w)[:UID_MAX].strip(".")
    if not uid or not uid[0].isalpha():
        uid = ("m" + uid)[:UID_MAX]
    return uid if len(uid) >= 2 else uid + "0"


def free_uid(wanted: str, taken: set[str]) -> str:
    if wanted not in taken:
        return wanted
    for n in range(2, 10000):
        candidate = f"{wanted[: UID_MAX - len(str(n))]}{n}"
        if candidate not in taken:
            return candidate
    raise InvalidInput(f"no free identifier near {wanted!r}", fix="give one with --uid")


def _uid_ok(uid: str) -> bool:
    import re

    return bool(re.match(r"^[a-z][a-z0-9._-]{1,31}$", uid))


def check_member(
    site: Site, fields: dict[str, str], where: str, line: int | None, key_prefix: str = ""
) -> tuple[dict[str, str], list[Problem]]:
    """One member's fields checked against the site (plans, languages, formats)."""
    problems = []
    plans = site_plans(site)

    def bad(key: str, message: str, fix: str) -> None:
        problems.append(Problem(where, f"{key_prefix}{key}", message, fix, line))

    name = " ".join(str(fields.get("name") or "").split())
    if not name:
        bad("name", "missing", "give the member's full name")
    elif len(name) > 80:
        bad("name", "longer than 80 characters", "shorten it")
    email = str(fields.get("email") or "").strip()
    if not EMAIL_RE.match(email):
        bad("email", f"{email!r} is not an e-mail address", "write it as someone@example.org")
    plan = str(fields.get("plan") or "").strip()
    if plan not in plans:
        bad(
            "plan",
            f"{plan!r} is not a plan of this site" if plan else "missing",
            f"use one of: {', '.join(sorted(plans))} (site.yml members.plans)",
        )
    uid = str(fields.get("uid") or "").strip()
    if uid and not _uid_ok(uid):
        bad(
            "uid",
            f"{uid!r} is not a valid identifier",
            "use 2-32 lower-case letters, digits, dots, dashes or underscores, starting "
            "with a letter",
        )
    lang = str(fields.get("lang") or "").strip() or site.locale
    if lang not in LOCALES:
        bad("lang", f"{lang!r} is not a supported language", "use fr or en")
    return {"name": name, "email": email, "plan": plan, "uid": uid, "lang": lang}, problems


def site_plans(site: Site) -> dict[str, dict[str, Any]]:
    return dict((site.members or {}).get("plans") or {})


def require_directory(site: Site) -> Host:
    """The host that runs the site's directory (InvalidInput if the site runs none)."""
    if DIRECTORY not in site.services:
        raise InvalidInput(
            f"site {site.name} has no members' directory",
            fix=f"add directory: {{}} to services: in {site.dir}/site.yml, then run "
            f"telecentre-ctl deploy {site.dir}",
        )
    for host in site.hosts:
        if DIRECTORY in site.services_on(host.name):
            return host
    raise InvalidInput(
        "no host runs the directory", fix="add directory to one host's tc_services in hosts.yml"
    )


def member_data_paths(site: Site) -> list[str]:
    """Host paths (with {uid}) of a member's own data in the services the site runs."""
    paths = []
    for name in site.services:
        for spec in (site.catalog[name].data.get("members") or {}).get("data", []):
            paths.append(f"{DATA_DIR}/{name}/{spec}")
    return paths


# --------------------------------------------------------------------------- transport


def _host_program() -> str:
    return (Path(__file__).parent / "members_host.py").read_text(encoding="utf-8")


def call(site: Site, request: dict[str, Any], timeout: float = 900) -> dict[str, Any]:
    """One request on the directory's host; its answer. Refusals are InvalidInput."""
    host = require_directory(site)
    program = _host_program() + f"\nsys.exit(main(json.loads({json.dumps(json.dumps(request))})))\n"
    command = "python3 -I -S -"
    if host.connection.become:
        command = "sudo -n " + command
    argv = host.connection.ssh_argv(command, first=SSH_OPTIONS)
    try:
        proc = subprocess.run(
            argv, input=program, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as err:
        raise HostUnreachable(
            f"{host.name} ({host.address}): no answer over SSH in {timeout:.0f} s",
            fix="check that the host is up and reachable, then run again",
        ) from err
    where = f"{host.name} ({host.address})"
    if proc.returncode == SSH_UNREACHABLE:
        raise HostUnreachable(
            f"{where}: SSH failed: {proc.stderr.strip()[-300:]}",
            fix="check that the host is up, answers SSH, and that its host key is in the "
            "known_hosts file hosts.yml names",
        )
    try:
        answer = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise OperationFailed(
            f"{where}: the members request gave no answer (exit {proc.returncode}): "
            f"{proc.stderr.strip()[-300:]}",
            fix="check that python3 and Docker run on the host (telecentre-ctl deploy)",
        ) from None
    if proc.returncode == 2:
        raise InvalidInput(
            f"the directory refused: {answer.get('refused')}", fix="nothing was changed"
        )
    if proc.returncode != 0:
        raise OperationFailed(
            f"{where}: "
            + str(answer.get("error") or answer.get("data_error") or "members request failed"),
            fix="telecentre-ctl status shows the directory's health; deploy the site if it "
            "is not running",
        )
    return dict(answer)


def audit(site: Site, line: str) -> None:
    """One line per change in SITE_DIR/logs/members.log (never a password)."""
    logs = site.dir / "logs"
    logs.mkdir(exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with open(logs / "members.log", "a", encoding="utf-8") as f:
        f.write(f"{stamp} {line}\n")


# --------------------------------------------------------------------------- operations


def list_members(site: Site, include_former: bool = False) -> list[dict[str, Any]]:
    answer = call(site, {"directory": {"op": "list", "former": include_former}})
    return list(answer.get("members", []))


Rows = list[tuple[dict[str, str], int | None]]  # fields, line in the file (None: flags)


def prepare(site: Site, rows: Rows, where: str, key_prefix: str) -> list[NewMember]:
    """Rows checked here (check_rows), then identifiers chosen against the directory's."""
    checked = check_rows(site, rows, where, key_prefix)
    taken = {m["uid"] for m in list_members(site, include_former=True)}
    return assign_uids(checked, taken)


def check_rows(site: Site, rows: Rows, where: str, key_prefix: str) -> Rows:
    """Every row's fields checked, and duplicates within the batch; all problems at once
    (InvalidInput: nothing was sent anywhere)."""
    problems: list[Problem] = []
    checked = []
    for fields, line in rows:
        values, found = check_member(site, fields, where, line, key_prefix)
        problems += found
        checked.append((values, line))
    seen_uid: dict[str, int | None] = {}
    seen_mail: dict[str, int | None] = {}
    for values, line in checked:
        mail = values["email"].lower()
        if mail and mail in seen_mail:
            problems.append(
                Problem(
                    where,
                    f"{key_prefix}email",
                    f"{values['email']} appears twice (also line {seen_mail[mail]})",
                    "give each member one row",
                    line,
                )
            )
        seen_mail.setdefault(mail, line)
        uid = values["uid"]
        if uid and uid in seen_uid:
            problems.append(
                Problem(
                    where,
                    f"{key_prefix}uid",
                    f"{uid} appears twice (also line {seen_uid[uid]})",
                    "give each member their own uid",
                    line,
                )
            )
        if uid:
            seen_uid.setdefault(uid, line)
    if problems:
        raise InvalidInput(f"{where}: nothing was changed", problems=problems)
    return checked


def assign_uids(checked: Rows, taken: set[str]) -> list[NewMember]:
    """Members with their identifiers: the one given, or firstname.lastname made free
    of those `taken` (current and former members) and of the batch's own."""
    given = {v["uid"] for v, _ in checked if v["uid"]}
    members = []
    for values, line in checked:
        uid = values["uid"]
        if not uid:
            uid = free_uid(uid_from_name(values["name"]), taken | given)
            given.add(uid)
        members.append(
            NewMember(uid, values["name"], values["email"], values["plan"], values["lang"], line)
        )
    return members


def add(site: Site, members: list[NewMember], where: str) -> list[tuple[NewMember, str]]:
    """Add every member or none; returns each with the first password, given once."""
    plans = site_plans(site)
    with_passwords = [(m, one_time_password()) for m in members]
    request = {
        "op": "add",
        "members": [
            {
                "uid": m.uid,
                "name": m.name,
                "email": m.email,
                "plan": m.plan,
                "lang": m.lang,
                "groups": [g for g in plans[m.plan]["groups"] if g != "members"],
                "password": password,
            }
            for m, password in with_passwords
        ],
    }
    try:
        call(site, {"directory": request})
    except InvalidInput as err:
        raise _refusal_with_lines(err, members, where) from None
    audit(site, "add " + " ".join(f"{m.uid}({m.plan})" for m in members))
    return with_passwords


def _refusal_with_lines(err: InvalidInput, members: list[NewMember], where: str) -> InvalidInput:
    """The directory's refusal, each part pointed at the CSV line of its member."""
    text = err.message.removeprefix("the directory refused: ")
    problems = []
    for part in text.split("; "):
        uid = part.partition(":")[0]
        member = next((m for m in members if m.uid == uid), None)
        problems.append(
            Problem(
                where,
                "uid" if member else "",
                part,
                "choose another identifier or e-mail; nothing was changed",
                member.line if member else None,
            )
        )
    return InvalidInput(
        f"{where}: refused by the directory, nothing was changed", problems=problems
    )


def read_csv(path: Path) -> Rows:
    """The rows of a CSV file with a header row: name,email,plan[,uid][,lang]."""
    shown = str(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise InvalidInput(
            f"{shown}: cannot be read ({err.strerror})", fix="give the path of a CSV file"
        ) from None
    if len(raw) > MAX_IMPORT_BYTES:
        raise InvalidInput(f"{shown}: larger than 5 MB", fix="split it into several imports")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise InvalidInput(
            f"{shown}:{line}: not UTF-8 text",
            fix="save the file as CSV UTF-8 (LibreOffice: Unicode (UTF-8))",
        ) from None
    try:
        dialect: Any = csv.Sniffer().sniff(text.split("\n", 1)[0], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    rows = list(reader)
    if not rows:
        raise InvalidInput(
            f"{shown}: empty", fix="first line: name,email,plan (then one member per line)"
        )
    header = [h.strip().lower() for h in rows[0]]
    missing = [f for f in CSV_FIELDS if f not in header]
    unknown = [h for h in header if h not in (*CSV_FIELDS, *CSV_OPTIONAL)]
    if missing or unknown:
        what = [f"lacks {', '.join(missing)}"] if missing else []
        what += [f"has unknown {', '.join(unknown)}"] if unknown else []
        raise InvalidInput(
            f"{shown}:1: the header {'; '.join(what)}",
            fix="first line: name,email,plan (optional columns: uid, lang)",
        )
    parsed: list[tuple[dict[str, str], int | None]] = []
    problems = []
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            problems.append(
                Problem(
                    shown,
                    f"line {number}",
                    f"{len(row)} fields where the header has {len(header)}",
                    "one value per column (quote names holding the separator)",
                    number,
                )
            )
            continue
        parsed.append((dict(zip(header, row, strict=True)), number))
    if problems:
        raise InvalidInput(f"{shown}: nothing was changed", problems=problems)
    if not parsed:
        raise InvalidInput(
            f"{shown}: no member in the file", fix="one member per line after the header"
        )
    return parsed


def remove(site: Site, uids: list[str]) -> dict[str, Any]:
    """Lock members out of every service at once, then apply members.on_remove to their
    own data (kept, archived into the directory's archive volume, or deleted)."""
    bad = [u for u in uids if not _uid_ok(u)]
    if bad:
        raise InvalidInput(
            f"not an identifier: {', '.join(bad)}",
            fix="give identifiers as telecentre-ctl members SITE_DIR list shows them",
        )
    policy = str((site.members or {}).get("on_remove", "keep"))
    request: dict[str, Any] = {"directory": {"op": "remove", "uids": uids, "policy": policy}}
    if policy != "keep":
        request["data"] = {
            "policy": policy,
            "uids": uids,
            "paths": member_data_paths(site),
            "archive_dir": ARCHIVE_DIR,
        }
    answer = call(site, request)
    audit(site, f"remove {' '.join(uids)} (on_remove: {policy})")
    return answer


def reset_password(site: Site, uid: str) -> str:
    if not _uid_ok(uid):
        raise InvalidInput(f"{uid!r} is not an identifier", fix="see telecentre-ctl members list")
    password = one_time_password()
    call(site, {"directory": {"op": "reset", "uid": uid, "password": password}})
    audit(site, f"reset-password {uid}")
    return password


# --------------------------------------------------------------------------- welcome sheet

SHEET = {
    "fr": {
        "head": "Bienvenue à {title}",
        "intro": "Voici votre compte de membre : un seul identifiant pour tous les services "
        "du lieu.",
        "login": "Identifiant",
        "password": "Mot de passe provisoire",
        "once": "Ce mot de passe n'est donné qu'une fois : choisissez le vôtre dès maintenant sur",
        "portal": "Tous les services et leur mode d'emploi :",
        "services": "Vos services :",
        "ca": "Réseau local : installez d'abord le certificat du lieu ({url}telecentre-ca.crt), "
        "la page d'accueil explique comment.",
        "plan": "Formule",
    },
    "en": {
        "head": "Welcome to {title}",
        "intro": "Here is your member account: one login for every service of the place.",
        "login": "Login",
        "password": "First password",
        "once": "This password is given only once: choose your own now at",
        "portal": "Every service and how to use it:",
        "services": "Your services:",
        "ca": "Local network: first install the place's certificate ({url}telecentre-ca.crt); "
        "the portal explains how.",
        "plan": "Plan",
    },
}


def welcome_sheet(site: Site, member: NewMember, password: str) -> str:
    t = SHEET[member.lang if member.lang in SHEET else site.locale]
    lines = [
        t["head"].format(title=site.title),
        "=" * len(t["head"].format(title=site.title)),
        "",
        f"{member.name} <{member.email}>",
        t["intro"],
        "",
        f"  {t['login']:<24} {member.uid}",
        f"  {t['password']:<24} {password}",
        f"  {t['plan']:<24} {member.plan}",
        "",
        f"{t['once']} {site.url(DIRECTORY)}",
        "",
        f"{t['portal']} {site.portal_url}",
        t["services"],
    ]
    locale = member.lang if member.lang in SHEET else site.locale
    for name in sorted(site.services):
        if name == DIRECTORY or "members" not in site.catalog[name].data:
            continue
        lines.append(
            f"  - {site.catalog[name].text('title', locale)} : {site.url(name)}"
            if locale == "fr"
            else f"  - {site.catalog[name].text('title', locale)}: {site.url(name)}"
        )
    if site.tls == "internal":
        lines += ["", t["ca"].format(url=site.portal_url)]
    return "\n".join(lines) + "\n"
