"""How to reach a host over SSH, from its inventory variables, as Ansible's ssh connection
(OpenSSH) would: one view for status (paramiko, telecentre_ctl.remote) and images (ssh).

Ansible builds `ssh [ansible_ssh_args] -o Port= -o IdentityFile= -o User= [common args]
[extra args] HOST`, and OpenSSH keeps the first value it sees of an option. So, with
either name of each variable (the later name of a pair wins, as in Ansible):
  address   ansible_host / ansible_ssh_host, else the inventory name (-o HostName wins)
  port      -o Port in ansible_ssh_args, else ansible_port / ansible_ssh_port, else the
            args' Port (or -p), else 22
  user      likewise with ansible_user / ansible_ssh_user, User (or -l), the local user
  key       ansible_private_key_file / ansible_ssh_private_key_file, then IdentityFile/-i
  proxy     ProxyJump (or -J) or ProxyCommand in the args, whichever comes first
  host keys tc_known_hosts_file (telecentre-ctl's own connections check it first), else
            UserKnownHostsFile in the args, else ~/.ssh/known_hosts
ssh_config files are not read. A ProxyJump hop that is also in the inventory (by name or
address) is reached with its own inventory variables (the spec's user and port win);
another one with the spec's user and port and the target's keys and known_hosts.
"""

from __future__ import annotations

import getpass
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
# OpenSSH's options that take an argument (ssh -h), besides those read below.
ARG_FLAGS = set("BbcDEeFIiJLlmOoPpQRSWw")


class ConnectionProblem(ValueError):
    """A connection variable that cannot be used; `var` names it."""

    def __init__(self, var: str, message: str, fix: str) -> None:
        super().__init__(message)
        self.var, self.message, self.fix = var, message, fix


@dataclass(frozen=True)
class Endpoint:
    """One SSH hop: where, as whom, with which keys, checked against which known_hosts."""

    name: str
    address: str
    port: int
    user: str
    key_files: tuple[str, ...]
    known_hosts: tuple[str, ...]

    @property
    def known_hosts_name(self) -> str:
        """How OpenSSH names this host in known_hosts."""
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"


@dataclass(frozen=True)
class Connection(Endpoint):
    jumps: tuple[Endpoint, ...] = ()  # ProxyJump hops, first one first
    proxy_command: str | None = None  # ProxyCommand with %h %p %r %n %% still in
    options: tuple[str, ...] = ()  # OpenSSH options, in Ansible's order (for ssh argv)
    become: bool = False

    def ssh_argv(self, *command: str, first: tuple[str, ...] = ()) -> list[str]:
        """`ssh` as Ansible runs it, plus `first` options, the known_hosts files above, and
        ProxyJump hops reached as status reaches them (OpenSSH keeps the first value of
        an option: these come before the inventory's)."""
        ours = [*first, "-o", f"UserKnownHostsFile={' '.join(self.known_hosts)}"]
        if self.jumps:  # (OpenSSH refuses -J beside a ProxyCommand: it is left out)
            ours += ["-o", f"ProxyCommand={self._jump_command()}"]
            return ["ssh", *ours, *_without_jumps(self.options), self.address, *command]
        return ["ssh", *ours, *self.options, self.address, *command]

    def _jump_command(self) -> str:
        """ssh -W through each hop in turn: the ProxyCommand OpenSSH's own -J amounts to,
        with each hop's keys and known_hosts."""
        via = ""
        for i, hop in enumerate(self.jumps):
            after = self.jumps[i + 1] if i + 1 < len(self.jumps) else self
            words = ["ssh", "-o", "BatchMode=yes"]
            if via:
                words += ["-o", f"ProxyCommand={via}"]
            words += ["-o", f"UserKnownHostsFile={' '.join(hop.known_hosts)}"]
            for key in hop.key_files:
                words += ["-o", "IdentitiesOnly=yes", "-i", key]
            words += ["-p", str(hop.port), "-l", hop.user]
            words += ["-W", f"[{after.address}]:{after.port}", hop.address]
            via = shlex.join(words)
        return via

    def proxy_command_for(self) -> str | None:
        if self.proxy_command is None:
            return None
        tokens = {"%h": self.address, "%p": str(self.port), "%r": self.user, "%n": self.name}
        out, text = [], self.proxy_command
        i = 0
        while i < len(text):
            pair = text[i : i + 2]
            if pair == "%%":
                out.append("%")
                i += 2
            elif pair in tokens:
                out.append(tokens[pair])
                i += 2
            else:
                out.append(text[i])
                i += 1
        return "".join(out)


def _without_jumps(options: tuple[str, ...]) -> list[str]:
    kept: list[str] = []
    skip = False
    for i, word in enumerate(options):
        if skip:
            skip = False
            continue
        if word == "-J" or (word == "-o" and i + 1 < len(options) and _is_jump(options[i + 1])):
            skip = True
        elif not (word.startswith("-J") or (word.startswith("-o") and _is_jump(word[2:]))):
            kept.append(word)
    return kept


def _is_jump(option: str) -> bool:
    return option.strip().lower().replace(" ", "=").startswith("proxyjump=")


def _last(host_vars: Mapping[str, Any], *names: str) -> tuple[str, Any] | None:
    """The variable Ansible uses when several names mean the same: the last one set."""
    found = None
    for name in names:
        if host_vars.get(name) is not None:
            found = (name, host_vars[name])
    return found


def _text(var: str, value: Any) -> str:
    text = str(value)
    if "{{" in text or "{%" in text:
        raise ConnectionProblem(
            var,
            "is a Jinja template: telecentre-ctl reads connection variables as plain values",
            f"write {var} as a plain value",
        )
    return text


def _split(var: str, value: Any) -> list[str]:
    try:
        return [w.strip() for w in shlex.split(_text(var, value)) if w.strip()]
    except ValueError as err:
        raise ConnectionProblem(
            var, f"cannot be split like a shell line: {err}", "balance the quotes"
        ) from err


def _options(argv: list[str], var: str) -> list[tuple[str, str]]:
    """(option, value) pairs of OpenSSH arguments, option names lower-cased."""
    short = {"p": "port", "l": "user", "i": "identityfile", "J": "proxyjump"}
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        if not word.startswith("-") or len(word) < 2:
            raise ConnectionProblem(var, f"{word!r} is not an ssh option", "pass only ssh options")
        flag, rest = word[1], word[2:]
        if flag not in ARG_FLAGS:
            continue  # -C, -4, -A, ... : nothing to do with where or as whom
        if not rest:
            if i >= len(argv):
                raise ConnectionProblem(var, f"{word} needs a value", f"write {word} VALUE")
            rest = argv[i]
            i += 1
        if flag == "o":
            key, sep, value = rest.partition("=")
            if not sep:
                key, _, value = rest.partition(" ")
            pairs.append((key.strip().lower(), value.strip()))
        elif flag in short:
            pairs.append((short[flag], rest))
    return pairs


def _int_port(var: str, value: Any) -> int:
    try:
        port = int(str(value))
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise ConnectionProblem(var, f"{value!r} is not a TCP port", "write a port from 1 to 65535")
    return port


def of(
    name: str,
    host_vars: Mapping[str, Any],
    inventory: Mapping[str, Mapping[str, Any]] | None = None,
) -> Connection:
    """The connection to host `name`; `inventory` (name -> vars of every inventory host)
    lets a ProxyJump hop that is an inventory host be reached with its own variables."""
    return _direct(name, host_vars, inventory or {})


def _direct(
    name: str,
    host_vars: Mapping[str, Any],
    inventory: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    jumps: bool = True,
) -> Connection:
    argv: list[tuple[str, list[str]]] = []
    if (found := _last(host_vars, "ansible_ssh_args")) is not None:
        argv.append((found[0], _split(*found)))
    port_var = _last(host_vars, "ansible_port", "ansible_ssh_port")
    if port_var is not None:
        argv.append((port_var[0], ["-o", f"Port={_int_port(*port_var)}"]))
    key_var = _last(host_vars, "ansible_private_key_file", "ansible_ssh_private_key_file")
    if key_var is not None:
        key = os.path.expanduser(_text(*key_var))
        argv.append((key_var[0], ["-o", f"IdentityFile={key}"]))
    user_var = _last(host_vars, "ansible_user", "ansible_ssh_user")
    if user_var is not None:
        argv.append((user_var[0], ["-o", f"User={_text(*user_var)}"]))
    for var in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
        if host_vars.get(var):
            argv.append((var, _split(var, host_vars[var])))

    first: dict[str, tuple[str, str]] = {}  # option -> (value, variable it came from)
    keys: list[str] = []
    for var, words in argv:
        for option, value in _options(words, var):
            if option == "identityfile":
                keys.append(os.path.expanduser(value))
            elif option in ("proxyjump", "proxycommand"):
                first.setdefault("proxy", (f"{option} {value}", var))
            else:
                first.setdefault(option, (value, var))

    address_var = _last(host_vars, "ansible_host", "ansible_ssh_host")
    address = _text(*address_var) if address_var else name
    address = first["hostname"][0] if "hostname" in first else address
    port = _int_port(first["port"][1], first["port"][0]) if "port" in first else 22
    user = first["user"][0] if "user" in first else getpass.getuser()
    tc_known = host_vars.get("tc_known_hosts_file")
    if tc_known:
        known = [_text("tc_known_hosts_file", tc_known)]
    elif "userknownhostsfile" in first:
        known = first["userknownhostsfile"][0].split()
    else:
        known = list(DEFAULT_KNOWN_HOSTS)
    known_hosts = tuple(os.path.expanduser(k) for k in known)
    endpoint = Endpoint(name, address, port, user, tuple(keys), known_hosts)
    hops: tuple[Endpoint, ...] = ()
    command = None
    if "proxy" in first and jumps:
        kind, _, spec = first["proxy"][0].partition(" ")
        if spec.lower() != "none" and kind == "proxycommand":
            command = spec
        elif spec.lower() != "none":
            hops = tuple(
                _jump(_hop(h, first["proxy"][1]), endpoint, inventory or {})
                for h in spec.split(",")
            )
    become = user != "root" and str(host_vars.get("ansible_become", False)).lower() in (
        "true",
        "yes",
        "1",
    )
    return Connection(
        **vars(endpoint),
        jumps=hops,
        proxy_command=command,
        options=tuple(w for _, words in argv for w in words),
        become=become,
    )


def _hop(spec: str, var: str) -> tuple[str, str | None, int | None]:
    """One ProxyJump hop: [user@]host[:port] or ssh://[user@]host[:port]."""
    text = spec.strip().removeprefix("ssh://")
    user, _, hostport = text.rpartition("@")
    host, port = hostport, None
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        if tail.startswith(":"):
            port = _int_port(var, tail[1:])
    elif hostport.count(":") == 1:
        host, _, tail = hostport.partition(":")
        port = _int_port(var, tail)
    if not host:
        raise ConnectionProblem(
            var, f"ProxyJump {spec!r} names no host", "write ProxyJump=user@host"
        )
    return host, user or None, port


def _jump(
    hop: tuple[str, str | None, int | None],
    target: Endpoint,
    inventory: Mapping[str, Mapping[str, Any]],
) -> Endpoint:
    """A hop that is an inventory host (by name or address) is reached with its own
    variables (the spec's user and port win); another with the target's keys and
    known_hosts."""
    host, user, port = hop
    for other, other_vars in inventory.items():
        address = _last(other_vars, "ansible_host", "ansible_ssh_host")
        if other != target.name and host in (other, str(address[1] if address else other)):
            mine = _direct(other, other_vars, jumps=False)
            return Endpoint(
                other,
                mine.address,
                port or mine.port,
                user or mine.user,
                mine.key_files or target.key_files,
                mine.known_hosts,
            )
    return Endpoint(
        host, host, port or 22, user or getpass.getuser(), target.key_files, target.known_hosts
    )
