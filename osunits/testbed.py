"""A throwaway real systemd host, booted in a container (see docs/readiness.md).

The machine running osunits' tests (or ``osunits try``) need not run systemd itself:
systemd-nspawn boots the machine's own ``/`` as a container with a tmpfs root
(``--volatile=yes``), so nothing the test host writes survives it, and no image has to
be built.  Only the base system is started (``systemd.unit=basic.target``): D-Bus,
machined (bus activated) and nested service containers all work inside.

    with Testbed() as tb:
        tb.install_tree(generated_root)      # etc/systemd/..., var/lib/osunits/...
        tb.systemctl("start", "openstack.target")

Images for nested containers: the machine's root filesystem is bind-mounted read-only
at :data:`HOST_IMAGE` inside the test host (one filesystem, no submounts), so a
``/var/lib/machines/NAME -> /var/lib/osunits/rootfs/host`` symlink there is a real,
shared, read-only image directory that works with ``Volatile=overlay``.  (The test
host's own ``/`` does not: it is a tmpfs with ``/usr`` as a submount, which an overlay
does not show; it only works with ``Volatile=yes``.)

Cleanup even when the test run is killed: nspawn runs in its own session with
``PR_SET_PDEATHSIG=SIGTERM`` (it powers the test host off when the creating thread
dies), and a small watchdog process holding a pipe from us SIGTERMs it when the pipe
closes without a goodbye, then SIGKILLs its process group 15 s later.

Stdlib only: clients reach the test host's systemd at :attr:`Testbed.bus_address`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HOST_IMAGE = "/var/lib/osunits/rootfs/host"
NSPAWN = "systemd-nspawn"
_PR_SET_PDEATHSIG = 1

_WATCHDOG = r"""
import os, signal, sys, time
fd, pid = int(sys.argv[1]), int(sys.argv[2])
pidfd = os.pidfd_open(pid)
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
try:
    msg = os.read(fd, 1)
except OSError:
    msg = b""
if msg == b"q":
    sys.exit(0)
def send(sig):
    try:
        signal.pidfd_send_signal(pidfd, sig)
        return True
    except ProcessLookupError:
        return False
if send(signal.SIGTERM):
    end = time.monotonic() + 15
    while time.monotonic() < end:
        if not send(0):
            sys.exit(0)
        time.sleep(0.2)
    send(signal.SIGTERM)
    time.sleep(1)
    try:
        os.killpg(pid, signal.SIGKILL)  # nspawn leads its own session/group
    except OSError:
        pass
"""


class TestbedError(RuntimeError):
    pass


def available() -> str | None:
    """None if a testbed can be booted here, else the reason why not."""
    if os.geteuid() != 0:
        return "needs root (systemd-nspawn)"
    if shutil.which(NSPAWN) is None:
        return "systemd-nspawn is not installed (apt-get install systemd-container)"
    if shutil.which("nsenter") is None:
        return "nsenter is not installed (util-linux)"
    if not Path("/usr/lib/systemd/systemd").exists() and not Path("/lib/systemd/systemd").exists():
        return "systemd is not installed"
    return None


def _pdeathsig(parent: int) -> Any:
    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _container_init(nspawn_pid: int) -> int | None:
    """The child of nspawn that is PID 1 of a new PID namespace (not the outer child)."""
    for task in Path(f"/proc/{nspawn_pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for c in children:
            try:
                status = Path(f"/proc/{c}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("NSpid:"):
                    ids = line.split()[1:]
                    if len(ids) >= 2 and ids[-1] == "1":
                        return int(c)
    return None


class Testbed:
    """A systemd host booted with systemd-nspawn; use as a context manager.

    network: ``"private"`` (own network namespace, only ``lo``), ``"zone=NAME"``
    (``--network-zone=NAME``: a bridge ``vz-NAME`` on this machine joins all test hosts
    of that zone; addresses are yours to set), or ``"veth"``.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, name: str | None = None, *, network: str = "private",
                 host_image: str | None = HOST_IMAGE, boot_timeout: float = 60.0,
                 extra_args: tuple[str, ...] = (), log_path: Path | None = None) -> None:
        self.name = name or f"osutb-{uuid.uuid4().hex[:8]}"
        self.network = network
        self.host_image = host_image
        self.boot_timeout = boot_timeout
        self.extra_args = tuple(extra_args)
        self.log_path = log_path or Path(f"/tmp/{self.name}.console.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self._pid1: int | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._watchdog_w: int | None = None

    # --- lifecycle ------------------------------------------------------------------

    def argv(self) -> list[str]:
        if self.network == "private":
            net = ["--private-network"]
        elif self.network.startswith("zone="):
            net = [f"--network-zone={self.network[5:]}"]
        elif self.network == "veth":
            net = ["--network-veth"]
        else:
            raise ValueError(f"network must be private, zone=NAME or veth, not {self.network!r}")
        binds = [f"--bind-ro=/:{self.host_image}:norbind"] if self.host_image else []
        return [NSPAWN, "--register=no", "--keep-unit", "-D", "/", "--volatile=yes",
                "-M", self.name, *net, "--console=read-only", *binds, *self.extra_args,
                "-b", "systemd.firstboot=off", "systemd.unit=basic.target"]

    def start(self) -> Testbed:
        why = available()
        if why:
            raise TestbedError(why)
        log = open(self.log_path, "wb")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_pdeathsig(os.getpid()))
        finally:
            log.close()
        r, w = os.pipe()
        self._watchdog = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _WATCHDOG, str(r), str(self.proc.pid)],
            pass_fds=(r,), stdin=subprocess.DEVNULL, start_new_session=True)
        os.close(r)
        self._watchdog_w = w
        try:
            self._wait_booted()
            if self.network.startswith("zone="):
                # nspawn creates the zone's bridge but leaves it down (networkd would bring
                # it up on a systemd host): a lab network of test hosts needs it up.
                subprocess.run(["ip", "link", "set", f"vz-{self.network[5:]}", "up"],
                               check=True, capture_output=True)
        except BaseException:
            self.teardown()
            raise
        return self

    def _wait_booted(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.boot_timeout
        delay = 0.02
        state = "no PID 1 yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise TestbedError(f"systemd-nspawn exited with {self.proc.returncode}: "
                                   f"{self.console_log()[-2000:]}")
            if self._pid1 is None:
                self._pid1 = _container_init(self.proc.pid)
            if self._pid1 is not None:
                res = self.run(["/usr/bin/systemctl", "is-active", "basic.target"],
                               check=False, timeout=10)
                state = res.stdout.strip()
                if state == "active" and self.root.joinpath(
                        "run/dbus/system_bus_socket").exists():
                    return
                if state == "failed":
                    break
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)
        raise TestbedError(f"test host {self.name} did not reach basic.target "
                           f"({state}): {self.console_log()[-2000:]}")

    def teardown(self, timeout: float = 20.0) -> None:
        """Power the test host off (SIGTERM to nspawn), escalating to SIGKILL."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            except ProcessLookupError:
                pass
        if self._watchdog_w is not None:
            with contextlib.suppress(OSError):
                os.write(self._watchdog_w, b"q")  # goodbye: the watchdog exits quietly
            os.close(self._watchdog_w)
            self._watchdog_w = None
        if self._watchdog is not None:
            try:
                self._watchdog.wait(5)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
                self._watchdog.wait()
            self._watchdog = None
        self._pid1 = None

    def __enter__(self) -> Testbed:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    # --- access ----------------------------------------------------------------------

    @property
    def pid1(self) -> int:
        if self._pid1 is None:
            raise TestbedError("the test host is not running")
        return self._pid1

    @property
    def nspawn_pid(self) -> int:
        if self.proc is None:
            raise TestbedError("the test host is not running")
        return self.proc.pid

    @property
    def root(self) -> Path:
        """The test host's filesystem, seen from here."""
        return Path(f"/proc/{self.pid1}/root")

    @property
    def bus_address(self) -> bytes:
        return f"unix:path=/proc/{self.pid1}/root/run/dbus/system_bus_socket".encode()

    def console_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def run(self, argv: list[str] | tuple[str, ...], check: bool = True,
            timeout: float | None = 120, input: str | None = None,
            ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the test host (all its namespaces, its root)."""
        res = subprocess.run(["nsenter", "-t", str(self.pid1), "-a", *argv],
                             capture_output=True, text=True, timeout=timeout, input=input,
                             check=False)
        if check and res.returncode != 0:
            raise TestbedError(f"{' '.join(argv)} failed ({res.returncode}): "
                               f"{res.stderr.strip() or res.stdout.strip()}")
        return res

    def systemctl(self, *args: str, check: bool = True,
                  timeout: float | None = 120) -> subprocess.CompletedProcess[str]:
        return self.run(["/usr/bin/systemctl", "--no-pager", *args], check=check,
                        timeout=timeout)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """``systemctl show -p ...`` as a dict."""
        out = self.systemctl("show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str, *args: str) -> str:
        return self.run(["/usr/bin/journalctl", "--no-pager", "-o", "cat", "-u", unit,
                         *args], check=False).stdout

    def daemon_reload(self) -> None:
        self.systemctl("daemon-reload")

    def install_tree(self, src_root: Path | str, reload: bool = True) -> None:
        """Copy a generated tree (etc/..., var/lib/...) into the test host's root.

        Symlinks are copied as symlinks (``var/lib/machines/NAME -> ...``), files with
        their modes; directories that exist already keep their own mode and owner
        (``shutil.copytree`` would copy a temporary directory's 0700 onto ``/``, and
        D-Bus in the test host would stop working).
        """
        src = Path(src_root)
        root = self.root
        for dirpath, dirnames, filenames in os.walk(src):
            rel = Path(dirpath).relative_to(src)
            for name in list(dirnames):
                s = Path(dirpath) / name
                if s.is_symlink():  # os.walk lists symlinks to directories as dirs
                    dirnames.remove(name)
                    filenames.append(name)
                    continue
                d = root / rel / name
                if not d.is_dir():
                    d.mkdir(mode=s.stat().st_mode & 0o7777)
            for name in filenames:
                s, d = Path(dirpath) / name, root / rel / name
                if d.is_symlink() or (d.exists() and not d.is_dir()):
                    d.unlink()
                if s.is_symlink():
                    d.symlink_to(os.readlink(s))
                else:
                    shutil.copy2(s, d)
        if reload:
            self.daemon_reload()

    def write(self, path: str, text: str, mode: int = 0o644) -> Path:
        """Write a file inside the test host (absolute path there)."""
        dest = self.root / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text)
        dest.chmod(mode)
        return dest


def leftovers(name: str) -> list[str]:
    """What a test host NAME may have left on this machine (empty when clean)."""
    found = []
    for p in (Path("/run/systemd/nspawn/propagate") / name,
              Path("/run/systemd/nspawn/unix-export") / name):
        if p.exists():
            found.append(str(p))
    try:
        mounts = Path("/proc/self/mountinfo").read_text()
    except OSError:
        mounts = ""
    found += [f"mount: {line.split()[4]}" for line in mounts.splitlines()
              if name in line.split()[4]]
    links = Path("/sys/class/net")
    if links.exists():
        short = name[:11]
        found += [f"link: {n.name}" for n in links.iterdir()
                  if n.name in (f"ve-{short}", f"vb-{short}")]
    return found
