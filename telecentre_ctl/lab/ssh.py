"""OpenSSH to lab hosts: the lab key, the lab known_hosts, strict host key checking."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from telecentre_ctl.lab.paths import SitePaths


def ssh_options(site: SitePaths) -> list[str]:
    return [
        "-F",
        "/dev/null",
        "-i",
        str(site.key),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={site.known_hosts}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "LogLevel=ERROR",
    ]


def ssh_argv(
    site: SitePaths, address: str, command: Sequence[str] = (), *, batch: bool = True
) -> list[str]:
    argv = ["ssh", *ssh_options(site)]
    if batch:
        argv += ["-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]
    elif not command:
        argv.append("-t")
    return [*argv, f"root@{address}", *command]


def ssh_run(
    site: SitePaths, address: str, command: str, *, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ssh_argv(site, address, [command]),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def make_key(key: Path, comment: str) -> None:
    if key.exists():
        return
    key.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)],
        check=True,
        capture_output=True,
    )
