"""The container init (osunits/container/init.py) on a real systemd 252.

One throwaway test host per module (conftest.testbed); every service is a
systemd-nspawn@NAME.service with a hand-written .nspawn file and drop-in in the
contract format (units.py), sharing ONE read-only image with Volatile=overlay.
States come from JobRemoved over D-Bus (bus.Jobs) and `systemctl show`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from osunits.testbed import HOST_IMAGE, Testbed

from .units import Service, nspawn_words, prog, unit_name, wait_for, write_tree

pytestmark = pytest.mark.systemd

DEP_PORT, APP_PORT = 6100, 6101

PROGRAMS = {
    # binds its port only after 2 s, then greets every client
    "dep": f"""
import socket, time
time.sleep(2)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", {DEP_PORT}))
s.listen(64)
while True:
    c, _ = s.accept()
    c.sendall(b"hello")
    c.close()
""",
    # fails at once unless dep answers at its own start; then serves APP_PORT
    "app": f"""
import socket, sys, time
try:
    c = socket.create_connection(("127.0.0.1", {DEP_PORT}), timeout=2)
    assert c.recv(5) == b"hello"
except (OSError, AssertionError) as e:
    print("app: cannot reach dep:", e, flush=True)
    sys.exit(1)
print("app: connected to dep", flush=True)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", {APP_PORT}))
s.listen(64)
time.sleep(100000)
""",
    # sends READY=1 itself after 1.5 s, with a STATUS=
    "notifier": """
import os, socket, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"STATUS=warming up", os.environ["NOTIFY_SOCKET"])
time.sleep(1.5)
s.sendto(b"READY=1\\nSTATUS=serving", os.environ["NOTIFY_SOCKET"])
time.sleep(100000)
""",
    # accepts TCP at once but answers 503 for 1.5 s, then 200
    "http503": """
import http.server, time
t0 = time.monotonic()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if time.monotonic() - t0 > 1.5 else 503)
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", 8080), H).serve_forever()
""",
    "touch_later": """
import sys, time
time.sleep(1)
open(sys.argv[1], "w").close()
time.sleep(100000)
""",
    "sleeper": "import time\ntime.sleep(100000)\n",
    "exit_after": "import sys, time\ntime.sleep(float(sys.argv[1]))\nsys.exit(int(sys.argv[2]))\n",
    "argv": "import json, sys\nprint('ARGV=' + json.dumps(sys.argv[1:]), flush=True)\n"
            "import time\ntime.sleep(100000)\n",
    # who am I, where, with what environment; leaves an orphan for PID 1 to reap
    "whoami": """
import json, os, subprocess, time
subprocess.run(["/bin/sh", "-c", "(sleep 0.2 &)"])
open("/var/lib/osunits-test-state/written", "w").close()
time.sleep(1)
zombies = [p for p in os.listdir("/proc") if p.isdigit()
           and open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"]
st = os.stat("/var/lib/osunits-test-state")
print("WHOAMI=" + json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "cwd": os.getcwd(),
    "state_owner": [st.st_uid, st.st_gid],
    "env": sorted(k for k in os.environ if k.startswith(("OSUNITS", "NOTIFY"))),
    "home": os.environ.get("HOME"), "user": os.environ.get("USER"),
    "uid_map": open("/proc/self/uid_map").read().split(),
    "plain": os.environ.get("PLAIN"), "links": sorted(os.listdir("/sys/class/net")),
    "zombies": zombies}), flush=True)
time.sleep(100000)
""",
}

TRICKY = ["a b", "it's", 'say "hi"', 'both \'"', "back\\slash", "50%", "$HOME", "%h", "", "x=1"]


PLAIN = "a b \"c\" 'd' \\n %h $HOME"


def services() -> list[Service]:
    shared = {"private_network": False, "part_of": "osunits-test.target"}
    return [
        Service("dep", prog("dep"), ready=f"tcp:{DEP_PORT}", **shared),
        Service("app", prog("app"), ready=f"tcp:{APP_PORT}", requires=["dep"], after=["dep"],
                **shared),
        # the control: Requires= without After= starts both at once
        Service("app-unordered", prog("app"), ready=f"tcp:{APP_PORT}", requires=["dep"],
                private_network=False),
        Service("notifier", prog("notifier"), ready="notify"),
        Service("web", prog("http503"), ready="http:http://127.0.0.1:8080/health"),
        Service("cmd", prog("touch_later", "/tmp/ready"), ready="command:/usr/bin/test -e /tmp/ready"),
        Service("never", prog("sleeper"), ready="tcp:6999", ready_timeout=2),
        Service("exit7", prog("exit_after", "0.3", "7")),
        Service("exit3early", prog("exit_after", "0", "3"), ready="tcp:6999"),
        Service("stopme", prog("sleeper"), ready="none"),
        Service("quoting", prog("argv", *TRICKY)),
        Service("whoami", prog("whoami"), user="daemon", state=["/var/lib/osunits-test-state"],
                workdir="/tmp", env={"OSUNITS_NODE_KIND": "compute", "PLAIN": PLAIN}),
    ]


@pytest.fixture(scope="module")
def units(testbed: Testbed, tmp_path_factory: pytest.TempPathFactory) -> Testbed:
    tree = write_tree(tmp_path_factory.mktemp("tree"), services(),
                      targets={"osunits-test.target": ["dep", "app"]}, programs=PROGRAMS)
    testbed.install_tree(tree)
    assert (testbed.root / "var/lib/machines/dep").resolve() == testbed.root / HOST_IMAGE[1:] or \
        (testbed.root / "var/lib/machines/dep").readlink() == Path(HOST_IMAGE)
    return testbed


def mono(tb: Testbed, unit: str, prop: str) -> float:
    return int(tb.show(unit, prop)[prop]) / 1e6


def activation_seconds(tb: Testbed, unit: str) -> float:
    return (mono(tb, unit, "ActiveEnterTimestampMonotonic")
            - mono(tb, unit, "InactiveExitTimestampMonotonic"))


def journal_json(tb: Testbed, unit: str, key: str) -> dict | list:  # type: ignore[type-arg]
    def find() -> str | None:
        for line in tb.journal(unit).splitlines():
            if line.startswith(key + "="):
                return line[len(key) + 1:]
        return None
    return json.loads(str(wait_for(find, what=f"{key}= in the journal of {unit}")))


def test_dependency_waits_for_tcp_readiness(units: Testbed, jobs) -> None:  # type: ignore[no-untyped-def]
    tb = units
    dep, app = unit_name("dep"), unit_name("app")
    for _ in range(3):
        res = jobs.start("osunits-test.target")
        assert res[dep] == "done" and res[app] == "done", res
        assert activation_seconds(tb, dep) >= 1.9  # dep was held in activating until bound
        assert mono(tb, app, "InactiveExitTimestampMonotonic") >= \
            mono(tb, dep, "ActiveEnterTimestampMonotonic")
        assert tb.show(app, "ActiveState")["ActiveState"] == "active"
        res = jobs.stop("osunits-test.target")
        assert set(res.values()) == {"done"}, res
    assert tb.show(dep, "Result")["Result"] == "success"


def test_control_without_after_fails(units: Testbed, jobs) -> None:  # type: ignore[no-untyped-def]
    res = jobs.start(unit_name("app-unordered"))
    assert res[unit_name("app-unordered")] == "failed", res
    assert "app: cannot reach dep" in units.journal(unit_name("app-unordered"))
    jobs.stop(unit_name("dep"))


def test_notify_passthrough(units: Testbed, jobs) -> None:  # type: ignore[no-untyped-def]
    u = unit_name("notifier")
    assert jobs.start(u)[u] == "done"
    assert activation_seconds(units, u) >= 1.4
    assert units.show(u, "StatusText")["StatusText"] == "Container running: serving"
    jobs.stop(u)


def test_http_readiness(units: Testbed, jobs) -> None:  # type: ignore[no-untyped-def]
    u = unit_name("web")
    assert jobs.start(u)[u] == "done"
    assert activation_seconds(units, u) >= 1.4  # 503s did not count
    jobs.stop(u)


def test_command_readiness(units: Testbed, jobs) -> None:  # type: ignore[no-untyped-def]
    u = unit_name("cmd")
    assert jobs.start(u)[u] == "done"
    assert activation_seconds(units, u) >= 0.9
    jobs.stop(u)


def test_readiness_timeout_fails_the_unit(units: Testbed, jobs) -> None:  # type: ignore[no-untyped-def]
    u = unit_name("never")
    t = time.monotonic()
    assert jobs.start(u)[u] == "failed"
    assert time.monotonic() - t < 10
    props = units.show(u, "ActiveState", "Result", "ExecMainStatus")
    assert props == {"ActiveState": "failed", "Result": "exit-code", "ExecMainStatus": "124"}
    assert "readiness check failed: tcp connect to 127.0.0.1 or [::1]:6999 not satisfied " \
        "after 2 s (last error: Connection refused)" in units.journal(u)


def test_exit_code_propagates(units: Testbed, jobs) -> None:  # type: ignore[no-untyped-def]
    u = unit_name("exit7")
    assert jobs.start(u)[u] == "done"
    wait_for(lambda: units.show(u, "ActiveState")["ActiveState"] == "failed", what="exit7 failed")
    assert units.show(u, "Result", "ExecMainStatus") == {"Result": "exit-code",
                                                          "ExecMainStatus": "7"}
    u = unit_name("exit3early")
    assert jobs.start(u)[u] == "failed"
    assert units.show(u, "ExecMainStatus")["ExecMainStatus"] == "3"


@pytest.mark.parametrize("how", ["systemctl stop", "machinectl poweroff"])
def test_stop_is_prompt_and_clean(units: Testbed, jobs, how: str) -> None:  # type: ignore[no-untyped-def]
    u = unit_name("stopme")
    assert jobs.start(u)[u] == "done"
    t = time.monotonic()
    if how == "systemctl stop":
        assert jobs.stop(u)[u] == "done"
    else:
        units.run(["/usr/bin/machinectl", "poweroff", "stopme"])
        wait_for(lambda: units.show(u, "ActiveState")["ActiveState"] in ("inactive", "failed"),
                 what="stopme stopped")
    took = time.monotonic() - t
    assert took < 3, f"{how} took {took:.1f} s"
    assert units.show(u, "ActiveState", "Result") == {"ActiveState": "inactive",
                                                       "Result": "success"}


def test_parameters_quoting(units: Testbed, jobs) -> None:  # type: ignore[no-untyped-def]
    u = unit_name("quoting")
    assert jobs.start(u)[u] == "done"
    assert journal_json(units, u, "ARGV") == TRICKY
    jobs.stop(u)
    text = (units.root / "etc/systemd/nspawn/quoting.nspawn").read_text()
    assert nspawn_words(TRICKY) in text


def test_user_state_workdir_environment_reaping(units: Testbed, jobs) -> None:  # type: ignore[no-untyped-def]
    u = unit_name("whoami")
    assert jobs.start(u)[u] == "done"
    who = journal_json(units, u, "WHOAMI")
    assert isinstance(who, dict)
    assert (who["uid"], who["gid"]) == (1, 1)  # daemon
    assert who["cwd"] == "/tmp"
    assert who["state_owner"] == [1, 1]
    assert who["env"] == ["OSUNITS_NODE_KIND"]  # control variables and NOTIFY_SOCKET removed
    assert (who["home"], who["user"]) == ("/usr/sbin", "daemon")
    assert who["uid_map"] == ["0", "0", "4294967295"]  # PrivateUsers=no won over -U
    assert who["plain"] == PLAIN  # Environment= words: quotes group, the rest is literal
    assert who["links"] == ["lo"]  # [Network] Private=yes won over --network-veth
    assert who["zombies"] == []  # the orphaned sleep was reaped by the init
    # the shared image stays untouched (Volatile=overlay)
    assert not (units.root / HOST_IMAGE[1:] / "var/lib/osunits-test-state").exists()
    # nspawn pings the watchdog itself (WatchdogSec=2s in the drop-in)
    assert units.show(u, "WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"] != "0"
    jobs.stop(u)
    assert "Unknown" not in units.journal(u)  # every .nspawn key was understood
