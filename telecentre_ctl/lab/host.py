"""One lab host: an overlay on the base tree, booted by systemd-nspawn in its own netns."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from telecentre_ctl.errors import OperationFailed
from telecentre_ctl.lab import apt, cgroups
from telecentre_ctl.lab.base import resolver_file
from telecentre_ctl.lab.network import netns_path
from telecentre_ctl.lab.ssh import ssh_run
from telecentre_ctl.lab.state import HostState, LabState
from telecentre_ctl.lab.system import (
    children,
    cmdline,
    mounts_under,
    pids_in_netns,
    process_alive,
    run,
    safe_rmtree,
    send_signal,
    unmount_all_under,
)

# DESIGN.md, "The lab": without the first Docker cannot create cgroups, without the second
# every `docker run` fails on an IPv6 sysctl.
NSPAWN_ENV = {
    "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1",
    "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network",
}


@dataclass(frozen=True)
class HostDirs:
    top: Path

    @property
    def upper(self) -> Path:
        return self.top / "upper"

    @property
    def work(self) -> Path:
        return self.top / "work"

    @property
    def root(self) -> Path:
        return self.top / "root"

    @property
    def docker(self) -> Path:
        return self.top / "docker"

    @property
    def console(self) -> Path:
        return self.top / "console.log"


def dirs(lab: LabState, host: HostState) -> HostDirs:
    return HostDirs(lab.paths.host_dir(host.name))


def prepare_root(lab: LabState, host: HostState, base: Path) -> str:
    """Mount the host's overlay and personalise it; return its known_hosts line."""
    d = dirs(lab, host)
    for sub in (d.upper, d.work, d.root, d.docker):
        sub.mkdir(parents=True, exist_ok=True)
    options = f"lowerdir={base},upperdir={d.upper},workdir={d.work}"
    run(["mount", "-t", "overlay", "overlay", "-o", options, str(d.root)])
    root = d.root
    (root / "etc/hostname").write_text(host.name + "\n")
    (root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
    (root / "etc/resolv.conf").write_text(resolver_file().read_text())
    others = "".join(f"{h.address}\t{h.name}\n" for h in lab.hosts)
    (root / "etc/hosts").write_text(f"127.0.0.1\tlocalhost\n::1\tlocalhost\n{others}")
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    keys = ssh_dir / "authorized_keys"
    keys.write_text(lab.paths.key.with_suffix(".pub").read_text())
    keys.chmod(0o600)
    host_key = root / "etc/ssh/ssh_host_ed25519_key"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{host.name}",
         "-f", str(host_key)])  # fmt: skip
    kind, blob = host_key.with_suffix(".pub").read_text().split()[:2]
    return f"{host.address},{host.name} {kind} {blob}\n"


def start(lab: LabState, host: HostState) -> int:
    """Boot the host in the background, in its own session, and return nspawn's PID."""
    d = dirs(lab, host)
    argv = [
        "systemd-nspawn",
        "--boot",
        f"--directory={d.root}",
        f"--machine={host.name}",
        "--register=no",
        "--keep-unit",
        f"--network-namespace-path={netns_path(host.name)}",
        "--console=passive",
        "--capability=all",
        "--system-call-filter=@keyring @privileged bpf",
        "--resolv-conf=off",
        "--link-journal=no",
        f"--bind={d.docker}:/var/lib/docker",
        f"--bind={apt.seed(host.name)}:/var/cache/apt/archives",
    ]
    # The shell puts itself in the host's cgroups, then becomes nspawn (same PID).
    enter = " ".join(shlex.quote(str(p)) for p in cgroups.create(host.name))
    script = f'for f in {enter}; do echo $$ > "$f" || exit 1; done; exec "$@"'
    with d.console.open("ab") as console:
        proc = subprocess.Popen(
            ["sh", "-c", script, "sh", *argv],
            env={**os.environ, **NSPAWN_ENV},
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # setsid: stopping the caller leaves the host running
        )
    return proc.pid


def is_our_nspawn(host: HostState) -> bool:
    """The recorded PID still runs nspawn for this host (PIDs get reused after a crash)."""
    if host.pid is None or not process_alive(host.pid):
        return False
    argv = cmdline(host.pid)  # `sh -c ... systemd-nspawn ...` for its first milliseconds
    nspawn = any(arg.endswith("systemd-nspawn") for arg in argv)
    return nspawn and f"--machine={host.name}" in argv


def state_of(host: HostState) -> str:
    if is_our_nspawn(host):
        return "running"
    if host.pid is not None and netns_path(host.name).exists():
        return "crashed"
    return "stopped"


def wait_ready(lab: LabState, host: HostState, timeout: float = 90) -> str:
    """Wait for SSH and for systemd to finish booting; return running or degraded."""
    deadline = time.monotonic() + timeout
    while True:
        # Alive is enough here: we started this PID, and /proc/PID/cmdline can read empty
        # for an instant while sh execs nspawn (is_our_nspawn then says no on a busy box).
        if host.pid is None or not process_alive(host.pid):
            console = dirs(lab, host).console
            try:
                tail = console.read_text(errors="replace").strip().splitlines()[-15:]
            except OSError:
                tail = []
            said = "; its console said:\n  " + "\n  ".join(tail) if tail else ""
            raise OperationFailed(
                f"{host.name}: systemd-nspawn exited during boot{said}",
                fix="the console's last lines are above (the failed lab is removed, the file too); "
                "run lab up again",
            )
        try:
            proc = ssh_run(lab.paths, host.address, "systemctl is-system-running --wait",
                           timeout=max(5, deadline - time.monotonic()))  # fmt: skip
        except subprocess.TimeoutExpired:
            proc = None
        if proc is not None and proc.returncode != 255:
            return proc.stdout.strip() or "unknown"
        if time.monotonic() > deadline:
            raise OperationFailed(
                f"{host.name} ({host.address}): no SSH answer after {timeout:.0f} s",
                fix=f"read {dirs(lab, host).console}",
            )
        time.sleep(0.2)


def failed_units(lab: LabState, host: HostState) -> str:
    proc = ssh_run(lab.paths, host.address, "systemctl --failed --plain --no-legend", timeout=20)
    return " ".join(line.split()[0] for line in proc.stdout.splitlines() if line.split())


def kill_host(host: HostState) -> None:
    """Kill the host's init, and with it its whole PID namespace (Docker's containers too).

    Lab hosts are disposable: a clean poweroff would only delay `down` (by ten seconds and
    more with containers running) before their files are deleted anyway. nspawn then sees
    its child gone and exits by itself, removing what it set up.
    """
    if host.pid is not None and is_our_nspawn(host):
        for child in children(host.pid):
            send_signal(child, signal.SIGKILL)
    # After a crash the host may run without its nspawn: find it by network namespace.
    for pid in pids_in_netns(netns_path(host.name)):
        send_signal(pid, signal.SIGKILL)


def force_stop(host: HostState) -> None:
    """Kill whatever is left, nspawn included."""
    kill_host(host)
    if host.pid is not None and is_our_nspawn(host):
        send_signal(host.pid, signal.SIGKILL)


def remaining(host: HostState) -> bool:
    return is_our_nspawn(host) or bool(pids_in_netns(netns_path(host.name)))


def remove_files(lab: LabState, host: HostState) -> None:
    d = dirs(lab, host)
    unmount_all_under(d.top)
    if mounts_under(d.top):
        time.sleep(0.5)
    safe_rmtree(d.top)
    apt.remove(host.name)
    cgroups.remove(host.name)
