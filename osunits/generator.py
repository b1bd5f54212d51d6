"""osunits as a systemd generator (systemd.generator(7)).

Installed as /etc/systemd/system-generators/osunits, it compiles this host's units
from the deployment in /etc/osunits at boot and on every daemon-reload, into the
generator's directory and /run — no `osunits generate` needed.

A generator that fails silently is the known weakness of Quadlet's: here a
deployment error is printed (it reaches the journal via kmsg), written to
/run/osunits/generator-errors, and turned into a failing unit,
``osunits-generator-failed.service``, that ``openstack.target`` requires and
boot pulls in — so `systemctl --failed` and `systemctl start openstack.target`
both say what is wrong.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

FAILED_UNIT = "osunits-generator-failed.service"
ERRORS_FILE = Path("/run/osunits/generator-errors")

def run(unit_dir: Path, dep_dir: Path, root: Path = Path("/")) -> int:
    from osunits.deployment import DEPLOYMENT_FILE, load_deployment, this_host
    from osunits.errors import DeploymentError, OsunitsError
    from osunits.output import write_files
    from osunits.plan import Layout, plan_host

    if not (dep_dir / DEPLOYMENT_FILE).is_file():
        return 0  # osunits installed but not configured: nothing to do
    layout = Layout.generator(str(unit_dir))
    errors_file = root / str(ERRORS_FILE).lstrip("/")
    t0 = time.monotonic()
    try:
        plan = plan_host(load_deployment(dep_dir), *this_host(dep_dir), layout=layout)
        # The unit directory is emptied by systemd before each run: write it under "/".
        write_files(root, plan.files, layout=layout)
    except (OsunitsError, OSError) as e:  # OSError: e.g. a file system still read-only
        lines = ([str(p) for p in e.problems] if isinstance(e, DeploymentError) else [str(e)])
        text = "\n".join(lines) + "\n"
        sys.stderr.write("osunits-generator: the deployment has errors; no services generated\n"
                         + text)
        errors_file.parent.mkdir(parents=True, exist_ok=True)
        errors_file.unlink(missing_ok=True)
        fd = os.open(errors_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:  # root's alone, as the deployment's errors are
            f.write(text)
        _write_failure_units(root / str(unit_dir).lstrip("/"))
        return 0  # the failure is reported by units; a failing generator would only log
    errors_file.unlink(missing_ok=True)
    if os.environ.get("OSUNITS_GENERATOR_TIMING"):
        sys.stderr.write(f"osunits-generator: {len(plan.files)} files in "
                         f"{(time.monotonic() - t0) * 1000:.0f} ms\n")
    return 0


def _write_failure_units(unit_dir: Path) -> None:
    from osunits.render import render_unit
    from osunits.systemd.units import TARGET

    unit_dir.mkdir(parents=True, exist_ok=True)
    (unit_dir / FAILED_UNIT).write_text(render_unit(
        "generator-failed.service.j2", errors=str(ERRORS_FILE)))
    (unit_dir / TARGET).write_text(render_unit(
        "generator-failed.target.j2", failed=FAILED_UNIT))
    wants = unit_dir / "multi-user.target.wants"
    wants.mkdir(exist_ok=True)
    link = wants / FAILED_UNIT
    if not link.is_symlink():
        link.symlink_to(unit_dir / FAILED_UNIT)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    unit_dir = Path(args[0]) if args else Path("/run/systemd/generator")
    from osunits import cache
    from osunits.deployment import deployment_dir

    cache.read_only = True  # systemd.generator(7): write only to the output directories
    return run(unit_dir, deployment_dir())


if __name__ == "__main__":
    sys.exit(main())
