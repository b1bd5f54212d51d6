"""The `osunits` command line.  Only this module prints and exits.

Exit codes: 0 success (and for --diff/--dry-run/check-deps: nothing to report),
1 changes pending or problems found, 2 unreadable or invalid input.
"""

# No `from __future__ import annotations` here: typer would then eval every option's
# annotation string on every run (8 ms of a 120 ms `generate`).
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.core

from osunits.deployment import deployment_dir, this_host
from osunits.errors import DeploymentError, OsunitsError, OutputError, Problem

# typer before 0.21.1 escapes "[default: ...]" as rich markup ("\[default: /]") whenever rich
# is importable, even with rich_markup_mode=None; we never use rich, so tell typer it is absent.
typer.core.HAS_RICH = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from osunits.output import Change, FileChange, Result
    from osunits.plan import HostPlan
    from osunits.rootfs.spec import Spec
    from osunits.secretfiles import SecretUses

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Run co-located OpenStack services in systemd-nspawn containers, ordered by systemd.",
)


DeploymentOpt = Annotated[Path | None, typer.Option(
    "--deployment", "-d", help="Deployment directory [default: $OSUNITS_DEPLOYMENT, "
    "else /etc/osunits]", show_default=False)]
HostOpt = Annotated[str | None, typer.Option(
    "--host", "-H", help="Host of the inventory [default: $OSUNITS_HOST, else the content "
    "of DIR/host, else this machine's short host name]", show_default=False)]


def default_host(opt: str | None, dep_dir: Path) -> tuple[str, str]:
    """The host to compile for, and what named it (for the error if it is unknown)."""
    return (opt, "--host") if opt else this_host(dep_dir)


def _fail(err: OsunitsError, writes: bool = True) -> typer.Exit:
    if isinstance(err, DeploymentError):
        for p in err.problems:
            print(p, file=sys.stderr)
        n = sum(1 for p in err.problems if p.severity == "error")
        print(f"osunits: {n} error(s)" + ("; nothing was written" if writes else ""),
              file=sys.stderr)
    else:
        print(f"osunits: {err}", file=sys.stderr)
    return typer.Exit(err.exit_code)


def _is_this_root(root: Path) -> bool:
    """``root`` is this machine's /: the same directory, not the same name (/proc/PID/root
    of a container resolves to "/" by name)."""
    try:
        return os.path.samefile(root, "/")
    except OSError:
        return False


@app.command()
def generate(
    host: HostOpt = None,
    deployment: DeploymentOpt = None,
    root: Annotated[Path, typer.Option(help="Write under this root instead of /")] = Path("/"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would change; "
                                          "write nothing; exit 1 if anything would")] = False,
    diff: Annotated[bool, typer.Option("--diff", help="Show the changes as a unified diff; "
                                       "write nothing; exit 1 if anything would change")] = False,
    adopt: Annotated[bool, typer.Option("--adopt", help="Take over existing files that are "
                                        "exactly what would be written (a lost manifest)")] = False,
    reload: Annotated[bool, typer.Option(help="Ask systemd to reload after writing to / (or "
                                         "to --root, when --bus names its systemd)")] = True,
    bus: Annotated[str | None, typer.Option(
        "--bus", envvar="OSUNITS_BUS_ADDRESS", help="D-Bus address of the systemd that reads "
        "--root [default: the local system bus, for --root /]", show_default=False)] = None,
) -> None:
    """Compile the deployment into HOST's container units and write them."""
    from osunits.deployment import load_deployment
    from osunits.output import write_files
    from osunits.plan import INSTALLED, plan_host
    from osunits.systemd.units import TARGET

    try:
        d = deployment_dir(deployment)
        dep = load_deployment(d)
        plan = plan_host(dep, *default_host(host, d))
        live = bus is not None or (_is_this_root(root)
                                   and os.path.isdir("/run/systemd/system"))
        result = write_files(root, plan.files, host=plan.host, dry_run=dry_run or diff,
                             adopt=adopt, inventory=frozenset(h.name for h in dep.hosts),
                             vet=_running_must_not_leave(bus) if live else None)
    except OsunitsError as e:
        raise _fail(e) from None
    # Reload before printing anything: printing may end the process (a closed pipe).
    if result.written and reload and not (dry_run or diff) and (
            bus or _is_this_root(root)):
        _daemon_reload(bus)
    for w in plan.warnings:
        print(w, file=sys.stderr)
    if diff:
        from osunits.output import render_diff
        sys.stdout.write(render_diff(result.changes, result.secret_paths))
    elif dry_run:
        for c in result.changes:
            print(f"{ {'add': '+', 'update': '~', 'remove': '-', 'adopt': '='}[c.change]} {c.path}")
    else:
        for c in result.changes:
            print(f"{c.change:6} {c.path}")
        n = len(plan.files)
        adopted = sum(c.change == "adopt" for c in result.changes)
        print(f"{plan.host}: {n} files, {len(result.changes) - adopted} changed"
              + (f", {adopted} adopted" if adopted else ""), file=sys.stderr)
        _say_what_running_services_need(plan, result)
        if not os.path.lexists(str(root) + str(INSTALLED.boot_wants)):
            here = "" if _is_this_root(root) else f" --root {root}"
            print(f"note: {TARGET} does not start at boot: `systemctl enable {TARGET}{here}`",
                  file=sys.stderr)
    if (dry_run or diff) and result.changed:
        raise typer.Exit(1)


def _say_what_running_services_need(plan: "HostPlan", result: "Result") -> None:
    """Files are written, but a running container reads its configuration at start, and a
    service taken off the host keeps running: say which, and the command."""
    from osunits.output import Change
    from osunits.systemd.units import unit_of

    new = set(_machines(result.changes, Change.ADD))  # not running yet
    updated = [c.path for c in result.changes if c.change is Change.UPDATE]
    by_path = {f.path: f for f in plan.files} if updated else {}
    restart = sorted({s for p in updated for s in by_path[p].services} - new)
    gone = _machines(result.changes, Change.REMOVE)
    if restart:
        print(f"note: a service sees the changes at its next start (a restart starts a "
              f"stopped or failed one too): osunits restart {' '.join(restart)}",
              file=sys.stderr)
    if gone:
        print(f"note: {', '.join(gone)} left this host; a running container stops only when "
              f"told to: systemctl stop {' '.join(unit_of(g) for g in gone)}", file=sys.stderr)


def _machines(changes: "list[FileChange]", change: "Change") -> list[str]:
    """The services whose ``.nspawn`` file ``changes`` add (or remove...)."""
    from osunits.plan import INSTALLED

    nspawn = INSTALLED.nspawn.parts  # a path's parent compared as parts: not made per change
    return sorted(c.path.stem for c in changes
                  if c.change is change and c.path.parts[:-1] == nspawn)


RUNNING = ("active", "activating", "deactivating", "reloading")
# Units whose stop tears down what their start set up (a namespace, the bridge, a
# listening socket); a gate only waited, and a template unit never runs itself.
UNIT_SUFFIXES = (".service", ".socket")


def _running_must_not_leave(bus: str | None) -> "Callable[[list[FileChange]], None]":
    """Refuse to remove the units of a service that runs: systemd would keep it running
    without them, and stopping it then skips their ExecStop= (its network namespace and
    veth, holding its address on the bridge, would stay until reboot)."""
    from osunits.output import Change

    def vet(changes: "list[FileChange]") -> None:
        from osunits.plan import GATE_PREFIX, INSTALLED
        from osunits.systemd.units import service_of, unit_of

        gone = _machines(changes, Change.REMOVE)
        running = [service_of(u) for u in _running(bus, [unit_of(g) for g in gone])]
        if running:
            raise OutputError(
                f"{', '.join(running)} would leave this host while running: stop "
                f"{'it' if len(running) == 1 else 'them'} first (osunits stop "
                f"{' '.join(running)}), so that {'its' if len(running) == 1 else 'their'} "
                "units can tear down what they set up; nothing was written")
        # A unit of a service that stays (a namespace when it moves to the host's network,
        # a published port it no longer has, the bridge): the same, if it is active.
        units = INSTALLED.units.parts
        removed = sorted(c.path.name for c in changes if c.change is Change.REMOVE
                         and c.path.parts[:-1] == units and c.path.suffix in UNIT_SUFFIXES
                         and not c.path.name.startswith(GATE_PREFIX) and "@." not in c.path.name)
        active = _still_running(bus, removed)
        if active:
            raise OutputError(
                f"{', '.join(active)} would be removed while active, and could not tear down "
                "what it set up when stopped later: stop it first (systemctl stop "
                f"{' '.join(active)}; stopping a namespace's unit stops its container); "
                "nothing was written")

    return vet


def _active_states(bus: str | None, units: list[str]) -> list[str]:
    """ActiveState of each unit ("unknown" when systemd cannot be asked: the note after the
    write still says to stop them)."""
    if not units:
        return []
    try:
        from osunits.runtime import Systemd

        with Systemd(bus) as sd:
            return [_active_state(sd, u) for u in units]
    except ImportError:  # pystemd is optional for generate: ask systemctl
        import subprocess

        if bus is not None:
            return ["unknown"] * len(units)
        res = subprocess.run(["systemctl", "show", "-p", "ActiveState", "--value", *units],
                             capture_output=True, text=True, check=False)
        states = res.stdout.split()
        return states if len(states) == len(units) else ["unknown"] * len(units)
    except Exception:  # noqa: BLE001 - no bus, no systemd: not a reason to refuse
        return ["unknown"] * len(units)


def _running(bus: str | None, units: list[str]) -> list[str]:
    """The units of ``units`` that run (or are starting, stopping, reloading)."""
    return [u for u, state in zip(units, _active_states(bus, units), strict=True)
            if state in RUNNING]


def _still_running(bus: str | None, units: list[str], settle: float = 3.0) -> list[str]:
    """The units that stay running: a namespace or the bridge stops by itself once
    unneeded, a moment after its container (`osunits stop X` then `generate` must not
    race it)."""
    import time

    deadline = time.monotonic() + settle
    while (units := _running(bus, units)) and time.monotonic() <= deadline:
        time.sleep(0.1)
    return units


def _active_state(sd: Any, unit: str) -> str:
    try:
        return str(sd.properties(unit)["ActiveState"])
    except Exception:  # noqa: BLE001 - a unit systemd cannot load is not running
        return "unknown"


def _daemon_reload(bus: str | None) -> None:
    try:
        from osunits.runtime import daemon_reload
    except ImportError:
        print("osunits: pystemd is not installed; run `systemctl daemon-reload`", file=sys.stderr)
        return
    try:
        daemon_reload(bus)
        print("systemd reloaded its units", file=sys.stderr)
    except Exception as e:  # noqa: BLE001 - reported, the files are written either way
        print(f"osunits: daemon-reload failed: {e}; run `systemctl daemon-reload`",
              file=sys.stderr)


class Format(StrEnum):
    text = "text"
    json = "json"
    dot = "dot"


@app.command("check-deps")
def check_deps(
    host: Annotated[str | None, typer.Option("--host", "-H", help="Only this host "
                                             "[default: all hosts]")] = None,
    deployment: DeploymentOpt = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="text for people, json for "
                                        "tools, dot for graphviz (dot -Tsvg)")] = Format.text,
    render: Annotated[bool, typer.Option(help="Render every config template, as generate "
                                         "would, to report template errors")] = True,
) -> None:
    """Validate the deployment; print start order, critical path and problems."""
    from osunits import report
    from osunits.deployment import load_deployment
    from osunits.graph import check_deployment, host_of

    try:
        dep = load_deployment(deployment_dir(deployment))
        rep = check_deployment(dep, None if host is None else [host_of(dep, host).name])
        if render:
            from osunits.plan import check_configs

            checked = {g.host for g in rep.hosts}
            rep.problems += check_configs(dep, [h for h in dep.hosts if h.name in checked])
        rep.problems += _own_spec_problems(dep.root)
    except OsunitsError as e:
        raise _fail(e, writes=False) from None
    if fmt is Format.json:
        print(json.dumps(report.to_json(rep), indent=2, sort_keys=True))
    elif fmt is Format.dot:
        sys.stdout.write(report.to_dot(dep, rep))
    else:
        sys.stdout.write(report.to_text(rep))
    if not rep.clean:
        raise typer.Exit(1)


def _own_spec_problems(root: Path) -> list[Problem]:
    """The deployment's own rootfs specs are part of it: their errors (R0xx) too."""
    from osunits.deployment import spec_dirs

    bundled, own = spec_dirs(root)
    if not own.is_dir():
        return []
    from osunits import rootfs

    try:
        rootfs.load_specs(bundled, own)
    except DeploymentError as e:
        return [p for p in e.problems
                if p.location is None or p.location.path.startswith(str(own))]
    return []


@app.command()
def decommission(
    root: Annotated[Path, typer.Option(help="Remove under this root instead of /")] = Path("/"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be removed; "
                                          "remove nothing; exit 1 if anything would be")] = False,
) -> None:
    """Remove every file osunits wrote for this host (a host leaving the inventory)."""
    from osunits.output import JOURNAL, MANIFEST, write_files
    from osunits.plan import INSTALLED
    from osunits.systemd.units import TARGET, unit_of

    if os.path.isdir(root) and not any(os.path.lexists(root / str(p).lstrip("/"))
                                       for p in (MANIFEST, JOURNAL)):
        print(f"osunits: nothing of osunits' under {root}", file=sys.stderr)
        return
    live = _is_this_root(root) and os.path.isdir("/run/systemd/system")
    if live and not dry_run:
        # any of its containers, not only the target: `osunits start keystone` starts one
        machines = sorted(p.stem for p in Path(str(INSTALLED.nspawn)).glob("*.nspawn"))
        if _running(None, [TARGET, *(unit_of(m) for m in machines)]):
            print("osunits: services of this host are running: stop them first "
                  "(osunits stop); nothing was removed", file=sys.stderr)
            raise typer.Exit(2)
    try:  # the writer takes the lock before it completes or undoes an interrupted run
        result = write_files(root, (), dry_run=dry_run)
    except OsunitsError as e:
        raise _fail(e) from None
    if result.written and live:
        _daemon_reload(None)
    if not result.changes:
        print(f"osunits: nothing of osunits' under {root}", file=sys.stderr)
        return
    for c in result.changes:
        print(f"- {c.path}" if dry_run else f"{c.change:6} {c.path}")
    print(f"{len(result.changes)} files " + ("would be removed" if dry_run else "removed"),
          file=sys.stderr)
    if dry_run and result.changed:
        raise typer.Exit(1)


@app.command("install-generator")
def install_generator(
    root: Annotated[Path, typer.Option(help="Install under this root instead of /")] = Path("/"),
) -> None:
    """Install osunits as a systemd generator: units are compiled at boot and daemon-reload."""
    exe = Path(sys.argv[0]).resolve().with_name("osunits-generator")
    if not exe.exists():
        exe = Path(sys.executable).with_name("osunits-generator")
    link = root / "etc/systemd/system-generators/osunits"
    if link.is_symlink() and Path(os.readlink(link)) == exe:
        print(f"{link} -> {exe}: already installed")
        return
    if link.exists() or link.is_symlink():
        print(f"osunits: {link} exists and is not osunits' generator; not touching it",
              file=sys.stderr)
        raise typer.Exit(2)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(exe)
    print(f"{link} -> {exe}\nrun `systemctl daemon-reload`; the deployment is read from "
          "/etc/osunits (this machine's inventory name from /etc/osunits/host, else its "
          "host name)")


@app.command()
def schema() -> None:
    """Print the JSON Schema of service definitions (for editors)."""
    from osunits.docgen import render_schema

    sys.stdout.write(render_schema())


BusOpt = Annotated[str | None, typer.Option(
    "--bus", envvar="OSUNITS_BUS_ADDRESS", help="D-Bus address of the systemd to drive "
    "[default: the local system bus]", show_default=False)]
ServicesArg = Annotated[list[str] | None, typer.Argument(
    help="Services (default: the host's openstack.target)", show_default=False)]


@contextlib.contextmanager
def _systemd(bus: str | None) -> Iterator[Any]:
    """A connection to systemd; a name that is not this host's (LookupError) or a call
    systemd refuses (runtime.SystemdError) is exit 2, one line each."""
    try:
        from osunits.runtime import Systemd
    except ImportError:
        print("osunits: the runtime needs pystemd (pip install 'osunits[runtime]')",
              file=sys.stderr)
        raise typer.Exit(2) from None
    try:
        sd = Systemd(bus)
    except Exception as e:  # noqa: BLE001 - pystemd raises its own DBusError
        print(f"osunits: cannot reach systemd on {bus or 'the system bus'}: {e}",
              file=sys.stderr)
        raise typer.Exit(2) from None
    with sd:
        try:
            yield sd
        except (LookupError, OsunitsError) as e:
            for line in str(e).splitlines():
                print(f"osunits: {line}", file=sys.stderr)
            raise typer.Exit(2) from None


def _run_verb(verb: str, services: list[str] | None, bus: str | None, timeout: float) -> None:
    from osunits import control

    with _systemd(bus) as sd:
        try:
            oc = control.run_verb(sd, verb, services or [], timeout=timeout, out=print)
        except TimeoutError as e:
            print(f"osunits: {e}; systemd carries on with them (`systemctl list-jobs`, "
                  "`osunits status`)", file=sys.stderr)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            print(f"osunits: interrupted; systemd carries on with the {verb} jobs it has "
                  "queued (`systemctl list-jobs`, `osunits status`)", file=sys.stderr)
            raise typer.Exit(130) from None
        control.report_outcome(sd, verb, oc, print)
        if verb == "start" and services and oc.ok:
            down = control.still_down(sd, oc.results)
            if down:
                print("still down, and they require what was started: " + ", ".join(down)
                      + " (`osunits start` starts every service of the host)")
    if not oc.ok:
        raise typer.Exit(1)


TimeoutOpt = Annotated[float, typer.Option(help="Give up waiting after this many seconds")]


@app.command()
def start(services: ServicesArg = None, bus: BusOpt = None, timeout: TimeoutOpt = 900) -> None:
    """Start services (default: openstack.target) and follow their jobs to the end."""
    _run_verb("start", services, bus, timeout)


@app.command()
def stop(services: ServicesArg = None, bus: BusOpt = None, timeout: TimeoutOpt = 900) -> None:
    """Stop services (default: all of openstack.target, in reverse dependency order)."""
    _run_verb("stop", services, bus, timeout)


@app.command()
def restart(services: ServicesArg = None, bus: BusOpt = None, timeout: TimeoutOpt = 900) -> None:
    """Restart services and follow the jobs to the end."""
    _run_verb("restart", services, bus, timeout)


@app.command()
def status(bus: BusOpt = None,
           as_json: Annotated[bool, typer.Option("--json", help="Machine-readable")] = False,
           ) -> None:
    """Per service: machine, state, since, main PID, memory, restarts, readiness."""
    from osunits import control

    with _systemd(bus) as sd:
        st = control.status(sd, bus)
    print(json.dumps(st, indent=2, sort_keys=True) if as_json else control.format_status(st))
    if (st["active"] != "active" or not st["services"] or st["generator"]
            or any(r["active"] != "active" for r in st["services"])):
        raise typer.Exit(1)


@app.command()
def watch(services: ServicesArg = None, bus: BusOpt = None,
          duration: Annotated[float | None, typer.Option(
              help="Stop after this many seconds [default: until interrupted]")] = None) -> None:
    """Stream state changes as systemd reports them (no polling)."""
    import time

    from osunits import control
    from osunits.systemd.units import TARGET

    with _systemd(bus) as sd:
        units = control.check_units(sd, services) if services else [*sd.target_members(), TARGET]
        until = time.time() + duration if duration else None
        try:
            for ch in sd.watch(units, until):
                print(control.format_change(ch), flush=True)
        except KeyboardInterrupt:
            pass


@app.command()
def why(service: str, bus: BusOpt = None) -> None:
    """Why is SERVICE not running? Walks its requirements to the root cause."""
    from osunits import control

    with _systemd(bus) as sd:
        lines = control.why(sd, service)
    print("\n".join(lines))
    if len(lines) > 1 or " is running " not in lines[0]:
        raise typer.Exit(1)


@app.command()
def logs(service: str, bus: BusOpt = None,
         follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
         lines: Annotated[int, typer.Option("--lines", "-n")] = 50) -> None:
    """Show SERVICE's journal: its container's output (a booted container's own journal is
    `journalctl -M SERVICE`)."""
    from osunits import control
    from osunits.systemd.units import journal_args

    with _systemd(bus) as sd:  # the service is checked as for every runtime command
        [unit] = control.check_units(sd, [service])
        where = journal_args(bus)  # a bus whose journal cannot be read: LookupError, exit 2
    argv = ["journalctl", *where, "-u", unit, "-n", str(lines), "--no-pager"]
    if follow:
        argv.append("-f")
    sys.stdout.flush()
    os.execvp(argv[0], argv)


@app.command("try")
def try_(
    host: HostOpt = None,
    deployment: DeploymentOpt = None,
    timeout: TimeoutOpt = 900,
    gate_timeout: Annotated[int, typer.Option(help="Seconds a gate waits for a service on "
                                              "another host (not rehearsed)")] = 10,
) -> None:
    """Rehearse HOST's deployment in a throwaway systemd host: start it, report, clean up."""
    import signal

    # The teardown must run even if the reader goes away (`osunits try | head`): a write to
    # a closed pipe then raises through it instead of killing the process (main's SIG_DFL).
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    from osunits.deployment import load_deployment
    from osunits.graph import host_of
    from osunits.rehearse import env_images_root, rehearse

    try:
        d = deployment_dir(deployment)
        dep = load_deployment(d)
        ok = rehearse(dep, host_of(dep, *default_host(host, d)).name,
                      out=lambda s: print(s, flush=True),
                      timeout=timeout, gate_timeout=gate_timeout,
                      images_root=env_images_root())
    except OsunitsError as e:
        raise _fail(e, writes=False) from None
    if not ok:
        raise typer.Exit(1)


rootfs_app = typer.Typer(help="Container root filesystems from rootfs_specs/ (docs/rootfs.md).",
                         no_args_is_help=True)
app.add_typer(rootfs_app, name="rootfs")


SpecsOpt = Annotated[Path | None, typer.Option("--specs", help="Spec directory [default: "
                                               "the bundled rootfs_specs/, and the deployment's "
                                               "own DIR/rootfs_specs/ over them]",
                                               show_default=False)]


def _load_specs(specs: Path | None, deployment: Path | None) -> "dict[str, Spec]":
    """--specs alone, else the bundled specs and the deployment's own (the names C009 knows)."""
    from osunits import rootfs
    from osunits.deployment import spec_dirs

    if specs is not None:
        return rootfs.load_specs(specs)
    return rootfs.load_specs(*spec_dirs(deployment_dir(deployment)))
RootOpt = Annotated[Path, typer.Option(help="Images live under ROOT/var/lib/osunits/rootfs")]
CacheOpt = Annotated[Path | None, typer.Option(help="Layer cache [default: "
                                               "ROOT/var/cache/osunits/rootfs]")]


@rootfs_app.command("build")
def rootfs_build(
    names: Annotated[list[str] | None, typer.Argument(help="Specs to build")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Build every spec")] = False,
    specs: SpecsOpt = None, root: RootOpt = Path("/"), deployment: DeploymentOpt = None,
    cache: CacheOpt = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if current")] = False,
    mirror: Annotated[str | None, typer.Option(help="Debian mirror [default: the host's]")] = None,
) -> None:
    """Build images (cached by content: an unchanged spec is a no-op)."""
    from osunits import rootfs

    try:
        loaded = _load_specs(specs, deployment)
        wanted = list(loaded) if all_ else (names or [])
        if not wanted:
            print("osunits: name specs to build, or --all", file=sys.stderr)
            raise typer.Exit(2)
        done: set[str] = set()  # layers of this command: a shared base is built once
        for n in rootfs.build_order(wanted, loaded):
            rootfs.build(n, loaded, root=root, cache=cache, mirror=mirror, force=force,
                         done=done)
    except OsunitsError as e:
        raise _fail(e) from None


@rootfs_app.command("list")
def rootfs_list(specs: SpecsOpt = None, root: RootOpt = Path("/"),
                deployment: DeploymentOpt = None) -> None:
    """Images and whether they are current with their specs."""
    from osunits import rootfs

    try:
        loaded = _load_specs(specs, deployment)
        images = rootfs.list_images(root, loaded)
    except OsunitsError as e:
        raise _fail(e, writes=False) from None
    for im in images:
        print(f"{im.name:<20} {im.status!s:<8} {im.path}")


@rootfs_app.command("prune")
def rootfs_prune(root: RootOpt = Path("/"), cache: CacheOpt = None) -> None:
    """Remove cached layers no image uses any more."""
    from osunits import rootfs

    for p in rootfs.prune(root=root, cache=cache):
        print(f"removed {p}")


secrets_app = typer.Typer(help="The secret files config templates read with secret(NAME).",
                          no_args_is_help=True)
app.add_typer(secrets_app, name="secrets")


def _secret_uses(deployment: Path | None) -> "tuple[Path, SecretUses]":
    """The secrets directory of the deployment and what its templates read."""
    from osunits.deployment import load_deployment, secrets_dir
    from osunits.secretfiles import find_secret_uses

    d = deployment_dir(deployment)
    return secrets_dir(d), find_secret_uses(load_deployment(d))


@secrets_app.command("generate")
def secrets_generate(deployment: DeploymentOpt = None) -> None:
    """Create every secret the templates read that does not exist yet, with a random
    value (never changing one that exists); print the names, never the values."""
    from osunits.secretfiles import generate_secrets

    try:
        sdir, uses = _secret_uses(deployment)
        states = generate_secrets(sdir, uses.names)
    except OsunitsError as e:
        raise _fail(e) from None
    for p in uses.problems:
        print(p, file=sys.stderr)
    for st in states:
        print(st)
    created = sum(st.status == "created" for st in states)
    print(f"{sdir}: {created} created, {len(states) - created} already there", file=sys.stderr)
    if uses.problems or not all(st.ok for st in states):
        raise typer.Exit(1)


@secrets_app.command("list")
def secrets_list(deployment: DeploymentOpt = None) -> None:
    """The secrets the templates read, whether each is there, and where it is used."""
    from osunits.secretfiles import list_secrets

    try:
        sdir, uses = _secret_uses(deployment)
        states = list_secrets(sdir, uses.names)
    except OsunitsError as e:
        raise _fail(e, writes=False) from None
    width = max((len(st.name) for st in states), default=0)
    for st in states:
        print(f"{st.status:8} {st.name:<{width}}  {uses.names[st.name][0]}"
              + (f": {st.why}" if st.why else ""))
    for p in uses.problems:
        print(p, file=sys.stderr)
    if uses.problems or not all(st.ok for st in states):
        raise typer.Exit(1)


def main() -> None:
    # A closed pipe (`osunits check-deps | head`) ends the process as it ends cat or grep:
    # by SIGPIPE, which a shell's pipefail reports as such, not as exit 1 ("problems").
    import signal

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    app()


if __name__ == "__main__":
    main()
