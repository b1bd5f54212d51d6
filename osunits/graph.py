"""The dependency graph of a deployment: placement, cycles, start order, checks.

Pure functions over the model.  ``check_deployment`` is what ``osunits
check-deps`` prints; ``plan.py`` uses the same edges to write units.
"""

from __future__ import annotations

import graphlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address

from osunits.deployment import SPECS_DIR, spec_names
from osunits.errors import DeploymentError, Location, Problem, Severity, unknown_name
from osunits.model import (
    Dependency,
    DependencyKind,
    Deployment,
    Host,
    NetworkMode,
    Protocol,
    ReadinessKind,
    Service,
)
from osunits.network import allocate, check_network, listen_address
from osunits.systemd.units import is_unit

READY_PORT = 7480  # osunits-ready.socket: answers whether a service on this host is active
READY_UNIT = "osunits-ready"


@dataclass(frozen=True, slots=True)
class CrossHostEdge:
    """A dependency on a service that runs on other hosts only; held by a gate unit."""

    host: str
    service: str
    dependency: Dependency
    remote_hosts: tuple[str, ...]
    endpoint: str  # what the gate waits for, e.g. "tcp 192.0.2.11:5672"


@dataclass(frozen=True, slots=True)
class HostGraph:
    host: str
    order: dict[str, tuple[str, ...]]  # service → services it starts after (same host)
    waves: tuple[tuple[str, ...], ...]
    critical_path: tuple[str, ...]
    cross_host: tuple[CrossHostEdge, ...]
    addresses: dict[str, IPv4Address] = field(default_factory=dict)  # private services' own


@dataclass(slots=True)
class Report:
    problems: list[Problem] = field(default_factory=list)
    hosts: list[HostGraph] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not any(p.severity in (Severity.ERROR, Severity.WARNING) for p in self.problems)


def _dep_loc(svc: Service, dep: Dependency) -> Location:
    return dep.loc or svc.loc


def find_cycles(edges: dict[str, Iterable[str]]) -> list[list[str]]:
    """Every elementary cycle's representative, one per strongly connected component.

    Tarjan's algorithm, iteratively (deployments can be deep); each returned
    path starts and ends at its smallest name, so output is deterministic.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    sccs: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(edges.get(root, ())))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, succ = work[-1]
            if succ:
                nxt = succ.pop(0)
                if nxt not in edges:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(edges.get(nxt, ()))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1 or node in edges.get(node, ()):
                    sccs.append(comp)
    return [_cycle_path(sorted(c), edges) for c in sorted(sccs, key=min)]


def _cycle_path(comp: list[str], edges: dict[str, Iterable[str]]) -> list[str]:
    # Shortest cycle through the smallest member, by breadth-first search inside the component.
    members = set(comp)
    start = comp[0]
    prev: dict[str, str] = {}
    queue = [start]
    for node in queue:
        for nxt in sorted(edges.get(node, ())):
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return [*reversed(path), start]
            if nxt in members and nxt not in prev:
                prev[nxt] = node
                queue.append(nxt)
    return [start, start]  # pragma: no cover - a component always has a cycle


def _waves(order: dict[str, tuple[str, ...]]) -> tuple[tuple[str, ...], ...]:
    ts = graphlib.TopologicalSorter(order)
    ts.prepare()
    waves = []
    while ts.is_active():
        ready = tuple(sorted(ts.get_ready()))
        waves.append(ready)
        ts.done(*ready)
    return tuple(waves)


def _critical_path(order: dict[str, tuple[str, ...]],
                   waves: tuple[tuple[str, ...], ...]) -> tuple[str, ...]:
    depth: dict[str, int] = {}
    best_prev: dict[str, str] = {}
    for wave in waves:
        for s in wave:
            preds = order.get(s, ())
            if preds:
                p = max(sorted(preds), key=lambda x: depth[x])
                depth[s] = depth[p] + 1
                best_prev[s] = p
            else:
                depth[s] = 1
    if not depth:
        return ()
    end = max(sorted(depth), key=lambda x: depth[x])
    path = [end]
    while path[-1] in best_prev:
        path.append(best_prev[path[-1]])
    return tuple(reversed(path))


def gate_endpoint(dep: Service, host: Host) -> str:
    """What a gate on another host waits for: the first reachable port of ``dep`` on ``host``."""
    if dep.network is NetworkMode.HOST:
        tcp = [p.port for p in dep.ports if p.protocol is Protocol.TCP]
        if dep.readiness.kind is ReadinessKind.TCP:
            tcp = [int(dep.readiness.target)]
        if tcp:
            return f"tcp {listen_address(host.address, tcp[0])}"
    published = [p for p in dep.publish if p.protocol is Protocol.TCP]
    if dep.readiness.kind is ReadinessKind.TCP:
        port = int(dep.readiness.target)
        published = [p for p in published if p.container_port == port] or published
    if published:
        p = published[0]
        return f"tcp {listen_address(p.address or host.address, p.host_port)}"
    # No port of its own: the remote host's readiness endpoint answers for it.
    return f"ready {listen_address(host.address, READY_PORT)}/{dep.name}"


def gated_on(dep: Deployment, h: Host, d: Dependency) -> tuple[Host, Service] | None:
    """The other host's service that ``d``, a dependency of a service on ``h``, is gated on:
    on the first host running it.  None when there is no gate: ``d`` is local, ``after:``
    (ordering across hosts means nothing), or names a service placed on no host."""
    if d.kind is DependencyKind.AFTER or h.service(d.name) is not None:
        return None
    remote = dep.placement().get(d.name, ())
    rhost = dep.host(remote[0]) if remote else None
    rsvc = rhost.service(d.name) if rhost is not None else None
    return None if rhost is None or rsvc is None else (rhost, rsvc)


def ready_endpoint_services(dep: Deployment, host: Host) -> list[str]:
    """Services of ``host`` that other hosts' gates ask its readiness endpoint about."""
    names: set[str] = set()
    for other in dep.hosts:
        if other.name == host.name:
            continue
        for s in other.services:
            for d in s.dependencies:
                g = gated_on(dep, other, d)
                if g is not None and g[0].name == host.name and \
                        gate_endpoint(g[1], host).startswith("ready "):
                    names.add(d.name)
    return sorted(names)


def check_deployment(dep: Deployment, hosts: Iterable[str] | None = None) -> Report:
    """All graph checks, for the named hosts (default: all)."""
    report = Report()
    placement = dep.placement()
    known = {s.name for s in dep.services}
    wanted = set(hosts) if hosts is not None else None

    # Cycles are a property of the definitions: check the name-level graph once.
    name_edges: dict[str, set[str]] = {}
    for h in dep.hosts:
        for s in h.services:
            name_edges.setdefault(s.name, set()).update(
                d.name for d in s.dependencies if d.name in placement)
    for cyc in find_cycles({k: sorted(v) for k, v in name_edges.items()}):
        # Every edge with where it is written: the one just added may be any of them.
        edges = [_edge(dep, a, b) for a, b in zip(cyc, cyc[1:], strict=False)]
        report.problems.append(Problem(
            "C001", "dependency cycle: " + " => ".join(cyc), edges[0][0], "requires/wants/after",
            hint="its edges: " + "; ".join(f"{text} ({loc})" for loc, text in edges)
            + ". systemd would break it at start by dropping an arbitrary job: remove one"))

    check_network(dep, report.problems)
    checked = [h for h in dep.hosts if wanted is None or h.name in wanted]
    for h in checked:
        g = _check_host(dep, h, placement, known, report.problems)
        g.addresses.update(allocate(h, dep.network, report.problems))
        report.hosts.append(g)
    _check_rootfs(dep, checked, report.problems)
    return report


def _check_rootfs(dep: Deployment, hosts: list[Host], problems: list[Problem]) -> None:
    """C009: a rootfs no spec provides (a warning: images may be built from elsewhere,
    but a typo would otherwise show only when the service fails to start)."""
    specs: set[str] | None = None
    seen: set[tuple[str, Location]] = set()
    for h in hosts:
        for s in h.services:
            if (key := (s.rootfs, s.loc_of("rootfs"))) in seen:
                continue
            seen.add(key)
            specs = spec_names(dep.root) if specs is None else specs
            if s.rootfs not in specs:
                problems.append(unknown_name(
                    "rootfs spec", s.rootfs, sorted(specs), key[1], "rootfs", code="C009",
                    severity=Severity.WARNING,
                    where=f"(neither osunits' rootfs_specs/ nor {dep.root / SPECS_DIR}/ has it)"))


def _edge(dep: Deployment, a: str, b: str) -> tuple[Location | None, str]:
    """Where service ``a``'s dependency on ``b`` is written, and the edge in words."""
    for s in (*dep.services, *(s for h in dep.hosts for s in h.services)):
        if s.name == a:
            for d in s.dependencies:
                if d.name == b:
                    return _dep_loc(s, d), f"{a} {d.kind} {b}"
    return None, f"{a} => {b}"  # pragma: no cover - cycles are found from these edges


def host_of(dep: Deployment, name: str, given_by: str = "--host") -> Host:
    """The inventory's host ``name``; an unknown one is an error naming ``given_by``."""
    host = dep.host(name)
    if host is None:
        raise DeploymentError([unknown_name("host", name, [h.name for h in dep.hosts],
                                             None, given_by)])
    return host


def empty_host(h: Host, severity: Severity) -> Problem:
    """C008: a host that runs nothing (a mistake, usually: generating it removes every unit)."""
    return Problem("C008", f"host {h.name} runs no services", h.loc, "roles",
                   hint="give it a role or services: generating an empty host would remove "
                   "every unit osunits wrote there", severity=severity)


def _check_host(dep: Deployment, h: Host, placement: dict[str, tuple[str, ...]],
                known: set[str], problems: list[Problem]) -> HostGraph:
    if not h.services:
        problems.append(empty_host(h, Severity.WARNING))
    local = {s.name: s for s in h.services}
    order: dict[str, tuple[str, ...]] = {}
    cross: list[CrossHostEdge] = []
    for s in h.services:
        preds = []
        for d in s.dependencies:
            if is_unit(d.name):
                continue  # the host's own unit: systemd orders on it, there is nothing to check
            loc = _dep_loc(s, d)
            if d.name in local:
                preds.append(d.name)
                target = local[d.name]
                if (d.kind is not DependencyKind.AFTER
                        and not target.readiness.kind.gives_ready):
                    problems.append(Problem(
                        "C005", f"{s.name} {d.kind} {d.name}, which has no readiness check: "
                        f"{s.name} may start before {d.name} serves", loc, str(d.kind),
                        hint=f"give {d.name} a readiness check (notify, tcp, http or command)",
                        severity=Severity.WARNING))
                continue
            if d.name not in known:
                unknown = unknown_name("service", d.name, sorted(known), loc, str(d.kind),
                                       code="C002")
                problems.append(replace(
                    unknown, message=f"{s.name} on {h.name}: {unknown.message}"))
                continue
            remote = placement.get(d.name, ())
            if not remote:
                problems.append(Problem("C003", f"{s.name} on {h.name} {d.kind} {d.name}, which "
                                        "is placed on no host", loc, str(d.kind),
                                        hint=f"add {d.name} to a role or host"))
                continue
            gated = gated_on(dep, h, d)
            if gated is not None:
                rhost, rsvc = gated
                cross.append(CrossHostEdge(h.name, s.name, d, remote, gate_endpoint(rsvc, rhost)))
        order[s.name] = tuple(sorted(preds))
    _check_conflicts(h, problems)
    try:
        waves = _waves(order)
    except graphlib.CycleError:
        waves = ()  # reported above, by name
    return HostGraph(h.name, order, waves, _critical_path(order, waves) if waves else (),
                     tuple(cross))


def _check_conflicts(h: Host, problems: list[Problem]) -> None:
    # Host ports: published ports and ports bound in the host's own namespace.
    # (port, protocol) → [(address, service)]: "" is every address, so it clashes with all.
    # The readiness endpoint's port is osunits' own on every host (which services other
    # hosts' gates ask about changes with the deployment).
    taken: dict[tuple[int, Protocol], list[tuple[str, str]]] = {
        (READY_PORT, Protocol.TCP): [(h.address, f"osunits' readiness endpoint ({READY_UNIT}.socket)")]}
    for s in h.services:
        binds: list[tuple[str, int, Protocol, str]] = [
            (p.address, p.host_port, p.protocol, "publishes") for p in s.publish]
        if s.network is NetworkMode.HOST:
            binds += [("", p.port, p.protocol, "listens on") for p in s.ports]
        for addr, port, proto, verb in binds:
            holders = taken.setdefault((port, proto), [])
            clash = [o for a, o in holders if (not a or not addr or a == addr) and o != s.name]
            if clash:
                key = "publish" if verb == "publishes" else "ports"
                problems.append(Problem(
                    "C006", f"{s.name} {verb} host port {port}/{proto} on {h.name}, as "
                    f"{clash[0]} does", s.loc_of(key), key,
                    hint=(f"port {READY_PORT} is osunits' own on every host: use another"
                          if h.service(clash[0]) is None
                          else "give one of them another host port") + (
                        "" if key == "publish" else ", or a private network")))
            if (addr, s.name) not in holders:
                holders.append((addr, s.name))
    paths: dict[str, tuple[str, bool]] = {}
    for s in h.services:
        for st in s.state:
            hp = str(st.host_path(s.name))
            if hp in paths:
                other, other_shared = paths[hp]
                if other == s.name:
                    problems.append(Problem("C007", f"{s.name} lists {hp} twice",
                                            s.loc_of("state"), "state",
                                            hint="list each state directory once"))
                elif not (st.shared and other_shared):
                    problems.append(Problem(
                        "C007", f"{s.name} and {other} both write {hp} on {h.name}",
                        s.loc_of("state"),
                        "state", hint="give each its own host path, or mark both shared: true"))
            else:
                paths[hp] = (s.name, st.shared)
