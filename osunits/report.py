"""Presenting a graph Report: text for people, JSON for tools, DOT for pictures."""

from __future__ import annotations

from typing import Any

from osunits.graph import Report
from osunits.model import DependencyKind, Deployment


def to_text(rep: Report) -> str:
    out: list[str] = []
    for g in rep.hosts:
        out.append(f"host {g.host}: {sum(len(w) for w in g.waves)} services, "
                   f"{len(g.waves)} start waves")
        for i, wave in enumerate(g.waves, 1):
            out.append(f"  wave {i}: {' '.join(wave)}")
        if g.critical_path:
            out.append(f"  critical path ({len(g.critical_path)}): "
                       + " -> ".join(g.critical_path))
        for e in g.cross_host:
            out.append(f"  cross-host: {e.service} {e.dependency.kind} {e.dependency.name} "
                       f"on {','.join(e.remote_hosts)}: gated by {e.endpoint}")
    for p in rep.problems:
        out.append(str(p))
    errors = sum(1 for p in rep.problems if p.severity == "error")
    warnings = len(rep.problems) - errors
    out.append("ok: no problems" if rep.clean else f"{errors} error(s), {warnings} warning(s)")
    return "\n".join(out) + "\n"


def to_json(rep: Report) -> dict[str, Any]:
    return {
        "clean": rep.clean,
        "hosts": [{
            "host": g.host,
            "waves": [list(w) for w in g.waves],
            "critical_path": list(g.critical_path),
            "order": {k: list(v) for k, v in sorted(g.order.items())},
            "cross_host": [{
                "service": e.service, "kind": str(e.dependency.kind),
                "dependency": e.dependency.name, "remote_hosts": list(e.remote_hosts),
                "gate": e.endpoint} for e in g.cross_host],
        } for g in rep.hosts],
        "problems": [p.to_json() for p in rep.problems],
    }


_STYLE = {DependencyKind.REQUIRES: "solid", DependencyKind.WANTS: "dashed",
          DependencyKind.AFTER: "dotted"}


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(dep: Deployment, rep: Report) -> str:
    """One cluster per host; edges point from a service to what it needs."""
    lines = ["digraph osunits {", "  rankdir=BT;", "  node [shape=box, fontname=Helvetica];",
             "  edge [fontname=Helvetica, fontsize=9];"]
    critical = {(g.host, a, b) for g in rep.hosts
                for a, b in zip(g.critical_path[1:], g.critical_path, strict=False)}
    shown = {g.host for g in rep.hosts}
    for h in dep.hosts:
        if h.name not in shown:
            continue
        lines.append(f"  subgraph {_q('cluster_' + h.name)} {{")
        lines.append(f"    label={_q(f'{h.name} ({h.address})')};")
        for s in h.services:
            lines.append(f"    {_q(h.name + '/' + s.name)} [label={_q(s.name)}];")
        lines.append("  }")
    for g in rep.hosts:
        gh = dep.host(g.host)
        assert gh is not None
        for s in gh.services:
            for d in s.dependencies:
                if gh.service(d.name) is None:
                    continue
                attrs = [f"style={_STYLE[d.kind]}"]
                if (g.host, s.name, d.name) in critical:
                    attrs.append("color=red, penwidth=2")
                lines.append(f"  {_q(g.host + '/' + s.name)} -> {_q(g.host + '/' + d.name)} "
                             f"[{', '.join(attrs)}];")
        for e in g.cross_host:
            for rh in e.remote_hosts[:1]:
                lines.append(f"  {_q(g.host + '/' + e.service)} -> {_q(rh + '/' + e.dependency.name)}"
                             f" [style={_STYLE[e.dependency.kind]}, color=blue, "
                             f"label={_q('gate: ' + e.endpoint)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
