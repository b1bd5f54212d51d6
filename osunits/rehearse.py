"""`osunits try`: rehearse one host's deployment in a throwaway systemd host.

Boots a real systemd in a container (osunits.testbed), installs the host's
generated units and the root filesystems they name, starts openstack.target
with the same client `osunits start` uses, reports each service's result and
time to ready, and tears everything down — also when interrupted.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from osunits.errors import OsunitsError
from osunits.model import Deployment
from osunits.output import write_files
from osunits.plan import ROOTFS_DIR, plan_host
from osunits.testbed import HOST_IMAGE, Testbed, available

Print = Callable[[str], None]
WhileUp = Callable[[Testbed], None]


class RehearsalError(OsunitsError):
    exit_code = 2


def image_binds(dep: Deployment, host: str, images_root: Path) -> list[str]:
    """nspawn --bind-ro options giving the test host the images its services name."""
    h = dep.host(host)
    assert h is not None
    binds, missing = [], []
    for spec in sorted({s.rootfs for s in h.services}):
        inside = ROOTFS_DIR / spec
        if str(inside) == HOST_IMAGE:
            continue  # the testbed's own: this machine's root filesystem
        path = images_root / str(inside).lstrip("/")
        if not path.exists():
            missing.append(spec)
            continue
        binds.append(f"--bind-ro={path.resolve()}:{inside}")
    if missing:
        raise RehearsalError(
            f"root filesystems not built on this machine: {', '.join(missing)}; "
            f"run `osunits rootfs build {' '.join(missing)}` first")
    return binds


def rehearse(dep: Deployment, host: str, *, out: Print, timeout: float = 600,
             gate_timeout: int = 10, images_root: Path = Path("/"),
             while_up: WhileUp | None = None) -> bool:
    """Start HOST in a test host, report, stop and remove it; True if every start job did.

    while_up: called with the test host once every service is ready (not after a failed
    start), before anything stops: checks that need the services running (a test's
    authenticated API calls).  What it raises comes out of rehearse after the teardown.
    """
    why = available()
    if why:
        raise RehearsalError(f"cannot boot a throwaway systemd host: {why}")
    # Other hosts are not part of the rehearsal: their gates give up quickly.
    dep = dataclasses.replace(dep, network=dataclasses.replace(dep.network,
                                                               gate_timeout=gate_timeout))
    plan = plan_host(dep, host)
    binds = image_binds(dep, host, images_root)
    from osunits import control
    from osunits.runtime import Systemd
    from osunits.systemd.units import service_of

    with tempfile.TemporaryDirectory(prefix="osunits-try-") as tmp:
        write_files(Path(tmp), plan.files)
        tb = Testbed(extra_args=tuple(binds))
        t0 = time.monotonic()
        tb.start()
        try:
            out(f"test host {tb.name} booted in {time.monotonic() - t0:.1f} s; "
                f"installing {len(plan.files)} files for {host}")
            tb.install_tree(tmp)
            if plan.graph.cross_host:
                out(f"note: {len(plan.graph.cross_host)} cross-host dependencies are not "
                    f"rehearsed; their gates give up after {gate_timeout} s")
            # One connection to the test host for start, report and stop: after a start
            # that timed out, its late JobRemoved signals are not the stop's jobs, and
            # wait_jobs follows only the jobs it is given.
            with Systemd(tb.bus_address.decode()) as sd:
                try:
                    oc = control.run_verb(sd, "start", [], timeout=timeout, out=out)
                    control.report_outcome(sd, "start", oc, out)
                    ok = oc.ok
                except TimeoutError as e:
                    out(f"osunits: {e}")
                    ok = False
                out(control.format_status(control.status(sd, tb.bus_address.decode())))
                try:
                    if ok and while_up is not None:
                        while_up(tb)
                finally:
                    stop_t = time.monotonic()
                    stopped = control.run_verb(sd, "stop", [], timeout=120,
                                               out=lambda s: None)
            out(f"stopped all in {time.monotonic() - stop_t:.1f} s"
                + ("" if stopped.ok else ": " + ", ".join(
                    service_of(u) for u in stopped.failed)))
            return ok
        finally:
            tb.teardown()
            out(f"test host {tb.name} removed")


def env_images_root() -> Path:
    return Path(os.environ.get("OSUNITS_IMAGES_ROOT", "/"))
