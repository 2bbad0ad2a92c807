"""Members requests on the directory's host: sent as source on stdin to `python3 -I -S -`.

This file is a program for the HOST, not for the controller: standard library only. The
controller (telecentre_ctl.members) appends one call, `sys.exit(main(REQUEST))`, whose
request may carry one-time passwords: they travel inside the program text over SSH, never
on a command line, and reach the directory container on the stdin of `docker exec`.

    main({"directory": {...request for `directory members`...},
          "data": {"policy": "keep|archive|delete", "uids": [...], "paths": [...],
                   "archive_dir": "/srv/telecentre/directory/archive"}})

The directory request runs first (a removed member is locked out before anything else
happens); then, for removals, each member's own data (paths with {uid}) is archived into
one tar.gz in the directory's backed-up archive volume, or deleted, as the site's policy
says. One JSON document answers on stdout; exit 2 when the directory refused the request
(nothing changed), 1 when something failed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CONTAINER = "tc-directory"


def directory_request(request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    try:
        proc = subprocess.run(
            ["docker", "exec", "-i", CONTAINER, "/usr/local/bin/directory", "members"],
            input=json.dumps(request).encode(),
            capture_output=True,
            timeout=600,
            check=False,
        )
    except FileNotFoundError:
        return 1, {"error": "docker is not installed on this host: deploy the site first"}
    except subprocess.TimeoutExpired:
        return 1, {"error": "the directory did not answer within 10 minutes"}
    out = proc.stdout.decode("utf-8", "replace").strip()
    try:
        answer = json.loads(out.splitlines()[-1]) if out else {}
    except ValueError:
        answer = {}
    if not isinstance(answer, dict) or not answer:
        err = proc.stderr.decode("utf-8", "replace").strip()[-400:]
        if "No such container" in err or "is not running" in err:
            err = "the directory container (tc-directory) is not running: deploy the site"
        return 1, {"error": err or f"docker exec exited {proc.returncode}"}
    if "refused" in answer:
        return 2, answer
    return (0 if proc.returncode == 0 else 1), answer


def member_paths(paths: list[str], uid: str) -> list[str]:
    return [p.replace("{uid}", uid) for p in paths]


def archive_member(uid: str, paths: list[str], archive_dir: str) -> dict[str, Any]:
    """One tar.gz of the member's data (absent paths skipped), then the data removed."""
    present = [p for p in member_paths(paths, uid) if os.path.lexists(p)]
    if not present:
        return {"uid": uid, "archive": None, "paths": []}
    os.makedirs(archive_dir, mode=0o700, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target = os.path.join(archive_dir, f"{uid}-{stamp}.tar.gz")
    partial = target + ".partial"
    with tarfile.open(partial, "w:gz") as tar:
        for path in present:
            tar.add(path, arcname=path.lstrip("/"))
    with open(partial, "rb") as f:
        os.fsync(f.fileno())
    os.chmod(partial, 0o600)
    os.replace(partial, target)
    for path in present:
        remove_path(path)
    return {"uid": uid, "archive": target, "paths": present}


def remove_path(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def data_step(spec: dict[str, Any]) -> list[dict[str, Any]]:
    done = []
    for uid in spec["uids"]:
        if spec["policy"] == "archive":
            done.append(archive_member(uid, spec["paths"], spec["archive_dir"]))
        elif spec["policy"] == "delete":
            present = [p for p in member_paths(spec["paths"], uid) if os.path.lexists(p)]
            for path in present:
                remove_path(path)
            done.append({"uid": uid, "archive": None, "paths": present})
    return done


def main(request: dict[str, Any]) -> int:
    code, answer = directory_request(request["directory"])
    if code == 0 and request.get("data"):
        try:
            answer["data"] = data_step(request["data"])
        except OSError as err:
            answer["data_error"] = f"{err.filename or ''}: {err.strerror or err}"
            code = 1
    sys.stdout.write(json.dumps(answer, ensure_ascii=False) + "\n")
    return code
