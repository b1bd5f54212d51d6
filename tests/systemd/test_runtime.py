"""The generated units and the D-Bus client on a real systemd (the fast test deployment).

tests/fixtures/fastdeploy: db binds its port after 2 s; api exits at once if db does not
answer at its start; cache reports READY=1 itself; worker needs api.  Everything is
asserted from systemd's own job results and properties, never from sleeps.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from osunits.cli import app
from osunits.testbed import Testbed
from tests.conftest import REPO

FAST = REPO / "tests" / "fixtures" / "fastdeploy"
pystemd = pytest.importorskip("pystemd")

from osunits import control  # noqa: E402  (needs pystemd)
from osunits.runtime import Systemd, daemon_reload  # noqa: E402
from osunits.systemd.units import unit_of  # noqa: E402
from tests.systemd.bus import log_calls  # noqa: E402


def generate(dep: Path, root: Path) -> None:
    res = CliRunner().invoke(app, ["generate", "-H", "t1", "-d", str(dep), "--root", str(root)])
    assert res.exit_code == 0, res.output


@pytest.fixture(scope="module")
def fast(testbed: Testbed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    root = tmp_path_factory.mktemp("fast-root")
    generate(FAST, root)
    testbed.install_tree(root)
    yield testbed


@pytest.fixture
def sd(fast: Testbed) -> Iterator[Systemd]:
    with Systemd(fast.bus_address.decode()) as client:
        yield client
    fast.systemctl("stop", "openstack.target", check=False)
    fast.systemctl("reset-failed", check=False)


def cli(tb: Testbed, *args: str) -> tuple[int, str]:
    return cli_bus(tb.bus_address.decode(), *args)


def cli_bus(bus: str, *args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, [*args, "--bus", bus])
    return res.exit_code, res.output


def test_target_starts_in_dependency_order_with_readiness(fast: Testbed, sd: Systemd) -> None:
    for _ in range(3):
        oc = control.run_verb(sd, "start", [], timeout=120, out=lambda s: None)
        assert oc.ok, oc.failed
        ends = {u: e.at for u, e in oc.results.items()}
        db, api, worker, cache = (ends[unit_of(s)] for s in ("db", "api", "worker", "cache"))
        # api could only succeed because it started after db was *ready*
        assert db < api < worker
        assert cache < worker  # worker is ordered after cache, which said READY=1 itself
        props = sd.properties(unit_of("api"))
        assert props["ActiveState"] == "active"
        stop = control.run_verb(sd, "stop", [], timeout=60, out=lambda s: None)
        assert stop.ok
        # stopping the target stops all of them, in reverse dependency order
        sends = {u: e.at for u, e in stop.results.items()}
        assert sends[unit_of("worker")] <= sends[unit_of("api")] <= sends[unit_of("db")]
        for s in ("db", "api", "worker", "cache"):
            assert sd.properties(unit_of(s))["ActiveState"] == "inactive"


def test_cli_start_status_why(fast: Testbed, sd: Systemd) -> None:
    code, out = cli(fast, "start")
    assert code == 0, out
    assert "start: all" in out and "worker" in out
    code, out = cli(fast, "status", "--json")
    assert code == 0, out
    import json
    st = json.loads(out)
    assert st["active"] == "active"
    rows = {r["service"]: r for r in st["services"]}
    assert set(rows) == {"api", "cache", "db", "worker"}
    assert rows["db"]["main_pid"] and rows["db"]["sub"] == "running"
    assert "tcp:7001" in rows["db"]["readiness"]
    assert "cache warm" in rows["cache"]["readiness"]  # STATUS= passed through from the service
    code, out = cli(fast, "why", "api")
    assert code == 0 and "api is running" in out
    code, out = cli(fast, "stop", "api")
    assert code == 0, out
    code, out = cli(fast, "why", "api")
    assert code == 1 and "`osunits start api` starts it and what it requires" in out
    code, out = cli(fast, "status")
    assert code == 1 and "api" in out and "inactive/dead" in out


def test_watch_streams_state_changes(fast: Testbed, sd: Systemd) -> None:
    assert control.run_verb(sd, "start", ["cache"], timeout=60, out=lambda s: None).ok
    seen: list[tuple[str, str, float]] = []
    ready = threading.Event()

    def watcher() -> None:
        with Systemd(fast.bus_address.decode()) as w:
            it = w.watch([unit_of("cache")], until=time.time() + 20)
            ready.set()  # watch() returned: it follows cache from here on
            for ch in it:
                seen.append((ch.active, ch.sub, time.time()))
                if ch.active == "active" and len(seen) > 1:
                    return

    t = threading.Thread(target=watcher)
    t.start()
    assert ready.wait(10)
    fast.systemctl("restart", unit_of("cache"))
    t.join(30)
    states = [a for a, _, _ in seen]
    assert "deactivating" in states or "activating" in states, seen
    assert states[-1] == "active"


def test_failed_dependency_is_reported_with_cancelled_chain(
        fast: Testbed, sd: Systemd, tmp_path: Path) -> None:
    dep = tmp_path / "dep"
    shutil.copytree(FAST, dep)
    db = dep / "services/db.yaml"
    db.write_text(db.read_text().replace('DELAY: "2"', 'DELAY: "60"')
                  .replace("timeout: 30s", "timeout: 2s"))
    root = tmp_path / "root"
    generate(dep, root)
    fast.install_tree(root)
    try:
        code, out = cli(fast, "start")
        assert code == 1, out
        assert "FAILED db" in out
        assert "cancelled because of it: api, worker" in out
        assert "FAILED db: job failed, readiness timeout" in out, out
        assert "osunits-init: readiness check failed: tcp connect" in out  # its last log lines
        code, out = cli(fast, "why", "worker")
        assert code == 1
        assert "requires api, which is inactive" in out
        assert "requires db, which is failed" in out
        assert "readiness timeout" in out
    finally:
        generate(FAST, root)
        fast.install_tree(root)


def test_why_during_an_automatic_restart_and_after_a_requirement_was_stopped(
        fast: Testbed, sd: Systemd, tmp_path: Path) -> None:
    """db killed and restarting: api runs but says what it lacks, db says systemd is on it
    (not its last readiness text); db stopped: api's hint starts api, which pulls db in
    (`osunits start db` would have left api down)."""
    dep = tmp_path / "dep"
    shutil.copytree(FAST, dep)
    with (dep / "services/db.yaml").open("a") as f:
        f.write("restart: on-failure\nrestart_sec: 30s\n")
    root = tmp_path / "root"
    generate(dep, root)
    fast.install_tree(root)
    db = unit_of("db")
    try:
        assert cli(fast, "start")[0] == 0
        fast.systemctl("kill", "-s", "KILL", db)
        deadline = time.monotonic() + 20
        while sd.properties(db)["SubState"] != "auto-restart":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        code, out = cli(fast, "why", "api")
        assert code == 1, out
        assert out.splitlines()[1] == "  but it requires db, which systemd is restarting " \
                                      "(auto-restart)", out
        code, out = cli(fast, "why", "db")
        assert code == 1
        assert "  systemd restarts it by its Restart= policy" in out, out
        assert "ready" not in out.split("last log lines")[0], out  # no stale STATUS= text
        assert "osunits start" not in out  # nothing for the operator to do
        assert cli(fast, "stop", "db")[0] == 0  # api and worker stop with it
        code, out = cli(fast, "why", "api")
        assert code == 1
        assert "  it requires db, which is inactive (dead): api cannot run without it" in out
        assert "  `osunits start api` starts it and what it requires" in out, out
        assert "osunits start db" not in out
        code, out = cli(fast, "start", "db")  # as an operator might anyway
        assert code == 0, out
        assert "still down, and they require what was started: api, worker (`osunits " \
               "start` starts every service of the host)" in out, out
    finally:
        generate(FAST, root)
        fast.install_tree(root)


def test_cancelled_chain_reads_each_unit_once(
        fast: Testbed, sd: Systemd, monkeypatch: pytest.MonkeyPatch) -> None:
    """A start of a 20-unit Requires= chain whose root fails: finding what cancelled each
    of the 19 others reads every unit's properties at most once in the whole run (it read
    them once per cancelled unit: 241 GetAll), and says the same as before."""
    n = 20
    chain = [f"osunits-chain{i:02d}.service" for i in range(1, n + 1)]
    for i, unit in enumerate(chain):
        below = f"Requires={chain[i - 1]}\nAfter={chain[i - 1]}\n" if i else ""
        fast.write(f"/etc/systemd/system/{unit}",
                   f"[Unit]\n{below}[Service]\nType=oneshot\nRemainAfterExit=yes\n"
                   f"ExecStart={'/bin/true' if i else '/bin/false'}\n")
    fast.daemon_reload()
    log = log_calls(monkeypatch)
    try:
        oc = control.run_verb(sd, "start", [chain[-1]], timeout=60, out=lambda s: None)
        reads = log.of(sd, b"GetAll")
        assert oc.failed == {chain[0]: "failed"}
        assert oc.cancelled == {chain[0]: chain[1:]}
        assert len(reads) <= 2 * n + 5, len(reads)
        assert len(reads) == len(set(reads)), sorted(reads)  # no (unit, interface) twice
        out: list[str] = []
        control.report_outcome(sd, "start", oc, out.append)
        assert out[0] == f"FAILED {chain[0]}: job failed, the service exited with status 1"
        assert out[1] == "  cancelled because of it: " + ", ".join(chain[1:])
    finally:
        for unit in chain:
            (fast.root / "etc/systemd/system" / unit).unlink()
        fast.systemctl("reset-failed", check=False)
        fast.daemon_reload()


def test_one_shot_connections_do_not_subscribe(
        fast: Testbed, sd: Systemd, monkeypatch: pytest.MonkeyPatch) -> None:
    """status and daemon-reload never ask systemd for signals (Subscribe) nor match any;
    following jobs matches JobRemoved only, watching matches the watched units only."""
    fast.systemctl("stop", unit_of("cache"))
    log = log_calls(monkeypatch)
    address = fast.bus_address.decode()
    daemon_reload(address)
    assert log.methods(log.connections[-1]) == [b"Reload"]
    with Systemd(address) as one, Systemd(address) as watcher:
        control.status(one)
        assert b"Subscribe" not in log.methods(one)
        changes = watcher.watch([unit_of("cache")], until=time.time() + 30)
        # sd follows its jobs: systemd now sends signals, for cache and all it pulls in
        assert control.run_verb(sd, "start", ["cache"], timeout=60, out=lambda s: None).ok
        assert b"Subscribe" in log.methods(sd)
        # the signals each connection was sent (its inbox) until the watcher saw cache up
        cache = watcher.unit_path(unit_of("cache"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and ((cache, "active") not in {
                (p, c.get("ActiveState")) for p, c in watcher._inbox.states}):
            watcher.pump(0.5)
        one.pump(0.2)
        assert {p for p, _ in watcher._inbox.states} == {cache}  # not the units it pulled in
        assert not watcher._inbox.jobs
        assert not one._inbox.jobs and not one._inbox.states
        assert not sd._inbox.states  # following jobs needs no PropertiesChanged
        assert b"Subscribe" not in log.methods(one)
        assert next(c for c in changes if c.active == "active").unit == unit_of("cache")


def test_crash_restarts_per_policy_and_dependents_follow(
        fast: Testbed, sd: Systemd, tmp_path: Path) -> None:
    """restart: on-failure brings a killed db back; api (requires db) is restarted after
    db is ready again, by systemd alone (docs/failure-semantics.md)."""
    dep = tmp_path / "dep"
    shutil.copytree(FAST, dep)
    y = dep / "deployment.yaml"
    y.write_text(y.read_text().replace('  restart: "no"', "  restart: on-failure\n"
                                       "  restart_sec: 1s"))
    root = tmp_path / "root"
    generate(dep, root)
    fast.install_tree(root)
    try:
        assert control.run_verb(sd, "start", [], timeout=60, out=lambda s: None).ok
        api_since = sd.properties(unit_of("api"))["ActiveEnterTimestampMonotonic"]
        leader = fast.run(["/usr/bin/machinectl", "show", "db", "-p", "Leader",
                           "--value"]).stdout.strip()
        payload = fast.run(["/usr/bin/cat", f"/proc/{leader}/task/{leader}/children"]).stdout
        fast.run(["/usr/bin/kill", "-KILL", payload.split()[0]])
        changes = []
        for ch in sd.watch([unit_of("db"), unit_of("api")], until=time.time() + 30):
            changes.append((ch.unit, ch.active))
            if (ch.unit == unit_of("api") and ch.active == "active"
                    and (unit_of("db"), "active") in changes):
                break
        db = sd.properties(unit_of("db"), b"org.freedesktop.systemd1.Service")
        assert db["NRestarts"] == 1, changes
        assert sd.properties(unit_of("db"))["ActiveState"] == "active"
        api = sd.properties(unit_of("api"))
        assert api["ActiveState"] == "active"
        assert api["ActiveEnterTimestampMonotonic"] > api_since  # api was restarted
        # ... and only once db was ready again: api went down, then up after db
        db_up = max(i for i, c in enumerate(changes) if c == (unit_of("db"), "active"))
        api_up = max(i for i, c in enumerate(changes) if c == (unit_of("api"), "active"))
        api_down = [c for c in changes if c[0] == unit_of("api") and c[1] != "active"]
        assert api_down, changes
        assert db_up < api_up
    finally:
        generate(FAST, root)
        fast.install_tree(root)


def test_generate_asks_systemd_to_reload(fast: Testbed, sd: Systemd, tmp_path: Path) -> None:
    """`osunits generate` into a live root reloads that systemd over D-Bus: a changed
    definition is what systemd shows at once, without `systemctl daemon-reload`."""
    dep = tmp_path / "dep"
    shutil.copytree(FAST, dep)
    cache = dep / "services/cache.yaml"
    cache.write_text(cache.read_text().replace("a cache that reports", "a renamed cache that reports"))
    # write straight into the test host's root, as `generate` on that host would
    root = fast.root
    res = CliRunner().invoke(app, ["generate", "-H", "t1", "-d", str(dep), "--root", str(root),
                                   "--bus", fast.bus_address.decode()])
    try:
        assert res.exit_code == 0, res.output
        assert "systemd reloaded its units" in res.output
        desc = sd.properties(unit_of("cache"))["Description"]
        assert desc.startswith("cache: a renamed cache"), desc
    finally:
        res = CliRunner().invoke(app, ["generate", "-H", "t1", "-d", str(FAST), "--root",
                                       str(root), "--bus", fast.bus_address.decode()])
        assert res.exit_code == 0, res.output


def test_generate_refuses_to_remove_a_running_services_units(
        fast: Testbed, sd: Systemd, tmp_path: Path) -> None:
    """Units removed under a running container are lost to systemd: stopping it later
    would skip their ExecStop= and leave its network namespace and veth behind."""
    dep = tmp_path / "dep"
    shutil.copytree(FAST, dep)
    (dep / "services/worker.yaml").unlink()
    y = dep / "deployment.yaml"
    y.write_text(y.read_text().replace("[db, api, cache, worker]", "[db, api, cache]"))
    _refused_until_stopped(fast, dep, "worker", "etc/systemd/nspawn/worker.nspawn",
                           "worker would leave this host while running: stop it first "
                           "(osunits stop worker)")


def _refused_until_stopped(fast: Testbed, dep: Path, service: str, path: str,
                           said: str) -> None:
    """With ``service`` running, generating ``dep`` is refused (by --dry-run too) saying
    ``said`` and leaves ``path`` as it was; once it is stopped, the file goes and so does
    its namespace."""
    gen = ["generate", "-H", "t1", "-d", str(dep), "--root", str(fast.root),
           "--bus", fast.bus_address.decode()]
    assert cli(fast, "start", service)[0] == 0
    unit = fast.root / path
    before = unit.read_bytes()
    try:
        for dry in (["--dry-run"], []):
            res = CliRunner().invoke(app, gen + dry)
            assert res.exit_code == 2, res.output
            assert said in res.output
            assert unit.read_bytes() == before
        assert cli(fast, "stop", service)[0] == 0
        res = CliRunner().invoke(app, gen)
        assert res.exit_code == 0, res.output
        assert not unit.exists()
        assert f"osunits-{service}" not in fast.run(["/sbin/ip", "netns", "list"]).stdout
    finally:
        res = CliRunner().invoke(app, ["generate", "-H", "t1", "-d", str(FAST), "--root",
                                       str(fast.root), "--bus", fast.bus_address.decode()])
        assert res.exit_code == 0, res.output


def test_names_are_checked_for_every_runtime_command(fast: Testbed, sd: Systemd) -> None:
    """An unknown name, a full unit name systemd does not have, a masked unit: one line
    naming it and exit 2, never a pystemd traceback nor a made-up state."""
    for args in (["start", "foo.service"], ["restart", "systemd-nspawn@nope.service"],
                 ["why", "foo.service"], ["logs", "nope"], ["logs", "foo.service"],
                 ["watch", "nope", "--duration", "1"], ["stop", "nope"]):
        code, out = cli_process(fast.bus_address.decode(), *args)
        assert code == 2, (args, out)
        assert out.startswith("osunits: ") and "Traceback" not in out, (args, out)
        assert args[1] in out, (args, out)
    assert "no such unit: foo.service" in cli(fast, "why", "foo.service")[1]
    cache = unit_of("cache")
    fast.systemctl("mask", cache)
    try:
        for verb in ("start", "restart"):
            code, out = cli(fast, verb, "cache")
            assert code == 2, out
            assert out == (f"osunits: {cache} is masked: `systemctl unmask {cache}` to allow "
                           "starting it\n")
        code, out = cli(fast, "why", "cache")
        assert code == 1 and f"it is masked: `systemctl unmask {cache}`" in out, out
    finally:
        fast.systemctl("unmask", cache)


def test_logs_refuse_a_bus_they_cannot_read(fast: Testbed) -> None:
    code, out = cli_process("unix:path=/nonexistent", "logs", "db")
    assert code == 2 and "cannot reach systemd on unix:path=/nonexistent" in out, out
    code, out = cli_process(fast.bus_address.decode(), "logs", "db", "-n", "1")
    assert code == 0 and "systemd-nspawn@db.service" in out, out


def cli_process(bus: str, *args: str) -> tuple[int, str]:
    """The CLI in a process of its own: `logs` ends in exec(journalctl)."""
    res = subprocess.run([sys.executable, "-m", "osunits.cli", *args, "--bus", bus],
                         capture_output=True, text=True, timeout=60, check=False)
    return res.returncode, res.stderr + res.stdout


def test_operator_restarts_are_never_refused_by_the_start_limit(
        fast: Testbed, sd: Systemd) -> None:
    """StartLimitBurst=5 counts manual starts too, and a restart of db restarts api and
    worker: six `osunits restart db` in a row all succeed (each resets the start limit of
    what it restarts), and db and its dependents stay up."""
    assert cli(fast, "start")[0] == 0
    for i in range(6):
        code, out = cli(fast, "restart", "db")
        assert code == 0, (i, out)
        assert "restart: all" in out
    for s in ("db", "api", "worker", "cache"):
        assert sd.properties(unit_of(s))["ActiveState"] == "active", s


def test_a_start_limit_hit_says_how_to_start_again(fast: Testbed, sd: Systemd) -> None:
    """Six starts of cache by systemctl: the sixth is refused (Result=start-limit-hit);
    `why` names `systemctl reset-failed`, and `osunits start cache` does it and starts it."""
    cache = unit_of("cache")
    for _ in range(6):
        fast.systemctl("restart", cache, check=False)
    assert sd.properties(cache, b"org.freedesktop.systemd1.Service")["Result"] == "start-limit-hit"
    code, out = cli(fast, "why", "cache")
    assert code == 1
    assert (f"start limit hit: more than 5 starts in 75 s; `systemctl reset-failed {cache}` "
            "(or `osunits start cache`, which does it) allows starting it again") in out, out
    code, out = cli(fast, "start", "cache")
    assert code == 0, out
    assert sd.properties(cache)["ActiveState"] == "active"


def test_generate_refuses_to_remove_an_active_namespace_unit(
        fast: Testbed, sd: Systemd, tmp_path: Path) -> None:
    """cache moving to the host's network keeps its container but loses its namespace unit:
    removed while active, its ExecStop= (ip netns del) would never run."""
    dep = tmp_path / "dep"
    shutil.copytree(FAST, dep)
    cache = dep / "services/cache.yaml"
    cache.write_text(cache.read_text() + "network: host\n")
    _refused_until_stopped(fast, dep, "cache", "etc/systemd/system/osunits-net-cache.service",
                           "osunits-net-cache.service would be removed while active")


def test_a_containers_root_given_as_proc_pid_root_is_not_this_machines(fast: Testbed) -> None:
    """/proc/PID/root resolves to "/" by name: generate took it for this machine's root
    (it reloaded this machine's systemd and left --root out of its hints)."""
    root = f"/proc/{fast.pid1}/root"
    res = CliRunner().invoke(app, ["generate", "-H", "t1", "-d", str(FAST), "--root", root])
    assert res.exit_code == 0, res.output
    if (Path(root) / "etc/systemd/system/multi-user.target.wants/openstack.target").exists():
        pytest.skip("the target is enabled there: no note to check")
    assert f"`systemctl enable openstack.target --root {root}`" in res.output, res.output
