"""Start-up benchmark: `.venv/bin/python bench/startup.py [--quick] [--sizes 10,30,60]`.

Not a timed test: it measures, it does not assert (root and systemd-nspawn needed).
For each N it synthesises a one-host deployment of N small real services (each
sleeps its readiness delay, then listens on TCP port 8000, `readiness: {tcp:
8000}`) in dependency chains of depth 8, 5 and 3 with fan-out and some fan-in,
compiles it with the real CLI (`osunits generate`, a subprocess), boots a
throwaway systemd host (osunits.testbed.Testbed), installs the tree and measures
with osunits' own D-Bus client (osunits.runtime.Systemd, osunits.control.run_verb):

1. `start` of openstack.target: wall time / the critical path (the longest chain
   of readiness delays, the lower bound for any start);
2. the serial baseline (what an Ansible play does): each service started on its
   own, in topological order, waiting for each job;
3. per-container overhead (payload `sleep infinity`, `readiness: none`, no
   dependencies): job latency of one container alone, N together / N, PSS of
   nspawn + the container init, against a plain `Type=exec` unit of the same
   payload;
4. latency from a state change to `Systemd.watch()` output (a watcher in its own
   process; restarts issued over D-Bus).

CPU time of the whole test host (every process under its nspawn, with reaped
children) is recorded per phase, next to the machine's busy share.  Results go to
bench/results/startup-*.json and (unless --quick) into the marked section of
bench/README.md; `--render FILE.json` rewrites that section from a saved run.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import random
import resource
import select
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.facts import cpu_model, mem_kib  # noqa: E402
from osunits.testbed import Testbed, available, leftovers  # noqa: E402

PY = Path(sys.executable)
CLI = [str(PY.parent / "osunits")] if (PY.parent / "osunits").exists() else [
    str(PY), "-m", "osunits.cli"]
README = BENCH / "README.md"
RESULTS = BENCH / "results"
BEGIN, END = "<!-- startup:results:begin -->", "<!-- startup:results:end -->"
HOST = "b1"
PORT = 8000
START_TIMEOUT = 300.0
# systemd-nspawn@.service has RequiresMountsFor=/var/lib/machines/%i: every start
# transaction carries a job for this (condition-failed, so never active) mount unit, and
# systemd holds mount jobs while its /proc/self/mountinfo event source is rate-limited.
MACHINES_MOUNT = "var-lib-machines.mount"
BRIDGE = "osunits-bridge.service"
FAILURES: list[dict[str, Any]] = []  # starts that failed and were retried
QUIET_S = 1.2  # pause before a single timed start: the mountinfo rate limit is 1 s

TARGET_RATIO = 1.15  # start wall / critical path, once CPU is not the bottleneck
TARGET_PSS_MIB = 6.0  # per container beyond the service
TARGET_LATENCY_S = 0.200  # per container beyond the service
TARGET_WATCH_S = 0.050  # state change -> watch output

# The container init's readiness polling (osunits/container/init.py BACKOFF_*):
# tries at spawn, then after 20 ms, growing x1.5 up to 250 ms between tries.
POLL_FIRST, POLL_FACTOR, POLL_MAX = 0.02, 1.5, 0.25

SERVICE_PY = """\
# {{ service.name }}: ready (listening) after $DELAY seconds, like a slow real service.
import os, socket, time
time.sleep(float(os.environ["DELAY"]))
s = socket.create_server(("0.0.0.0", int(os.environ["PORT"])))
while True:
    c, _ = s.accept()
    c.close()
"""

PLAIN_UNIT = """\
[Unit]
Description=benchmark baseline: the payload alone, as a plain service
[Service]
Type=exec
ExecStart=/bin/sleep infinity
"""


# --- the synthetic graph ------------------------------------------------------------------


@dataclass
class Svc:
    name: str
    delay: float
    requires: list[str]
    depth: int  # services on the longest requires-chain ending here, itself included


def synth_graph(n: int, depths: tuple[int, ...] = (8, 5, 3)) -> dict[str, Svc]:
    """N services in chains of the given depths; deterministic for a given N.

    The first chain is the deepest and starts from nothing.  Each further chain
    (depths cycling) either starts fresh (1 in 4) or branches off an existing service
    shallow enough that the chain still reaches its depth (fan-out); a fifth of the
    services also require an extra, shallower service of another chain (fan-in).
    Readiness delays are uniform in 0.5-2.0 s, in steps of 50 ms.
    """
    rng = random.Random(f"osunits-startup-{n}")
    svcs: dict[str, Svc] = {}

    def add(requires: list[str], depth: int) -> str:
        name = f"svc{len(svcs):02d}"
        svcs[name] = Svc(name, round(rng.randrange(10, 41) * 0.05, 2), requires, depth)
        return name

    for i, target in enumerate(itertools.cycle(depths)):
        if len(svcs) >= n:
            break
        attach = [s for s in svcs.values() if s.depth <= target - 2]
        prev: str | None = None
        depth = 1
        if i > 0 and attach and rng.random() < 0.75:
            parent = rng.choice(attach)
            prev, depth = parent.name, parent.depth + 1
        while depth <= target and len(svcs) < n:
            prev = add([prev] if prev else [], depth)
            depth += 1
    for s in svcs.values():
        if s.depth >= 3 and rng.random() < 0.2:
            extra = [o.name for o in svcs.values()
                     if o.depth < s.depth - 1 and o.name not in s.requires]
            if extra:
                s.requires.append(rng.choice(extra))
    return svcs


def topo_order(g: dict[str, Svc]) -> list[str]:
    done: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for r in g[name].requires:
            visit(r)
        done.append(name)

    for name in g:
        visit(name)
    return done


def poll_tick(x: float) -> float:
    """The first readiness try of the container init at or after ``x`` s from spawn."""
    t, d = 0.0, POLL_FIRST
    while t < x - 1e-9:
        t += d
        d = min(d * POLL_FACTOR, POLL_MAX)
    return t


def longest_path(g: dict[str, Svc], cost: Any = None) -> tuple[float, list[str]]:
    """Weighted longest requires-chain: (sum of cost(delay), the chain, root first)."""
    f = cost or (lambda d: d)
    best: dict[str, tuple[float, list[str]]] = {}
    for name in topo_order(g):
        s = g[name]
        before = max((best[r] for r in s.requires), key=lambda b: b[0], default=(0.0, []))
        best[name] = (before[0] + f(s.delay), [*before[1], name])
    return max(best.values(), key=lambda b: b[0])


def fan_out(g: dict[str, Svc]) -> int:
    users: dict[str, int] = {}
    for s in g.values():
        for r in s.requires:
            users[r] = users.get(r, 0) + 1
    return max(users.values(), default=0)


def graph_facts(g: dict[str, Svc]) -> dict[str, Any]:
    cp, chain = longest_path(g)
    cpq, _ = longest_path(g, poll_tick)
    roots = [s.name for s in g.values() if not s.requires]
    return {
        "services": len(g), "roots": len(roots),
        "max_depth": max(s.depth for s in g.values()),
        "depths": dict(sorted(
            {d: sum(1 for s in g.values() if s.depth == d)
             for d in {s.depth for s in g.values()}}.items())),
        "max_fan_out": fan_out(g),
        "fan_in_services": sum(1 for s in g.values() if len(s.requires) > 1),
        "critical_path_s": round(cp, 3), "critical_chain": chain,
        "critical_chain_depth": len(chain),
        "critical_path_polled_s": round(cpq, 3),
        "sum_delays_s": round(sum(s.delay for s in g.values()), 3),
        "graph": {s.name: {"delay": s.delay, "requires": s.requires} for s in g.values()},
    }


# --- deployments ---------------------------------------------------------------------------


def _yaml(obj: Any) -> str:
    return json.dumps(obj, indent=1) + "\n"  # JSON is YAML; no yaml import needed here


def write_deployment(g: dict[str, Svc], d: Path, payload: str) -> None:
    """payload "tcp": the delayed listener with its graph; "sleep": sleep infinity, no deps."""
    (d / "services").mkdir(parents=True)
    (d / "templates").mkdir()
    (d / "templates" / "svc.py").write_text(SERVICE_PY)
    (d / "deployment.yaml").write_text(_yaml({
        "defaults": {"rootfs": "host", "restart": "no", "stop_timeout": "10s"},
        "hosts": {HOST: {"address": "192.0.2.10", "roles": ["all"]}},
        "roles": {"all": list(g)},
    }))
    for s in g.values():
        spec: dict[str, Any]
        if payload == "tcp":
            spec = {
                "description": f"benchmark service, ready after {s.delay} s",
                "exec": ["/usr/bin/python3", "-I", "-S", "/opt/bench/svc.py"],
                "environment": {"DELAY": str(s.delay), "PORT": str(PORT)},
                "requires": s.requires,
                "ports": [PORT],
                "config": [{"template": "svc.py", "path": "/opt/bench/svc.py", "mode": "0644"}],
                "readiness": {"tcp": PORT, "timeout": "60s"},
            }
        else:
            spec = {"description": "benchmark container, payload sleep",
                    "exec": ["/bin/sleep", "infinity"], "readiness": "none"}
        (d / "services" / f"{s.name}.yaml").write_text(_yaml(spec))


def generate(dep: Path, root: Path) -> float:
    t0 = time.perf_counter()
    res = subprocess.run([*CLI, "generate", "-H", HOST, "-d", str(dep), "--root", str(root)],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"osunits generate failed ({res.returncode}):\n"
                           f"{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return time.perf_counter() - t0


# --- processes, CPU and memory ------------------------------------------------------------

CLK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2:].split()  # fields from 3 (state) on


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (ours, by /proc ppid)."""
    kids: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        st = _stat(int(p.name))
        if st is not None:
            kids.setdefault(int(st[1]), []).append(int(p.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def tree_cpu(root: int) -> float:
    """CPU seconds of a process tree: each live process's own time plus that of the
    children it reaped (so short-lived processes that came and went are counted)."""
    total = 0
    for pid in process_tree(root):
        st = _stat(pid)
        if st is not None:
            total += sum(int(x) for x in st[11:15])  # utime stime cutime cstime
    return total / CLK


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = f[3] + f[4]
    total = sum(f[:8])
    return (total - idle) / CLK, total / CLK


def own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@dataclass
class CpuWindow:
    """Wall time, test-host CPU, our CPU and the machine's busy share over one phase."""
    tb_root: int
    wall0: float = 0.0
    tb0: float = 0.0
    own0: float = 0.0
    busy0: tuple[float, float] = (0.0, 0.0)
    result: dict[str, float] = field(default_factory=dict)

    def __enter__(self) -> CpuWindow:
        self.busy0 = machine_busy()
        self.tb0 = tree_cpu(self.tb_root)
        self.own0 = own_cpu()
        self.wall0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.monotonic() - self.wall0
        own = own_cpu() - self.own0
        tb = tree_cpu(self.tb_root) - self.tb0
        b1 = machine_busy()
        busy, total = b1[0] - self.busy0[0], b1[1] - self.busy0[1]
        self.result = {"wall_s": wall, "testbed_cpu_s": tb, "client_cpu_s": own,
                       "testbed_cpu_share": tb / (wall * (os.cpu_count() or 1)),
                       "machine_busy_share": busy / total if total else 0.0}


def nspid_map(root: int) -> dict[int, int]:
    """Test-host PID -> our PID, for the test host's processes."""
    out = {}
    for pid in process_tree(root):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("NSpid:"):
                    ids = line.split()[1:]
                    if len(ids) >= 2:
                        out[int(ids[1])] = pid
        except OSError:
            continue
    return out


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def classify(pid: int, main: int) -> str:
    if pid == main:
        return "nspawn"
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "gone"
    if any(b"/run/osunits/" in part for part in cmd):  # the init, as a script or imported
        return "init"
    return "payload"


# --- the measurements ---------------------------------------------------------------------


def quiet(_line: str) -> None:
    pass


def stop_all(sd: Any, tb: Testbed) -> None:
    """Stop everything and let the test host settle (untimed).

    The bridge and network-namespace units stop on their own once unneeded
    (StopWhenUnneeded=), after the stop jobs we wait for: a start issued while they
    are still deactivating failed now and then (see FAILURES).  Then clear failed
    states and start rate limits, and let the mountinfo rate limit pass.
    """
    from osunits import control
    from osunits.runtime import UNIT

    control.run_verb(sd, "stop", [], timeout=120, out=quiet)
    end = time.monotonic() + 20
    while time.monotonic() < end:
        if sd.properties(BRIDGE, UNIT).get("ActiveState") in ("inactive", "failed"):
            break
        sd.pump(0.05)
    sd.call(b"ResetFailed")
    time.sleep(QUIET_S)


def start_all(sd: Any, tb: Testbed, what: str) -> Any:
    """`start` of openstack.target, timed; one retry (recorded) if the start fails."""
    from osunits import control

    for attempt in (1, 2, 3):
        with CpuWindow(tb.nspawn_pid) as cw:
            oc = control.run_verb(sd, "start", [], timeout=START_TIMEOUT, out=quiet)
        if oc.ok:
            return oc, cw
        journal = {u: tb.journal(u, "-n", "12", "-o", "short-precise")
                   for u in sorted(oc.failed)[:2]}
        FAILURES.append({"what": what, "attempt": attempt, "failed": oc.failed,
                         "journal": journal})
        print(f"  !! start failed ({what}, attempt {attempt}): "
              f"{sorted(oc.failed.items())[:3]}...", flush=True)
        for u, text in journal.items():
            print(f"  journal of {u}:\n" + "\n".join("    " + ln for ln in text.splitlines()),
                  flush=True)
        stop_all(sd, tb)
        time.sleep(3 * attempt)
    raise RuntimeError(f"start failed three times: {what}")


def unit_memory(sd: Any, tb: Testbed, units: list[str]) -> list[dict[str, int]]:
    """PSS (KiB) of nspawn, the init and the payload of each running container."""
    from osunits.runtime import SERVICE, UNIT

    pids = nspid_map(tb.nspawn_pid)
    rows = []
    for u in units:
        main_ns = int(sd.properties(u, UNIT, SERVICE).get("MainPID") or 0)
        main = pids.get(main_ns)
        if main is None:
            continue
        row = {"nspawn": 0, "init": 0, "payload": 0}
        for pid in process_tree(main):
            kind = classify(pid, main)
            if kind in row:
                row[kind] += pss_kib(pid)
        rows.append(row)
    return rows


def start_target(sd: Any, g: dict[str, Svc], tb: Testbed) -> dict[str, Any]:
    """One timed `start` of openstack.target; each service's readiness time from t0."""
    from osunits.systemd.units import unit_of

    oc, cw = start_all(sd, tb, f"start of {len(g)} with readiness delays")
    wall = cw.result["wall_s"]
    t0 = cw.wall0
    ready = {s: oc.results[unit_of(s)].at - t0 for s in g}
    return {"wall_s": wall, "ready_s": ready, "jobs": len(oc.results), **_cpu(cw)}


def _cpu(cw: CpuWindow) -> dict[str, float]:
    return {k: v for k, v in cw.result.items() if k != "wall_s"}


def start_serial(sd: Any, g: dict[str, Svc], tb: Testbed) -> dict[str, Any]:
    """Each service on its own, topological order, waiting for each job (an Ansible play)."""
    from osunits import control

    each, mount_waits = [], []
    wall = 0.0  # the sum of the successful starts: a failed attempt is recorded, not timed
    with CpuWindow(tb.nspawn_pid) as cw:
        for name in topo_order(g):
            for attempt in (1, 2, 3):
                t = time.monotonic()
                oc = control.run_verb(sd, "start", [name], timeout=START_TIMEOUT, out=quiet)
                took = time.monotonic() - t
                if oc.ok:
                    break
                journal = {u: tb.journal(u, "-n", "12", "-o", "short-precise")
                           for u in sorted(oc.failed)[:2]}
                FAILURES.append({"what": f"serial start of {name}", "attempt": attempt,
                                 "failed": oc.failed, "journal": journal})
                print(f"  !! serial start of {name} failed (attempt {attempt}): {oc.failed}",
                      flush=True)
                for u, text in journal.items():
                    print(f"  journal of {u}:\n"
                          + "\n".join("    " + ln for ln in text.splitlines()), flush=True)
                sd.call(b"ResetFailed")
                time.sleep(QUIET_S)
            else:
                raise RuntimeError(f"serial start of {name} failed three times")
            wall += took
            each.append(took - g[name].delay)
            m = oc.results.get(MACHINES_MOUNT)
            if m is not None:
                mount_waits.append(m.at - t)
    return {"wall_s": wall, "per_service_beyond_delay_s": statistics.median(each),
            "mount_waits_s": mount_waits, **_cpu(cw)}


def readiness_lag(g: dict[str, Svc], ready: dict[str, float]) -> list[float]:
    """Per service: its readiness minus (its latest requirement's readiness + its delay)."""
    out = []
    for s in g.values():
        start = max((ready[r] for r in s.requires), default=0.0)
        out.append(ready[s.name] - start - s.delay)
    return out


def bench_graph(n: int, reps: int, serial: bool, work: Path) -> dict[str, Any]:
    from osunits.runtime import Systemd
    from osunits.systemd.units import unit_of

    g = synth_graph(n)
    facts = graph_facts(g)
    dep, root = work / f"tcp-{n}", work / f"tcp-{n}-root"
    write_deployment(g, dep, "tcp")
    gen_s = generate(dep, root)
    out: dict[str, Any] = {"n": n, "graph": facts, "generate_s": gen_s, "runs": []}
    print(f"N={n}: critical path {facts['critical_path_s']:.2f} s over "
          f"{facts['critical_chain_depth']} services (polled {facts['critical_path_polled_s']:.2f} s),"
          f" sum of delays {facts['sum_delays_s']:.1f} s, {facts['roots']} roots", flush=True)
    with Testbed() as tb:
        tb.install_tree(root)
        with Systemd(tb.bus_address.decode()) as sd:
            for i in range(reps + 1):  # the first start of a boot also pulls in slices etc.
                r = start_target(sd, g, tb)
                ready = r.pop("ready_s")
                r["chain_ready_s"] = [round(ready[c], 3) for c in facts["critical_chain"]]
                lag = readiness_lag(g, ready)
                r["lag_median_s"] = statistics.median(lag)
                r["lag_max_s"] = max(lag)
                r["cold"] = i == 0
                if i == reps:
                    mem = unit_memory(sd, tb, [unit_of(s) for s in g])
                    r["pss_kib_median"] = {k: statistics.median(m[k] for m in mem)
                                           for k in ("nspawn", "init", "payload")}
                out["runs"].append(r)
                print(f"  start{' (cold)' if i == 0 else ''}: {r['wall_s']:.2f} s = "
                      f"{r['wall_s'] / facts['critical_path_s']:.3f} x critical path; lag per "
                      f"service median {r['lag_median_s'] * 1000:.0f} ms; test host CPU "
                      f"{r['testbed_cpu_s']:.1f} s ({r['testbed_cpu_share']:.0%} of the CPUs), "
                      f"machine busy {r['machine_busy_share']:.0%}", flush=True)
                stop_all(sd, tb)
            if serial:
                s = start_serial(sd, g, tb)
                out["serial"] = s
                print(f"  serial: {s['wall_s']:.1f} s = {s['wall_s'] / facts['critical_path_s']:.2f}"
                      f" x critical path, {s['wall_s'] / facts['sum_delays_s']:.3f} x sum of "
                      "delays", flush=True)
                stop_all(sd, tb)
    _check_clean(tb)
    return out


def _check_clean(tb: Testbed) -> None:
    left = leftovers(tb.name)
    if left:
        print(f"  warning: test host {tb.name} left {left}", file=sys.stderr)


def bench_overhead(sizes: list[int], reps: int, watch_events: int, work: Path
                   ) -> dict[str, Any]:
    """Payload `sleep infinity`, readiness none, no dependencies: the container's own cost."""
    from osunits.runtime import SERVICE, UNIT, Systemd
    from osunits.systemd.units import unit_of

    n_max = max(sizes)
    g = {f"svc{i:02d}": Svc(f"svc{i:02d}", 0.0, [], 1) for i in range(n_max)}
    out: dict[str, Any] = {"together": []}
    for n in sorted(sizes):
        sub = dict(itertools.islice(g.items(), n))
        dep, root = work / f"sleep-{n}", work / f"sleep-{n}-root"
        write_deployment(sub, dep, "sleep")
        generate(dep, root)
        with Testbed() as tb:
            tb.install_tree(root)
            tb.write("/etc/systemd/system/bench-plain.service", PLAIN_UNIT)
            tb.daemon_reload()
            with Systemd(tb.bus_address.decode()) as sd:
                if n == min(sizes):
                    out.update(single_latency(sd, tb, reps))
                for i in range(reps + 1):
                    oc, cw = start_all(sd, tb, f"sleep x{n}")
                    row: dict[str, Any] = {"n": n, "cold": i == 0, "wall_s": cw.result["wall_s"],
                                           "per_container_s": cw.result["wall_s"] / n, **_cpu(cw)}
                    if i == reps:
                        mem = unit_memory(sd, tb, [unit_of(s) for s in sub])
                        row["pss_kib"] = {k: statistics.median(m[k] for m in mem)
                                          for k in ("nspawn", "init", "payload")}
                        row["pss_kib_total_median"] = statistics.median(
                            sum(m.values()) for m in mem)
                        row["containers_measured"] = len(mem)
                        sd.run_jobs(["bench-plain.service"], "start", 30)
                        plain = sd.properties("bench-plain.service", UNIT, SERVICE)["MainPID"]
                        row["plain_payload_pss_kib"] = pss_kib(
                            nspid_map(tb.nspawn_pid).get(int(plain), -1))
                        sd.run_jobs(["bench-plain.service"], "stop", 30)
                    out["together"].append(row)
                    print(f"  sleep x{n}{' (cold)' if i == 0 else ''}: {row['wall_s']:.2f} s, "
                          f"{row['per_container_s'] * 1000:.0f} ms per container, test host CPU "
                          f"{row['testbed_cpu_s']:.1f} s", flush=True)
                    if "pss_kib" in row:
                        p = row["pss_kib"]
                        print(f"    PSS median per container: nspawn {p['nspawn']} KiB, init "
                              f"{p['init']} KiB, payload {p['payload']} KiB (plain "
                              f"{row['plain_payload_pss_kib']} KiB)", flush=True)
                    stop_all(sd, tb)
                if n == min(sizes) and watch_events:
                    out["watch"] = watch_latency(sd, tb, watch_events)
        _check_clean(tb)
    return out


def single_latency(sd: Any, tb: Testbed, reps: int) -> dict[str, Any]:
    """Job latency of one container alone, and of the same payload as a plain unit."""
    from osunits.systemd.units import unit_of

    def once(units: list[str]) -> dict[str, float]:
        # Untimed: clear start rate limits (5 starts in 10 s by default), and let the
        # mountinfo rate limit of the last stop pass (see MACHINES_MOUNT).
        sd.call(b"ResetFailed")
        time.sleep(QUIET_S)
        t0 = time.monotonic()
        ends = sd.run_jobs(units, "start", 60)
        wall = time.monotonic() - t0
        bad = {u: e.result for u, e in ends.items() if e.result != "done"}
        if bad:
            raise RuntimeError(f"start failed: {bad}")
        net = [e.at - t0 for u, e in ends.items() if u.startswith("osunits-net-")]
        sd.run_jobs(units, "stop", 60)
        return {"wall_s": wall, "netns_s": net[0] if net else 0.0}

    unit = unit_of("svc00")
    cold = once([unit])
    runs = [once([unit]) for _ in range(max(reps, 5))]
    plain = [once(["bench-plain.service"]) for _ in range(max(reps, 5))]
    res: dict[str, Any] = {
        "single_cold_s": cold["wall_s"],
        "single_s": [r["wall_s"] for r in runs],
        "single_netns_s": [r["netns_s"] for r in runs],
        "plain_s": [r["wall_s"] for r in plain],
    }
    print(f"  one container alone: median {statistics.median(res['single_s']) * 1000:.0f} ms "
          f"(its netns unit {statistics.median(res['single_netns_s']) * 1000:.0f} ms; cold "
          f"{cold['wall_s'] * 1000:.0f} ms); plain unit {statistics.median(res['plain_s']) * 1000:.1f}"
          " ms", flush=True)
    tb.systemctl("reset-failed", check=False)
    return res


WATCH_CHILD = "watch-child"


def watch_child(address: str, service: str) -> None:
    """Run in a process of its own: print each watch() event as JSON, at once."""
    from osunits.runtime import Systemd
    from osunits.systemd.units import unit_of

    with Systemd(address) as w:
        it = w.watch([unit_of(service)])
        print(json.dumps({"ready": True}), flush=True)
        for ch in it:
            print(json.dumps({"active": ch.active, "sub": ch.sub, "at": ch.at}), flush=True)


def watch_latency(sd: Any, tb: Testbed, events: int) -> dict[str, Any]:
    """Restart a container (over D-Bus) ``events`` times while another process watches it.

    Two latencies: issue of the restart -> first event shown (includes systemd's own
    work to begin the stop), and systemd's StateChangeTimestamp of the final
    `active` -> the moment watch() yields it (pure notification path).
    """
    from osunits.systemd.units import unit_of

    unit = unit_of("svc00")
    sd.run_jobs([unit], "start", 60)
    child = subprocess.Popen([str(PY), __file__, WATCH_CHILD, tb.bus_address.decode(), "svc00"],
                             stdout=subprocess.PIPE)
    assert child.stdout is not None
    fd = child.stdout.fileno()
    buf = bytearray()

    def next_event(timeout: float) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while b"\n" not in buf:
            r, _, _ = select.select([fd], [], [], max(0.0, end - time.monotonic()))
            chunk = os.read(fd, 65536) if r else b""
            if not chunk:
                raise TimeoutError("no watch event (watcher gone or silent)")
            buf.extend(chunk)
        line, _, rest = bytes(buf).partition(b"\n")
        buf[:] = rest
        return dict(json.loads(line))

    first_lat, active_lat, seen = [], [], []
    try:
        next_event(10)  # ready
        time.sleep(0.3)  # its first pump has run (the initial GetAll)
        for _ in range(events):
            sd.call(b"ResetFailed")  # the start rate limit: 5 starts in 10 s by default
            t_issue = time.time()
            jobs = sd.enqueue(unit, "restart")
            sd.wait_jobs(jobs, 60)
            evs = [next_event(10)]
            while evs[-1]["active"] != "active":
                evs.append(next_event(10))
            props = sd.properties(unit)
            first_lat.append(evs[0]["at"] - t_issue)
            active_lat.append(evs[-1]["at"] - props["StateChangeTimestamp"] / 1e6)
            seen.append([f"{e['active']}/{e['sub']}" for e in evs])
            time.sleep(0.05)
    finally:
        child.terminate()
        child.wait(10)
    sd.run_jobs([unit], "stop", 60)
    res = {"events": events, "issue_to_first_s": first_lat, "change_to_output_s": active_lat,
           "sequences": sorted({" > ".join(s) for s in seen})}
    print(f"  watch: state change -> output median {statistics.median(active_lat) * 1000:.1f} ms,"
          f" p95 {pctl(active_lat, 95) * 1000:.1f} ms; restart issued -> first event median "
          f"{statistics.median(first_lat) * 1000:.1f} ms", flush=True)
    return res


def pctl(xs: list[float], p: float) -> float:
    s = sorted(xs)
    k = (len(s) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# --- facts, results, README ---------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    cpu = cpu_model()
    mem = mem_kib()
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "osunits",
                            "unit_templates"], capture_output=True, text=True,
                           check=False).stdout.strip()
    sysd = subprocess.run(["systemctl", "--version"], capture_output=True, text=True,
                          check=False).stdout.split("\n")[0]
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(), "cpu": cpu, "mem_gib": round(int(mem) / 2**20, 1),
        "os": Path("/etc/debian_version").read_text().strip()
        if Path("/etc/debian_version").exists() else platform.platform(),
        "kernel": platform.release(), "python": platform.python_version(),
        "systemd": sysd, "osunits_commit": commit + ("+dirty" if dirty else ""),
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def main() -> None:
    if len(sys.argv) >= 2 and sys.argv[1] == WATCH_CHILD:
        watch_child(sys.argv[2], sys.argv[3])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10,30,60", help="services per host (comma-separated)")
    ap.add_argument("--reps", type=int, default=3, help="timed starts per size (after a cold one)")
    ap.add_argument("--no-serial", action="store_true", help="skip the serial baseline")
    ap.add_argument("--watch-events", type=int, default=20)
    ap.add_argument("--no-graphs", action="store_true",
                    help="only the per-container and watch measurements")
    ap.add_argument("--quick", action="store_true",
                    help="1 rep, sizes 10 only, README left alone")
    ap.add_argument("--no-readme", action="store_true", help="leave bench/README.md alone")
    ap.add_argument("--render", metavar="FILE.json",
                    help="only rewrite the README section from a results file")
    args = ap.parse_args()
    if args.render:
        write_readme(render(json.loads(Path(args.render).read_text())))
        return
    why = available()
    if why:
        sys.exit(f"startup benchmark: {why}")
    sizes = [10] if args.quick else [int(x) for x in args.sizes.split(",")]
    reps = 1 if args.quick else args.reps
    facts = machine_facts()
    t0 = time.monotonic()
    result: dict[str, Any] = {"facts": facts, "sizes": sizes, "reps": reps, "graphs": [],
                              "failures": FAILURES}
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"startup-{stamp}{'-quick' if args.quick else ''}.json"
    with tempfile.TemporaryDirectory(prefix="osunits-startup-") as tmp:
        work = Path(tmp)
        try:
            for n in [] if args.no_graphs else sizes:
                result["graphs"].append(bench_graph(n, reps, not args.no_serial, work))
                save(result, path)
            print("overhead (payload sleep infinity, readiness none):", flush=True)
            result["overhead"] = bench_overhead(sizes, reps, args.watch_events, work)
        finally:
            save(result, path)
    facts["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    facts["bench_wall_s"] = round(time.monotonic() - t0, 1)
    save(result, path)
    print(f"results: {path} ({facts['bench_wall_s']:.0f} s)")
    section = render(result)
    if not args.quick and not args.no_readme:
        write_readme(section)
        print(f"README: {README}")
    else:
        print(section)


def save(result: dict[str, Any], path: Path) -> None:
    """Write the results so far (also after each size: a later failure loses nothing)."""
    path.write_text(json.dumps(result, indent=1) + "\n")


# --- rendering -----------------------------------------------------------------------------


def _med(xs: list[float]) -> float:
    return statistics.median(xs)


def summarise(r: dict[str, Any]) -> dict[str, Any]:
    """The numbers the tables and verdicts use, from a results dict."""
    s: dict[str, Any] = {"graphs": []}
    for gr in r["graphs"]:
        cp = gr["graph"]["critical_path_s"]
        warm = [x for x in gr["runs"] if not x["cold"]] or gr["runs"]
        cold = [x for x in gr["runs"] if x["cold"]]
        walls = [x["wall_s"] for x in warm]
        row = {
            "n": gr["n"], "cp": cp, "cpq": gr["graph"]["critical_path_polled_s"],
            "depth": gr["graph"]["critical_chain_depth"], "roots": gr["graph"]["roots"],
            "fan_out": gr["graph"]["max_fan_out"], "sum": gr["graph"]["sum_delays_s"],
            "wall": _med(walls), "wall_min": min(walls), "ratio": _med(walls) / cp,
            "ratio_min": min(walls) / cp,
            "cold": cold[0]["wall_s"] / cp if cold else None,
            "lag": _med([x["lag_median_s"] for x in warm]),
            "tb_cpu": _med([x["testbed_cpu_s"] for x in warm]),
            "tb_share": _med([x["testbed_cpu_share"] for x in warm]),
            "busy": _med([x["machine_busy_share"] for x in warm]),
            "pss": next((x["pss_kib_median"] for x in gr["runs"] if "pss_kib_median" in x), None),
        }
        if "serial" in gr:
            row["serial"] = gr["serial"]["wall_s"]
            row["serial_ratio"] = gr["serial"]["wall_s"] / cp
            row["serial_sum"] = gr["serial"]["wall_s"] / gr["graph"]["sum_delays_s"]
            row["serial_each"] = gr["serial"]["per_service_beyond_delay_s"]
            row["speedup"] = gr["serial"]["wall_s"] / row["wall"]
            waits = gr["serial"].get("mount_waits_s", [])
            row["mount_stalls"] = sum(1 for w in waits if w > 0.1)
            row["mount_stall_s"] = sum(w for w in waits if w > 0.1)
        row["poll_share"] = (row["cpq"] - cp) / cp
        row["per_link"] = (row["wall"] - row["cpq"]) / row["depth"]
        s["graphs"].append(row)
    ov = r.get("overhead", {})
    if "single_s" in ov:
        s["single"] = _med(ov["single_s"])
        s["single_netns"] = _med(ov["single_netns_s"])
        s["plain"] = _med(ov["plain_s"])
        s["single_cold"] = ov["single_cold_s"]
    s["together"] = []
    for n in sorted({x["n"] for x in ov.get("together", [])}):
        rows = [x for x in ov["together"] if x["n"] == n]
        warm = [x for x in rows if not x["cold"]] or rows
        mem = next((x for x in rows if "pss_kib" in x), None)
        s["together"].append({
            "n": n, "wall": _med([x["wall_s"] for x in warm]),
            "per": _med([x["per_container_s"] for x in warm]),
            "tb_cpu_per": _med([x["testbed_cpu_s"] for x in warm]) / n,
            "busy": _med([x["machine_busy_share"] for x in warm]),
            "pss": mem["pss_kib"] if mem else None,
            "plain_pss": mem["plain_payload_pss_kib"] if mem else None,
        })
    if "watch" in ov:
        w = ov["watch"]
        s["watch"] = {"n": len(w["change_to_output_s"]),
                      "med": _med(w["change_to_output_s"]),
                      "p95": pctl(w["change_to_output_s"], 95),
                      "max": max(w["change_to_output_s"]),
                      "first_med": _med(w["issue_to_first_s"]),
                      "first_p95": pctl(w["issue_to_first_s"], 95),
                      "sequences": w["sequences"]}
    return s


def verdicts(s: dict[str, Any]) -> list[tuple[str, str, str]]:
    out = []
    if s["graphs"]:
        best = min(s["graphs"], key=lambda g: g["busy"])
        meas = "; ".join(f"N={g['n']}: {g['ratio']:.2f}x (machine busy {g['busy']:.0%})"
                         for g in s["graphs"])
        out.append((f"`start` <= {TARGET_RATIO}x the critical path once CPU is not the "
                    "bottleneck", meas,
                    "met" if best["ratio"] <= TARGET_RATIO else
                    f"missed (least CPU-bound case N={best['n']}: {best['ratio']:.2f}x)"))
    if s["together"]:
        over = [(t["pss"]["nspawn"] + t["pss"]["init"]) / 1024 for t in s["together"] if t["pss"]]
        meas = ", ".join(f"N={t['n']}: {(t['pss']['nspawn'] + t['pss']['init']) / 1024:.1f} MiB"
                         for t in s["together"] if t["pss"])
        out.append((f"<= {TARGET_PSS_MIB:g} MB (PSS) per container beyond the service",
                    meas + " (nspawn + init, median per container)",
                    "met" if over and max(over) <= TARGET_PSS_MIB else "missed"))
    if "single" in s:
        lat = s["single"] - s["plain"]
        per = [t["per"] for t in s["together"]]
        meas = (f"one alone {s['single'] * 1000:.0f} ms ({lat * 1000:.0f} ms beyond a plain unit); "
                + ", ".join(f"{t['n']} together {t['per'] * 1000:.0f} ms each"
                            for t in s["together"]))
        out.append((f"<= {TARGET_LATENCY_S * 1000:.0f} ms start latency per container beyond "
                    "the service", meas,
                    "met" if lat <= TARGET_LATENCY_S and max(per) <= TARGET_LATENCY_S else
                    ("met alone, missed together" if lat <= TARGET_LATENCY_S else "missed")))
    if "watch" in s:
        w = s["watch"]
        out.append((f"<= {TARGET_WATCH_S * 1000:.0f} ms from a state change to `watch` output",
                    f"median {w['med'] * 1000:.1f} ms, p95 {w['p95'] * 1000:.1f} ms, max "
                    f"{w['max'] * 1000:.1f} ms ({w['n']} restarts)",
                    "met" if w["p95"] <= TARGET_WATCH_S else "missed"))
    return out


def render(r: dict[str, Any]) -> str:
    f = r["facts"]
    s = summarise(r)
    L = [BEGIN, "", "<!-- generated by bench/startup.py; edits between these markers are lost -->",
         "",
         f"Measured {f['date']} on {f['cpus']} CPUs ({f['cpu']}), {f['mem_gib']} GiB, Debian "
         f"{f['os']}, kernel {f['kernel']}, {f['systemd']} (in the testbed), Python "
         f"{f['python']}, osunits {f['osunits_commit']}; {r['reps']} timed starts per size after "
         f"a cold one; whole run {f.get('bench_wall_s', '?')} s. Load average at start "
         f"{' '.join(f['loadavg_start'])}, at end {' '.join(f.get('loadavg_end', ['?']))}.", "",
         "#### Targets", "", "| target | measured | verdict |", "|---|---|---|"]
    L += [f"| {t} | {m} | **{v}** |" for t, m, v in verdicts(s)]
    L += ["", "#### `start` against the critical path and a serial start", "",
          "| N | depth of the critical chain | roots | max fan-out | critical path s | "
          "polled critical path s | `start` s (median) | ratio (min) | cold ratio | "
          "per-link lag ms | test host CPU s (share of 2 CPUs) | machine busy | serial s | "
          "serial / critical path | serial / sum of delays | speed-up |",
          "|" + "---:|" * 16]
    for g in s["graphs"]:
        L.append(
            f"| {g['n']} | {g['depth']} | {g['roots']} | {g['fan_out']} | {g['cp']:.2f} | "
            f"{g['cpq']:.2f} | {g['wall']:.2f} | **{g['ratio']:.3f}** ({g['ratio_min']:.3f}) | "
            f"{g['cold']:.3f} | {g['lag'] * 1000:.0f} | {g['tb_cpu']:.1f} ({g['tb_share']:.0%}) | "
            f"{g['busy']:.0%} | " + (
                f"{g['serial']:.1f} | {g['serial_ratio']:.2f} | {g['serial_sum']:.3f} | "
                f"{g['speedup']:.1f}x |" if "serial" in g else "- | - | - | - |"))
    L += ["", "Where the time over the critical path goes (medians): " + "; ".join(
        f"N={g['n']}: the init's readiness polling alone makes the chain "
        f"{g['poll_share']:.1%} longer (polled critical path), the rest is "
        f"{g['per_link'] * 1000:.0f} ms per link of the {g['depth']}-service chain"
        for g in s["graphs"]) + "."] if s["graphs"] else []
    stalls = [g for g in s["graphs"] if g.get("mount_stalls")]
    if stalls:
        L += ["", "Serial starts held by systemd's mountinfo rate limit (a "
              f"`{MACHINES_MOUNT}` job waiting > 100 ms): " + "; ".join(
                  f"N={g['n']}: {g['mount_stalls']} of {g['n']} starts, "
                  f"{g['mount_stall_s']:.1f} s in all" for g in stalls) + "."]
    if s["together"]:
        L += ["", "#### Per container (payload `sleep infinity`, `readiness: none`, no "
              "dependencies)", ""]
        if "single" in s:
            L.append(f"One container alone: `start` job median {s['single'] * 1000:.0f} ms "
                     f"(its network-namespace unit done after {s['single_netns'] * 1000:.0f} ms; "
                     f"first start of a boot {s['single_cold'] * 1000:.0f} ms); the same payload "
                     f"as a plain `Type=exec` unit {s['plain'] * 1000:.1f} ms.")
            L.append("")
        L += ["| N together | wall s | per container ms | test host CPU per container ms | "
              "machine busy | PSS nspawn KiB | PSS init KiB | PSS payload KiB (plain unit) | "
              "beyond the service MiB |", "|" + "---:|" * 9]
        for t in s["together"]:
            p = t["pss"] or {"nspawn": 0, "init": 0, "payload": 0}
            L.append(f"| {t['n']} | {t['wall']:.2f} | {t['per'] * 1000:.0f} | "
                     f"{t['tb_cpu_per'] * 1000:.0f} | {t['busy']:.0%} | {p['nspawn']:.0f} | "
                     f"{p['init']:.0f} | {p['payload']:.0f} ({t['plain_pss']}) | "
                     f"{(p['nspawn'] + p['init']) / 1024:.2f} |")
        pss_tcp = [(g["n"], g["pss"]) for g in s["graphs"] if g["pss"]]
        if pss_tcp:
            L += ["", "With the Python payload of the `start` runs (the init's interpreter "
                  "pages are then shared with the service's): " + "; ".join(
                      f"N={n}: nspawn {p['nspawn']:.0f} + init {p['init']:.0f} KiB "
                      f"(payload {p['payload']:.0f} KiB)" for n, p in pss_tcp) + "."]
    if "watch" in s:
        w = s["watch"]
        L += ["", "#### `watch`", "",
              f"{w['n']} restarts of one container (issued over D-Bus) while a second "
              "process runs `Systemd.watch()` on it. State change to output (systemd's "
              "`StateChangeTimestamp` of the final `active` to the moment `watch()` yields it): "
              f"median {w['med'] * 1000:.1f} ms, p95 {w['p95'] * 1000:.1f} ms, max "
              f"{w['max'] * 1000:.1f} ms. Restart issued to the first event shown: median "
              f"{w['first_med'] * 1000:.1f} ms, p95 {w['first_p95'] * 1000:.1f} ms. Sequences "
              "seen: " + "; ".join(f"`{q}`" for q in w["sequences"]) + "."]
    if r.get("failures"):
        L += ["", "**Starts that failed and were retried** (after a full stop and settle): "
              + "; ".join(f"{x['what']} (attempt {x['attempt']}): "
                          + ", ".join(f"`{u}` {res}" for u, res in list(x["failed"].items())[:3])
                          + (f" and {len(x['failed']) - 3} more" if len(x["failed"]) > 3 else "")
                          for x in r["failures"]) + "."]
    L += ["", END]
    return "\n".join(L)


def write_readme(section: str) -> None:
    text = README.read_text()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    README.write_text(text)


if __name__ == "__main__":
    main()
