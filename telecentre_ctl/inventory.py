"""Ansible YAML inventories, read as Ansible reads them, without importing Ansible.

The one reader of hosts.yml: site loading (validate, plan, deploy), status and images all
see the variables Ansible would give each host. It follows ansible-core's YAML inventory
plugin and its variable precedence (tests/unit/test_inventory.py compares it with
`ansible-inventory --list`), lowest first:

  group all's vars in the file
  < the other groups' vars in the file, parents before children (then by
    ansible_group_priority, then by name)
  < group_vars/all beside the file < group_vars/<group> (same order)
  < the host's vars in the file (later mentions of a host win) < host_vars/<host>

A value replaces the one below it whole (Ansible's default hash_behaviour). Host patterns
expand as Ansible's do (`web[01:20]`, `db-[a:c]`); `box:2222` gives ansible_port. Inline
`!vault` values stay opaque text and Jinja templates are not evaluated: connection
variables must be plain values (telecentre_ctl.connection says so when they are not).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from telecentre_ctl import yamlio
from telecentre_ctl.errors import Problem

Keys = tuple[str | int, ...]
VARS_EXTENSIONS = ("", ".yml", ".yaml", ".json")
RANGE = re.compile(r"\[([a-z0-9]*):([a-z0-9]*)(?::(\d+))?\]", re.IGNORECASE)
SECTIONS = ("hosts", "vars", "children")


@dataclass(frozen=True)
class Origin:
    """Where a variable was set: file (as shown to the user), key path in it, line."""

    file: str
    keys: Keys
    doc: Any = field(default=None, compare=False, repr=False)  # the parsed file, for lines

    @property
    def line(self) -> int | None:
        """1-based line of the key (looked up only when a problem is reported)."""
        return yamlio.line_of(self.doc, self.keys) if self.doc is not None else None

    def problem(self, message: str, fix: str = "") -> Problem:
        return Problem(self.file, ".".join(str(k) for k in self.keys), message, fix, self.line)


@dataclass
class _Vars:
    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, Origin] = field(default_factory=dict)

    def set(self, name: str, value: Any, origin: Origin) -> None:
        self.values[name] = value
        self.origins[name] = origin

    def update(self, other: _Vars) -> None:
        self.values.update(other.values)
        self.origins.update(other.origins)


@dataclass
class _Group:
    name: str
    vars: _Vars = field(default_factory=_Vars)
    hosts: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    priority: int = 1


@dataclass(frozen=True)
class InventoryHost:
    name: str
    groups: tuple[str, ...]  # every group it is in, ancestors included ("all" left out)
    vars: dict[str, Any]
    origins: dict[str, Origin]


@dataclass(frozen=True)
class Inventory:
    hosts: dict[str, InventoryHost]  # in the order the file first names them
    groups: dict[str, tuple[str, ...]]  # group -> its hosts, descendants' included

    def members(self, group: str) -> tuple[str, ...] | None:
        return self.groups.get(group)


class _Reader:
    def __init__(self, raw: Any, shown: str, base_dir: Path, problems: list[Problem]) -> None:
        self.raw, self.shown, self.base_dir, self.problems = raw, shown, base_dir, problems
        self.groups: dict[str, _Group] = {"all": _Group("all"), "ungrouped": _Group("ungrouped")}
        self.host_vars: dict[str, _Vars] = {}

    def origin(self, keys: Keys, raw: Any = None, shown: str | None = None) -> Origin:
        return Origin(shown or self.shown, keys, self.raw if raw is None else raw)

    def add(self, keys: Keys, message: str, fix: str = "") -> None:
        self.problems.append(self.origin(keys).problem(message, fix))

    def group(self, name: str) -> _Group:
        if name not in self.groups:
            self.groups[name] = _Group(name)
        return self.groups[name]

    # --- the file -------------------------------------------------------------------

    def read(self) -> None:
        if not isinstance(self.raw, dict):
            self.add((), "must be an Ansible YAML inventory (a mapping of groups)",
                     "see inventory/demo/hosts.yml")  # fmt: skip
            return
        if "plugin" in self.raw:
            self.add(
                ("plugin",),
                "an inventory plugin's configuration, not a YAML inventory",
                "write the hosts as a YAML inventory (see inventory/demo/hosts.yml)",
            )
            return
        for name, data in self.raw.items():
            self.parse_group(str(name), data, (str(name),))

    def parse_group(self, name: str, data: Any, keys: Keys) -> None:
        group = self.group(name)
        if data is None:
            return
        if not isinstance(data, dict):
            self.add(keys, "a group must be a mapping (hosts:, vars:, children:)",
                     f"write {name}: {{hosts: {{box1: {{}}}}}}")  # fmt: skip
            return
        for section, value in data.items():
            where = (*keys, str(section))
            if section not in SECTIONS:
                self.add(
                    where, "unknown key in a group", "a group takes hosts:, vars: and children:"
                )
                continue
            if isinstance(value, str):
                value = {value: None}
            if value is None:
                continue
            if not isinstance(value, dict):
                kind = type(yamlio.plain(value)).__name__
                self.add(where, f"must be a mapping, not {kind}",
                         f"write {section}: {{name: ...}}")  # fmt: skip
                continue
            if section == "vars":
                for var, v in value.items():
                    if var == "ansible_group_priority":  # Ansible keeps it out of the vars
                        group.priority = _priority(v)
                        continue
                    group.vars.set(str(var), yamlio.plain(v), self.origin((*where, str(var))))
            elif section == "children":
                for child, child_data in value.items():
                    self.link(name, str(child), (*where, str(child)))
                    self.parse_group(str(child), child_data, (*where, str(child)))
            else:
                for pattern, host_data in value.items():
                    self.parse_hosts(group, pattern, host_data, (*where, str(pattern)))

    def link(self, parent: str, child: str, keys: Keys) -> None:
        if child == parent or parent in self.descendants(child):
            self.add(keys, f"group {child} inside itself (a loop of children)", "remove the loop")
            return
        if child not in self.group(parent).children:
            self.group(parent).children.append(child)
            self.group(child).parents.append(parent)

    def descendants(self, name: str) -> set[str]:
        seen: set[str] = set()
        todo = list(self.groups[name].children) if name in self.groups else []
        while todo:
            g = todo.pop()
            if g not in seen:
                seen.add(g)
                todo += self.groups[g].children
        return seen

    def parse_hosts(self, group: _Group, pattern: Any, data: Any, keys: Keys) -> None:
        if not isinstance(pattern, str):
            self.add(keys, "a host name must be text", "quote it, e.g. '10': {}")
            return
        if data is not None and not isinstance(data, dict):
            self.add(keys, "host variables must be a mapping", f"write {pattern}: {{}}")
            return
        try:
            names, port = expand_host_pattern(pattern)
        except ValueError as err:
            self.add(keys, str(err), "write ranges as web[01:10] or db-[a:f]")
            return
        for host in names:
            known = host in self.host_vars
            hv = self.host_vars.setdefault(host, _Vars())
            if port is not None and not known:
                hv.set("ansible_port", port, self.origin(keys))
            for var, v in (data or {}).items():
                hv.set(str(var), yamlio.plain(v), self.origin((*keys, str(var))))
            if host not in group.hosts:
                group.hosts.append(host)

    # --- group_vars/ and host_vars/ beside the file -----------------------------------

    def vars_files(self, kind: str, name: str) -> _Vars:
        found = _Vars()
        for path in _find_vars_files(self.base_dir / kind, name):
            shown = path.relative_to(self.base_dir).as_posix()
            data = self.load_vars_file(path, shown)
            for var, value in data.items():
                found.set(str(var), yamlio.plain(value), self.origin((str(var),), data, shown))
        return found

    def load_vars_file(self, path: Path, shown: str) -> Any:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            self.problems.append(Problem(shown, "", f"cannot read it: {err}", "fix the file"))
            return {}
        if text.startswith("$ANSIBLE_VAULT"):
            self.problems.append(Problem(
                shown, "", "is vault-encrypted: telecentre-ctl reads inventory variables as text",
                "keep it in clear and encrypt single values (ansible-vault encrypt_string), "
                "or put the site's secrets in secrets.yml",
            ))  # fmt: skip
            return {}
        if all(not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()):
            return {}
        try:
            data = yamlio.load(path, shown)
        except yamlio.YamlProblem as err:
            self.problems.append(err.problem)
            return {}
        if not isinstance(data, dict):
            self.problems.append(
                Problem(shown, "", "must be a mapping of variables", "write name: value")
            )
            return {}
        return data

    # --- the result -----------------------------------------------------------------

    def result(self) -> Inventory:
        for name, group in self.groups.items():
            if name != "all" and not group.parents:
                self.link("all", name, ())
        for host in self.host_vars:
            if not any(host in g.hosts for n, g in self.groups.items() if n != "all"):
                self.groups["ungrouped"].hosts.append(host)
        depth = self.depths()
        files = {n: self.vars_files("group_vars", n) for n in self.groups}
        hosts: dict[str, InventoryHost] = {}
        for host, own in self.host_vars.items():
            groups = sorted(
                (g for g in self.ancestors_of(host) if g != "all"),
                key=lambda g: (depth[g], self.priority(g), g),
            )
            merged = _Vars()
            for layer in (
                self.groups["all"].vars,
                *(self.groups[g].vars for g in groups),
                files["all"],
                *(files[g] for g in groups),
                own,
                self.vars_files("host_vars", host),
            ):
                merged.update(layer)
            hosts[host] = InventoryHost(host, tuple(groups), merged.values, merged.origins)
        members = {name: tuple(self.hosts_of(name)) for name in self.groups}
        return Inventory(hosts, members)

    def ancestors_of(self, host: str) -> set[str]:
        found: set[str] = set()
        todo = [n for n, g in self.groups.items() if host in g.hosts]
        while todo:
            g = todo.pop()
            if g not in found:
                found.add(g)
                todo += self.groups[g].parents
        return found

    def depths(self) -> dict[str, int]:
        depth: dict[str, int] = {}

        def of(name: str) -> int:
            if name not in depth:
                parents = self.groups[name].parents
                depth[name] = 1 + max(map(of, parents)) if parents else 0
            return depth[name]

        for name in self.groups:
            of(name)
        return depth

    def priority(self, group: str) -> int:
        return self.groups[group].priority

    def hosts_of(self, name: str) -> Iterator[str]:
        seen: set[str] = set()
        todo = [name]
        while todo:
            g = self.groups[todo.pop(0)]
            for host in g.hosts:
                if host not in seen:
                    seen.add(host)
                    yield host
            todo += g.children


def read(raw: Any, shown: str, base_dir: Path, problems: list[Problem]) -> Inventory:
    """The inventory document `raw` (from yamlio.load of base_dir/shown), resolved; every
    problem found is appended to `problems` (what can be read is still returned)."""
    reader = _Reader(raw, shown, base_dir, problems)
    reader.read()
    return reader.result()


def _priority(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1


def _find_vars_files(folder: Path, name: str) -> list[Path]:
    """Ansible's lookup: the first of NAME (a file, or a folder read whole in name order),
    NAME.yml, NAME.yaml, NAME.json."""
    for ext in VARS_EXTENSIONS:
        path = folder / f"{name}{ext}"
        if path.is_dir():
            return list(_folder_files(path))
        if path.is_file():
            return [path]
    return []


def _folder_files(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if path.name.startswith(".") or path.name.endswith("~"):
            continue
        ext = path.suffix
        if path.is_dir() and not ext:
            yield from _folder_files(path)
        elif path.is_file() and (not ext or ext in VARS_EXTENSIONS):
            yield path


# --- host patterns --------------------------------------------------------------------


def expand_host_pattern(pattern: str) -> tuple[list[str], int | None]:
    """Host names and port of an inventory host key, as Ansible expands them."""
    name, port = _split_port(pattern.strip())
    return _expand_ranges(name), port


def _split_port(pattern: str) -> tuple[str, int | None]:
    bracketed = re.fullmatch(r"\[([^\]]+)\]:(\d+)", pattern)
    if bracketed and (":" in bracketed.group(1)) == _is_ipv6(bracketed.group(1)):
        return bracketed.group(1), int(bracketed.group(2))
    outside = RANGE.sub("x", pattern)
    if outside.count(":") == 1:
        head, _, tail = pattern.rpartition(":")
        if tail.isdigit():
            return head, int(tail)
    return pattern, None


def _is_ipv6(text: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(text).version == 6
    except ValueError:
        return False


def _expand_ranges(pattern: str) -> list[str]:
    found = RANGE.search(pattern)
    if not found:
        return [pattern]
    head, tail = pattern[: found.start()], pattern[found.end() :]
    start, end, stride = found.group(1), found.group(2), int(found.group(3) or 1)
    if not end:
        raise ValueError(f"host range {found.group(0)} has no end")
    if stride < 1:
        raise ValueError(f"host range {found.group(0)} has a stride below 1")
    if start.isdigit() or not start:
        if not end.isdigit():
            raise ValueError(f"host range {found.group(0)} mixes digits and letters")
        width = len(start) if start.startswith("0") and len(start) > 1 else 0
        values = [str(i).zfill(width) for i in range(int(start or 0), int(end) + 1, stride)]
    else:
        letters = string.ascii_letters
        if len(start) != 1 or len(end) != 1 or end not in letters:
            raise ValueError(f"host range {found.group(0)}: letters go one at a time, e.g. [a:f]")
        values = list(letters[letters.index(start) : letters.index(end) + 1 : stride])
    if not values:
        raise ValueError(f"host range {found.group(0)} is empty")
    return [f"{head}{v}{rest}" for v in values for rest in _expand_ranges(tail)]
