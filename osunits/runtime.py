"""Talking to systemd over D-Bus (pystemd): the only module that imports it.

``generate`` and ``check-deps`` never import this.  The client follows the
verified rules in docs/design.md: subscribe before the first job or watch (and
only then); signal callbacks are plain functions kept referenced for the
connection's lifetime; the connection is driven by ``wait`` then draining
``process``; JobRemoved is the authoritative end of a job, PropertiesChanged is
a snapshot to de-duplicate.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pystemd.dbusexc import DBusBaseError
from pystemd.dbuslib import DBus, DBusAddress, apply_signature

from osunits.errors import OsunitsError
from osunits.systemd.units import TARGET, UNIT_PREFIX, service_of

SYSTEMD = b"org.freedesktop.systemd1"
SYSTEMD_PATH = b"/org/freedesktop/systemd1"
MANAGER = b"org.freedesktop.systemd1.Manager"
UNIT = b"org.freedesktop.systemd1.Unit"
SERVICE = b"org.freedesktop.systemd1.Service"
PROPERTIES = b"org.freedesktop.DBus.Properties"
MACHINED = b"org.freedesktop.machine1"
MACHINED_PATH = b"/org/freedesktop/machine1"
MACHINED_MANAGER = b"org.freedesktop.machine1.Manager"

# Job results (systemd.unit(5), JobRemoved): only "done" is success.
JOB_OK = "done"
# A watch matches PropertiesChanged per unit path up to this many paths, then all paths
# at once: the system bus caps match rules per connection (dbus-daemon(1),
# max_match_rules_per_connection, 512 by default).
_MAX_PATH_MATCHES = 128


def _s(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    if isinstance(v, list):
        return [_s(x) for x in v]
    if isinstance(v, tuple):
        return tuple(_s(x) for x in v)
    if isinstance(v, dict):
        return {_s(k): _s(x) for k, x in v.items()}
    return v


class SystemdError(OsunitsError):
    """systemd refused a call (a D-Bus error reply): one line naming the unit."""


def describe_units(units: Iterable[str]) -> str:
    """Units for an operator: the services by name, the rest of the transaction (sockets,
    mounts, modprobe@) as a count."""
    units = sorted(set(units))
    services = [service_of(u) for u in units if u.startswith(UNIT_PREFIX)]
    others = [u for u in units if not u.startswith(UNIT_PREFIX)]
    if not services:
        return ", ".join(others)
    return ", ".join(services) + (f" (and {len(others)} unit(s) of systemd's and osunits' "
                                  "own: sockets, mounts, ...)" if others else "")


def _dbus_message(e: DBusBaseError) -> str:
    """systemd's own words of a D-Bus error ("Unit foo.service not found.")."""
    msg = _s(getattr(e, "err_message", b"")) or str(e)
    return str(msg).strip()


@dataclass(frozen=True, slots=True)
class JobEnd:
    job: str
    unit: str
    result: str
    at: float  # time.monotonic()


@dataclass(frozen=True, slots=True)
class StateChange:
    unit: str
    active: str
    sub: str
    at: float  # time.time()


@dataclass(slots=True)
class _Inbox:
    jobs: deque[JobEnd] = field(default_factory=deque)
    states: deque[tuple[str, dict[str, Any]]] = field(default_factory=deque)


class Systemd:
    """One connection to one systemd: the local system bus, or a given bus address."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address
        self.bus = DBusAddress(address.encode(), False) if address else DBus()
        self.bus.open()
        self._inbox = _Inbox()
        inbox = self._inbox

        # Plain functions, referenced from self for the connection's lifetime (pystemd
        # segfaults on a collected callback and refuses bound methods).
        def on_job_removed(msg: Any, error: Any = None, userdata: Any = None) -> None:
            msg.process_reply(True)
            _id, job, unit, result = msg.body
            inbox.jobs.append(JobEnd(_s(job), _s(unit), _s(result), time.monotonic()))

        def on_properties(msg: Any, error: Any = None, userdata: Any = None) -> None:
            msg.process_reply(True)
            iface, changed, _invalidated = msg.body
            if iface == UNIT:
                inbox.states.append((_s(msg.headers.get("Path", b"")), _s(changed)))

        self._on_job_removed, self._on_properties = on_job_removed, on_properties
        # Signals are asked for on first need (a one-shot call such as status or Reload
        # needs none), and matched only as far as used: JobRemoved once jobs are
        # followed, PropertiesChanged of the watched units' paths only.  pystemd cannot
        # remove a match, so each is added once per connection.
        self._subscribed = False
        self._jobs_matched = False
        self._state_paths: set[str] = set()  # unit paths whose PropertiesChanged match
        self._all_states_matched = False  # past _MAX_PATH_MATCHES: one match for all
        self._paths: dict[str, str] = {}

    def close(self) -> None:
        self.bus.close()

    def __enter__(self) -> Systemd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------------

    def call(self, method: bytes, signature: bytes = b"", *args: Any,
             path: bytes = SYSTEMD_PATH, interface: bytes = MANAGER,
             unit: str | None = None) -> Any:
        """Call systemd; an error reply is a SystemdError naming ``unit`` (or the method)."""
        try:
            msg = self.bus.call_method(SYSTEMD, path, interface, method,
                                       apply_signature(signature, list(args)) if signature else [])
        except DBusBaseError as e:
            raise SystemdError(f"{unit or 'systemd'}: {method.decode()}: {_dbus_message(e)}"
                               ) from None
        self.drain()  # signals that arrived during the call sit in sd-bus's queue
        return _s(msg.body)

    def drain(self) -> None:
        for _ in range(10000):
            if self.bus.process().is_empty():
                return

    def pump(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for bus traffic, then dispatch it."""
        self.bus.wait(max(1, int(timeout * 1_000_000)))
        self.drain()

    # --- manager ----------------------------------------------------------------------

    def _subscribe(self) -> None:
        # org.freedesktop.systemd1(5): systemd sends most unit and job signals only while
        # at least one client has called Subscribe(); a client's subscription ends with
        # its connection.
        if not self._subscribed:
            self.call(b"Subscribe")
            self._subscribed = True

    def _follow_jobs(self) -> None:
        """Receive JobRemoved from now on: call before queueing a job, so its end is seen."""
        if not self._jobs_matched:
            self.bus.match_signal(SYSTEMD, SYSTEMD_PATH, MANAGER, b"JobRemoved",
                                  self._on_job_removed)
            self._jobs_matched = True
        self._subscribe()

    def _follow_states(self, paths: Iterable[str]) -> None:
        """Receive PropertiesChanged of these unit object paths from now on."""
        new = set(paths) - self._state_paths
        if not self._all_states_matched and new:
            if len(self._state_paths) + len(new) > _MAX_PATH_MATCHES:
                self.bus.match_signal(SYSTEMD, None, PROPERTIES, b"PropertiesChanged",
                                      self._on_properties)
                self._all_states_matched = True
            else:
                for path in sorted(new):
                    self.bus.match_signal(SYSTEMD, path.encode(), PROPERTIES,
                                          b"PropertiesChanged", self._on_properties)
                self._state_paths |= new
        self._subscribe()

    def reload(self) -> None:
        self.call(b"Reload")

    def unit_path(self, unit: str) -> str:
        path = self._paths.get(unit)
        if path is None:
            path = self.call(b"LoadUnit", b"s", unit.encode(), unit=unit)
            self._paths[unit] = path
        return path

    def properties(self, unit: str, *interfaces: bytes) -> dict[str, Any]:
        path = self.unit_path(unit).encode()
        out: dict[str, Any] = {}
        for iface in interfaces or (UNIT,):
            out.update(self.call(b"GetAll", b"s", iface, path=path, interface=PROPERTIES,
                                 unit=unit))
        return out

    def reset_failed(self, unit: str) -> None:
        """`systemctl reset-failed UNIT`: its failed state and its start rate limit counter
        (systemd.unit(5), StartLimitIntervalSec=; verified on systemd 252 by
        tests/systemd/test_runtime.py: six restarts in a row with StartLimitBurst=5)."""
        # On the unit's object (which loads it), not the manager's ResetFailedUnit: that
        # one fails for a unit not in memory ("not loaded"), e.g. an inactive target.
        self.call(b"ResetFailed", path=self.unit_path(unit).encode(), interface=UNIT,
                  unit=unit)

    def enqueue(self, unit: str, verb: str, mode: str = "replace") -> dict[str, str]:
        """Queue a job; return job path → unit for every job of the transaction."""
        self._follow_jobs()
        (_id, job, unit_id, _path, _type, affected) = self.call(
            b"EnqueueUnitJob", b"sss", unit.encode(), verb.encode(), mode.encode(), unit=unit)
        jobs = {job: unit_id}
        for (_aid, ajob, aunit, _apath, _atype) in affected:
            jobs[ajob] = aunit
        return jobs

    def wait_jobs(self, jobs: dict[str, str], timeout: float,
                  progress: Callable[[JobEnd], None] | None = None) -> dict[str, JobEnd]:
        """Follow JobRemoved until every job in ``jobs`` ended; unit → its JobEnd."""
        self._follow_jobs()  # jobs queued elsewhere: their ends from now on
        pending = dict(jobs)
        ended: dict[str, JobEnd] = {}
        deadline = time.monotonic() + timeout
        while pending:
            while self._inbox.jobs:
                end = self._inbox.jobs.popleft()
                if end.job in pending:
                    del pending[end.job]
                    ended[end.unit] = end
                    if progress:
                        progress(end)
            if not pending:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"jobs still running after {timeout:.0f}s: "
                                   + describe_units(pending.values()))
            self.pump(min(left, 1.0))
        return ended

    def run_jobs(self, units: Iterable[str], verb: str, timeout: float,
                 progress: Callable[[JobEnd], None] | None = None) -> dict[str, JobEnd]:
        jobs: dict[str, str] = {}
        for u in units:
            jobs.update(self.enqueue(u, verb))
        return self.wait_jobs(jobs, timeout, progress)

    def machine_addresses(self, machine: str) -> list[str]:
        """The machine's addresses, from machined (as `machinectl status` shows them)."""
        try:
            msg = self.bus.call_method(
                MACHINED, MACHINED_PATH, MACHINED_MANAGER, b"GetMachineAddresses",
                apply_signature(b"s", [machine.encode()]))
        except Exception:  # noqa: BLE001 - not registered (yet), or machined absent
            return []
        self.drain()
        out = []
        for family, raw in msg.body:
            packed = bytes(raw)
            if family == socket.AF_INET and len(packed) == 4:
                out.append(str(ipaddress.IPv4Address(packed)))
            elif family == socket.AF_INET6 and len(packed) == 16:
                addr = ipaddress.IPv6Address(packed)
                if not addr.is_link_local:
                    out.append(str(addr))
        return out

    def target_members(self, target: str = TARGET,
                       props: dict[str, Any] | None = None) -> list[str]:
        """The services a generated target pulls in (its Wants=), from the live manager
        (or from ``props``, the target's properties when the caller has them)."""
        props = props if props is not None else self.properties(target)
        if props.get("LoadState") != "loaded":
            raise LookupError(f"{target} is not loaded ({props.get('LoadState')}): "
                              "run `osunits generate` first")
        return sorted(u for u in props.get("Wants", []) if u.startswith(UNIT_PREFIX))

    def watch(self, units: Iterable[str], until: float | None = None) -> Iterator[StateChange]:
        """State changes of ``units`` from this call on (PropertiesChanged), de-duplicated.

        The signals are matched and the current states read here, not at the first
        ``next()``: a change made after ``watch`` returns is one the iterator yields.
        """
        by_path = {self.unit_path(u): u for u in units}
        self._follow_states(by_path)
        self.drain()
        self._inbox.states.clear()  # signals from before the watch began are history
        last: dict[str, tuple[str, str]] = {}
        for path, unit in by_path.items():
            p = self.call(b"GetAll", b"s", UNIT, path=path.encode(), interface=PROPERTIES)
            last[unit] = (p["ActiveState"], p["SubState"])
        return self._changes(by_path, last, until)

    def _changes(self, by_path: dict[str, str], last: dict[str, tuple[str, str]],
                 until: float | None) -> Iterator[StateChange]:
        while until is None or time.time() < until:
            while self._inbox.states:
                path, changed = self._inbox.states.popleft()
                name = by_path.get(path)
                if name is None or "ActiveState" not in changed:
                    continue
                state = (changed["ActiveState"], changed.get("SubState", last[name][1]))
                if state != last[name]:
                    last[name] = state
                    yield StateChange(name, state[0], state[1], time.time())
            self.pump(0.5 if until is None else max(0.001, min(0.5, until - time.time())))


def daemon_reload(address: str | None = None) -> None:
    with Systemd(address) as sd:
        sd.reload()
