"""Graph rules that the golden files do not show: IPv6 gates, the host's own units."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from osunits.deployment import load_deployment
from osunits.errors import DeploymentError
from osunits.graph import gate_endpoint
from tests.conftest import EXAMPLE


def test_gate_endpoints_bracket_an_ipv6_inventory_address() -> None:
    dep = load_deployment(EXAMPLE)
    ctl = dep.host("ctl01")
    assert ctl is not None
    v6 = dataclasses.replace(ctl, address="2001:db8::11")
    by_kind = {}
    for name in ("rabbitmq", "neutron-server", "nova-conductor"):
        svc = ctl.service(name)
        assert svc is not None
        kind, _, where = gate_endpoint(svc, v6).partition(" ")
        by_kind[kind] = where
        assert where.startswith("[2001:db8::11]:"), where
        assert gate_endpoint(svc, ctl).startswith(f"{kind} 192.0.2.11:")
    assert by_kind.keys() == {"tcp", "ready"}



def test_a_host_unit_is_a_dependency_systemd_orders_on(tmp_path: Path) -> None:
    """requires/wants/after may name the host's own units (libvirtd.service): they reach the
    drop-in as written and the graph leaves them alone (no C002, no gate, no wave)."""
    import shutil

    from osunits.plan import plan_host

    dep_dir = tmp_path / "dep"
    shutil.copytree(EXAMPLE, dep_dir)
    svc = dep_dir / "services/nova-compute.yaml"
    svc.write_text(svc.read_text().replace(
        "requires: [rabbitmq,", "requires: [virtqemud.service, ovs@br-int.target, rabbitmq,"))
    dep = load_deployment(dep_dir)
    plan = plan_host(dep, "cmp01")
    dropin = next(f for f in plan.files if f.path.name == "50-osunits.conf"
                  and "nova-compute" in str(f.path)).content.decode()
    for unit in ("virtqemud.service", "ovs@br-int.target"):
        assert f"Requires={unit}\n" in dropin and f"After={unit}\n" in dropin
    assert not any("." in p for p in plan.graph.order["nova-compute"])
    assert not any("." in e.dependency.name for e in plan.graph.cross_host)
    assert not [p for p in plan.warnings if p.code == "C002"]
    bad = dep_dir / "services/nova-compute.yaml"
    text = bad.read_text()
    for unit, said in (("virtqemud.sevrice", "is neither a service name nor a unit name"),
                       ("getty@.service", "is neither a service name nor a unit name"),
                       ("systemd-nspawn@mariadb.service", "is a unit osunits makes"),
                       ("openstack.target", "is a unit osunits makes")):
        bad.write_text(text.replace("virtqemud.service", unit))
        with pytest.raises(DeploymentError, match=f"'{re.escape(unit)}' {said}"):
            load_deployment(dep_dir)


def test_a_services_mac_is_fixed_by_its_address() -> None:
    """A restarted namespace keeps its MAC, so running peers' neighbour entries stay right."""
    from osunits.network import mac_of
    from osunits.plan import plan_host

    dep = load_deployment(EXAMPLE)
    plan = plan_host(dep, "ctl01")
    macs = {}
    for f in plan.files:
        if f.path.name.startswith("osunits-net-"):
            text = f.content.decode()
            mac = re.search(r"host0 address (\S+) netns", text)
            addr = re.search(r"addr add ([\d.]+)/", text)
            assert mac and addr, text
            macs[addr.group(1)] = mac.group(1)
    assert len(macs) == len(plan.graph.addresses) == len(set(macs.values())) > 5
    for addr, mac in macs.items():
        assert mac == mac_of(addr)
        first = int(mac.split(":")[0], 16)
        assert first & 0b10 and not first & 0b01  # locally administered, unicast
    assert mac_of("10.213.0.2") != mac_of("10.213.0.3")
