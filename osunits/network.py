"""Addressing of the per-host service network: pure functions over the model.

Every host has a bridge (``osunits0``) holding the subnet's first address; each
private-network service gets its own network namespace joined to it by a veth
pair, with an address that depends only on the service's name: the CRC-32 of the
name picks a slot, collisions move to the next free slot in name order.  So an
address does not change when other services come and go, unless two names
collide; ``address:`` pins one.  The same subnet is reused on every host: traffic
between hosts goes through the hosts' own addresses and published ports.
"""

from __future__ import annotations

import zlib
from ipaddress import IPv4Address, ip_address

from osunits.errors import Problem
from osunits.model import Deployment, Host, Network, NetworkMode

NETNS_PREFIX = "osunits-"


def netns_name(service: str) -> str:
    return NETNS_PREFIX + service


def veth_name(service: str) -> str:
    """The host side of a service's veth: at most 15 bytes (IFNAMSIZ), unique by CRC."""
    return f"vo-{service[:6]}{zlib.crc32(service.encode()) & 0xFFFFFF:06x}"


def mac_of(address: str) -> str:
    """The MAC of a service's side of its veth: locally administered, and fixed by its
    address as the address is by its name.  A random one at each start left the
    neighbour entries of running peers (and the host's) pointing at the old MAC, and
    the service unreachable until they expired (about 50 s)."""
    return "02:6f:" + ":".join(f"{b:02x}" for b in IPv4Address(address).packed)


def listen_address(address: str, port: int) -> str:
    """A socket unit's ``ListenStream=`` for one address: ``ADDR:PORT``, IPv6 in brackets
    (systemd.socket(5))."""
    return f"[{address}]:{port}" if ip_address(address).version == 6 else f"{address}:{port}"


def allocate(host: Host, net: Network, problems: list[Problem]) -> dict[str, IPv4Address]:
    """Service → address on ``host``'s bridge, for its private-network services."""
    first = int(net.subnet.network_address) + 2  # .0 is the network, .1 the bridge
    size = net.subnet.num_addresses - 3  # nor the broadcast address
    taken: dict[IPv4Address, str] = {net.gateway: "the gateway"}
    out: dict[str, IPv4Address] = {}
    private = [s for s in host.services if s.network is NetworkMode.PRIVATE]
    for s in private:
        if not s.address:
            continue
        addr = IPv4Address(s.address)
        if addr not in net.subnet or addr in (net.gateway, net.subnet.network_address,
                                              net.subnet.broadcast_address):
            problems.append(Problem("N001", f"{s.name}: {addr} is not a service address of "
                                    f"{net.subnet} (gateway {net.gateway})",
                                    s.loc_of("address"), "address"))
        elif addr in taken:
            problems.append(Problem("N002", f"{s.name} and {taken[addr]} both have address "
                                    f"{addr} on {host.name}", s.loc_of("address"), "address"))
        else:
            taken[addr] = s.name
            out[s.name] = addr
    free = [s for s in sorted(private, key=lambda s: s.name) if not s.address]
    if len(free) + len(taken) - 1 > size:
        problems.append(Problem("N003", f"{host.name} has {len(free) + len(taken) - 1} private "
                                f"services, more than {net.subnet} holds", host.loc, "network"))
        return out
    for s in free:
        slot = zlib.crc32(s.name.encode()) % size
        while IPv4Address(first + slot) in taken:
            slot = (slot + 1) % size
        addr = IPv4Address(first + slot)
        taken[addr] = s.name
        out[s.name] = addr
    return out


def check_network(dep: Deployment, problems: list[Problem]) -> None:
    net = dep.network
    for h in dep.hosts:
        try:
            addr = ip_address(h.address)
        except ValueError:
            continue
        if addr in net.subnet:
            problems.append(Problem("N004", f"host {h.name}'s address {addr} is inside the "
                                    f"service subnet {net.subnet}", net.loc or h.loc,
                                    "network.subnet",
                                    hint="choose a subnet none of your networks use"))
    for h in dep.hosts:
        for s in h.services:
            for p in s.publish:
                if s.network is NetworkMode.HOST:
                    problems.append(Problem(
                        "N005", f"{s.name} runs in the host's network: it listens on host "
                        "ports itself, publish has no meaning", s.loc_of("publish"), "publish",
                        hint="list the port under ports, or use network: private"))
                    break
                if p.protocol != "tcp":
                    problems.append(Problem(
                        "N006", f"{s.name}: publishing {p} is not supported (ports are "
                        "published by systemd-socket-proxyd, which forwards TCP only)",
                        s.loc_of("publish"), "publish"))
