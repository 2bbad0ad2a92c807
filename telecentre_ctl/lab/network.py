"""Address plan and plumbing: one bridge and one /24 per site, a veth and netns per host.

10.213.0.0/16 belongs to the lab. Site number S (1-254) gets 10.213.S.0/24 with the
machine at .1 on bridge tcl<S>br; host i is 10.213.S.(10+i) in netns tclab-<host> with a
veth tcl<S>h<i>. One nft table per site masquerades what leaves the /24. Every name
carries the tcl prefix and is recorded in the site's state, so `down` removes only these.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from pathlib import Path

from telecentre_ctl.errors import OperationFailed
from telecentre_ctl.lab.system import run

LAB_RANGE = "10.213.0.0/16"
MAX_SITES = 254
MAX_HOSTS = 200


@dataclass(frozen=True)
class SiteNet:
    index: int

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"10.213.{self.index}.0/24")

    @property
    def gateway(self) -> str:
        return f"10.213.{self.index}.1"

    @property
    def bridge(self) -> str:
        return f"tcl{self.index}br"

    @property
    def nft_table(self) -> str:
        return f"telecentre_lab_{self.index}"

    def address(self, number: int) -> str:
        return f"10.213.{self.index}.{10 + number}"

    def veth(self, number: int) -> str:
        return f"tcl{self.index}h{number}"


def netns_name(host: str) -> str:
    return f"tclab-{host}"


def netns_path(host: str) -> Path:
    return Path("/run/netns") / netns_name(host)


def link_exists(name: str) -> bool:
    return run(["ip", "link", "show", "dev", name], check=False).returncode == 0


def nft_table_exists(table: str) -> bool:
    return run(["nft", "list", "table", "ip", table], check=False).returncode == 0


def create_site_net(net: SiteNet) -> None:
    delete_site_net(net)  # a crash may have left them: start clean
    run(["ip", "link", "add", net.bridge, "type", "bridge"])
    run(["ip", "addr", "add", f"{net.gateway}/24", "dev", net.bridge])
    run(["ip", "link", "set", net.bridge, "up"])
    subnet = str(net.subnet)
    rules = f"""
table ip {net.nft_table} {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {subnet} ip daddr != {subnet} masquerade
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname "{net.bridge}" accept
        oifname "{net.bridge}" ct state established,related accept
    }}
}}
"""
    run(["nft", "-f", "-"], input_text=rules)


def delete_site_net(net: SiteNet) -> None:
    if nft_table_exists(net.nft_table):
        run(["nft", "delete", "table", "ip", net.nft_table])
    if link_exists(net.bridge):
        run(["ip", "link", "del", net.bridge])


def create_host_net(net: SiteNet, host: str, number: int) -> None:
    delete_host_net(net, host, number)
    ns, veth = netns_name(host), net.veth(number)
    run(["ip", "netns", "add", ns])
    run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
    run(["ip", "link", "set", veth, "master", net.bridge, "up"])
    commands = [
        "link set lo up",
        f"addr add {net.address(number)}/24 dev eth0",
        "link set eth0 up",
        f"route add default via {net.gateway}",
    ]
    run(["ip", "-n", ns, "-batch", "-"], input_text="\n".join(commands) + "\n")


def delete_host_net(net: SiteNet, host: str, number: int) -> None:
    if netns_path(host).exists():
        run(["ip", "netns", "del", netns_name(host)])
    # Deleting the netns destroys the veth pair too, asynchronously: wait, then make sure.
    veth = net.veth(number)
    deadline = time.monotonic() + 2
    while link_exists(veth) and time.monotonic() < deadline:
        time.sleep(0.02)
    if link_exists(veth):
        run(["ip", "link", "del", veth], check=False)
    if link_exists(veth):
        raise OperationFailed(
            f"cannot remove the lab's network interface {veth}",
            fix=f"remove it by hand (ip link del {veth}), then run lab down again",
        )
