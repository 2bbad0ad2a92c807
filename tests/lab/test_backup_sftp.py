"""Backups to an sftp server, for real: the backup role on one lab host, the second lab
host as the sftp server (its sshd, a folder of its own). Until the server authorizes the
host's backup key, deploy fails saying which key to authorize; once it does, the repository
is made there, a backup lands there encrypted, and a drill restores from it.

Only the backup role runs (tags backup): the services' data folders are made by hand, as
the services would have; the real services are covered by tests/e2e/test_backup.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from telecentre_ctl import runner
from telecentre_ctl.lab import testing
from telecentre_ctl.paths import DEMO_SITE, PLAYBOOKS_DIR
from tests.conftest import set_services

pytestmark = pytest.mark.lab

SITE = testing.site_name("sftpbk")
FOLDER = "/srv/sftp-backups"
CANARY = "canari-sftp-4e1d"


@dataclass
class SftpLab:
    lab: testing.Lab
    site_dir: Path
    config: Path

    def client(self, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.lab.run(self.lab.hosts[0], command, check=check)

    def server(self, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.lab.run(self.lab.hosts[1], command, check=check)

    def run_backup_role(self) -> runner.RunResult:
        from telecentre_ctl.secrets import vault_password_file

        os.environ["XDG_CONFIG_HOME"] = str(self.config)
        request = runner.RunRequest(
            inventory=self.site_dir / "hosts.yml",
            playbook=PLAYBOOKS_DIR / "site.yml",
            log_file=runner.log_path(self.site_dir, "deploy"),
            vault_password_file=vault_password_file(SITE),
            limit=self.lab.hosts[0].name,
            tags="backup",
        )
        return runner.run_playbook(request)


@pytest.fixture(scope="module")
def sftp_lab(lab_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SftpLab]:
    base = tmp_path_factory.mktemp("sftp")
    site_dir = testing.write_site(base / SITE, SITE, DEMO_SITE / "site.yml")
    set_services(site_dir, {"webdav": {}, "radicale": {}})  # files on the client, no directory
    lab = lab_factory(site_dir, 2)
    client, server = lab.hosts
    text = (site_dir / "site.yml").read_text()
    text = re.sub(r"(?m)^(\s+target:).*$", rf"\1 sftp:root@{server.address}:{FOLDER}", text)
    (site_dir / "site.yml").write_text(text)
    # What the volunteer does: the server's host key line, checked by hand, in hosts.yml;
    # the backup host's services (webdav only here) placed on it.
    known = lab.state.paths.known_hosts.read_text().splitlines()
    server_keys = [ln for ln in known if server.address in ln.split(" ", 1)[0].split(",")]
    assert server_keys, known
    inventory = yaml.safe_load((site_dir / "hosts.yml").read_text())
    hosts = inventory["all"]["children"]["telecentre"]["hosts"]
    hosts[client.name]["backup_sftp_known_hosts"] = "\n".join(server_keys)
    hosts[client.name]["tc_services"] = ["webdav"]
    (site_dir / "hosts.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    env = {**os.environ, "XDG_CONFIG_HOME": str(base / "config")}
    subprocess.run(
        [sys.executable, "-c", "from telecentre_ctl.cli.main import main; main()",
         "secrets", str(site_dir)],
        check=True, capture_output=True, env=env,
    )  # fmt: skip
    found = SftpLab(lab, site_dir, base / "config")
    # the data the services would hold
    found.client(
        "mkdir -p /srv/telecentre/webdav/files/Comptes /srv/telecentre/proxy/data "
        f"&& printf '{CANARY}' > '/srv/telecentre/webdav/files/Comptes/bilan 2025 é.txt' "
        "&& head -c 3000000 /dev/urandom > /srv/telecentre/webdav/files/photo.jpg"
    )
    found.server(f"mkdir -p {FOLDER}")
    previous = os.environ.get("XDG_CONFIG_HOME")
    yield found
    if previous is None:
        os.environ.pop("XDG_CONFIG_HOME", None)
    else:
        os.environ["XDG_CONFIG_HOME"] = previous


def test_unauthorized_key_is_named_then_backups_land_on_the_server(sftp_lab: SftpLab) -> None:
    first = sftp_lab.run_backup_role()
    assert first.exit_code != 0
    log = first.log_file.read_text()
    public = sftp_lab.client("cat /etc/telecentre/backup/id_ed25519.pub").stdout.strip()
    assert public.startswith("ssh-ed25519 ")
    assert "refused this host's key" in log and public in log, log[-3000:]
    assert not sftp_lab.server(f"ls -A {FOLDER}").stdout.strip()  # nothing made there

    # The volunteer authorizes the key on the server, then deploys again.
    sftp_lab.server(f"echo '{public}' >> /root/.ssh/authorized_keys")
    second = sftp_lab.run_backup_role()
    assert second.exit_code == 0, second.log_file.read_text()[-3000:]
    repo = f"{FOLDER}/{SITE}/{sftp_lab.lab.hosts[0].name}"
    assert sftp_lab.server(f"test -f {repo}/config && echo yes").stdout.strip() == "yes"

    out = sftp_lab.client("/usr/local/sbin/telecentre-backup backup").stdout
    done = json.loads(out.strip().splitlines()[-1])
    assert done["ok"], out
    # the data is on the server, encrypted: the canary is in no file there
    packs = sftp_lab.server(f"find {repo}/data -type f | wc -l").stdout.strip()
    assert int(packs) >= 1
    grep = sftp_lab.server(f"grep -rl '{CANARY}' {FOLDER}", check=False)
    assert grep.returncode == 1 and not grep.stdout

    drill = sftp_lab.client("/usr/local/sbin/telecentre-backup drill").stdout
    result = json.loads(drill.strip().splitlines()[-1])
    assert result["ok"] and "restored" in result["message"], drill


def test_a_server_with_another_host_key_is_refused(sftp_lab: SftpLab) -> None:
    """A server that shows a key other than the one written in hosts.yml (an impostor, or
    a reinstalled server) gets no data, and the message says what to check."""
    known = "/etc/telecentre/backup/known_hosts"
    saved = sftp_lab.client(f"cat {known}").stdout
    other = sftp_lab.client("ssh-keygen -q -t ed25519 -N '' -f /tmp/other -C x && "
                            "cat /tmp/other.pub").stdout.split()  # fmt: skip
    server = sftp_lab.lab.hosts[1].address
    sftp_lab.client(f"echo '{server} {other[0]} {other[1]}' > {known}")
    try:
        proc = sftp_lab.client("/usr/local/sbin/telecentre-backup backup", check=False)
        assert proc.returncode == 1
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert not result["ok"] and "did not show the host key" in result["message"], proc
    finally:
        sftp_lab.client(f"cat > {known} <<'EOF'\n{saved}EOF")
