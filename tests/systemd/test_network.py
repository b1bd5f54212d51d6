"""Networks on a real systemd: own namespaces, names, published ports, cross-host gates.

Two throwaway systemd hosts join one lab network (--network-zone): host a runs web1 and
web2 (both on port 8080, published as 8081/8082) and client; host b runs app, which
needs web1 on host a.  All addresses live inside the test hosts' own namespaces.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from osunits.cli import app as cli_app
from osunits.testbed import Testbed, available, leftovers
from tests.conftest import REPO

NET = REPO / "tests" / "fixtures" / "netdeploy"
pystemd = pytest.importorskip("pystemd")

from osunits import control  # noqa: E402  (needs pystemd)
from osunits.runtime import Systemd  # noqa: E402
from osunits.systemd.units import unit_of  # noqa: E402

FETCH = ("/usr/bin/python3", "-c",
         "import sys,urllib.request;print(urllib.request.urlopen(sys.argv[1],timeout=3)"
         ".read().decode().strip())")


def _generate(host: str, root: Path) -> None:
    res = CliRunner().invoke(cli_app, ["generate", "-H", host, "-d", str(NET), "--root", str(root)])
    assert res.exit_code == 0, res.output


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Testbed]]:
    why = available()
    if why:
        pytest.skip(why)
    zone = f"osu{uuid.uuid4().hex[:5]}"
    beds: dict[str, Testbed] = {}
    try:
        for host, addr in (("a", "192.0.2.11"), ("b", "192.0.2.12")):
            tb = Testbed(network=f"zone={zone}")
            beds[host] = tb
            tb.start()
            tb.run(["/sbin/ip", "addr", "add", f"{addr}/24", "dev", "host0"])
            tb.run(["/sbin/ip", "link", "set", "host0", "up"])
            root = tmp_path_factory.mktemp(f"root-{host}")
            _generate(host, root)
            tb.install_tree(root)
        yield beds
    finally:
        for tb in beds.values():
            tb.teardown()
        for tb in beds.values():
            assert not leftovers(tb.name), leftovers(tb.name)


def _stop(tb: Testbed) -> None:
    """Stop the target and wait for every member (systemctl returns when the target is down)."""
    with Systemd(tb.bus_address.decode()) as sd:
        control.run_verb(sd, "stop", [], timeout=60, out=lambda s: None)


def _links_after_stop(tb: Testbed) -> str:
    """Links once teardown settled: the bridge goes when it becomes unneeded (a job after
    the stop transaction), veths when the kernel destroys their namespace (asynchronous)."""
    deadline = time.monotonic() + 10
    while (any(x in (left := _links(tb)) for x in ("vo-", "osunits0", "osunits-"))
           and time.monotonic() < deadline):
        time.sleep(0.1)
    return left


def _links(tb: Testbed) -> str:
    return tb.run(["/sbin/ip", "-br", "link"]).stdout + tb.run(["/sbin/ip", "netns"]).stdout


def _teardown_state(tb: Testbed) -> str:
    """What a failed teardown assertion needs to be understood: units and their journal."""
    units = tb.systemctl("list-units", "--all", "--no-pager", "--plain", "osunits-*",
                         "systemd-nspawn@*").stdout
    log = tb.run(["/usr/bin/journalctl", "--no-pager", "-o", "short-monotonic", "-n", "80",
                  "-u", "osunits-net-*", "-u", "systemd-nspawn@*", "-u", "openstack.target"],
                 check=False).stdout
    return f"\n--- units ---\n{units}\n--- journal ---\n{log}"


def test_same_port_twice_names_and_published_ports(lab: dict[str, Testbed]) -> None:
    a = lab["a"]
    with Systemd(a.bus_address.decode()) as sd:
        oc = control.run_verb(sd, "start", [], timeout=60, out=print)
        assert oc.ok, oc.failed
    # client could only start by reaching both by name, each on its own port 8080
    assert a.show(unit_of("client"), "ActiveState")["ActiveState"] == "active"
    log = a.journal(unit_of("client"))
    assert "http://web1:8080/: web1 on a" in log and "http://web2:8080/: web2 on a" in log
    # published ports answer on the host's loopback (IPv4 and IPv6) and its own address
    assert a.run([*FETCH, "http://127.0.0.1:8081/"]).stdout.strip() == "web1 on a"
    assert a.run([*FETCH, "http://[::1]:8082/"]).stdout.strip() == "web2 on a"
    assert a.run([*FETCH, "http://192.0.2.11:8082/"]).stdout.strip() == "web2 on a"
    # ... and from the other host
    assert lab["b"].run([*FETCH, "http://192.0.2.11:8081/"]).stdout.strip() == "web1 on a"
    # status shows each service's address
    res = CliRunner().invoke(cli_app, ["status", "--json", "--bus", a.bus_address.decode()])
    import json
    rows = {r["service"]: r for r in json.loads(res.output)["services"]}
    assert rows["web1"]["addresses"] and rows["web1"]["addresses"][0].startswith("10.213.")
    assert rows["web1"]["addresses"] != rows["web2"]["addresses"]


def test_running_containers_see_a_new_hosts_file(lab: dict[str, Testbed],
                                               tmp_path: Path) -> None:
    """generate replaces the hosts file by rename: a container started before sees the
    new names without a restart (a bound file would keep the inode it started with)."""
    import shutil

    a = lab["a"]
    a.systemctl("start", "openstack.target")
    leader = a.run(["machinectl", "show", "-p", "Leader", "--value", "client"]).stdout.strip()
    lookup = ["nsenter", "-t", leader, "-m", "-n", "getent", "hosts", "b"]

    def resolves(address: str) -> bool:
        deadline = time.monotonic() + 5
        while a.run(lookup, check=False).stdout.split()[:1] != [address]:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    assert resolves("192.0.2.12"), a.run(lookup, check=False)
    dep = tmp_path / "dep"
    shutil.copytree(NET, dep)
    y = dep / "deployment.yaml"
    y.write_text(y.read_text().replace("192.0.2.12", "192.0.2.99"))
    for d, address in ((dep, "192.0.2.99"), (NET, "192.0.2.12")):  # and back
        root = tmp_path / f"root-{address}"
        res = CliRunner().invoke(cli_app, ["generate", "-H", "a", "-d", str(d),
                                           "--root", str(root)])
        assert res.exit_code == 0, res.output
        a.install_tree(root)  # unlink and copy: a new inode, as generate's rename
        assert resolves(address), a.run(lookup, check=False)
    # the container was never restarted
    assert a.run(["machinectl", "show", "-p", "Leader", "--value", "client"]
                 ).stdout.strip() == leader


def test_cross_host_gate_waits_for_the_remote_service(lab: dict[str, Testbed]) -> None:
    a, b = lab["a"], lab["b"]
    _stop(a)
    gate = "osunits-remote-web1.service"
    with Systemd(b.bus_address.decode()) as sd:
        jobs = sd.enqueue("openstack.target", "start")
        # app waits: its gate is activating while web1 on host a is down
        deadline = time.monotonic() + 10
        while (sd.properties(gate)["ActiveState"] != "activating"
               and time.monotonic() < deadline):
            sd.pump(0.2)
        assert sd.properties(gate)["ActiveState"] == "activating"
        sd.pump(1.0)
        assert b.show(unit_of("app"), "ActiveState")["ActiveState"] == "inactive"
        a.systemctl("start", "openstack.target")
        ended = sd.wait_jobs(jobs, timeout=60)
    assert ended[unit_of("app")].result == "done", {u: e.result for u, e in ended.items()}
    assert ended[gate].at < ended[unit_of("app")].at
    # quiet has no port: its gate asked host a's readiness endpoint (osunits-ready.socket)
    assert ended["osunits-remote-quiet.service"].result == "done"
    assert "ready after" in b.journal("osunits-remote-quiet.service")
    assert "http://web1:8081/: web1 on a" in b.journal(unit_of("app"))
    deps = b.systemctl("list-dependencies", unit_of("app")).stdout
    assert gate in deps  # the edge is systemd's, visible, and survives a reboot
    _stop(b)


def test_cross_host_gate_fails_cleanly_when_remote_never_comes(lab: dict[str, Testbed]) -> None:
    a, b = lab["a"], lab["b"]
    _stop(a)
    res = CliRunner().invoke(cli_app, ["start", "--bus", b.bus_address.decode()])
    assert res.exit_code == 1
    assert "FAILED osunits-remote-web1.service" in res.output, res.output
    assert "cancelled because of it: app" in res.output
    assert "tcp connect to 192.0.2.11:8081: not ready after 8 s" in res.output
    why = CliRunner().invoke(cli_app, ["why", "app", "--bus", b.bus_address.decode()])
    assert why.exit_code == 1
    assert "it requires osunits-remote-web1.service, which is failed" in why.output
    assert "not ready after 8 s" in why.output
    b.systemctl("reset-failed", check=False)


def test_published_port_follows_its_container(lab: dict[str, Testbed]) -> None:
    """Closed while the service is down (refused at once, never a hang), open again after."""
    a = lab["a"]
    bus = ["--bus", a.bus_address.decode()]
    assert CliRunner().invoke(cli_app, ["start", *bus]).exit_code == 0
    mac = ["/sbin/ip", "-n", "osunits-web2", "-br", "link", "show", "host0"]
    before = a.run(mac).stdout.split()[2]
    assert CliRunner().invoke(cli_app, ["stop", "web2", *bus]).exit_code == 0
    for _ in range(2):  # a connection while stopped must not break the port for later
        res = a.run([*FETCH, "http://127.0.0.1:8082/"], check=False)
        assert res.returncode != 0 and "Connection refused" in res.stderr
    assert CliRunner().invoke(cli_app, ["start", "web2", *bus]).exit_code == 0
    assert a.run([*FETCH, "http://127.0.0.1:8082/"]).stdout.strip() == "web2 on a"
    # a restart too: the container's stop must not cancel the socket's queued start
    res = CliRunner().invoke(cli_app, ["restart", "web2", *bus])
    assert res.exit_code == 0 and "canceled" not in res.output, res.output
    assert a.run([*FETCH, "http://127.0.0.1:8082/"]).stdout.strip() == "web2 on a"
    a.systemctl("restart", "systemd-nspawn@web2.service")
    assert a.run([*FETCH, "http://127.0.0.1:8082/"]).stdout.strip() == "web2 on a"
    # a new namespace, the same MAC: the peers' neighbour entries still hold
    assert a.run(mac).stdout.split()[2] == before and before.startswith("02:6f:")
    for verb in ("start", "why"):
        res = CliRunner().invoke(cli_app, [verb, "nope", *bus])
        assert res.exit_code == 2 and "not a service of this host: nope" in res.output
    _stop(a)


def test_stop_leaves_no_bridges_veths_or_namespaces(lab: dict[str, Testbed]) -> None:
    a = lab["a"]
    a.systemctl("start", "openstack.target")
    assert "osunits0" in _links(a) and "osunits-web1" in _links(a)
    # `osunits stop` follows every job of the transaction (systemctl returns when the
    # target itself is down, before its members finish stopping)
    res = CliRunner().invoke(cli_app, ["stop", "--bus", a.bus_address.decode()])
    assert res.exit_code == 0, res.output
    left = _links_after_stop(a)
    assert "osunits0" not in left and "vo-" not in left and "osunits-" not in left, (
        left + _teardown_state(a))
    assert "10.213." not in a.run(["/sbin/ip", "-br", "addr"]).stdout


def test_containers_join_an_existing_provider_bridge(tmp_path: Path) -> None:
    """network.existing_bridge: veths go onto the host's own bridge, which osunits leaves
    as it found it."""
    why = available()
    if why:
        pytest.skip(why)
    dep = tmp_path / "dep"
    import shutil
    shutil.copytree(NET, dep)
    y = dep / "deployment.yaml"
    y.write_text(y.read_text().replace(
        "network:\n  gate_timeout: 8s\n",
        "network:\n  gate_timeout: 8s\n  subnet: 172.29.0.0/24\n  bridge: provbr0\n"
        "  existing_bridge: true\n  masquerade: false\n"))
    root = tmp_path / "root"
    res = CliRunner().invoke(cli_app, ["generate", "-H", "a", "-d", str(dep), "--root", str(root)])
    assert res.exit_code == 0, res.output
    tb = Testbed()
    tb.start()
    try:
        tb.run(["/sbin/ip", "link", "add", "provbr0", "type", "bridge"])
        tb.run(["/sbin/ip", "addr", "add", "172.29.0.1/24", "dev", "provbr0"])
        tb.run(["/sbin/ip", "link", "set", "provbr0", "up"])
        tb.install_tree(root)
        with Systemd(tb.bus_address.decode()) as sd:
            assert control.run_verb(sd, "start", [], timeout=60, out=lambda s: None).ok
            addr = sd.machine_addresses("web1")
        assert addr and addr[0].startswith("172.29.0.")
        assert "vo-web1" in tb.run(["/sbin/ip", "-br", "link", "show", "master", "provbr0"]).stdout
        assert tb.run([*FETCH, f"http://{addr[0]}:8080/"]).stdout.strip() == "web1 on a"
        _stop(tb)
        left = tb.run(["/sbin/ip", "-br", "addr", "show", "provbr0"]).stdout
        assert "172.29.0.1/24" in left  # the provider's bridge, untouched
        assert "vo-" not in _links_after_stop(tb), _teardown_state(tb)
    finally:
        tb.teardown()


# Holds connections to host a's readiness endpoint from the given source addresses and
# reports how many PID 1 closed at once (beyond its limits) and how many it kept (each has
# an instance, waiting for a request line); on "ask", sends a request on all kept ones but
# the last, and reports how long after it was opened PID 1 closed that stuck one.
HOLD = r"""
import json, select, socket, sys, time
held, dropped = [], {}
for src, n in json.loads(sys.argv[1]):
    for _ in range(n):
        s = socket.create_connection(("192.0.2.11", 7480), timeout=5, source_address=(src, 0))
        held.append((src, s, time.monotonic()))
time.sleep(2)  # PID 1 has taken each by now: an instance, or closed
readable = select.select([h[1] for h in held], [], [], 0)[0]
for h in [h for h in held if h[1] in readable]:
    try:
        closed = h[1].recv(1) == b""
    except ConnectionResetError:
        closed = True
    if closed:
        dropped[h[0]] = dropped.get(h[0], 0) + 1
        held.remove(h)
print(json.dumps({"dropped": dropped, "held": len(held)}), flush=True)
sys.stdin.readline()
answers = []
for _, s, _ in held[:-1]:
    s.sendall(b"GET /quiet HTTP/1.0\r\n\r\n")
    answers.append(s.makefile("rb").read().split(b"\r\n")[0].decode())
_, stuck, opened = held[-1]
stuck.settimeout(30)
try:
    stuck.recv(1)
except OSError:
    pass
print(json.dumps({"answers": answers, "stuck_for": time.monotonic() - opened}), flush=True)
"""
SOURCES = [f"192.0.2.{n}" for n in range(21, 26)]


def test_readiness_endpoint_is_unprivileged_and_bounded(lab: dict[str, Testbed]) -> None:
    """osunits-ready@.service answers as its own unprivileged user with no capabilities;
    connections beyond MaxConnections(PerSource)= start no instance, a flood does not stop
    the socket (no trigger limit), and a stuck connection is cut by RuntimeMaxSec=."""
    a, b = lab["a"], lab["b"]
    # the answer sees only its program, whatever the modes of the directories above it
    mode = a.run(["/usr/bin/stat", "-c", "%a", "/var/lib/osunits"]).stdout.strip()
    a.run(["/bin/chmod", "0700", "/var/lib/osunits"])
    a.systemctl("start", "openstack.target")
    assert b.run([*FETCH, "http://192.0.2.11:7480/quiet"]).stdout.strip() == "quiet: active"
    res = b.run([*FETCH, "http://192.0.2.11:7480/web1"], check=False)
    assert "HTTP Error 404" in res.stderr, res.stderr
    # bound to the inventory address only: not on the loopback
    res = a.run([*FETCH, "http://127.0.0.1:7480/quiet"], check=False)
    assert "Connection refused" in res.stderr, res.stderr
    for src in SOURCES:
        b.run(["/sbin/ip", "addr", "add", f"{src}/24", "dev", "host0"])
    # 250 from one source (more than systemd's default trigger limit, 200 in 2 s, which
    # would stop the socket for good): 4 instances; 4 from each of three more: 12; then
    # the total of 16 is reached and the last source's 4 are dropped.
    plan = [[SOURCES[0], 250], *([s, 4] for s in SOURCES[1:4]), [SOURCES[4], 4]]
    hold = subprocess.Popen(["nsenter", "-t", str(b.pid1), "-a", "/usr/bin/python3", "-I",
                             "-c", HOLD, json.dumps(plan)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert hold.stdout is not None and hold.stdin is not None
        first = json.loads(hold.stdout.readline())
        assert first == {"dropped": {SOURCES[0]: 246, SOURCES[4]: 4}, "held": 16}, first
        sock = a.show("osunits-ready.socket", "ActiveState", "SubState", "NConnections")
        assert sock == {"ActiveState": "active", "SubState": "listening",
                        "NConnections": "16"}, sock
        units = a.systemctl("list-units", "--plain", "--no-legend", "--state=active",
                            "osunits-ready@*").stdout.split()
        instances = [u for u in units if u.startswith("osunits-ready@")]
        assert len(instances) == 16, units
        props = a.show(instances[0], "User", "MainPID", "NoNewPrivileges")
        assert props["User"] == "osunits-ready" and props["NoNewPrivileges"] == "yes", props
        uid = a.run(["/usr/bin/id", "-u", "osunits-ready"]).stdout.strip()
        assert uid not in ("", "0")
        status = a.run(["/bin/cat", f"/proc/{props['MainPID']}/status"]).stdout.splitlines()
        uids = next(line for line in status if line.startswith("Uid:")).split()[1:]
        assert uids == [uid] * 4, status  # real, effective, saved, fs: not root
        cap = next(line for line in status if line.startswith("CapBnd:")).split()[1]
        assert int(cap, 16) == 0, status
        hold.stdin.write("ask\n")
        hold.stdin.flush()
        second = json.loads(hold.stdout.readline())
        # answered unprivileged: systemctl is-active over D-Bus works as that user
        assert second["answers"] == ["HTTP/1.0 200 active"] * 15, second
        assert 9 < second["stuck_for"] < 14, second  # RuntimeMaxSec=10
    finally:
        hold.kill()
        hold.wait()
        for src in SOURCES:
            b.run(["/sbin/ip", "addr", "del", f"{src}/24", "dev", "host0"], check=False)
        a.run(["/bin/chmod", mode, "/var/lib/osunits"])
    assert a.show("osunits-ready.socket", "SubState")["SubState"] == "listening"
    assert "Too many incoming connections" in a.journal("osunits-ready.socket")
    # every instance, the killed one too, is unloaded (CollectMode=inactive-or-failed)
    deadline = time.monotonic() + 5
    while ("osunits-ready@" in (left := a.systemctl(
            "list-units", "--all", "--plain", "--no-legend", "osunits-ready@*").stdout)
           and time.monotonic() < deadline):
        time.sleep(0.1)
    assert "osunits-ready@" not in left, left
    assert b.run([*FETCH, "http://192.0.2.11:7480/quiet"]).stdout.strip() == "quiet: active"
    _stop(a)
