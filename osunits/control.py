"""What the runtime commands do and print: start/stop/restart, status, watch, why, logs.

Everything here asks systemd (through ``runtime.Systemd``); the intended graph
is the one ``generate`` installed, read back live from the units' own
Requires=/Wants=/After= — so it works on a host that has no deployment copy.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from osunits.runtime import JOB_OK, SERVICE, UNIT, JobEnd, Systemd
from osunits.systemd.units import (
    TARGET,
    UNIT_PREFIX,
    UNIT_SUFFIX,
    is_unit,
    journal_args,
    root_of,
    service_of,
    unit_of,
)

Print = Callable[[str], None]
_NO_VALUE = (1 << 64) - 1  # systemd's "unset" for unsigned properties


def last_log_lines(unit: str, address: str | None, n: int = 10) -> list[str]:
    """The unit's last log lines, or none where its journal cannot be read."""
    if shutil.which("journalctl") is None:
        return []
    try:
        where = journal_args(address)
    except LookupError:
        return []
    res = subprocess.run(["journalctl", *where, "-u", unit, "-n", str(n),
                          "--no-pager", "-o", "short-iso", "-q"],
                         capture_output=True, text=True, check=False)
    return [ln for ln in res.stdout.splitlines() if ln.strip()]


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    results: dict[str, JobEnd]
    failed: dict[str, str]  # unit → job result, for the roots of failure
    cancelled: dict[str, list[str]]  # failed unit → units cancelled because of it


Props = dict[str, dict[str, Any]]  # unit → its Unit properties, each read once a run

# A start job starts what a unit requires or wants; a restart job is propagated to the
# units that require it, are bound to it or are part of it (systemd.unit(5): Requires=,
# BindsTo=, PartOf=), which are then started again with what they require.
STARTS_WITH = ("Requires", "BindsTo", "Wants")
RESTARTS_WITH = ("RequiredBy", "BoundBy", "ConsistsOf")


def _props(sd: Systemd, unit: str, memo: Props) -> dict[str, Any]:
    if unit not in memo:
        memo[unit] = sd.properties(unit)
    return memo[unit]


def run_verb(sd: Systemd, verb: str, services: list[str], *, timeout: float,
             out: Print) -> Outcome:
    """start|stop|restart, following every job of the transaction to its end.

    An operator's start or restart is never refused by the start limit: the failed state
    and start rate limit of every unit of osunits' that it (re)starts are reset first, as
    `systemctl reset-failed` does (the limit is for crash loops: systemd counts manual
    starts too, and a restart of db restarts api and worker, which require it)."""
    memo: Props = {}
    units = check_units(sd, services, starting=verb != "stop", memo=memo) or [TARGET]
    if verb in ("start", "restart"):
        for unit in _starts(sd, units, verb, memo):
            sd.reset_failed(unit)
    t0 = time.monotonic()

    def progress(end: JobEnd) -> None:
        if not end.unit.startswith(UNIT_PREFIX) and end.unit != TARGET and end.result == JOB_OK:
            return  # slices, mounts and modprobe units of the transaction: noise when fine
        mark = "ok " if end.result == JOB_OK else "!! "
        out(f"{mark}{end.result:<10} {service_of(end.unit):<28} {end.at - t0:7.2f}s")

    results = sd.run_jobs(units, verb, timeout, progress)
    bad = {u: e.result for u, e in results.items() if e.result != JOB_OK}
    roots = {u: r for u, r in bad.items() if r != "dependency"}
    cancelled: dict[str, list[str]] = {u: [] for u in roots}
    for u, r in sorted(bad.items()):
        if r == "dependency":
            cause = _failed_cause(sd, u, set(roots), memo)
            cancelled.setdefault(cause, []).append(u)
    return Outcome(not bad, results, roots, cancelled)


def _required(p: dict[str, Any]) -> set[str]:
    """The units a unit's properties say it cannot run without."""
    return set(p.get("Requires", [])) | set(p.get("BindsTo", []))


def _ours(unit: str) -> bool:
    """A unit osunits generates: a container, its network units, a gate, the target."""
    return unit.startswith((UNIT_PREFIX, "osunits-")) or unit == TARGET


def _closure(sd: Systemd, units: list[str], keys: tuple[str, ...], memo: Props) -> list[str]:
    """``units`` and osunits' units reached from them through the dependencies ``keys``."""
    seen = dict.fromkeys(units)
    todo = list(units)
    while todo:
        p = _props(sd, todo.pop(0), memo)
        for dep in sorted({d for k in keys for d in p.get(k, [])}):
            if dep not in seen and _ours(dep):
                seen[dep] = None
                todo.append(dep)
    return list(seen)


def _starts(sd: Systemd, units: list[str], verb: str, memo: Props) -> list[str]:
    """The units of osunits' a start (restart) of ``units`` may start: each counts against
    its start limit.  A unit that is active and not restarted is left alone (a start job
    of an active unit is no start, and its restart counter stays)."""
    restarted = _closure(sd, units, RESTARTS_WITH, memo) if verb == "restart" else []
    started = _closure(sd, restarted or units, STARTS_WITH, memo)
    return [u for u in started
            if u in restarted or _props(sd, u, memo).get("ActiveState") != "active"]


def _failed_cause(sd: Systemd, unit: str, roots: set[str], memo: Props) -> str:
    """The failed unit that ``unit`` (transitively) requires.

    ``memo`` keeps each unit's properties across the walks of one run: the cancelled
    units of a chain share their requirements, and reading them again for every walk
    cost a GetAll per unit per walk (quadratic in the chain).
    """
    seen = {unit}
    todo = [unit]
    while todo:
        p = _props(sd, todo.pop(0), memo)
        for dep in sorted(p.get("Requires", [])) + sorted(p.get("BindsTo", [])):
            if dep in roots:
                return str(dep)
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return "(unknown)"


def report_outcome(sd: Systemd, verb: str, oc: Outcome, out: Print) -> None:
    if oc.ok:
        out(f"{verb}: all {len(oc.results)} jobs done")
        return
    for unit, result in sorted(oc.failed.items()):
        props = unit_properties(sd, unit)
        out(f"FAILED {service_of(unit)}: job {result}, {explain_result(props)}")
        chain = oc.cancelled.get(unit, [])
        if chain:
            out("  cancelled because of it: " + ", ".join(service_of(u) for u in chain))
        lines = last_log_lines(unit, sd.address)
        if lines:
            out("  last log lines:")
            out("\n".join("    " + ln for ln in lines))
    orphans = oc.cancelled.get("(unknown)")
    if orphans:
        out("  also cancelled: " + ", ".join(service_of(u) for u in orphans))


def still_down(sd: Systemd, started: Iterable[str]) -> list[str]:
    """The host's services that are down and require a unit just ``started``, directly or
    through others down: starting a requirement does not start what stopped with it."""
    members = sd.target_members()
    props = {u: sd.properties(u) for u in members}
    down = {u for u, p in props.items() if p.get("ActiveState") in ("inactive", "failed")}
    reached, out = set(started), []
    grew = True
    while grew:
        grew = False
        for u in sorted(down - reached):
            if reached & _required(props[u]):
                reached.add(u)
                out.append(service_of(u))
                grew = True
    return sorted(out)


READINESS_TIMEOUT_STATUS = 124  # the container init's exit status (docs/readiness.md)


def unit_properties(sd: Systemd, unit: str) -> dict[str, Any]:
    """A unit's properties, a service's with its Service ones (Result=, NRestarts=): only
    a service has that interface (a socket's GetAll of it is an error)."""
    return sd.properties(unit, UNIT, *((SERVICE,) if unit.endswith(".service") else ()))


def explain_result(p: dict[str, Any]) -> str:
    """A unit's Result= and exit status in an operator's words."""
    result, status = p.get("Result"), p.get("ExecMainStatus")
    if result == "exit-code" and status == READINESS_TIMEOUT_STATUS:
        return "readiness timeout: the service did not become ready in time"
    if result == "timeout":
        return "start timed out (TimeoutStartSec=)"
    if result == "exit-code":
        return f"the service exited with status {status}"
    if result == "signal":
        return f"the service was killed by signal {status}"
    if result == "start-limit-hit":
        return start_limit_hit(p)
    return f"result {result}"


def start_limit_hit(p: dict[str, Any]) -> str:
    """Result=start-limit-hit: what it means, and how to start the unit again."""
    unit = str(p.get("Id") or "UNIT")
    burst, interval = p.get("StartLimitBurst"), p.get("StartLimitIntervalUSec")
    within = (f"more than {burst} starts in {interval / 1e6:g} s"
              if isinstance(burst, int) and isinstance(interval, int) else "too many starts")
    restarts = p.get("NRestarts")
    return (f"start limit hit: {within}"
            + (f" ({restarts} automatic restarts)" if restarts else "")
            + f"; `systemctl reset-failed {unit}` (or `osunits start {service_of(unit)}`, "
            "which does it) allows starting it again")


def _ts(usec: int) -> str:
    if not usec:
        return "-"
    return dt.datetime.fromtimestamp(usec / 1e6).isoformat(sep=" ", timespec="seconds")


def _mem(v: int | None) -> str:
    if v is None:  # status() maps systemd's "unset" to None
        return "-"
    for unit in ("B", "K", "M", "G"):
        if v < 1024:
            return f"{v:.0f}{unit}" if unit == "B" else f"{v:.1f}{unit}"
        v = v / 1024  # type: ignore[assignment]
    return f"{v:.1f}T"


def status(sd: Systemd, address: str | None = None) -> dict[str, Any]:
    """The target and its services; ``address``: the bus ``sd`` reached (None: the system
    bus), for the generator's errors file on that systemd's root."""
    target = sd.properties(TARGET)
    rows = []
    for unit in sd.target_members(TARGET, target):
        p = sd.properties(unit, UNIT, SERVICE)
        mem = p.get("MemoryCurrent")
        rows.append({
            "service": service_of(unit),
            "machine": service_of(unit),
            "unit": unit,
            "active": p.get("ActiveState"),
            "sub": p.get("SubState"),
            "since": _ts(p.get("StateChangeTimestamp", 0)),
            "main_pid": p.get("MainPID") or None,
            "memory": None if mem in (None, _NO_VALUE) else mem,
            "restarts": p.get("NRestarts", 0),
            "readiness": (p.get("StatusText") or "")
            if p.get("ActiveState") in ("active", "reloading")
            or (p.get("ActiveState"), p.get("SubState")) == ("activating", "start") else "",
            "result": p.get("Result"),
            "addresses": sd.machine_addresses(service_of(unit))
            if p.get("ActiveState") == "active" else [],
        })
    return {"target": TARGET, "active": target.get("ActiveState"),
            "sub": target.get("SubState"), "since": _ts(target.get("StateChangeTimestamp", 0)),
            "services": rows, "generator": generator_failure(sd, target, root_of(address))}


def generator_failure(sd: Systemd, target: dict[str, Any], root: str | None
                      ) -> dict[str, Any] | None:
    """What the generator's last run left, if it failed: the target requires its failure
    unit then, and it is the last good one (with the generator's drop-in) or a stand-in.
    None when it did not fail, or the target is not the generator's."""
    from osunits.generator import ERRORS_FILE, FAILED_UNIT, TARGET_DROPIN

    if FAILED_UNIT not in target.get("Requires", []):
        return None
    kept = any(p.endswith(f".d/{TARGET_DROPIN}") for p in target.get("DropInPaths", []))
    errors: list[str] = []
    if root is not None:
        try:
            with open(f"{root.rstrip('/')}{ERRORS_FILE}") as f:
                errors = f.read().splitlines()
        except OSError as e:  # root's alone: say where, and show the unit's summary
            errors = [f"({ERRORS_FILE}: {e.strerror})"]
    if not errors or errors[0].startswith("("):
        errors.append(sd.properties(FAILED_UNIT).get("Description", ""))
    return {"units": "last-good" if kept else "stand-in", "errors": errors,
            "errors_file": str(ERRORS_FILE), "failed_unit": FAILED_UNIT}


STATUS_ERROR_LINES = 5  # of the generator's errors: the rest are in its file


def format_status(st: dict[str, Any]) -> str:
    lines = [f"{st['target']}: {st['active']} ({st['sub']}) since {st['since']}"]
    gen = st.get("generator")
    if gen:
        lines.append("osunits generator: its last run FAILED (the deployment has errors): "
                     + ("these are the last good units, kept from an earlier run since boot; "
                        "the deployment's changes since are not applied"
                        if gen["units"] == "last-good" else
                        f"no services were generated; {st['target']} is a stand-in that fails"))
        errors = gen["errors"]
        lines += [f"  {e}" for e in errors[:STATUS_ERROR_LINES]]
        if len(errors) > STATUS_ERROR_LINES:
            lines.append(f"  ... {len(errors) - STATUS_ERROR_LINES} more line(s) in "
                         f"{gen['errors_file']}")
        lines.append("fix the deployment, then `systemctl daemon-reload` "
                     f"(the errors: `journalctl -u {gen['failed_unit']}`)")
    if not st["services"]:
        lines.append(f"no services: {st['target']} wants none")
        return "\n".join(lines)
    # as wide as the longest state: "deactivating/stop-sigterm" would shift every column
    w = max(20, *(len(f"{r['active']}/{r['sub']}") for r in st["services"]))
    hdr = (f"{'SERVICE':<26} {'STATE':<{w}} {'SINCE':<20} {'ADDRESS':<15} {'PID':>7} "
           f"{'MEMORY':>8} {'RESTARTS':>8}  READINESS")
    lines.append(hdr)
    for r in st["services"]:
        addr = next((a for a in r["addresses"] if "." in a), "-")
        lines.append(f"{r['service']:<26} {r['active'] + '/' + r['sub']:<{w}} {r['since']:<20} "
                     f"{addr:<15} {r['main_pid'] or '-':>7} {_mem(r['memory']):>8} {r['restarts']:>8}  "
                     f"{r['readiness']}")
    return "\n".join(lines)


def check_units(sd: Systemd, names: list[str], *, starting: bool = False,
                memo: Props | None = None) -> list[str]:
    """The units of ``names``: each a service of this host's target (``keystone``, or its
    unit ``systemd-nspawn@keystone.service``) or another unit systemd knows
    (``osunits-remote-web1.service``, a host unit a service requires).  A name that is
    none of these, and for ``starting`` a unit that is masked or does not load, is a
    LookupError: one line per problem, every one found."""
    memo = {} if memo is None else memo
    members: set[str] | None = None
    unknown: list[str] = []
    problems: list[str] = []
    units: list[str] = []
    for name in names:
        unit = unit_of(name)
        if not is_unit(name) or (name.startswith(UNIT_PREFIX) and name.endswith(UNIT_SUFFIX)):
            if members is None:
                members = {service_of(u) for u in sd.target_members()}
            if service_of(unit) not in members:
                unknown.append(name)
                continue
        problem = _load_problem(unit, _props(sd, unit, memo), starting)
        if problem:
            problems.append(problem)
        else:
            units.append(unit)
    if unknown:
        problems.insert(0, f"not a service of this host: {', '.join(unknown)} (services: "
                        f"{', '.join(sorted(members or ()))})")
    if problems:
        raise LookupError("\n".join(problems))
    return units


def _load_problem(unit: str, p: dict[str, Any], starting: bool) -> str:
    """Why systemd cannot act on ``unit`` (its LoadState), or ""."""
    load, active = p.get("LoadState"), p.get("ActiveState")
    if load == "loaded":
        return ""
    if load == "not-found" and active == "inactive":
        return f"no such unit: {unit}"
    if not starting:  # a masked or broken unit can still be stopped, asked, watched
        return ""
    if load == "masked":
        return f"{unit} is masked: `systemctl unmask {unit}` to allow starting it"
    err = p.get("LoadError") or ("", "")
    return f"{unit} cannot be loaded ({load}" + (f": {err[1]}" if err[1] else "") + ")"


def why(sd: Systemd, service: str) -> list[str]:
    """Why is SERVICE not running? The answer walks its requirements to a root cause."""
    return _why(sd, check_units(sd, [service])[0])


def _why(sd: Systemd, unit: str, top: bool = True,
         p: dict[str, Any] | None = None) -> list[str]:
    """``unit``'s state, what it waits for and the requirements that keep it down, each
    walked to its own cause; ``top``: the service asked about (the one the hint starts);
    ``p``: its properties, if read already."""
    p = p or unit_properties(sd, unit)
    name = service_of(unit)
    active, sub, result = p.get("ActiveState"), p.get("SubState"), p.get("Result")
    down = _requirements_down(sd, p)
    if active == "active":
        lines = [f"{name} is running ({sub}) since {_ts(p.get('StateChangeTimestamp', 0))}"
                 + (f": {p['StatusText']}" if p.get("StatusText") else "")]
        for dep, dp in down:  # up, but what it needs is not (a restart in progress)
            lines.append(f"  but it requires {service_of(dep)}, which {_is(dp)}")
        return lines
    lines = [f"{name} is {active} ({sub})"]
    if sub == "auto-restart":
        lines.append(f"  systemd restarts it by its Restart= policy (restarts so far: "
                     f"{p.get('NRestarts', 0)}): no action needed unless it keeps failing")
    elif active in ("activating", "deactivating", "reloading"):
        starting = (active, sub) == ("activating", "start") and p.get("StatusText")
        lines.append(f"  it is {active} now" + (f": {p['StatusText']}" if starting else ""))
    queued = bool(p.get("Job") and p["Job"][0])
    if queued and sub != "auto-restart":
        lines.append("  systemd has a job queued for it (`systemctl list-jobs`): it is "
                     "waiting for what it is ordered after")
    if p.get("ConditionResult") is False and p.get("ConditionTimestamp"):
        lines.append("  a start condition was not met (see `systemctl status`)")
    if p.get("LoadState") == "masked":
        lines.append(f"  it is masked: `systemctl unmask {unit}` to allow starting it")
    if result and result != "success":
        lines.append(f"  {explain_result(p)}")
    for dep, dp in down:
        lines.append(f"  it requires {service_of(dep)}, which {_is(dp)}: {name} "
                     + ("starts after it" if queued else "cannot run without it"))
        if dep.startswith(UNIT_PREFIX):
            lines += ["  " + ln for ln in _why(sd, dep, top=False, p=dp)[1:]]
        else:  # a gate or network unit: its own last words say why
            lines += ["    " + ln for ln in last_log_lines(dep, sd.address, 8)
                      if "osunits-init" in ln or "Failed" in ln or "error" in ln.lower()]
    if top and active in ("inactive", "failed") and not queued and p.get("LoadState") != "masked":
        failed = result not in (None, "success") or any("failed" in ln for ln in lines[1:])
        lines.append(f"  {'once that is fixed, ' if failed else ''}`osunits start {name}` "
                     "starts it and what it requires")
    logs = last_log_lines(unit, sd.address)
    if logs:
        lines.append("  last log lines:")
        lines += ["    " + ln for ln in logs]
    return lines


def _requirements_down(sd: Systemd, p: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The containers a unit requires that are not active, and its gates and network units
    that failed (those come and go with their container otherwise)."""
    out = []
    for dep in sorted(_required(p)):
        if not _ours(dep):
            continue  # slices, mounts: systemd's own plumbing
        dp = unit_properties(sd, dep)
        if dp.get("ActiveState") != "active" and (
                dep.startswith(UNIT_PREFIX) or dp.get("ActiveState") == "failed"):
            out.append((dep, dp))
    return out


def _is(p: dict[str, Any]) -> str:
    """A unit's state as part of a sentence."""
    if p.get("SubState") == "auto-restart":
        return "systemd is restarting (auto-restart)"
    return f"is {p.get('ActiveState')} ({p.get('SubState')})"


def format_change(ch: Any) -> str:
    t = dt.datetime.fromtimestamp(ch.at).strftime("%H:%M:%S.%f")[:-3]
    return f"{t}  {service_of(ch.unit):<28} {ch.active}/{ch.sub}"
