"""Hand-written units in the osunits contract format (to be replaced by the compiler).

Per service NAME, the tree holds:

    etc/systemd/nspawn/NAME.nspawn
    etc/systemd/system/systemd-nspawn@NAME.service.d/50-osunits.conf
    var/lib/machines/NAME -> /var/lib/osunits/rootfs/host   (the shared image)
    var/lib/osunits/lib/init.py                               (osunits/container/init.py)
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from osunits.testbed import HOST_IMAGE

INIT_SRC = Path(__file__).resolve().parents[2] / "osunits" / "container" / "init.py"
INIT_HOST = "/var/lib/osunits/lib/init.py"
INIT_IN_CONTAINER = "/run/osunits/init"
PROGS_HOST = "/var/lib/osunits-test/progs"
PROGS = "/opt/osunits-test"  # test programs, bound read-only into every test container


def prog(name: str, *args: str) -> list[str]:
    """argv running test program NAME (see write_tree(programs=...))."""
    return ["/usr/bin/python3", f"{PROGS}/{name}.py", *args]


def nspawn_word(word: str) -> str:
    """One word of a .nspawn Parameters=/Environment= value (UNQUOTE|RETAIN_ESCAPE):
    quotes group and are removed, backslashes are literal, nothing else is special.
    A word holding both quote kinds is written as adjacent quoted pieces."""
    if word and not any(c in word for c in " \t\n'\""):
        return word
    if "\n" in word:
        raise ValueError("newline in a .nspawn value")
    out, piece = [], ""
    for c in word:
        if c == '"':
            out.append(f'"{piece}"' if piece else "")
            piece = ""
            out.append("'\"'")
        else:
            piece += c
    out.append(f'"{piece}"' if piece or not out else "")
    return "".join(out)


def nspawn_words(words: list[str]) -> str:
    return " ".join(nspawn_word(w) for w in words)


@dataclass
class Service:
    name: str
    argv: list[str]
    ready: str = "none"
    ready_timeout: float = 30
    user: str | None = None
    state: list[str] = field(default_factory=list)
    workdir: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    private_network: bool = True
    requires: list[str] = field(default_factory=list)
    wants: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    part_of: str | None = None
    timeout_start: str = "60s"
    restart: str = "no"
    watchdog: str | None = "2s"  # proves nspawn pings the watchdog itself

    def nspawn(self) -> str:
        env = {"OSUNITS_READY": self.ready, "OSUNITS_READY_TIMEOUT": f"{self.ready_timeout:g}"}
        if self.user:
            env["OSUNITS_USER"] = self.user
        if self.state:
            env["OSUNITS_STATE"] = ":".join(self.state)
        if self.workdir:
            env["OSUNITS_WORKDIR"] = self.workdir
        env.update(self.env)
        params = ["/usr/bin/python3", "-I", "-S", INIT_IN_CONTAINER, "--", *self.argv]
        lines = ["[Exec]", "Boot=no", f"Parameters={nspawn_words(params)}"]
        lines += [f"Environment={nspawn_word(f'{k}={v}')}" for k, v in env.items()]
        lines += ["NotifyReady=yes", "PrivateUsers=no", "KillSignal=SIGTERM", "LinkJournal=no",
                  "", "[Files]", "Volatile=overlay",
                  f"BindReadOnly={INIT_HOST}:{INIT_IN_CONTAINER}",
                  f"BindReadOnly={PROGS_HOST}:{PROGS}",
                  "", "[Network]", f"Private={'yes' if self.private_network else 'no'}", ""]
        return "\n".join(lines)

    def dropin(self) -> str:
        unit = lambda n: f"systemd-nspawn@{n}.service"  # noqa: E731
        lines = ["[Unit]"]
        lines += [f"Requires={unit(n)}" for n in self.requires]
        lines += [f"Wants={unit(n)}" for n in self.wants]
        lines += [f"After={unit(n)}" for n in self.after]
        if self.part_of:
            lines.append(f"PartOf={self.part_of}")
        lines += ["", "[Service]", f"TimeoutStartSec={self.timeout_start}",
                  f"Restart={self.restart}"]
        if self.watchdog:
            lines.append(f"WatchdogSec={self.watchdog}")
        return "\n".join(lines) + "\n"


def unit_name(service: str) -> str:
    return f"systemd-nspawn@{service}.service"


def target(name: str, members: list[str]) -> str:
    wants = " ".join(unit_name(m) for m in members)
    return f"[Unit]\nDescription=osunits test target\nWants={wants}\n"


def write_tree(root: Path, services: list[Service], targets: dict[str, list[str]] | None = None,
               programs: dict[str, str] | None = None, image: str = HOST_IMAGE) -> Path:
    """Write the generated tree for services (and targets, test programs) under root."""
    progs = root / PROGS_HOST.lstrip("/")
    progs.mkdir(parents=True, exist_ok=True)
    for name, code in (programs or {}).items():
        (progs / f"{name}.py").write_text(code)
    lib = root / INIT_HOST.lstrip("/")
    lib.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(INIT_SRC, lib)
    for s in services:
        f = root / "etc/systemd/nspawn" / f"{s.name}.nspawn"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(s.nspawn())
        d = root / "etc/systemd/system" / f"{unit_name(s.name)}.d" / "50-osunits.conf"
        d.parent.mkdir(parents=True, exist_ok=True)
        d.write_text(s.dropin())
        link = root / "var/lib/machines" / s.name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink():
            link.unlink()
        link.symlink_to(image)
    for name, members in (targets or {}).items():
        t = root / "etc/systemd/system" / name
        t.parent.mkdir(parents=True, exist_ok=True)
        t.write_text(target(name, members))
    return root


def wait_for(predicate: Callable[[], object], timeout: float = 15, what: str = "condition") -> object:
    """Bounded polling with backoff (for states that have no job to wait on)."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)
