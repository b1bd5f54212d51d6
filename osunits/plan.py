"""Plan the files one host needs: pure, from the model to bytes at paths.

Layout on the host (all paths absolute, as under ``/``):

* ``/etc/systemd/nspawn/SERVICE.nspawn``: the container (systemd.nspawn(5)),
  read by systemd's stock ``systemd-nspawn@.service`` (``--settings=override``);
* ``/etc/systemd/system/systemd-nspawn@SERVICE.service.d/50-osunits.conf``:
  dependencies, timeouts, restart policy and limits of that stock unit;
* ``/etc/systemd/system/openstack.target``: pulls in every service of the host;
* ``/var/lib/machines/SERVICE`` → ``/var/lib/osunits/rootfs/SPEC``: the image,
  so ``machinectl start|shell|status SERVICE`` and ``journalctl -M`` just work;
* ``/var/lib/osunits/config/SERVICE/...``: rendered config files (bound read-only);
* ``/var/lib/osunits/lib/init.py``: the container init (see docs/readiness.md).
"""

from __future__ import annotations

import functools
import hashlib
import importlib._bootstrap_external
import importlib.util
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from osunits import cache
from osunits.deployment import DEPLOYMENT_FILE, TEMPLATES_DIR, secrets_dir
from osunits.errors import DeploymentError, Problem, Severity
from osunits.graph import (
    READY_PORT,
    READY_UNIT,
    CrossHostEdge,
    HostGraph,
    check_deployment,
    empty_host,
    host_of,
    ready_endpoint_services,
)
from osunits.model import (
    CONTAINER_HOSTS,
    CONTAINER_OWN,
    MACHINES,
    OSUNITS_LIB,
    OSUNITS_RUN,
    RUN_MACHINES,
    DependencyKind,
    Deployment,
    Host,
    NetworkMode,
    Service,
)
from osunits.network import listen_address, mac_of, netns_name, veth_name
from osunits.parallel import map_chunks
from osunits.render import ConfigRenderer, render_text, render_unit
from osunits.systemd.escape import EscapeError
from osunits.systemd.units import TARGET, is_unit, unit_of

# Services rendered per process at least: a fork costs about as much as rendering 100
# (bench/README.md).
RENDERS_PER_FORK = 500
ROOTFS_DIR = OSUNITS_LIB / "rootfs"  # images persist in /var whatever the layout
INIT_CONTAINER_DIR = CONTAINER_OWN / "lib"
# The init imported as a module, so Python uses the bytecode osunits ships next to it
# (compiling the script at every start left ~1 MB behind in every container).
INIT_BOOT = ("import sys; sys.path[:0] = ['/run/osunits/lib']; import init; "
             "sys.exit(init.main(sys.argv))")
CONFIG_CONTAINER_PATH = str(CONTAINER_OWN / "config")  # the init copies files from here into place
# The hosts file's directory, bound (not the file: a bound file keeps the inode it had, and
# osunits replaces the file by rename); the init makes /etc/hosts a link into it, so a
# running container sees every later generate's names.
HOSTS_CONTAINER_DIR = str(CONTAINER_OWN / "hosts")
INIT_SOURCE = Path(__file__).parent / "container" / "init.py"
BRIDGE_UNIT = "osunits-bridge.service"
NAT_TABLE = "osunits"
PROXYD = "/lib/systemd/systemd-socket-proxyd"


def netns_unit(service: str) -> str:
    return f"osunits-net-{service}.service"


GATE_PREFIX = "osunits-remote-"


def gate_unit(dep: str) -> str:
    return f"{GATE_PREFIX}{dep}.service"


def publish_unit(service: str, port: int, suffix: str) -> str:
    return f"osunits-publish-{service}-{port}.{suffix}"


DROPIN_NAME = "50-osunits.conf"
START_MARGIN = 30  # seconds on top of the readiness timeout for the container itself


@dataclass(frozen=True, slots=True)
class Layout:
    """Where generated files go.  ``generate`` writes persistent files under /etc and
    /var/lib; generator mode (at boot, before /var may be mounted) writes to the
    generator's unit directory and /run, which systemd searches too."""

    units: PurePosixPath = PurePosixPath("/etc/systemd/system")
    nspawn: PurePosixPath = PurePosixPath("/etc/systemd/nspawn")
    machines: PurePosixPath = MACHINES
    own: PurePosixPath = OSUNITS_LIB  # rendered config, the init, the manifest
    # Pull the target in at boot with our own wants link: in generator mode, where
    # `systemctl enable` refuses generated units; `generate` leaves it to the operator.
    boot_link: bool = False
    # Derived from ``own``, once: they are asked for several times per service.
    config: PurePosixPath = field(init=False, repr=False, compare=False)
    init: PurePosixPath = field(init=False, repr=False, compare=False)
    manifest: PurePosixPath = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "config", self.own / "config")
        object.__setattr__(self, "init", self.own / "lib" / "init.py")
        object.__setattr__(self, "manifest", self.own / "manifest.json")

    @classmethod
    def generator(cls, unit_dir: str) -> Layout:
        return cls(PurePosixPath(unit_dir), PurePosixPath("/run/systemd/nspawn"),
                   RUN_MACHINES, OSUNITS_RUN,
                   boot_link=True)

    @property
    def boot_wants(self) -> PurePosixPath:
        """Where a link makes boot (multi-user.target) start the target."""
        return self.units / "multi-user.target.wants" / TARGET


INSTALLED = Layout()
INIT_HOST_PATH = INSTALLED.init


def _pyc_path(layout: Layout) -> PurePosixPath:
    return layout.init.parent / "__pycache__" / f"init.{sys.implementation.cache_tag}.pyc"


@functools.cache
def _init_bytecode() -> bytes:
    """init.py compiled by this Python, hash-based and unchecked: the same bytes on every
    run (deterministic output), used by a container whose Python has the same magic
    number (Debian 12's 3.11), ignored (and the source compiled) by any other."""
    source = INIT_SOURCE.read_bytes()
    source_hash = importlib.util.source_hash(source)
    d = cache.directory("pyc")  # compiling takes longer than the rest of planning 20 services
    path = d / _pyc_path(INSTALLED).name if d else None
    if path and (pyc := cache.read(path, b"")) is not None and pyc[8:16] == source_hash:
        return pyc
    code = compile(source, "/run/osunits/lib/init.py", "exec", dont_inherit=True)
    pyc = bytes(importlib._bootstrap_external._code_to_hash_pyc(  # type: ignore[attr-defined]
        code, source_hash, checked=False))
    if path:
        cache.write(path, pyc)
    return pyc


@dataclass(frozen=True, slots=True)
class PlannedFile:
    path: PurePosixPath  # absolute, as on the host
    content: bytes = b""
    mode: int = 0o644
    link: str = ""  # a symlink to this target instead of content
    source: str = ""  # the definition that produced it
    # The containers that read it: a change reaches a running one only when it restarts.
    services: tuple[str, ...] = ()
    secret: bool = False  # rendered with secret(): never shown (--diff), never hashed

    @property
    def digest(self) -> str:
        data = b"->" + self.link.encode() if self.link else self.content
        return hashlib.sha256(data).hexdigest()

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # A forked child sends 10 000 back (plan_host): the constructor's arguments with
        # the path as a string cost a third of a dataclass' state and a path's parts.
        return _planned_file, (str(self.path), self.content, self.mode, self.link,
                               self.source, self.services, self.secret)


def _planned_file(path: str, *rest: Any) -> PlannedFile:
    return PlannedFile(PurePosixPath(path), *rest)


@dataclass(frozen=True, slots=True)
class HostPlan:
    host: str
    files: tuple[PlannedFile, ...]  # sorted by path
    graph: HostGraph
    warnings: tuple[Problem, ...] = ()


def plan_host(dep: Deployment, host_name: str, given_by: str = "--host",
              layout: Layout = INSTALLED) -> HostPlan:
    """Everything to write for ``host_name`` (``given_by`` named it)."""
    host = host_of(dep, host_name, given_by)
    if not host.services:  # an emptied role or a lost line must not wipe a host
        raise DeploymentError([empty_host(host, Severity.ERROR)])
    report = check_deployment(dep, [host_name])
    errors = [p for p in report.problems if p.severity == "error"]
    if errors:
        raise DeploymentError(errors)
    warnings = tuple(p for p in report.problems if p.severity != "error")
    graph = report.hosts[0]
    renderer = ConfigRenderer(dep.root / TEMPLATES_DIR, secrets_dir(dep.root))
    files: list[PlannedFile] = []
    problems: list[Problem] = []
    addresses = {k: str(v) for k, v in graph.addresses.items()}  # allocated by the checks
    gates = _gates(graph.cross_host)
    base = {id(s) for s in dep.services}  # a host's copy of another identity has overrides

    def plan(services: Sequence[Service]) -> tuple[list[PlannedFile], list[Problem], set[str]]:
        files: list[PlannedFile] = []
        problems: list[Problem] = []
        for svc in services:
            try:
                files += _plan_service(dep, host, svc, renderer, layout, addresses, gates,
                                       overridden=id(svc) not in base)
            except DeploymentError as e:
                problems += e.problems
            except EscapeError as e:  # validation should have caught it: still no traceback
                problems.append(Problem("P001", f"cannot write {svc.name}'s units: {e}",
                                        svc.loc))
        return files, problems, renderer.secrets  # for masking: see ConfigRenderer.masked

    for chunk_files, chunk_problems, secrets in map_chunks(plan, host.services,
                                                           RENDERS_PER_FORK):
        files += chunk_files
        problems += chunk_problems
        renderer.secrets |= secrets
    if problems:
        raise DeploymentError([renderer.masked(p) for p in problems])
    for private in sorted({s.network is NetworkMode.PRIVATE for s in host.services}):
        files.append(PlannedFile(hosts_path(layout, private), _hosts_file(
            dep, host, addresses, private).encode(), source="deployment.yaml",
            services=tuple(s.name for s in host.services  # the others see it live
                           if s.boot and (s.network is NetworkMode.PRIVATE) == private)))
    extra = _plan_network(dep, host, layout, addresses, gates)
    files += extra
    # Containers want their own published sockets; the readiness endpoint serves the host.
    wanted = [unit_of(s.name) for s in host.services] + sorted(
        str(f.path.name) for f in extra if f.path.name == f"{READY_UNIT}.socket")
    files.append(PlannedFile(layout.units / TARGET, render_unit(
        "openstack.target.j2", host=host.name, units=wanted).encode(), source="deployment.yaml"))
    if layout.boot_link:
        files.append(PlannedFile(layout.boot_wants, link=str(layout.units / TARGET),
                                 source="deployment.yaml"))
    init_users = tuple(s.name for s in host.services if not s.boot)
    files.append(PlannedFile(layout.init, INIT_SOURCE.read_bytes(), 0o755, source="osunits",
                             services=init_users))
    files.append(PlannedFile(_pyc_path(layout), _init_bytecode(), 0o644, source="osunits",
                             services=init_users))
    # Sorted by ``parts``: PurePath's own order, with its key computed once per file
    # instead of in every comparison (the sort of 5000 services' files took 0.1 s).
    ordered = tuple(sorted(files, key=lambda f: f.path.parts))
    _one_file_per_path(ordered)
    return HostPlan(host.name, ordered, graph, warnings)


def _one_file_per_path(files: tuple[PlannedFile, ...]) -> None:
    """Refuse two files at one path, or a file in another's place as a directory: the
    writer would commit half of the set and stop (validation refuses what leads here)."""
    problems = []
    for a, b in zip(files, files[1:], strict=False):
        # in this order, a path that holds others comes right before the first of them
        if b.path.parts[:len(a.path.parts)] == a.path.parts:
            problems.append(Problem("P002", f"{b.path}: planned from {b.source or 'osunits'}, "
                                    f"and {a.path} from {a.source or 'osunits'}", None))
    if problems:
        raise DeploymentError(problems)


def _rel(dep: Deployment, path: Path) -> str:
    try:
        return str(path.relative_to(dep.root))
    except ValueError:
        return str(path)


def _gates(edges: tuple[CrossHostEdge, ...]) -> dict[str, CrossHostEdge]:
    """One gate per remote dependency of the host, shared by its dependents."""
    out: dict[str, CrossHostEdge] = {}
    for e in edges:
        out.setdefault(e.dependency.name, e)
    return out


def _probe_spec(endpoint: str) -> str:
    kind, _, where = endpoint.partition(" ")
    if kind == "ready":
        return f"http:http://{where}"
    return f"{kind}:{where}"


def _plan_network(dep: Deployment, host: Host, layout: Layout, addresses: dict[str, str],
                  gates: dict[str, CrossHostEdge]) -> list[PlannedFile]:
    net = dep.network
    files: list[PlannedFile] = []
    common = {"host": host.name, "target": TARGET}
    if addresses:
        nat_file = ""
        if net.masquerade:
            nat_path = layout.own / "lib" / "nat.nft"
            nat_file = str(nat_path)
            files.append(PlannedFile(nat_path, render_text(
                "nat.nft.j2", host=host.name, table=NAT_TABLE, subnet=str(net.subnet),
                bridge=net.bridge).encode(), source="deployment.yaml"))
        files.append(PlannedFile(layout.units / BRIDGE_UNIT, render_unit(
            "bridge.service.j2", bridge=net.bridge, nat_file=nat_file, nat_table=NAT_TABLE,
            existing=net.existing_bridge,
            own_del=f"/sbin/ip link show dev {net.bridge} 2>/dev/null | grep -q 'alias "
                    f"osunits-owned' && /sbin/ip link del {net.bridge}",
            cidr=f"{net.gateway}/{net.subnet.prefixlen}", **common).encode(),
            source="deployment.yaml"))
    init = str(layout.init)
    for name, edge in sorted(gates.items()):
        argv = ["/usr/bin/python3", "-I", "-S", init, "--probe", _probe_spec(edge.endpoint),
                str(net.gate_timeout)]
        files.append(PlannedFile(layout.units / gate_unit(name), render_unit(
            "gate.service.j2", dep=name, remote=edge.remote_hosts[0], endpoint=edge.endpoint,
            timeout=net.gate_timeout, argv=argv, **common).encode(), source="deployment.yaml"))
    ready = ready_endpoint_services(dep, host)
    if ready:
        listen = listen_address(host.address, READY_PORT)  # where the gates connect
        files.append(PlannedFile(layout.units / f"{READY_UNIT}.socket", render_unit(
            "ready.socket.j2", listen=listen, user=READY_UNIT, **common).encode(),
            source="deployment.yaml"))
        argv = ["/usr/bin/python3", "-I", "-S", init, "--answer-ready", *ready]
        files.append(PlannedFile(layout.units / f"{READY_UNIT}@.service", render_unit(
            "ready@.service.j2", argv=argv, user=READY_UNIT, own=str(layout.own), init=init,
            **common).encode(), source="deployment.yaml"))
    return files


def _hosts_file(dep: Deployment, host: Host, addresses: dict[str, str], private: bool) -> str:
    """/etc/hosts of the host's containers: every service and host of the deployment by
    name.  One file per host and network mode, shared by the containers (O(services))."""
    gateway = str(dep.network.gateway)
    by_addr: dict[str, list[str]] = {}

    def add(addr: str, name: str) -> None:
        names = by_addr.setdefault(addr, [])
        if name not in names:
            names.append(name)

    for s in host.services:
        if s.name in addresses:
            add(addresses[s.name], s.name)
        else:  # the host's own network: the bridge's address from a container, else loopback
            add(gateway if private else "127.0.0.1", s.name)
    for name, hosts in dep.placement().items():
        if host.service(name) is None:
            remote = dep.host(hosts[0])
            if remote is not None:
                add(remote.address, name)
    for h in dep.hosts:  # this host too: a host-network service's own host name
        add(h.address, h.name)
    entries = [(a, " ".join(n)) for a, n in sorted(by_addr.items(), key=lambda kv: kv[1][0])]
    mode = "private-network" if private else "host-network"
    return render_text("hosts.j2", svc=f"its {mode} containers", host=host.name, entries=entries)


def hosts_path(layout: Layout, private: bool) -> PurePosixPath:
    return layout.own / "hosts" / ("private" if private else "host-network") / "hosts"


def check_configs(dep: Deployment, hosts: Iterable[Host]) -> list[Problem]:
    """Render every config file of these hosts' services and keep only the problems, each
    once: check-deps says what generate would refuse, without writing anything."""
    renderer = ConfigRenderer(dep.root / TEMPLATES_DIR, secrets_dir(dep.root))

    def render(todo: Sequence[tuple[Host, Service]]) -> tuple[list[Problem], set[str]]:
        problems: list[Problem] = []
        for host, svc in todo:
            context = _config_context(dep, host, svc)
            for cf in svc.config:
                try:
                    renderer.render(cf.template, context, cf.loc)
                except DeploymentError as e:
                    problems += e.problems
        return problems, renderer.secrets  # for masking: see ConfigRenderer.masked

    todo = [(h, s) for h in hosts for s in h.services if s.config]
    problems: list[Problem] = []
    for chunk_problems, secrets in map_chunks(render, todo, RENDERS_PER_FORK):
        problems += chunk_problems
        renderer.secrets |= secrets
    return list(dict.fromkeys(renderer.masked(p) for p in problems))


def _plan_service(dep: Deployment, host: Host, svc: Service, renderer: ConfigRenderer,
                  layout: Layout, addresses: dict[str, str],
                  gates: dict[str, CrossHostEdge], *, overridden: bool) -> list[PlannedFile]:
    source = _rel(dep, svc.source)
    if overridden:
        source += f" and {DEPLOYMENT_FILE}'s overrides"
    files: list[PlannedFile] = []
    binds_ro: list[tuple[str, str]] = []
    digest = hashlib.sha256()
    context = _config_context(dep, host, svc)
    config_dir = layout.config / svc.name
    for cf in svc.config:
        text = renderer.render(cf.template, context, cf.loc)
        host_path = config_dir / cf.path.relative_to("/")
        # On the host only root reads it; in the container the init installs a copy
        # owned by the service's group (docs/readiness.md), a booted one gets a bind.
        secret = renderer.used_secret
        files.append(PlannedFile(host_path, text.encode(), 0o600, source=source,
                                 services=(svc.name,), secret=secret))
        if svc.boot:
            binds_ro.append((str(host_path), str(cf.path)))
        # The drop-in is world-readable: a file holding a secret, in whatever form the
        # template put it, must not be guessable from its hash; its change still asks
        # for a restart (PlannedFile.services).
        digest.update(f"{cf.path}\0{cf.mode:o}\0".encode()
                      + (b"(holds secrets)" if secret else text.encode()) + b"\0")
    hosts = hosts_path(layout, svc.network is NetworkMode.PRIVATE)
    if svc.boot:  # its own init does not link /etc/hosts: the file, seen as of the start
        binds_ro.append((str(hosts), str(CONTAINER_HOSTS)))
    binds = [(str(st.host_path(svc.name)), str(st.path)) for st in svc.state]
    state_dirs = sorted({b[0] for b in binds})
    for b in svc.binds:
        (binds_ro if b.read_only else binds).append((str(b.host), str(b.path)))
    binds += [(str(d), str(d)) for d in svc.devices]
    env: list[tuple[str, str]] = []
    params: list[str] = []
    if not svc.boot:
        binds_ro.insert(0, (str(layout.init.parent), str(INIT_CONTAINER_DIR)))
        binds_ro.insert(1, (str(hosts.parent), HOSTS_CONTAINER_DIR))
        if svc.config:
            binds_ro.insert(2, (str(config_dir), CONFIG_CONTAINER_PATH))
        params = ["/usr/bin/python3", "-I", "-S", "-c", INIT_BOOT, "--", *svc.exec]
        env += [("OSUNITS_READY", svc.readiness.spec()),
                ("OSUNITS_READY_TIMEOUT", str(svc.readiness.timeout))]
        if svc.user != "root":
            env.append(("OSUNITS_USER", svc.user))
        if svc.state:
            env.append(("OSUNITS_STATE", ":".join(str(st.path) for st in svc.state)))
        if svc.working_directory:
            env.append(("OSUNITS_WORKDIR", svc.working_directory))
        if svc.config:
            env.append(("OSUNITS_CONFIG", " ".join(f"{cf.path}:{cf.mode:04o}"
                                                   for cf in svc.config)))
    env += list(svc.environment)
    files.append(PlannedFile(layout.nspawn / f"{svc.name}.nspawn", render_unit(
        "service.nspawn.j2", svc=svc, host=host.name, source=source, params=params, env=env,
        binds_ro=binds_ro, binds=binds,
        # On the host's network a service is the host to its peers (nova-compute and the
        # agents register under their host name), on its own it is the service.
        hostname=host.name if svc.network is NetworkMode.HOST else svc.name,
    ).encode(), source=source, services=(svc.name,)))

    deps: dict[str, list[str]] = {str(k): [] for k in DependencyKind}
    for d in svc.dependencies:
        if host.service(d.name) is not None or is_unit(d.name):  # is_unit: the host's own
            deps[str(d.kind)].append(unit_of(d.name))
        elif d.name in gates and d.kind is not DependencyKind.AFTER:
            deps[str(d.kind)].append(gate_unit(d.name))
    binds_to: list[str] = []
    sockets: list[str] = []  # published ports: wanted by the container, closed with it
    netns_path = ""
    address = addresses.get(svc.name, "")
    if address:
        unit = netns_unit(svc.name)
        binds_to.append(unit)
        deps["after"].append(unit)
        netns_path = f"/run/netns/{netns_name(svc.name)}"
        files.append(PlannedFile(layout.units / unit, render_unit(
            "netns.service.j2", svc=svc.name, host=host.name, source=source, target=TARGET,
            cidr=f"{address}/{dep.network.subnet.prefixlen}", bridge=dep.network.bridge,
            mac=mac_of(address),
            bridge_unit=BRIDGE_UNIT, netns=netns_name(svc.name), veth=veth_name(svc.name),
            gateway=str(dep.network.gateway)).encode(), source=source, services=(svc.name,)))
        for p in svc.publish:
            listen = listen_address(p.address, p.host_port) if p.address else str(p.host_port)
            ctx = {"svc": svc.name, "host": host.name, "source": source, "target": TARGET,
                   "port": p.host_port}
            sockets.append(publish_unit(svc.name, p.host_port, "socket"))
            files.append(PlannedFile(layout.units / sockets[-1], render_unit(
                "publish.socket.j2", listen=listen, container=unit_of(svc.name), **ctx)
                .encode(), source=source))
            files.append(PlannedFile(
                layout.units / publish_unit(svc.name, p.host_port, "service"),
                render_unit("publish.service.j2", container=unit_of(svc.name),
                            dest=f"{address}:{p.container_port}", **ctx).encode(),
                source=source))
    after = sorted(deps["requires"] + deps["wants"] + deps["after"])
    files.append(PlannedFile(
        layout.units / f"{unit_of(svc.name)}.d/{DROPIN_NAME}",
        render_unit(
            "service.dropin.j2", svc=svc, host=host.name, source=source, target=TARGET,
            requires=sorted(deps["requires"]), wants=sorted(deps["wants"] + sockets),
            sockets=sorted(sockets),
            after=after,
            binds_to=binds_to, netns_path=netns_path,
            timeout_start=svc.readiness.timeout + START_MARGIN,
            # systemd's default limit (5 starts in 10 s) is out of reach once RestartSec
            # is 2 s or more: a crash loop would never end.
            start_limit=5 * (svc.restart_sec + 10),
            config_hash=digest.hexdigest()[:16] if svc.config else "",
            state_dirs=state_dirs,
        ).encode(), source=source, services=(svc.name,)))
    files.append(PlannedFile(layout.machines / svc.machine, link=str(ROOTFS_DIR / svc.rootfs),
                             source=source, services=(svc.name,)))
    return files


def _config_context(dep: Deployment, host: Host, svc: Service) -> dict[str, Any]:
    placement = dep.placement()  # computed once per deployment

    def address_of(name: str) -> str:
        """Where ``name`` is reached from this service: by name on this host, else its host."""
        if host.service(name) is not None:
            return name
        hosts = placement.get(name)
        if not hosts:
            raise ValueError(f"address_of({name!r}): no host runs {name}")
        remote = dep.host(hosts[0])
        assert remote is not None
        return remote.address

    return {"host": host, "service": svc, "deployment": dep, "address_of": address_of,
            "hosts": dep.host_index()}
