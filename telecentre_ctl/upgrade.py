"""Upgrades: from the version a host runs to the one the catalogue pins, with guards.

Where versions come from: the catalogue stays the single source of truth. An entry's
version is the tag of its image (`image:`, or `build.tag` for a recipe built on the host);
what a host runs is read from the host, in the compose project the service role wrote
(/opt/telecentre/<service>/compose.yml). `upgrade` moves a host to what the catalogue pins
now, or, with `--to`, to an earlier version the entry declares in `upgrade.known` (a
stepping stone: upstream images only; a recipe builds only its current version). The rules
are data in the entry, checked by services/schema.json:

    upgrade:
      major_steps: 1          # at most this many major versions per upgrade (Nextcloud)
      migrate_major: true     # a major bump changes the data format: a migration by hand
      known: [29.0.3-apache]  # earlier versions a host may run, or be moved to with --to

A version's major is the number its tag starts with (30.0.4-apache -> 30). Downgrades are
refused: going back is what the safety snapshot and `restore` are for.

The work on each host is done by `telecentre-backup upgrade` (roles/backup/files), driven
by playbooks/upgrade.yml: safety snapshot, switch, health and a check through the proxy,
automatic rollback of image and data, and a journal that lets a killed run be finished or
rolled back by the next one. This module plans, guards and reads back the results.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from telecentre_ctl.errors import InvalidInput, Problem

if TYPE_CHECKING:
    from telecentre_ctl.catalog import Service
    from telecentre_ctl.site import Host, Site

JOURNAL_FINAL = ("done", "rolled-back")
_PART = re.compile(r"(\d+)")


# --------------------------------------------------------------------------- versions


def version_of(image: str) -> str:
    """The tag of an image reference: telecentre/radicale:3.5-1 -> 3.5-1."""
    last = image.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else ""


def repository_of(image: str) -> str:
    return image[: -len(version_of(image)) - 1] if version_of(image) else image


def major(version: str) -> int | None:
    found = re.match(r"\d+", version)
    return int(found.group(0)) if found else None


def order_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Natural order: 3.5-10 after 3.5-9, 30.0.4 after 29.0.10."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in _PART.split(version) if p)


def known_versions(entry: Service) -> list[str]:
    """Every version the catalogue knows for an entry, oldest first, the pinned one last."""
    pinned = version_of(entry.image)
    earlier = [str(v) for v in (entry.data.get("upgrade") or {}).get("known", [])]
    return sorted({*earlier, pinned}, key=order_key)


def target_image(entry: Service, version: str) -> str:
    return f"{repository_of(entry.image)}:{version}"


def pinned_catalog(catalog: dict[str, Any], versions: dict[str, str]) -> dict[str, Any]:
    """The catalogue data with the given services pinned at another version (filter
    tc_pin_versions: the upgrade playbook renders compose.next.yml from it)."""
    pinned = dict(catalog)
    for name, version in versions.items():
        entry = dict(catalog[name])
        if "build" in entry:
            build = dict(entry["build"])
            build["tag"] = f"{repository_of(str(build['tag']))}:{version}"
            entry["build"] = build
        else:
            entry["image"] = f"{repository_of(str(entry['image']))}:{version}"
        pinned[name] = entry
    return pinned


# --------------------------------------------------------------------------- plan


@dataclass
class Step:
    """One service on one host: what it runs, where it goes, and whether it may."""

    host: str
    service: str
    current: str | None  # image ref on the host, None when not deployed there
    target: str
    journal: dict[str, Any] | None = None  # an unfinished upgrade found on the host

    @property
    def needed(self) -> bool:
        return self.current != self.target or self.unfinished

    @property
    def unfinished(self) -> bool:
        return bool(self.journal) and (self.journal or {}).get("step") not in JOURNAL_FINAL

    def words(self) -> str:
        old = version_of(self.current) if self.current else "not deployed"
        new = version_of(self.target)
        if self.unfinished:
            step = (self.journal or {}).get("step")
            return f"{old} -> {new} (an interrupted upgrade, stopped at '{step}', is taken up)"
        return f"{old} -> {new}" if self.needed else f"{new} (up to date)"

    def as_data(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "service": self.service,
            "from": version_of(self.current) if self.current else None,
            "to": version_of(self.target),
            "needed": self.needed,
            "interrupted": self.unfinished,
        }


@dataclass
class Plan:
    site: str
    steps: list[Step] = field(default_factory=list)

    @property
    def todo(self) -> list[Step]:
        return [s for s in self.steps if s.needed]

    def text(self) -> str:
        if not self.steps:
            return f"{self.site}: nothing to upgrade"
        width = max(len(f"{s.host}/{s.service}") for s in self.steps)
        lines = [f"upgrade plan of {self.site}:"]
        lines += [f"  {f'{s.host}/{s.service}'.ljust(width)}  {s.words()}" for s in self.steps]
        return "\n".join(lines)

    def as_data(self) -> list[dict[str, Any]]:
        return [s.as_data() for s in self.steps]


def entry_file(name: str) -> str:
    return f"services/{name}/service.yml"


def keeps_data(entry: Service) -> bool:
    """Whether the service keeps data (volumes, or a database of its own): what a new
    version may convert, so that only `upgrade` (safety snapshot, rollback) moves it."""
    backup = entry.data.get("backup") or {}
    return bool(entry.data.get("volumes")) or bool(backup.get("database"))


def guard(entry: Service, current: str | None, target: str, migrate: bool) -> list[Problem]:
    """Why moving from `current` to `target` is refused (empty when it is allowed). A
    service without data may go back to an older version: nothing of it can be unreadable
    by the older one."""
    if current is None or current == target:
        return []
    rules = entry.data.get("upgrade") or {}
    old, new = version_of(current), version_of(target)
    problems = []
    downgrade = repository_of(current) == repository_of(target) and order_key(new) < order_key(old)
    if downgrade and not keeps_data(entry):
        return []
    if downgrade:
        problems.append(
            Problem(
                entry_file(entry.name),
                "upgrade",
                f"{old} -> {new} is a downgrade",
                f"to go back, restore the data from before the upgrade: telecentre-ctl "
                f"restore SITE_DIR --service {entry.name} --snapshot ID",
            )
        )
        return problems
    old_major, new_major = major(old), major(new)
    if old_major is None or new_major is None or old_major == new_major:
        return problems
    steps = rules.get("major_steps")
    if steps is not None and new_major - old_major > int(steps):
        allowed = [
            v
            for v in known_versions(entry)
            if (m := major(v)) is not None and old_major < m <= old_major + int(steps)
        ]
        fix = (
            f"upgrade to {allowed[-1]} first: --service {entry.name} --to {allowed[-1]}"
            if allowed
            else f"add a version of major {old_major + 1} to upgrade.known, upgrade to it first"
        )
        problems.append(
            Problem(
                entry_file(entry.name),
                "upgrade.major_steps",
                f"{old} -> {new} skips major versions ({entry.name} allows {steps} at a time)",
                fix,
            )
        )
    if rules.get("migrate_major") and not migrate:
        problems.append(
            Problem(
                entry_file(entry.name),
                "upgrade.migrate_major",
                f"{old} -> {new} is a major version of {entry.name}: its data format changes",
                f"migrate by hand (README, 'Upgrades': dump each database, start {new} on an "
                f"empty data folder, reload), or keep {entry.name} at major {old_major}",
            )
        )
    return problems


def choose_target(entry: Service, to: str | None) -> str:
    """The image to move to: the catalogue's pin, or a version it declares as known."""
    if to is None:
        return entry.image
    if entry.built_locally and to != version_of(entry.image):
        raise InvalidInput(
            f"--to {to}: {entry.name} is built from its recipe, which makes only "
            f"{version_of(entry.image)}",
            fix=f"leave out --to, or use --to {version_of(entry.image)}",
        )
    known = known_versions(entry)
    if to not in known:
        raise InvalidInput(
            f"--to {to}: not a version of {entry.name} in {entry_file(entry.name)}",
            fix=f"use one of: {', '.join(known)} (or add it to upgrade.known)",
        )
    return target_image(entry, to)


def make_plan(
    site: Site,
    running: dict[str, dict[str, Any]],
    service: str | None = None,
    to: str | None = None,
    migrate: bool = False,
) -> Plan:
    """The steps of an upgrade from what each host runs (`running`: host -> probe answer,
    see upgrade_probe.py); InvalidInput, listing every refusal, when a guard says no."""
    plan = Plan(site.name)
    problems: list[Problem] = []
    for host, services in site.placement().items():
        state = running.get(host) or {}
        for name in services:
            if service is not None and name != service:
                continue
            entry = site.catalog[name]
            target = choose_target(entry, to)
            current = (state.get("images") or {}).get(name)
            journal = (state.get("journals") or {}).get(name)
            step = Step(host, name, current, target, journal)
            if current is None:
                problems.append(
                    Problem(
                        f"{host}",
                        name,
                        "is not deployed there",
                        f"deploy it first: telecentre-ctl deploy {site.dir}",
                    )
                )
                continue
            problems += guard(entry, current, target, migrate)
            plan.steps.append(step)
    if problems:
        raise InvalidInput(
            f"upgrade of {site.name} refused, nothing was changed", problems=problems
        )
    return plan


# --------------------------------------------------------------------------- deploy
#
# `deploy` converges a host to the catalogue, but never moves a service that keeps data to
# another version: that is `upgrade`'s work (plan, rules, safety snapshot, health and proxy
# check, automatic rollback, journal), in a moment the volunteer chooses. So the first play
# of playbooks/site.yml reads what the host runs (the upgrade probe) and asks
# `deploy_refusals`; a host with a refusal is left untouched: not even its other services
# are converged, since its service could not be held at the old version soundly (the
# catalogue's entry describes the new one, and a recipe builds only its current tag). The
# other hosts go on. A rebuild of a recipe under the same tag is no version change; a
# service without data is switched by deploy, within its entry's rules.

DEPLOY_REFUSED = "deploy refused"


@dataclass(frozen=True)
class Refusal:
    """A service that deploy does not move on a host, and what to do instead."""

    service: str
    change: str  # "3.5-1 -> 3.5-2"
    note: str  # why, and the command that does it safely

    def as_data(self) -> dict[str, str]:
        return {"service": self.service, "change": self.change, "note": self.note}


def change_words(current: str, target: str) -> str:
    old, new = version_of(current), version_of(target)
    return f"{old} -> {new}" if old != new else f"{current} -> {target}"


def deploy_refusals(
    running: dict[str, Any],
    host_services: list[str],
    catalog: dict[str, dict[str, Any]],
    site_dir: str,
) -> list[Refusal]:
    """The services deploy must not move on a host (`running`: the upgrade probe's answer
    there; `catalog`: the site's catalogue data, as tc_catalog)."""
    from telecentre_ctl.catalog import Service

    images = running.get("images") or {}
    journals = running.get("journals") or {}
    refused = []
    for name in host_services:
        data = catalog[name]
        entry = Service(name=name, kind=str(data["kind"]), data=data)
        current, target = images.get(name), entry.image
        command = f"telecentre-ctl upgrade {site_dir} --service {name}"
        journal = journals.get(name) or {}
        if journal and journal.get("step") not in JOURNAL_FINAL:
            to = version_of(str(journal.get("new_image", ""))) or "another version"
            change = f"upgrade to {to} interrupted"
            note = (
                f"{name}: its {change} (at '{journal.get('step')}'): run {command} to "
                "finish it or roll it back, then deploy again"
            )
            refused.append(Refusal(name, change, note))
            continue
        if current is None or current == target:
            continue
        change = change_words(current, target)
        problems = guard(entry, current, target, migrate=False)
        if problems:
            why = "; ".join(f"{p.message} ({p.file}, {p.key}): {p.fix}" for p in problems)
            note = f"{name} {change}: refused by its upgrade rules: {why}"
        elif keeps_data(entry):
            note = (
                f"{name} {change}: not switched by deploy, since it keeps data and deploy "
                f"takes no safety snapshot: run {command} (safety snapshot, health check, "
                "automatic rollback), then deploy again"
            )
        else:
            continue
        refused.append(Refusal(name, change, note))
    return refused


def deploy_refused_message(refusals: list[dict[str, str]], host: str) -> str:
    """One line for the host's summary (the refusals' notes give the details)."""
    changes = ", ".join(f"{r['service']} {r['change']}" for r in refusals)
    return f"{DEPLOY_REFUSED}, nothing was changed on {host}: {changes} (see the notes)"


# --------------------------------------------------------------------------- hosts


def probe_source() -> str:
    return (Path(__file__).parent / "upgrade_probe.py").read_text(encoding="utf-8")


def read_hosts(site: Site, timeout: float = 30.0) -> dict[str, dict[str, Any]]:
    """What each host runs (one SSH connection per host, host keys verified). A host that
    does not answer: HostUnreachable, before anything is changed anywhere."""
    from concurrent.futures import ThreadPoolExecutor

    from telecentre_ctl.errors import HostUnreachable
    from telecentre_ctl.remote import RemoteError, connect, run_script

    source = probe_source()
    placement = site.placement()

    def one(host: Host) -> dict[str, Any]:
        target = host.connection
        deadline = time.monotonic() + timeout
        session = connect(target, deadline)
        try:
            raw = run_script(session, target, source, [json.dumps(placement[host.name])], deadline)
        finally:
            session.close()
        answer = json.loads(raw)
        if not isinstance(answer, dict):
            raise ValueError("not a JSON object")
        return answer

    with ThreadPoolExecutor(max_workers=min(16, max(1, len(site.hosts)))) as pool:
        futures = {h.name: pool.submit(one, h) for h in site.hosts}
    found, down = {}, []
    for name, future in futures.items():
        try:
            found[name] = future.result()
        except RemoteError as err:
            down.append(err.message)
        except ValueError as err:
            down.append(f"{name}: the upgrade probe answered no JSON ({err})")
    if down:
        raise HostUnreachable(
            "could not read what the hosts run, nothing was changed: " + "; ".join(down),
            fix="check that the hosts are up and answer SSH, then run the upgrade again",
        )
    return found


def playbook_vars(site: Site, step: Step) -> dict[str, Any]:
    """What playbooks/upgrade.yml needs for one service: the version, and the public name
    checked through the proxy (none for dependencies and the proxy itself)."""
    check = site.fqdn(step.service) if site.subdomain(step.service) else ""
    if step.service not in site.services:
        check = ""
    return {
        "upgrade_service": step.service,
        "upgrade_version": version_of(step.target),
        "upgrade_check_host": check,
    }
