"""Lab tier: `telecentre-ctl deploy` on two real Debian 13 hosts (systemd-nspawn).

The tests run in file order on one pair of hosts: converge, re-run, check mode, ports,
SSH, a killed run, then a stopped host (last: it leaves one host down).
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from telecentre_ctl.lab import host as labhost
from tests.deploy.conftest import DECLARED_PORT, SITE, Deployed

pytestmark = pytest.mark.lab

ALWAYS_OPEN = {22, 80, 443}


def _secret_values(deployed: Deployed) -> list[str]:
    from telecentre_ctl.runner import secret_values
    from telecentre_ctl.secrets import read_secrets

    password = Path(deployed.env["TELECENTRE_VAULT_PASSWORD_FILE"])
    return secret_values(read_secrets(deployed.site_dir, password))


def test_fresh_site_converges_on_two_hosts(deployed: Deployed) -> None:
    proc, data = deployed.deploy()
    assert proc.returncode == 0, proc.stderr[-3000:]
    hosts = data["hosts"]
    assert set(hosts) == {f"{SITE}-1", f"{SITE}-2"}
    for name, h in hosts.items():
        assert h["failed"] == 0 and h["unreachable"] == 0, (name, h)
        assert h["changed"] > 0, (name, h)
    # Progress per host went to stderr, the summary too; the log holds no secret.
    assert f"{SITE}-1" in proc.stderr and "summary" in proc.stderr
    log = Path(data["log"])
    assert log.parent == deployed.site_dir / "logs" and log.is_file()
    assert oct(log.stat().st_mode & 0o777) == "0o600"
    text = log.read_text()
    assert "TASK [base : Install the base packages]" in text
    for secret in _secret_values(deployed):
        assert secret not in text


def test_second_run_changes_nothing(deployed: Deployed) -> None:
    proc, data = deployed.deploy()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {n: h["changed"] for n, h in data["hosts"].items()} == {
        f"{SITE}-1": 0,
        f"{SITE}-2": 0,
    }


def test_check_mode_after_convergence_reports_nothing(deployed: Deployed) -> None:
    proc, data = deployed.deploy("--check")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert data["check"] is True
    assert all(h["changed"] == 0 and h["failed"] == 0 for h in data["hosts"].values())


async def _open_ports(address: str, ports: range, timeout: float = 1.5) -> set[int]:
    limit = asyncio.Semaphore(3000)

    async def probe(port: int) -> int | None:
        async with limit:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout)
            except (TimeoutError, OSError):
                return None
            writer.close()
            return port

    found = await asyncio.gather(*(probe(p) for p in ports))
    return {p for p in found if p is not None}


def _scan(address: str, listeners: set[int]) -> set[int]:
    """Every TCP port of `address` that accepts a connection from this machine.

    A fast pass over all 65535 ports (a busy machine may time out a few open ones), then
    each port known to have a listener behind it is tried again, alone and patiently: a
    port can only be open if something listens, so together they miss nothing.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    found = asyncio.run(_open_ports(address, range(1, 65536)))
    for port in sorted(listeners - found):
        found |= asyncio.run(_open_ports(address, range(port, port + 1), timeout=5))
    return found


def test_open_ports_are_exactly_the_declared_ones(deployed: Deployed) -> None:
    lab, h = deployed.lab, deployed.lab.hosts[0]
    # Something listens on every port that might leak: the web ports and an undeclared
    # one on the host, a declared and an undeclared port published by a container.
    for port in (80, 443, 9999):
        lab.run(h, f"systemd-run --unit=tc-listen-{port} python3 -m http.server {port}"
                   " >/dev/null 2>&1 || systemctl start tc-listen-{port}")  # fmt: skip
    image = lab.build_tiny_image(h, "tiny:1")
    for port in (DECLARED_PORT, 8080):
        lab.run(h, f"docker rm -f pub{port} >/dev/null 2>&1; docker run -d --name pub{port}"
                   f" -p {port}:{port} {image} busybox httpd -f -p {port} >/dev/null")  # fmt: skip
    # Both containers really serve on the host itself (the ports are published)...
    probe = ("python3 -c \"import socket,sys; [socket.create_connection(('127.0.0.1', p), 3)"
             f" for p in ({DECLARED_PORT}, 8080, 9999)]\"")  # fmt: skip
    deadline = time.monotonic() + 30
    while lab.run(h, probe, check=False).returncode != 0:
        assert time.monotonic() < deadline, "the test listeners did not come up"
        time.sleep(0.5)
    # ...but from another network namespace (this machine) only the declared ports answer.
    listeners = {22, 80, 443, 9999, DECLARED_PORT, 8080}
    assert _scan(h.address, listeners) == ALWAYS_OPEN | {DECLARED_PORT}
    # A re-deploy keeps it so (and leaves the containers alone).
    proc, _ = deployed.deploy()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _scan(h.address, listeners) == ALWAYS_OPEN | {DECLARED_PORT}
    lab.run(h, f"docker rm -f pub{DECLARED_PORT} pub8080 >/dev/null; "
               "systemctl stop tc-listen-80 tc-listen-443 tc-listen-9999")  # fmt: skip


def _ssh(deployed: Deployed, address: str, *options: str) -> subprocess.CompletedProcess[str]:
    known = deployed.lab.state.paths.known_hosts
    argv = ["ssh", "-F", "/dev/null", "-o", f"UserKnownHostsFile={known}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
            *options]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_ssh_refuses_passwords_and_accepts_the_admin_key(deployed: Deployed) -> None:
    address = deployed.lab.hosts[0].address
    refused = _ssh(deployed, address, "-o", "PubkeyAuthentication=no",
                   "-o", "PreferredAuthentications=password,keyboard-interactive",
                   f"alice@{address}", "true")  # fmt: skip
    assert refused.returncode == 255
    assert "Permission denied (publickey)" in refused.stderr
    ok = _ssh(deployed, address, "-o", "IdentitiesOnly=yes", "-i", str(deployed.admin_key),
              f"alice@{address}", "sudo -n true && id -nG")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "docker" not in ok.stdout.split()


def test_ssh_audit_finds_no_failing_algorithm(deployed: Deployed) -> None:
    address = deployed.lab.hosts[0].address
    audit = subprocess.run([sys.executable, "-m", "ssh_audit", "-n", address],
                           capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert audit.returncode in (0, 2), audit.stdout + audit.stderr  # 2: warnings only
    assert "[fail]" not in audit.stdout, audit.stdout


def _ansible_playbook_of(pid: int) -> int | None:
    """The ansible-playbook process started (through ansible-runner) by process `pid`."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        commands[int(entry)] = cmd
    for child, cmd in commands.items():
        if "ansible-playbook" not in cmd:
            continue
        up = child
        while up > 1:
            up = parents.get(up, 0)
            if up == pid:
                return child
    return None


def test_killed_run_then_rerun_converges(deployed: Deployed) -> None:
    lab, h = deployed.lab, deployed.lab.hosts[0]
    # Something to do, so the kill lands while packages are being installed.
    lab.run(h, "DEBIAN_FRONTEND=noninteractive apt-get remove -y -q fail2ban >/dev/null")
    proc = deployed.popen_deploy()
    assert proc.stderr is not None
    target = None
    for line in proc.stderr:
        if "half-done" in line or "Install the base packages" in line:
            target = _ansible_playbook_of(proc.pid)
            break
    assert target is not None, "never saw the run reach the package tasks"
    time.sleep(1.5)
    os.kill(target, signal.SIGKILL)
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 1, rest
    assert "killed" in rest and "INTERRUPTED" in rest
    again, data = deployed.deploy()
    assert again.returncode == 0, again.stderr[-3000:]
    assert all(x["failed"] == 0 for x in data["hosts"].values())
    assert lab.run(h, "systemctl is-active fail2ban").stdout.strip() == "active"


def test_stopped_host_exits_3_and_the_other_converges(deployed: Deployed) -> None:
    stopped = deployed.lab.hosts[1]
    labhost.kill_host(stopped)  # the host is gone; the lab's teardown removes its files
    proc, data = deployed.deploy()
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert stopped.name in proc.stderr
    assert data["hosts"][stopped.name]["status"] == "unreachable"
    other = data["hosts"][deployed.lab.hosts[0].name]
    assert other["status"] in ("ok", "changed") and other["failed"] == 0
    assert yaml.safe_load((deployed.site_dir / "hosts.yml").read_text())  # untouched
