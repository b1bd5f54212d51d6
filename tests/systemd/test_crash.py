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


def test_a_published_port_does_not_shorten_a_crash_loop_and_follows_the_container(
        tmp_path: Path) -> None:
    """A socket bound to its container (BindsTo=) made systemd start the container each
    time it started the socket again, the container's Wants= of a restarting unit, and
    each start counted: the crash loop stopped after 2 restarts, not 5 (systemd 252)."""
    why = available()
    if why:
        pytest.skip(why)
    fails = {"restart": "always", "restart_sec": "1s",
             "exec": ["/bin/sh", "-c", "sleep 1; exit 1"]}
    root = generate_one_host(tmp_path, {
        "pub": yaml.safe_dump({**fails, "publish": ["8090:8090"]}),
        "nopub": yaml.safe_dump(fails),
        "web": yaml.safe_dump({"restart": "always", "restart_sec": "1s",
                               "readiness": {"tcp": 8091}, "publish": ["8091:8091"],
                               "exec": ["/usr/bin/python3", "-m", "http.server", "8091"]})})
    fetch = ["/usr/bin/python3", "-c", "import urllib.request as u; "
             "print(u.urlopen('http://127.0.0.1:8091/', timeout=3).status)"]
    with Testbed() as tb:
        tb.install_tree(root)
        for s in ("pub", "nopub"):
            tb.systemctl("start", "--no-block", f"systemd-nspawn@{s}.service")
        tb.systemctl("start", "systemd-nspawn@web.service")
        assert tb.run(fetch).stdout.strip() == "200"
        socket = "osunits-publish-web-8091.socket"
        tb.systemctl("kill", "-s", "KILL", "systemd-nspawn@web.service")
        deadline = time.monotonic() + 10
        while tb.show(socket, "ActiveState")["ActiveState"] != "inactive":
            assert time.monotonic() < deadline, "the port stayed open after the container died"
            time.sleep(0.1)
        deadline = time.monotonic() + 30
        while tb.run(fetch, check=False).returncode != 0:  # back with the restart
            assert time.monotonic() < deadline, tb.journal("systemd-nspawn@web.service")
            time.sleep(0.3)
        deadline = time.monotonic() + 90
        states: dict[str, dict[str, str]] = {}
        while time.monotonic() < deadline:
            states = {s: tb.show(f"systemd-nspawn@{s}.service", "ActiveState", "NRestarts")
                      for s in ("pub", "nopub")}
            if all(st["ActiveState"] == "failed" for st in states.values()):
                break
            time.sleep(0.5)
        assert states["nopub"] == {"ActiveState": "failed", "NRestarts": "5"}, states
        assert states["pub"] == states["nopub"], (states, tb.journal("systemd-nspawn@pub.service"))
        assert tb.show("osunits-publish-pub-8090.socket", "ActiveState")["ActiveState"] in (
            "inactive", "failed")
        tb.systemctl("stop", "systemd-nspawn@web.service")
        assert tb.show(socket, "ActiveState")["ActiveState"] == "inactive"
