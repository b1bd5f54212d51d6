"""The typed model of a deployment: frozen values, validated once at the edge.

Everything downstream (graph, plan, render) reads only these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network
from operator import attrgetter
from pathlib import Path, PurePosixPath
from typing import TypeVar

from osunits.errors import Location

_T = TypeVar("_T")


def _pickled_as_arguments(cls: type[_T]) -> type[_T]:
    """Pickle as the constructor's arguments (``__post_init__`` rebuilds the indexes): a
    third cheaper both ways than the dataclass' own state methods, for the model cache."""
    names = [f.name for f in fields(cls) if f.init]  # type: ignore[arg-type]
    get = attrgetter(*names) if len(names) > 1 else lambda o: (getattr(o, names[0]),)

    def __reduce__(self: _T) -> tuple[type[_T], tuple[object, ...]]:
        return cls, get(self)

    cls.__reduce__ = __reduce__  # type: ignore[assignment,method-assign]
    return cls


class NetworkMode(StrEnum):
    PRIVATE = "private"  # own network namespace on the host's osunits bridge
    HOST = "host"  # the host's network namespace


class Protocol(StrEnum):
    TCP = "tcp"
    UDP = "udp"


class ReadinessKind(StrEnum):
    NOTIFY = "notify"  # the service sends READY=1 itself (sd_notify)
    TCP = "tcp"  # a TCP port accepts connections
    HTTP = "http"  # an HTTP URL answers with a status below 400
    COMMAND = "command"  # a command exits 0
    NONE = "none"  # started is all we know: dependents cannot be ordered on it

    @property
    def gives_ready(self) -> bool:
        return self is not ReadinessKind.NONE


class RestartPolicy(StrEnum):
    NO = "no"
    ON_FAILURE = "on-failure"
    ON_ABNORMAL = "on-abnormal"
    ALWAYS = "always"

    def to_systemd(self) -> str:
        return str(self)


class DependencyKind(StrEnum):
    REQUIRES = "requires"  # Requires= + After=: fails and stops with the dependency
    WANTS = "wants"  # Wants= + After=: started first, failure tolerated
    AFTER = "after"  # After= only: ordering when both are started


@_pickled_as_arguments
@dataclass(frozen=True, slots=True)
class Port:
    port: int
    protocol: Protocol = Protocol.TCP

    def __str__(self) -> str:
        return f"{self.port}/{self.protocol}"


@_pickled_as_arguments
@dataclass(frozen=True, slots=True)
class Publish:
    host_port: int
    container_port: int
    protocol: Protocol = Protocol.TCP
    address: str = ""  # host address to listen on; "" = all

    def __str__(self) -> str:
        addr = f"{self.address}:" if self.address else ""
        return f"{addr}{self.host_port}->{self.container_port}/{self.protocol}"


@_pickled_as_arguments
@dataclass(frozen=True, slots=True)
class ConfigFile:
    template: str  # relative to the deployment's templates/ directory
    path: PurePosixPath  # where the rendered file appears in the container
    mode: int = 0o640
    loc: Location | None = field(default=None, compare=False)


OSUNITS_LIB = PurePosixPath("/var/lib/osunits")  # the manifest, rendered config, images
STATE_ROOT = OSUNITS_LIB / "state"
OSUNITS_RUN = PurePosixPath("/run/osunits")  # the generator's (plan.Layout.generator)
# Host directories of osunits' own, never a service's to write or read: in them rendered
# config (secrets too), hosts files, the init, every service's state, the manifest and
# journal, the images; only their shared/ is for services. And the images' links.
OWN_ROOTS = (OSUNITS_LIB, OSUNITS_RUN)
MACHINES = PurePosixPath("/var/lib/machines")  # machined's images: ours are links
RUN_MACHINES = PurePosixPath("/run/machines")  # the same, for the generator
MACHINE_DIRS = (MACHINES, RUN_MACHINES)


@_pickled_as_arguments
@dataclass(frozen=True, slots=True)
class StateDir:
    path: PurePosixPath  # in the container
    host: PurePosixPath | None = None  # on the host; default STATE_ROOT/SERVICE/PATH
    shared: bool = False  # other services may bind the same host directory

    def host_path(self, service: str) -> PurePosixPath:
        return self.host or STATE_ROOT / service / self.path.relative_to("/")


# Inside every container: osunits' own files (the init, config to install, the notify
# socket) and the hosts file; nothing of a service's may be bound over them.
CONTAINER_OWN = PurePosixPath("/run/osunits")
CONTAINER_HOSTS = PurePosixPath("/etc/hosts")


@_pickled_as_arguments
@dataclass(frozen=True, slots=True)
class Bind:
    """A host path the container sees (a libvirt or Open vSwitch socket directory...)."""

    host: PurePosixPath
    path: PurePosixPath  # in the container
    read_only: bool = False

    def __str__(self) -> str:
        path = "" if self.path == self.host else f":{self.path}"
        return f"{self.host}{path}{':ro' if self.read_only else ''}"


@_pickled_as_arguments
@dataclass(frozen=True, slots=True)
class Readiness:
    kind: ReadinessKind
    target: str = ""  # port, URL or shell-free command line, by kind
    timeout: int = 90  # seconds until the start fails

    def spec(self) -> str:
        """The compact form the container init understands: ``kind:target``."""
        return f"{self.kind}:{self.target}" if self.target else str(self.kind)


@_pickled_as_arguments
@dataclass(frozen=True, slots=True)
class Limits:
    memory_max: int | None = None  # bytes
    cpu_quota: int | None = None  # percent of one CPU
    tasks_max: int | None = None


@_pickled_as_arguments
@dataclass(frozen=True, slots=True)
class Dependency:
    name: str
    kind: DependencyKind
    loc: Location | None = field(default=None, compare=False)


LOCATED_KEYS = ("rootfs", "ports", "publish", "network", "address", "state")


@_pickled_as_arguments
@dataclass(frozen=True, slots=True)
class Service:
    name: str
    description: str
    rootfs: str
    exec: tuple[str, ...]  # empty when boot is true
    boot: bool
    user: str
    working_directory: str
    environment: tuple[tuple[str, str], ...]
    dependencies: tuple[Dependency, ...]
    ports: tuple[Port, ...]
    publish: tuple[Publish, ...]
    network: NetworkMode
    address: str  # fixed address on the host bridge; "" = allocated
    config: tuple[ConfigFile, ...]
    state: tuple[StateDir, ...]
    binds: tuple[Bind, ...]
    devices: tuple[PurePosixPath, ...]  # device nodes under /dev, bound and allowed
    capabilities: tuple[str, ...]  # CAP_* on top of systemd-nspawn's default set
    readiness: Readiness
    restart: RestartPolicy
    restart_sec: int
    stop_timeout: int
    limits: Limits
    source: Path  # the definition file
    loc: Location = field(compare=False, default=Location(""))
    # Where the keys that checks after validation point at were written (LOCATED_KEYS):
    # in the service's file, or in the override or default that set them.  Flat, as
    # KEY, PATH, LINE, COLUMN, ...: one object per service, where pairs of tuples made
    # loading and storing a cached 10 000-service model 0.15 s slower.
    key_locs: tuple[str | int, ...] = field(compare=False, default=())

    def loc_of(self, key: str) -> Location:
        kl = self.key_locs
        for i in range(0, len(kl), 4):
            if kl[i] == key:
                return Location(*kl[i + 1:i + 4])  # type: ignore[arg-type]
        return self.loc

    def deps(self, *kinds: DependencyKind) -> tuple[str, ...]:
        return tuple(d.name for d in self.dependencies if not kinds or d.kind in kinds)

    @property
    def machine(self) -> str:
        """The nspawn machine (and image) name."""
        return self.name


@_pickled_as_arguments
@dataclass(frozen=True, slots=True)
class Host:
    name: str
    address: str
    roles: tuple[str, ...]
    services: tuple[Service, ...]  # overrides applied, sorted by name
    loc: Location = field(compare=False, default=Location(""))
    _by_name: dict[str, Service] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {s.name: s for s in self.services})

    def service(self, name: str) -> Service | None:
        return self._by_name.get(name)


@_pickled_as_arguments
@dataclass(frozen=True, slots=True)
class Network:
    """The per-host service network (docs/networks.md)."""

    subnet: IPv4Network = IPv4Network("10.213.0.0/16")
    bridge: str = "osunits0"
    gate_timeout: int = 600  # seconds a cross-host gate waits for its remote service
    masquerade: bool = True  # containers reach other hosts through the host's address
    existing_bridge: bool = False  # join a bridge the host already has (a provider bridge)
    gateway_address: IPv4Address | None = None  # default: the subnet's first address
    loc: Location | None = field(default=None, compare=False)

    @property
    def gateway(self) -> IPv4Address:
        return self.gateway_address or self.subnet.network_address + 1


@_pickled_as_arguments
@dataclass(frozen=True, slots=True)
class Deployment:
    root: Path
    hosts: tuple[Host, ...]  # sorted by name
    roles: tuple[tuple[str, tuple[str, ...]], ...]
    services: tuple[Service, ...]  # base definitions, before overrides
    network: Network = Network()
    # What the services took from deployment.yaml: its `defaults`, as written and where
    # (a repr).  While that stays the same, a later build may reuse them (osunits.cache).
    defaults_key: str = ""
    _hosts: dict[str, Host] = field(init=False, compare=False, repr=False)
    _placement: dict[str, tuple[str, ...]] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        out: dict[str, list[str]] = {}
        for h in self.hosts:
            for s in h.services:
                out.setdefault(s.name, []).append(h.name)
        object.__setattr__(self, "_hosts", {h.name: h for h in self.hosts})
        object.__setattr__(self, "_placement",
                           {k: tuple(v) for k, v in sorted(out.items())})

    def host(self, name: str) -> Host | None:
        return self._hosts.get(name)

    def host_index(self) -> dict[str, Host]:
        """Host name → Host (computed once; do not modify)."""
        return self._hosts

    def placement(self) -> dict[str, tuple[str, ...]]:
        """Service name → hosts that run it (computed once; do not modify)."""
        return self._placement
