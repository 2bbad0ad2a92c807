"""Helpers for test tiers that need lab hosts (tests/lab, tests/e2e): start N hosts for a
site folder, run commands on them, install Docker for real, snapshot what the lab touches.

    from telecentre_ctl.lab import testing
    reason = testing.skip_reason()            # pytest.skip(reason) when not None
    testing.lab_required()                    # TELECENTRE_REQUIRE_LAB=1: fail instead
    with testing.running_lab(site_dir, 2) as lab:
        lab.run(lab.hosts[0], "systemctl is-system-running")
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from telecentre_ctl.errors import TelecentreError
from telecentre_ctl.lab import apt, cgroups, control
from telecentre_ctl.lab.ssh import ssh_run
from telecentre_ctl.lab.state import HostState, LabState
from telecentre_ctl.lab.system import TOOLS_UP, check_preconditions, process_alive

APT_ENV = "DEBIAN_FRONTEND=noninteractive"
REQUIRE_LAB_ENV = "TELECENTRE_REQUIRE_LAB"


def lab_required() -> bool:
    """True when $TELECENTRE_REQUIRE_LAB is 1 (CI sets it): the lab tiers and the tools
    they need must be there, and a test that would skip for their lack fails instead."""
    return os.environ.get(REQUIRE_LAB_ENV, "") == "1"


def skip_reason() -> str | None:
    """Why lab tests cannot run here (not root, a package missing), or None."""
    try:
        check_preconditions(TOOLS_UP, need_overlay=True)
    except TelecentreError as err:
        return f"lab tests need root and the lab's packages: {err}"
    return None


def site_name(base: str) -> str:
    """The name tests give a lab site: `base` plus $TELECENTRE_TEST_SITE_SUFFIX, so that
    several test runs on one machine (several checkouts) never share a lab site."""
    return base + os.environ.get("TELECENTRE_TEST_SITE_SUFFIX", "")


def write_site(site_dir: Path, name: str, template: Path | None = None) -> Path:
    """A site folder named `name`: a copy of the template site.yml (e.g. the demo's) with
    its name replaced, or a bare one that is enough for the lab alone."""
    site_dir.mkdir(parents=True, exist_ok=True)
    text = f"name: {name}\n"
    if template is not None and template.is_file():
        text = re.sub(r"(?m)^name:.*$", f"name: {name}", template.read_text())
    (site_dir / "site.yml").write_text(text)
    return site_dir


class CommandFailed(AssertionError):
    pass


@dataclass
class Lab:
    site_dir: Path
    state: LabState

    @property
    def hosts(self) -> list[HostState]:
        return self.state.hosts

    @property
    def inventory(self) -> Path:
        return self.site_dir / "hosts.yml"

    def run(
        self, host: HostState, command: str, *, check: bool = True, timeout: float = 900
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command on a host as root over the lab's SSH."""
        proc = ssh_run(self.state.paths, host.address, command, timeout=timeout)
        if check and proc.returncode != 0:
            raise CommandFailed(
                f"{host.name}: `{command}` exited {proc.returncode}\n"
                f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}"
            )
        return proc

    def install_docker(self, host: HostState) -> None:
        """Install Debian's Docker in a host, as the deploy's docker role would."""
        self.run(host, "apt-get update -q >/dev/null")
        self.run(
            host,
            f"{APT_ENV} apt-get install -y -q docker.io docker-cli docker-buildx"
            " docker-compose >/tmp/docker-install.log 2>&1 || "
            "{ tail -20 /tmp/docker-install.log; exit 1; }",
        )
        self.run(host, "systemctl is-active --quiet docker || systemctl start docker")
        apt.harvest(host.name)  # later hosts on this machine reuse these packages

    def build_tiny_image(self, host: HostState, tag: str = "tiny:1") -> str:
        """A locally built image without any registry: busybox-static + docker import."""
        self.run(host, f"{APT_ENV} apt-get install -y -q busybox-static >/dev/null")
        self.run(
            host,
            "set -e; r=$(mktemp -d); mkdir -p $r/bin; cp /bin/busybox $r/bin/;"
            " for a in sh echo sleep cat; do ln -sf busybox $r/bin/$a; done;"
            f" tar -C $r -c . | docker import - {tag} >/dev/null; rm -rf $r",
        )
        return tag


@contextmanager
def running_lab(site_dir: Path, count: int) -> Iterator[Lab]:
    """N lab hosts for site_dir (hosts.yml written) for the block, removed afterwards."""
    try:
        state = control.up(site_dir, count)
    except BaseException:
        control.down(site_dir)  # hosts left up by a failed or degraded start go too
        raise
    try:
        yield Lab(site_dir, state)
    finally:
        control.down(site_dir)


# --- what the lab may touch on the machine, to compare before/after -------------------


def _out(argv: list[str]) -> list[str]:
    if shutil.which(argv[0]) is None:
        return []
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return [line for line in proc.stdout.splitlines() if line.strip()]


def _live_processes() -> dict[int, str]:
    """pid -> command line and the hostname its root sees (a lab host's name inside it)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not (entry.name.isdigit() and process_alive(int(entry.name))):
            continue
        try:
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            host = (entry / "root/etc/hostname").read_text().strip()
        except OSError:
            host = "?"
        found[int(entry.name)] = f"{argv.decode(errors='replace').strip()} host={host}"
    return found


@dataclass(frozen=True)
class MachineSnapshot:
    netns: frozenset[str]
    links: frozenset[str]
    mounts: frozenset[str]
    nft: tuple[str, ...]
    iptables: tuple[str, ...]
    processes: frozenset[tuple[int, str]]
    cgroups: frozenset[str]
    ip_forward: str

    @classmethod
    def take(cls) -> MachineSnapshot:
        iptables = [
            line
            for line in _out(["iptables-save"])
            if not line.startswith("#") and not line.startswith(":")
        ]
        return cls(
            netns=frozenset(_out(["ip", "netns", "list"])),
            links=frozenset(line.split(":")[1].strip() for line in _out(["ip", "-o", "link"])),
            mounts=frozenset(_out(["findmnt", "-rn", "-o", "TARGET"])),
            nft=tuple(_out(["nft", "list", "ruleset"])),
            iptables=tuple(iptables),
            processes=frozenset(_live_processes().items()),
            cgroups=frozenset(
                str(group)
                for root in cgroups.hierarchies()
                for group in root.glob(f"{cgroups.GROUP}/*")
                if group.is_dir()
            ),
            ip_forward=Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
        )

    def leftovers(
        self, before: MachineSnapshot, markers: Sequence[str] = ()
    ) -> dict[str, list[str]]:
        """What exists now and did not before. Zombies are not counted: on machines whose
        PID 1 does not reap orphans, a stopped nspawn stays one. With markers (a site
        name, its bridge, ...), only entries mentioning one count, so that labs other
        tests start meanwhile are not blamed."""
        me = os.getpid()
        diff = {
            "netns": sorted(self.netns - before.netns),
            "links": sorted(self.links - before.links),
            "mounts": sorted(self.mounts - before.mounts),
            "cgroups": sorted(self.cgroups - before.cgroups),
            "nft": [line for line in self.nft if line not in before.nft],
            "iptables": [line for line in self.iptables if line not in before.iptables],
            "processes": [
                f"{pid} {cmd}"
                for pid, cmd in sorted(self.processes - before.processes)
                if pid != me
            ],
        }
        if markers:
            diff = {k: [e for e in v if any(m in e for m in markers)] for k, v in diff.items()}
        return {key: value for key, value in diff.items() if value}


# The site's internal CA on a lab host (LAN sites): what clients of the lab trust.
CA_ON_HOST = "/srv/telecentre/proxy/data/pki/authorities/local/root.crt"


@contextmanager
def resolve_to(domain: str, address: str) -> Iterator[None]:
    """Names under `domain` resolve to `address` in this process (as a LAN's DNS would)."""
    original = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and (host == domain or host.endswith("." + domain)):
            host = address
        return original(host, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
    try:
        yield
    finally:
        socket.getaddrinfo = original
