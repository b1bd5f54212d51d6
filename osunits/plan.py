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

import hashlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from osunits.errors import DeploymentError, Problem
from osunits.graph import HostGraph, check_deployment
from osunits.model import DependencyKind, Deployment, Host, NetworkMode, Service
from osunits.render import ConfigRenderer, render_unit
from osunits.systemd.escape import EscapeError
from osunits.validate import TEMPLATES_DIR

OSUNITS_LIB = PurePosixPath("/var/lib/osunits")
ROOTFS_DIR = OSUNITS_LIB / "rootfs"  # images persist in /var whatever the layout
INIT_CONTAINER_PATH = PurePosixPath("/run/osunits/init")
INIT_SOURCE = Path(__file__).parent / "container" / "init.py"
TARGET = "openstack.target"
DROPIN_NAME = "50-osunits.conf"
START_MARGIN = 30  # seconds on top of the readiness timeout for the container itself


@dataclass(frozen=True, slots=True)
class Layout:
    """Where generated files go.  ``generate`` writes persistent files under /etc and
    /var/lib; generator mode (at boot, before /var may be mounted) writes to the
    generator's unit directory and /run, which systemd searches too."""

    units: PurePosixPath = PurePosixPath("/etc/systemd/system")
    nspawn: PurePosixPath = PurePosixPath("/etc/systemd/nspawn")
    machines: PurePosixPath = PurePosixPath("/var/lib/machines")
    own: PurePosixPath = OSUNITS_LIB  # rendered config, the init, the manifest

    @classmethod
    def generator(cls, unit_dir: str) -> Layout:
        return cls(PurePosixPath(unit_dir), PurePosixPath("/run/systemd/nspawn"),
                   PurePosixPath("/run/machines"), PurePosixPath("/run/osunits"))

    @property
    def config(self) -> PurePosixPath:
        return self.own / "config"

    @property
    def init(self) -> PurePosixPath:
        return self.own / "lib" / "init.py"

    @property
    def manifest(self) -> PurePosixPath:
        return self.own / "manifest.json"


INSTALLED = Layout()
INIT_HOST_PATH = INSTALLED.init


def unit_name(service: str) -> str:
    return f"systemd-nspawn@{service}.service"


@dataclass(frozen=True, slots=True)
class PlannedFile:
    path: PurePosixPath  # absolute, as on the host
    content: bytes = b""
    mode: int = 0o644
    link: str = ""  # a symlink to this target instead of content
    source: str = ""  # the definition that produced it

    @property
    def digest(self) -> str:
        data = b"->" + self.link.encode() if self.link else self.content
        return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class HostPlan:
    host: str
    files: tuple[PlannedFile, ...]  # sorted by path
    graph: HostGraph
    warnings: tuple[Problem, ...] = ()


def plan_host(dep: Deployment, host_name: str, layout: Layout = INSTALLED) -> HostPlan:
    host = dep.host(host_name)
    if host is None:
        from osunits.validate import unknown_name
        raise DeploymentError([unknown_name("host", host_name, [h.name for h in dep.hosts],
                                             None, "--host")])
    report = check_deployment(dep, [host_name])
    errors = [p for p in report.problems if p.severity == "error"]
    if errors:
        raise DeploymentError(errors)
    warnings = tuple(p for p in report.problems if p.severity != "error")
    graph = report.hosts[0]
    renderer = ConfigRenderer(dep.root / TEMPLATES_DIR)
    files: list[PlannedFile] = []
    problems: list[Problem] = []
    for svc in host.services:
        try:
            files += _plan_service(dep, host, svc, renderer, layout)
        except DeploymentError as e:
            problems += e.problems
        except EscapeError as e:  # validation should have caught it: still no traceback
            problems.append(Problem("P001", f"cannot write {svc.name}'s units: {e}", svc.loc))
    if problems:
        raise DeploymentError(problems)
    files.append(PlannedFile(layout.units / TARGET, render_unit(
        "openstack.target.j2", host=host.name,
        units=[unit_name(s.name) for s in host.services]).encode(), source="deployment.yaml"))
    files.append(PlannedFile(layout.init, INIT_SOURCE.read_bytes(), 0o755, source="osunits"))
    return HostPlan(host.name, tuple(sorted(files, key=lambda f: f.path)), graph, warnings)


def _rel(dep: Deployment, path: Path) -> str:
    try:
        return str(path.relative_to(dep.root))
    except ValueError:
        return str(path)


def _plan_service(dep: Deployment, host: Host, svc: Service, renderer: ConfigRenderer,
                  layout: Layout) -> list[PlannedFile]:
    source = _rel(dep, svc.source)
    files: list[PlannedFile] = []
    binds_ro: list[tuple[str, str]] = []
    digest = hashlib.sha256()
    context = _config_context(dep, host, svc)
    for cf in svc.config:
        text = renderer.render(cf.template, context, cf.loc)
        host_path = layout.config / svc.name / cf.path.relative_to("/")
        files.append(PlannedFile(host_path, text.encode(), cf.mode, source=source))
        binds_ro.append((str(host_path), str(cf.path)))
        digest.update(f"{cf.path}\0{cf.mode:o}\0".encode() + text.encode() + b"\0")
    binds = [(str(st.host_path(svc.name)), str(st.path)) for st in svc.state]
    env: list[tuple[str, str]] = []
    params: list[str] = []
    if not svc.boot:
        binds_ro.insert(0, (str(layout.init), str(INIT_CONTAINER_PATH)))
        params = ["/usr/bin/python3", "-I", "-S", str(INIT_CONTAINER_PATH), "--", *svc.exec]
        env += [("OSUNITS_READY", svc.readiness.spec()),
                ("OSUNITS_READY_TIMEOUT", str(svc.readiness.timeout))]
        if svc.user != "root":
            env.append(("OSUNITS_USER", svc.user))
        if svc.state:
            env.append(("OSUNITS_STATE", ":".join(str(st.path) for st in svc.state)))
        if svc.working_directory:
            env.append(("OSUNITS_WORKDIR", svc.working_directory))
    env += list(svc.environment)
    files.append(PlannedFile(layout.nspawn / f"{svc.name}.nspawn", render_unit(
        "service.nspawn.j2", svc=svc, host=host.name, source=source, params=params, env=env,
        binds_ro=binds_ro, binds=binds, private=svc.network is NetworkMode.PRIVATE,
    ).encode(), source=source))

    deps: dict[str, list[str]] = {str(k): [] for k in DependencyKind}
    local = {s.name for s in host.services}
    for d in svc.dependencies:
        if d.name in local:
            deps[str(d.kind)].append(unit_name(d.name))
    after = sorted(deps["requires"] + deps["wants"] + deps["after"])
    files.append(PlannedFile(
        layout.units / f"{unit_name(svc.name)}.d" / DROPIN_NAME,
        render_unit(
            "service.dropin.j2", svc=svc, host=host.name, source=source, target=TARGET,
            requires=sorted(deps["requires"]), wants=sorted(deps["wants"]), after=after,
            timeout_start=svc.readiness.timeout + START_MARGIN,
            config_hash=digest.hexdigest()[:16] if svc.config else "",
            state_dirs=sorted({b[0] for b in binds}),
        ).encode(), source=source))
    files.append(PlannedFile(layout.machines / svc.machine, link=str(ROOTFS_DIR / svc.rootfs),
                             source=source))
    return files


def _config_context(dep: Deployment, host: Host, svc: Service) -> dict[str, Any]:
    placement = dep.placement()

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
            "hosts": {h.name: h for h in dep.hosts}}
