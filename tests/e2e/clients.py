"""Real clients pointed at a lab host: LAN names resolved to its address, TLS verified
against the site's own CA (never disabled)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import requests

from telecentre_ctl.lab.testing import CA_ON_HOST
from tests.conftest import DeployedSite

PAD_CLIENT = Path(__file__).parent / "padclient"


def url(lan: str, sub: str, path: str = "/") -> str:
    return f"https://{sub + '.' if sub else ''}{lan}{path}"


def fetch_ca(site: DeployedSite, target: Path) -> Path:
    """The site's internal CA certificate, read over the lab's SSH (not over HTTPS)."""
    target.write_text(site.run(f"cat {CA_ON_HOST}").stdout)
    return target


def pads_session(site: DeployedSite, site_ca: Path) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment beats verify
    session.verify = str(site_ca)
    session.auth = site.admin
    return session


def pad_edit(client: Path, site: DeployedSite, lan: str, site_ca: Path, token: str, pad: str,
             write: str | None, expect: list[str]) -> subprocess.Popen[str]:  # fmt: skip
    """One pads client, started: writes `write` (if any), leaves once it sees `expect`."""
    proc = subprocess.Popen(
        ["node", str(client / "client.mjs")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, "NODE_EXTRA_CA_CERTS": str(site_ca)},
    )  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write(json.dumps({
        "url": f"wss://pads.{lan}/ws", "address": site.address, "token": token, "pad": pad,
        "write": write, "expect": expect, "seconds": 90}))  # fmt: skip
    proc.stdin.close()
    proc.stdin = None  # given whole: communicate() only reads the answer
    return proc


def pad_text(pads: requests.Session, lan: str, pad: str, lines: list[str]) -> str:
    """The pad's text as stored in the database (written a moment after the last edit)."""
    address = url(lan, "pads", f"/api/pads/{requests.utils.quote(pad)}/text")
    deadline = time.monotonic() + 60
    while True:
        answer = pads.get(address, timeout=30)
        if answer.status_code == 200 and all(line in answer.text for line in lines):
            return answer.text
        assert time.monotonic() < deadline, f"{answer.status_code}: {answer.text}"
        time.sleep(0.5)


def wait_healthy(site: DeployedSite, container: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        state = site.run(f"docker inspect -f '{{{{.State.Health.Status}}}}' {container}").stdout
        if state.strip() == "healthy":
            return
        assert time.monotonic() < deadline, f"{container} is {state.strip()}"
        time.sleep(1)


def fava_session(site: DeployedSite, site_ca: Path) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment beats verify
    session.verify = str(site_ca)
    session.auth = site.admin  # of the admin plan: in the staff group, which Fava wants
    return session


def fava_add(fava: requests.Session, lan: str, narration: str, amount: str) -> None:
    """A membership fee paid into the bank, as Fava's "add transaction" form sends it."""
    entry = {
        "t": "Transaction", "date": "2026-11-02", "flag": "*", "payee": "Adhérent",
        "narration": narration, "meta": {}, "tags": [], "links": [],
        "postings": [{"account": "Actif:512-Banque", "amount": f"{amount} EUR"},
                     {"account": "Produits:756-Cotisations", "amount": f"-{amount} EUR"}],
    }  # fmt: skip
    added = fava.put(url(lan, "comptes", "/association/api/add_entries"),
                     json={"entries": [entry]}, timeout=60)  # fmt: skip
    assert added.status_code == 200 and "Stored 1 entries" in added.text, added.text


def fava_balance(fava: requests.Session, lan: str, narration: str) -> dict[str, str]:
    """Account -> amount of the transaction's postings, once Fava has reloaded the ledger
    (polled, bounded)."""
    query = ("SELECT account, sum(number) AS total WHERE narration = "
             f"'{narration}' GROUP BY account ORDER BY account")  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        # what Fava's own page does: ask whether the ledger changed (its API reloads only then)
        fava.get(url(lan, "comptes", "/association/api/changed"), timeout=60)
        answer = fava.get(url(lan, "comptes", "/association/api/query"),
                          params={"query_string": query}, timeout=60)  # fmt: skip
        assert answer.status_code == 200, answer.text
        rows = answer.json()["data"]["rows"]
        if rows or time.monotonic() > deadline:
            return {str(r[0]): f"{float(r[1]):.2f}" for r in rows}
        time.sleep(1)


def polls_session(site: DeployedSite, site_ca: Path) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment beats verify
    session.verify = str(site_ca)
    session.auth = site.admin
    return session


def poll_create(polls: requests.Session, lan: str, title: str, options: list[str]) -> str:
    """A poll made through jawanndenn's own form (CSRF token included); returns its id."""
    base = url(lan, "sondages")
    polls.get(base, timeout=30)  # sets the CSRF cookie, as the page does for a browser
    config = json.dumps({"title": title, "options": options, "lifetime": "month"})
    made = polls.post(f"{base}create", timeout=30, allow_redirects=False,
                      data={"config": config, "csrfmiddlewaretoken": polls.cookies["csrftoken"]},
                      headers={"Referer": base})  # fmt: skip
    assert made.status_code == 302 and "/poll/" in made.headers["Location"], made.text
    return str(made.headers["Location"]).rstrip("/").rsplit("/", 1)[-1]


def poll_vote(polls: requests.Session, lan: str, poll: str, voter: str, yes: list[int]) -> None:
    base = url(lan, "sondages")
    form = {"voterName": voter, "csrfmiddlewaretoken": polls.cookies["csrftoken"]}
    form |= {f"option{i}": "on" for i in yes}
    voted = polls.post(f"{base}vote/{poll}", data=form, timeout=30, allow_redirects=False,
                       headers={"Referer": f"{base}poll/{poll}"})  # fmt: skip
    assert voted.status_code == 302, voted.text


def poll_data(polls: requests.Session, lan: str, poll: str) -> dict[str, Any]:
    answer = polls.get(url(lan, "sondages", f"/data/{poll}"), timeout=30)
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data


def booking_event(uid: str, start: str, end: str, summary: str) -> str:
    return (
        "BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//telecentre-ctl//e2e//FR\nBEGIN:VEVENT\n"
        f"UID:{uid}\nDTSTAMP:20261129T090000Z\nDTSTART:{start}\nDTEND:{end}\n"
        f"SUMMARY:{summary}\nEND:VEVENT\nEND:VCALENDAR\n"
    )


def member_calendar(site: DeployedSite, lan: str, site_ca: Path, resource: str) -> Any:
    """A resource calendar (room, desk, machine) as a member's CalDAV account sees it."""
    import caldav

    client = caldav.DAVClient(
        url=url(lan, "agenda", "/reservations/"),
        username=site.admin[0],
        password=site.admin[1],
        ssl_verify_cert=str(site_ca),
    )
    return caldav.Calendar(client=client, url=url(lan, "agenda", f"/reservations/{resource}/"))
