"""osunits as a systemd generator (systemd.generator(7)).

Installed as /etc/systemd/system-generators/osunits, it compiles this host's units
from the deployment in /etc/osunits at boot and on every daemon-reload, into the
generator's directory and /run — no `osunits generate` needed.

A generator that fails silently is the known weakness of Quadlet's, and one that fails
by writing nothing takes the units away from every running container: systemd empties
the generator's directory before each run, so after a typo and a daemon-reload the
containers would run on without their drop-ins and their network namespace units.  So:

- each run that succeeds records the part of its output that lives in the generator's
  directory (``LAST_GOOD_FILE``, root's alone: rendered units may hold secrets);
- a run that fails (a deployment error, or any exception) writes that last good unit set
  of this host again, unchanged, plus a drop-in that makes ``openstack.target`` require
  ``osunits-generator-failed.service``; with no last good output (the first run of a boot)
  it writes a stand-in ``openstack.target`` that requires it instead;
- either way the errors go to stderr (the journal, via kmsg) and to
  ``/run/osunits/generator-errors``, and ``osunits-generator-failed.path`` starts the
  failure unit: a generator cannot start units, but a path unit that was active before
  the reload checks its ``PathExists=`` again when the reload is over
  (docs/design.md, "Generator mode").
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from osunits.plan import PlannedFile

FAILED_UNIT = "osunits-generator-failed.service"
WATCH_UNIT = "osunits-generator-failed.path"  # starts FAILED_UNIT when CHECK_FILE exists
TARGET_DROPIN = "90-osunits-generator.conf"  # in openstack.target.d/
ERRORS_FILE = Path("/run/osunits/generator-errors")
CHECK_FILE = Path("/run/osunits/generator-check")  # FAILED_UNIT removes it when it ran
LAST_GOOD_FILE = Path("/run/osunits/generator-last-good.json")
LAST_GOOD_VERSION = 1
IDLE_SUMMARY = "osunits generator: reports a failed run (the last run succeeded)"


def run(unit_dir: Path, dep_dir: Path, root: Path = Path("/")) -> int:
    from osunits.deployment import DEPLOYMENT_FILE, load_deployment, this_host
    from osunits.errors import DeploymentError, OsunitsError
    from osunits.output import on_disk, write_files
    from osunits.plan import Layout, plan_host

    if not (dep_dir / DEPLOYMENT_FILE).is_file():
        return 0  # osunits installed but not configured: nothing to do
    layout = Layout.generator(str(unit_dir))
    out = on_disk(root, unit_dir)
    errors_file = on_disk(root, ERRORS_FILE)
    was_failing = errors_file.exists()
    t0 = time.monotonic()
    try:
        plan = plan_host(load_deployment(dep_dir), *this_host(dep_dir), layout=layout)
        # The unit directory is emptied by systemd before each run: write it under "/".
        write_files(root, plan.files, layout=layout)
    # A generator's failure must leave the running services their units, and be seen:
    # whatever went wrong (an OSError: a file system still read-only, say) is reported.
    except Exception as e:  # noqa: BLE001
        if isinstance(e, DeploymentError):
            lines = [str(p) for p in e.problems]
        elif isinstance(e, (OsunitsError, OSError)):
            lines = [str(e)]
        else:  # a bug: its traceback to the journal, its message to the failure unit
            traceback.print_exc()
            lines = [f"{type(e).__name__}: {e}"]
        _fail(root, out, unit_dir, this_host(dep_dir)[0], lines)
        return 0  # the failure is reported by units; a failing generator would only log
    try:
        record_last_good(on_disk(root, LAST_GOOD_FILE), plan.host, unit_dir, plan.files)
    except OSError as e:  # the units are written: only a later failure loses them
        sys.stderr.write(f"osunits-generator: {e}: the last good units are not recorded\n")
    _write_watch(out, failed=False, kept=False, summary=IDLE_SUMMARY)
    errors_file.unlink(missing_ok=True)
    if was_failing:  # the failure unit runs once more, succeeds, and is failed no longer
        _touch(on_disk(root, CHECK_FILE))
    if os.environ.get("OSUNITS_GENERATOR_TIMING"):
        sys.stderr.write(f"osunits-generator: {len(plan.files)} files in "
                         f"{(time.monotonic() - t0) * 1000:.0f} ms\n")
    return 0


def _fail(root: Path, out: Path, unit_dir: Path, host: str, lines: list[str]) -> None:
    from osunits.output import on_disk

    kept, why_not = restore_last_good(on_disk(root, LAST_GOOD_FILE), host, unit_dir, out)
    what = (f"kept the last good units of {host} (the services keep running as they were)"
            if kept else f"no services generated ({why_not})")
    text = "\n".join(lines) + "\n"
    sys.stderr.write(f"osunits-generator: the deployment has errors; {what}\n" + text)
    errors_file = on_disk(root, ERRORS_FILE)
    errors_file.parent.mkdir(parents=True, exist_ok=True)
    errors_file.unlink(missing_ok=True)
    fd = os.open(errors_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:  # root's alone, as the deployment's errors are
        f.write(text)
    first = text.splitlines()[0] if text.strip() else "(no message)"
    n = len(lines)
    summary = (f"osunits generator failed ({'last good units kept' if kept else 'no services'}"
               f"): {first}" + (f" (and {n - 1} more)" if n > 1 else ""))
    _write_watch(out, failed=True, kept=kept, summary=summary)
    if not kept:
        _write_stand_in(out, unit_dir)
    _touch(on_disk(root, CHECK_FILE))


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def record_last_good(path: Path, host: str, unit_dir: Path,
                     files: Iterable[PlannedFile]) -> None:
    """Record the planned files under ``unit_dir`` (the part of the output systemd removes
    before each run), atomically, root's alone."""
    from osunits.output import write_json

    top = PurePosixPath(unit_dir)
    entries = [{"path": str(f.path.relative_to(top)), "mode": f.mode, "link": f.link,
                # surrogateescape: any bytes survive the JSON round trip
                "content": f.content.decode("utf-8", "surrogateescape")}
               for f in files if top in f.path.parents]
    write_json(path, {"version": LAST_GOOD_VERSION, "host": host, "unit_dir": str(top),
                      "files": entries})


def restore_last_good(path: Path, host: str, unit_dir: Path, out: Path) -> tuple[bool, str]:
    """Write the units ``record_last_good`` recorded for ``host`` and ``unit_dir`` into
    ``out`` (``unit_dir`` on disk); (False, why) when there is no such record."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return False, "no earlier run succeeded since boot"
    except (OSError, ValueError) as e:
        return False, f"{path}: unreadable ({e})"
    if not isinstance(data, dict) or data.get("version") != LAST_GOOD_VERSION:
        return False, f"{path}: of another version of osunits"
    if data.get("host") != host:
        return False, f"the last good units are host {data.get('host')}'s, not {host}'s"
    if data.get("unit_dir") != str(unit_dir):
        return False, f"the last good units were written to {data.get('unit_dir')}"
    try:  # all checked before any is written
        files = [(PurePosixPath(e["path"]), int(e["mode"]), str(e["link"]),
                  str(e["content"]).encode("utf-8", "surrogateescape")) for e in data["files"]]
    except (KeyError, TypeError, ValueError) as e:
        return False, f"{path}: malformed ({e!r})"
    for rel, *_ in files:
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            return False, f"{path}: {rel}: not a path in the generator's directory"
    try:
        for rel, mode, link, content in files:
            _write_one(out / rel, mode, link, content)
    except OSError as e:
        return False, f"{e.filename}: {e.strerror}"
    return True, ""


def _write_one(path: Path, mode: int, link: str, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():  # this run's, from a write that then failed
        path.unlink()
    if link:
        path.symlink_to(link)
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(content)
        os.fchmod(f.fileno(), mode)  # not subject to the umask


def _write_watch(out: Path, *, failed: bool, kept: bool, summary: str) -> None:
    """The failure unit, the path unit that starts it, and the target's drop-in that pulls
    the path unit in (and, after a failure, requires the failure unit)."""
    from osunits.render import render_unit
    from osunits.systemd.units import TARGET

    out.mkdir(parents=True, exist_ok=True)
    (out / FAILED_UNIT).write_text(render_unit(
        "generator-failed.service.j2", errors=str(ERRORS_FILE), check=str(CHECK_FILE),
        summary=summary))
    (out / WATCH_UNIT).write_text(render_unit(
        "generator-failed.path.j2", check=str(CHECK_FILE), failed=FAILED_UNIT))
    if kept or not failed:
        dropins = out / f"{TARGET}.d"
        dropins.mkdir(exist_ok=True)
        (dropins / TARGET_DROPIN).write_text(render_unit(
            "generator.target-dropin.j2", watch=WATCH_UNIT, failed=FAILED_UNIT if failed else "",
            summary=summary))


def _write_stand_in(out: Path, unit_dir: Path) -> None:
    from osunits.render import render_unit
    from osunits.systemd.units import TARGET

    (out / TARGET).write_text(render_unit(
        "generator-failed.target.j2", failed=FAILED_UNIT, watch=WATCH_UNIT))
    wants = out / "multi-user.target.wants"
    wants.mkdir(exist_ok=True)
    link = wants / FAILED_UNIT
    if not link.is_symlink():
        link.symlink_to(unit_dir / FAILED_UNIT)  # as systemd sees it (``out`` is under root)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    unit_dir = Path(args[0]) if args else Path("/run/systemd/generator")
    from osunits import cache
    from osunits.deployment import deployment_dir

    cache.read_only = True  # systemd.generator(7): write only to the output directories
    return run(unit_dir, deployment_dir())


if __name__ == "__main__":
    sys.exit(main())
