"""Turn the loaded YAML of a deployment directory (``osunits.deployment``) into the
typed model.  All problems are collected, then raised together.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path, PurePosixPath
from typing import TypeVar

from osunits import fields
from osunits.deployment import DEPLOYMENT_FILE, SERVICES_DIR, service_files
from osunits.errors import DeploymentError, Location, Problem, unknown_name
from osunits.fields import FIELDS_BY_KEY, SERVICE_FIELDS, Invalid
from osunits.load import Mapping, Scalar, Sequence, Value, load_yaml
from osunits.model import (
    CONTAINER_HOSTS,
    CONTAINER_OWN,
    LOCATED_KEYS,
    ConfigFile,
    Dependency,
    DependencyKind,
    Deployment,
    Host,
    Network,
    Readiness,
    ReadinessKind,
    Service,
)

T = TypeVar("T")


# Merged key by key rather than replaced, so an override can add one variable.
_MERGED_KEYS = {"environment", "limits"}


def build_deployment(root: Path, reuse: dict[str, Service] | None = None,
                     reuse_hosts: dict[str, Host] | None = None,
                     reuse_defaults: str = "") -> Deployment:
    """Read and validate the deployment in ``root`` (``deployment.load_deployment`` caches it).

    From a previous build: ``reuse`` maps the service files unchanged since to the services
    built from them, which stand if ``defaults`` reads as it did then (``reuse_defaults``,
    that build's ``defaults_key``); ``reuse_hosts`` gives that build's hosts, whose
    overridden copies of those services stand too: pass them only when ``deployment.yaml``
    is unchanged."""
    problems: list[Problem] = []
    top_path = root / DEPLOYMENT_FILE
    if not root.is_dir():
        raise DeploymentError([Problem("E000", "deployment directory not found", Location(str(root)))])
    if not top_path.is_file():
        raise DeploymentError([Problem("E000", f"no {DEPLOYMENT_FILE} here", Location(str(root)),
                                       hint="give --deployment DIR or set OSUNITS_DEPLOYMENT")])
    top = _collect(problems, lambda: load_yaml(top_path))
    defaults = None if top is None else _mapping_or_empty(top, "defaults", problems)
    defaults_key = repr(defaults)
    if defaults_key != reuse_defaults:
        reuse = None
    broken: set[str] = set()  # services whose file did not load: already reported
    raw_services, reused = _load_service_files(root / SERVICES_DIR, problems, broken, reuse or {})
    if top is None:
        raise DeploymentError(problems)
    problems += fields.check_keys(top, fields.DEPLOYMENT_KEYS, "deployment.yaml")

    if defaults is not None:
        problems += fields.check_keys(defaults, FIELDS_BY_KEY, "defaults")
        if "name" in defaults.entries:
            problems.append(Problem("E102", "cannot have a default", defaults.key_loc("name"),
                                    key="name"))

    base: dict[str, Service] = dict(reused)
    raw_by_name: dict[str, Mapping | None] = {}
    for name, raw in raw_services.items():
        merged = _merge(defaults, raw) if defaults else raw
        svc = _build_service(name, merged, problems, own=raw)
        raw_by_name[name] = merged
        if svc is not None:
            base[name] = svc

    def raw_of(name: str) -> Mapping | None:
        """A service's definition with the defaults applied (read now if it was reused)."""
        if name not in raw_by_name:
            path = reused[name].source
            m = _collect(problems, lambda: load_yaml(path))
            raw_by_name[name] = _merge(defaults, m) if defaults and m else m
        return raw_by_name[name]

    names = set(raw_services) | set(reused)
    network = _load_network(top, problems)
    roles = _load_roles(top, names, broken, problems)
    hosts = _load_hosts(top, roles, names, raw_of, base, broken, problems,
                        reuse_hosts or {}, set(reused))

    if any(p.severity == "error" for p in problems):
        raise DeploymentError(problems)
    return Deployment(
        root=root,
        hosts=tuple(sorted(hosts, key=lambda h: h.name)),
        roles=tuple(sorted((n, r[0]) for n, r in roles.items())),
        services=tuple(base[n] for n in sorted(base)),
        network=network,
        defaults_key=defaults_key,
    )


def _collect(problems: list[Problem], fn: Callable[[], T]) -> T | None:
    try:
        return fn()
    except DeploymentError as e:
        problems.extend(e.problems)
        return None


def _load_service_files(sdir: Path, problems: list[Problem], broken: set[str],
                        reuse: dict[str, Service]) -> tuple[dict[str, Mapping], dict[str, Service]]:
    out: dict[str, Mapping] = {}
    reused: dict[str, Service] = {}
    if not sdir.is_dir():
        problems.append(Problem("E000", "no services/ directory", Location(str(sdir))))
        return out, reused
    base = str(sdir)
    for n in service_files(sdir):
        if (svc := reuse.get(os.path.join(base, n))) is not None:
            if not _defined_before(svc.name, svc.loc, out, reused, problems):
                reused[svc.name] = svc
            continue
        path = sdir / n
        m = _collect(problems, lambda path=path: load_yaml(path))  # type: ignore[misc]
        if m is None:
            broken.add(path.stem)
            continue
        stem = path.stem
        name_v = m.get("name")
        name = stem
        if name_v is not None:
            try:
                name = fields.parse_name(name_v)
            except Invalid as e:
                problems.append(Problem("E103", str(e), e.loc or name_v.loc, "name", e.hint))
                continue
            if name != stem:
                problems.append(Problem("E104", f"name {name!r} differs from the file name",
                                        name_v.loc, "name", hint=f"rename the file to {name}.yaml"))
                continue
        elif (err := fields.name_error(stem, "service name")) is not None:
            problems.append(Problem("E103", err, Location(str(path)), "name", fields.NAME_HINT))
            continue
        if not _defined_before(name, m.loc, out, reused, problems):
            out[name] = m
    return out, reused


def _defined_before(name: str, loc: Location, loaded: dict[str, Mapping],
                    reused: dict[str, Service], problems: list[Problem]) -> bool:
    """E105 when ``name`` came from another file already (a.yaml next to a.yml)."""
    if name in loaded:
        first = loaded[name].source
    elif name in reused:
        first = str(reused[name].source)
    else:
        return False
    problems.append(Problem("E105", f"service {name!r} is defined twice", loc, "name",
                            hint=f"also defined in {first}"))
    return True


def _mapping_or_empty(top: Mapping, key: str, problems: list[Problem]) -> Mapping | None:
    v = top.get(key)
    if v is None or (isinstance(v, Scalar) and v.value is None):
        return None
    if not isinstance(v, Mapping):
        problems.append(Problem("E106", "expected a mapping", v.loc, key))
        return None
    return v


def _merge(base: Mapping, over: Mapping) -> Mapping:
    """Layer ``over`` on ``base``; locations follow the value that wins."""
    entries = dict(base.entries)
    key_locs = dict(base.key_locs)
    for k, v in over.entries.items():
        old = entries.get(k)
        if k in _MERGED_KEYS and isinstance(old, Mapping) and isinstance(v, Mapping):
            v = _merge(old, v)
        entries[k] = v
        key_locs[k] = over.key_loc(k)
    return Mapping(entries, key_locs, over.loc, over.source)


def _build_service(name: str, m: Mapping, problems: list[Problem], *,
                   own: Mapping | None) -> Service | None:
    """The service from ``m`` (its file with defaults and overrides applied); ``own``, its
    file alone, is checked for unknown keys (defaults and overrides are checked where
    they are written, once)."""
    n_before = len(problems)
    if own is not None:
        problems += fields.check_keys(own, FIELDS_BY_KEY, "a service")
    values: dict[str, object] = {}
    for f in SERVICE_FIELDS:
        v = m.get(f.key)
        if v is None:
            if f.required:
                problems.append(Problem("E107", "missing required key", m.loc, f.key,
                                        hint=f.help))
            values[f.key] = f.default
            continue
        try:
            values[f.key] = f.parse(v)
        except Invalid as e:
            problems += [Problem("E108", str(x), x.loc or v.loc or m.key_loc(f.key), f.key,
                                 x.hint) for x in e.each()]
    values["name"] = name
    if len(problems) > n_before:
        return None
    if values["boot"] and values["exec"]:
        problems.append(Problem("E109", "give either exec or boot: true, not both",
                                m.key_loc("exec"), "exec"))
    elif not values["boot"] and not values["exec"]:
        problems.append(Problem("E109", "missing the command to run", m.loc, "exec",
                                hint="give exec: [...], or boot: true to boot the container's init"))
    deps = []
    seen: dict[str, str] = {}
    for kind in DependencyKind:
        v = m.get(str(kind))
        for dep_name, item in zip(values[str(kind)], _items(v), strict=False):  # type: ignore[call-overload]
            if dep_name == name:
                problems.append(Problem("E110", "a service cannot depend on itself", item.loc,
                                        str(kind)))
            elif dep_name in seen:
                problems.append(Problem("E111", f"{dep_name!r} is already listed under "
                                        f"{seen[dep_name]}", item.loc, str(kind),
                                        hint="list each dependency once, under its strongest kind"))
            else:
                seen[dep_name] = str(kind)
                deps.append(Dependency(dep_name, kind, item.loc))
    problems += _bind_overlaps(values, m) + _config_overlaps(values) + _publish_twice(values, m)
    values["readiness"] = values["readiness"] or Readiness(ReadinessKind.NONE)
    values["description"] = values["description"] or f"osunits service {name}"
    if len(problems) > n_before:
        return None
    source = Path(m.source)
    kinds = {str(k) for k in DependencyKind}
    direct = {k: v for k, v in values.items() if k not in kinds}
    # The field table's keys are Service's fields (tests/test_model.py holds them together).
    return Service(**direct, dependencies=tuple(deps),  # type: ignore[arg-type]
                   source=source, loc=m.loc,
                   key_locs=tuple(x for k in LOCATED_KEYS if k in m.entries
                                  for x in (k, *m.key_loc(k))))


def _nested(a: PurePosixPath, b: PurePosixPath) -> bool:
    """``a`` and ``b`` are one path, or one holds the other."""
    return a == b or a in b.parents or b in a.parents


def _bind_overlaps(values: dict[str, object], m: Mapping) -> list[Problem]:
    """E108 for a bind over what the container must keep: osunits' own files, its hosts
    file, a state directory, or a config file's directory (the init would install the
    file into the host's directory)."""
    out = []
    loc = m.key_loc("binds")
    state = [st.path for st in values["state"]]  # type: ignore[attr-defined]
    configs = [cf.path for cf in values["config"]]  # type: ignore[attr-defined]
    for b in values["binds"]:  # type: ignore[attr-defined]
        p = b.path
        clash = next((f"osunits' own {x}" for x in (CONTAINER_OWN, CONTAINER_HOSTS)
                      if _nested(p, x)), None)
        clash = clash or next((f"the state directory {s}" for s in state if _nested(p, s)),
                              None)
        clash = clash or next((f"the config file {c}" for c in configs if p in c.parents or
                               p == c), None)
        if clash:
            out.append(Problem("E108", f"{b}: would cover {clash}", loc, "binds",
                               hint="bind it somewhere else in the container"))
    return out


def _config_overlaps(values: dict[str, object]) -> list[Problem]:
    """E108 for a config path that is another's, or its directory: both are files on the
    host as in the container."""
    out = []
    seen: list[ConfigFile] = []
    for cf in values["config"]:  # type: ignore[attr-defined]
        other = next((o for o in seen if _nested(cf.path, o.path)), None)
        if other is not None:
            how = ("is written twice" if cf.path == other.path else
                   "would be a directory" if cf.path in other.path.parents else
                   "would be in a file")
            out.append(Problem("E108", f"{cf.path} {how}: {other.path} is written from "
                               f"template {other.template!r}", cf.loc, "config",
                               hint="give each config file its own path"))
        seen.append(cf)
    return out


def _publish_twice(values: dict[str, object], m: Mapping) -> list[Problem]:
    """E108 for a host port published twice by one service (C006 compares services):
    its socket unit is named after the port."""
    ports = [p.host_port for p in values["publish"]]  # type: ignore[attr-defined]
    twice = sorted({p for p in ports if ports.count(p) > 1})
    return [Problem("E108", f"host port {p} is published twice", m.key_loc("publish"),
                    "publish", hint="publish each host port once") for p in twice]


def _items(v: Value | None) -> tuple[Value, ...]:
    return v.items if isinstance(v, Sequence) else ()


def _name_list(v: Value, key: str, problems: list[Problem]) -> list[tuple[str, Location]]:
    if isinstance(v, Scalar) and v.value is None:
        return []
    if not isinstance(v, Sequence):
        problems.append(Problem("E106", "expected a list of names", v.loc, key))
        return []
    out = []
    for it in v.items:
        try:
            out.append((fields.parse_name(it), it.loc))
        except Invalid as e:
            problems.append(Problem("E103", str(e), it.loc, key, e.hint))
    return out



_Role = tuple[tuple[str, ...], Mapping | None, Location]


def _load_roles(top: Mapping, services: set[str], broken: set[str],
                problems: list[Problem]) -> dict[str, _Role]:
    roles: dict[str, _Role] = {}
    rm = _mapping_or_empty(top, "roles", problems)
    if rm is None:
        return roles
    for rname, rv in rm.entries.items():
        kloc = rm.key_loc(rname)
        if (err := fields.name_error(rname, "role name")) is not None:
            problems.append(Problem("E103", err, kloc, "roles", fields.NAME_HINT))
            continue
        if isinstance(rv, Sequence):  # short form: a list of services
            rv = Mapping({"services": rv}, {"services": rv.loc}, rv.loc, rm.source)
        if not isinstance(rv, Mapping):
            problems.append(Problem("E106", "expected a mapping or a list of services", rv.loc,
                                    f"roles.{rname}"))
            continue
        problems += fields.check_keys(rv, fields.ROLE_KEYS, f"role {rname!r}")
        names = []
        for sname, loc in _name_list(rv.get("services") or Scalar(None, rv.loc),
                                     f"roles.{rname}.services", problems):
            if sname not in services and sname not in broken:
                problems.append(unknown_name("service", sname, sorted(services), loc,
                                              f"roles.{rname}.services"))
            names.append(sname)
        overrides = _overrides(rv, f"roles.{rname}", set(names), problems,
                               f"not in role {rname}")
        roles[rname] = (tuple(names), overrides, kloc)
    return roles


def _overrides(m: Mapping, where: str, allowed: set[str] | None,
               problems: list[Problem], runs_on: str) -> Mapping | None:
    """The ``overrides`` of ``m`` (a role or host at key path ``where``), which may only
    name services in ``allowed`` (``runs_on`` says where, for the error)."""
    ov = _mapping_or_empty(m, "overrides", problems)
    if ov is None:
        return None
    for sname, sv in ov.entries.items():
        loc = ov.key_loc(sname)
        if allowed is not None and sname not in allowed:
            problems.append(unknown_name("service", sname, sorted(allowed), loc,
                                         f"{where}.overrides", where=f"({runs_on})"))
        elif not isinstance(sv, Mapping):
            problems.append(Problem("E106", "expected a mapping of service keys", sv.loc,
                                    f"{where}.overrides.{sname}"))
        else:
            problems += fields.check_keys(sv, FIELDS_BY_KEY, f"overrides of {sname!r}")
            if "name" in sv.entries:
                problems.append(Problem("E102", "cannot be overridden", sv.key_loc("name"),
                                        "name"))
    return ov


def _load_hosts(top: Mapping, roles: dict[str, _Role], names: set[str],
                raw_of: Callable[[str], Mapping | None], base: dict[str, Service],
                broken: set[str], problems: list[Problem], previous: dict[str, Host],
                unchanged: set[str]) -> list[Host]:
    hm = _mapping_or_empty(top, "hosts", problems)
    if hm is None or not hm.entries:
        v = top.get("hosts")
        if v is None or isinstance(v, Scalar) or hm is not None:  # else E106 said what
            problems.append(Problem("E121", "the deployment has no hosts",
                                    top.key_loc("hosts"), "hosts"))
        return []
    hosts = []
    addresses: dict[str, str] = {}
    # A role's overrides apply to every host of the role: build each combination once.
    built: dict[tuple[str, tuple[int, ...]], Service | None] = {}
    for hname, hv in hm.entries.items():
        kloc = hm.key_loc(hname)
        if (err := fields.name_error(hname, "host name")) is not None:
            problems.append(Problem("E103", err, kloc, "hosts", fields.NAME_HINT))
            continue
        if hname in names:  # both are in every hosts file: the name would mean two addresses
            problems.append(Problem("E123", f"host {hname!r} has the name of a service",
                                    kloc, "hosts", hint="rename the host or the service"))
        if not isinstance(hv, Mapping):
            problems.append(Problem("E106", "expected a mapping", hv.loc, f"hosts.{hname}"))
            continue
        problems += fields.check_keys(hv, fields.HOST_KEYS, f"host {hname!r}")
        address = ""
        av = hv.get("address")
        if av is None:
            problems.append(Problem("E107", "missing required key", hv.loc,
                                    f"hosts.{hname}.address"))
        else:
            try:
                address = fields.parse_address(av)
            except Invalid as e:
                problems.append(Problem("E108", str(e), av.loc, f"hosts.{hname}.address"))
            if address and address in addresses:
                problems.append(Problem("E122", f"address {address} is also host "
                                        f"{addresses[address]!r}'s", av.loc,
                                        f"hosts.{hname}.address"))
            addresses.setdefault(address, hname)
        role_names = []
        layers: list[Mapping] = []
        svc_names: list[str] = []
        for rname, loc in _name_list(hv.get("roles") or Scalar(None, hv.loc),
                                     f"hosts.{hname}.roles", problems):
            role = roles.get(rname)
            if role is None:
                problems.append(unknown_name("role", rname, list(roles), loc,
                                              f"hosts.{hname}.roles"))
                continue
            role_names.append(rname)
            svc_names += [s for s in role[0] if s not in svc_names]
        for sname, loc in _name_list(hv.get("services") or Scalar(None, hv.loc),
                                     f"hosts.{hname}.services", problems):
            if sname not in names and sname not in broken:
                problems.append(unknown_name("service", sname, sorted(names), loc,
                                              f"hosts.{hname}.services"))
            elif sname not in svc_names:
                svc_names.append(sname)
        host_ov = _overrides(hv, f"hosts.{hname}", set(svc_names), problems,
                             f"not on host {hname}")
        services = []
        for sname in sorted(svc_names):
            if sname not in base:
                continue  # its own errors were reported already
            layers = [ov for rn in role_names
                      if (ov := _override_for(roles[rn][1], sname)) is not None]
            if (hov := _override_for(host_ov, sname)) is not None:
                layers.append(hov)
            if not layers:
                services.append(base[sname])
                continue
            if sname in unchanged and (prev := previous.get(hname)) is not None and (
                    svc := prev.service(sname)) is not None:
                services.append(svc)  # same file, same overrides: the same build
                continue
            key = (sname, tuple(id(layer) for layer in layers))
            if key not in built:
                own = raw_of(sname)
                if own is None:
                    continue  # its file no longer loads: reported
                merged = own
                for layer in layers:
                    merged = _merge(merged, layer)
                # still the service of its own file, whatever the overrides set
                merged = Mapping(merged.entries, merged.key_locs, own.loc, own.source)
                built[key] = _build_service(sname, merged, problems, own=None)
            svc = built[key]
            if svc is not None:
                services.append(svc)
        hosts.append(Host(hname, address, tuple(role_names), tuple(services), kloc))
    return hosts


def _override_for(ov: Mapping | None, sname: str) -> Mapping | None:
    if ov is None:
        return None
    v = ov.get(sname)
    return v if isinstance(v, Mapping) else None


NETWORK_KEYS = {"subnet": "IPv4 subnet of every host's service bridge [10.213.0.0/16]",
                "bridge": "name of the bridge [osunits0]",
                "gate_timeout": "how long a cross-host gate waits for its remote service [600s]",
                "masquerade": "containers reach other hosts through the host's address [true]",
                "existing_bridge": "join a bridge the host already has instead of creating one "
                                   "[false]",
                "gateway": "the containers' default route [the subnet's first address]"}


def _load_network(top: Mapping, problems: list[Problem]) -> Network:
    m = _mapping_or_empty(top, "network", problems)
    if m is None:
        return Network()
    problems += fields.check_keys(m, NETWORK_KEYS, "network")
    kw: dict[str, object] = {}
    for key, attr, parse in (
            ("subnet", "subnet", _parse_subnet), ("bridge", "bridge", _parse_ifname),
            ("gate_timeout", "gate_timeout", fields.parse_duration),
            ("masquerade", "masquerade", fields.parse_bool),
            ("existing_bridge", "existing_bridge", fields.parse_bool),
            ("gateway", "gateway_address", lambda v: IPv4Address(fields.parse_ipv4(v)))):
        v = m.get(key)
        if v is None:
            continue
        try:
            kw[attr] = parse(v)
        except Invalid as e:
            problems.append(Problem("E108", str(e), e.loc or v.loc, f"network.{key}", e.hint))
    net = Network(**kw, loc=m.loc)  # type: ignore[arg-type]
    if net.gateway_address is not None and net.gateway_address not in net.subnet:
        problems.append(Problem("E108", f"gateway {net.gateway_address} is outside the subnet "
                                f"{net.subnet}", m.key_loc("gateway"), "network.gateway"))
    return net


def _parse_subnet(v: Value) -> IPv4Network:
    s = fields.parse_str(v, allow_empty=False)
    try:
        net = IPv4Network(s, strict=True)
    except ValueError as e:
        raise Invalid(f"{s!r} is not an IPv4 subnet ({e})", hint="e.g. 10.213.0.0/16") from e
    if net.prefixlen > 29:
        raise Invalid(f"{s}: too small for services (at most /29)")
    return net


def _parse_ifname(v: Value) -> str:
    s = fields.parse_str(v, allow_empty=False)
    if not re.match(r"^[a-z][a-z0-9_-]{0,14}$", s):
        raise Invalid(f"{s!r} is not a valid interface name (at most 15 characters)")
    return s
