"""Graph rules that the golden files (IPv4 only) do not show."""

from __future__ import annotations

import dataclasses

from osunits.deployment import load_deployment
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

