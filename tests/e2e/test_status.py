"""Status against real lab hosts: the deployed demo (healthy, a stopped container, a full
disk) and a lab of two bare hosts of our own (a frozen host, a stopped host).

Every change made to the shared deployed demo is undone before the test ends.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from telecentre_ctl.lab import testing
from telecentre_ctl.lab.network import netns_path
from telecentre_ctl.lab.state import HostState
from telecentre_ctl.lab.system import pids_in_netns
from telecentre_ctl.paths import DEMO_SITE
from tests.conftest import DeployedSite, LabFactory

pytestmark = pytest.mark.e2e

# `telecentre-ctl status`, registered or not yet: the same click command in its own process.
RUN_STATUS = (
    "import sys\n"
    "from telecentre_ctl.cli.main import cli, main\n"
    "from telecentre_ctl.cli.status import status\n"
    "cli.commands.setdefault('status', status)\n"
    "main()\n"
)


def run_status(
    site_dirs: list[Path], *args: str, env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", RUN_STATUS, "status", *map(str, site_dirs), "--json", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    elapsed = time.monotonic() - started
    try:
        data = json.loads(proc.stdout)
    except ValueError as err:
        raise AssertionError(f"no JSON (exit {proc.returncode}): {proc.stderr[-2000:]}") from err
    return proc.returncode, data, elapsed


def services_of(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["service"]: row for row in data["sites"][0]["services"]}


def wait_healthy(deployed: DeployedSite, container: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc = deployed.run(
            f"docker inspect -f '{{{{.State.Health.Status}}}}' {container}", check=False
        )
        if proc.stdout.strip() == "healthy":
            return
        time.sleep(2)
    raise AssertionError(f"{container} not healthy again after {timeout} s")


def test_deployed_site_is_healthy(deployed_demo: DeployedSite) -> None:
    code, data, _ = run_status([deployed_demo.site_dir], env=deployed_demo.env)
    site = data["sites"][0]
    # Fresh deploy: no backup may have run yet, which is a warning, not a failure.
    assert code == 0, site["headline"]
    assert site["state"] in ("ok", "warning")
    assert site["headline"].startswith("Tout fonctionne"), site["headline"]
    rows = services_of(data)
    # every service, named in plain words in the site's language
    assert {s: r["title"] for s, r in rows.items()} == {
        "directory": "Mon compte",
        "webdav": "Fichiers partagés",
        "radicale": "Agendas, contacts et réservations",
        "dokuwiki": "Wiki du tiers-lieu",
        "fava": "Comptabilité",
        "pads": "Pads : écriture collaborative",
        "polls": "Sondages et idées",
        "postgres": "PostgreSQL",
        "proxy": "Portail et proxy HTTPS",
    }
    assert {r["state"] for r in rows.values()} == {"ok"}, rows
    host = site["hosts"][0]
    assert host["reachable"] and host["probe"]["ca_pem"].startswith("-----BEGIN CERTIFICATE")
    certificate = [c for c in site["checks"] if c["check"] == "certificate"]
    assert certificate and certificate[0]["level"] == "ok"
    assert not [f for f in site["findings"] if f["level"] != "warning"]


def test_a_stopped_database_names_the_services_it_takes_down(
    deployed_demo: DeployedSite,
) -> None:
    """PostgreSQL stopped: the pads and the polls fail their health checks (they ask the
    database), and status says so in words, not only 'PostgreSQL down'."""
    deployed_demo.run("docker stop tc-postgres")
    try:
        deadline = time.monotonic() + 180
        while True:
            code, data, _ = run_status([deployed_demo.site_dir], env=deployed_demo.env)
            rows = services_of(data)
            if rows["pads"]["state"] != "ok" and rows["polls"]["state"] != "ok":
                break
            assert time.monotonic() < deadline, rows
            time.sleep(5)
    finally:
        deployed_demo.run("docker start tc-postgres")
        for container in ("tc-postgres", "tc-pads", "tc-polls"):
            wait_healthy(deployed_demo, container, timeout=240)
    site = data["sites"][0]
    assert code == 1 and site["state"] == "degraded"
    assert rows["postgres"]["state"] == "down"
    assert "PostgreSQL en panne" in site["headline"], site["headline"]


def test_stopped_container_is_degraded_naming_the_service(
    deployed_demo: DeployedSite,
) -> None:
    deployed_demo.run("docker stop tc-radicale")
    try:
        code, data, _ = run_status([deployed_demo.site_dir], env=deployed_demo.env)
    finally:
        deployed_demo.run("docker start tc-radicale")
        wait_healthy(deployed_demo, "tc-radicale")
    site = data["sites"][0]
    assert code == 1
    assert site["state"] == "degraded"
    assert "Agendas, contacts et réservations en panne depuis" in site["headline"], site["headline"]
    rows = services_of(data)
    assert rows["radicale"]["state"] == "down"
    assert rows["webdav"]["state"] == "ok" and rows["dokuwiki"]["state"] == "ok"
    code, data, _ = run_status([deployed_demo.site_dir], env=deployed_demo.env)
    assert code == 0 and services_of(data)["radicale"]["state"] == "ok"


def container_init(host: HostState) -> int:
    """PID (on this machine) of the lab host's systemd, to enter its mount namespace."""
    for pid in sorted(pids_in_netns(netns_path(host.name))):
        if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
            return pid
    raise AssertionError(f"no systemd found in {host.name}")


@contextmanager
def loop_filesystem(
    lab: testing.Lab, host: HostState, target: str, size_mb: int = 32
) -> Iterator[None]:
    """A small ext4 file system in a loop file on this machine, mounted at `target` in
    the lab host. Lab hosts cannot set up loop devices (no /dev/loop*, device cgroup);
    the machine does, and mounts it from inside the host's mount namespace (nsenter)."""
    for tool in ("losetup", "mkfs.ext4", "nsenter", "lsblk"):
        if shutil.which(tool) is None:
            reason = f"{tool} is needed for the full-disk test"
            if testing.lab_required():
                pytest.fail(reason)
            pytest.skip(reason)
    workdir = Path(tempfile.mkdtemp(prefix="stattest-fill-"))
    image = workdir / "fill.img"
    subprocess.run(["truncate", "-s", f"{size_mb}M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True)
    loop = subprocess.run(
        ["losetup", "-f", "--show", str(image)], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        major, minor = (
            subprocess.run(
                ["lsblk", "-ndo", "MAJ:MIN", loop], capture_output=True, text=True, check=True
            )
            .stdout.strip()
            .split(":")
        )
        node = "/dev/stattest-fill"
        subprocess.run(
            [
                "nsenter",
                "-t",
                str(container_init(host)),
                "-m",
                "--",
                "sh",
                "-c",
                f"mknod {node} b {major} {minor} && mount {node} {target}; rc=$?; "
                f"rm -f {node}; exit $rc",
            ],
            check=True,
        )
        try:
            yield
        finally:
            lab.run(host, f"umount {target}")
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)
        shutil.rmtree(workdir, ignore_errors=True)


def fill_to(lab: testing.Lab, host: HostState, target: str, percent: float) -> None:
    _size, used, avail = map(
        int,
        lab.run(host, f"df -B1 --output=size,used,avail {target} | tail -1").stdout.split(),
    )
    wanted = int(percent / 100 * (used + avail)) - used
    assert wanted > 0
    lab.run(host, f"fallocate -l {wanted} {target}/fill-$(date +%s%N)")


def test_full_data_disk_is_a_warning_then_degraded(deployed_demo: DeployedSite) -> None:
    lab, host = deployed_demo.lab, deployed_demo.lab.hosts[0]
    target = "/srv/telecentre/webdav/files"  # the host's view; the container keeps its own
    with loop_filesystem(lab, host, target):
        code, data, _ = run_status([deployed_demo.site_dir], env=deployed_demo.env)
        disks = [c for c in data["sites"][0]["checks"] if c["check"] == "disk"]
        assert len(disks) >= 2, disks  # the loop file system is seen on its own
        fill_to(lab, host, target, 85)
        code, data, _ = run_status([deployed_demo.site_dir], env=deployed_demo.env)
        site = data["sites"][0]
        assert code == 0, site["headline"]
        assert "disk_nearly_full" in {f["code"] for f in site["findings"]}
        assert "Disque des données presque plein" in site["headline"]
        fill_to(lab, host, target, 95)
        code, data, _ = run_status([deployed_demo.site_dir], env=deployed_demo.env)
        site = data["sites"][0]
        assert code == 1
        assert site["state"] == "degraded"
        assert "Disque des données plein à 9" in site["headline"], site["headline"]
    code, data, _ = run_status([deployed_demo.site_dir], env=deployed_demo.env)
    assert "disk_full" not in {f["code"] for f in data["sites"][0]["findings"]}


def test_unknown_host_key_is_refused(deployed_demo: DeployedSite, tmp_path: Path) -> None:
    copy = tmp_path / deployed_demo.name
    shutil.copytree(deployed_demo.site_dir, copy)
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    inventory = yaml.safe_load((copy / "hosts.yml").read_text())
    for host_vars in inventory["all"]["children"]["telecentre"]["hosts"].values():
        host_vars["tc_known_hosts_file"] = str(empty)
    (copy / "hosts.yml").write_text(yaml.safe_dump(inventory))
    code, data, _ = run_status([copy], env=deployed_demo.env)
    host = data["sites"][0]["hosts"][0]
    assert code == 3 and not host["reachable"]
    assert "host key unknown" in host["error"]
    assert empty.read_text() == ""  # never added


def sshd_pids(host: HostState) -> list[int]:
    return [
        pid
        for pid in pids_in_netns(netns_path(host.name))
        if Path(f"/proc/{pid}/comm").read_text().strip() == "sshd"
    ]


def test_frozen_or_stopped_host_is_unreachable_and_the_other_reported(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    name = testing.site_name("stattestu")
    site_dir = testing.write_site(tmp_path / name, name, DEMO_SITE / "site.yml")
    lab = lab_factory(site_dir, 2)
    first, second = lab.hosts
    # Frozen: the kernel still accepts the TCP connection, sshd never answers.
    frozen = sshd_pids(second)
    assert frozen
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        code, data, elapsed = run_status([site_dir], "--timeout", "3")
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    hosts = {h["name"]: h for h in data["sites"][0]["hosts"]}
    assert code == 3
    assert hosts[first.name]["reachable"] and hosts[first.name]["probe"] is not None
    assert not hosts[second.name]["reachable"]
    assert elapsed < 3 + 4, elapsed  # one bounded timeout (+ start-up and grace)
    # The reachable bare host is reported for what it is: no container engine.
    assert "docker_down" in {
        f["code"] for f in data["sites"][0]["findings"] if f["host"] == first.name
    }
    # Stopped: powered off.
    lab.run(second, "systemctl poweroff", check=False, timeout=30)
    deadline = time.monotonic() + 60
    while sshd_pids(second) and time.monotonic() < deadline:
        time.sleep(1)
    code, data, elapsed = run_status([site_dir], "--timeout", "3")
    hosts = {h["name"]: h for h in data["sites"][0]["hosts"]}
    assert code == 3 and elapsed < 3 + 4
    assert hosts[first.name]["reachable"] and not hosts[second.name]["reachable"]
    assert f"Serveur {second.name} injoignable" in data["sites"][0]["headline"]


def test_many_sites_in_one_run(
    deployed_demo: DeployedSite, lab_factory: LabFactory, tmp_path: Path
) -> None:
    """Fleet: two sites in one command; each keeps its own headline and locale."""
    other = testing.site_name("stattestv")
    site_dir = testing.write_site(tmp_path / other, other, DEMO_SITE / "site.yml")
    text = (site_dir / "site.yml").read_text().replace("locale: fr", "locale: en")
    (site_dir / "site.yml").write_text(text)
    lab_factory(site_dir, 1)
    code, data, _ = run_status([deployed_demo.site_dir, site_dir], env=deployed_demo.env)
    by_name = {s["site"]: s for s in data["sites"]}
    assert set(by_name) == {deployed_demo.name, other}
    assert by_name[deployed_demo.name]["headline"].startswith("Tout fonctionne")
    assert by_name[other]["headline"].startswith("No service runs")
    assert code == 1  # the bare second site has nothing running
