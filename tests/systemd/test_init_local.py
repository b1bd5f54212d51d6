"""The container init run directly (not as PID 1): fast checks of its own logic.

It talks to a $NOTIFY_SOCKET of ours, the way it talks to nspawn in a container.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .units import INIT_SRC

pytestmark = pytest.mark.systemd
PY = "/usr/bin/python3"

_spec = importlib.util.spec_from_file_location("osunits_container_init", INIT_SRC)
assert _spec and _spec.loader
init = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(init)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(list("ab '\"\\$`\t%#;é")), max_size=8),
                min_size=1, max_size=5))
def test_split_command_reads_shlex_join(words: list[str]) -> None:
    assert init.split_command(shlex.join(words)) == words


def run_init(tmp_path: Path, argv: list[str], **env: str) -> tuple[int, list[str], str, float]:
    sock_path = str(tmp_path / f"notify-{uuid.uuid4().hex[:8]}")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(sock_path)
    rx.settimeout(0.05)
    e = {k: v for k, v in os.environ.items() if not k.startswith("OSUNITS_")}
    e.update(env, NOTIFY_SOCKET=sock_path)
    t = time.monotonic()
    p = subprocess.run([PY, "-I", "-S", str(INIT_SRC), "--", *argv], env=e,
                       capture_output=True, text=True, timeout=30)
    took = time.monotonic() - t
    msgs = []
    try:
        while True:
            msgs.append(rx.recv(4096).decode())
    except TimeoutError:
        pass
    rx.close()
    return p.returncode, msgs, p.stderr, took


def test_tcp_ready_then_exit_status(tmp_path: Path) -> None:
    port_file = str(tmp_path / "port")
    prog = ("import socket, time; time.sleep(0.3); s = socket.socket(); "
            f"s.bind(('127.0.0.1', 0)); open({port_file!r}, 'w').write(str(s.getsockname()[1])); "
            "s.listen(); time.sleep(0.3); raise SystemExit(5)")
    # the port is only known once bound: use the command check to read it
    check = f"command:sh -c 'test -s {tmp_path}/port'"
    code, msgs, err, _ = run_init(tmp_path, [PY, "-c", prog], OSUNITS_READY=check)
    assert code == 5, err
    assert msgs[0].startswith("STATUS=starting; waiting for command exits 0")
    assert any(m.startswith("READY=1\n") for m in msgs), msgs
    assert "service /usr/bin/python3 exited: status 5" in err


def test_timeout_kills_service_and_exits_124(tmp_path: Path) -> None:
    code, msgs, err, took = run_init(tmp_path, ["/bin/sleep", "60"],
                                     OSUNITS_READY="tcp:1", OSUNITS_READY_TIMEOUT="0.5")
    assert code == 124
    assert took < 5
    assert not any("READY=1" in m for m in msgs)
    assert "readiness check failed: tcp connect to 127.0.0.1 or [::1]:1 not satisfied " \
        "after 0.5 s" in err


def test_exit_133_is_not_passed_on(tmp_path: Path) -> None:
    code, _, err, _ = run_init(tmp_path, ["/bin/sh", "-c", "exit 133"])
    assert code == 1
    assert "means 'reboot'" in err


def test_bad_configuration(tmp_path: Path) -> None:
    assert run_init(tmp_path, ["/bin/true"], OSUNITS_READY="bogus:1")[0] == 2
    assert run_init(tmp_path, ["/bin/true"], OSUNITS_USER="no-such-user-here")[0] == 2


@pytest.mark.parametrize(("rc", "status"), [(0, "200 active"), (3, "503 not active"),
                                            (4, "503 not active"), (1, "500 cannot ask systemd")])
def test_answer_ready_tells_not_active_from_cannot_ask(tmp_path: Path, rc: int,
                                                       status: str) -> None:
    """A gate retries either way; the operator reading `curl HOST:7480/SERVICE` must not
    take a broken bus for a stopped service."""
    fake = tmp_path / "systemctl"
    fake.write_text(f"#!/bin/sh\necho 'Failed to connect to bus' >&2\nexit {rc}\n")
    fake.chmod(0o755)
    res = subprocess.run([PY, "-I", "-S", str(INIT_SRC), "--answer-ready", "web"],
                         input=b"GET /web HTTP/1.0\r\n\r\n", capture_output=True,
                         env={"PATH": f"{tmp_path}:/usr/bin:/bin"}, timeout=30, check=False)
    assert res.stdout.startswith(f"HTTP/1.0 {status}\r\n".encode()), res.stdout
    assert (b"Failed to connect to bus" in res.stderr) == (rc == 1)
