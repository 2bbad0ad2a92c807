"""The lab's promises, checked on real hosts: SSH, systemd, network, Docker, clean down."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from telecentre_ctl.lab import control, testing
from telecentre_ctl.lab.host import is_our_nspawn

pytestmark = pytest.mark.lab


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from telecentre_ctl.cli.main import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_key_login_and_systemd_running(lab: testing.Lab) -> None:
    for host in lab.hosts:
        assert lab.run(host, "systemctl is-system-running").stdout.strip() == "running"
        assert lab.run(host, "hostname").stdout.strip() == host.name


def test_password_login_refused(lab: testing.Lab) -> None:
    host = lab.hosts[0]
    proc = subprocess.run(
        [
            "ssh", "-F", "/dev/null",
            "-o", f"UserKnownHostsFile={lab.state.paths.known_hosts}",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "PubkeyAuthentication=no",
            "-o", "PreferredAuthentications=password,keyboard-interactive",
            "-o", "BatchMode=yes",
            f"root@{host.address}", "true",
        ],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 255
    assert "Permission denied (publickey)" in proc.stderr
    config = lab.run(host, "sshd -T").stdout.lower().splitlines()
    assert "passwordauthentication no" in config
    assert "kbdinteractiveauthentication no" in config


def test_host_keys_fresh_and_known(lab: testing.Lab) -> None:
    known = lab.state.paths.known_hosts.read_text().splitlines()
    blobs = set()
    for host in lab.hosts:
        key = lab.run(host, "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1]
        assert any(line.startswith(f"{host.address},") and key in line for line in known)
        blobs.add(key)
    assert len(blobs) == len(lab.hosts)


def test_hosts_yml_is_a_strict_inventory_ansible_can_use(lab: testing.Lab) -> None:
    text = lab.inventory.read_text()
    assert text.startswith("# Written by `telecentre-ctl lab up`")
    hosts = yaml.safe_load(text)["all"]["children"]["telecentre"]["hosts"]
    assert sorted(hosts) == [f"{lab.state.site}-1", f"{lab.state.site}-2"]
    for name, hostvars in hosts.items():
        assert hostvars["ansible_user"] == "root"
        assert "StrictHostKeyChecking=yes" in hostvars["ansible_ssh_common_args"]
        assert Path(hostvars["tc_known_hosts_file"]).is_file()
        assert hostvars["tc_ram_gb"] == 4
        assert hostvars["ansible_host"] in {h.address for h in lab.hosts if h.name == name}
    # Plain Ansible with its defaults (run outside the repository, so without the project's
    # ansible.cfg and plugins): the inventory alone must be enough to connect.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    proc = subprocess.run(
        ["ansible", "telecentre", "-i", str(lab.inventory), "-m", "ansible.builtin.ping"],
        capture_output=True, text=True, timeout=120, check=False, env=env, cwd=lab.site_dir,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == 2


def test_hosts_reach_each_other(lab: testing.Lab) -> None:
    first, second = lab.hosts
    for src, dst in ((first, second), (second, first)):
        probe = f"import socket; socket.create_connection(('{dst.address}', 22), 5).close()"
        lab.run(src, f'python3 -c "{probe}"')
        lab.run(src, f"getent hosts {dst.name}")


def test_hosts_reach_debian_archive(lab: testing.Lab) -> None:
    out = lab.run(lab.hosts[1], "apt-get update -q").stdout
    assert "deb.debian.org" in out


def test_docker_runs_a_locally_built_image(lab: testing.Lab) -> None:
    host = lab.hosts[0]
    lab.install_docker(host)
    tag = lab.build_tiny_image(host)
    out = lab.run(host, f"docker run --rm {tag} sh -c 'echo hello from $(hostname)'").stdout
    assert out.startswith("hello from ")
    assert lab.run(host, "docker compose version").returncode == 0
    assert lab.run(host, "systemctl is-system-running").stdout.strip() == "running"


def test_cli_list_and_ssh(lab: testing.Lab) -> None:
    listed = cli("lab", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [r for r in yaml.safe_load(listed.stdout) if r["site"] == lab.state.site]
    assert [(r["name"], r["state"]) for r in rows] == [
        (f"{lab.state.site}-1", "running"),
        (f"{lab.state.site}-2", "running"),
    ]
    ran = cli("lab", "ssh", str(lab.site_dir), "2", "--", "systemctl", "is-system-running")
    assert (ran.returncode, ran.stdout.strip()) == (0, "running")
    again = cli("lab", "up", str(lab.site_dir), "--hosts", "2")
    assert again.returncode == 0 and "already up" in again.stderr


def test_down_leaves_nothing_and_up_recovers_from_a_crash(tmp_path: Path) -> None:
    name = testing.site_name("lableak")
    site_dir = testing.write_site(tmp_path / name, name)
    hosts_yml = site_dir / "hosts.yml"
    hosts_yml.write_text("# the volunteer's own inventory\n")
    before = testing.MachineSnapshot.take()

    try:
        index = _crash_and_recover(site_dir)
    finally:
        assert control.down(site_dir) is True
    assert control.down(site_dir) is False  # a second down is a no-op
    after = testing.MachineSnapshot.take()
    # Other labs may come and go meanwhile (tests run in parallel): look for this one's.
    markers = [name, f"tcl{index}br", f"tcl{index}h", f"telecentre_lab_{index}",
               f"10.213.{index}."]  # fmt: skip
    assert after.leftovers(before, markers) == {}
    assert not any(h.site == name for h in control.list_hosts())
    if not control.list_hosts():
        assert after.ip_forward == before.ip_forward


def _crash_and_recover(site_dir: Path) -> int:
    state = control.up(site_dir, 2)
    assert list(site_dir.glob("hosts.yml.bak-*")), "the previous hosts.yml was not kept"
    lab = testing.Lab(site_dir, state)
    lab.install_docker(lab.hosts[0])
    tag = lab.build_tiny_image(lab.hosts[0])
    lab.run(lab.hosts[0], f"docker run -d --name idle {tag} sleep 3600")

    # A crash: the host's nspawn dies; lab list says so; lab up recovers.
    crashed = lab.hosts[1]
    assert crashed.pid is not None
    os.kill(crashed.pid, signal.SIGKILL)
    # The signal is delivered asynchronously: on a busy machine nspawn may still run for a
    # moment after kill() returns. Wait for it to be gone, then ask the lab.
    deadline = time.monotonic() + 30
    while is_our_nspawn(crashed) and time.monotonic() < deadline:
        time.sleep(0.05)
    states = {h.name: h.state for h in control.list_hosts()}
    assert states[crashed.name] == "crashed"
    recovered = control.up(site_dir, 2)
    assert all(is_our_nspawn(h) for h in recovered.hosts)
    testing.Lab(site_dir, recovered).run(recovered.hosts[1], "systemctl is-system-running")
    return recovered.index
