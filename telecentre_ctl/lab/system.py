"""Small wrappers over the machine: commands, preconditions, processes, mounts, locks."""

from __future__ import annotations

import fcntl
import os
import platform
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from telecentre_ctl.errors import OperationFailed, PreconditionMissing

Log = Callable[[str], None]


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# Tool -> Debian package that provides it, checked before anything is touched.
TOOLS_UP = {
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
    "ssh-keygen": "openssh-client",
    "ssh": "openssh-client",
    "ip": "iproute2",
    "nft": "nftables",
    "setsid": "util-linux",
    "umount": "mount",
}
TOOLS_DOWN = {"ip": "iproute2", "nft": "nftables", "umount": "mount"}


def check_preconditions(tools: dict[str, str], *, need_overlay: bool = False) -> None:
    """Raise PreconditionMissing (exit 2, nothing touched) naming what to install."""
    if platform.system() != "Linux":
        raise PreconditionMissing(
            f"the lab needs Linux (this is {platform.system()})",
            fix="run the lab on a Debian or Ubuntu machine",
        )
    if os.geteuid() != 0:
        raise PreconditionMissing(
            "the lab needs root (namespaces, mounts, firewall rules)",
            fix="run it as root, e.g. sudo telecentre-ctl lab ...",
        )
    missing = sorted({pkg for tool, pkg in tools.items() if shutil.which(tool) is None})
    if missing:
        tools_missing = [t for t, p in tools.items() if p in missing and shutil.which(t) is None]
        raise PreconditionMissing(
            f"missing tools for the lab: {', '.join(tools_missing)}",
            fix=f"apt-get install {' '.join(missing)}",
        )
    if need_overlay and not overlay_supported():
        raise PreconditionMissing(
            "the kernel has no overlay filesystem (not listed in /proc/filesystems)",
            fix="load it with modprobe overlay, or use a kernel built with CONFIG_OVERLAY_FS",
        )


def fs_type(path: Path) -> str:
    """Filesystem type of the mount holding path (its nearest existing parent)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    target = os.path.realpath(path)
    best, kind = "", ""
    for line in Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines():
        fields = line.split()
        point = fields[4].encode().decode("unicode_escape")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[fields.index("-") + 1]
    return kind


def check_writable_fs(path: Path, what: str, env: str) -> None:
    """Overlay upper layers and Docker's overlay2 cannot sit on an overlay filesystem."""
    if fs_type(path) == "overlay":
        raise PreconditionMissing(
            f"{path} ({what}) is on an overlay filesystem (e.g. inside a container)",
            fix=f"set {env} to a directory on a real filesystem (ext4, xfs, btrfs, tmpfs)",
        )


def overlay_supported() -> bool:
    try:
        text = Path("/proc/filesystems").read_text(encoding="ascii")
    except OSError:
        return False
    return any(line.split()[-1:] == ["overlay"] for line in text.splitlines())


def run(
    argv: Sequence[str], *, check: bool = True, input_text: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing output; on failure raise OperationFailed with its stderr."""
    proc = subprocess.run(
        list(argv), input=input_text, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise OperationFailed(
            f"command failed ({proc.returncode}): {' '.join(argv)}: {' / '.join(detail)}",
            fix="run again with --debug; lab down SITE_DIR removes a half-made lab",
        )
    return proc


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive flock held for the block (released by the kernel if we die)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- processes -------------------------------------------------------------------------


def process_alive(pid: int) -> bool:
    """True if pid exists and is not a zombie (PID 1 may not reap orphans on some machines)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry.name))
    return found


def pids_in_netns(netns_file: Path) -> list[int]:
    """Every process whose network namespace is the one bound at netns_file."""
    try:
        target = netns_file.stat().st_ino
    except OSError:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "ns" / "net").stat().st_ino == target:
                found.append(int(entry.name))
        except OSError:
            continue
    return [pid for pid in found if process_alive(pid)]


def send_signal(pid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, sig)


# --- mounts ----------------------------------------------------------------------------


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below path in our mount namespace, deepest first."""
    base = os.path.realpath(path)
    found: list[Path] = []
    for line in Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point == base or point.startswith(base.rstrip("/") + "/"):
            found.append(Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def unmount_all_under(path: Path) -> None:
    for point in mounts_under(path):
        if run(["umount", str(point)], check=False).returncode != 0:
            # Busy after a crash: detach it now, the kernel frees it when the last user goes.
            run(["umount", "--lazy", str(point)], check=False)


def safe_rmtree(path: Path) -> None:
    """Remove a tree we made, never descending into a mount (e.g. the base tree)."""
    if not path.exists():
        return
    unmount_all_under(path)
    left = mounts_under(path)
    if left:
        raise OperationFailed(
            f"cannot remove {path}: still mounted at {', '.join(map(str, left))}",
            fix=f"stop what uses it (fuser -vm {left[0]}), then umount it and run this again",
        )
    shutil.rmtree(path)
