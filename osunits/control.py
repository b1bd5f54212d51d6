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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from osunits.runtime import JOB_OK, SERVICE, UNIT, JobEnd, Systemd
from osunits.systemd.units import (
    TARGET,
    UNIT_PREFIX,
    journal_args,
    root_of,
    service_of,
    unit_of,
)

Print = Callable[[str], None]
_NO_VALUE = (1 << 64) - 1  # systemd's "unset" for unsigned properties


def last_log_lines(unit: str, address: str | None, n: int = 10) -> list[str]:
    if shutil.which("journalctl") is None:
        return []
    res = subprocess.run(["journalctl", *journal_args(address), "-u", unit, "-n", str(n),
                          "--no-pager", "-o", "short-iso", "-q"],
                         capture_output=True, text=True, check=False)
    return [ln for ln in res.stdout.splitlines() if ln.strip()]


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    results: dict[str, JobEnd]
    failed: dict[str, str]  # unit → job result, for the roots of failure
    cancelled: dict[str, list[str]]  # failed unit → units cancelled because of it


def run_verb(sd: Systemd, verb: str, services: list[str], *, timeout: float,
             out: Print) -> Outcome:
    """start|stop|restart, following every job of the transaction to its end."""
    check_known(sd, services)
    units = [unit_of(s) for s in services] or [TARGET]
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
    requires: dict[str, list[str]] = {}  # shared by the walks: each unit read once a run
    for u, r in sorted(bad.items()):
        if r == "dependency":
            cause = _failed_cause(sd, u, set(roots), requires)
            cancelled.setdefault(cause, []).append(u)
    return Outcome(not bad, results, roots, cancelled)


def _failed_cause(sd: Systemd, unit: str, roots: set[str],
                  requires: dict[str, list[str]]) -> str:
    """The failed unit that ``unit`` (transitively) requires.

    ``requires`` memoizes each unit's Requires= then BindsTo= (sorted) across the walks of
    one run: the cancelled units of a chain share their requirements, and reading them
    again for every walk cost a GetAll per unit per walk (quadratic in the chain).
    """
    seen = {unit}
    todo = [unit]
    while todo:
        u = todo.pop(0)
        if u not in requires:
            props = sd.properties(u)
            requires[u] = sorted(props.get("Requires", [])) + sorted(props.get("BindsTo", []))
        for dep in requires[u]:
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
        props = sd.properties(unit, UNIT, SERVICE)
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


READINESS_TIMEOUT_STATUS = 124  # the container init's exit status (docs/readiness.md)


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
        return f"start limit hit after {p.get('NRestarts')} restarts"
    return f"result {result}"


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
    hdr = (f"{'SERVICE':<26} {'STATE':<20} {'SINCE':<20} {'ADDRESS':<15} {'PID':>7} "
           f"{'MEMORY':>8} {'RESTARTS':>8}  READINESS")
    lines.append(hdr)
    for r in st["services"]:
        addr = next((a for a in r["addresses"] if "." in a), "-")
        lines.append(f"{r['service']:<26} {r['active'] + '/' + r['sub']:<20} {r['since']:<20} "
                     f"{addr:<15} {r['main_pid'] or '-':>7} {_mem(r['memory']):>8} {r['restarts']:>8}  "
                     f"{r['readiness']}")
    return "\n".join(lines)


def check_known(sd: Systemd, services: list[str]) -> None:
    """Refuse names that are not services of this host's target (LookupError)."""
    members = {service_of(u) for u in sd.target_members()}
    unknown = [s for s in services if unit_of(s) != s and s not in members]
    if unknown:
        raise LookupError(f"not a service of this host: {', '.join(unknown)} "
                          f"(services: {', '.join(sorted(members))})")


def why(sd: Systemd, service: str) -> list[str]:
    """Why is SERVICE not running? The answer walks its requirements to a root cause."""
    check_known(sd, [service])
    return _why(sd, unit_of(service))


def _why(sd: Systemd, unit: str) -> list[str]:
    p = sd.properties(unit, UNIT, SERVICE)
    name = service_of(unit)
    active, sub, result = p.get("ActiveState"), p.get("SubState"), p.get("Result")
    if active == "active":
        return [f"{name} is running ({sub}) since {_ts(p.get('StateChangeTimestamp', 0))}"
                + (f": {p['StatusText']}" if p.get("StatusText") else "")]
    lines = [f"{name} is {active} ({sub})"]
    if active in ("activating", "deactivating", "reloading"):
        lines.append(f"  it is {active} now" + (f": {p['StatusText']}" if p.get("StatusText") else ""))
    if p.get("ConditionResult") is False and p.get("ConditionTimestamp"):
        lines.append("  a start condition was not met (see `systemctl status`)")
    if result == "start-limit-hit":
        lines.append(f"  start limit hit: it failed too often (restarts: {p.get('NRestarts')}); "
                     f"`systemctl reset-failed {unit}` to allow starting again")
    elif result and result != "success":
        lines.append(f"  {explain_result(p)}")
    # requirements that are not up explain a cancelled start
    for dep in sorted(set(p.get("Requires", [])) | set(p.get("BindsTo", []))):
        if not dep.startswith((UNIT_PREFIX, "osunits-")):
            continue  # slices, mounts: systemd's own plumbing
        dp = sd.properties(dep)
        # network units come and go with their container: only a failure of theirs counts
        if dp.get("ActiveState") != "active" and (
                dep.startswith(UNIT_PREFIX) or dp.get("ActiveState") == "failed"):
            lines.append(f"  it requires {service_of(dep)}, which is {dp.get('ActiveState')} "
                         f"({dp.get('SubState')}): a start of {name} is cancelled with it")
            if dep.startswith(UNIT_PREFIX):
                lines += ["  " + ln for ln in _why(sd, dep)[1:]]
            else:  # a gate or network unit: its own last words say why
                lines += ["    " + ln for ln in last_log_lines(dep, sd.address, 8)
                          if "osunits-init" in ln or "Failed" in ln or "error" in ln.lower()]
    if len(lines) == 1 and result == "success":
        lines.append(f"  it was stopped, or never started: `osunits start {name}`")
    logs = last_log_lines(unit, sd.address)
    if logs:
        lines.append("  last log lines:")
        lines += ["    " + ln for ln in logs]
    return lines


def format_change(ch: Any) -> str:
    t = dt.datetime.fromtimestamp(ch.at).strftime("%H:%M:%S.%f")[:-3]
    return f"{t}  {service_of(ch.unit):<28} {ch.active}/{ch.sub}"
