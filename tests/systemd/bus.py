"""Start/stop units in a test host over D-Bus and wait for every job (pystemd).

Follows docs in shared notes (dbus.md): Subscribe first, a plain-function callback kept
referenced for the connection's lifetime, pump with wait() + drain process(), and wait
for JobRemoved of every job of the transaction (EnqueueUnitJob returns them all).
"""

from __future__ import annotations

import time
from typing import Any

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
