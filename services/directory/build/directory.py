"""The members' directory of a telecentre: OpenLDAP (slapd) from Debian, and this program.

    directory start      the container's entrypoint: slapd's configuration made afresh in
                         /run at every start, the tree made (or reloaded from the restored
                         dump) when the data volume is empty, then the account page and the
                         credentials check on :8080 (as the openldap user)
    directory members    one members request (JSON on stdin, answer as JSON on stdout);
                         run as root with docker exec: root on the ldapi socket manages
                         the tree (SASL EXTERNAL), so no administrator password exists
    directory dump       slapcat of the tree into the dump volume (before each backup)
    directory drill      in a scratch container: load the dump into a throwaway slapd and
                         count what answers (the restore drill)
    directory health     the healthcheck: slapd answers on ldapi and the web side on :8080

Services reach slapd as ldap://directory:3389 with the read-only account cn=reader (its
password is a site secret). Members are uid=<uid>,ou=people; a removed member is moved
to ou=former without a password; groups (members, staff, admins) are groupOfNames.
Passwords reach slapd only through the password-modify operation, which hashes them with
Argon2; they are never written to a file or a log by this program.
"""

from __future__ import annotations

import base64
import html
import json
import os
import pwd
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

BASE = os.environ.get("DIRECTORY_BASE") or "dc=telecentre"
PEOPLE = f"ou=people,{BASE}"
GROUPS = f"ou=groups,{BASE}"
FORMER = f"ou=former,{BASE}"
READER = f"cn=reader,{BASE}"
GROUP_NAMES = ("members", "staff", "admins")
UID_RE = re.compile(r"^[a-z][a-z0-9._-]{1,31}$")
LDAP_PORT = 3389
WEB_PORT = 8080
RUN = Path("/run/slapd")
LDAPI = RUN / "ldapi"
LDAPI_URL = "ldapi://" + urllib.parse.quote(str(LDAPI), safe="")
DATA = Path("/var/lib/ldap")
DUMP = Path("/var/lib/ldap-dump/directory.ldif")
READER_SECRET = Path("/run/secrets/reader_password")
MIN_PASSWORD = 10
PERSON_ATTRIBUTES = ["uid", "cn", "mail", "employeeType", "preferredLanguage", "description"]
ROOT_IDENTITY = "gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth"


class Refused(Exception):
    """A request that cannot be done as asked; nothing was changed."""


# --------------------------------------------------------------------------- slapd


def config_ldif(config_dir: Path, data_dir: Path, run_dir: Path) -> str:
    """slapd's whole configuration (cn=config), made afresh at each start. Four threads,
    not sixteen: each bind checks an Argon2 hash in 7 MiB of memory, and a small box's
    directory has a few logins at a time."""
    return f"""\
dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {run_dir}/slapd.pid
olcArgsFile: {run_dir}/slapd.args
olcLogLevel: none
olcThreads: 4
olcDisallows: bind_anon
olcRequires: authc

dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb
olcModuleLoad: argon2

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

include: file:///etc/ldap/schema/core.ldif

include: file:///etc/ldap/schema/cosine.ldif

include: file:///etc/ldap/schema/inetorgperson.ldif

dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend
olcPasswordHash: {{ARGON2}}
olcSizeLimit: 10000
olcAccess: to dn.base="" by * read
olcAccess: to dn.base="cn=subschema" by * read

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: to * by dn.exact="{ROOT_IDENTITY}" manage by * none

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcDbDirectory: {data_dir}
olcSuffix: {BASE}
olcDbMaxSize: 1073741824
olcDbIndex: objectClass eq
olcDbIndex: uid eq
olcDbIndex: mail eq
olcDbIndex: member eq
olcAccess: to * by dn.exact="{ROOT_IDENTITY}" manage by * break
olcAccess: to attrs=userPassword by self =xw by anonymous auth by * none
olcAccess: to dn.subtree="{PEOPLE}" by dn.exact="{READER}" read by self read by * none
olcAccess: to dn.subtree="{FORMER}" by * none
olcAccess: to * by dn.exact="{READER}" read by users read by * none
"""


def initial_tree(title: str) -> str:
    rdn_value = BASE.split(",")[0].partition("=")[2]
    groups = "".join(
        f"\ndn: cn={g},{GROUPS}\nobjectClass: groupOfNames\ncn: {g}\nmember: {READER}\n"
        for g in GROUP_NAMES
    )
    return (
        f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\n"
        f"dc: {rdn_value}\n{ldif_line('o', title or rdn_value)}\n"
        f"\ndn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n"
        f"\ndn: {GROUPS}\nobjectClass: organizationalUnit\nou: groups\n"
        f"\ndn: {FORMER}\nobjectClass: organizationalUnit\nou: former\n"
        f"\ndn: {READER}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: reader\nuserPassword: !\ndescription: read-only account of the services\n" + groups
    )


def ldif_line(name: str, text: str) -> str:
    """One attribute as LDIF carries it: base64 beyond plain printable ASCII."""
    if text.isascii() and text.isprintable() and not text.startswith((" ", ":", "<")):
        return f"{name}: {text}"
    return f"{name}:: {base64.b64encode(text.encode()).decode()}"


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        argv, capture_output=True, text=True, errors="replace", check=False, **kwargs
    )
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return proc


def make_config(config_dir: Path, data_dir: Path, run_dir: Path) -> None:
    config_dir.mkdir(parents=True, exist_ok=True)
    source = run_dir / "config.ldif"
    source.write_text(config_ldif(config_dir, data_dir, run_dir), encoding="utf-8")
    run(["slapadd", "-n0", "-F", str(config_dir), "-l", str(source)])


def load_tree(config_dir: Path, ldif: Path) -> None:
    run(["slapadd", "-q", "-n1", "-F", str(config_dir), "-l", str(ldif)])


def start_slapd(config_dir: Path, urls: str, run_dir: Path, user: str | None) -> None:
    argv = ["slapd", "-h", urls, "-F", str(config_dir)]
    if user:
        argv += ["-u", user, "-g", user]
    run(argv)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if (run_dir / "ldapi").exists() and (run_dir / "slapd.pid").exists():
            return
        time.sleep(0.05)
    raise SystemExit("slapd did not start within 30 s")


def stop_slapd(run_dir: Path) -> None:
    try:
        pid = int((run_dir / "slapd.pid").read_text().strip())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.05)


# --------------------------------------------------------------------------- LDAP


def ldap3() -> Any:
    import ldap3 as module  # imported late: `directory health` needs only the stdlib

    return module


def root_connection(url: str = LDAPI_URL) -> Any:
    """The tree's manager: root on the ldapi socket (SASL EXTERNAL)."""
    lib = ldap3()
    conn = lib.Connection(
        lib.Server(url),
        authentication=lib.SASL,
        sasl_mechanism=lib.EXTERNAL,
        sasl_credentials="",
        raise_exceptions=False,
    )
    if not conn.bind():
        raise SystemExit(f"cannot manage the directory over {url}: {conn.result}")
    return conn


def member_dn(uid: str) -> str:
    return f"uid={uid},{PEOPLE}"


def user_connection(uid: str, password: str) -> Any | None:
    """A connection bound as the member, or None if the credentials are wrong."""
    if not UID_RE.match(uid) or not password:
        return None
    lib = ldap3()
    conn = lib.Connection(lib.Server(LDAPI_URL), user=member_dn(uid), password=password)
    try:
        return conn if conn.bind() else None
    except lib.core.exceptions.LDAPException:
        return None


def set_password(conn: Any, dn: str, password: str, old: str | None = None) -> None:
    ok = conn.extend.standard.modify_password(dn, old_password=old, new_password=password)
    if not ok:
        raise Refused(f"the password of {dn} could not be set ({conn.result.get('message')})")


def groups_of(conn: Any, dn: str) -> list[str]:
    lib = ldap3()
    member = lib.utils.conv.escape_filter_chars(dn)
    conn.search(GROUPS, f"(&(objectClass=groupOfNames)(member={member}))", attributes=["cn"])
    return sorted(
        str(e["attributes"]["cn"][0]) for e in conn.response if e.get("type") == "searchResEntry"
    )


def attr(entry: dict[str, Any], name: str) -> str:
    value = entry["attributes"].get(name)
    if isinstance(value, list):
        return str(value[0]) if value else ""
    return "" if value is None else str(value)


def people(conn: Any, base: str) -> list[dict[str, Any]]:
    conn.search(base, "(objectClass=inetOrgPerson)", attributes=PERSON_ATTRIBUTES)
    return [e for e in conn.response if e.get("type") == "searchResEntry"]


# --------------------------------------------------------------------------- members


def _taken(conn: Any, wanted: list[dict[str, Any]]) -> list[str]:
    """Why members of the request cannot be added: uid or e-mail already used."""
    uids = {}
    mails = {}
    for base, status in ((PEOPLE, "a member"), (FORMER, "a former member")):
        for entry in people(conn, base):
            uids[attr(entry, "uid")] = status
            mails[attr(entry, "mail").lower()] = (attr(entry, "uid"), status)
    problems = []
    for member in wanted:
        if member["uid"] in uids:
            problems.append(f"{member['uid']}: the identifier is already {uids[member['uid']]}'s")
        mail = member["email"].lower()
        if mail in mails:
            owner, status = mails[mail]
            problems.append(
                f"{member['uid']}: {member['email']} is the e-mail of {status} ({owner})"
            )
    return problems


def _entry(member: dict[str, Any]) -> dict[str, Any]:
    name = member["name"].strip()
    parts = name.split()
    return {
        "objectClass": ["inetOrgPerson"],
        "uid": member["uid"],
        "cn": name,
        "sn": parts[-1] if parts else name,
        "givenName": parts[0] if len(parts) > 1 else name,
        "displayName": name,
        "mail": member["email"],
        "employeeType": member["plan"],
        "preferredLanguage": member.get("lang") or "fr",
    }


def _set_groups(conn: Any, dn: str, wanted: list[str]) -> None:
    lib = ldap3()
    have = set(groups_of(conn, dn))
    for group in GROUP_NAMES:
        change = None
        if group in wanted and group not in have:
            change = lib.MODIFY_ADD
        elif group not in wanted and group in have:
            change = lib.MODIFY_DELETE
        if change is not None and not conn.modify(
            f"cn={group},{GROUPS}", {"member": [(change, [dn])]}
        ):
            raise Refused(
                f"group {group} could not be changed for {dn}: {conn.result.get('message')}"
            )


def add_members(conn: Any, wanted: list[dict[str, Any]]) -> dict[str, Any]:
    """All or nothing: every member is checked first; if one add fails after others
    went in, those are taken out again."""
    for member in wanted:
        if not UID_RE.match(member["uid"]):
            raise Refused(f"{member['uid']!r} is not a valid identifier")
        if any(g not in GROUP_NAMES for g in member["groups"]):
            raise Refused(f"{member['uid']}: unknown group in {member['groups']}")
    problems = _taken(conn, wanted)
    if problems:
        raise Refused("; ".join(problems))
    added: list[str] = []
    try:
        for member in wanted:
            dn = member_dn(member["uid"])
            if not conn.add(dn, attributes=_entry(member)):
                raise Refused(f"{member['uid']} could not be added: {conn.result.get('message')}")
            added.append(dn)
            set_password(conn, dn, member["password"])
            _set_groups(conn, dn, ["members", *member["groups"]])
    except BaseException:
        for dn in added:
            _set_groups(conn, dn, [])
            conn.delete(dn)
        raise
    return {"added": [m["uid"] for m in wanted]}


def remove_members(conn: Any, uids: list[str], policy: str) -> dict[str, Any]:
    """Disable at once (out of every group, no password, out of ou=people, which every
    service searches); `delete` also deletes the entry."""
    lib = ldap3()
    present = {attr(e, "uid") for e in people(conn, PEOPLE)}
    missing = [u for u in uids if u not in present]
    if missing:
        raise Refused("not a current member: " + ", ".join(missing))
    stamp = time.strftime("%Y-%m-%d", time.gmtime())
    for uid in uids:
        dn = member_dn(uid)
        _set_groups(conn, dn, [])
        if policy == "delete":
            if not conn.delete(dn):
                raise Refused(f"{uid} could not be deleted: {conn.result.get('message')}")
            continue
        changes = {
            "userPassword": [(lib.MODIFY_DELETE, [])],
            "description": [(lib.MODIFY_REPLACE, [f"removed {stamp}"])],
        }
        if not conn.modify(dn, changes):
            raise Refused(f"{uid} could not be disabled: {conn.result.get('message')}")
        conn.delete(f"uid={uid},{FORMER}")  # an older record of the same member
        if not conn.modify_dn(dn, f"uid={uid}", new_superior=FORMER):
            raise Refused(f"{uid} could not be moved to {FORMER}: {conn.result.get('message')}")
    return {"removed": uids, "policy": policy}


def list_members(conn: Any, former: bool) -> dict[str, Any]:
    found = []
    for base, status in ((PEOPLE, "active"), *([(FORMER, "removed")] if former else [])):
        for entry in people(conn, base):
            found.append(
                {
                    "uid": attr(entry, "uid"),
                    "name": attr(entry, "cn"),
                    "email": attr(entry, "mail"),
                    "plan": attr(entry, "employeeType"),
                    "lang": attr(entry, "preferredLanguage"),
                    "groups": [g for g in groups_of(conn, entry["dn"]) if g != "members"],
                    "status": status,
                    "note": attr(entry, "description"),
                }
            )
    return {"members": sorted(found, key=lambda m: (m["status"], m["uid"]))}


def reset_password(conn: Any, uid: str, password: str) -> dict[str, Any]:
    if uid not in {attr(e, "uid") for e in people(conn, PEOPLE)}:
        raise Refused(f"not a current member: {uid}")
    set_password(conn, member_dn(uid), password)
    return {"reset": uid}


def members_request(request: dict[str, Any]) -> dict[str, Any]:
    conn = root_connection()
    op = request.get("op")
    if op == "add":
        return add_members(conn, request["members"])
    if op == "remove":
        return remove_members(conn, request["uids"], request.get("policy", "keep"))
    if op == "list":
        return list_members(conn, bool(request.get("former")))
    if op == "reset":
        return reset_password(conn, request["uid"], request["password"])
    if op == "taken":
        return {"problems": _taken(conn, request["members"])}
    raise Refused(f"unknown request {op!r}")


def cmd_members() -> int:
    try:
        request = json.loads(sys.stdin.read())
        answer = members_request(request)
    except Refused as err:
        print(json.dumps({"refused": str(err)}))
        return 2
    print(json.dumps(answer, ensure_ascii=False))
    return 0


# --------------------------------------------------------------------------- backup


def cmd_dump() -> int:
    """A consistent copy of the tree (slapcat reads an MDB snapshot while slapd runs)."""
    DUMP.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=DUMP.parent, prefix=".directory.", suffix=".ldif")
    os.close(fd)
    try:
        run(["slapcat", "-F", str(RUN / "slapd.d"), "-n1", "-l", tmp])
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, DUMP)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(json.dumps({"entries": count_entries(DUMP.read_text(encoding="utf-8"))}))
    return 0


def count_entries(ldif: str) -> int:
    return sum(1 for line in ldif.splitlines() if line.startswith("dn:"))


def cmd_drill() -> int:
    """Load the dump into a throwaway slapd (no network) and check what it answers."""
    if not DUMP.is_file():
        print(json.dumps({"ok": False, "message": f"no dump at {DUMP}"}))
        return 1
    text = DUMP.read_text(encoding="utf-8")
    expected = count_entries(text)
    scratch = Path(tempfile.mkdtemp(prefix="directory-drill-"))
    config, data = scratch / "slapd.d", scratch / "data"
    data.mkdir()
    make_config(config, data, scratch)
    load_tree(config, DUMP)
    url = "ldapi://" + urllib.parse.quote(str(scratch / "ldapi"), safe="")
    start_slapd(config, url, scratch, None)
    try:
        conn = root_connection(url)
        conn.search(BASE, "(objectClass=*)", attributes=["uid"])
        found = [e for e in conn.response if e.get("type") == "searchResEntry"]
        members = len(people(conn, PEOPLE))
    finally:
        stop_slapd(scratch)
    ok = len(found) == expected
    print(json.dumps({"ok": ok, "entries": len(found), "expected": expected, "members": members}))
    return 0 if ok else 1


# --------------------------------------------------------------------------- web

TEXTS = {
    "fr": {
        "title": "Mon compte",
        "intro": "Un seul identifiant pour tous les services du lieu. "
        "Changez ici votre mot de passe.",
        "uid": "Identifiant",
        "current": "Mot de passe actuel",
        "new": "Nouveau mot de passe (10 caractères au moins)",
        "confirm": "Nouveau mot de passe, encore",
        "submit": "Changer le mot de passe",
        "done": "C'est fait : votre nouveau mot de passe vaut pour tous les services.",
        "wrong": "Identifiant ou mot de passe actuel incorrect.",
        "short": "Le nouveau mot de passe doit avoir 10 caractères au moins.",
        "differ": "Les deux nouveaux mots de passe diffèrent.",
    },
    "en": {
        "title": "My account",
        "intro": "One login for every service of the place. Change your password here.",
        "uid": "Login",
        "current": "Current password",
        "new": "New password (at least 10 characters)",
        "confirm": "New password, again",
        "submit": "Change the password",
        "done": "Done: your new password works for every service.",
        "wrong": "Wrong login or current password.",
        "short": "The new password must have at least 10 characters.",
        "differ": "The two new passwords differ.",
    },
}
FAILED_LOGIN_DELAY = 1.0  # seconds: slows down guessing, one connection at a time


def page(lang: str, message: str = "", ok: bool = False) -> bytes:
    t = TEXTS.get(lang, TEXTS["fr"])
    title = html.escape(os.environ.get("DIRECTORY_TITLE", ""))
    note = ""
    if message:
        note = f'<p class="{"ok" if ok else "error"}" role="status">{html.escape(message)}</p>'
    fields = "".join(
        f'<label>{html.escape(t[name])}<input name="{name}" type="{kind}" required '
        f'autocomplete="{auto}"></label>'
        for name, kind, auto in (
            ("uid", "text", "username"),
            ("current", "password", "current-password"),
            ("new", "password", "new-password"),
            ("confirm", "password", "new-password"),
        )
    )
    return f"""<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(t["title"])} · {title}</title>
<style>body{{font-family:sans-serif;max-width:28rem;margin:2rem auto;padding:0 1rem}}
label{{display:block;margin:.8rem 0}}input{{display:block;width:100%;padding:.4rem;font-size:1rem}}
button{{padding:.5rem 1rem;font-size:1rem}}.ok{{color:#075}}.error{{color:#a00}}</style>
</head><body><h1>{html.escape(t["title"])}</h1><p>{title}</p><p>{html.escape(t["intro"])}</p>
{note}<form method="post" action="/">{fields}<button>{html.escape(t["submit"])}</button></form>
</body></html>""".encode()


def basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        uid, sep, password = (
            base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        )
    except (ValueError, UnicodeDecodeError):
        return None
    return (uid, password) if sep else None


def allowed(uid: str, password: str, groups: list[str]) -> bool:
    """The member's credentials are right, and, when groups are named, the member is in
    one of them."""
    conn = user_connection(uid, password)
    if conn is None:
        return False
    try:
        if not groups:
            return True
        dn = member_dn(uid)
        return any(
            conn.compare(f"cn={g},{GROUPS}", "member", dn) for g in groups if g in GROUP_NAMES
        )
    finally:
        conn.unbind()


class Handler(BaseHTTPRequestHandler):
    server_version = "telecentre-directory"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests carry credentials in headers; nothing of them is logged

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        lang = os.environ.get("DIRECTORY_LANG", "fr")
        # The proxy always adds X-Forwarded-For: from outside, only the account page is
        # served; the check and the health are for the containers of the host.
        internal = "X-Forwarded-For" not in self.headers
        if url.path in ("/healthz", "/auth") and not internal:
            self._send(404, b"not found\n", {"Content-Type": "text/plain"})
        elif url.path == "/healthz":
            ok = ldapi_answers()
            self._send(200 if ok else 503, b"ok\n" if ok else b"slapd does not answer\n")
        elif url.path == "/auth":
            self.check(urllib.parse.parse_qs(url.query).get("group", []))
        elif url.path == "/":
            self._send(200, page(lang), {"Content-Type": "text/html; charset=utf-8"})
        else:
            self._send(404, b"not found\n", {"Content-Type": "text/plain"})

    do_HEAD = do_GET

    def check(self, groups: list[str]) -> None:
        """For the services without LDAP of their own: 204 and X-Remote-User when the
        request's HTTP Basic credentials are a member's (in one of `groups`), else 401."""
        given = basic_credentials(self.headers.get("Authorization", ""))
        if given and allowed(given[0], given[1], groups):
            self._send(204, headers={"X-Remote-User": given[0]})
            return
        if given:
            time.sleep(FAILED_LOGIN_DELAY)
        self._send(
            401,
            b"login required\n",
            {"WWW-Authenticate": 'Basic realm="telecentre", charset="UTF-8"'},
        )

    def do_POST(self) -> None:
        lang = os.environ.get("DIRECTORY_LANG", "fr")
        t = TEXTS.get(lang, TEXTS["fr"])
        length = min(int(self.headers.get("Content-Length") or 0), 8192)
        form = {
            k: v[0]
            for k, v in urllib.parse.parse_qs(
                self.rfile.read(length).decode("utf-8", "replace")
            ).items()
        }
        uid, new = form.get("uid", "").strip().lower(), form.get("new", "")
        message, ok, status = t["done"], True, 200
        if len(new) < MIN_PASSWORD:
            message, ok, status = t["short"], False, 400
        elif new != form.get("confirm", ""):
            message, ok, status = t["differ"], False, 400
        else:
            conn = user_connection(uid, form.get("current", ""))
            if conn is None:
                time.sleep(FAILED_LOGIN_DELAY)
                message, ok, status = t["wrong"], False, 403
            else:
                try:
                    set_password(conn, member_dn(uid), new, old=form.get("current", ""))
                except Refused:
                    message, ok, status = t["wrong"], False, 403
                finally:
                    conn.unbind()
        self._send(status, page(lang, message, ok), {"Content-Type": "text/html; charset=utf-8"})


def ldapi_answers() -> bool:
    """slapd answers a search of the root DSE on its socket (anonymous: allowed there)."""
    try:
        proc = subprocess.run(
            [
                "ldapsearch",
                "-H",
                LDAPI_URL,
                "-Y",
                "EXTERNAL",
                "-Q",
                "-LLL",
                "-s",
                "base",
                "-b",
                BASE,
                "dn",
            ],
            capture_output=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


# --------------------------------------------------------------------------- start


def cmd_start() -> int:
    RUN.mkdir(parents=True, exist_ok=True)
    config = RUN / "slapd.d"
    make_config(config, DATA, RUN)
    DATA.mkdir(parents=True, exist_ok=True)
    if not (DATA / "data.mdb").exists():
        if DUMP.is_file():  # a restore emptied the data: rebuilt from the restored dump
            print(f"loading the directory from {DUMP}", file=sys.stderr)
            load_tree(config, DUMP)
        else:
            tree = RUN / "initial.ldif"
            tree.write_text(initial_tree(os.environ.get("DIRECTORY_TITLE", "")), encoding="utf-8")
            load_tree(config, tree)
    user = pwd.getpwnam("openldap")
    for path in (RUN, DATA):
        for folder, _dirs, files in os.walk(path):
            os.chown(folder, user.pw_uid, user.pw_gid)
            for name in files:
                os.chown(os.path.join(folder, name), user.pw_uid, user.pw_gid)
    urls = f"ldap://:{LDAP_PORT}/ {LDAPI_URL}"
    start_slapd(config, urls, RUN, "openldap")
    os.chmod(LDAPI, 0o666)  # ldapi is how root manages and the web side binds
    if READER_SECRET.is_file():
        set_password(root_connection(), READER, READER_SECRET.read_text(encoding="utf-8").strip())

    def stop(_signum: int, _frame: Any) -> None:
        stop_slapd(RUN)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server = ThreadingHTTPServer(("0.0.0.0", WEB_PORT), Handler)
    os.setgroups([])
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)
    watcher = threading.Thread(target=watch_slapd, daemon=True)
    watcher.start()
    server.serve_forever()
    return 0


def watch_slapd() -> None:
    """The container stops when slapd is gone (Docker restarts it)."""
    while True:
        time.sleep(5)
        try:
            pid = int((RUN / "slapd.pid").read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            print("slapd stopped: leaving", file=sys.stderr)
            os._exit(1)


def cmd_health() -> int:
    if not ldapi_answers():
        return 1
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{WEB_PORT}/healthz", timeout=5) as answer:
            return 0 if answer.status == 200 else 1
    except OSError:
        return 1


@contextmanager
def _no_traceback() -> Iterator[None]:
    try:
        yield
    except Refused as err:
        print(json.dumps({"refused": str(err)}))
        raise SystemExit(2) from None


def main() -> int:
    commands = {
        "start": cmd_start,
        "members": cmd_members,
        "dump": cmd_dump,
        "drill": cmd_drill,
        "health": cmd_health,
    }
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        print(f"usage: directory {'|'.join(commands)}", file=sys.stderr)
        return 2
    with _no_traceback():
        return commands[sys.argv[1]]()


if __name__ == "__main__":
    sys.exit(main())
