"""Start/stop units in a test host over D-Bus and wait for every job (pystemd); and a
record of what osunits' own client asks systemd (``log_calls``).

Follows docs in shared notes (dbus.md): Subscribe first, a plain-function callback kept
referenced for the connection's lifetime, pump with wait() + drain process(), and wait
for JobRemoved of every job of the transaction (EnqueueUnitJob returns them all).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from pystemd.dbuslib import DBusAddress, apply_signature

SYSTEMD = b"org.freedesktop.systemd1"
PATH = b"/org/freedesktop/systemd1"
MANAGER = b"org.freedesktop.systemd1.Manager"


def _on_job_removed(msg: Any, error: Any = None, userdata: Any = None) -> None:
    msg.process_reply(True)
    _id, path, unit, result = msg.body
    userdata[bytes(path)] = (unit.decode(), result.decode())


class Jobs:
    def __init__(self, address: bytes) -> None:
        self.bus = DBusAddress(address, False)
        self.bus.open()
        self.removed: dict[bytes, tuple[str, str]] = {}
        self._callback = _on_job_removed  # must outlive the connection
        self.bus.match_signal(SYSTEMD, PATH, MANAGER, b"JobRemoved", self._callback,
                              self.removed)
        self.call(b"Subscribe", b"", [])

    def call(self, method: bytes, signature: bytes, args: list[Any]) -> Any:
        body = self.bus.call_method(SYSTEMD, PATH, MANAGER, method,
                                    apply_signature(signature, args) if signature else []).body
        self.drain()
        return body

    def drain(self) -> None:
        while not self.bus.process().is_empty():
            pass

    def run_job(self, unit: str, job: str = "start", mode: str = "replace",
                timeout: float = 60) -> dict[str, str]:
        """Enqueue a job; return {unit: result} for every job of the transaction."""
        body = self.call(b"EnqueueUnitJob", b"sss", [unit.encode(), job.encode(), mode.encode()])
        _jid, path, unit_id, _upath, _type, affected = body
        wanted = {bytes(path): unit_id.decode()}
        for _aid, apath, aunit, _aupath, _atype in affected:
            wanted[bytes(apath)] = aunit.decode()
        deadline = time.monotonic() + timeout
        while not all(p in self.removed for p in wanted):
            left = deadline - time.monotonic()
            if left <= 0:
                missing = [u for p, u in wanted.items() if p not in self.removed]
                raise TimeoutError(f"jobs still running after {timeout} s: {missing}")
            self.bus.wait(int(min(left, 0.5) * 1_000_000))
            self.drain()
        return {self.removed[p][0]: self.removed.pop(p)[1] for p in wanted}

    def start(self, unit: str, timeout: float = 60) -> dict[str, str]:
        return self.run_job(unit, "start", timeout=timeout)

    def stop(self, unit: str, timeout: float = 60) -> dict[str, str]:
        return self.run_job(unit, "stop", timeout=timeout)

    def close(self) -> None:
        self.bus.close()


@dataclass
class CallLog:
    """What osunits' own client (osunits.runtime.Systemd) asked systemd, per connection."""

    connections: list[Any] = field(default_factory=list)  # every Systemd opened, in order
    calls: list[tuple[Any, bytes, bytes, tuple[Any, ...]]] = field(default_factory=list)

    def of(self, conn: Any, method: bytes | None = None) -> list[tuple[bytes, tuple[Any, ...]]]:
        """(object path, arguments) of each call ``conn`` made (of ``method`` only)."""
        return [(path, args) for c, m, path, args in self.calls
                if c is conn and (method is None or m == method)]

    def methods(self, conn: Any) -> list[bytes]:
        return [m for c, m, _path, _args in self.calls if c is conn]


def log_calls(monkeypatch: pytest.MonkeyPatch) -> CallLog:
    """Record every connection and method call of osunits.runtime.Systemd (all instances,
    also those a command opens itself), while the test runs."""
    from osunits.runtime import SYSTEMD_PATH, Systemd

    log = CallLog()
    init, call = Systemd.__init__, Systemd.call

    def logged_init(self: Systemd, *args: Any, **kw: Any) -> None:
        log.connections.append(self)
        init(self, *args, **kw)

    def logged_call(self: Systemd, method: bytes, signature: bytes = b"", *args: Any,
                    **kw: Any) -> Any:
        log.calls.append((self, method, kw.get("path", SYSTEMD_PATH), args))
        return call(self, method, signature, *args, **kw)

    monkeypatch.setattr(Systemd, "__init__", logged_init)
    monkeypatch.setattr(Systemd, "call", logged_call)
    return log
