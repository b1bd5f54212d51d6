"""A container killed outright comes back by its restart policy (real systemd 252).

``systemctl kill -s KILL`` kills systemd-nspawn before it can unregister its machine, and
machined keeps the registration while the unit is restarting: without the drop-in's
``UnregisterMachine`` step every restart failed with "Machine 'NAME' already exists"
until the start limit left the service failed for good.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from osunits.testbed import Testbed, available
from tests.systemd.conftest import generate_one_host

pytestmark = pytest.mark.systemd


def test_a_killed_container_is_restarted(tmp_path: Path) -> None:
    why = available()
    if why:
        pytest.skip(why)
    root = generate_one_host(tmp_path, {"sleeper": yaml.safe_dump({
        "description": "sleeps", "network": "host", "restart": "on-failure",
        "restart_sec": "1s", "exec": ["/bin/sleep", "infinity"]})})
    unit = "systemd-nspawn@sleeper.service"
    with Testbed() as tb:
        tb.install_tree(root)
        tb.systemctl("start", unit)
        first = tb.show(unit, "MainPID")["MainPID"]
        tb.systemctl("kill", "-s", "KILL", unit)
        deadline = time.monotonic() + 30
        while True:
            st = tb.show(unit, "ActiveState", "MainPID", "NRestarts")
            if st["ActiveState"] == "active" and st["MainPID"] not in ("0", first):
                break
            assert st["ActiveState"] != "failed" and time.monotonic() < deadline, (
                st, tb.journal(unit))
            time.sleep(0.2)
        assert st["NRestarts"] == "1", (st, tb.journal(unit))
        assert "already exists" not in tb.journal(unit)
        tb.systemctl("stop", unit)
