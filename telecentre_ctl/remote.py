"""One SSH connection to a host with paramiko: host keys verified, never added.

Where and how to connect comes from the host's inventory variables, read as Ansible reads
them (telecentre_ctl.connection): address, port, user, keys, ProxyJump hops (each one an
SSH connection whose direct-tcpip channel carries the next) or a ProxyCommand, and the
known_hosts files (tc_known_hosts_file, as the lab writes, else the ssh arguments', else
~/.ssh/known_hosts). A host, or a hop, whose key is not in those files, or differs from
them, is refused (paramiko's RejectPolicy).

Every step has a deadline (time.monotonic() value): a host that is down or slow costs at
most the caller's timeout, whatever step it stalls in.
"""

from __future__ import annotations

import shlex
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from telecentre_ctl.connection import Connection, Endpoint
from telecentre_ctl.errors import HostUnreachable

if TYPE_CHECKING:
    import paramiko


class RemoteError(HostUnreachable):
    """The host could not be reached or did not answer in time; `reason` is one word
    (timeout, refused, network, hostkey, auth, command) for machines."""

    def __init__(self, target: Endpoint, reason: str, message: str, fix: str = "") -> None:
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


def _host_keys_for(target: Endpoint, known: Path) -> dict[str, Any]:
    """The keys a known_hosts file lists for this host, by key type."""
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


@dataclass
class Session:
    """An authenticated SSH connection to the host, and those to the hops it goes through."""

    client: paramiko.SSHClient
    hops: list[paramiko.SSHClient] = field(default_factory=list)

    def close(self) -> None:
        for client in [self.client, *reversed(self.hops)]:
            client.close()


def connect(target: Connection, deadline: float) -> Session:
    """An authenticated SSH session, or RemoteError. Host keys from known_hosts only."""
    for hop in (*target.jumps, target):
        _known_files(hop, target)  # before any connection: a missing file is a setup mistake
    hops: list[paramiko.SSHClient] = []
    try:
        if target.proxy_command is not None:
            sock: Any = _proxy_command(target)
        else:
            first = target.jumps[0] if target.jumps else target
            sock = _tcp(first, deadline)
            for i, hop in enumerate(target.jumps):
                hops.append(_handshake(hop, sock, deadline, target))
                after = target.jumps[i + 1] if i + 1 < len(target.jumps) else target
                sock = _channel(hops[-1], hop, after, deadline, target)
        return Session(_handshake(target, sock, deadline, target), hops)
    except BaseException:
        for client in reversed(hops):
            client.close()
        raise


def _via(hop: Endpoint, target: Endpoint) -> str:
    return "" if hop is target else f" (jump host {hop.name} on the way to {target.name})"


def _tcp(hop: Endpoint, deadline: float) -> socket.socket:
    try:
        return socket.create_connection((hop.address, hop.port), timeout=_left(deadline))
    except TimeoutError as err:
        raise RemoteError(
            hop, "timeout", "no answer (connection timed out)", "check it is on and on the network"
        ) from err
    except ConnectionRefusedError as err:
        raise RemoteError(
            hop, "refused", f"SSH port {hop.port} refused", "check that sshd runs"
        ) from err
    except OSError as err:
        raise RemoteError(
            hop, "network", f"cannot connect: {err.strerror or err}", "check the address"
        ) from err


def _proxy_command(target: Connection) -> Any:
    import paramiko

    command = target.proxy_command_for() or ""
    try:
        # OpenSSH runs ProxyCommand with the shell; paramiko splits and runs it directly.
        return paramiko.ProxyCommand(shlex.join(["/bin/sh", "-c", f"exec {command}"]))
    except (OSError, paramiko.SSHException) as err:
        raise RemoteError(target, "network", f"ProxyCommand failed: {err}") from err


def _channel(
    client: paramiko.SSHClient, hop: Endpoint, after: Endpoint, deadline: float, target: Endpoint
) -> Any:
    """A direct-tcpip channel from `hop` to the next host's SSH port (what ssh -J does)."""
    import paramiko

    transport = client.get_transport()
    try:
        if transport is None:
            raise paramiko.SSHException("connection closed")
        return transport.open_channel(
            "direct-tcpip", (after.address, after.port), ("127.0.0.1", 0), timeout=_left(deadline)
        )
    except (paramiko.SSHException, OSError, EOFError) as err:
        raise RemoteError(
            hop,
            "network",
            f"cannot reach {after.address}:{after.port} from there: {err}{_via(hop, target)}",
            "check that the jump host reaches the host (AllowTcpForwarding in its sshd)",
        ) from err


def _known_files(hop: Endpoint, target: Endpoint) -> list[Path]:
    files = [Path(k) for k in hop.known_hosts]
    present = [k for k in files if k.is_file()]
    if not present:
        raise RemoteError(
            hop,
            "hostkey",
            f"no known_hosts file {' or '.join(map(str, files))}{_via(hop, target)}",
            "set tc_known_hosts_file in hosts.yml, or add the host's key to "
            f"~/.ssh/known_hosts (ssh-keyscan -p {hop.port} {hop.address}, then check it)",
        )
    return present


def _handshake(hop: Endpoint, sock: Any, deadline: float, target: Endpoint) -> paramiko.SSHClient:
    """SSH over `sock` to `hop`: its host key checked against its known_hosts files."""
    import paramiko

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    via = _via(hop, target)
    try:
        present = _known_files(hop, target)
    except RemoteError:
        sock.close()
        raise
    try:
        for known in present:
            for keytype, key in _host_keys_for(hop, known).items():
                client.get_host_keys().add(hop.known_hosts_name, keytype, key)
    except (OSError, paramiko.SSHException) as err:
        sock.close()
        raise RemoteError(hop, "hostkey", f"cannot read {known}: {err}{via}") from err
    pkey = _private_key(hop.key_files[0]) if len(hop.key_files) == 1 else None
    try:
        left = _left(deadline)
        client.connect(
            hop.address,
            port=hop.port,
            username=hop.user,
            pkey=pkey,
            # paramiko takes a list of files too (its stubs say str only)
            key_filename=list(hop.key_files) if hop.key_files and pkey is None else None,  # type: ignore[arg-type]
            look_for_keys=not hop.key_files,
            allow_agent=not hop.key_files,
            sock=sock,
            timeout=left,
            banner_timeout=left,
            auth_timeout=left,
            channel_timeout=left,
        )
    except paramiko.BadHostKeyException as err:
        sock.close()
        raise RemoteError(
            hop,
            "hostkey",
            f"host key differs from the one in {present[0]}: possible impostor or reinstalled "
            f"host{via}",
            "if the host was reinstalled, replace its line in the known_hosts file",
        ) from err
    except paramiko.AuthenticationException as err:
        sock.close()
        raise RemoteError(
            hop,
            "auth",
            f"SSH login as {hop.user} refused{via}",
            "check ansible_user and ansible_ssh_private_key_file in hosts.yml",
        ) from err
    except (paramiko.SSHException, OSError, EOFError) as err:
        sock.close()
        text = str(err) or type(err).__name__
        if "not found in known_hosts" in text:
            raise RemoteError(
                hop,
                "hostkey",
                f"host key unknown (not in {present[0]}){via}",
                f"add it after checking it: ssh-keyscan {hop.address} >> {present[0]}",
            ) from err
        reason = (
            "timeout" if time.monotonic() >= deadline or "timeout" in text.lower() else "network"
        )
        raise RemoteError(hop, reason, f"SSH failed: {text}{via}") from err
    return client


def run_script(
    session: Session,
    target: Connection,
    script: str,
    args: list[str],
    deadline: float,
) -> bytes:
    """Run `python3 -I -S - ARGS` with `script` on stdin; return its stdout (RemoteError if
    it fails or outlives the deadline). -I -S: no site-packages, no environment variables:
    the script needs the standard library only, and starts faster without them."""
    transport = session.client.get_transport()
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
