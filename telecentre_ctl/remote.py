"""One SSH connection to a host with paramiko: host keys verified, never added.

The connection parameters come from the site's inventory, as Ansible reads them:
`ansible_host`, `ansible_port`, `ansible_user`, `ansible_ssh_private_key_file`, and
`tc_known_hosts_file` (the lab writes one; else ~/.ssh/known_hosts). A host whose key is
not in that file, or differs from it, is refused (paramiko's RejectPolicy).

Every step has a deadline (time.monotonic() value): a host that is down or slow costs at
most the caller's timeout, whatever step it stalls in.
"""

from __future__ import annotations

import getpass
import os
import shlex
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from telecentre_ctl.errors import HostUnreachable

if TYPE_CHECKING:
    import paramiko

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


@dataclass(frozen=True)
class SshTarget:
    name: str
    address: str
    port: int
    user: str
    key_file: str | None
    known_hosts: str
    become: bool

    @property
    def known_hosts_name(self) -> str:
        """How OpenSSH names this host in known_hosts."""
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"

    @classmethod
    def from_vars(cls, name: str, host_vars: dict[str, Any]) -> SshTarget:
        key = host_vars.get("ansible_ssh_private_key_file") or host_vars.get(
            "ansible_private_key_file"
        )
        user = str(host_vars.get("ansible_user") or getpass.getuser())
        return cls(
            name=name,
            address=str(host_vars.get("ansible_host", name)),
            port=int(host_vars.get("ansible_port", 22)),
            user=user,
            key_file=os.path.expanduser(str(key)) if key else None,
            known_hosts=os.path.expanduser(
                str(host_vars.get("tc_known_hosts_file") or DEFAULT_KNOWN_HOSTS)
            ),
            become=user != "root" and bool(host_vars.get("ansible_become", False)),
        )


class RemoteError(HostUnreachable):
    """The host could not be reached or did not answer in time; `reason` is one word
    (timeout, refused, network, hostkey, auth, command) for machines."""

    def __init__(self, target: SshTarget, reason: str, message: str, fix: str = "") -> None:
        super().__init__(f"{target.name} ({target.address}): {message}", fix=fix)
        self.reason = reason


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.05)


_parsed_lock = threading.Lock()
_parsed: dict[tuple[str, int, int], Any] = {}


def _parsed_once(kind: str, path: Path, parse: Any) -> Any:
    """`parse(path)`, done once per process and file version. One known_hosts file holds
    the keys of a whole fleet: parsing it again for every host made status quadratic."""
    st = path.stat()
    key = (f"{kind}:{path}", st.st_mtime_ns, st.st_size)
    with _parsed_lock:
        if key not in _parsed:
            _parsed[key] = parse(str(path))
        return _parsed[key]


def _host_keys_for(target: SshTarget, known: Path) -> dict[str, Any]:
    """The keys known_hosts lists for this host, by key type."""
    import paramiko

    keys = _parsed_once("known_hosts", known, paramiko.HostKeys)
    return dict(keys.lookup(target.known_hosts_name) or {})


def _private_key(path: str) -> paramiko.PKey | None:
    """The key file, parsed once per process; None if it needs a passphrase or is not a
    key (paramiko then reports the problem itself when it tries the file)."""
    import paramiko

    try:
        return _parsed_once("key", Path(path), paramiko.PKey.from_path)  # type: ignore[no-any-return]
    except (OSError, ValueError, paramiko.SSHException):
        return None


def connect(target: SshTarget, deadline: float) -> paramiko.SSHClient:
    """An authenticated SSH client, or RemoteError. Host keys from target.known_hosts only."""
    import paramiko

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    known = Path(target.known_hosts)
    if not known.is_file():
        raise RemoteError(
            target,
            "hostkey",
            f"no known_hosts file {known}",
            "set tc_known_hosts_file in hosts.yml, or add the host's key to "
            f"~/.ssh/known_hosts (ssh-keyscan -p {target.port} {target.address}, then check it)",
        )
    try:
        for keytype, key in _host_keys_for(target, known).items():
            client.get_host_keys().add(target.known_hosts_name, keytype, key)
    except (OSError, paramiko.SSHException) as err:
        raise RemoteError(target, "hostkey", f"cannot read {known}: {err}") from err
    pkey = _private_key(target.key_file) if target.key_file else None
    try:
        sock = socket.create_connection((target.address, target.port), timeout=_left(deadline))
    except TimeoutError as err:
        raise RemoteError(
            target,
            "timeout",
            "no answer (connection timed out)",
            "check it is on and on the network",
        ) from err
    except ConnectionRefusedError as err:
        raise RemoteError(
            target, "refused", f"SSH port {target.port} refused", "check that sshd runs"
        ) from err
    except OSError as err:
        raise RemoteError(
            target, "network", f"cannot connect: {err.strerror or err}", "check the address"
        ) from err
    try:
        left = _left(deadline)
        client.connect(
            target.address,
            port=target.port,
            username=target.user,
            pkey=pkey,
            key_filename=target.key_file if pkey is None else None,
            look_for_keys=target.key_file is None,
            allow_agent=target.key_file is None,
            sock=sock,
            timeout=left,
            banner_timeout=left,
            auth_timeout=left,
            channel_timeout=left,
        )
    except paramiko.BadHostKeyException as err:
        sock.close()
        raise RemoteError(
            target,
            "hostkey",
            f"host key differs from the one in {known}: possible impostor or reinstalled host",
            "if the host was reinstalled, replace its line in the known_hosts file",
        ) from err
    except paramiko.AuthenticationException as err:
        sock.close()
        raise RemoteError(
            target,
            "auth",
            f"SSH login as {target.user} refused",
            "check ansible_user and ansible_ssh_private_key_file in hosts.yml",
        ) from err
    except (paramiko.SSHException, OSError, EOFError) as err:
        sock.close()
        text = str(err) or type(err).__name__
        if "not found in known_hosts" in text:
            raise RemoteError(
                target,
                "hostkey",
                f"host key unknown (not in {known})",
                f"add it after checking it: ssh-keyscan {target.address} >> {known}",
            ) from err
        reason = (
            "timeout" if time.monotonic() >= deadline or "timeout" in text.lower() else "network"
        )
        raise RemoteError(target, reason, f"SSH failed: {text}") from err
    return client


def run_script(
    client: paramiko.SSHClient,
    target: SshTarget,
    script: str,
    args: list[str],
    deadline: float,
) -> bytes:
    """Run `python3 -I -S - ARGS` with `script` on stdin; return its stdout (RemoteError if
    it fails or outlives the deadline). -I -S: no site-packages, no environment variables:
    the script needs the standard library only, and starts faster without them."""
    transport = client.get_transport()
    if transport is None:
        raise RemoteError(target, "network", "SSH connection closed")
    command = "python3 -I -S - " + " ".join(shlex.quote(a) for a in args)
    if target.become:
        command = "sudo -n " + command
    try:
        channel = transport.open_session(timeout=_left(deadline))
        channel.settimeout(_left(deadline))
        channel.exec_command(command)
        channel.sendall(script.encode("utf-8"))
        channel.shutdown_write()
        out = bytearray()
        while True:
            channel.settimeout(_left(deadline))
            chunk = channel.recv(65536)
            if not chunk:
                break
            out += chunk
        err = bytearray()
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(65536)
        if not channel.status_event.wait(_left(deadline)):
            raise TimeoutError
        status = channel.exit_status
    except TimeoutError as exc:
        raise RemoteError(target, "timeout", "the status probe did not answer in time") from exc
    except Exception as exc:  # paramiko raises SSHException, EOFError, OSError
        raise RemoteError(target, "network", f"SSH channel failed: {exc}") from exc
    if status != 0:
        text = err.decode("utf-8", "replace").strip()[-300:]
        fix = "install python3 on the host" if status == 127 else ""
        if target.become and "password" in text:
            fix = f"allow {target.user} passwordless sudo, or connect as root"
        raise RemoteError(target, "command", f"status probe exited {status}: {text}", fix)
    return bytes(out)
