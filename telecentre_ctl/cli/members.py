"""telecentre-ctl members: thin commands over telecentre_ctl.members."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from telecentre_ctl.output import emit_json, say, table

if TYPE_CHECKING:
    from telecentre_ctl.members import NewMember
    from telecentre_ctl.site import Site

SITE_DIR = click.argument("site_dir", type=click.Path(path_type=Path, file_okay=False))
AS_JSON = click.option(
    "--json", "as_json", is_flag=True, help="Print the result as JSON on stdout."
)


def _site(site_dir: Path) -> Site:
    from telecentre_ctl.members import require_directory
    from telecentre_ctl.site import load_site

    site = load_site(site_dir)
    require_directory(site)
    return site


def _write_private(path: Path, text: str) -> None:
    """A file only its owner reads (it holds a first password)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, 0o600)


def _give(
    site: Site,
    given: list[tuple[NewMember, str]],
    sheets: Path | None,
    as_json: bool,
    key: str = "added",
) -> None:
    """The first passwords, given once: on stdout (sheets, or JSON), or one sheet file per
    member (mode 0600) in `sheets`."""
    from telecentre_ctl.members import welcome_sheet

    if sheets is not None:
        sheets.mkdir(parents=True, exist_ok=True, mode=0o700)
        for member, password in given:
            _write_private(sheets / f"{member.uid}.txt", welcome_sheet(site, member, password))
        say(
            f"{len(given)} welcome sheet(s) written to {sheets}/ (mode 0600): hand each to its "
            "member, then delete them"
        )
    if as_json:
        emit_json(
            {
                key: [
                    {
                        "uid": m.uid,
                        "name": m.name,
                        "email": m.email,
                        "plan": m.plan,
                        "lang": m.lang,
                        **({} if sheets else {"password": p}),
                    }
                    for m, p in given
                ]
            }
        )
    elif sheets is None:
        click.echo("\f\n".join(welcome_sheet(site, m, p) for m, p in given), nl=False)


@click.group("members")
@SITE_DIR
@click.pass_context
def members(ctx: click.Context, site_dir: Path) -> None:
    """Members of a telecentre: one login for every service.

    \b
    The site runs the members' directory (directory: {} in site.yml's services); the
    file share, calendars, wiki, pads, polls and accounting log members in against it.
    site.yml's members: gives the membership plans (groups and storage quota of the
    member's own folder) and what removal does to a member's data:

    \b
      members:
        on_remove: archive          # keep | archive | delete
        plans:
          resident: {groups: [members], quota_gb: 20}
          equipe: {groups: [members, staff], quota_gb: 50}

    \b
    Groups: members (every member), staff (accounting; wiki manager), admins (wiki
    superuser). A first password is made for each new member and given once, on the
    welcome sheet (printed, or written with --sheet/--sheets) or in --json: it is never
    logged. Members choose their own on the account page (the directory's address).
    Bad input is refused with exit 2 and nothing changed. Each change is recorded
    (without passwords) in SITE_DIR/logs/members.log.

    \b
    The help of one command, with examples:
      telecentre-ctl members SITE_DIR add --help
    """
    ctx.obj = site_dir


PASS_SITE_DIR = click.make_pass_decorator(Path)


@members.command("add")
@PASS_SITE_DIR
@click.option("--name", required=True, help='Full name, e.g. "Élodie Lefèvre".')
@click.option("--email", required=True, help="E-mail address.")
@click.option("--plan", required=True, help="Membership plan (site.yml members.plans).")
@click.option("--uid", default="", help="Login; default: firstname.lastname in plain ASCII.")
@click.option(
    "--lang", default="", help="Language of the welcome sheet (fr or en; default: the site's)."
)
@click.option(
    "--sheet",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the welcome sheet to this file (mode 0600) instead of stdout.",
)
@AS_JSON
def add_command(
    site_dir: Path,
    name: str,
    email: str,
    plan: str,
    uid: str,
    lang: str,
    sheet: Path | None,
    as_json: bool,
) -> None:
    """Add one member in one step: account, groups and quota from the plan, and a welcome
    sheet with the portal's address, the services and a first password given once.

    \b
    telecentre-ctl members inventory/comptoir add --name "Élodie Lefèvre" \\
        --email elodie@example.org --plan resident
    telecentre-ctl members inventory/comptoir import members.csv --sheets sheets/
    """
    from telecentre_ctl import members as core

    site = _site(site_dir)
    fields = {"name": name, "email": email, "plan": plan, "uid": uid, "lang": lang}
    chosen = core.prepare(site, [(fields, None)], "members add", "--")
    given = core.add(site, chosen, "members add")
    say(f"added {chosen[0].uid} ({chosen[0].plan}) to {site.name}")
    if sheet is not None:
        _write_private(sheet, core.welcome_sheet(site, *given[0]))
        say(f"welcome sheet written to {sheet} (mode 0600)")
        if as_json:
            emit_json({"added": [{"uid": chosen[0].uid, "plan": chosen[0].plan}]})
        return
    _give(site, given, None, as_json)


@members.command("import")
@PASS_SITE_DIR
@click.argument("csv_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--sheets",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write one welcome sheet per member into this folder (mode 0600) "
    "instead of printing them.",
)
@AS_JSON
def import_command(site_dir: Path, csv_file: Path, sheets: Path | None, as_json: bool) -> None:
    """Add every member of a CSV file, or none.

    \b
    The first line names the columns: name,email,plan and optionally uid and lang
    (comma, semicolon or tab separated, UTF-8, as LibreOffice saves it):
      name,email,plan
      Élodie Lefèvre,elodie@example.org,resident
    Any bad row (malformed e-mail, unknown plan, duplicate, identifier or e-mail already
    in the directory) is named with its line and field, and nothing is added.
    """
    from telecentre_ctl import members as core

    site = _site(site_dir)
    chosen = core.prepare(site, core.read_csv(csv_file), str(csv_file), "")
    given = core.add(site, chosen, str(csv_file))
    say(f"imported {len(given)} member(s) into {site.name}")
    _give(site, given, sheets, as_json)


@members.command("remove")
@PASS_SITE_DIR
@click.argument("uids", nargs=-1, required=True)
@AS_JSON
def remove_command(site_dir: Path, uids: tuple[str, ...], as_json: bool) -> None:
    """Remove members: locked out of every service at once, then their own data (files,
    calendars) kept, archived or deleted as site.yml's members.on_remove says. An
    archive (one tar.gz per member) lands in the directory's archive volume, which the
    backups cover."""
    from telecentre_ctl import members as core

    site = _site(site_dir)
    answer = core.remove(site, list(uids))
    policy = answer.get("policy", "keep")
    for item in answer.get("data", []) or [{"uid": u} for u in uids]:
        what = {
            "keep": "data kept",
            "archive": f"data archived in {item['archive']}"
            if item.get("archive")
            else "no data to archive",
            "delete": f"data deleted ({len(item.get('paths', []))} folder(s))",
        }[policy]
        say(f"removed {item['uid']}: locked out of every service; {what}")
    if as_json:
        emit_json(answer)


@members.command("list")
@PASS_SITE_DIR
@click.option("--all", "include_former", is_flag=True, help="Include removed members.")
@AS_JSON
def list_command(site_dir: Path, include_former: bool, as_json: bool) -> None:
    """The members: login, name, e-mail, plan, groups, status."""
    from telecentre_ctl import members as core

    site = _site(site_dir)
    found: list[dict[str, Any]] = core.list_members(site, include_former)
    if as_json:
        emit_json({"members": found})
        return
    rows = [
        (m["uid"], m["name"], m["email"], m["plan"], ",".join(m["groups"]) or "-", m["status"])
        for m in found
    ]
    click.echo(table(("login", "name", "e-mail", "plan", "groups", "status"), rows))
    say(f"{sum(1 for m in found if m['status'] == 'active')} active member(s)")


@members.command("reset-password")
@PASS_SITE_DIR
@click.argument("uid")
@click.option(
    "--sheet",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the sheet with the new password to this file (mode 0600).",
)
@AS_JSON
def reset_command(site_dir: Path, uid: str, sheet: Path | None, as_json: bool) -> None:
    """Give a member a new first password (the old one stops working at once)."""
    from telecentre_ctl import members as core

    site = _site(site_dir)
    found = {m["uid"]: m for m in core.list_members(site)}
    if uid not in found:
        from telecentre_ctl.errors import InvalidInput

        raise InvalidInput(
            f"{uid} is not a current member of {site.name}",
            fix=f"see telecentre-ctl members {site_dir} list",
        )
    m = found[uid]
    member = core.NewMember(uid, m["name"], m["email"], m["plan"], m["lang"] or site.locale)
    password = core.reset_password(site, uid)
    say(f"new first password for {uid}")
    if sheet is None:
        _give(site, [(member, password)], None, as_json, key="reset")
        return
    _write_private(sheet, core.welcome_sheet(site, member, password))
    say(f"sheet written to {sheet} (mode 0600)")
