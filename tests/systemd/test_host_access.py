"""binds, devices and capabilities on a real systemd: what a network or compute agent needs.

One throwaway host runs two services of the host image with the host's network: ``agent``
asks for CAP_NET_ADMIN, /dev/fuse and a read-only bind; ``plain`` asks for nothing, and
the same operations must be refused to it.  Each records what it could do; readiness
waits for that record.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from osunits.testbed import Testbed, available, leftovers
from tests.systemd.conftest import generate_one_host

pystemd = pytest.importorskip("pystemd")

from osunits import control  # noqa: E402  (needs pystemd)
from osunits.runtime import Systemd  # noqa: E402

pytestmark = pytest.mark.systemd

ADDRESS = {"agent": "127.1.0.1", "plain": "127.1.0.2"}  # added to the shared lo, or not
# Each check prints "NAME yes" or "NAME no"; the record is complete when "done" is there.
PROBE = ("for c in 'netadmin:ip addr add $N/32 dev lo' 'fuse:exec 3</dev/fuse' "
         "'readbind:read x < /mnt/shared/hello' 'writebind:touch /mnt/shared/w'; do "
         "if sh -c \"${c#*:}\" 2>/dev/null; then echo \"${c%%:*} yes\"; "
         "else echo \"${c%%:*} no\"; fi >> /tmp/record; done; echo done >> /tmp/record; "
         "exec sleep infinity")


def _service(name: str, **extra: object) -> str:
    return yaml.safe_dump({
        "description": name, "network": "host", "environment": {"N": ADDRESS[name]},
        "exec": ["/bin/sh", "-c", PROBE],
        "readiness": {"command": ["/bin/grep", "-qx", "done", "/tmp/record"],
                      "timeout": "20s"}, **extra})


def test_binds_devices_and_capabilities_reach_the_container(tmp_path: Path) -> None:
    why = available()
    if why:
        pytest.skip(why)
    root = generate_one_host(tmp_path, {
        "agent": _service("agent", capabilities=["CAP_NET_ADMIN"], devices=["/dev/fuse"],
                          binds=["/srv/shared:/mnt/shared:ro"]),
        "plain": _service("plain")})
    tb = Testbed()
    tb.start()
    try:
        tb.write("/srv/shared/hello", "hi\n")
        if tb.run(["/usr/bin/test", "-c", "/dev/fuse"], check=False).returncode:
            tb.run(["/bin/mknod", "-m", "600", "/dev/fuse", "c", "10", "229"])
        tb.install_tree(root)
        with Systemd(tb.bus_address.decode()) as sd:
            oc = control.run_verb(sd, "start", [], timeout=60, out=lambda s: None)
            assert oc.ok, oc.failed
        records = {}
        for name in ("agent", "plain"):
            leader = tb.run(["/usr/bin/machinectl", "show", name, "-p", "Leader",
                             "--value"]).stdout.strip()  # no systemd inside for `shell`
            out = tb.run(["/usr/bin/nsenter", "-t", leader, "-m", "/bin/cat",
                          "/tmp/record"]).stdout
            records[name] = dict(ln.split() for ln in out.splitlines() if " " in ln)
        assert records["agent"] == {"netadmin": "yes", "fuse": "yes", "readbind": "yes",
                                    "writebind": "no"}, records
        assert records["plain"] == {"netadmin": "no", "fuse": "no", "readbind": "no",
                                    "writebind": "no"}, records
        lo = tb.run(["/sbin/ip", "-br", "addr", "show", "lo"]).stdout
        assert ADDRESS["agent"] in lo and ADDRESS["plain"] not in lo
        with Systemd(tb.bus_address.decode()) as sd:
            control.run_verb(sd, "stop", [], timeout=60, out=lambda s: None)
    finally:
        tb.teardown()
    assert not leftovers(tb.name)
