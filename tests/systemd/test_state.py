"""State directories on a real systemd: what a non-root service writes survives restarts.

``store`` runs as ``nobody`` and appends a line to a file in its state directory at each
start; the append fails (and with it the start) if the file is not the user's.  systemd's
``StateDirectory=`` on the root-run ``systemd-nspawn@.service`` chowned the whole tree back
to root at every start, so the second start failed: MariaDB, RabbitMQ and Keystone's keys
in the example broke the same way.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from osunits.testbed import Testbed, available
from tests.systemd.conftest import generate_one_host

pystemd = pytest.importorskip("pystemd")

from osunits import control  # noqa: E402  (needs pystemd)
from osunits.runtime import Systemd  # noqa: E402
from osunits.systemd.units import unit_of  # noqa: E402

pytestmark = pytest.mark.systemd

LOG = "/var/lib/store/log"
HOST_LOG = "/var/lib/osunits/state/store" + LOG


def test_state_stays_the_services_across_restarts(tmp_path: Path) -> None:
    why = available()
    if why:
        pytest.skip(why)
    root = generate_one_host(tmp_path, {"store": yaml.safe_dump({
        "description": "appends a line to its state at each start", "network": "host",
        "user": "nobody", "state": ["/var/lib/store"],
        "exec": ["/bin/sh", "-c", f"echo started >> {LOG} && exec sleep infinity"],
        "readiness": {"command": ["/bin/grep", "-q", "started", LOG], "timeout": "20s"}})})
    with Testbed() as tb:
        tb.install_tree(root)
        unit = unit_of("store")
        with Systemd(tb.bus_address.decode()) as sd:
            for verb in ("start", "restart", "restart"):
                oc = control.run_verb(sd, verb, ["store"], timeout=60, out=lambda s: None)
                assert oc.ok, (verb, oc.failed, tb.journal(unit))
        owner = tb.run(["/usr/bin/stat", "-c", "%U %u", HOST_LOG]).stdout.split()
        assert owner == ["nobody", "65534"]
        lines = tb.run(["/bin/cat", HOST_LOG]).stdout.split()
        assert lines == ["started"] * 3
        tb.systemctl("stop", unit, check=False)
