"""The status probe: sent as source on stdin to `python3 -` on each host, answers one JSON.

This file is a self-contained program for the HOST, not for the controller: standard
library only, Python 3.9 or later (Debian 11+), no file written except a cache under /run.
`telecentre_ctl.status` sends its source with the parameters as the one argument:

    python3 - '{"site": "demo", "paths": [...], "ca_path": "...", ...}'

and reads one JSON document on stdout (schema below). Every section is measured on its
own: a failing section is reported with an error string, never breaks the others. The
controller judges the results (telecentre_ctl.status.evaluate); the probe only measures.

Output:
    {"probe": 1, "now": "<ISO UTC>", "hostname": str, "uptime_s": float,
     "docker": {"ok": bool, "error": str|null,
                "containers": [{"name", "service", "site", "state", "health", "created",
                                "started_at", "finished_at", "exit_code", "restarts",
                                "failing_since", "health_output"}]},
     "disks": [{"mount", "paths", "total_bytes", "used_bytes", "avail_bytes", "percent"}],
     "memory": {"total_bytes", "available_bytes", "percent"} | {"error"},
     "backup": {"last": {...}|null, "drill": {...}|null, "dir_mtime": str|null,
                "upgrades": {service: journal of its last upgrade}, "error"},
     "ca_pem": str|null,
     "updates": {"security": int|null, "total": int|null, "checked": str|null, "error"}}
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from datetime import datetime, timezone

TYPE_CHECKING = False  # typing is not imported at run time: each import costs the probe CPU
if TYPE_CHECKING:
    from typing import Any

DOCKER_SOCKET = "/var/run/docker.sock"
BACKUP_DIR = "/var/lib/telecentre/backup"
SERVICE_LABEL = "org.telecentre.service"
SITE_LABEL = "org.telecentre.site"
APT_CACHE = "/run/telecentre-status/apt.json"
APT_INPUTS = ("/var/lib/dpkg/status", "/var/lib/apt/lists")  # apt-get -s rewrites pkgcache.bin
HEALTH_OUTPUT_MAX = 300


def iso(ts: float) -> str:
    utc = timezone.utc  # noqa: UP017 (datetime.UTC is Python 3.11+; hosts may have 3.9)
    return datetime.fromtimestamp(ts, utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _docker_get(path: str, timeout: float) -> Any:
    """GET `path` from the Docker engine over its UNIX socket, as HTTP/1.0 (the engine
    then closes the connection after a plain, unchunked body). http.client is not used:
    importing it costs more CPU than the whole rest of the probe."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(DOCKER_SOCKET)
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n".encode("ascii"))
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
    if status != 200:
        raise OSError(f"docker engine answered {status or 'nothing'} to {path}: {body[:200]!r}")
    return json.loads(body)


def _url_quote(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-._~" else f"%{ord(c):02X}" for c in text)


def _failing_since(health: dict[str, Any]) -> str | None:
    """Start of the current run of failed health checks (the oldest one Docker kept)."""
    log = health.get("Log") or []
    since = None
    for entry in reversed(log):
        if entry.get("ExitCode") == 0:
            break
        since = entry.get("Start")
    return str(since) if since else None


def docker_section(timeout: float) -> dict[str, Any]:
    if not os.path.exists(DOCKER_SOCKET):
        return {
            "ok": False,
            "error": "no Docker engine (no /var/run/docker.sock)",
            "containers": [],
        }
    try:
        filters = _url_quote(json.dumps({"label": [SERVICE_LABEL]}))
        listed = _docker_get(f"/containers/json?all=1&filters={filters}", timeout)
        containers = []
        for item in listed:
            info = _docker_get(f"/containers/{item['Id']}/json", timeout)
            state = info.get("State") or {}
            labels = (info.get("Config") or {}).get("Labels") or {}
            health = state.get("Health") or {}
            log = health.get("Log") or []
            containers.append(
                {
                    "name": str(info.get("Name", "")).lstrip("/"),
                    "service": labels.get(SERVICE_LABEL),
                    "site": labels.get(SITE_LABEL),
                    "state": state.get("Status"),
                    "health": health.get("Status"),
                    "created": info.get("Created"),
                    "started_at": state.get("StartedAt"),
                    "finished_at": state.get("FinishedAt"),
                    "exit_code": state.get("ExitCode"),
                    "restarts": info.get("RestartCount", 0),
                    "failing_since": _failing_since(health) if health else None,
                    "health_output": (
                        str(log[-1].get("Output", ""))[-HEALTH_OUTPUT_MAX:].strip() if log else None
                    ),
                }
            )
        return {"ok": True, "error": None, "containers": containers}
    except (OSError, ValueError, KeyError) as err:
        return {"ok": False, "error": f"Docker engine: {err}", "containers": []}


def _mounts() -> list[str]:
    """Mount points, longest first (so the first prefix that matches is the right one)."""
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            if len(fields) > 4:
                points.append(fields[4].encode().decode("unicode_escape"))
    return sorted(set(points), key=len, reverse=True)


def _mount_of(path: str, mounts: list[str]) -> str:
    real = os.path.realpath(path)
    for point in mounts:
        if real == point or real.startswith(point.rstrip("/") + "/"):
            return point
    return "/"


def disk_section(paths: list[str]) -> list[dict[str, Any]]:
    """One entry per file system holding one of the paths (df's percentage)."""
    mounts = _mounts()
    found: dict[str, dict[str, Any]] = {}
    seen: dict[tuple[int, int], str] = {}
    for path in paths:
        if not os.path.exists(path):
            continue
        mount = _mount_of(path, mounts)
        st = os.statvfs(path)
        same = seen.get((st.f_fsid, st.f_blocks)) if st.f_fsid else None
        if mount in found or same is not None:  # a bind mount of a file system seen
            found[mount if mount in found else str(same)]["paths"].append(path)
            continue
        seen[(st.f_fsid, st.f_blocks)] = mount
        total = st.f_blocks * st.f_frsize
        avail = st.f_bavail * st.f_frsize
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        usable = used + avail
        found[mount] = {
            "mount": mount,
            "paths": [path],
            "total_bytes": total,
            "used_bytes": used,
            "avail_bytes": avail,
            "percent": round(100.0 * used / usable, 1) if usable else 0.0,
        }
    return list(found.values())


def memory_section() -> dict[str, Any]:
    values = {}
    with open("/proc/meminfo", encoding="utf-8") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0]) * 1024
    total, available = values["MemTotal"], values.get("MemAvailable", values["MemFree"])
    return {
        "total_bytes": total,
        "available_bytes": available,
        "percent": round(100.0 * (total - available) / total, 1) if total else 0.0,
    }


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        return {"unreadable": f"{path}: {err}"}


def backup_section() -> dict[str, Any]:
    try:
        mtime: str | None = iso(os.stat(BACKUP_DIR).st_mtime)
    except OSError:
        mtime = None
    return {
        "last": _read_json(os.path.join(BACKUP_DIR, "last-backup.json")),
        "drill": _read_json(os.path.join(BACKUP_DIR, "last-drill.json")),
        "dir_mtime": mtime,
        "upgrades": _upgrade_journals(),
    }


def _upgrade_journals() -> dict[str, Any]:
    """The journal of each service's last upgrade (telecentre-backup upgrade)."""
    folder = os.path.join(BACKUP_DIR, "upgrade")
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".json"))
    except OSError:
        return {}
    return {n[: -len(".json")]: _read_json(os.path.join(folder, n)) for n in names}


def _apt_key() -> list[float]:
    key = []
    for path in APT_INPUTS:
        try:
            key.append(os.stat(path).st_mtime)
        except OSError:
            key.append(0.0)
    return key


def _count_upgrades(output: str) -> dict[str, int]:
    total = security = 0
    for line in output.splitlines():
        if line.startswith("Inst "):
            total += 1
            if "-security" in line or "Debian-Security" in line:
                security += 1
    return {"total": total, "security": security}


# Run detached by the probe (python3 -c): simulate an upgrade, keep the "Inst" lines.
REFRESHER = """
import json, os, subprocess, sys, time
key, cache, lock = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
env = dict(os.environ, LC_ALL="C", DEBIAN_FRONTEND="noninteractive")
try:
    p = subprocess.run(["apt-get", "-s", "-o", "Debug::NoLocking=1", "upgrade"],
                       capture_output=True, text=True, env=env)
    lines = [l for l in p.stdout.splitlines() if l.startswith("Inst ")]
    done = {"key": key, "rc": p.returncode, "inst": lines, "stderr": p.stderr[-300:],
            "checked": time.time()}
    with open(cache + ".tmp", "w") as f:
        json.dump(done, f)
    os.replace(cache + ".tmp", cache)
finally:
    os.unlink(lock)
"""


def _updates_from(cached: dict[str, Any]) -> dict[str, Any]:
    checked = cached.get("checked")
    when = iso(float(checked)) if isinstance(checked, (int, float)) else None
    if cached.get("rc") != 0:
        error = f"apt-get -s upgrade: {str(cached.get('stderr', '')).strip()}"
        return {"security": None, "total": None, "checked": when, "error": error}
    counts = _count_upgrades("\n".join(cached.get("inst") or []))
    return {**counts, "checked": when, "error": None}


def _start_refresher(key: list[float], cache: str) -> None:
    """Start REFRESHER detached unless one is running (lock file, stale after 10 min)."""
    os.makedirs(os.path.dirname(cache), mode=0o755, exist_ok=True)
    lock = cache + ".lock"
    try:
        if time.time() - os.stat(lock).st_mtime > 600:
            os.unlink(lock)  # left by a refresher that died
    except OSError:
        pass
    try:
        os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return
    import subprocess  # here: most probes find the cache fresh and never need it

    subprocess.Popen(
        [sys.executable or "python3", "-c", REFRESHER, json.dumps(key), cache, lock],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


def updates_section(wait: float, cache: str = APT_CACHE) -> dict[str, Any]:
    """Pending (security) updates from the local package lists, as `apt-get -s upgrade`
    sees them. The simulation costs seconds of CPU on a small box: it runs detached,
    writes a cache in /run, and is redone only when dpkg or the package lists change.
    The probe waits for it at most `wait` seconds, else reports it as still running."""
    if not os.path.exists("/usr/bin/apt-get"):
        return {"security": None, "total": None, "checked": None, "error": "no apt-get"}
    key = _apt_key()
    deadline = time.monotonic() + wait
    started = False
    while True:
        cached = _read_json(cache)
        if isinstance(cached, dict) and cached.get("key") == key:
            return _updates_from(cached)
        if not started:
            started = True
            _start_refresher(key, cache)
        if time.monotonic() >= deadline:
            return {"security": None, "total": None, "checked": None, "error": "still checking"}
        time.sleep(0.1)


def _section(name: str, out: dict[str, Any], func: Any, *args: Any) -> None:
    try:
        out[name] = func(*args)
    except Exception as err:  # a section that fails is reported, the others still run
        out[name] = {"error": f"{type(err).__name__}: {err}"}


def probe(params: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    budget = float(params.get("budget", 8.0))
    out: dict[str, Any] = {"probe": 1, "now": iso(time.time()), "hostname": socket.gethostname()}
    try:
        with open("/proc/uptime", encoding="utf-8") as handle:
            out["uptime_s"] = float(handle.read().split()[0])
    except (OSError, ValueError):
        out["uptime_s"] = None
    _section("docker", out, docker_section, max(budget / 2, 1.0))
    _section("disks", out, disk_section, list(params.get("paths", ["/"])))
    _section("memory", out, memory_section)
    _section("backup", out, backup_section)
    ca_path = params.get("ca_path")
    out["ca_pem"] = None
    if ca_path:
        try:
            with open(ca_path, encoding="ascii") as handle:
                out["ca_pem"] = handle.read()
        except OSError:
            out["ca_pem"] = None
    left = budget - (time.monotonic() - started)
    wait = min(left, float(params.get("updates_wait", 1.0)))
    _section("updates", out, updates_section, wait, str(params.get("apt_cache", APT_CACHE)))
    out["duration_s"] = round(time.monotonic() - started, 3)
    return out


def main(argv: list[str]) -> int:
    params = json.loads(argv[1]) if len(argv) > 1 else {}
    sys.stdout.write(json.dumps(probe(params)))
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
