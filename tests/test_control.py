"""The runtime commands' pure parts: which names they accept, which units an operator's
start resets, what a start-limit hit says, whose journal `logs` reads.  systemd itself is
in tests/systemd/test_runtime.py; here a small stand-in answers from a dict."""

from __future__ import annotations

from typing import Any

import pytest

from osunits.systemd.units import journal_args, unit_of

pytest.importorskip("pystemd")
from osunits import control  # noqa: E402  (imports the runtime, which needs pystemd)

LOADED = {"LoadState": "loaded", "ActiveState": "inactive"}


class Graph:
    """Answers ``properties`` and ``target_members`` as systemd would for these units."""

    def __init__(self, units: dict[str, dict[str, Any]]) -> None:
        self.units = units
        self.read: list[str] = []

    def properties(self, unit: str, *interfaces: bytes) -> dict[str, Any]:
        self.read.append(unit)
        return self.units.get(unit, {"LoadState": "not-found", "ActiveState": "inactive"})

    def target_members(self) -> list[str]:
        return sorted(u for u in self.units["openstack.target"]["Wants"])


def fastdeploy(**extra: dict[str, Any]) -> Graph:
    """db ← api ← worker (Requires=), cache; each with its network unit (BindsTo=)."""
    units: dict[str, dict[str, Any]] = {
        "openstack.target": {**LOADED, "Wants": [unit_of(s) for s in ("api", "cache", "db",
                                                                        "worker")],
                             "ConsistsOf": [unit_of(s) for s in ("api", "cache", "db",
                                                                   "worker")]},
    }
    requires = {"db": [], "api": ["db"], "worker": ["api"], "cache": []}
    for s, deps in requires.items():
        units[unit_of(s)] = {**LOADED, "Requires": [unit_of(d) for d in deps]
                             + ["system-systemd\\x2dnspawn.slice"],
                             "BindsTo": [f"osunits-net-{s}.service"],
                             "RequiredBy": [unit_of(r) for r, d in requires.items() if s in d]}
        units[f"osunits-net-{s}.service"] = {**LOADED, "Requires": ["osunits-bridge.service"],
                                             "BoundBy": [unit_of(s)]}
    units["osunits-bridge.service"] = dict(LOADED)
    units["libvirtd.service"] = dict(LOADED)
    for unit, props in extra.items():
        units[unit] = {**units.get(unit, {}), **props}
    return Graph(units)


def check(g: Graph, names: list[str], starting: bool = False) -> list[str]:
    return control.check_units(g, names, starting=starting)  # type: ignore[arg-type]


def test_names_are_services_of_the_target_or_units_systemd_has() -> None:
    g = fastdeploy()
    assert check(g, ["db", "systemd-nspawn@api.service", "osunits-bridge.service",
                     "libvirtd.service"]) == [unit_of("db"), unit_of("api"),
                                              "osunits-bridge.service", "libvirtd.service"]
    with pytest.raises(LookupError) as e:
        check(g, ["nope", "systemd-nspawn@other.service", "foo.service", "db"])
    assert str(e.value).splitlines() == [
        "not a service of this host: nope, systemd-nspawn@other.service "
        "(services: api, cache, db, worker)",
        "no such unit: foo.service",
    ]


def test_a_masked_or_broken_unit_is_refused_for_a_start_only() -> None:
    cache = unit_of("cache")
    g = fastdeploy(**{cache: {"LoadState": "masked"},
                      unit_of("db"): {"LoadState": "bad-setting",
                                      "LoadError": ("org.freedesktop.systemd1.BadSetting",
                                                    "Unit has a bad setting.")}})
    with pytest.raises(LookupError) as e:
        check(g, ["cache", "db"], starting=True)
    assert str(e.value).splitlines() == [
        f"{cache} is masked: `systemctl unmask {cache}` to allow starting it",
        f"{unit_of('db')} cannot be loaded (bad-setting: Unit has a bad setting.)",
    ]
    assert check(g, ["cache", "db"]) == [cache, unit_of("db")]  # stop, why, logs, watch


def test_a_unit_whose_file_is_gone_but_still_runs_can_be_stopped() -> None:
    g = fastdeploy(**{unit_of("db"): {"LoadState": "not-found", "ActiveState": "active"}})
    assert check(g, ["db"]) == [unit_of("db")]


def starts(g: Graph, names: list[str], verb: str) -> set[str]:
    return set(control._starts(g, [unit_of(n) for n in names] or ["openstack.target"],  # type: ignore[arg-type]
                               verb, {}))


def test_a_restart_resets_what_it_restarts_and_what_it_starts() -> None:
    g = fastdeploy(**{u: {"ActiveState": "active"} for u in (
        *(unit_of(s) for s in ("db", "api", "worker", "cache")),
        *(f"osunits-net-{s}.service" for s in ("db", "api", "worker", "cache")),
        "osunits-bridge.service", "openstack.target")})
    # restart db restarts api and worker (Requires= propagates it); their network units
    # and the bridge, active and not restarted (systemd 252 keeps them up), are left
    # alone; so is cache
    assert starts(g, ["db"], "restart") == {unit_of("db"), unit_of("api"), unit_of("worker")}
    assert "system-systemd\\x2dnspawn.slice" not in g.read  # systemd's own units: not walked
    # a start of running units starts nothing
    assert starts(g, ["worker"], "start") == set()
    assert starts(g, [], "restart") >= {unit_of(s) for s in ("db", "api", "worker", "cache")}


def test_a_start_resets_the_units_it_starts_only() -> None:
    g = fastdeploy(**{unit_of("cache"): {"ActiveState": "failed"},
                      unit_of("db"): {"ActiveState": "active"},
                      "osunits-net-db.service": {"ActiveState": "active"}})
    # worker pulls in api (and db, running); cache, failed, is not touched
    assert starts(g, ["worker"], "start") == {
        unit_of("worker"), unit_of("api"), "osunits-net-worker.service",
        "osunits-net-api.service", "osunits-bridge.service"}
    assert unit_of("cache") in starts(g, [], "start")


def test_a_start_limit_hit_says_how_to_start_again() -> None:
    p = {"Id": unit_of("db"), "Result": "start-limit-hit", "NRestarts": 0,
         "StartLimitBurst": 5, "StartLimitIntervalUSec": 60_000_000}
    said = control.explain_result(p)
    assert said == ("start limit hit: more than 5 starts in 60 s; `systemctl reset-failed "
                    "systemd-nspawn@db.service` (or `osunits start db`, which does it) allows "
                    "starting it again")
    assert "(3 automatic restarts)" in control.explain_result({**p, "NRestarts": 3})


@pytest.mark.parametrize(("bus", "args"), [
    (None, []),
    ("unix:path=/run/dbus/system_bus_socket", []),
    ("unix:path=/proc/42/root/run/dbus/system_bus_socket", ["--root", "/proc/42/root"]),
])
def test_logs_read_the_journal_of_the_systemd_behind_the_bus(
        bus: str | None, args: list[str]) -> None:
    assert journal_args(bus) == args


@pytest.mark.parametrize("bus", ["unix:path=/nonexistent", "tcp:host=192.0.2.1,port=55556",
                                 "unix:path=/proc/self/root/run/dbus/system_bus_socket"])
def test_logs_refuse_a_bus_whose_journal_they_cannot_read(bus: str) -> None:
    with pytest.raises(LookupError, match="cannot read the journal of the systemd on"):
        journal_args(bus)
    assert control.last_log_lines("x.service", bus) == []  # a report goes on without them


def test_a_start_of_a_requirement_names_what_is_still_down_with_it() -> None:
    """`osunits start db` after db, api and worker were stopped: api and worker stay down
    (api requires db, worker requires api); cache, down but needing none of it, is not
    named."""
    g = fastdeploy(**{unit_of(s): {"ActiveState": "inactive"} for s in ("api", "worker", "cache")})
    g.units[unit_of("db")]["ActiveState"] = "active"
    assert control.still_down(g, [unit_of("db")]) == ["api", "worker"]  # type: ignore[arg-type]
    assert control.still_down(g, [unit_of("cache")]) == []  # type: ignore[arg-type]


def test_status_columns_stay_aligned_with_long_states() -> None:
    row = {"service": "mariadb", "addresses": ["10.0.0.2"], "main_pid": 42, "memory": None,
           "restarts": 1, "readiness": "ready", "since": "2026-11-24 14:43:47"}
    st = {"target": "openstack.target", "active": "active", "sub": "active", "since": "x",
          "services": [{**row, "active": "deactivating", "sub": "stop-sigterm"},
                       {**row, "service": "keystone", "active": "active", "sub": "running"}]}
    lines = control.format_status(st).splitlines()[1:]
    assert len({ln.index("2026-11-24") for ln in lines[1:]}) == 1
    assert lines[0].index("SINCE") == lines[1].index("2026-11-24")


def test_jobs_still_running_name_the_services_and_count_the_rest() -> None:
    from osunits.runtime import describe_units

    assert describe_units([unit_of("keystone"), "modprobe@loop.service",
                           "osunits-publish-keystone-5000.socket", unit_of("glance-api"),
                           "var-lib-machines.mount"]) == (
        "glance-api, keystone (and 3 unit(s) of systemd's and osunits' own: sockets, mounts, ...)")
    assert describe_units(["var-lib-machines.mount"]) == "var-lib-machines.mount"


def test_an_interrupted_start_says_systemd_carries_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib

    from typer.testing import CliRunner

    from osunits import cli

    def interrupted(*a: Any, **kw: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_systemd", lambda bus: contextlib.nullcontext(None))
    monkeypatch.setattr(control, "run_verb", interrupted)
    res = CliRunner().invoke(cli.app, ["restart", "keystone"])
    assert res.exit_code == 130
    assert "interrupted; systemd carries on with the restart jobs it has queued" in res.output


def test_a_failed_socket_job_is_reported_without_asking_for_service_properties(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A socket has no org.freedesktop.systemd1.Service interface: asking for it was a
    D-Bus error in the middle of the report."""
    from osunits.runtime import SERVICE

    class Bus:
        address = None

        def properties(self, unit: str, *interfaces: bytes) -> dict[str, Any]:
            if SERVICE in interfaces and not unit.endswith(".service"):
                raise AssertionError(f"{unit}: Unknown interface")
            return {"Id": unit, "Result": "success"}

    monkeypatch.setattr(control, "last_log_lines", lambda *a, **kw: [])
    out: list[str] = []
    oc = control.Outcome(False, {}, {"osunits-publish-web-80.socket": "canceled"}, {})
    control.report_outcome(Bus(), "restart", oc, out.append)  # type: ignore[arg-type]
    assert out == ["FAILED osunits-publish-web-80.socket: job canceled, result success"]
