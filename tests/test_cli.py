"""The command line's process-level behaviour (what CliRunner cannot show)."""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.conftest import EXAMPLE


def test_a_closed_pipe_ends_the_process_by_sigpipe_not_exit_1() -> None:
    """`check-deps | head` under pipefail: exit 1 would read as "problems found"."""
    p = subprocess.Popen([sys.executable, "-m", "osunits.cli", "check-deps", "-d", str(EXAMPLE),
                          "--format", "dot"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    p.stdout.close()  # before the child writes anything
    err = p.stderr.read()
    assert p.wait(timeout=60) == -signal.SIGPIPE
    assert b"Traceback" not in err and b"BrokenPipe" not in err
