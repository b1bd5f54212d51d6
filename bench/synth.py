"""Synthesise deployment directories for the generation benchmark.

The shapes follow a real cloud (see examples/openstack/): a few infrastructure
services (database, message queue, cache) that many services require (fan-in),
application services in chains of ``CHAIN`` (each requires the previous one),
ports, published ports, host-network services, state directories, config
templates that look other services up with ``address_of``, readiness checks
(so ``check-deps`` stays clean), role and host overrides.  Everything is
deterministic: the same arguments give the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

INFRA_KINDS = ("db", "mq", "cache")
FAMILIES = ("api", "scheduler", "conductor", "worker", "agent")
CHAIN = 10  # application services per dependency chain

DEFAULTS = {"restart": "on-failure", "restart_sec": "5s", "stop_timeout": "60s"}

_FAMILY_TEMPLATE = """\
# Rendered by osunits for {{ host.name }} ({{ service.name }})
[DEFAULT]
my_ip = {{ host.address }}
host = {{ host.name }}
debug = false
log_dir = /var/log/{{ service.name }}
{% for d in service.dependencies %}
{{ d.kind }}_{{ loop.index }} = {{ address_of(d.name) }}
{% endfor %}

[database]
{% if service.dependencies %}
connection = mysql+pymysql://svc:secret@{{ address_of(service.dependencies[0].name) }}/\
{{ service.name | replace('-', '_') }}
{% else %}
connection = sqlite:////var/lib/{{ service.name }}/db.sqlite
{% endif %}
max_pool_size = 10

[keystone_authtoken]
www_authenticate_uri = http://{{ host.address }}:5000/
auth_url = http://{{ host.address }}:5000/
auth_type = password
project_name = service
username = {{ service.name }}
password = secret

[oslo_messaging_rabbit]
amqp_durable_queues = true
heartbeat_timeout_threshold = 60
"""

_LOGGING_TEMPLATE = """\
# Rendered by osunits for {{ host.name }} ({{ service.name }})
[loggers]
keys = root

[handlers]
keys = journal

[logger_root]
level = INFO
handlers = journal

[handler_journal]
class = systemd.journal.JournalHandler
args = ()
"""


def write_templates(root: Path) -> None:
    """The config templates, and the rootfs specs the services name (check-deps' C009)."""
    for fam in (*INFRA_KINDS, *FAMILIES):
        p = root / "templates" / fam / f"{fam}.conf.j2"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(_FAMILY_TEMPLATE)
        s = root / "rootfs_specs" / f"{fam}.yaml"
        s.parent.mkdir(exist_ok=True)
        s.write_text(f"description: synthetic {fam}\nbase: bookworm-minbase\npackages: [{fam}]\n")
    p = root / "templates" / "common" / "logging.conf.j2"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(_LOGGING_TEMPLATE)


def catalogue(n: int, prefix: str, *, port_base: int, infra: int | None = None,
              external: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """``n`` service definitions named ``PREFIX-KIND-NNNNN``.

    The first ``infra`` (default n/100, at least 3) are database/queue/cache
    services; each application service requires one of them (about 100 per
    infrastructure service), wants another, requires the previous service of
    its chain, and every third is ordered after the head of the previous chain.
    ``external`` names services of other hosts: the first is required, the
    rest wanted (cross-host edges, held by gates).
    """
    k = max(3, n // 100) if infra is None else infra
    names = [f"{prefix}-{INFRA_KINDS[i % 3]}-{i:05d}" if i < k
             else f"{prefix}-{FAMILIES[i % len(FAMILIES)]}-{i:05d}" for i in range(n)]
    out: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(names):
        port = port_base + i
        if i < k:
            kind = INFRA_KINDS[i % 3]
            svc: dict[str, Any] = {
                "description": f"Synthetic {kind} service {i}",
                "rootfs": kind,
                "exec": [f"/usr/sbin/{kind}d", f"--port={port}"],
                "user": kind,
                "ports": [port],
                "state": [f"/var/lib/{kind}"],
                "config": [{"template": f"{kind}/{kind}.conf.j2",
                            "path": f"/etc/{kind}/{kind}.conf", "mode": "0640"}],
                "readiness": {"notify": True, "timeout": "120s"},
                "limits": {"memory": "2G", "tasks": 4096},
            }
            if i:
                svc["after"] = [names[i - 1]]
            if external:
                svc["wants"] = [external[0]]
            out[name] = svc
            continue
        j = i - k
        fam = FAMILIES[i % len(FAMILIES)]
        pos = j % CHAIN
        requires = [names[(j // CHAIN) % k]]  # fan-in on the infrastructure
        if pos:
            requires.append(names[i - 1])  # the chain
        wants = [names[(j // CHAIN + 1) % k]] if k > 1 else []
        after = [names[i - pos - CHAIN]] if j % 3 == 0 and j >= CHAIN else []
        if external:
            requires.append(external[0])
            wants += list(external[1:])
        svc = {
            "description": f"Synthetic {fam} service {i}",
            "rootfs": fam,
            "exec": [f"/usr/bin/{prefix}-{fam}", f"--config-file=/etc/{name}/{name}.conf",
                     "--log-level=info"],
            "user": "svc",
            "environment": {"SERVICE_FAMILY": fam, "SERVICE_INDEX": i, "LOG_FORMAT": "json"},
            "requires": requires,
            "wants": wants,
            "ports": [port, f"{port + 40000}/udp"] if port + 40000 < 65536 else [port],
            "config": [{"template": f"{fam}/{fam}.conf.j2", "path": f"/etc/{name}/{name}.conf"}],
        }
        if after:
            svc["after"] = after
        if j % 7 == 3:
            svc["network"] = "host"
        elif j % 3 == 0:
            svc["publish"] = [f"{port}:{port}"]
        if j % 4 == 0:
            svc["config"].append({"template": "common/logging.conf.j2",
                                  "path": f"/etc/{name}/logging.conf", "mode": "0644"})
        if j % 5 == 0:
            svc["state"] = [f"/var/lib/{name}"]
        if j % 3 == 1:
            svc["limits"] = {"memory": "512M", "tasks": 512}  # not cpu: see README (CPUQuota bug)
        svc["readiness"] = ({"notify": True, "timeout": "90s"}, {"tcp": port},
                            {"http": f"http://127.0.0.1:{port}/healthcheck", "timeout": "120s"}
                            )[j % 3]
        out[name] = svc
    return out


def _dump(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=None, width=100))


def _write_services(root: Path, services: dict[str, dict[str, Any]]) -> None:
    sdir = root / "services"
    sdir.mkdir(parents=True, exist_ok=True)
    for name, svc in services.items():
        _dump(sdir / f"{name}.yaml", svc)


def single_host(root: Path, n: int, *, host: str = "node001") -> str:
    """One host running ``n`` services through one role; every 50th has a host override."""
    services = catalogue(n, "svc", port_base=20000)
    write_templates(root)
    _write_services(root, services)
    names = list(services)
    overrides = {s: {"environment": {"OVERRIDDEN": "yes"}, "limits": {"memory": "1G"}}
                 for s in names[5::50]}
    host_def: dict[str, Any] = {"address": "192.0.2.10", "roles": ["all"]}
    if overrides:
        host_def["overrides"] = overrides
    _dump(root / "deployment.yaml", {
        "defaults": DEFAULTS,
        "roles": {"all": {"services": names}},
        "hosts": {host: host_def},
    })
    return host


def cloud(root: Path, n_hosts: int, per_host: int) -> tuple[str, str]:
    """3 controllers, n_hosts/100 network nodes, the rest compute nodes; ``per_host`` each.

    Network and compute services require the controllers' message queue and
    want their database (cross-host edges); every 10th compute node overrides
    one service.  Returns a (compute host, controller host) to generate for.
    """
    ctl = catalogue(per_host, "ctl", port_base=20000)
    ctl_names = list(ctl)
    external = (ctl_names[1], ctl_names[0])  # ctl-mq-00001, ctl-db-00000
    net = catalogue(per_host, "net", port_base=21000, infra=1, external=external)
    cmp_ = catalogue(per_host, "cmp", port_base=22000, infra=1, external=external)
    write_templates(root)
    for part in (ctl, net, cmp_):
        _write_services(root, part)
    n_net = max(1, n_hosts // 100)
    n_cmp = n_hosts - 3 - n_net
    cmp_names = list(cmp_)
    hosts: dict[str, Any] = {}
    for i in range(3):
        hosts[f"ctl{i + 1:03d}"] = {"address": f"10.0.0.{i + 11}", "roles": ["controller"]}
    for i in range(n_net):
        hosts[f"net{i + 1:03d}"] = {"address": f"10.0.1.{i + 11}", "roles": ["network"]}
    for i in range(n_cmp):
        h: dict[str, Any] = {"address": f"10.{2 + i // 250}.{i % 250}.1", "roles": ["compute"]}
        if i % 10 == 0:
            h["overrides"] = {cmp_names[-1]: {"limits": {"memory": f"{4 + i % 8}G"}}}
        hosts[f"cmp{i + 1:04d}"] = h
    _dump(root / "deployment.yaml", {
        "defaults": DEFAULTS,
        "roles": {
            "controller": {"services": ctl_names},
            "network": {"services": list(net)},
            "compute": {"services": cmp_names,
                        "overrides": {cmp_names[2]: {"environment": {"NODE_KIND": "compute"}}}},
        },
        "hosts": hosts,
    })
    return "cmp0500", "ctl001"
