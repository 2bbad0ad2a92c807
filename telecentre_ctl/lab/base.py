"""The base tree: Debian 13 debootstrapped once per machine, read-only under every host."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from telecentre_ctl.errors import OperationFailed
from telecentre_ctl.lab import paths
from telecentre_ctl.lab.network import LAB_RANGE
from telecentre_ctl.lab.system import Log, file_lock, safe_rmtree

MIRROR = os.environ.get("TELECENTRE_LAB_MIRROR", "http://deb.debian.org/debian")
SECURITY_MIRROR = "http://security.debian.org/debian-security"
PACKAGES = "systemd,systemd-sysv,dbus,openssh-server,python3,iproute2,ca-certificates"
STAMP = ".telecentre-lab-base"

SSHD_CONFIG = f"""\
# Written by telecentre-ctl for lab hosts: root logs in with the lab key only.
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthenticationMethods publickey
HostKey /etc/ssh/ssh_host_ed25519_key
UseDNS no
# Tests connect often; OpenSSH 10 would otherwise penalise the controller's address.
PerSourcePenaltyExemptList {LAB_RANGE}
"""

APT_KEEP = """\
// Lab hosts share one archive cache: keep what was downloaded.
APT::Keep-Downloaded-Packages "true";
Binary::apt::APT::Keep-Downloaded-Packages "true";
"""


def ensure_base(log: Log) -> Path:
    """Return the base tree, building it once; concurrent callers wait for one build."""
    tree = paths.base_tree()
    if (tree / STAMP).is_file():
        return tree
    with file_lock(paths.base_lock()):
        if (tree / STAMP).is_file():
            return tree
        _remove_leftovers(tree)
        tmp = tree.with_name(f"{tree.name}.tmp-{os.getpid()}")
        started = time.monotonic()
        log(f"building the lab's Debian {paths.SUITE} base tree once in {tree} (about a minute)")
        try:
            _debootstrap(tmp)
            _configure(tmp)
        except BaseException:
            safe_rmtree(tmp)
            raise
        tmp.rename(tree)
        log(f"base tree ready in {time.monotonic() - started:.0f} s")
    return tree


def _remove_leftovers(tree: Path) -> None:
    """A crashed build leaves a .tmp tree (maybe with /proc mounted in it): remove it."""
    for stale in tree.parent.glob(f"{tree.name}.tmp-*"):
        safe_rmtree(stale)
    if tree.exists():
        safe_rmtree(tree)


def _debootstrap(target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    log_file = target.parent / "lab-base-debootstrap.log"
    argv = [
        "debootstrap",
        "--variant=minbase",
        f"--include={PACKAGES}",
        paths.SUITE,
        str(target),
        MIRROR,
    ]
    with log_file.open("w") as out:
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = log_file.read_text(errors="replace").strip().splitlines()[-3:]
        raise OperationFailed(
            f"debootstrap of Debian {paths.SUITE} failed: {' / '.join(tail)}",
            fix=f"check that {MIRROR} answers over HTTP (see {log_file}); "
            "set TELECENTRE_LAB_MIRROR to a reachable Debian mirror",
        )


def _configure(root: Path) -> None:
    etc = root / "etc"
    # Host keys are made fresh per host; none may be shared through the base tree.
    for key in (etc / "ssh").glob("ssh_host_*"):
        key.unlink()
    (etc / "ssh/sshd_config.d/telecentre-lab.conf").write_text(SSHD_CONFIG)
    # No kmod in a container: the unit would fail and leave the host `degraded`.
    _mask(root, "systemd-modules-load.service")
    # Twenty hosts booting must not all start fetching updates from Debian at once, nor
    # hold dpkg's lock when a deploy begins; a role that wants these timers enables them.
    for timer in ("apt-daily.timer", "apt-daily-upgrade.timer"):
        (etc / "systemd/system/timers.target.wants" / timer).unlink(missing_ok=True)
    (etc / "apt/apt.conf.d/90telecentre-lab").write_text(APT_KEEP)
    (etc / "apt/sources.list").write_text(
        f"deb {MIRROR} {paths.SUITE} main\n"
        f"deb {MIRROR} {paths.SUITE}-updates main\n"
        f"deb {SECURITY_MIRROR} {paths.SUITE}-security main\n"
    )
    (etc / "machine-id").write_text("")
    shutil.copyfile(resolver_file(), etc / "resolv.conf", follow_symlinks=True)
    # The shared archive cache is bound over this directory in every host.
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    (root / STAMP).write_text(f"{paths.SUITE} v{paths.BASE_VERSION} {time.ctime()}\n")


def _mask(root: Path, unit: str) -> None:
    link = root / "etc/systemd/system" / unit
    link.unlink(missing_ok=True)
    link.symlink_to("/dev/null")


def resolver_file() -> Path:
    """The machine's resolver config, skipping a loopback stub that a host cannot reach."""
    main = Path("/etc/resolv.conf")
    upstream = Path("/run/systemd/resolve/resolv.conf")
    try:
        text = main.read_text()
    except OSError:
        return upstream
    stub = any(
        line.split()[:1] == ["nameserver"] and line.split()[1].startswith("127.")
        for line in text.splitlines()
        if len(line.split()) > 1
    )
    return upstream if stub and upstream.is_file() else main
