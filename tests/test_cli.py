"""The command line's process-level behaviour (what CliRunner cannot show)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

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


def test_generate_reloads_before_it_prints_so_a_closed_pipe_cannot_skip_it(
        tmp_path: Path) -> None:
    import shutil

    dep = tmp_path / "dep"
    shutil.copytree(EXAMPLE, dep)
    svc = dep / "services/memcached.yaml"
    svc.write_text(svc.read_text().replace("rootfs: memcached", "rootfs: nosuch"))  # a warning
    marker = tmp_path / "reloaded"
    code = (f"import sys; from osunits import cli; "
            f"cli._daemon_reload = lambda bus: open({str(marker)!r}, 'w').close(); "
            f"sys.argv = ['osunits', 'generate', '-H', 'ctl01', '-d', {str(dep)!r}, "
            f"'--root', {str(tmp_path / 'root')!r}, '--bus', 'unix:path=/nonexistent']; "
            "cli.main()")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    assert p.stdout is not None
    p.stdout.close()
    assert p.wait(timeout=60) == -signal.SIGPIPE
    assert marker.exists()
