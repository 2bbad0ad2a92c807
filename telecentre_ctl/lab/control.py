"""lab up / down / list: the operations the CLI exposes."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from telecentre_ctl.errors import InvalidInput, OperationFailed
from telecentre_ctl.lab import host as hostmod
from telecentre_ctl.lab import inventory, network, paths, state, sysctl
from telecentre_ctl.lab.base import ensure_base
from telecentre_ctl.lab.ssh import make_key, ssh_argv
from telecentre_ctl.lab.state import HostState, LabState
from telecentre_ctl.lab.system import (
    TOOLS_DOWN,
    TOOLS_UP,
    Log,
    check_preconditions,
    check_writable_fs,
    file_lock,
    safe_rmtree,
    stderr_log,
)
from telecentre_ctl.site import read_site_name

STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class HostInfo:
    site: str
    name: str
    address: str
    state: str
    site_dir: str


def up(site_dir: Path, count: int = 1, log: Log = stderr_log) -> LabState:
    """Start `count` lab hosts for the site and write its hosts.yml."""
    # Files the lab writes into a host's tree (and the base tree debootstrap makes) must
    # be readable by the host's own users whatever the caller's umask: under 077, dbus
    # cannot even enter the host's / and the host comes up degraded.
    previous = os.umask(0o022)
    try:
        return _up(site_dir, count, log)
    finally:
        os.umask(previous)


def _up(site_dir: Path, count: int, log: Log) -> LabState:
    if not 1 <= count <= network.MAX_HOSTS:
        raise InvalidInput(
            f"--hosts {count}: out of range", fix=f"choose 1 to {network.MAX_HOSTS} hosts"
        )
    site_dir = site_dir.resolve()
    site = read_site_name(site_dir)
    check_preconditions(TOOLS_UP, need_overlay=True)
    check_writable_fs(paths.lab_dir(), "lab state", "TELECENTRE_STATE_DIR")
    check_writable_fs(paths.cache_dir(), "lab cache", "TELECENTRE_CACHE_DIR")
    site_paths = paths.SitePaths(site)
    with file_lock(site_paths.lock):
        current = state.load(site)
        if current is not None:
            _check_same_dir(current, site_dir)
            if _healthy(current, count):
                log(f"lab for {site} already up with {count} host(s)")
                _write_inventory(current, site_dir, log)
                return current
            log(f"replacing the lab of {site} (lab hosts are disposable)")
            _teardown(current, log)
        base = ensure_base(log)
        lab = _allocate(site, site_dir, count)
        try:
            _bring_up(lab, base, log)
        except BaseException:
            log(f"lab up of {site} failed: removing what it made")
            _teardown(lab, log)
            raise
        _write_inventory(lab, site_dir, log)
        _report_degraded(lab)
        return lab


def _check_same_dir(current: LabState, site_dir: Path) -> None:
    if current.site_dir != str(site_dir) and any(hostmod.is_our_nspawn(h) for h in current.hosts):
        raise InvalidInput(
            f"site name '{current.site}' already has a lab, started from {current.site_dir}",
            fix=f"telecentre-ctl lab down {current.site_dir}, or rename this site in site.yml",
        )


def _healthy(lab: LabState, count: int) -> bool:
    return len(lab.hosts) == count and all(hostmod.is_our_nspawn(h) for h in lab.hosts)


def _allocate(site: str, site_dir: Path, count: int) -> LabState:
    with file_lock(paths.global_lock()):
        taken = {s.index for s in state.load_all() if s.site != site}
        net = network.SiteNet(state.free_index(taken))
        hosts = [HostState(f"{site}-{i}", i, net.address(i)) for i in range(1, count + 1)]
        lab = LabState(site, str(site_dir), net.index, hosts)
        lab.save()  # recorded before anything exists, so that down can always undo
        sysctl.prepare(sum(len(s.hosts) for s in state.load_all()))
    return lab


def _bring_up(lab: LabState, base: Path, log: Log) -> None:
    started = time.monotonic()
    make_key(lab.paths.key, f"telecentre-lab-{lab.site}")
    network.create_site_net(lab.net)
    known_hosts = []
    for h in lab.hosts:
        network.create_host_net(lab.net, h.name, h.number)
        known_hosts.append(hostmod.prepare_root(lab, h, base))
    lab.paths.known_hosts.write_text("".join(known_hosts))
    for h in lab.hosts:
        h.pid = hostmod.start(lab, h)
        lab.save()
    log(f"booting {len(lab.hosts)} host(s) of {lab.site} on {lab.net.subnet}")
    with ThreadPoolExecutor(max_workers=min(16, len(lab.hosts))) as pool:
        states = list(pool.map(lambda h: hostmod.wait_ready(lab, h), lab.hosts))
    for h, st in zip(lab.hosts, states, strict=True):
        log(f"  {h.name}  {h.address}  {st}")
    log(f"lab of {lab.site} up in {time.monotonic() - started:.1f} s")


def _write_inventory(lab: LabState, site_dir: Path, log: Log) -> None:
    backup = inventory.write(lab, site_dir)
    if backup is not None:
        log(f"previous hosts.yml kept as {backup}")
    log(f"wrote {site_dir / 'hosts.yml'}")


def _report_degraded(lab: LabState) -> None:
    problems = []
    for h in lab.hosts:
        units = hostmod.failed_units(lab, h)
        if units:
            problems.append(f"{h.name}: {units}")
    if problems:
        raise OperationFailed(
            "lab hosts are up but degraded (failed units): " + "; ".join(problems),
            fix="inspect with telecentre-ctl lab ssh SITE_DIR HOST -- journalctl -b -p err",
        )


def down(site_dir: Path, log: Log = stderr_log) -> bool:
    """Remove the site's lab; False if there was none (a no-op)."""
    site = _site_of(site_dir.resolve())
    check_preconditions(TOOLS_DOWN)
    with file_lock(paths.SitePaths(site).lock):
        current = state.load(site)
        if current is None:
            log(f"no lab for {site}: nothing to do")
            return False
        _teardown(current, log)
    return True


def _site_of(site_dir: Path) -> str:
    """The site's name; for a folder deleted while its lab ran, the name recorded for it."""
    try:
        return read_site_name(site_dir)
    except InvalidInput:
        for lab in state.load_all():
            if lab.site_dir == str(site_dir):
                return lab.site
        raise


def _teardown(lab: LabState, log: Log) -> None:
    started = time.monotonic()
    for h in lab.hosts:
        hostmod.kill_host(h)
    deadline = time.monotonic() + STOP_TIMEOUT
    while any(hostmod.remaining(h) for h in lab.hosts) and time.monotonic() < deadline:
        time.sleep(0.05)
    for h in lab.hosts:
        hostmod.force_stop(h)
    for h in lab.hosts:
        _wait_gone(h)
        network.delete_host_net(lab.net, h.name, h.number)
        hostmod.remove_files(lab, h)
    network.delete_site_net(lab.net)
    with file_lock(paths.global_lock()):
        safe_rmtree(lab.paths.root)
        if not state.load_all():
            sysctl.restore()
    log(f"lab of {lab.site} removed in {time.monotonic() - started:.1f} s")


def _wait_gone(h: HostState) -> None:
    deadline = time.monotonic() + 5
    while hostmod.remaining(h):
        if time.monotonic() > deadline:
            raise OperationFailed(
                f"{h.name}: processes survive SIGKILL (pid {h.pid})",
                fix="check them with ps; then run lab down again",
            )
        time.sleep(0.05)


def list_hosts() -> list[HostInfo]:
    return [
        HostInfo(lab.site, h.name, h.address, hostmod.state_of(h), lab.site_dir)
        for lab in state.load_all()
        for h in lab.hosts
    ]


def find_host(site_dir: Path, name: str) -> tuple[LabState, HostState]:
    site = read_site_name(site_dir.resolve())
    lab = state.load(site)
    if lab is None:
        raise InvalidInput(f"no lab for site {site}", fix=f"telecentre-ctl lab up {site_dir}")
    for h in lab.hosts:
        if name in (h.name, str(h.number), h.address):
            return lab, h
    names = ", ".join(h.name for h in lab.hosts)
    raise InvalidInput(f"no lab host {name!r} in site {site}", fix=f"use one of: {names}")


def ssh_command(site_dir: Path, name: str, command: Sequence[str]) -> list[str]:
    lab, h = find_host(site_dir, name)
    if not hostmod.is_our_nspawn(h):
        raise OperationFailed(
            f"{h.name} is not running", fix=f"telecentre-ctl lab up {lab.site_dir}"
        )
    return ssh_argv(lab.paths, h.address, command, batch=bool(command))
