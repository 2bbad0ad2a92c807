"""A host behind a jump host, for real: two lab hosts, the second taking SSH logins only
from the first (as a telecentre box behind a bastion). hosts.yml says so the Ansible way,
in host_vars/: `status` (paramiko: an SSH connection to the jump host whose direct-tcpip
channel carries the next) and `images` (OpenSSH) reach the second host through the first;
without the jump they are refused. The ProxyCommand form is checked against Ansible itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from telecentre_ctl import images
from telecentre_ctl.errors import HostUnreachable, OperationFailed
from telecentre_ctl.lab import testing
from telecentre_ctl.paths import DEMO_SITE, PROJECT_ROOT
from telecentre_ctl.site import load_site

pytestmark = pytest.mark.lab

SITE = testing.site_name("jump")
ONLY_FROM_JUMP = "/etc/ssh/sshd_config.d/05-only-from-jump.conf"


@pytest.fixture(scope="module")
def jump_lab(lab_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[testing.Lab]:
    base = tmp_path_factory.mktemp("jump")
    site_dir = testing.write_site(base / SITE, SITE, DEMO_SITE / "site.yml")
    lab = lab_factory(site_dir, 2)
    first, second = lab.hosts
    lab.run(second, f"echo 'AllowUsers root@{first.address}' > {ONLY_FROM_JUMP}"
                    " && sshd -t && systemctl reload ssh")  # fmt: skip
    yield lab


def set_host_vars(lab: testing.Lab, common_args: str | None) -> None:
    folder = lab.site_dir / "host_vars"
    folder.mkdir(exist_ok=True)
    target = folder / f"{lab.hosts[1].name}.yml"
    if common_args is None:
        target.unlink(missing_ok=True)
    else:
        target.write_text(f"ansible_ssh_common_args: {json.dumps(common_args)}\n")


def status(lab: testing.Lab) -> dict[str, Any]:
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "telecentre-ctl"), "status", str(lab.site_dir),
         "--json", "--timeout", "20"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return {h["name"]: h for h in json.loads(proc.stdout)["sites"][0]["hosts"]}


def lab_args(lab: testing.Lab) -> str:
    known = lab.state.paths.known_hosts
    return f"-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"


def test_without_the_jump_the_second_host_refuses_us(jump_lab: testing.Lab) -> None:
    set_host_vars(jump_lab, None)
    first, second = jump_lab.hosts
    hosts = status(jump_lab)
    assert hosts[first.name]["reachable"]
    assert not hosts[second.name]["reachable"] and "refused" in hosts[second.name]["error"]
    with pytest.raises(HostUnreachable):
        images.host_images(
            images.SshTarget.of(load_site(jump_lab.site_dir, check_secrets=False).hosts[1])
        )


def test_status_and_images_go_through_proxyjump(jump_lab: testing.Lab) -> None:
    first, second = jump_lab.hosts
    set_host_vars(jump_lab, f"{lab_args(jump_lab)} -o ProxyJump=root@{first.address}")
    site = load_site(jump_lab.site_dir, check_secrets=False)
    assert [j.name for j in site.hosts[1].connection.jumps] == [first.name]
    hosts = status(jump_lab)
    assert hosts[second.name]["reachable"], hosts[second.name]["error"]
    assert hosts[second.name]["probe"]["hostname"] == second.name
    # OpenSSH through the same hop: the host answers (it has no Docker yet)
    with pytest.raises(OperationFailed, match="Docker is not installed"):
        images.host_images(images.SshTarget.of(site.hosts[1]))


def test_proxycommand_reaches_the_host_for_ansible_and_status(jump_lab: testing.Lab) -> None:
    first, second = jump_lab.hosts
    key = jump_lab.state.paths.key
    hop = f"ssh -i {key} {lab_args(jump_lab)} -W %h:%p root@{first.address}"
    set_host_vars(jump_lab, f"{lab_args(jump_lab)} -o 'ProxyCommand={hop}'")
    ping = subprocess.run(
        [str(Path(sys.executable).parent / "ansible"), "-i", str(jump_lab.inventory),
         second.name, "-m", "ansible.builtin.ping"],
        capture_output=True, text=True, check=False,
        env={**os.environ, "ANSIBLE_CONFIG": str(PROJECT_ROOT / "ansible.cfg")},
    )  # fmt: skip
    assert ping.returncode == 0, ping.stdout + ping.stderr
    hosts = status(jump_lab)
    assert hosts[second.name]["reachable"], hosts[second.name]["error"]
