"""The inventory as Ansible reads it: telecentre_ctl.inventory against `ansible-inventory
--list` (the oracle), the connection view against Ansible's ssh plugin and `ssh -G`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from telecentre_ctl import connection, inventory, yamlio
from telecentre_ctl.errors import InvalidInput, Problem
from telecentre_ctl.paths import PLAYBOOKS_DIR
from telecentre_ctl.site import load_site
from tests.conftest import MakeSite

BIN = Path(sys.executable).parent

NESTED = """
all:
  vars: {a: all, b: all, ansible_user: fromall, tc_ram_gb: 4}
  children:
    fleet:
      vars: {a: fleet, c: fleet}
      children:
        telecentre:
          vars: {c: tc, d: tc}
          hosts:
            box1: {d: host}
            box[2:3]:
            "10.0.0.9:2200": {}
            web[08:10:2].lan: {w: 1}
          children:
            north:
              vars: {c: north, ansible_port: 2201}
              hosts:
                box4:
                box1: {e: second}
    zeta:
      vars: {z: zeta, c: zeta, ansible_group_priority: 5}
      hosts:
        box2:
    alpha:
      vars: {c: alpha, y: alpha}
      hosts:
        box2:
        box3:
    beta:
      vars: {c: beta, y: beta, ansible_group_priority: 0}
      hosts:
        box3:
other:
  hosts:
    bastion: {ansible_host: 192.0.2.1, ansible_ssh_user: jump}
    "[2001:db8::7]:2222":
    host-[a:c]:
"""

FILES = {
    "group_vars/all.yml": "b: gv_all\na: gv_all\n",
    "group_vars/north/10.yml": "c: gv_north\nn: 10\n",
    "group_vars/north/20.yaml": "c: gv_north2\n",
    "group_vars/north/.hidden.yml": "c: hidden\n",
    "group_vars/north/notes.txt": "c: not vars\n",
    "group_vars/zeta": "z: gv_zeta  # a file without extension\n",
    "group_vars/telecentre.json": '{"d": "gv_tc", "j": [1, 2]}',
    "group_vars/ungrouped.yml": "# nothing yet\n",
    "host_vars/box3.yml": "ansible_ssh_user: hv\n",
    "host_vars/box4/main.yml": "d: hv4\n",
}

TOP_LEVEL = """
telecentre:
  vars: {ansible_user: admin}
  hosts:
    one: {ansible_host: 192.0.2.20}
    two: {ansible_user: root}
  children:
    extra:
      hosts:
        three:
lonely:
"""


def write_inventory(folder: Path, text: str, files: dict[str, str]) -> Path:
    for name, body in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(body)
    (folder / "hosts.yml").write_text(text)
    return folder / "hosts.yml"


def ansible_inventory(path: Path) -> dict[str, Any]:
    cfg = path.parent / "ansible.cfg"
    cfg.write_text("[defaults]\n")  # Ansible's defaults: only host_group_vars as vars plugin
    out = subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", str(path), "--list"],
        capture_output=True, text=True, check=True, cwd=path.parent,
        env={**os.environ, "ANSIBLE_CONFIG": str(cfg)},
    ).stdout  # fmt: skip
    return json.loads(out)  # type: ignore[no-any-return]


def ours(path: Path) -> inventory.Inventory:
    problems: list[Problem] = []
    found = inventory.read(yamlio.load(path, path.name), path.name, path.parent, problems)
    assert problems == []
    return found


def flattened(listing: dict[str, Any], group: str) -> set[str]:
    entry = listing.get(group, {})
    hosts = set(entry.get("hosts", []))
    for child in entry.get("children", []):
        hosts |= flattened(listing, child)
    return hosts


@pytest.mark.parametrize(
    ("text", "files"), [(NESTED, FILES), (TOP_LEVEL, {})], ids=["nested", "top"]
)
def test_variables_and_groups_are_ansibles(
    tmp_path: Path, text: str, files: dict[str, str]
) -> None:
    path = write_inventory(tmp_path, text, files)
    oracle = ansible_inventory(path)
    mine = ours(path)
    assert {h: v.vars for h, v in mine.hosts.items()} == oracle["_meta"]["hostvars"]
    groups = {g for g in oracle if g != "_meta"}
    for group in groups:
        assert set(mine.members(group) or ()) == flattened(oracle, group), group


def test_the_playbooks_have_no_vars_folders_of_their_own() -> None:
    """Ansible also reads group_vars/ and host_vars/ beside the playbook; the resolver
    does not, so there must be none."""
    assert not (PLAYBOOKS_DIR / "group_vars").exists()
    assert not (PLAYBOOKS_DIR / "host_vars").exists()


def test_members_keep_the_files_order_own_hosts_first(tmp_path: Path) -> None:
    mine = ours(write_inventory(tmp_path, NESTED, FILES))
    assert mine.members("telecentre") == (
        "box1", "box2", "box3", "10.0.0.9", "web08.lan", "web10.lan", "box4",
    )  # fmt: skip


def test_each_variable_knows_where_it_was_set(tmp_path: Path) -> None:
    mine = ours(write_inventory(tmp_path, NESTED, FILES))
    box1, box4 = mine.hosts["box1"], mine.hosts["box4"]
    assert box1.origins["e"].keys == ("all", "children", "fleet", "children", "telecentre",
                                      "children", "north", "hosts", "box1", "e")  # fmt: skip
    assert (
        box1.origins["e"].line == NESTED.splitlines().index("                box1: {e: second}") + 1
    )
    assert box1.origins["c"].file == "group_vars/north/20.yaml"
    assert box4.origins["d"].file == "host_vars/box4/main.yml"
    assert box4.origins["tc_ram_gb"].keys == ("all", "vars", "tc_ram_gb")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("telecentre: [a, b]\n", "a group must be a mapping"),
        ("telecentre:\n  host:\n    a:\n", "unknown key in a group"),
        ("telecentre:\n  vars: [a]\n", "must be a mapping, not list"),
        ("telecentre:\n  hosts:\n    a: 3\n", "host variables must be a mapping"),
        ("telecentre:\n  hosts:\n    web[3:]:\n", "has no end"),
        ("telecentre:\n  children:\n    x:\n      children:\n        telecentre:\n", "loop"),
        ("plugin: aws_ec2\n", "inventory plugin"),
    ],
)
def test_broken_inventories_are_named_problems(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "hosts.yml"
    path.write_text(text)
    problems: list[Problem] = []
    inventory.read(yamlio.load(path, "hosts.yml"), "hosts.yml", tmp_path, problems)
    assert any(needle in p.message and p.file == "hosts.yml" for p in problems), problems


def test_an_encrypted_vars_file_is_refused_by_name(tmp_path: Path) -> None:
    path = write_inventory(
        tmp_path,
        "telecentre:\n  hosts:\n    a:\n",
        {"group_vars/all.yml": "$ANSIBLE_VAULT;1.1;AES256\n6162\n"},
    )
    problems: list[Problem] = []
    inventory.read(yamlio.load(path, "hosts.yml"), "hosts.yml", tmp_path, problems)
    assert [p.file for p in problems] == ["group_vars/all.yml"]
    assert "vault-encrypted" in problems[0].message


# --- the site sees the same: group vars, child groups, problems where the value is -----


def test_the_site_takes_its_hosts_and_variables_from_the_resolver(make_site: MakeSite) -> None:
    hosts = {
        "all": {
            "vars": {"tc_ram_gb": 8, "ansible_user": "admin"},
            "children": {
                "telecentre": {
                    "vars": {
                        "tc_services": ["webdav", "radicale", "dokuwiki", "fava", "pads", "polls"]
                    },
                    "hosts": {"box1": {"ansible_host": "192.0.2.5"}},
                    "children": {"annex": {"hosts": {"box2": {"tc_services": ["radicale"]}}}},
                },
            },
        }
    }
    apps = {"webdav": {}, "radicale": {}, "dokuwiki": {}, "fava": {}, "pads": {}, "polls": {}}
    site = load_site(make_site(site={"services": apps}, hosts=hosts, secrets=False),
                     check_secrets=False)  # fmt: skip
    assert [h.name for h in site.hosts] == ["box1", "box2"]
    assert site.ram_gb(site.hosts[1]) == 8
    assert site.hosts[0].connection.user == "admin" and site.hosts[0].address == "192.0.2.5"
    assert site.services_on("box2")[-1] != "webdav"


def test_a_bad_group_variable_is_reported_in_its_file(make_site: MakeSite) -> None:
    site_dir = make_site(hosts={"telecentre": {"hosts": {"box1": {}, "box2": {}}}}, secrets=False)
    (site_dir / "group_vars").mkdir()
    (site_dir / "group_vars" / "telecentre.yml").write_text("x: 1\ntc_ram_gb: lots\n")
    with pytest.raises(InvalidInput) as err:
        load_site(site_dir, check_secrets=False)
    found = [p for p in err.value.problems if p.key == "tc_ram_gb"]
    assert [(p.file, p.line) for p in found] == [("group_vars/telecentre.yml", 2)] * 2


def test_a_bad_port_is_reported_where_it_is_set(make_site: MakeSite) -> None:
    site_dir = make_site(
        hosts={"telecentre": {"vars": {"ansible_port": "ssh"}, "hosts": {"box1": {}}}},
        secrets=False,
    )
    with pytest.raises(InvalidInput) as err:
        load_site(site_dir, check_secrets=False)
    (problem,) = err.value.problems
    assert problem.key == "telecentre.vars.ansible_port" and "not a TCP port" in problem.message


# --- connection variables: Ansible's ssh plugin decides which name wins ----------------

ALIASES = [
    {
        "ansible_user": "u1",
        "ansible_ssh_user": "u2",
        "ansible_port": 2201,
        "ansible_ssh_port": 2202,
    },
    {"ansible_ssh_user": "u2", "ansible_ssh_port": "2202", "ansible_ssh_host": "192.0.2.3"},
    {"ansible_host": "192.0.2.4", "ansible_ssh_host": "192.0.2.5", "ansible_user": "u1"},
    {"ansible_private_key_file": "/k1", "ansible_ssh_private_key_file": "/k2"},
    {"ansible_ssh_private_key_file": "~/k3"},
    {},
]


@pytest.mark.parametrize("host_vars", ALIASES)
def test_connection_variables_follow_ansibles_ssh_plugin(host_vars: dict[str, Any]) -> None:
    from ansible.playbook.play_context import PlayContext
    from ansible.plugins.loader import connection_loader

    plugin = connection_loader.get("ssh", PlayContext(), None)
    plugin.set_options(var_options={"inventory_hostname": "box", **host_vars})
    mine = connection.of("box", host_vars)
    assert mine.address == plugin.get_option("host")
    assert mine.port == int(plugin.get_option("port") or 22)
    assert mine.user == (plugin.get_option("remote_user") or connection.getpass.getuser())
    key = plugin.get_option("private_key_file")
    assert mine.key_files == ((os.path.expanduser(key),) if key else ())


# --- ssh arguments: OpenSSH (`ssh -G`) decides what they mean ---------------------------

ARGS = [
    {"ansible_ssh_common_args": "-o ProxyJump=jump@192.0.2.1:2022 -o User=ignored",
     "ansible_user": "first"},
    {"ansible_ssh_common_args": "-J 192.0.2.1,admin@192.0.2.2 -p 2200 -o UserKnownHostsFile=/kh"},
    {"ansible_ssh_extra_args": "-o 'ProxyCommand=nc -X connect %h %p' -o ProxyJump=no@where",
     "ansible_ssh_common_args": "-l bob -oPort=2300 -i KEYS/k1",
     "ansible_ssh_private_key_file": "KEYS/k0"},
    {"ansible_ssh_args": "-o Port=2400 -C", "ansible_port": 2500,
     "ansible_ssh_common_args": "-o HostName=192.0.2.9 -o 'UserKnownHostsFile /a /b'"},
    {"ansible_ssh_common_args": "-o ProxyJump=none -o ProxyCommand=none"},
]  # fmt: skip


def ssh_g(argv: list[str]) -> dict[str, list[str]]:
    out = subprocess.run(
        ["ssh", "-G", "-F", "none", *argv[1:]], capture_output=True, text=True, check=True
    ).stdout
    seen: dict[str, list[str]] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        seen.setdefault(key, []).append(value)
    return seen


@pytest.mark.parametrize("host_vars", ARGS)
def test_ssh_arguments_mean_what_openssh_reads(tmp_path: Path, host_vars: dict[str, Any]) -> None:
    """`ssh -G` resolves the very argv Ansible would build (options in Ansible's order)."""
    for key in ("k0", "k1"):  # ssh drops a -i file that does not exist
        (tmp_path / key).write_text("")
    host_vars = {k: str(v).replace("KEYS", str(tmp_path)) for k, v in host_vars.items()}
    mine = connection.of("box", host_vars)
    bare = connection.of("box", {**host_vars, "tc_known_hosts_file": None})
    g = ssh_g(["ssh", *bare.options, bare.address])
    assert mine.address == g["hostname"][0]
    assert mine.port == int(g["port"][0])
    assert mine.user == g["user"][0]
    assert list(mine.key_files) == [k for k in g.get("identityfile", []) if not k.startswith("~")]
    assert " ".join(mine.known_hosts) == " ".join(
        os.path.expanduser(k) for k in g["userknownhostsfile"][0].split()
    )
    jump = g.get("proxyjump", [None])[0]
    command = g.get("proxycommand", [None])[0]
    if mine.jumps:
        assert jump is not None and command is None
        assert [(h.address, h.port) for h in mine.jumps] == [_hop_of(p) for p in jump.split(",")]
    else:
        assert jump in (None, "none")
    assert mine.proxy_command == (None if command in (None, "none") else command)


def _hop_of(part: str) -> tuple[str, int]:
    """A hop as `ssh -G` prints it: [user@]host[:port], the host maybe in brackets."""
    host = part.rpartition("@")[2]
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name, int(rest[1:] or 22)
    name, _, port = host.partition(":")
    return name, int(port or 22)


def test_tc_known_hosts_file_comes_first_for_our_connections() -> None:
    mine = connection.of(
        "box",
        {"tc_known_hosts_file": "/lab/kh", "ansible_ssh_common_args": "-o UserKnownHostsFile=/x"},
    )
    assert mine.known_hosts == ("/lab/kh",)
    g = ssh_g(mine.ssh_argv("true"))
    assert g["userknownhostsfile"] == ["/lab/kh"]


def test_a_jump_host_of_the_inventory_is_reached_with_its_own_variables() -> None:
    every = {
        "bastion": {"ansible_host": "192.0.2.1", "ansible_user": "jumper",
                    "ansible_ssh_private_key_file": "/keys/b", "tc_known_hosts_file": "/kh/b"},
        "box": {"ansible_ssh_common_args": "-J 192.0.2.1,carol@elsewhere:2022",
                "ansible_ssh_private_key_file": "/keys/box", "tc_known_hosts_file": "/kh/box"},
    }  # fmt: skip
    mine = connection.of("box", every["box"], every)
    first, second = mine.jumps
    assert (first.name, first.user, first.key_files, first.known_hosts) == (
        "bastion", "jumper", ("/keys/b",), ("/kh/b",),
    )  # fmt: skip
    assert (second.address, second.port, second.user) == ("elsewhere", 2022, "carol")
    assert second.key_files == ("/keys/box",) and second.known_hosts == ("/kh/box",)
    # OpenSSH gets the same hops, each with its keys and known_hosts, as one ProxyCommand
    g = ssh_g(mine.ssh_argv("true"))
    assert "jumper" in g["proxycommand"][0] and "/kh/b" in g["proxycommand"][0]
    assert "[elsewhere]:2022" in g["proxycommand"][0]


@pytest.mark.parametrize(
    ("host_vars", "var"),
    [
        ({"ansible_host": "{{ inventory_hostname }}.lan"}, "ansible_host"),
        ({"ansible_ssh_common_args": "-o 'ProxyJump=x"}, "ansible_ssh_common_args"),
        ({"ansible_ssh_extra_args": "box"}, "ansible_ssh_extra_args"),
        ({"ansible_ssh_port": 70000}, "ansible_ssh_port"),
    ],
)
def test_unusable_connection_variables_are_named(host_vars: dict[str, Any], var: str) -> None:
    with pytest.raises(connection.ConnectionProblem) as err:
        connection.of("box", host_vars)
    assert err.value.var == var and err.value.fix


def test_lab_inventory_round_trip(tmp_path: Path) -> None:
    """What `lab up` writes is read back with the lab's key and known_hosts."""
    text = yaml.safe_dump({"all": {"children": {"telecentre": {"hosts": {"lab-1": {
        "ansible_host": "10.213.1.2", "ansible_user": "root",
        "ansible_ssh_private_key_file": "/lab/key",
        "ansible_ssh_common_args": "-o UserKnownHostsFile=/lab/kh -o StrictHostKeyChecking=yes",
        "tc_known_hosts_file": "/lab/kh"}}}}}})  # fmt: skip
    mine = ours(write_inventory(tmp_path, text, {}))
    reach = connection.of("lab-1", mine.hosts["lab-1"].vars)
    assert (reach.address, reach.port, reach.user) == ("10.213.1.2", 22, "root")
    assert reach.key_files == ("/lab/key",) and reach.known_hosts == ("/lab/kh",)
